//! Prefill attention on AVX-512 for head_dim a multiple of 16: a block of consecutive query rows of
//! one sequence against one KV head at once.
//!
//! Why: the per-row kernels read every visible K/V row once per query row and finish each
//! head_dim-wide dot product with a horizontal sum; a 512-token prefill of SmolLM2 spent about as long
//! in attention as in its matmuls. Here the block's query vectors (rows × GQA group, at most 32) are
//! transposed so one lane is one query vector: a K row's values, broadcast one at a time, multiply
//! two 16-lane registers of queries (32 scores per K row, no reduction), softmax runs lane-wise over
//! the stored score rows, and the V side accumulates dims × queries the same way. Each K/V row is
//! read once per block instead of once per row.

use super::avx512_attn::exp_ps;
use std::arch::x86_64::*;

/// A decode row's heads (group × head_dim values) up to which `attend_one_row` keeps its outputs
/// in registers (24 accumulators).
const ONE_ROW_MAX_VALUES: usize = 24 * 16;

/// Positions per chunk of the V pass: 64 × 128 B of scores plus 64 V rows fit L1 with room to spare.
const PV_CHUNK: usize = 64;

/// Query vectors per block: two 16-lane registers.
pub const MAX_QUERIES: usize = 32;
const LANES: usize = 16;

/// The K/V rows a call reads: position j's K (V) row starts at element `slots[j] * stride + offset`
/// of `k` (`v`).
#[derive(Clone, Copy)]
pub struct KvRows<'a> {
    pub k: *const f32,
    pub v: *const f32,
    pub slots: &'a [u32],
    pub stride: usize,
    pub offset: usize,
}

impl KvRows<'_> {
    /// Where position j's row starts.
    #[inline]
    pub(crate) fn row(&self, j: usize) -> usize {
        self.slots[j] as usize * self.stride + self.offset
    }
}

/// Whether the kernel takes this head shape.
pub fn supports(head_dim: usize, group: usize) -> bool {
    head_dim % LANES == 0 && head_dim <= 256 && (1..=MAX_QUERIES).contains(&group)
}

/// Query rows per block for a GQA group of `group` heads.
pub fn block_rows(group: usize) -> usize {
    (MAX_QUERIES / group.max(1)).max(1)
}

/// For query rows `i < rows` at positions `first_pos + i` of one sequence and the `group` heads
/// sharing one KV head: `out[i * row_stride + g * d ..][..d] = softmax(q · Kᵀ · scale) · V` over
/// K/V rows `slots[..first_pos + i + 1]` (row j at element `slots[j] * stride + offset`), where
/// `q` is read at the same places as `out` is written.
///
/// # Safety
/// The CPU has avx512f/bw/vl; `supports(d, group)`; `rows * group <= MAX_QUERIES`; `slots` holds at
/// least `first_pos + rows` entries whose rows lie inside both tables; `q` and `out` are valid at
/// every place above.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn attend_block(
    q: *const f32,
    row_stride: usize,
    rows: usize,
    group: usize,
    d: usize,
    kv: KvRows,
    first_pos: usize,
    scale: f32,
    out: *mut f32,
    scratch: &mut Vec<f32>,
) {
    let (k, v) = (kv.k, kv.v);
    let nq = rows * group;
    debug_assert!(nq <= MAX_QUERIES && supports(d, group));
    let n = first_pos + rows;
    assert!(kv.slots.len() >= n, "attend_block: {} slots for {n} positions", kv.slots.len());
    let kv = KvRows { slots: &kv.slots[..n], ..kv };
    if rows == 1 && group * d <= ONE_ROW_MAX_VALUES {
        return attend_one_row(q, group, d, kv, scale, out, scratch);
    }
    const W: usize = MAX_QUERIES;
    // Grown, never cleared: every score and output cell is written before it is read, and only the
    // query panel's unused lanes must be zero (a zero-fill of the whole buffer per block cost ~5% of
    // a prefill).
    let need = 2 * d * W + n * W;
    if scratch.len() < need {
        scratch.resize(need, 0.0);
    }
    let (qt, rest) = scratch.split_at_mut(d * W);
    let (ot, st) = rest.split_at_mut(d * W);
    // qt[dd][qi] = q of query vector qi (row qi / group, head qi % group), pre-scaled; lanes past
    // nq are zero. 16 × 16 blocks transposed in registers (the scalar form compiled to scatters).
    let idx = transpose_indices();
    let vscale = _mm512_set1_ps(scale);
    for q0 in (0..W).step_by(LANES) {
        for c in (0..d).step_by(LANES) {
            let mut t = [_mm512_setzero_ps(); LANES];
            for (l, tl) in t.iter_mut().enumerate() {
                let qi = q0 + l;
                if qi < nq {
                    *tl = _mm512_mul_ps(_mm512_loadu_ps(q.add(qi / group * row_stride + qi % group * d + c)), vscale);
                }
            }
            transpose16(&mut t, &idx);
            for (u, tu) in t.iter().enumerate() {
                _mm512_storeu_ps(qt.as_mut_ptr().add((c + u) * W + q0), *tu);
            }
        }
    }
    let qt = qt.as_ptr();
    let row = |j: usize| kv.row(j);

    // Scores st[j][qi], SCORE_ROWS K rows at a time: 2 · SCORE_ROWS independent FMA chains keep
    // both FMA ports busy past the 4-cycle latency (measured on a 512-token SmolLM2 layer: 4 rows
    // 2.52-2.80 ms, 8 rows 2.39-2.42 ms).
    let mut j = 0;
    while j + SCORE_ROWS <= n {
        scores::<SCORE_ROWS>(qt, d, k, &kv, j, st.as_mut_ptr());
        j += SCORE_ROWS;
    }
    while j < n {
        scores::<1>(qt, d, k, &kv, j, st.as_mut_ptr());
        j += 1;
    }

    // Causal mask: position first_pos + t is visible to rows i >= t only (query vectors qi >= t * group).
    let visible = |t: usize| -> [__mmask16; 2] {
        let from = t * group;
        let lanes = |base: usize| -> __mmask16 {
            let mut m: u32 = 0;
            for l in 0..LANES {
                let qi = base + l;
                if qi >= from && qi < nq {
                    m |= 1 << l;
                }
            }
            m as __mmask16
        };
        [lanes(0), lanes(LANES)]
    };
    let all = [lanes_below(nq, 0), lanes_below(nq, LANES)];
    let mask_of = |j: usize| if j < first_pos { all } else { visible(j - first_pos) };

    // Softmax per lane over the visible positions.
    let st = st.as_mut_ptr();
    let neg = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut max = [neg, neg];
    for j in 0..n {
        let m = mask_of(j);
        for h in 0..2 {
            max[h] = _mm512_mask_max_ps(max[h], m[h], max[h], _mm512_loadu_ps(st.add(j * W + h * LANES)));
        }
    }
    let mut sum = [_mm512_setzero_ps(); 2];
    for j in 0..n {
        let m = mask_of(j);
        for h in 0..2 {
            let p = st.add(j * W + h * LANES);
            let e = _mm512_maskz_mov_ps(m[h], exp_ps(_mm512_sub_ps(_mm512_loadu_ps(p), max[h])));
            sum[h] = _mm512_add_ps(sum[h], e);
            _mm512_storeu_ps(p, e);
        }
    }

    // ot[dd][qi] = Σ_j p[j][qi] · V_j[dd], eight dims (16 accumulators) per pass over the positions.
    // The positions go in chunks whose scores and V rows stay in L1 across the dims' passes (the
    // whole score table is up to 64 KB); the accumulators park in `ot` between chunks, so each is
    // still one FMA chain in position order (same bits).
    let ot = ot.as_mut_ptr();
    for j0 in (0..n).step_by(PV_CHUNK) {
        let j1 = (j0 + PV_CHUNK).min(n);
        for dc in (0..d).step_by(8) {
            let mut acc = [_mm512_setzero_ps(); 16];
            if j0 > 0 {
                for (u, pair) in acc.chunks_exact_mut(2).enumerate() {
                    pair[0] = _mm512_loadu_ps(ot.add((dc + u) * W));
                    pair[1] = _mm512_loadu_ps(ot.add((dc + u) * W + LANES));
                }
            }
            for j in j0..j1 {
                let (p0, p1) = (_mm512_loadu_ps(st.add(j * W)), _mm512_loadu_ps(st.add(j * W + LANES)));
                let vr = v.add(row(j) + dc);
                for u in 0..8 {
                    let b = _mm512_set1_ps(*vr.add(u));
                    acc[2 * u] = _mm512_fmadd_ps(b, p0, acc[2 * u]);
                    acc[2 * u + 1] = _mm512_fmadd_ps(b, p1, acc[2 * u + 1]);
                }
            }
            for (u, pair) in acc.chunks_exact(2).enumerate() {
                _mm512_storeu_ps(ot.add((dc + u) * W), pair[0]);
                _mm512_storeu_ps(ot.add((dc + u) * W + LANES), pair[1]);
            }
        }
    }
    let mut inv = [0f32; W];
    _mm512_storeu_ps(inv.as_mut_ptr(), _mm512_div_ps(_mm512_set1_ps(1.0), sum[0]));
    _mm512_storeu_ps(inv.as_mut_ptr().add(LANES), _mm512_div_ps(_mm512_set1_ps(1.0), sum[1]));
    // out[qi] = ot[..][qi] · inv[qi], back through 16 × 16 register transposes.
    for q0 in (0..nq).step_by(LANES) {
        for c in (0..d).step_by(LANES) {
            let mut t = [_mm512_setzero_ps(); LANES];
            for (u, tu) in t.iter_mut().enumerate() {
                *tu = _mm512_loadu_ps(ot.add((c + u) * W + q0));
            }
            transpose16(&mut t, &idx);
            for (l, tl) in t.iter().enumerate().take(nq - q0) {
                let qi = q0 + l;
                _mm512_storeu_ps(out.add(qi / group * row_stride + qi % group * d + c), _mm512_mul_ps(*tl, _mm512_set1_ps(inv[qi])));
            }
        }
    }
}

/// K rows per step of the block's score loop.
const SCORE_ROWS: usize = 8;

/// Scores of K rows `j..j + R` against the block's transposed queries `qt` (rows of `MAX_QUERIES`):
/// `st[(j + r) * MAX_QUERIES + qi] = Σ_dd qt[dd][qi] · K_{j+r}[dd]`, one FMA chain per cell in dim order.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn scores<const R: usize>(qt: *const f32, d: usize, k: *const f32, kv: &KvRows, j: usize, st: *mut f32) {
    const W: usize = MAX_QUERIES;
    let mut ks = [k; R];
    for (r, kr) in ks.iter_mut().enumerate() {
        *kr = k.add(kv.row(j + r));
    }
    let mut acc0 = [_mm512_setzero_ps(); R];
    let mut acc1 = [_mm512_setzero_ps(); R];
    for dd in 0..d {
        let (q0, q1) = (_mm512_loadu_ps(qt.add(dd * W)), _mm512_loadu_ps(qt.add(dd * W + LANES)));
        for r in 0..R {
            let b = _mm512_set1_ps(*ks[r].add(dd));
            acc0[r] = _mm512_fmadd_ps(b, q0, acc0[r]);
            acc1[r] = _mm512_fmadd_ps(b, q1, acc1[r]);
        }
    }
    for r in 0..R {
        _mm512_storeu_ps(st.add((j + r) * W), acc0[r]);
        _mm512_storeu_ps(st.add((j + r) * W + LANES), acc1[r]);
    }
}

/// Lanes `l` of the 16 starting at `base` with `base + l < n`.
fn lanes_below(n: usize, base: usize) -> __mmask16 {
    let k = n.saturating_sub(base).min(LANES);
    if k >= LANES { 0xFFFF } else { ((1u32 << k) - 1) as __mmask16 }
}

/// One decode row (`rows == 1`): the same arithmetic per query vector as `attend_block` (scores as a
/// lane-wise FMA chain over the dims of the pre-scaled query, lane-wise softmax, then for every
/// position `out += p · V_j` in position order), so results are bit-identical to a block's, but the
/// scores use one register of query lanes and the V side runs with lanes = dims and no transposes:
/// about 3x fewer operations than a one-row block.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn attend_one_row(q: *const f32, group: usize, d: usize, kv: KvRows, scale: f32, out: *mut f32, scratch: &mut Vec<f32>) {
    let (k, v, n) = (kv.k, kv.v, kv.slots.len());
    let need = d * LANES + n * LANES;
    if scratch.len() < need {
        scratch.resize(need, 0.0);
    }
    let (qt, st) = scratch.split_at_mut(d * LANES);
    qt[..d * LANES].fill(0.0);
    for g in 0..group {
        for dd in 0..d {
            qt[dd * LANES + g] = *q.add(g * d + dd) * scale;
        }
    }
    let qt = qt.as_ptr();
    let row = |j: usize| kv.row(j);
    let mut j = 0;
    if group <= TRANSPOSED_MAX_GROUP {
        // 16 positions at a time with lanes = positions: their K rows are transposed in registers, and
        // each query head then needs one FMA per dim for all 16 (the same product and the same order
        // of additions as the lanes = queries form below, so the same bits).
        let idx = transpose_indices();
        while j + LANES <= n {
            let mut acc = [_mm512_setzero_ps(); TRANSPOSED_MAX_GROUP];
            for c in (0..d).step_by(LANES) {
                let mut t = [_mm512_setzero_ps(); LANES];
                for (r, tr) in t.iter_mut().enumerate() {
                    *tr = _mm512_loadu_ps(k.add(row(j + r) + c));
                }
                transpose16(&mut t, &idx);
                for (u, tu) in t.iter().enumerate() {
                    for (g, a) in acc.iter_mut().enumerate().take(group) {
                        *a = _mm512_fmadd_ps(*tu, _mm512_set1_ps(*qt.add((c + u) * LANES + g)), *a);
                    }
                }
            }
            let mut lanes = [0f32; LANES];
            for (g, a) in acc.iter().enumerate().take(group) {
                _mm512_storeu_ps(lanes.as_mut_ptr(), *a);
                for (r, &x) in lanes.iter().enumerate() {
                    st[(j + r) * LANES + g] = x;
                }
            }
            j += LANES;
        }
    }
    while j + 4 <= n {
        let ks = [k.add(row(j)), k.add(row(j + 1)), k.add(row(j + 2)), k.add(row(j + 3))];
        let mut acc = [_mm512_setzero_ps(); 4];
        for dd in 0..d {
            let q0 = _mm512_loadu_ps(qt.add(dd * LANES));
            for (r, kr) in ks.iter().enumerate() {
                acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(*kr.add(dd)), q0, acc[r]);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm512_storeu_ps(st.as_mut_ptr().add((j + r) * LANES), *a);
        }
        j += 4;
    }
    while j < n {
        let kr = k.add(row(j));
        let mut a = _mm512_setzero_ps();
        for dd in 0..d {
            a = _mm512_fmadd_ps(_mm512_set1_ps(*kr.add(dd)), _mm512_loadu_ps(qt.add(dd * LANES)), a);
        }
        _mm512_storeu_ps(st.as_mut_ptr().add(j * LANES), a);
        j += 1;
    }
    let m = lanes_below(group, 0);
    let st = st.as_mut_ptr();
    let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
    for j in 0..n {
        max = _mm512_mask_max_ps(max, m, max, _mm512_loadu_ps(st.add(j * LANES)));
    }
    let mut sum = _mm512_setzero_ps();
    for j in 0..n {
        let p = st.add(j * LANES);
        let e = _mm512_maskz_mov_ps(m, exp_ps(_mm512_sub_ps(_mm512_loadu_ps(p), max)));
        sum = _mm512_add_ps(sum, e);
        _mm512_storeu_ps(p, e);
    }
    let mut inv = [0f32; LANES];
    _mm512_storeu_ps(inv.as_mut_ptr(), _mm512_div_ps(_mm512_set1_ps(1.0), sum));
    // out[g][dd] = Σ_j p[j][g] · V_j[dd]: lanes = dims, one accumulator per (head, 16 dims).
    let per_head = d / LANES;
    let mut acc = [_mm512_setzero_ps(); ONE_ROW_MAX_VALUES / LANES];
    for j in 0..n {
        let vr = v.add(row(j));
        for c in 0..per_head {
            let vv = _mm512_loadu_ps(vr.add(c * LANES));
            for g in 0..group {
                let a = &mut acc[g * per_head + c];
                *a = _mm512_fmadd_ps(vv, _mm512_set1_ps(*st.add(j * LANES + g)), *a);
            }
        }
    }
    for g in 0..group {
        for c in 0..per_head {
            _mm512_storeu_ps(out.add(g * d + c * LANES), _mm512_mul_ps(acc[g * per_head + c], _mm512_set1_ps(inv[g])));
        }
    }
}

/// Query heads up to which a decode row scores 16 positions at once on transposed K rows.
const TRANSPOSED_MAX_GROUP: usize = 8;

/// permutex2var indices of the four rounds of `transpose16` (s = 8, 4, 2, 1): the low and high halves.
fn transpose_indices() -> [[__m512i; 2]; 4] {
    let mut out = [[unsafe { _mm512_setzero_si512() }; 2]; 4];
    for (round, s) in [8usize, 4, 2, 1].into_iter().enumerate() {
        let mut lo = [0i32; LANES];
        let mut hi = [0i32; LANES];
        for j in 0..LANES {
            let (l, h) = if j & s == 0 { (j, j + s) } else { (16 + j - s, 16 + j) };
            lo[j] = l as i32;
            hi[j] = h as i32;
        }
        // SAFETY: plain loads of 16 i32 from local arrays (AVX-512F is checked by the callers).
        out[round] = unsafe { [_mm512_loadu_si512(lo.as_ptr() as *const _), _mm512_loadu_si512(hi.as_ptr() as *const _)] };
    }
    out
}

/// In-register 16 × 16 transpose: afterwards `t[i]` lane `j` holds what `t[j]` lane `i` held. Four
/// rounds swap the off-diagonal halves of ever smaller blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn transpose16(t: &mut [__m512; LANES], idx: &[[__m512i; 2]; 4]) {
    for (round, s) in [8usize, 4, 2, 1].into_iter().enumerate() {
        for i in 0..LANES {
            if i & s == 0 {
                let (a, b) = (t[i], t[i + s]);
                t[i] = _mm512_permutex2var_ps(a, idx[round][0], b);
                t[i + s] = _mm512_permutex2var_ps(a, idx[round][1], b);
            }
        }
    }
}
