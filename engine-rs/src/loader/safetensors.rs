//! Our own safetensors reader: an 8-byte little-endian header length, a JSON header naming each
//! tensor's dtype, shape and byte range, then the data. The file is memory-mapped and tensors
//! are used in place. Every header claim is checked against the file before anything is read.

use crate::backend::cpu::matrix::{DType, Matrix, Storage};
use memmap2::Mmap;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct TensorEntry {
    /// Stored dtype name as written in the header ("BF16", "I64", ...).
    pub dtype_name: String,
    /// Some for the dtypes the kernels use.
    pub dtype: Option<DType>,
    pub shape: Vec<usize>,
    /// Absolute byte range in the file.
    pub start: usize,
    pub end: usize,
}

pub struct SafetensorsFile {
    pub path: PathBuf,
    map: Arc<Mmap>,
    pub tensors: HashMap<String, TensorEntry>,
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<SafetensorsFile, String> {
        let file = std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let len = file.metadata().map_err(|e| format!("cannot stat {}: {e}", path.display()))?.len();
        if len < 8 {
            return Err(format!("{}: not a safetensors file (only {len} bytes)", path.display()));
        }
        // Safety: the checkpoint is treated as read-only; a file changed underneath a running
        // server is outside what any mmap-based loader can defend against.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| format!("cannot mmap {}: {e}", path.display()))?;
        let tensors = parse_header(&map).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(SafetensorsFile { path: path.to_path_buf(), map: Arc::new(map), tensors })
    }

    /// The tensor `name` as a rows x cols matrix (a 1-D tensor is 1 x len), checking shape and dtype.
    pub fn matrix(&self, name: &str, shape: &[usize]) -> Result<Matrix, String> {
        let e = self
            .tensors
            .get(name)
            .ok_or_else(|| format!("{}: tensor '{name}' not found", self.path.display()))?;
        if e.shape != shape {
            return Err(format!(
                "{}: tensor '{name}' has shape {:?}, expected {:?} from config.json",
                self.path.display(),
                e.shape,
                shape
            ));
        }
        let dtype = e.dtype.ok_or_else(|| {
            format!("{}: tensor '{name}' has unsupported dtype {} (F32, BF16, F16 are)", self.path.display(), e.dtype_name)
        })?;
        let (rows, cols) = match shape {
            [n] => (1, *n),
            [r, c] => (*r, *c),
            _ => return Err(format!("{}: tensor '{name}' is not 1-D or 2-D", self.path.display())),
        };
        let storage = Storage::Mapped { map: self.map.clone(), offset: e.start, len: e.end - e.start };
        Matrix::new(dtype, rows, cols, storage).map_err(|err| format!("{}: tensor '{name}': {err}", self.path.display()))
    }
}

fn dtype_info(name: &str) -> Option<(Option<DType>, usize)> {
    Some(match name {
        "F32" => (Some(DType::F32), 4),
        "BF16" => (Some(DType::BF16), 2),
        "F16" => (Some(DType::F16), 2),
        "F64" | "I64" | "U64" => (None, 8),
        "I32" | "U32" => (None, 4),
        "I16" | "U16" => (None, 2),
        "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => (None, 1),
        _ => return None,
    })
}

/// Parses and validates the header of a whole safetensors file held in `bytes`.
pub fn parse_header(bytes: &[u8]) -> Result<HashMap<String, TensorEntry>, String> {
    if bytes.len() < 8 {
        return Err(format!("not a safetensors file (only {} bytes)", bytes.len()));
    }
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    let available = (bytes.len() - 8) as u64;
    if header_len > available {
        return Err(format!("header length {header_len} exceeds the file ({available} bytes after the length)"));
    }
    let data_start = 8 + header_len as usize;
    let header = std::str::from_utf8(&bytes[8..data_start]).map_err(|_| "header is not UTF-8".to_string())?;
    let json: Value = serde_json::from_str(header.trim_end()).map_err(|e| format!("header is not valid JSON: {e}"))?;
    let obj = json.as_object().ok_or("header is not a JSON object")?;
    let data_len = bytes.len() - data_start;
    let mut tensors = HashMap::new();
    for (name, v) in obj {
        if name == "__metadata__" {
            continue;
        }
        let bad = |what: &str| format!("tensor '{name}': {what}");
        let dtype_name = v.get("dtype").and_then(|d| d.as_str()).ok_or_else(|| bad("missing dtype"))?;
        let (dtype, elem) = dtype_info(dtype_name).ok_or_else(|| bad(&format!("unknown dtype {dtype_name}")))?;
        let shape: Vec<usize> = v
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad("missing shape"))?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("shape holds a non-integer"))?;
        let offsets = v.get("data_offsets").and_then(|o| o.as_array()).ok_or_else(|| bad("missing data_offsets"))?;
        let (begin, end) = match offsets.as_slice() {
            [b, e] => (
                b.as_u64().ok_or_else(|| bad("data_offsets holds a non-integer"))?,
                e.as_u64().ok_or_else(|| bad("data_offsets holds a non-integer"))?,
            ),
            _ => return Err(bad("data_offsets must have two entries")),
        };
        if begin > end || end > data_len as u64 {
            return Err(bad(&format!(
                "data_offsets [{begin}, {end}] out of range (data section is {data_len} bytes; file truncated or header corrupt)"
            )));
        }
        let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| bad("shape overflows"))?;
        let want = numel.checked_mul(elem).ok_or_else(|| bad("shape overflows"))?;
        if (end - begin) as usize != want {
            return Err(bad(&format!(
                "data_offsets span {} bytes but shape {shape:?} of {dtype_name} needs {want}",
                end - begin
            )));
        }
        tensors.insert(
            name.clone(),
            TensorEntry {
                dtype_name: dtype_name.to_string(),
                dtype,
                shape,
                start: data_start + begin as usize,
                end: data_start + end as usize,
            },
        );
    }
    Ok(tensors)
}
