//! llama.cpp's converter reorders the rows of Q and K so its RoPE can rotate adjacent pairs
//! (x[2i], x[2i+1]); HF Llama rotates halves (x[i], x[i + d/2]). Per head of `head_dim` rows,
//! GGUF row `2i + j` holds HF row `j * head_dim/2 + i`. Undoing that puts rows back in HF order so
//! the rotate-half RoPE applies unchanged. Rows move whole, so this works on quantized rows too.

/// HF-order rows from GGUF-order rows. `bytes` holds `n_heads * head_dim` rows of `row_bytes`.
pub fn unpermute_rows(bytes: &[u8], row_bytes: usize, n_heads: usize, head_dim: usize) -> Result<Vec<u8>, String> {
    reorder(bytes, row_bytes, n_heads, head_dim, true)
}

/// GGUF-order rows from HF-order rows (what llama.cpp's converter does).
pub fn permute_rows(bytes: &[u8], row_bytes: usize, n_heads: usize, head_dim: usize) -> Result<Vec<u8>, String> {
    reorder(bytes, row_bytes, n_heads, head_dim, false)
}

fn reorder(bytes: &[u8], row_bytes: usize, n_heads: usize, head_dim: usize, to_hf: bool) -> Result<Vec<u8>, String> {
    if head_dim % 2 != 0 || Some(bytes.len()) != n_heads.checked_mul(head_dim).and_then(|r| r.checked_mul(row_bytes)) {
        return Err(format!(
            "cannot reorder {} bytes as {n_heads} heads × {head_dim} rows × {row_bytes} bytes for RoPE",
            bytes.len()
        ));
    }
    let half = head_dim / 2;
    let mut out = vec![0u8; bytes.len()];
    for h in 0..n_heads {
        for i in 0..half {
            for j in 0..2 {
                let gguf_row = h * head_dim + 2 * i + j;
                let hf_row = h * head_dim + j * half + i;
                let (src, dst) = if to_hf { (gguf_row, hf_row) } else { (hf_row, gguf_row) };
                out[dst * row_bytes..(dst + 1) * row_bytes].copy_from_slice(&bytes[src * row_bytes..(src + 1) * row_bytes]);
            }
        }
    }
    Ok(out)
}
