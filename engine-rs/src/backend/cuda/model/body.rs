//! The kernels and GEMMs of one forward, reading metadata already on the device: captured as-is
//! into the decode graphs, and run eagerly for everything else.
use super::state::{AttnMode, State};
use super::{ptr, CudaLlama};
use crate::backend::cuda::gemm::OutType;
use crate::backend::cuda::kernels::Arg;
use crate::backend::cuda::plan;

impl CudaLlama {
    /// Every kernel and GEMM of one forward, reading metadata already on the device. Captured
    /// as-is into graphs, so nothing here may synchronise or allocate.
    pub(crate) fn run_body(&self, st: &State, n_tokens: usize, n_seqs: usize, mode: AttnMode, logit_rows: usize) -> Result<(), String> {
        let c = &self.config;
        let g = &self.gpu;
        let k = &self.kernels;
        let b = &st.bufs;
        let ml = st.meta_layout;
        let (h, inter) = (c.hidden_size, c.intermediate_size);
        let (nh, nkv, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let qkv_dim = (nh + 2 * nkv) * hd;
        let meta = ptr(&b.meta, g);
        let m = |off: usize| Arg::Ptr(meta + 4 * off as u64);
        let (residual, proj, qkv, attn) = (ptr(&b.residual, g), ptr(&b.proj, g), ptr(&b.qkv, g), ptr(&b.attn, g));
        let (gate_up, act) = (ptr(&b.gate_up, g), ptr(&b.act, g));
        let eps = Arg::F32(c.rms_norm_eps);
        let rows = plan::per_row_launch(n_tokens, 256);

        k.launch(&g.stream, "embedding_gather", rows, &[Arg::Ptr(ptr(&self.embed, g)), m(ml.ids()), Arg::Ptr(residual), Arg::I32(h as i32), Arg::I32(c.vocab_size as i32)])?;
        k.launch(&g.stream, "rmsnorm", rows, &[Arg::Ptr(residual), Arg::Ptr(ptr(&self.layers[0].ln_in, g)), Arg::Ptr(proj), Arg::I32(h as i32), eps])?;
        let scale = Arg::F32(1.0 / (hd as f32).sqrt());
        for (l, layer) in self.layers.iter().enumerate() {
            let (kc, vc) = (ptr(&layer.k_cache, g), ptr(&layer.v_cache, g));
            self.gemm.linear(proj, ptr(&layer.qkv, g), qkv, n_tokens, qkv_dim, h, OutType::Bf16)?;
            k.launch(&g.stream, "rope_kv_write", plan::per_row_launch(n_tokens, 128), &[
                Arg::Ptr(qkv), Arg::I32(qkv_dim as i32), m(ml.positions()), m(ml.out_slots()), Arg::Ptr(ptr(&self.rope_table, g)),
                Arg::Ptr(kc), Arg::Ptr(vc), Arg::I32(nh as i32), Arg::I32(nkv as i32), Arg::I32(hd as i32),
            ])?;
            let slot_table = Arg::Ptr(ptr(&b.slot_table, g));
            match mode {
                AttnMode::Decode { splits, partition } => {
                    k.launch(&g.stream, "attention_decode_partial", plan::decode_launch(n_seqs, nkv, splits), &[
                        Arg::Ptr(qkv), Arg::I32(qkv_dim as i32), Arg::Ptr(kc), Arg::Ptr(vc), slot_table, m(ml.slot_offsets()),
                        m(ml.seq_lens()), Arg::Ptr(ptr(&b.part_acc, g)), Arg::Ptr(ptr(&b.part_ml, g)), Arg::I32(nh as i32),
                        Arg::I32(nkv as i32), Arg::I32(hd as i32), Arg::I32(partition as i32), scale,
                    ])?;
                    let combine = plan::Launch { grid: (n_seqs as u32, nh as u32, 1), block: (128, 1, 1), shared_bytes: 0 };
                    k.launch(&g.stream, "attention_decode_combine", combine, &[
                        Arg::Ptr(ptr(&b.part_acc, g)), Arg::Ptr(ptr(&b.part_ml, g)), Arg::Ptr(attn), Arg::I32(nh as i32),
                        Arg::I32(hd as i32), Arg::I32(splits as i32),
                    ])?;
                }
                AttnMode::Prefill { max_extend } => {
                    k.launch(&g.stream, "attention_prefill", plan::prefill_launch(n_seqs, nh, max_extend, hd), &[
                        Arg::Ptr(qkv), Arg::I32(qkv_dim as i32), Arg::Ptr(kc), Arg::Ptr(vc), slot_table, m(ml.slot_offsets()),
                        m(ml.q_row_offsets()), m(ml.extend_lens()), m(ml.prefix_lens()), Arg::Ptr(attn), Arg::I32(nh as i32),
                        Arg::I32(nkv as i32), Arg::I32(hd as i32), scale,
                    ])?;
                }
            }
            self.gemm.linear(attn, ptr(&layer.o, g), proj, n_tokens, h, nh * hd, OutType::Bf16)?;
            k.launch(&g.stream, "fused_add_rmsnorm", rows, &[Arg::Ptr(proj), Arg::Ptr(residual), Arg::Ptr(ptr(&layer.ln_post, g)), Arg::I32(h as i32), eps])?;
            self.gemm.linear(proj, ptr(&layer.gate_up, g), gate_up, n_tokens, 2 * inter, h, OutType::Bf16)?;
            k.launch(&g.stream, "silu_and_mul", plan::elementwise_launch(n_tokens * inter), &[Arg::Ptr(gate_up), Arg::Ptr(act), Arg::I32(n_tokens as i32), Arg::I32(inter as i32)])?;
            self.gemm.linear(act, ptr(&layer.down, g), proj, n_tokens, h, inter, OutType::Bf16)?;
            let next_norm = match self.layers.get(l + 1) {
                Some(next) => ptr(&next.ln_in, g),
                None => ptr(&self.final_norm, g),
            };
            k.launch(&g.stream, "fused_add_rmsnorm", rows, &[Arg::Ptr(proj), Arg::Ptr(residual), Arg::Ptr(next_norm), Arg::I32(h as i32), eps])?;
        }
        self.logits_rows(st, 0, logit_rows)
    }

    /// Logits for rows `meta.logit_rows[first..first+count]` of the normed hidden states into
    /// `bufs.logits` (f32, count <= LOGIT_ROWS capacity).
    pub(super) fn logits_rows(&self, st: &State, first: usize, count: usize) -> Result<(), String> {
        let c = &self.config;
        let g = &self.gpu;
        let b = &st.bufs;
        let ids = ptr(&b.meta, g) + 4 * (st.meta_layout.logit_rows() + first) as u64;
        let gathered = ptr(&b.gathered, g);
        // Row gather = embedding lookup into the hidden states (vocab := token count capacity).
        self.kernels.launch(&g.stream, "embedding_gather", plan::per_row_launch(count, 256), &[
            Arg::Ptr(ptr(&b.proj, g)), Arg::Ptr(ids), Arg::Ptr(gathered), Arg::I32(c.hidden_size as i32), Arg::I32(st.meta_layout.t as i32),
        ])?;
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        self.gemm.linear(gathered, ptr(head, g), ptr(&b.logits, g), count, c.vocab_size, c.hidden_size, OutType::F32)
    }
}
