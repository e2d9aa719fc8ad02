//! A GGUF file (v2/v3) parsed from a memory map: header, metadata, tensor infos, data section.
//!
//! Every count, length and offset read from the file is checked against the bytes that are actually
//! there before it is used, so a truncated or lying file yields an error naming the file (and the
//! tensor, when one is at fault) instead of a panic or a huge allocation.

use super::dtype::GgmlType;
use super::value::MetaValue;
use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most 4 dimensions.
const MAX_DIMS: u32 = 4;
/// Arrays of arrays exist in the format; deeper nesting than this only comes from corrupt files.
const MAX_ARRAY_DEPTH: u32 = 4;

#[derive(Debug, Clone)]
pub struct GgufError(pub String);

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GgufError {}

/// One tensor's description; `dims[0]` is the innermost (contiguous) dimension, as in ggml.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub dtype: GgmlType,
    /// Offset from the start of the data section.
    pub offset: u64,
    pub n_bytes: usize,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
    /// Elements per row (the contiguous dimension).
    pub fn cols(&self) -> usize {
        self.dims.first().copied().unwrap_or(1) as usize
    }
    /// Number of rows: the product of every outer dimension.
    pub fn rows(&self) -> usize {
        self.dims.iter().skip(1).product::<u64>() as usize
    }
}

enum Storage {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Deref for Storage {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub alignment: u64,
    /// Absolute file offset of the data section.
    pub data_offset: u64,
    pub metadata: Vec<(String, MetaValue)>,
    pub tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    meta_index: HashMap<String, usize>,
    storage: Storage,
}

impl GgufFile {
    /// Maps and parses the file; tensor data is not read, only bounds-checked.
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let file = std::fs::File::open(path)
            .map_err(|e| GgufError(format!("{}: cannot open: {e}", path.display())))?;
        // SAFETY: the mapping is read-only; the engine does not support model files changing under it.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| GgufError(format!("{}: cannot map: {e}", path.display())))?;
        Self::from_storage(path.to_path_buf(), Storage::Mapped(map))
    }

    /// Parses an in-memory file (tests, fuzzing); `path` only names it in errors.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        Self::from_storage(path.to_path_buf(), Storage::Owned(bytes))
    }

    fn from_storage(path: PathBuf, storage: Storage) -> Result<GgufFile, GgufError> {
        let fail = |msg: String| GgufError(format!("{}: {msg}", path.display()));
        let mut r = Reader { bytes: &storage, pos: 0 };
        let magic = r.take(4).map_err(&fail)?;
        if magic != MAGIC {
            return Err(fail(format!("not a GGUF file (magic {magic:02x?}, expected \"GGUF\")")));
        }
        let version = r.u32().map_err(&fail)?;
        if version != 2 && version != 3 {
            return Err(fail(format!("GGUF version {version} is not supported (only 2 and 3)")));
        }
        let n_tensors = r.u64().map_err(&fail)?;
        let n_kv = r.u64().map_err(&fail)?;
        // Each KV needs at least 8 (key len) + 4 (type) + 1 bytes; each tensor info at least 8+4+8+4+8.
        if n_kv > r.remaining() as u64 / 13 {
            return Err(fail(format!("truncated or corrupt: header claims {n_kv} metadata entries, more than the file can hold")));
        }
        if n_tensors > r.remaining() as u64 / 32 {
            return Err(fail(format!("truncated or corrupt: header claims {n_tensors} tensors, more than the file can hold")));
        }
        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut meta_index = HashMap::new();
        for i in 0..n_kv {
            let key = r.string().map_err(|e| fail(format!("metadata entry {i}: key: {e}")))?;
            let ty = r.u32().map_err(|e| fail(format!("metadata '{key}': {e}")))?;
            let value = r.value(ty, 0).map_err(|e| fail(format!("metadata '{key}': {e}")))?;
            if meta_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(fail(format!("metadata key '{key}' appears twice")));
            }
            metadata.push((key, value));
        }
        let alignment = match meta_index.get("general.alignment").map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
                _ => return Err(fail(format!("general.alignment {v:?} is not a power of two"))),
            },
        };
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut tensor_index = HashMap::new();
        for i in 0..n_tensors {
            let name = r.string().map_err(|e| fail(format!("tensor info {i}: name: {e}")))?;
            let info = r.tensor_info(name.clone(), alignment).map_err(|e| fail(format!("tensor '{name}': {e}")))?;
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(fail(format!("tensor '{name}' appears twice")));
            }
            tensors.push(info);
        }
        let data_offset = align_up(r.pos as u64, alignment)
            .ok_or_else(|| fail("data offset overflows".to_string()))?;
        let file_len = storage.len() as u64;
        if data_offset > file_len && !tensors.is_empty() {
            return Err(fail(format!("file is truncated: data section starts at {data_offset}, file has {file_len} bytes")));
        }
        for t in &tensors {
            let end = data_offset.checked_add(t.offset).and_then(|s| s.checked_add(t.n_bytes as u64));
            match end {
                Some(end) if end <= file_len => {}
                _ => {
                    return Err(fail(format!(
                        "tensor '{}' ({} bytes at data offset {}) runs past the end of the file ({file_len} bytes): truncated file?",
                        t.name, t.n_bytes, t.offset
                    )))
                }
            }
        }
        Ok(GgufFile { path, version, alignment, data_offset, metadata, tensors, tensor_index, meta_index, storage })
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(MetaValue::as_u64)
    }

    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(MetaValue::as_f64)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(MetaValue::as_str)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw bytes of a tensor (bounds were checked when the file was opened).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let start = (self.data_offset + info.offset) as usize;
        &self.storage[start..start + info.n_bytes]
    }

    /// Total bytes of tensor data (what the weights occupy in the map).
    pub fn tensor_bytes_total(&self) -> usize {
        self.tensors.iter().map(|t| t.n_bytes).sum()
    }
}

fn align_up(x: u64, a: u64) -> Option<u64> {
    Some(x.checked_add(a - 1)? / a * a)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err(format!("file is truncated: needed {n} bytes at offset {}, {} left", self.pos, self.remaining()));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("take returned N bytes"))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, String> {
        let len = self.u64()?;
        if len > self.remaining() as u64 {
            return Err(format!("string of {len} bytes at offset {} runs past the end of the file", self.pos));
        }
        let raw = self.take(len as usize)?;
        // Tokenizer vocabularies occasionally hold invalid UTF-8 pieces; keep them readable rather than fail.
        Ok(String::from_utf8_lossy(raw).into_owned())
    }

    fn value(&mut self, ty: u32, depth: u32) -> Result<MetaValue, String> {
        Ok(match ty {
            0 => MetaValue::U8(self.array::<1>()?[0]),
            1 => MetaValue::I8(self.array::<1>()?[0] as i8),
            2 => MetaValue::U16(u16::from_le_bytes(self.array()?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array()?)),
            4 => MetaValue::U32(self.u32()?),
            5 => MetaValue::I32(i32::from_le_bytes(self.array()?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array()?)),
            7 => match self.array::<1>()?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(format!("bool value {b} is neither 0 nor 1")),
            },
            8 => MetaValue::Str(self.string()?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err("arrays nested too deeply".into());
                }
                let elem_ty = self.u32()?;
                let count = self.u64()?;
                let min_size = match elem_ty {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4 | 5 | 6 => 4,
                    8 | 10 | 11 | 12 => 8,
                    9 => 12,
                    _ => return Err(format!("array of unknown value type {elem_ty}")),
                };
                if count > self.remaining() as u64 / min_size {
                    return Err(format!("array of {count} elements runs past the end of the file"));
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem_ty, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(self.u64()?),
            11 => MetaValue::I64(i64::from_le_bytes(self.array()?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array()?)),
            _ => return Err(format!("unknown value type {ty}")),
        })
    }

    fn tensor_info(&mut self, name: String, alignment: u64) -> Result<TensorInfo, String> {
        let n_dims = self.u32()?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(format!("{n_dims} dimensions (ggml allows 1 to {MAX_DIMS})"));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(self.u64()?);
        }
        let type_id = self.u32()?;
        let offset = self.u64()?;
        let dtype = GgmlType::from_id(type_id)?;
        let n_elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= isize::MAX as u64)
            .ok_or_else(|| format!("dimensions {dims:?} overflow"))?;
        if dims[0] % dtype.block_len() as u64 != 0 {
            return Err(format!(
                "row length {} is not a multiple of the {} block size {}",
                dims[0],
                dtype,
                dtype.block_len()
            ));
        }
        let n_bytes = (n_elements / dtype.block_len() as u64)
            .checked_mul(dtype.block_bytes() as u64)
            .filter(|&n| n <= isize::MAX as u64)
            .ok_or_else(|| format!("dimensions {dims:?} overflow"))?;
        if offset % alignment != 0 {
            return Err(format!("data offset {offset} is not a multiple of the alignment {alignment}"));
        }
        Ok(TensorInfo { name, dims, dtype, offset, n_bytes: n_bytes as usize })
    }
}

impl AsRef<[u8]> for GgufFile {
    /// The whole file, so matrices can borrow their rows from the map (`QMatrix::new` with a start offset).
    fn as_ref(&self) -> &[u8] {
        &self.storage
    }
}

impl GgufFile {
    /// Absolute file offset of a tensor's data.
    pub fn tensor_start(&self, info: &TensorInfo) -> usize {
        (self.data_offset + info.offset) as usize
    }
}
