//! Portable reference kernels: the definition every SIMD path is tested against.

use super::matrix::{bytes_to_f32, DType};

/// out[t * ldo + r] = dot(x[t], w[r]) for t < n, r < nrows. `w` holds `nrows` rows of `k` elements.
pub fn gemm_rows(x: &[f32], n: usize, k: usize, w: &[u8], dtype: DType, nrows: usize, out: &mut [f32], ldo: usize) {
    let stride = k * dtype.size();
    let mut row = vec![0.0f32; k];
    for r in 0..nrows {
        bytes_to_f32(dtype, &w[r * stride..(r + 1) * stride], &mut row);
        for t in 0..n {
            out[t * ldo + r] = dot(&row, &x[t * k..(t + 1) * k]);
        }
    }
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// y += alpha * x.
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (b, &a) in y.iter_mut().zip(x) {
        *b += alpha * a;
    }
}
