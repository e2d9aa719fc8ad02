//! `Kernels`' attention entry points: which kernel a head shape takes and the calls the model's
//! attention loop makes (per row for a run of KV heads, per block of rows for one KV head).

use super::*;

/// One KV head's rows in the cache tables: position j's K (V) row starts at element
/// `slots[j] * stride + offset` of `k` (`v`).
#[derive(Clone, Copy)]
pub struct KvTable<'a> {
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub slots: &'a [u32],
    pub stride: usize,
    pub offset: usize,
}

impl Kernels {
    /// How many consecutive KV heads one attention call should take: all of them where the kernel
    /// reads whole K/V rows (head_dim 8 or 16 on AVX-512), else one (the caller spreads heads over threads).
    pub fn attention_heads_per_call(&self, head_dim: usize, num_kv_heads: usize) -> usize {
        if self.isa == Isa::Avx512 && (head_dim == 8 || head_dim == 16) { num_kv_heads } else { 1 }
    }

    /// Query rows per block of `attend_block` for this head shape; None where that kernel does not
    /// apply (then prefill rows go one by one through `attend_heads`). `LLM_ATTN_BLOCK=0` disables it.
    pub fn attention_block_rows(&self, head_dim: usize, group: usize) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        {
            static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
            let on = *ON.get_or_init(|| std::env::var("LLM_ATTN_BLOCK").map_or(true, |v| v != "0"));
            if on && self.isa == Isa::Avx512 && avx512_attn_block::supports(head_dim, group) {
                return Some(avx512_attn_block::block_rows(group));
            }
        }
        let _ = (head_dim, group);
        None
    }

    /// Attention of `rows` consecutive query rows of one sequence (positions `first_pos..`) for the
    /// `group` query heads of one KV head: row i's heads are read from `q` and written to `out` at
    /// `i * row_stride + g * d` (d = head_dim), and see K/V rows `kv.slots[..first_pos + i + 1]`.
    /// Only where `attention_block_rows` said so, with `rows` at most what it said.
    ///
    /// # Safety
    /// `q` and `out` must be valid at every place above; no other thread writes those of `out`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn attend_block(
        &self,
        q: *const f32,
        row_stride: usize,
        rows: usize,
        group: usize,
        d: usize,
        kv: KvTable,
        first_pos: usize,
        scale: f32,
        out: *mut f32,
        scratch: &mut Vec<f32>,
    ) {
        let max_rows = self.attention_block_rows(d, group).expect("attend_block: no block kernel for this shape");
        assert!(rows >= 1 && rows <= max_rows, "attend_block: {rows} rows (1..={max_rows})");
        let visible = &kv.slots[..first_pos + rows];
        assert!(
            visible.iter().all(|&s| s as usize * kv.stride + kv.offset + d <= kv.k.len().min(kv.v.len())),
            "attend_block: slot outside the table"
        );
        #[cfg(target_arch = "x86_64")]
        {
            let rows_read = avx512_attn_block::KvRows { k: kv.k.as_ptr(), v: kv.v.as_ptr(), slots: visible, stride: kv.stride, offset: kv.offset };
            avx512_attn_block::attend_block(q, row_stride, rows, group, d, rows_read, first_pos, scale, out, scratch);
        }
    }

    /// `attend_group` for `kv_heads` consecutive KV heads: q and out hold kv_heads * group heads
    /// (query head h = kvh * group + g), KV head kvh starts at `offset + kvh * d` of each row.
    #[allow(clippy::too_many_arguments)]
    pub fn attend_heads(&self, q: &[f32], kv_heads: usize, group: usize, k: &[f32], v: &[f32], slots: &[u32], stride: usize, offset: usize, scale: f32, out: &mut [f32], scratch: &mut Vec<f32>) {
        let hg = kv_heads * group;
        let d = q.len() / hg.max(1);
        assert!(hg > 0 && d > 0 && q.len() == hg * d && out.len() >= hg * d);
        #[cfg(target_arch = "x86_64")]
        if kv_heads > 1 && self.attention_heads_per_call(d, kv_heads) == kv_heads {
            assert!(
                slots.iter().all(|&s| s as usize * stride + offset + kv_heads * d <= k.len().min(v.len())),
                "attend_heads: slot outside the table"
            );
            // Safety: AVX-512 is present, d is 8 or 16, every row was bounds-checked above.
            unsafe {
                avx512_attn_rows::attend_heads(q, kv_heads, group, d, k.as_ptr(), v.as_ptr(), slots, stride, offset, scale, out, scratch)
            };
            return;
        }
        for kvh in 0..kv_heads {
            let at = kvh * group * d;
            let o = &mut out[at..at + group * d];
            self.attend_group(&q[at..at + group * d], group, k, v, slots, stride, offset + kvh * d, scale, o, scratch);
        }
    }

    /// Attention of one query row for the `group` query heads that share one KV head:
    /// out[g*d..][..d] = softmax(q_g · K_jᵀ · scale) · V_j over the rows j that `slots` names, where
    /// q_g = q[g*d..][..d] and K/V row j = table[slots[j] * stride + offset..][..d].
    /// `scratch` is reused across calls so a task allocates once, not once per row.
    #[allow(clippy::too_many_arguments)]
    pub fn attend_group(&self, q: &[f32], group: usize, k: &[f32], v: &[f32], slots: &[u32], stride: usize, offset: usize, scale: f32, out: &mut [f32], scratch: &mut Vec<f32>) {
        let d = q.len() / group;
        assert!(group > 0 && d > 0 && q.len() == group * d && out.len() >= group * d);
        assert!(
            slots.iter().all(|&s| s as usize * stride + offset + d <= k.len().min(v.len())),
            "attend_group: slot outside the table"
        );
        #[cfg(target_arch = "x86_64")]
        if self.isa == Isa::Avx512 && d <= avx512_attn::MAX_HEAD_DIM && k.len().max(v.len()) <= i32::MAX as usize {
            // Safety: AVX-512 is present, d is in range, every row was bounds-checked above and every
            // element index fits the gathers' i32 offsets.
            unsafe { avx512_attn::attend_group(q, group, d, k.as_ptr(), v.as_ptr(), slots, stride, offset, scale, out, scratch) };
            return;
        }
        let n = slots.len();
        scratch.clear();
        scratch.resize(n, 0.0);
        for g in 0..group {
            let s = &mut scratch[..n];
            self.dot_rows(&q[g * d..(g + 1) * d], k, slots, stride, offset, scale, s);
            let max = s.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            let mut sum = 0.0f32;
            for x in s.iter_mut() {
                *x = (*x - max).exp();
                sum += *x;
            }
            let o = &mut out[g * d..(g + 1) * d];
            o.fill(0.0);
            self.sum_rows(s, v, slots, stride, offset, o);
            let inv = 1.0 / sum;
            o.iter_mut().for_each(|x| *x *= inv);
        }
    }
}
