//! Quantized kernels: every SIMD path equals the scalar reference, quantized dot products track the
//! f32 dot of the dequantized weights, QMatrix matmul matches a dequantize-then-multiply reference,
//! and the RoPE row reordering round-trips.

use half::f16;
use llm_engine::gguf::dot::{vec_dot, vec_dot_rows, vec_dot_tile, vec_dot_tile_rows, Activations, Isa, TILE, TILE_ROWS};
use llm_engine::gguf::quants::{dequantize_row, quantize_q8};
use llm_engine::gguf::rope_permute::{permute_rows, unpermute_rows};
use llm_engine::gguf::{GgmlType, QMatrix};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

fn put_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
}

/// A random but well-formed row: random quant bits, sane scales (random bits in a scale could be NaN).
fn random_row(t: GgmlType, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let mut b: Vec<u8> = (0..t.row_bytes(cols).unwrap()).map(|_| rng.next() as u8).collect();
    let bb = t.block_bytes();
    match t {
        GgmlType::F32 => {
            for c in b.chunks_exact_mut(4) {
                c.copy_from_slice(&rng.unit().to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for c in b.chunks_exact_mut(2) {
                c.copy_from_slice(&f16::from_f32(rng.unit()).to_bits().to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for c in b.chunks_exact_mut(2) {
                c.copy_from_slice(&half::bf16::from_f32(rng.unit()).to_bits().to_le_bytes());
            }
        }
        GgmlType::Q4_0 | GgmlType::Q8_0 => {
            for blk in b.chunks_exact_mut(bb) {
                put_f16(blk, 0, rng.unit() * 0.1);
            }
        }
        GgmlType::Q4_1 => {
            for blk in b.chunks_exact_mut(bb) {
                put_f16(blk, 0, rng.unit().abs() * 0.1);
                put_f16(blk, 2, rng.unit() * 0.5);
            }
        }
        GgmlType::Q4_K => {
            for blk in b.chunks_exact_mut(bb) {
                put_f16(blk, 0, rng.unit().abs() * 0.01);
                put_f16(blk, 2, rng.unit().abs() * 0.01);
            }
        }
        GgmlType::Q6_K => {
            for blk in b.chunks_exact_mut(bb) {
                put_f16(blk, 208, rng.unit() * 0.01);
            }
        }
    }
    b
}

fn random_x(n: usize, rng: &mut Rng) -> Vec<f32> {
    // Mixed magnitudes, as real activations have (a few outliers dominate per-block scales).
    (0..n).map(|i| rng.unit() * if i % 37 == 0 { 8.0 } else { 1.0 }).collect()
}

#[test]
fn simd_paths_equal_scalar_reference() {
    let isas = Isa::available();
    eprintln!("ISAs on this CPU: {isas:?}");
    let mut rng = Rng(42);
    for t in GgmlType::ALL {
        for &cols in &[256usize, 512, 768, 2304] {
            for _ in 0..20 {
                let row = random_row(t, cols, &mut rng);
                let x = random_x(cols, &mut rng);
                let act = Activations::quantize(t, &x);
                let reference = vec_dot(Isa::Scalar, t, &row, &act);
                let mut w = vec![0f32; cols];
                dequantize_row(t, &row, &mut w);
                let scale: f32 = w.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum::<f32>().max(1e-6);
                for &isa in &isas {
                    let got = vec_dot(isa, t, &row, &act);
                    assert!(
                        (got - reference).abs() <= 1e-5 * scale,
                        "{t} {isa:?} cols {cols}: {got} vs scalar {reference} (scale {scale})"
                    );
                }
            }
        }
    }
}

#[test]
fn q8_activations_round_like_ggml_x86() {
    // amax 127 makes the multiplier exactly 1, so every x.5 is a tie: ggml's x86 quantizer rounds ties to
    // even (0.5 → 0, 2.5 → 2, -1.5 → -2), where round-half-away would give 1, 3, -2.
    let mut x = vec![0f32; 32];
    x[0] = 127.0;
    x[1..6].copy_from_slice(&[0.5, 1.5, 2.5, -0.5, -1.5]);
    let b = &quantize_q8(&x)[0];
    assert_eq!(&b.qs[..6], &[127, 0, 2, 2, 0, -2]);
    assert_eq!(b.isum, 127 + 2 + 2 - 2);
}

#[test]
fn token_tiles_equal_single_token_dots_bit_for_bit() {
    // Prefill dots several tokens per weight block; decode dots one. Any difference in the float
    // operations would make a prompt's logits depend on its batch, so equality is exact.
    let mut rng = Rng(5);
    for t in GgmlType::ALL {
        let block = t.block_len();
        for &blocks in &[1usize, 3, 18, 48] {
            let cols = block * blocks;
            let row = random_row(t, cols, &mut rng);
            let acts: Vec<Activations> = (0..TILE).map(|_| Activations::quantize(t, &random_x(cols, &mut rng))).collect();
            for &isa in &Isa::available() {
                for n in 1..=TILE {
                    let refs: Vec<&Activations> = acts[..n].iter().collect();
                    let mut out = vec![0f32; n];
                    vec_dot_tile(isa, t, &row, &refs, &mut out);
                    for k in 0..n {
                        assert_eq!(out[k].to_bits(), vec_dot(isa, t, &row, &acts[k]).to_bits(), "{t} {isa:?} {blocks} blocks, token {k} of {n}");
                    }
                }
            }
        }
    }
}

#[test]
fn row_runs_equal_single_row_dots_bit_for_bit() {
    // Decode dots several rows per activation load; every row must equal its one-row dot exactly,
    // or a token's logits would depend on whether it was decoded alone or in a prompt tile.
    let mut rng = Rng(9);
    for t in GgmlType::ALL {
        let block = t.block_len();
        for &blocks in &[1usize, 2, 3, 18, 49] {
            let cols = block * blocks;
            let row_bytes = t.row_bytes(cols).unwrap();
            let n_rows = 11; // two groups of 4 and a remainder of 3
            let rows: Vec<u8> = (0..n_rows).flat_map(|_| random_row(t, cols, &mut rng)).collect();
            let act = Activations::quantize(t, &random_x(cols, &mut rng));
            for &isa in &Isa::available() {
                for n in [1, 4, 5, n_rows] {
                    let mut out = vec![0f32; n];
                    vec_dot_rows(isa, t, &rows, row_bytes, &act, &mut out);
                    for r in 0..n {
                        let single = vec_dot(isa, t, &rows[r * row_bytes..(r + 1) * row_bytes], &act);
                        assert_eq!(out[r].to_bits(), single.to_bits(), "{t} {isa:?} {blocks} blocks, row {r} of {n}");
                    }
                }
            }
        }
    }
}

#[test]
fn row_token_tiles_equal_single_dots_bit_for_bit() {
    // Prefill's rows × tokens tiles form the block scales as vector products; each result must still
    // equal the one-row, one-token dot exactly (batch invariance).
    let mut rng = Rng(13);
    let mut covered = 0;
    for t in GgmlType::ALL {
        let block = t.block_len();
        for &blocks in &[1usize, 2, 3, 18, 49] {
            let cols = block * blocks;
            let row_bytes = t.row_bytes(cols).unwrap();
            let rows: Vec<u8> = (0..TILE_ROWS).flat_map(|_| random_row(t, cols, &mut rng)).collect();
            let acts: Vec<Activations> = (0..TILE).map(|_| Activations::quantize(t, &random_x(cols, &mut rng))).collect();
            for &isa in &Isa::available() {
                for n in 1..=TILE {
                    let refs: Vec<&Activations> = acts[..n].iter().collect();
                    let mut out = [[0f32; TILE]; TILE_ROWS];
                    if !vec_dot_tile_rows(isa, t, &rows, row_bytes, &refs, &mut out) {
                        continue;
                    }
                    covered += 1;
                    for r in 0..TILE_ROWS {
                        for k in 0..n {
                            let single = vec_dot(isa, t, &rows[r * row_bytes..(r + 1) * row_bytes], &acts[k]);
                            assert_eq!(out[r][k].to_bits(), single.to_bits(), "{t} {isa:?} {blocks} blocks, row {r} token {k} of {n}");
                        }
                    }
                }
            }
        }
    }
    // On a CPU with AVX-512 the Q4_0 and Q4_1 kernels must have run.
    if Isa::available().contains(&Isa::Avx512) {
        assert_eq!(covered, 2 * 5 * TILE);
    }
}

#[test]
fn quantized_dot_tracks_f32_dot_of_dequantized_weights() {
    let mut rng = Rng(7);
    for t in GgmlType::ALL {
        let cols = 1024;
        let mut worst = 0f32;
        for _ in 0..50 {
            let row = random_row(t, cols, &mut rng);
            let x = random_x(cols, &mut rng);
            let mut w = vec![0f32; cols];
            dequantize_row(t, &row, &mut w);
            let exact: f32 = w.iter().zip(&x).map(|(a, b)| a * b).sum();
            let scale: f32 = w.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum::<f32>().max(1e-6);
            let got = vec_dot(Isa::detect(), t, &row, &Activations::quantize(t, &x));
            worst = worst.max((got - exact).abs() / scale);
        }
        // 8-bit activations: per-element error ≤ half a step of amax/127; float weights are exact.
        let bound = if t.is_quantized() { 0.01 } else { 1e-5 };
        assert!(worst <= bound, "{t}: relative error {worst} > {bound}");
        eprintln!("{t}: worst relative error {worst:.2e}");
    }
}

#[test]
fn dequantize_known_blocks() {
    // Q4_0: d = 0.5, nibbles 0..15 → (q - 8) * 0.5; element j+16 is the high nibble of byte j.
    let mut b = vec![0u8; 18];
    put_f16(&mut b, 0, 0.5);
    for j in 0..16 {
        b[2 + j] = (j as u8) | (((15 - j) as u8) << 4);
    }
    let mut y = vec![0f32; 32];
    dequantize_row(GgmlType::Q4_0, &b, &mut y);
    assert_eq!(y[0], -4.0);
    assert_eq!(y[15], 3.5);
    assert_eq!(y[16], 3.5);
    assert_eq!(y[31], -4.0);
    // Q4_1: x = q * d + m.
    let mut b = vec![0u8; 20];
    put_f16(&mut b, 0, 0.25);
    put_f16(&mut b, 2, -1.0);
    b[4] = 0x3A;
    dequantize_row(GgmlType::Q4_1, &b, &mut y);
    assert_eq!((y[0], y[16], y[1]), (10.0 * 0.25 - 1.0, 3.0 * 0.25 - 1.0, -1.0));
    // Q6_K: all-zero bits mean q = -32 everywhere; scale i8 -2, d = 0.5 → 32.
    let mut b = vec![0u8; 210];
    for s in 0..16 {
        b[192 + s] = (-2i8) as u8;
    }
    put_f16(&mut b, 208, 0.5);
    let mut y = vec![0f32; 256];
    dequantize_row(GgmlType::Q6_K, &b, &mut y);
    assert!(y.iter().all(|&v| v == 32.0));
    // Q4_K: sub-block 0 scale 2, min 3 (low 6 bits of bytes 0 and 4); d = 1, dmin = 0.5.
    let mut b = vec![0u8; 144];
    put_f16(&mut b, 0, 1.0);
    put_f16(&mut b, 2, 0.5);
    b[4] = 2;
    b[8] = 3;
    b[16] = 0x57;
    dequantize_row(GgmlType::Q4_K, &b, &mut y);
    assert_eq!(y[0], 2.0 * 7.0 - 1.5);
    assert_eq!(y[32], 0.0); // sub-block 1 has scale 0 and min 0
}

#[test]
fn qmatrix_matmul_matches_dequantized_reference() {
    let mut rng = Rng(99);
    // 70 rows: four full 16-row groups and a padded one; 71 tokens: four 16-token tiles (AMX int8
    // where the CPU has it) and one of 7 (VNNI), each token compared with its own VNNI product.
    let (rows, cols, n_tokens) = (70, 512, 71);
    for t in GgmlType::ALL {
        let bytes: Vec<u8> = (0..rows).flat_map(|_| random_row(t, cols, &mut rng)).collect();
        let m = QMatrix::from_vec(t, rows, cols, bytes).unwrap();
        let x = random_x(cols * n_tokens, &mut rng);
        for isa in Isa::available() {
            let mut out = vec![0f32; rows * n_tokens];
            m.matmul_with(isa, &x, n_tokens, &mut out);
            let mut w = vec![0f32; cols];
            for tok in 0..n_tokens {
                let xt = &x[tok * cols..(tok + 1) * cols];
                // Batching must not change results: each token alone gives the same numbers.
                let mut alone = vec![0f32; rows];
                m.matmul_with(isa, xt, 1, &mut alone);
                assert_eq!(&out[tok * rows..(tok + 1) * rows], &alone[..], "{t} {isa:?} token {tok}");
                for r in 0..rows {
                    m.dequantize_row(r, &mut w);
                    let exact: f32 = w.iter().zip(xt).map(|(a, b)| a * b).sum();
                    let scale: f32 = w.iter().zip(xt).map(|(a, b)| (a * b).abs()).sum::<f32>().max(1e-6);
                    // The scalar reference on the same quantized activations: only float summation order differs.
                    let reference = vec_dot(Isa::Scalar, t, m.row(r), &Activations::quantize(t, xt));
                    let got = out[tok * rows + r];
                    assert!((got - reference).abs() <= 1e-5 * scale, "{t} {isa:?} row {r} token {tok}: {got} vs scalar {reference}");
                    assert!((got - exact).abs() <= 0.01 * scale, "{t} {isa:?} row {r}: {got} vs {exact}");
                }
            }
        }
    }
}

#[test]
fn qmatrix_rejects_bad_geometry() {
    assert!(QMatrix::from_vec(GgmlType::Q4_0, 2, 48, vec![0; 100]).unwrap_err().contains("blocks"));
    assert!(QMatrix::from_vec(GgmlType::Q4_0, 2, 64, vec![0; 71]).unwrap_err().contains("needs 72 bytes"));
}

#[test]
fn rope_row_permutation_round_trips_and_matches_llama_cpp_order() {
    let (heads, head_dim, row_bytes) = (2, 8, 3);
    let rows: Vec<u8> = (0..heads * head_dim * row_bytes).map(|i| (i / row_bytes) as u8).collect();
    let gguf = permute_rows(&rows, row_bytes, heads, head_dim).unwrap();
    // llama.cpp interleaves the halves: GGUF rows of head 0 are HF rows 0,4,1,5,2,6,3,7.
    let order: Vec<u8> = gguf.chunks(row_bytes).map(|r| r[0]).collect();
    assert_eq!(order, vec![0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15]);
    assert_eq!(unpermute_rows(&gguf, row_bytes, heads, head_dim).unwrap(), rows);
    assert!(unpermute_rows(&gguf[1..], row_bytes, heads, head_dim).is_err());
}

#[test]
fn simd_q8_quantizer_is_bit_identical_to_the_scalar_one() {
    let mut rng = Rng(5);
    let mut x = random_x(32 * 300, &mut rng);
    // Ties at ±0.5 steps, an all-zero block, a block of one value, tiny and huge magnitudes.
    for (i, v) in x[..32].iter_mut().enumerate() {
        *v = (i as f32 - 16.0) * 0.5 + 0.25;
    }
    x[32..64].fill(0.0);
    x[64..96].fill(-3.0);
    x[96..128].iter_mut().for_each(|v| *v *= 1e-30);
    x[128..160].iter_mut().for_each(|v| *v *= 1e30);
    let (simd, scalar) = (quantize_q8(&x), llm_engine::gguf::quants::quantize_q8_scalar(&x));
    assert_eq!(simd.len(), scalar.len());
    for (b, (a, r)) in simd.iter().zip(&scalar).enumerate() {
        assert_eq!((a.qs, a.d.to_bits(), a.s.to_bits(), a.isum), (r.qs, r.d.to_bits(), r.s.to_bits(), r.isum), "block {b}");
    }
}
