//! Dot products of one weight row (raw GGUF bytes) with one activation row, picked at run time:
//! activations are first quantized per block the way ggml pairs them (Q8 per 32 for Q4_0/Q4_1/Q8_0,
//! Q8_K per 256 for Q4_K/Q6_K) so the inner loops are integer multiply-adds; float weight types take
//! the activations as f32. `scalar` is the reference every SIMD path is tested against.

pub mod scalar;
#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
#[cfg(target_arch = "x86_64")]
pub mod avx512_rows;
#[cfg(target_arch = "x86_64")]
pub mod avx512_tile;
#[cfg(target_arch = "x86_64")]
pub mod avx512_groups;
#[cfg(target_arch = "x86_64")]
pub mod avx512_quant;
#[cfg(target_arch = "x86_64")]
pub mod amx_groups;

use super::dtype::GgmlType;
use super::quants::{quantize_q8, quantize_q8k, Q8Block, Q8KBlock};

/// One activation row in the form a weight type's dot product consumes.
pub enum Activations {
    Q8(Vec<Q8Block>),
    Q8K(Vec<Q8KBlock>),
    F32(Vec<f32>),
}

impl Activations {
    /// Quantizes `x` (one row of `cols` floats) for dot products with `weight_type` rows.
    pub fn quantize(weight_type: GgmlType, x: &[f32]) -> Activations {
        match weight_type {
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 => Activations::Q8(quantize_q8(x)),
            GgmlType::Q4_K | GgmlType::Q6_K => Activations::Q8K(quantize_q8k(x)),
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => Activations::F32(x.to_vec()),
        }
    }
}

/// Instruction set a kernel runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
}

impl Isa {
    /// The widest set this CPU has (checked once per call site by the caller; detection is cheap).
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512dq")
                && is_x86_feature_detected!("avx512vnni")
                && is_x86_feature_detected!("f16c")
            {
                return Isa::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    /// Every set this CPU can run, narrowest first (for tests comparing paths).
    pub fn available() -> Vec<Isa> {
        let best = Isa::detect();
        [Isa::Scalar, Isa::Avx2, Isa::Avx512].into_iter().filter(|&i| i as u8 <= best as u8).collect()
    }
}

/// Σ row·x for one row of `weight_type` against `act` (quantized from x for that type).
/// Panics when `act`'s kind does not match the weight type or lengths disagree (caller bug, not input).
pub fn vec_dot(isa: Isa, weight_type: GgmlType, row: &[u8], act: &Activations) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `isa` is only Avx2/Avx512 when `Isa::detect` found those features (callers get it from there).
        if isa == Isa::Avx512 {
            if let Some(v) = unsafe { avx512::vec_dot(weight_type, row, act) } {
                return v;
            }
        }
        if isa != Isa::Scalar {
            if let Some(v) = unsafe { avx2::vec_dot(weight_type, row, act) } {
                return v;
            }
        }
    }
    let _ = isa;
    scalar::vec_dot(weight_type, row, act)
}

/// Tokens one `vec_dot_tile` call takes at most.
#[cfg(target_arch = "x86_64")]
pub const TILE: usize = avx512_tile::TILE;
#[cfg(not(target_arch = "x86_64"))]
pub const TILE: usize = 1;

/// `out[k] = row · acts[k]` for up to `TILE` tokens, reading and unpacking each weight block once for
/// all of them. Every result is bit-identical to `vec_dot(isa, ..)` of that token alone (tests check it).
pub fn vec_dot_tile(isa: Isa, weight_type: GgmlType, row: &[u8], acts: &[&Activations], out: &mut [f32]) {
    assert!(acts.len() <= TILE && out.len() >= acts.len());
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: `isa` is Avx512 only when `Isa::detect` found those features.
        if let Some(q8) = q8_blocks(acts) {
            if unsafe { avx512_tile::dot_tile(weight_type, row, &q8[..acts.len()], out) } {
                return;
            }
        }
    }
    for (o, a) in out.iter_mut().zip(acts) {
        *o = vec_dot(isa, weight_type, row, a);
    }
}

/// `out[r] = row r · act` for `out.len()` consecutive rows of `row_bytes` each at the start of `rows`
/// (decode: one token against a run of rows). Groups of rows share each activation load where a
/// kernel exists; every result is bit-identical to `vec_dot(isa, ..)` of that row alone (tests check it).
pub fn vec_dot_rows(isa: Isa, weight_type: GgmlType, rows: &[u8], row_bytes: usize, act: &Activations, out: &mut [f32]) {
    assert!(rows.len() >= out.len() * row_bytes);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        if let Activations::Q8(a) = act {
            const R: usize = avx512_rows::ROWS;
            let mut res = [0f32; R];
            while done + R <= out.len() {
                // SAFETY: `isa` is Avx512 only when `Isa::detect` found those features.
                if !unsafe { avx512_rows::dot_rows(weight_type, &rows[done * row_bytes..], row_bytes, a, &mut res) } {
                    break;
                }
                out[done..done + R].copy_from_slice(&res);
                done += R;
            }
        }
    }
    for (i, o) in out.iter_mut().enumerate().skip(done) {
        *o = vec_dot(isa, weight_type, &rows[i * row_bytes..(i + 1) * row_bytes], act);
    }
}

/// The tokens' Q8 blocks, when every one of them is Q8-quantized (the tile kernels' input).
#[cfg(target_arch = "x86_64")]
fn q8_blocks<'a>(acts: &[&'a Activations]) -> Option<[&'a [Q8Block]; TILE]> {
    let mut q8: [&[Q8Block]; TILE] = [&[]; TILE];
    for (a, slot) in acts.iter().zip(q8.iter_mut()) {
        match a {
            Activations::Q8(b) => *slot = b.as_slice(),
            _ => return None,
        }
    }
    Some(q8)
}

/// Rows one `vec_dot_tile_rows` call takes.
#[cfg(target_arch = "x86_64")]
pub const TILE_ROWS: usize = avx512_tile::TILE_ROWS;
#[cfg(not(target_arch = "x86_64"))]
pub const TILE_ROWS: usize = 1;

/// `out[r][k] = row r · acts[k]` for TILE_ROWS consecutive rows of `row_bytes` at the start of `rows`
/// and up to TILE tokens; false (nothing written) where no kernel covers `weight_type` on `isa`, and the
/// caller takes `vec_dot_tile` row by row. Results are bit-identical to `vec_dot` (tests check it).
pub fn vec_dot_tile_rows(
    isa: Isa,
    weight_type: GgmlType,
    rows: &[u8],
    row_bytes: usize,
    acts: &[&Activations],
    out: &mut [[f32; TILE]; TILE_ROWS],
) -> bool {
    assert!(acts.len() <= TILE && rows.len() >= TILE_ROWS * row_bytes);
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: `isa` is Avx512 only when `Isa::detect` found those features.
        return q8_blocks(acts).is_some_and(|q8| unsafe { avx512_tile::dot_tile_rows(weight_type, rows, row_bytes, &q8[..acts.len()], out) });
    }
    let _ = (isa, weight_type, out);
    false
}
