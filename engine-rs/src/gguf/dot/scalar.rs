//! Scalar reference dot products: the plain definition of each block format, used as ground truth.

use super::Activations;
use crate::gguf::dtype::{GgmlType, QK, QK_K};
use crate::gguf::quants::{f16_at, q4k_scale_min, Q8Block, Q8KBlock};
use half::{bf16, f16};

pub fn vec_dot(t: GgmlType, row: &[u8], act: &Activations) -> f32 {
    match (t, act) {
        (GgmlType::Q4_0, Activations::Q8(a)) => dot_q4_0(row, a),
        (GgmlType::Q4_1, Activations::Q8(a)) => dot_q4_1(row, a),
        (GgmlType::Q8_0, Activations::Q8(a)) => dot_q8_0(row, a),
        (GgmlType::Q4_K, Activations::Q8K(a)) => dot_q4_k(row, a),
        (GgmlType::Q6_K, Activations::Q8K(a)) => dot_q6_k(row, a),
        (GgmlType::F32, Activations::F32(x)) => dot_float(row, x, 4, |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        (GgmlType::F16, Activations::F32(x)) => dot_float(row, x, 2, |c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()),
        (GgmlType::BF16, Activations::F32(x)) => dot_float(row, x, 2, |c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()),
        _ => panic!("vec_dot: activations were quantized for another weight type than {t}"),
    }
}

fn check_len(row: &[u8], t: GgmlType, blocks: usize) {
    assert_eq!(row.len(), blocks * t.block_bytes(), "vec_dot: {t} row of {} bytes for {blocks} activation blocks", row.len());
}

fn dot_float(row: &[u8], x: &[f32], width: usize, load: impl Fn(&[u8]) -> f32) -> f32 {
    assert_eq!(row.len(), x.len() * width, "vec_dot: float row length mismatch");
    // Eight partial sums keep the reduction order close to the SIMD paths and let the compiler vectorize.
    let mut acc = [0f32; 8];
    let mut chunks = row.chunks_exact(8 * width).zip(x.chunks_exact(8));
    for (r, xs) in &mut chunks {
        for k in 0..8 {
            acc[k] += load(&r[k * width..]) * xs[k];
        }
    }
    let tail = x.len() / 8 * 8;
    let mut sum: f32 = acc.iter().sum();
    for i in tail..x.len() {
        sum += load(&row[i * width..]) * x[i];
    }
    sum
}

fn dot_q4_0(row: &[u8], a: &[Q8Block]) -> f32 {
    check_len(row, GgmlType::Q4_0, a.len());
    let mut sum = 0f32;
    for (b, y) in row.chunks_exact(18).zip(a) {
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            sumi += ((b[2 + j] & 0x0F) as i32 - 8) * y.qs[j] as i32;
            sumi += ((b[2 + j] >> 4) as i32 - 8) * y.qs[j + QK / 2] as i32;
        }
        sum += sumi as f32 * f16_at(b, 0) * y.d;
    }
    sum
}

fn dot_q4_1(row: &[u8], a: &[Q8Block]) -> f32 {
    check_len(row, GgmlType::Q4_1, a.len());
    let mut sum = 0f32;
    for (b, y) in row.chunks_exact(20).zip(a) {
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            sumi += (b[4 + j] & 0x0F) as i32 * y.qs[j] as i32;
            sumi += (b[4 + j] >> 4) as i32 * y.qs[j + QK / 2] as i32;
        }
        sum += sumi as f32 * f16_at(b, 0) * y.d + f16_at(b, 2) * y.s;
    }
    sum
}

fn dot_q8_0(row: &[u8], a: &[Q8Block]) -> f32 {
    check_len(row, GgmlType::Q8_0, a.len());
    let mut sum = 0f32;
    for (b, y) in row.chunks_exact(34).zip(a) {
        let sumi: i32 = (0..QK).map(|j| b[2 + j] as i8 as i32 * y.qs[j] as i32).sum();
        sum += sumi as f32 * f16_at(b, 0) * y.d;
    }
    sum
}

fn dot_q4_k(row: &[u8], a: &[Q8KBlock]) -> f32 {
    check_len(row, GgmlType::Q4_K, a.len());
    let mut sum = 0f32;
    for (b, y) in row.chunks_exact(144).zip(a) {
        let scales = &b[4..16];
        let qs = &b[16..];
        let mut sumi = 0i32;
        let mut summ = 0i32;
        for sub in 0..8 {
            let (sc, m) = q4k_scale_min(sub, scales);
            let q = &qs[(sub / 2) * 32..(sub / 2) * 32 + 32];
            let shift = if sub % 2 == 0 { 0 } else { 4 };
            let dot: i32 = (0..32).map(|l| ((q[l] >> shift) & 0x0F) as i32 * y.qs[sub * 32 + l] as i32).sum();
            sumi += sc as i32 * dot;
            summ += m as i32 * (y.bsums[2 * sub] as i32 + y.bsums[2 * sub + 1] as i32);
        }
        sum += y.d * (f16_at(b, 0) * sumi as f32 - f16_at(b, 2) * summ as f32);
    }
    sum
}

fn dot_q6_k(row: &[u8], a: &[Q8KBlock]) -> f32 {
    check_len(row, GgmlType::Q6_K, a.len());
    let mut sum = 0f32;
    for (b, y) in row.chunks_exact(210).zip(a) {
        let mut sumi = 0i32;
        for half in 0..2 {
            let ql = &b[half * 64..];
            let qh = &b[128 + half * 32..];
            let sc = &b[192 + half * 8..];
            let ys = &y.qs[half * 128..];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                sumi += sc[is] as i8 as i32 * q1 * ys[l] as i32;
                sumi += sc[is + 2] as i8 as i32 * q2 * ys[l + 32] as i32;
                sumi += sc[is + 4] as i8 as i32 * q3 * ys[l + 64] as i32;
                sumi += sc[is + 6] as i8 as i32 * q4 * ys[l + 96] as i32;
            }
        }
        sum += f16_at(b, 208) * y.d * sumi as f32;
    }
    sum
}

#[allow(dead_code)]
const _: () = assert!(QK_K == 256);
