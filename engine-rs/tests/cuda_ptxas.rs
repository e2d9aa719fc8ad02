//! Every kernel must compile and assemble for sm_80 and sm_90 with no warning at all (nvcc and
//! ptxas warnings, register spills, local memory, doubles are errors). Exists only where build.rs
//! found nvcc (cfg `nvcc_found`); scripts/check_cuda_build.sh installs nvcc from PyPI and runs it.
#![cfg(nvcc_found)]

use std::path::PathBuf;
use std::process::Command;

fn kernels() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    files.sort();
    files
}

fn assemble(source: &PathBuf, arch: &str) -> Result<(), String> {
    let out = std::env::temp_dir().join(format!(
        "llm-ptxas-{}-{}-{arch}.cubin",
        std::process::id(),
        source.file_stem().unwrap().to_string_lossy()
    ));
    let output = Command::new(env!("LLM_NVCC_PATH"))
        .args(["-cubin", &format!("-arch={arch}"), "-O3", "-std=c++17", "-Werror", "all-warnings"])
        .arg("-Xptxas=-v,-warn-spills,-warn-lmem-usage,-warn-double-usage")
        .arg("-o")
        .arg(&out)
        .arg(source)
        .output()
        .map_err(|e| format!("cannot run nvcc: {e}"))?;
    let _ = std::fs::remove_file(&out);
    let log = String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout);
    // -v prints resource usage as info lines; any warning or error line fails the kernel.
    let complaints: Vec<&str> = log
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("warning") || l.contains("error")
        })
        .collect();
    if !output.status.success() || !complaints.is_empty() {
        return Err(format!("{} for {arch}:\n{log}", source.display()));
    }
    if !log.contains("Used") {
        return Err(format!("{} for {arch}: ptxas reported no kernel resources:\n{log}", source.display()));
    }
    Ok(())
}

#[test]
fn every_kernel_assembles_for_sm80_and_sm90_without_warnings() {
    let sources = kernels();
    assert!(sources.len() >= 7, "expected the kernel files, found {sources:?}");
    let jobs: Vec<_> = sources
        .iter()
        .flat_map(|s| ["sm_80", "sm_90"].map(|a| (s.clone(), a)))
        .map(|(s, a)| std::thread::spawn(move || assemble(&s, a)))
        .collect();
    let failures: Vec<String> = jobs.into_iter().filter_map(|j| j.join().unwrap().err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
