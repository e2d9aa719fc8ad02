//! Every kernel must assemble for sm_80 and sm_90 with no warning at all, and fit the block size the
//! host launches it with. build.rs already compiled every kernels/*.cu with nvcc (ptxas warnings,
//! spills, local memory and doubles are errors there) and kept ptxas's resource report (-v); this
//! test reads that report instead of running nvcc a second time. Exists only where build.rs found
//! nvcc (cfg `nvcc_found`); scripts/check_cuda_build.sh installs nvcc from PyPI and runs it.
#![cfg(nvcc_found)]

use std::path::PathBuf;

const ARCHS: [&str; 2] = ["sm_80", "sm_90"];
/// Registers of one SM's register file for a block (every sm_8x/sm_9x GPU).
const REGISTERS_PER_BLOCK: usize = 65_536;

/// Threads per block each kernel is launched with (backend/cuda/model/, plan.rs, scripts/gpu/).
fn launch_threads(kernel: &str) -> Option<usize> {
    Some(match kernel {
        "embedding_gather" | "rmsnorm" | "fused_add_rmsnorm" | "silu_and_mul" | "attention_prefill" | "fill_uniform_bf16" => 256,
        "rope_kv_write" | "attention_decode_partial" | "attention_decode_combine" => 128,
        "apply_penalties" | "argmax_rows" | "sample_rows" => 1024,
        _ => return None,
    })
}

/// `extern "C" __global__ [__launch_bounds__(..)] void NAME(` in every kernels/*.cu.
fn kernel_names() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "cu") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for decl in text.split("__global__").skip(1) {
            let head = &decl[..decl.find('(').unwrap()];
            let head = if head.contains("__launch_bounds__") {
                // The bound's own parenthesis came first: the name follows it.
                let rest = &decl[decl.find(')').unwrap() + 1..];
                &rest[..rest.find('(').unwrap()]
            } else {
                head
            };
            names.push(head.split_whitespace().last().unwrap().to_string());
        }
    }
    names.sort();
    names
}

/// The report's lines for one kernel and architecture, from "Compiling entry function" to the
/// next entry function.
fn report_for<'a>(log: &'a str, kernel: &str, arch: &str) -> Option<Vec<&'a str>> {
    let start = format!("Compiling entry function '{kernel}' for '{arch}'");
    let mut lines = log.lines().skip_while(|l| !l.contains(&start));
    let first = lines.next()?;
    Some(std::iter::once(first).chain(lines.take_while(|l| !l.contains("Compiling entry function"))).collect())
}

fn number_before(line: &str, unit: &str) -> Option<usize> {
    let at = line.find(unit)?;
    line[..at].split_whitespace().last()?.parse().ok()
}

#[test]
fn every_kernel_assembles_for_sm80_and_sm90_without_warnings() {
    let log = std::fs::read_to_string(env!("LLM_PTXAS_LOG")).expect("build.rs writes the ptxas report");
    let complaints: Vec<&str> =
        log.lines().filter(|l| l.to_ascii_lowercase().contains("warning") || l.contains("error")).collect();
    assert!(complaints.is_empty(), "nvcc/ptxas complained:\n{}", complaints.join("\n"));
    let names = kernel_names();
    assert!(names.len() >= 12, "expected the kernels, found {names:?}");
    let mut failures = Vec::new();
    for name in &names {
        let Some(threads) = launch_threads(name) else {
            failures.push(format!("{name}: no launch block size known to this test"));
            continue;
        };
        for arch in ARCHS {
            let Some(report) = report_for(&log, name, arch) else {
                failures.push(format!("{name}: ptxas did not compile it for {arch}"));
                continue;
            };
            let text = report.join("\n");
            if !text.contains("0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads") {
                failures.push(format!("{name} for {arch} uses local memory:\n{text}"));
            }
            match report.iter().find_map(|l| number_before(l, "registers")) {
                Some(regs) if regs * threads <= REGISTERS_PER_BLOCK => {}
                Some(regs) => failures.push(format!("{name} for {arch}: {regs} registers x {threads} threads exceed one SM")),
                None => failures.push(format!("{name} for {arch}: no register count in\n{text}")),
            }
            if let Some(smem) = report.iter().find_map(|l| number_before(l, "bytes smem")) {
                if smem > 48 * 1024 {
                    failures.push(format!("{name} for {arch}: {smem} bytes of static shared memory"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
