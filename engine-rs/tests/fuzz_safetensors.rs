//! Seeded fuzzing of the safetensors header parser and of model loading over mutated checkpoints:
//! byte flips, truncations, lying header lengths, offsets out of range, wrong dtypes and shapes.
//! Every mutation must give Ok (with every tensor inside the file) or a clear Err, never a panic.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use llm_engine::loader::safetensors::parse_header;
use llm_engine::loader::{load_model, LoadOptions};
use serde_json::Value;

fn models_dir() -> PathBuf {
    std::env::var("LLM_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/models"))
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The header as JSON and the data section of a real checkpoint.
fn split(file: &[u8]) -> (Value, Vec<u8>) {
    let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    (serde_json::from_slice(&file[8..8 + n]).unwrap(), file[8 + n..].to_vec())
}

fn join(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend_from_slice(data);
    out
}

const ODD_VALUES: &[&str] = &[
    "null", "-1", "0", "1", "1.5", "18446744073709551615", "18446744073709551616", "1e300", "\"8\"", "[]", "[1]",
    "[1,2,3]", "{}", "true", "[18446744073709551615, 18446744073709551615]", "[4294967296, 4294967296]",
];

/// One structural or byte-level mutation of a valid file.
fn mutate(rng: &mut Rng, header: &Value, data: &[u8]) -> Vec<u8> {
    let names: Vec<String> = header.as_object().unwrap().keys().filter(|k| *k != "__metadata__").cloned().collect();
    let mut h = header.clone();
    let name = &names[rng.below(names.len())];
    match rng.below(10) {
        0 => {
            let field = ["dtype", "shape", "data_offsets"][rng.below(3)];
            h[name][field] = serde_json::from_str(ODD_VALUES[rng.below(ODD_VALUES.len())]).unwrap();
        }
        1 => {
            let dtypes = ["F64", "I8", "U8", "BOOL", "F8_E4M3", "BF16", "F16", "F32", "Q4_K", "", "f32"];
            h[name]["dtype"] = Value::from(dtypes[rng.below(dtypes.len())]);
        }
        2 => {
            let shape = h[name]["shape"].as_array().unwrap().clone();
            let mut s: Vec<Value> = shape;
            match rng.below(3) {
                0 => s.reverse(),
                1 => s.push(Value::from(rng.below(4) as u64 + 1)),
                _ => {
                    s.pop();
                }
            }
            h[name]["shape"] = Value::from(s);
        }
        3 => {
            let o = h[name]["data_offsets"].as_array().unwrap().clone();
            let (b, e) = (o[0].as_u64().unwrap(), o[1].as_u64().unwrap());
            let shifted = [[e, b], [b + 1, e + 1], [b, e + data.len() as u64], [u64::MAX - 1, u64::MAX], [b, b]];
            h[name]["data_offsets"] = Value::from(shifted[rng.below(shifted.len())].to_vec());
        }
        4 => {
            h.as_object_mut().unwrap().remove(name);
        }
        5 => {
            // Two names sharing one byte range (the loader must not care) or a duplicate under a new name.
            let other = names[rng.below(names.len())].clone();
            h[name]["data_offsets"] = h[&other]["data_offsets"].clone();
        }
        _ => {}
    }
    let text = serde_json::to_vec(&h).unwrap();
    let mut file = join(&text, data);
    match rng.below(6) {
        0 => {
            let at = 8 + rng.below(text.len());
            file[at] ^= 1 << rng.below(8);
        }
        1 => file.truncate(rng.below(file.len())),
        2 => {
            let lie = [0u64, 1, 7, text.len() as u64 + 1, text.len() as u64 - 1, u64::MAX, (file.len() * 2) as u64];
            file[..8].copy_from_slice(&lie[rng.below(lie.len())].to_le_bytes());
        }
        3 => {
            let at = rng.below(file.len());
            file[at] = rng.next() as u8;
        }
        _ => {}
    }
    file
}

#[test]
fn mutated_headers_give_ok_or_a_clear_error_never_a_panic() {
    let path = models_dir().join("stories260K/model.safetensors");
    let Ok(bytes) = std::fs::read(&path) else {
        assert!(std::env::var("CI").is_err(), "{} is missing", path.display());
        return;
    };
    let (header, data) = split(&bytes);
    assert!(parse_header(&bytes).is_ok(), "the unmutated file parses");
    let mut rng = Rng(20_261_125);
    let (mut oks, mut errs) = (0, 0);
    for case in 0..3000 {
        let file = mutate(&mut rng, &header, &data);
        let result = catch_unwind(AssertUnwindSafe(|| parse_header(&file)));
        match result {
            Err(_) => panic!("case {case}: parse_header panicked"),
            Ok(Ok(tensors)) => {
                oks += 1;
                for (name, t) in tensors {
                    assert!(t.start <= t.end && t.end <= file.len(), "case {case}: {name} outside the file");
                }
            }
            Ok(Err(msg)) => {
                errs += 1;
                assert!(!msg.is_empty(), "case {case}: empty error");
            }
        }
    }
    // Both outcomes must occur, or the mutations are not exercising the parser.
    assert!(oks > 50 && errs > 1000, "ok {oks}, err {errs}");
}

#[test]
fn loading_mutated_checkpoints_fails_cleanly() {
    let src = models_dir().join("stories260K");
    let Ok(bytes) = std::fs::read(src.join("model.safetensors")) else {
        assert!(std::env::var("CI").is_err(), "stories260K is missing");
        return;
    };
    let (header, data) = split(&bytes);
    let dir = std::env::temp_dir().join(format!("llm-fuzz-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let mut rng = Rng(7);
    let mut errs = 0;
    for case in 0..80 {
        std::fs::write(dir.join("model.safetensors"), mutate(&mut rng, &header, &data)).unwrap();
        let result = catch_unwind(AssertUnwindSafe(|| load_model(&LoadOptions::new(&dir))));
        match result {
            Err(_) => panic!("case {case}: load_model panicked"),
            Ok(Err(msg)) => {
                errs += 1;
                assert!(!msg.is_empty());
            }
            Ok(Ok(_)) => {}
        }
    }
    // Config values that do not fit the weights are an error too.
    std::fs::write(dir.join("model.safetensors"), &bytes).unwrap();
    let config: Value = serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    for (key, value) in [("hidden_size", "65"), ("num_hidden_layers", "0"), ("vocab_size", "-3"), ("num_attention_heads", "0"), ("hidden_size", "\"x\"")] {
        let mut c = config.clone();
        c[key] = serde_json::from_str(value).unwrap();
        std::fs::write(dir.join("config.json"), serde_json::to_vec(&c).unwrap()).unwrap();
        let result = catch_unwind(AssertUnwindSafe(|| load_model(&LoadOptions::new(&dir))));
        assert!(matches!(result, Ok(Err(_))), "config {key}={value} must be a clean error");
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(errs > 20, "only {errs} of 80 mutated checkpoints were refused");
}
