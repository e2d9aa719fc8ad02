//! The per-step metadata in `Buffers::meta`: its layout, how a batch fills it, and the padding
//! entries a replayed decode graph runs over.
use crate::model::ForwardSeq;

/// Offsets of the sections in `Buffers::meta` (tokens capacity T, sequences capacity S).
#[derive(Clone, Copy)]
pub(crate) struct MetaLayout {
    pub t: usize,
    pub s: usize,
}

impl MetaLayout {
    pub fn ids(&self) -> usize { 0 }
    pub fn positions(&self) -> usize { self.t }
    pub fn out_slots(&self) -> usize { 2 * self.t }
    pub fn logit_rows(&self) -> usize { 3 * self.t }
    pub fn slot_offsets(&self) -> usize { 4 * self.t }
    pub fn seq_lens(&self) -> usize { 4 * self.t + self.s }
    pub fn q_row_offsets(&self) -> usize { 4 * self.t + 2 * self.s }
    pub fn extend_lens(&self) -> usize { 4 * self.t + 3 * self.s }
    pub fn prefix_lens(&self) -> usize { 4 * self.t + 4 * self.s }
    pub fn len(&self) -> usize { 4 * self.t + 5 * self.s }

    /// Decode entries `from..to` as graph padding: each writes its K/V to `scratch_slot` and
    /// reads its own row, so a padded replay touches no real slot.
    pub fn pad_decode(&self, meta: &mut [i32], from: usize, to: usize, scratch_slot: usize) {
        for i in from..to {
            meta[self.out_slots() + i] = scratch_slot as i32;
            meta[self.logit_rows() + i] = i as i32;
            meta[self.q_row_offsets() + i] = i as i32;
            meta[self.extend_lens() + i] = 1;
        }
    }
}

/// A batch laid out for upload: the metadata, the flattened slot table, the logit rows wanted.
pub(super) struct PackedBatch {
    pub meta: Vec<i32>,
    pub table: Vec<i32>,
    pub rows: Vec<i32>,
    pub tokens: usize,
    pub max_len: usize,
    pub max_extend: usize,
}

/// Checks every sequence against the pool, the context and the vocabulary, and lays the batch
/// out in `ml` (which the caller has checked it fits).
pub(super) fn pack(
    ml: MetaLayout,
    batch: &[ForwardSeq],
    context_length: usize,
    num_slots: usize,
    vocab_size: usize,
) -> Result<PackedBatch, String> {
    let mut meta = vec![0i32; ml.len()];
    let mut table: Vec<i32> = Vec::new();
    let mut rows: Vec<i32> = Vec::new();
    let (mut tok, mut max_len, mut max_extend) = (0usize, 0usize, 0usize);
    for (i, seq) in batch.iter().enumerate() {
        let len = seq.start_pos + seq.tokens.len();
        if seq.slots.len() != len || len > context_length {
            return Err(format!("sequence {i}: {} slots for {len} positions (context {})", seq.slots.len(), context_length));
        }
        if let Some(bad) = seq.slots.iter().find(|&&s| s as usize >= num_slots) {
            return Err(format!("sequence {i}: slot {bad} outside the GPU pool of {}", num_slots));
        }
        if let Some(bad) = seq.tokens.iter().find(|&&t| t as usize >= vocab_size) {
            return Err(format!("sequence {i}: token {bad} outside the vocabulary of {}", vocab_size));
        }
        meta[ml.slot_offsets() + i] = table.len() as i32;
        meta[ml.seq_lens() + i] = len as i32;
        meta[ml.q_row_offsets() + i] = tok as i32;
        meta[ml.extend_lens() + i] = seq.tokens.len() as i32;
        meta[ml.prefix_lens() + i] = seq.start_pos as i32;
        table.extend(seq.slots.iter().map(|&s| s as i32));
        for (j, &t) in seq.tokens.iter().enumerate() {
            meta[ml.ids() + tok + j] = t as i32;
            meta[ml.positions() + tok + j] = (seq.start_pos + j) as i32;
            meta[ml.out_slots() + tok + j] = seq.slots[seq.start_pos + j] as i32;
        }
        if seq.all_logits {
            rows.extend((tok..tok + seq.tokens.len()).map(|r| r as i32));
        } else {
            rows.push((tok + seq.tokens.len() - 1) as i32);
        }
        tok += seq.tokens.len();
        max_len = max_len.max(len);
        max_extend = max_extend.max(seq.tokens.len());
    }
    meta[ml.logit_rows()..ml.logit_rows() + rows.len()].copy_from_slice(&rows);
    Ok(PackedBatch { meta, table, rows, tokens: tok, max_len, max_extend })
}
