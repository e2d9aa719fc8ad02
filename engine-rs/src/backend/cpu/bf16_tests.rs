//! The bf16 matmul kernels (vdpbf16ps, AMX, panelled weights) against the scalar reference and
//! against themselves: the same bits for a row alone or in any batch, layout or fused dispatch.

use super::matrix::DType;
use super::tests::{matrix_of, pseudo_random};
use super::*;

fn round_to_bf16(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect()
}

#[test]
fn bf16_dot_path_matches_scalar_on_bf16_rounded_activations() {
    let fast = Kernels::detect().with_bf16_activations();
    if !fast.bf16_dot {
        eprintln!("no AVX512_BF16 on this CPU: the bf16 path falls back to the exact kernels");
        assert_eq!(fast.name(), Kernels::detect().isa.name());
        return;
    }
    let scalar = Kernels::with_isa(Isa::Scalar).unwrap();
    // Shapes cover the 32-wide k tail, the 4-row tail and every token-tile width (1..6, then 7+).
    // k = 3000 and 4100 (n = 17 and 9) with ragged tails, and n = 70 (prefill-sized, 12 token tiles).
    let shapes = [(1, 7, 5), (3, 13, 172), (6, 64, 64), (7, 33, 100), (2, 130, 2048), (13, 9, 33), (1, 1000, 17), (17, 11, 3000), (9, 7, 4100), (70, 13, 100)];
    for &(n, m, k) in &shapes {
        let w = matrix_of(DType::BF16, m, k, &pseudo_random(m * k, (n * m * k) as u64));
        let x = pseudo_random(n * k, 11 + k as u64);
        let mut want = vec![0.0; n * m];
        scalar.matmul(&round_to_bf16(&x), n, &w, &mut want);
        let mut got = vec![f32::NAN; n * m];
        fast.matmul(&x, n, &w, &mut got);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            let tol = 1e-5 * (k as f32).sqrt() * (1.0 + b.abs());
            assert!((a - b).abs() <= tol, "n={n} m={m} k={k} [{i}]: {a} vs {b}");
        }
    }
}

#[test]
fn bf16_dot_rows_do_not_depend_on_the_batch() {
    // Single-token decode takes its own row-streaming loop; it must round exactly like the tiles.
    let fast = Kernels::detect().with_bf16_activations();
    if !fast.bf16_dot {
        eprintln!("no AVX512_BF16 on this CPU: nothing to check");
        return;
    }
    let (m, k) = (37, 83);
    let w = matrix_of(DType::BF16, m, k, &pseudo_random(m * k, 21));
    let probe = pseudo_random(k, 22);
    let mut alone = vec![0.0f32; m];
    fast.matmul(&probe, 1, &w, &mut alone);
    for n in 2..=9 {
        for at in [0, n / 2, n - 1] {
            let mut x = pseudo_random(n * k, 30 + n as u64);
            x[at * k..(at + 1) * k].copy_from_slice(&probe);
            let mut out = vec![0.0f32; n * m];
            fast.matmul(&x, n, &w, &mut out);
            let row = &out[at * m..(at + 1) * m];
            assert!(row.iter().zip(&alone).all(|(a, b)| a.to_bits() == b.to_bits()), "row {at} of a batch of {n} differs");
        }
    }
}

#[test]
fn bf16_dot_is_never_used_for_f32_weights() {
    let fast = Kernels::detect().with_bf16_activations();
    let (n, m, k) = (2, 5, 40);
    let w = matrix_of(DType::F32, m, k, &pseudo_random(m * k, 5));
    let x = pseudo_random(n * k, 6);
    let (mut a, mut b) = (vec![0.0; n * m], vec![0.0; n * m]);
    fast.matmul(&x, n, &w, &mut a);
    Kernels::with_isa(Isa::Scalar).unwrap().matmul(&x, n, &w, &mut b);
    for (p, q) in a.iter().zip(&b) {
        assert!((p - q).abs() <= 1e-5 * (1.0 + q.abs()), "{p} vs {q}");
    }
}

/// The bf16 kernels this CPU has: AMX tiles (when present) and vdpbf16ps, each checked on its own.
fn bf16_paths() -> Vec<Kernels> {
    let fast = Kernels::detect().with_bf16_activations();
    if !fast.bf16_dot {
        return Vec::new();
    }
    if fast.amx {
        vec![fast, fast.without_amx()]
    } else {
        vec![fast]
    }
}

#[test]
fn amx_and_vdpbf16ps_match_scalar_on_tile_shapes() {
    let paths = bf16_paths();
    if !paths.iter().any(|p| p.amx) {
        eprintln!("no AMX on this CPU (or LLM_CPU_AMX=0): the tile shapes only run on vdpbf16ps");
    }
    let scalar = Kernels::with_isa(Isa::Scalar).unwrap();
    // k a multiple of 32 (AMX's k step) with 1, 2 and 64 steps; m with and without a 16-row tail
    // and with an odd number of 16-row tiles; n below, at and past one and two 16-token tiles.
    for &(n, m, k) in &[(1, 16, 32), (15, 48, 64), (16, 130, 2048), (17, 80, 96), (33, 1000, 64), (40, 32, 160), (5, 2050, 32)] {
        let w = matrix_of(DType::BF16, m, k, &pseudo_random(m * k, (n * m * k) as u64 + 1));
        let x = pseudo_random(n * k, 41 + k as u64);
        let mut want = vec![0.0; n * m];
        scalar.matmul(&round_to_bf16(&x), n, &w, &mut want);
        for p in &paths {
            let mut got = vec![f32::NAN; n * m];
            p.matmul(&x, n, &w, &mut got);
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                let tol = 1e-5 * (k as f32).sqrt() * (1.0 + b.abs());
                assert!((a - b).abs() <= tol, "{} n={n} m={m} k={k} [{i}]: {a} vs {b}", p.name());
            }
        }
    }
}

#[test]
fn bf16_tile_rows_do_not_depend_on_the_batch() {
    // (70, 96) is AMX-eligible (k % 32 == 0, a 16-row tail): a token's row must be bit-identical
    // alone, in one 16-token tile, in the second tile of a pair and in an odd last tile. (37, 2085)
    // takes vdpbf16ps (k % 32 != 0): its tiles against the n = 1 row loop, for long k.
    for (m, k) in [(70, 96), (37, 2085)] {
        let w = matrix_of(DType::BF16, m, k, &pseudo_random(m * k, 51));
        let probe = pseudo_random(k, 52);
        for p in bf16_paths() {
            let mut alone = vec![0.0f32; m];
            p.matmul(&probe, 1, &w, &mut alone);
            for n in [2, 16, 17, 31, 32, 40, 70] {
                for at in [0, n / 2, n - 1] {
                    let mut x = pseudo_random(n * k, 60 + n as u64);
                    x[at * k..(at + 1) * k].copy_from_slice(&probe);
                    let mut out = vec![0.0f32; n * m];
                    p.matmul(&x, n, &w, &mut out);
                    let row = &out[at * m..(at + 1) * m];
                    let same = row.iter().zip(&alone).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{} k={k}: row {at} of a batch of {n} differs", p.name());
                }
            }
        }
    }
}

/// A panelled matrix (`panels`) gives the row-major matrix's numbers bit for bit on vdpbf16ps, alone
/// and in every batch: one 16-row block and 2 panels; a short last block (37 = 16 + 16 + 5 rows)
/// and a last panel with a masked tail (100 columns); 3 full panels; rows past several pool tasks.
#[test]
fn panelled_matrices_match_row_major_bit_for_bit() {
    let paths: Vec<Kernels> = bf16_paths().into_iter().filter(|p| !p.amx).collect();
    assert!(!has_avx512_bf16() || !paths.is_empty(), "a CPU with AVX512_BF16 must give the vdpbf16ps path");
    if paths.is_empty() {
        eprintln!("no AVX512_BF16 on this CPU: panelled matrices are never made here (Llama::from_weights)");
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    for (m, k) in [(16, 2 * panels::PANEL_COLS), (37, 2 * panels::PANEL_COLS + 100), (20, 3 * panels::PANEL_COLS), (300, 8192)] {
        let w = matrix_of(DType::BF16, m, k, &pseudo_random(m * k, (m + k) as u64));
        let wp = w.panelled();
        assert!(wp.is_panelled() && !w.is_panelled());
        let mut row = vec![0.0f32; k];
        let mut want_row = vec![0.0f32; k];
        for r in [0, m / 2, m - 1] {
            wp.row_to_f32(r, &mut row);
            w.row_to_f32(r, &mut want_row);
            assert_eq!(row, want_row, "row {r} read back from m={m} k={k}");
        }
        assert_eq!(wp.slice_cols(100..k - 7).to_f32_vec(), w.slice_cols(100..k - 7).to_f32_vec());
        assert_eq!(wp.slice_rows(3..m).to_f32_vec(), w.slice_rows(3..m).to_f32_vec());
        for p in &paths {
            for n in [1, 2, 6, 7, 16, 25] {
                let x = pseudo_random(n * k, 70 + n as u64);
                let (mut want, mut got) = (vec![0.0f32; n * m], vec![f32::NAN; n * m]);
                pool.install(|| {
                    p.matmul(&x, n, &w, &mut want);
                    p.matmul(&x, n, &wp, &mut got);
                });
                let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{} m={m} k={k} n={n}: panelled differs from row-major", p.name());
            }
        }
    }
}

#[test]
fn fused_matmul_equals_separate_matmuls_bit_for_bit() {
    // q/k/v-like shapes (one k, different m) and a mismatched k that must fall back to one by one.
    let (n, k) = (5, 96);
    let ws: Vec<Matrix> = [(64, k), (16, k), (20, k), (8, 40)]
        .iter()
        .enumerate()
        .map(|(i, &(m, kk))| matrix_of(DType::BF16, m, kk, &pseudo_random(m * kk, 70 + i as u64)))
        .collect();
    let x = pseudo_random(n * k, 80);
    let mut paths = bf16_paths();
    paths.extend(Isa::available().into_iter().map(|isa| Kernels::with_isa(isa).unwrap()));
    for p in paths {
        let mut fused: Vec<Vec<f32>> = ws.iter().map(|w| vec![f32::NAN; n * w.rows]).collect();
        let refs: Vec<&Matrix> = ws.iter().collect();
        let mut outs: Vec<&mut [f32]> = fused.iter_mut().map(|v| v.as_mut_slice()).collect();
        p.matmul_fused(&x, n, &refs, &mut outs);
        for (w, got) in ws.iter().zip(&fused) {
            let mut want = vec![0.0f32; n * w.rows];
            p.matmul(&x, n, w, &mut want);
            assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{} m={} k={}", p.name(), w.rows, w.cols);
        }
    }
}

/// `sum4` must give each of its four accumulators exactly `sum`'s bits, or a row's logits would
/// depend on the 4-row tile or single row it fell in. Values spread over 40 binary orders of
/// magnitude, so that a different pairing of the additions shows up as different rounding.
#[cfg(target_arch = "x86_64")]
#[test]
fn vdpbf16ps_sum4_adds_in_the_same_order_as_sum() {
    use std::arch::x86_64::*;
    if !Kernels::detect().with_bf16_activations().bf16_dot {
        eprintln!("no AVX512_BF16 on this CPU: nothing to check");
        return;
    }
    for seed in 0..20_000u64 {
        let mantissas = pseudo_random(64, 2 * seed);
        let exponents = pseudo_random(64, 2 * seed + 1);
        let v: Vec<f32> = mantissas.iter().zip(&exponents).map(|(m, e)| m * 2f32.powi((e * 20.0) as i32)).collect();
        // Safety: the CPU has AVX512_BF16 (checked above); v holds 4 x 16 floats.
        unsafe {
            let a: [__m512; 4] = std::array::from_fn(|r| _mm512_loadu_ps(v.as_ptr().add(16 * r)));
            let four: [f32; 4] = std::mem::transmute(avx512_bf16::sum4(a[0], a[1], a[2], a[3]));
            for r in 0..4 {
                assert_eq!(four[r].to_bits(), avx512_bf16::sum(a[r]).to_bits(), "row {r} of {:?}", &v[16 * r..16 * r + 16]);
            }
        }
    }
}
