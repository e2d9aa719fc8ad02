//! CPU kernels. The instruction set is chosen once at run time (`Isa::detect`) and carried in a
//! `Kernels` value owned by the model, so one binary runs on AVX-512, AVX2 or plain CPUs.
//! Matmuls take f32 activations and weights in their stored dtype (f32, bf16, f16) and
//! accumulate in f32; they split the weight rows across the current rayon pool.

pub mod huge;
pub mod matrix;
pub mod panels;
pub mod read_probe;
pub mod warm_pool;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
pub mod amx;
mod attention;
pub use attention::KvTable;
#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
#[cfg(target_arch = "x86_64")]
pub mod avx512_bf16;
#[cfg(target_arch = "x86_64")]
pub mod avx512_attn;
#[cfg(target_arch = "x86_64")]
pub mod avx512_attn_rows;
#[cfg(target_arch = "x86_64")]
pub mod avx512_attn_block;
pub mod expf_glibc;
#[cfg(target_arch = "x86_64")]
pub mod avx512_attn_f16acc;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod bf16_tests;

use matrix::{DType, Matrix};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
}

impl Isa {
    /// The fastest instruction set this CPU supports.
    pub fn detect() -> Isa {
        *Isa::available().last().unwrap_or(&Isa::Scalar)
    }

    /// Every instruction set this CPU can run, slowest first (Scalar always).
    pub fn available() -> Vec<Isa> {
        #[allow(unused_mut)]
        let mut list = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
                list.push(Isa::Avx2);
            }
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
            {
                list.push(Isa::Avx512);
            }
        }
        list
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }
}

/// A raw output pointer shared by tasks that write disjoint elements (matmul row tasks, quantized
/// row chunks, attention heads): each writer's safety argument is that no two tasks touch one element.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(pub(crate) *mut f32);
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}
impl SharedOut {
    pub(crate) fn at(self, i: usize) -> *mut f32 {
        unsafe { self.0.add(i) }
    }
}

/// Below this many multiply-adds (and with weights under TASK_WEIGHT_BYTES) a matmul runs its tasks on
/// the calling thread: waking the pool and joining it costs more than the arithmetic (a tiny model's
/// projections are ~0.3M at batch 64).
pub(crate) const SERIAL_MACS: usize = 1 << 20;
/// Below this many activations a row-wise norm runs on the calling thread (64 rows of 64 are ~1 µs).
const SERIAL_NORM_ELEMS: usize = 1 << 16;
/// Rows per parallel task of a norm.
const NORM_TASK_ROWS: usize = 16;

/// Weight bytes one task keeps hot while it sweeps the tokens (fits in L2 with room for activations).
const TASK_WEIGHT_BYTES: usize = 256 * 1024;

/// One cache line of u16s: a Vec of them is 64-byte aligned.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u16; 32]);

/// A 64-byte aligned u16 buffer. The bf16 activations are read 64 bytes at a time against every
/// weight row; from a plain Vec (16-byte aligned) each such load straddled two cache lines, and a
/// batch-1 down_proj (k = 8192, whose activations do not stay in L1) read its weights at 38.6-42.4
/// GB/s against 41.8-46.5 aligned (Zen 4, probe ~63 GB/s).
struct CacheLines {
    lines: Vec<Line>,
    len: usize,
}

impl CacheLines {
    fn zeroed(len: usize) -> CacheLines {
        CacheLines { lines: vec![Line([0; 32]); len.div_ceil(32)], len }
    }

    fn as_slice(&self) -> &[u16] {
        // Safety: Line is 32 u16s with no padding (size 64 = align 64), so the lines are one run
        // of u16s, of which the first len are ours.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr() as *const u16, self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [u16] {
        // Safety: as in as_slice.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr() as *mut u16, self.len) }
    }
}

/// Whether this CPU has `vdpbf16ps` (AVX512_BF16) next to the AVX-512 base set.
pub fn has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        Isa::available().contains(&Isa::Avx512) && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this process can use AMX bf16 tiles (CPUID, the kernel's permission, `LLM_CPU_AMX`).
pub fn has_amx() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        amx::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Kernels {
    pub isa: Isa,
    /// bf16 weights multiply bf16-rounded activations with `vdpbf16ps` (set only for models that
    /// compute in bfloat16, and only where the CPU has AVX512_BF16); otherwise weights are
    /// widened exactly to f32.
    pub bf16_dot: bool,
    /// With `bf16_dot`: bf16 matmuls run on AMX tiles (`amx::available()`); rows the tiles do
    /// not cover (m % 16, or k % 32 != 0) keep the `vdpbf16ps` kernel.
    pub amx: bool,
}

impl Kernels {
    pub fn detect() -> Kernels {
        Kernels { isa: Isa::detect(), bf16_dot: false, amx: false }
    }

    /// Kernels for `isa`, or an error if this CPU lacks it.
    pub fn with_isa(isa: Isa) -> Result<Kernels, String> {
        if Isa::available().contains(&isa) {
            Ok(Kernels { isa, bf16_dot: false, amx: false })
        } else {
            Err(format!("this CPU does not support the {} kernels", isa.name()))
        }
    }

    /// These kernels, computing bf16 weights against bf16-rounded activations when the CPU can
    /// (`vdpbf16ps`); unchanged elsewhere.
    pub fn with_bf16_activations(self) -> Kernels {
        let bf16_dot = self.isa == Isa::Avx512 && has_avx512_bf16();
        Kernels { bf16_dot, amx: bf16_dot && has_amx(), ..self }
    }

    /// These kernels with the AMX tiles switched off (the `vdpbf16ps` path), for tests and
    /// comparisons on an AMX machine.
    pub fn without_amx(self) -> Kernels {
        Kernels { amx: false, ..self }
    }

    /// The kernel path's name for logs ("amx_bf16", "avx512_bf16", "avx512", "avx2", "scalar").
    pub fn name(&self) -> &'static str {
        if self.amx {
            "amx_bf16"
        } else if self.bf16_dot {
            "avx512_bf16"
        } else {
            self.isa.name()
        }
    }

    /// out (n x m) = x (n x k) · wᵀ, where w is m x k. Rows of w are split across the current
    /// rayon pool; each task reads its rows once for all n tokens.
    pub fn matmul(&self, x: &[f32], n: usize, w: &Matrix, out: &mut [f32]) {
        self.matmul_fused(x, n, &[w], &mut [out]);
    }

    /// outs[i] (n x m_i) = x · ws[i]ᵀ for several matrices that read the same activations (q/k/v,
    /// gate/up): the activations are rounded to bf16 and packed for AMX once, and the row tasks of
    /// every matrix go to the pool in one dispatch, so the small k/v projections do not each end
    /// in a half-idle pool. Each row is computed exactly as `matmul` would (same tasks, kernels).
    pub fn matmul_fused(&self, x: &[f32], n: usize, ws: &[&Matrix], outs: &mut [&mut [f32]]) {
        assert_eq!(ws.len(), outs.len(), "matmul_fused: one output per matrix");
        let Some(first) = ws.first() else { return };
        let (k, dtype) = (first.cols, first.dtype);
        if ws.iter().any(|w| w.cols != k || w.dtype != dtype) {
            for (w, out) in ws.iter().zip(outs.iter_mut()) {
                self.matmul_fused(x, n, &[w], &mut [&mut **out]);
            }
            return;
        }
        // Only the AMX path fuses: there the activations are packed once for all the matrices; the
        // other paths run them one by one as before (fusing showed no gain for them).
        let amx_fusable = self.amx && dtype == DType::BF16 && k % 32 == 0; // 32 = amx::KSTEP
        if ws.len() > 1 && !amx_fusable {
            for (w, out) in ws.iter().zip(outs.iter_mut()) {
                self.matmul_fused(x, n, &[w], &mut [&mut **out]);
            }
            return;
        }
        assert!(x.len() >= n * k, "matmul: activations too small");
        for (w, out) in ws.iter().zip(outs.iter()) {
            assert!(out.len() >= n * w.rows, "matmul: output too small");
        }
        if n == 0 {
            return;
        }
        let es = dtype.size();
        #[cfg(target_arch = "x86_64")]
        let x_bf16: Option<CacheLines> = (self.bf16_dot && dtype == DType::BF16).then(|| {
            let mut v = CacheLines::zeroed(n * k);
            // Safety: bf16_dot is only set where the CPU has AVX512_BF16.
            unsafe { avx512_bf16::to_bf16(&x[..n * k], v.as_mut_slice()) };
            v
        });
        #[cfg(target_arch = "x86_64")]
        let packed: Option<amx::Packed> = match &x_bf16 {
            Some(xb) if self.amx && k % amx::KSTEP == 0 && ws.iter().any(|w| w.rows >= amx::TILE) => Some(amx::Packed::new(xb.as_slice(), n, k)),
            _ => None,
        };
        #[cfg(not(target_arch = "x86_64"))]
        let packed: Option<()> = None;
        // AMX tasks hold whole pairs of 16-row tiles; the vdpbf16ps tiles go 4 rows at a time.
        // The split depends on m, k and the pool size only, never on n (batch invariance).
        let panelled = ws.iter().any(|w| w.is_panelled());
        // Panelled matrices are made only for the vdpbf16ps kernels (`Llama::from_weights`).
        #[cfg(target_arch = "x86_64")]
        assert!(!panelled || (x_bf16.is_some() && packed.is_none()), "matmul: a panelled matrix needs the vdpbf16ps kernels");
        #[cfg(not(target_arch = "x86_64"))]
        assert!(!panelled, "matmul: a panelled matrix needs the vdpbf16ps kernels");
        // Panelled matrices split at their blocks (each task one or more whole blocks).
        let align = if packed.is_some() { 2 * 16 } else if panelled { panels::BLOCK_ROWS } else { 4 };
        let threads = rayon::current_num_threads().max(1);
        let mut tasks: Vec<(usize, usize, usize)> = Vec::new();
        for (i, w) in ws.iter().enumerate() {
            let m = w.rows;
            let by_cache = (TASK_WEIGHT_BYTES / (k * es)).max(align) / align * align;
            let by_threads = m.div_ceil(threads * 4).next_multiple_of(align);
            let rows_per_task = by_cache.min(by_threads).max(align);
            tasks.extend((0..m.div_ceil(rows_per_task)).map(|t| (i, t * rows_per_task, ((t + 1) * rows_per_task).min(m))));
        }
        let out_ptrs: Vec<SharedOut> = outs.iter_mut().map(|o| SharedOut(o.as_mut_ptr())).collect();
        let run = |&(i, r0, r1): &(usize, usize, usize)| {
            let (w, out_ptr, m) = (ws[i], out_ptrs[i], ws[i].rows);
            let wb = &w.bytes()[r0 * k * es..r1 * k * es];
            #[cfg(target_arch = "x86_64")]
            if let Some(xb) = &x_bf16 {
                // The last task's rows past a multiple of 16 (fixed by m, not by n) use vdpbf16ps.
                let tiled = if packed.is_some() { (r1 - r0) / 16 * 16 } else { 0 };
                if let Some(p) = &packed {
                    // Safety: AMX is available (self.amx), wb holds `tiled` bf16 rows of k, and
                    // tasks write disjoint columns.
                    unsafe { amx::gemm_rows(p, wb.as_ptr() as *const u16, tiled, out_ptr.at(r0), m) };
                }
                if tiled < r1 - r0 {
                    let rest = &wb[tiled * k * es..];
                    // The kernel may prefetch (never read) rows past the task's, up to the matrix's end.
                    let readable = m - r0 - tiled;
                    // Safety: as below; the CPU has AVX512_BF16 (bf16_dot) and wb holds bf16 rows.
                    unsafe { avx512_bf16::gemm_rows(xb.as_slice().as_ptr(), n, k, rest.as_ptr() as *const u16, r1 - r0 - tiled, readable, w.is_panelled(), out_ptr.at(r0 + tiled), m) };
                }
                return;
            }
            // Safety: tasks write disjoint columns r0..r1 of their matrix's n x m output.
            unsafe { self.gemm_rows(x, n, k, wb, dtype, r1 - r0, out_ptr.at(r0), m) };
        };
        let total_rows: usize = ws.iter().map(|w| w.rows).sum();
        if tasks.len() == 1 {
            run(&tasks[0]);
        } else if n * total_rows * k < SERIAL_MACS && total_rows * k * es <= TASK_WEIGHT_BYTES {
            // Only for weights that fit in cache: a larger matrix at batch 1 is bandwidth-bound and
            // reads faster with every core streaming part of it.
            tasks.iter().for_each(run);
        } else {
            tasks.par_iter().for_each(run);
        }
    }

    /// Safety: out[t*ldo + r] must be writable for t < n, r < nrows; w holds nrows*k elements.
    unsafe fn gemm_rows(&self, x: &[f32], n: usize, k: usize, w: &[u8], dtype: DType, nrows: usize, out: *mut f32, ldo: usize) {
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => avx512::gemm_rows(x.as_ptr(), n, k, w.as_ptr(), dtype, nrows, out, ldo),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::gemm_rows(x.as_ptr(), n, k, w.as_ptr(), dtype, nrows, out, ldo),
            _ => {
                let mut local = vec![0.0f32; n * nrows];
                scalar::gemm_rows(x, n, k, w, dtype, nrows, &mut local, nrows);
                for t in 0..n {
                    for r in 0..nrows {
                        *out.add(t * ldo + r) = local[t * nrows + r];
                    }
                }
            }
        }
    }

    pub fn dot(&self, a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { avx512::dot(a, b) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { avx2::dot(a, b) },
            _ => scalar::dot(a, b),
        }
    }

    /// out[j] = dot(q, row j) * scale, where row j = table[slots[j] * stride + offset..][..q.len()]
    /// (attention scores against the K rows of a sequence's slots).
    pub fn dot_rows(&self, q: &[f32], table: &[f32], slots: &[u32], stride: usize, offset: usize, scale: f32, out: &mut [f32]) {
        let d = q.len();
        assert!(out.len() >= slots.len());
        assert!(slots.iter().all(|&s| s as usize * stride + offset + d <= table.len()), "dot_rows: slot outside the table");
        match self.isa {
            // Safety: every row was bounds-checked above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { avx512::dot_rows(q, table, slots, stride, offset, scale, out) },
            _ => {
                for (o, &s) in out.iter_mut().zip(slots) {
                    let base = s as usize * stride + offset;
                    *o = self.dot(q, &table[base..base + d]) * scale;
                }
            }
        }
    }

    /// acc += Σ_j p[j] * row j, rows addressed as in `dot_rows` (attention's weighted V sum).
    pub fn sum_rows(&self, p: &[f32], table: &[f32], slots: &[u32], stride: usize, offset: usize, acc: &mut [f32]) {
        let d = acc.len();
        assert!(p.len() >= slots.len());
        assert!(slots.iter().all(|&s| s as usize * stride + offset + d <= table.len()), "sum_rows: slot outside the table");
        match self.isa {
            // Safety: every row was bounds-checked above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { avx512::sum_rows(p, table, slots, stride, offset, acc) },
            _ => {
                for (&pj, &s) in p.iter().zip(slots) {
                    let base = s as usize * stride + offset;
                    self.axpy(pj, &table[base..base + d], acc);
                }
            }
        }
    }

    /// y += alpha * x (attention's weighted sum of V rows).
    pub fn axpy(&self, alpha: f32, x: &[f32], y: &mut [f32]) {
        assert_eq!(x.len(), y.len());
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { avx512::axpy(alpha, x, y) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { avx2::axpy(alpha, x, y) },
            _ => scalar::axpy(alpha, x, y),
        }
    }

    /// out = x / rms(x) * w, row by row (rows of w.len()), as HF LlamaRMSNorm in float32.
    pub fn rmsnorm(&self, x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
        let d = w.len();
        let rows = x.len() / d;
        let apply = |(xr, or): (&[f32], &mut [f32])| {
            let inv = 1.0 / (self.dot(xr, xr) / d as f32 + eps).sqrt();
            for ((o, &xv), &wv) in or.iter_mut().zip(xr).zip(w) {
                *o = wv * (xv * inv);
            }
        };
        if rows > 8 && x.len() >= SERIAL_NORM_ELEMS {
            // Tasks of NORM_TASK_ROWS rows: one task per row cost more in scheduling than the norm.
            let task = d * NORM_TASK_ROWS;
            x.par_chunks(task).zip(out.par_chunks_mut(task)).for_each(|(xs, os)| xs.chunks(d).zip(os.chunks_mut(d)).for_each(apply));
        } else {
            x.chunks(d).zip(out.chunks_mut(d)).for_each(apply);
        }
    }

    /// x += delta, then out = rmsnorm(x): the residual add fused with the next norm.
    pub fn add_rmsnorm(&self, x: &mut [f32], delta: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
        let d = w.len();
        let apply = |((xr, dr), or): ((&mut [f32], &[f32]), &mut [f32])| {
            for (a, &b) in xr.iter_mut().zip(dr) {
                *a += b;
            }
            let inv = 1.0 / (self.dot(xr, xr) / d as f32 + eps).sqrt();
            for ((o, &xv), &wv) in or.iter_mut().zip(xr.iter()).zip(w) {
                *o = wv * (xv * inv);
            }
        };
        if x.len() / d > 8 && x.len() >= SERIAL_NORM_ELEMS {
            let task = d * NORM_TASK_ROWS;
            x.par_chunks_mut(task)
                .zip(delta.par_chunks(task))
                .zip(out.par_chunks_mut(task))
                .for_each(|((xs, ds), os)| xs.chunks_mut(d).zip(ds.chunks(d)).zip(os.chunks_mut(d)).for_each(apply));
        } else {
            x.chunks_mut(d).zip(delta.chunks(d)).zip(out.chunks_mut(d)).for_each(apply);
        }
    }
}

/// gate = silu(gate) * up, elementwise (the SwiGLU activation).
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    const CHUNK: usize = 4096;
    #[cfg(target_arch = "x86_64")]
    let avx512 = {
        static AVX512: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVX512.get_or_init(|| Isa::detect() == Isa::Avx512)
    };
    let apply = |(g, u): (&mut [f32], &[f32])| {
        #[cfg(target_arch = "x86_64")]
        if avx512 {
            // SAFETY: AVX-512 was detected.
            unsafe { avx512::silu_mul(g, u) };
            return;
        }
        for (a, &b) in g.iter_mut().zip(u) {
            *a = *a / (1.0 + (-*a).exp()) * b;
        }
    };
    if gate.len() > 4 * CHUNK {
        gate.par_chunks_mut(CHUNK).zip(up.par_chunks(CHUNK)).for_each(apply);
    } else {
        apply((gate, up));
    }
}

/// x += delta.
pub fn add_in_place(x: &mut [f32], delta: &[f32]) {
    for (a, &b) in x.iter_mut().zip(delta) {
        *a += b;
    }
}
