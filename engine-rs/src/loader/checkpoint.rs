//! A checkpoint directory: one `model.safetensors`, or shards listed by
//! `model.safetensors.index.json`, or (failing both) every `*.safetensors` in the directory.

use super::safetensors::SafetensorsFile;
use crate::backend::cpu::matrix::Matrix;
use std::collections::HashMap;
use std::path::Path;

pub struct Checkpoint {
    files: Vec<SafetensorsFile>,
    /// Tensor name → index into `files`.
    owner: HashMap<String, usize>,
}

impl Checkpoint {
    pub fn open(dir: &Path) -> Result<Checkpoint, String> {
        let index_path = dir.join("model.safetensors.index.json");
        let file_names: Vec<String> = if index_path.exists() {
            let text = std::fs::read_to_string(&index_path)
                .map_err(|e| format!("cannot read {}: {e}", index_path.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| format!("{}: invalid JSON: {e}", index_path.display()))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| format!("{}: missing \"weight_map\"", index_path.display()))?;
            let mut names: Vec<String> = Vec::new();
            for (tensor, file) in map {
                let file = file
                    .as_str()
                    .ok_or_else(|| format!("{}: weight_map[\"{tensor}\"] is not a file name", index_path.display()))?;
                if file.contains('/') || file.contains("..") {
                    return Err(format!("{}: shard name \"{file}\" must be a plain file name", index_path.display()));
                }
                if !names.iter().any(|n| n == file) {
                    names.push(file.to_string());
                }
            }
            names
        } else if dir.join("model.safetensors").exists() {
            vec!["model.safetensors".to_string()]
        } else {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .map_err(|e| format!("cannot read directory {}: {e}", dir.display()))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".safetensors"))
                .collect();
            names.sort();
            names
        };
        if file_names.is_empty() {
            return Err(format!(
                "no *.safetensors weights in {} (use load_format \"dummy\" for random weights)",
                dir.display()
            ));
        }
        let mut files = Vec::new();
        let mut owner = HashMap::new();
        for name in &file_names {
            let file = SafetensorsFile::open(&dir.join(name))?;
            for tensor in file.tensors.keys() {
                owner.insert(tensor.clone(), files.len());
            }
            files.push(file);
        }
        Ok(Checkpoint { files, owner })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.owner.contains_key(name)
    }

    pub fn matrix(&self, name: &str, shape: &[usize]) -> Result<Matrix, String> {
        match self.owner.get(name) {
            Some(&i) => self.files[i].matrix(name, shape),
            None => {
                let paths: Vec<String> = self.files.iter().map(|f| f.path.display().to_string()).collect();
                Err(format!("tensor '{name}' not found in {}", paths.join(", ")))
            }
        }
    }
}
