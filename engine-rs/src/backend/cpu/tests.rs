//! Every SIMD path must agree with the scalar reference.

use super::matrix::{DType, Matrix, Storage};
use super::*;

pub(super) fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

pub(super) fn matrix_of(dtype: DType, rows: usize, cols: usize, values: &[f32]) -> Matrix {
    let f32m = Matrix::from_f32(rows, cols, values);
    match dtype {
        DType::F32 => f32m,
        DType::BF16 => f32m.to_bf16(),
        DType::F16 => {
            let bytes = values.iter().flat_map(|v| half::f16::from_f32(*v).to_bits().to_le_bytes()).collect();
            Matrix::new(DType::F16, rows, cols, Storage::Owned(bytes)).unwrap()
        }
    }
}

#[test]
fn matmul_paths_agree_with_scalar() {
    let scalar = Kernels::with_isa(Isa::Scalar).unwrap();
    let isas = Isa::available();
    eprintln!("kernel paths on this CPU: {:?}", isas);
    // Odd shapes exercise the row and k tails and every token-tile width.
    for &(n, m, k) in &[(1, 7, 5), (3, 13, 172), (5, 64, 64), (9, 33, 100), (2, 130, 2048), (1, 1000, 17)] {
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let w = matrix_of(dtype, m, k, &pseudo_random(m * k, (n * m * k) as u64));
            let x = pseudo_random(n * k, 7 + k as u64);
            let mut want = vec![0.0; n * m];
            scalar.matmul(&x, n, &w, &mut want);
            for &isa in &isas {
                let mut got = vec![f32::NAN; n * m];
                Kernels::with_isa(isa).unwrap().matmul(&x, n, &w, &mut got);
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    let tol = 1e-5 * (k as f32).sqrt() * (1.0 + b.abs());
                    assert!((a - b).abs() <= tol, "{isa:?} {dtype:?} n={n} m={m} k={k} [{i}]: {a} vs {b}");
                }
            }
        }
    }
}

#[test]
fn matmul_matches_naive_definition() {
    let k = Kernels::detect();
    let (n, m, d) = (3, 5, 19);
    let wv = pseudo_random(m * d, 3);
    let x = pseudo_random(n * d, 4);
    let mut out = vec![0.0; n * m];
    k.matmul(&x, n, &Matrix::from_f32(m, d, &wv), &mut out);
    for t in 0..n {
        for r in 0..m {
            let want: f64 = (0..d).map(|i| x[t * d + i] as f64 * wv[r * d + i] as f64).sum();
            assert!((out[t * m + r] as f64 - want).abs() < 1e-5, "t={t} r={r}");
        }
    }
}

#[test]
fn dot_and_rmsnorm_agree_across_paths() {
    let a = pseudo_random(77, 1);
    let b = pseudo_random(77, 2);
    let w = pseudo_random(77, 3);
    let scalar = Kernels::with_isa(Isa::Scalar).unwrap();
    let mut want = vec![0.0; 77];
    scalar.rmsnorm(&a, &w, 1e-5, &mut want);
    for isa in Isa::available() {
        let k = Kernels::with_isa(isa).unwrap();
        assert!((k.dot(&a, &b) - scalar.dot(&a, &b)).abs() < 1e-4);
        let mut got = vec![0.0; 77];
        k.rmsnorm(&a, &w, 1e-5, &mut got);
        for (x, y) in got.iter().zip(&want) {
            assert!((x - y).abs() < 1e-5);
        }
    }
}

#[test]
fn axpy_agrees_across_paths() {
    for len in [1, 15, 16, 17, 64, 100] {
        let x = pseudo_random(len, 21);
        let y0 = pseudo_random(len, 22);
        let mut want = y0.clone();
        Kernels::with_isa(Isa::Scalar).unwrap().axpy(0.37, &x, &mut want);
        for isa in Isa::available() {
            let mut got = y0.clone();
            Kernels::with_isa(isa).unwrap().axpy(0.37, &x, &mut got);
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-6, "{isa:?} len {len}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn slot_row_kernels_agree_across_paths() {
    // head_dim 16, 64 and 100 cover one masked vector, full 64-column blocks and a ragged tail.
    for d in [16, 64, 100] {
        let stride = 3 * d;
        let table = pseudo_random(40 * stride, d as u64);
        let slots: Vec<u32> = vec![7, 0, 39, 12, 12, 25];
        let q = pseudo_random(d, 99);
        let p = pseudo_random(slots.len(), 98);
        let scalar = Kernels::with_isa(Isa::Scalar).unwrap();
        let mut want_s = vec![0.0; slots.len()];
        scalar.dot_rows(&q, &table, &slots, stride, d, 0.5, &mut want_s);
        let mut want_a = pseudo_random(d, 97);
        let acc0 = want_a.clone();
        scalar.sum_rows(&p, &table, &slots, stride, 2 * d, &mut want_a);
        for isa in Isa::available() {
            let k = Kernels::with_isa(isa).unwrap();
            let mut s = vec![0.0; slots.len()];
            k.dot_rows(&q, &table, &slots, stride, d, 0.5, &mut s);
            let mut a = acc0.clone();
            k.sum_rows(&p, &table, &slots, stride, 2 * d, &mut a);
            for (x, y) in s.iter().zip(&want_s).chain(a.iter().zip(&want_a)) {
                assert!((x - y).abs() < 1e-4, "{isa:?} d={d}: {x} vs {y}");
            }
        }
    }
}

#[test]
fn attend_group_agrees_across_paths() {
    // head_dim 1..16 take the AVX-512 gather kernel (16 positions per vector), 24 the per-row one;
    // 1, 16, 17 and 40 positions cover a single lane, a full block and ragged tails.
    for d in [1, 4, 8, 16, 24] {
        for group in [1, 2, 3] {
            for n in [1, 16, 17, 40] {
                let stride = 4 * d;
                let k = pseudo_random(50 * stride, (d * 7 + group) as u64);
                let v = pseudo_random(50 * stride, (d * 11 + n) as u64);
                let slots: Vec<u32> = (0..n as u32).map(|j| (j * 13 + 5) % 50).collect();
                // Large queries make the softmax peaked, so a wrong max or a lost lane shows.
                let q: Vec<f32> = pseudo_random(group * d, 99).iter().map(|x| x * 6.0).collect();
                let scalar = Kernels::with_isa(Isa::Scalar).unwrap();
                let mut want = vec![0.0; group * d];
                scalar.attend_group(&q, group, &k, &v, &slots, stride, d, 0.35, &mut want, &mut Vec::new());
                // Reference from first principles for the scalar path itself.
                for g in 0..group {
                    let s: Vec<f64> = slots
                        .iter()
                        .map(|&j| (0..d).map(|t| (q[g * d + t] * k[j as usize * stride + d + t]) as f64).sum::<f64>() * 0.35)
                        .collect();
                    let mx = s.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
                    let total: f64 = e.iter().sum();
                    for t in 0..d {
                        let o: f64 = slots.iter().zip(&e).map(|(&j, p)| p * v[j as usize * stride + d + t] as f64).sum::<f64>() / total;
                        assert!((want[g * d + t] as f64 - o).abs() < 1e-4, "scalar d={d} g={g}: {} vs {o}", want[g * d + t]);
                    }
                }
                for isa in Isa::available() {
                    let mut got = vec![f32::NAN; group * d];
                    let mut scratch = vec![7.0; 3];
                    Kernels::with_isa(isa).unwrap().attend_group(&q, group, &k, &v, &slots, stride, d, 0.35, &mut got, &mut scratch);
                    for (x, y) in got.iter().zip(&want) {
                        assert!((x - y).abs() < 1e-5, "{isa:?} d={d} group={group} n={n}: {x} vs {y}");
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn vector_exp_is_within_two_ulp() {
    if !Isa::available().contains(&Isa::Avx512) {
        return;
    }
    use std::arch::x86_64::*;
    let xs: Vec<f32> = (0..=2000).map(|i| -(i as f32) * 0.0437).chain([-87.0, -88.5, -100.0, -200.0, 0.0]).collect();
    for x in xs {
        // Safety: AVX-512 is present (checked above).
        let got = unsafe {
            let mut o = [0.0f32; 16];
            _mm512_storeu_ps(o.as_mut_ptr(), super::avx512_attn::exp_ps(_mm512_set1_ps(x)));
            o[0]
        };
        let want = (x as f64).exp();
        let tol = if want < f32::MIN_POSITIVE as f64 { 1.5e-45 } else { want * 2.5e-7 };
        assert!((got as f64 - want).abs() <= tol, "exp({x}) = {got}, want {want}");
    }
}

#[test]
fn attend_heads_agrees_with_one_head_at_a_time() {
    // head_dim 8 and 16 take the whole-row AVX-512 kernel; odd KV head counts leave a half chunk,
    // groups of 1..5 cover the 4-head accumulator split; 1..40 positions cover ragged folds and blocks.
    for d in [8, 16, 4] {
        for kv_heads in [2, 3, 4] {
            for group in [1, 2, 5] {
                for n in [1, 7, 8, 9, 16, 33, 40] {
                    let stride = kv_heads * d + 3;
                    let k = pseudo_random(60 * stride, (d + kv_heads * 7 + group) as u64);
                    let v = pseudo_random(60 * stride, (d * 11 + n) as u64);
                    let slots: Vec<u32> = (0..n as u32).map(|j| (j * 17 + 3) % 60).collect();
                    let hg = kv_heads * group;
                    let q: Vec<f32> = pseudo_random(hg * d, 42).iter().map(|x| x * 5.0).collect();
                    let scalar = Kernels::with_isa(Isa::Scalar).unwrap();
                    let mut want = vec![0.0; hg * d];
                    scalar.attend_heads(&q, kv_heads, group, &k, &v, &slots, stride, 2, 0.3, &mut want, &mut Vec::new());
                    for isa in Isa::available() {
                        let kern = Kernels::with_isa(isa).unwrap();
                        let mut got = vec![f32::NAN; hg * d];
                        kern.attend_heads(&q, kv_heads, group, &k, &v, &slots, stride, 2, 0.3, &mut got, &mut vec![1.0; 5]);
                        for (i, (x, y)) in got.iter().zip(&want).enumerate() {
                            assert!((x - y).abs() < 1e-5, "{isa:?} d={d} kvh={kv_heads} g={group} n={n} [{i}]: {x} vs {y}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn attend_block_agrees_with_rows_one_at_a_time() {
    // head_dim 16/64/128, GQA groups 1..8 (block heights 32..4), a fresh prompt and a chunk after a
    // cached prefix, full and partial blocks; the row-by-row scalar kernel is the reference.
    let scalar = Kernels::with_isa(Isa::Scalar).unwrap();
    for isa in Isa::available() {
        let kern = Kernels::with_isa(isa).unwrap();
        for d in [16, 64, 128] {
            for group in [1, 3, 4, 8] {
                let Some(max_rows) = kern.attention_block_rows(d, group) else { continue };
                for (first_pos, rows) in [(0, max_rows), (0, 1), (37, max_rows.min(5)), (5, max_rows)] {
                    let kv_heads = 2;
                    let stride = kv_heads * d + 3;
                    let n = first_pos + rows;
                    let k = pseudo_random(90 * stride, (d + group * 7 + rows) as u64);
                    let v = pseudo_random(90 * stride, (d * 11 + first_pos) as u64);
                    let slots: Vec<u32> = (0..n as u32).map(|j| (j * 17 + 3) % 90).collect();
                    let row_stride = kv_heads * group * d + 5;
                    let q: Vec<f32> = pseudo_random(rows * row_stride, 42).iter().map(|x| x * 5.0).collect();
                    let kvh = 1;
                    let at = kvh * group * d;
                    let mut got = vec![f32::NAN; rows * row_stride];
                    let table = KvTable { k: &k, v: &v, slots: &slots, stride, offset: 2 + kvh * d };
                    // SAFETY: q and got hold `rows` rows of row_stride with this KV head's heads inside.
                    unsafe {
                        kern.attend_block(q[at..].as_ptr(), row_stride, rows, group, d, table, first_pos, 0.3, got[at..].as_mut_ptr(), &mut vec![1.0; 3])
                    };
                    for i in 0..rows {
                        let mut want = vec![0.0; group * d];
                        let qi = &q[i * row_stride + at..][..group * d];
                        scalar.attend_group(qi, group, &k, &v, &slots[..first_pos + i + 1], stride, 2 + kvh * d, 0.3, &mut want, &mut Vec::new());
                        for (j, w) in want.iter().enumerate() {
                            let x = got[i * row_stride + at + j];
                            assert!((x - w).abs() < 1e-4, "{isa:?} d={d} g={group} first={first_pos} rows={rows} row {i} [{j}]: {x} vs {w}");
                        }
                    }
                    // Outside the block's heads nothing was written.
                    assert!(got[..at].iter().all(|x| x.is_nan()));
                    // A row's result does not depend on the block around it: each row alone (the decode
                    // path) gives the same bits.
                    for i in 0..rows {
                        let mut alone = vec![f32::NAN; row_stride];
                        unsafe {
                            kern.attend_block(q[i * row_stride + at..].as_ptr(), row_stride, 1, group, d, table, first_pos + i, 0.3, alone[at..].as_mut_ptr(), &mut Vec::new())
                        };
                        let (a, b) = (&alone[at..at + group * d], &got[i * row_stride + at..][..group * d]);
                        assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()), "{isa:?} d={d} g={group} row {i}: alone differs from in block");
                    }
                }
            }
        }
    }
}

#[test]
fn silu_mul_matches_the_formula() {
    // 1000 values from -90 to 90 (both exp tails), plus a ragged tail of 7.
    let gate: Vec<f32> = (0..1007).map(|i| (i as f32 - 500.0) * 0.18).collect();
    let up: Vec<f32> = (0..1007).map(|i| 1.0 + (i % 13) as f32 * 0.25).collect();
    let mut got = gate.clone();
    silu_mul(&mut got, &up);
    for ((g, u), x) in gate.iter().zip(&up).zip(&got) {
        let want = (*g as f64 / (1.0 + (-*g as f64).exp()) * *u as f64) as f32;
        assert!((x - want).abs() <= 2e-6 * want.abs().max(1e-30) + 1e-30, "silu({g}) * {u}: {x} vs {want}");
    }
}
