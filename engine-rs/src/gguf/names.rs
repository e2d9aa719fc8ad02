//! llama.cpp tensor names ↔ Hugging Face (transformers Llama) tensor names.

const LAYER_PARTS: [(&str, &str); 9] = [
    ("attn_norm.weight", "input_layernorm.weight"),
    ("attn_q.weight", "self_attn.q_proj.weight"),
    ("attn_k.weight", "self_attn.k_proj.weight"),
    ("attn_v.weight", "self_attn.v_proj.weight"),
    ("attn_output.weight", "self_attn.o_proj.weight"),
    ("ffn_norm.weight", "post_attention_layernorm.weight"),
    ("ffn_gate.weight", "mlp.gate_proj.weight"),
    ("ffn_up.weight", "mlp.up_proj.weight"),
    ("ffn_down.weight", "mlp.down_proj.weight"),
];

const GLOBALS: [(&str, &str); 3] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// The HF name of a GGUF tensor; None for tensors without one (e.g. `rope_freqs.weight`).
pub fn gguf_to_hf(name: &str) -> Option<String> {
    if let Some(&(_, hf)) = GLOBALS.iter().find(|(g, _)| *g == name) {
        return Some(hf.to_string());
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let &(_, hf) = LAYER_PARTS.iter().find(|(g, _)| *g == part)?;
    Some(format!("model.layers.{layer}.{hf}"))
}

/// The GGUF name of an HF tensor.
pub fn hf_to_gguf(name: &str) -> Option<String> {
    if let Some(&(g, _)) = GLOBALS.iter().find(|(_, h)| *h == name) {
        return Some(g.to_string());
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let &(g, _) = LAYER_PARTS.iter().find(|(_, h)| *h == part)?;
    Some(format!("blk.{layer}.{g}"))
}

/// GGUF name of a per-layer tensor, e.g. `layer_tensor(3, "attn_q")` → `blk.3.attn_q.weight`.
pub fn layer_tensor(layer: usize, part: &str) -> String {
    format!("blk.{layer}.{part}.weight")
}
