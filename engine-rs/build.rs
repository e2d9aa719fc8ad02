//! Compiles kernels/*.cu into fatbins (SASS for sm_80 and sm_90, plus compute_90 PTX for newer GPUs)
//! when the `cuda` feature is on and nvcc is found, and embeds them through
//! `$OUT_DIR/cuda_kernels.rs`. Without nvcc the table is empty and the runtime says so when a GPU is
//! requested; the library still builds and runs on CPU.
//!
//! nvcc is looked up in: $NVCC, the pip wheel under <repo>/.tools/nvcc (scripts/check_cuda_build.sh
//! installs it), $CUDA_HOME/bin, /usr/local/cuda/bin, then PATH, and only for the `cuda` feature.
//! The cfg `nvcc_found` lets the ptxas test exist only where it can run (feature on, nvcc found).
use std::path::{Path, PathBuf};
use std::process::Command;

/// Architectures every kernel must assemble for; kept in one place for build.rs and the ptxas test.
const GENCODE: &[&str] = &[
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_90,code=[sm_90,compute_90]",
];

fn find_nvcc(manifest_dir: &Path) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("NVCC") {
        candidates.push(PathBuf::from(p));
    }
    let tools = manifest_dir.join("../.tools/nvcc/nvidia");
    candidates.push(tools.join("cu13/bin/nvcc"));
    candidates.push(tools.join("cuda_nvcc/bin/nvcc"));
    if let Some(home) = std::env::var_os("CUDA_HOME") {
        candidates.push(PathBuf::from(home).join("bin/nvcc"));
    }
    candidates.push(PathBuf::from("/usr/local/cuda/bin/nvcc"));
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("nvcc")));
    }
    candidates.into_iter().find(|p| p.is_file())
}

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rustc-check-cfg=cfg(nvcc_found)");
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");

    let mut table = String::from("/// (kernel file stem, fatbin) for every kernels/*.cu, built by build.rs.\n");
    table.push_str("pub const KERNEL_FATBINS: &[(&str, &[u8])] = &[\n");
    // The default build never looks for nvcc: CPU-only builds stay independent of any CUDA install.
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        match find_nvcc(&manifest_dir) {
            Some(nvcc) => {
                println!("cargo:rustc-cfg=nvcc_found");
                println!("cargo:rustc-env=LLM_NVCC_PATH={}", nvcc.display());
                let sources = kernel_sources(&manifest_dir.join("kernels"));
                // One nvcc per file, all at once: each is single-threaded (cicc, then ptxas per arch).
                let jobs: Vec<_> = sources
                    .iter()
                    .map(|(stem, source)| {
                        let (nvcc, source, fatbin) = (nvcc.clone(), source.clone(), out_dir.join(format!("{stem}.fatbin")));
                        std::thread::spawn(move || compile(&nvcc, &source, &fatbin).map(|log| (fatbin, log)))
                    })
                    .collect();
                let mut failures = Vec::new();
                let mut ptxas_log = String::new();
                for ((stem, _), job) in sources.iter().zip(jobs) {
                    match job.join().unwrap() {
                        Ok((fatbin, log)) => {
                            table.push_str(&format!("    ({stem:?}, include_bytes!({:?})),\n", fatbin.display().to_string()));
                            ptxas_log.push_str(&format!("== {stem}\n{log}"));
                        }
                        Err(e) => failures.push(e),
                    }
                }
                if !failures.is_empty() {
                    panic!("{}", failures.join("\n"));
                }
                // What ptxas said about every kernel, for tests/cuda_ptxas.rs.
                let log_path = out_dir.join("ptxas.log");
                std::fs::write(&log_path, ptxas_log).unwrap();
                println!("cargo:rustc-env=LLM_PTXAS_LOG={}", log_path.display());
            }
            None => println!(
                "cargo:warning=feature `cuda` without nvcc: building the stub (no GPU kernels); \
                 run scripts/check_cuda_build.sh or set NVCC"
            ),
        }
    }
    table.push_str("];\n");
    std::fs::write(out_dir.join("cuda_kernels.rs"), table).unwrap();
}

fn kernel_sources(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut sources: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "cu"))
                .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), p))
                .collect()
        })
        .unwrap_or_default();
    sources.sort();
    sources
}

/// Returns nvcc's output: ptxas's resource report (-v) for every kernel and architecture.
fn compile(nvcc: &Path, source: &Path, fatbin: &Path) -> Result<String, String> {
    let output = Command::new(nvcc)
        .arg("-fatbin")
        .args(GENCODE)
        .args(["-O3", "-std=c++17", "-Werror", "all-warnings"])
        .arg("-Xptxas=-v,-warn-spills,-warn-lmem-usage,-warn-double-usage")
        .arg("-o")
        .arg(fatbin)
        .arg(source)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", nvcc.display()))?;
    if !output.status.success() {
        return Err(format!(
            "nvcc failed on {}:\n{}{}",
            source.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr))
}
