//! The panelled layout of a bf16 weight matrix for the `vdpbf16ps` kernels: rows in blocks of
//! `BLOCK_ROWS`, and inside a block the columns in panels of `PANEL_COLS` (the last one narrower),
//! each panel holding the block's rows one after another. A block is still one contiguous run of
//! memory, so a thread walking it reads one sequential stream, and a row's products need only one
//! panel of activations at a time.
//!
//! Why: at batch 1 a row of down_proj (k = 8192 in Llama-3.2-1B) is 16 KiB of weights against 16
//! KiB of bf16 activations. Row-major, every row streams 16 KiB through the 32 KiB L1 between two
//! uses of an activation line, so the activations come back from L2 for every row, and on the Zen 4
//! VM the row loop read at 0.76-0.91x of a plain read of the same matrix. Walking the same bytes
//! panel by panel (8 KiB of activations, which stay in L1) read at 0.90-1.0x (docs/cpu-kernels.md).
//! Each row is still one accumulator chain over k in order, carried from panel to panel, so a row's
//! number is bit-identical to the row-major kernels' and to itself in any batch.
//!
//! Matrices with at most `PANEL_COLS` columns keep the plain row-major layout (one panel would be
//! the same bytes in the same order).

use super::matrix::DType;

/// Rows per block; matmul tasks over a panelled matrix start at a multiple of it.
pub const BLOCK_ROWS: usize = 16;
/// Columns per panel: 8 KiB of bf16 activations, which stay in L1 next to the weight stream. A
/// multiple of 32 (one `vdpbf16ps`), so panel edges fall on the chunk edges of the row-major loop.
pub const PANEL_COLS: usize = 4096;
/// Most panels a row may have (the kernels' prefetch keeps one range per panel).
pub const MAX_PANELS: usize = 8;

/// Whether a `rows x cols` matrix of `dtype` is worth panelling for the `vdpbf16ps` kernels.
pub fn wanted(dtype: DType, cols: usize) -> bool {
    dtype == DType::BF16 && cols > PANEL_COLS && panels(cols) <= MAX_PANELS
}

/// Number of panels of a row of `cols` columns.
pub fn panels(cols: usize) -> usize {
    cols.div_ceil(PANEL_COLS)
}

/// Width of panel `p` of a row of `cols` columns.
pub fn panel_width(cols: usize, p: usize) -> usize {
    PANEL_COLS.min(cols - p * PANEL_COLS)
}

/// Rows in the block that holds row `row` of a matrix of `rows` rows.
pub fn block_rows(rows: usize, row: usize) -> usize {
    BLOCK_ROWS.min(rows - row / BLOCK_ROWS * BLOCK_ROWS)
}

/// Element offset of (`row`, first column of panel `p`) in a panelled `rows x cols` matrix: the
/// blocks before it are full, and inside its block panel p follows the earlier (full-width) panels.
pub fn offset(rows: usize, cols: usize, row: usize, p: usize) -> usize {
    let block_start = row / BLOCK_ROWS * BLOCK_ROWS;
    block_start * cols + p * PANEL_COLS * block_rows(rows, row) + (row - block_start) * panel_width(cols, p)
}

/// The row-major `src` (rows x cols elements of `size` bytes) written into `dst` in the panelled layout.
pub fn pack(src: &[u8], rows: usize, cols: usize, size: usize, dst: &mut [u8]) {
    assert_eq!(src.len(), rows * cols * size);
    assert_eq!(dst.len(), src.len());
    for row in 0..rows {
        for p in 0..panels(cols) {
            let (at, width) = (offset(rows, cols, row, p) * size, panel_width(cols, p) * size);
            let from = (row * cols + p * PANEL_COLS) * size;
            dst[at..at + width].copy_from_slice(&src[from..from + width]);
        }
    }
}

/// Row `row`'s bytes, panel by panel, out of a panelled `rows x cols` matrix.
pub fn row_pieces(bytes: &[u8], rows: usize, cols: usize, size: usize, row: usize) -> impl Iterator<Item = &[u8]> {
    (0..panels(cols)).map(move |p| {
        let at = offset(rows, cols, row, p) * size;
        &bytes[at..at + panel_width(cols, p) * size]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_element_has_one_place_and_rows_read_back() {
        // 37 rows: two full blocks and a short one; 3 panels, the last 100 wide.
        let (rows, cols) = (37, 2 * PANEL_COLS + 100);
        let src: Vec<u8> = (0..rows * cols).flat_map(|i| (i as u16).to_le_bytes()).collect();
        let mut dst = vec![0u8; src.len()];
        pack(&src, rows, cols, 2, &mut dst);
        let mut sorted: Vec<u16> = dst.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        let mut want: Vec<u16> = src.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        sorted.sort_unstable();
        want.sort_unstable();
        assert_eq!(sorted, want, "a permutation of the elements");
        for row in 0..rows {
            let back: Vec<u8> = row_pieces(&dst, rows, cols, 2, row).flatten().copied().collect();
            assert_eq!(back, &src[row * cols * 2..(row + 1) * cols * 2], "row {row}");
        }
        // A block is contiguous: block 1 starts where 16 full rows end.
        assert_eq!(offset(rows, cols, 16, 0), 16 * cols);
        // In the short block (5 rows), panel 1 starts after its 5 rows of panel 0.
        assert_eq!(offset(rows, cols, 32, 1), 32 * cols + 5 * PANEL_COLS);
    }

    #[test]
    fn only_wide_bf16_rows_are_panelled() {
        assert!(wanted(DType::BF16, 8192));
        assert!(wanted(DType::BF16, 14336));
        assert!(!wanted(DType::BF16, PANEL_COLS));
        assert!(!wanted(DType::F32, 8192));
        assert!(!wanted(DType::F16, 8192));
        assert!(!wanted(DType::BF16, MAX_PANELS * PANEL_COLS + 1));
    }
}
