//! bf16 GEMM on AMX tiles (`TDPBF16PS`, Sapphire Rapids and later): one instruction multiplies a
//! 16 x 32 bf16 tile of weight rows by a 32 x 16 tile of activations into 16 x 16 f32, 16 times the
//! work of a `vdpbf16ps`. Weights are tile A, loaded straight from their row-major storage (mmap or
//! dummy buffer, stride = one row); activations are tile B, which AMX wants as bf16 pairs
//! ("VNNI" layout: row p holds the pair k = 2p, 2p+1 of each of 16 tokens), so they are packed once
//! per matmul (`Packed`). The product tile is weight rows x tokens and is written out transposed.
//!
//! Every token goes through the same tile arithmetic whatever the batch (a token's column never
//! mixes with another's, the k order is fixed), so a row's result does not depend on the batch;
//! on CPUs with AMX this kernel therefore serves every n, batch-1 decode included.
//!
//! Instructions are written with `asm!`: the AMX intrinsics and `is_x86_feature_detected!("amx-*")`
//! are not stable Rust, so support is read from CPUID and Linux is asked for the tile state
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`) before the first tile instruction.

use std::arch::asm;
use std::sync::OnceLock;

/// Tokens per B tile and weight rows per A tile (the tile height).
pub const TILE: usize = 16;
/// bf16 elements of k per tile step (64 bytes, one tile row).
pub const KSTEP: usize = 32;

/// Whether AMX bf16 tiles can be used in this process: CPUID says AMX-TILE and AMX-BF16, the
/// kernel grants the tile state, and `LLM_CPU_AMX=0` was not set (it keeps the AVX512_BF16 path,
/// for comparing the two on one machine). Checked once.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| usable(AMX_BF16))
}

/// Whether AMX int8 tiles (`TDPBSUD` and kin) can be used: as `available`, with AMX-INT8 for AMX-BF16.
pub fn int8_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| usable(AMX_INT8))
}

/// CPUID.(7,0):EDX bits of the AMX features.
const AMX_BF16: u32 = 22;
const AMX_TILE: u32 = 24;
const AMX_INT8: u32 = 25;

/// AMX-TILE and the feature at EDX bit `feature` in CPUID, the tile state granted, `LLM_CPU_AMX` not 0.
fn usable(feature: u32) -> bool {
    if std::env::var("LLM_CPU_AMX").is_ok_and(|v| v == "0") {
        return false;
    }
    // CPUID leaf 7 exists on every x86_64 CPU that Rust targets.
    let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
    let has = |bit: u32| edx >> bit & 1 == 1;
    has(AMX_TILE) && has(feature) && request_tile_permission()
}

#[cfg(target_os = "linux")]
fn request_tile_permission() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // Safety: a plain syscall with integer arguments; it fails cleanly on kernels without AMX.
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn request_tile_permission() -> bool {
    false
}

/// Activations as AMX B tiles: for token block `tb` (16 tokens, zero-padded) and k step `ks`,
/// a 16 x 16 block of u32 words where word [p][t] = the bf16 pair (k = 32 ks + 2p, +1) of token t.
pub struct Packed {
    words: Vec<u32>,
    pub n: usize,
    pub k: usize,
}

impl Packed {
    /// Packs n x k bf16 activations (row-major); k must be a multiple of `KSTEP`.
    pub fn new(x: &[u16], n: usize, k: usize) -> Packed {
        assert!(k % KSTEP == 0 && x.len() >= n * k, "amx pack: k must be a multiple of {KSTEP}");
        let (blocks, ksteps, half) = (n.div_ceil(TILE), k / KSTEP, k / 2);
        let mut words = vec![0u32; blocks * ksteps * TILE * TILE];
        for t in 0..n {
            let (tb, tt) = (t / TILE, t % TILE);
            let row = &x[t * k..(t + 1) * k];
            for kp in 0..half {
                let word = row[2 * kp] as u32 | (row[2 * kp + 1] as u32) << 16;
                let (ks, p) = (kp / TILE, kp % TILE);
                words[((tb * ksteps + ks) * TILE + p) * TILE + tt] = word;
            }
        }
        Packed { words, n, k }
    }

    fn tile(&self, tb: usize, ks: usize) -> *const u32 {
        let ksteps = self.k / KSTEP;
        self.words[(tb * ksteps + ks) * TILE * TILE..].as_ptr()
    }
}

/// ldtilecfg's 64-byte operand (palette 1): each tile's bytes per row (`colsb`) and rows.
#[repr(C, align(64))]
pub struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

impl TileConfig {
    /// Tiles 0..8 with these rows and bytes per row (the rest unused).
    pub const fn new(rows: [u8; 8], colsb: [u16; 8]) -> TileConfig {
        let mut c = TileConfig { palette: 1, start_row: 0, reserved: [0; 14], colsb: [0; 16], rows: [0; 16] };
        let mut i = 0;
        while i < 8 {
            c.rows[i] = rows[i];
            c.colsb[i] = colsb[i];
            i += 1;
        }
        c
    }

    /// Loads this configuration on the calling thread (pair with `release`).
    ///
    /// # Safety
    /// The tile state was granted (`available()` or `int8_available()` is true).
    pub unsafe fn load(&self) {
        asm!("ldtilecfg [{}]", in(reg) self as *const TileConfig, options(nostack, readonly));
    }
}

/// Frees the calling thread's tile state.
///
/// # Safety
/// As `TileConfig::load`.
pub unsafe fn release() {
    asm!("tilerelease", options(nostack, nomem));
}

/// Tiles 0-3 are 16 x 16 f32 accumulators, 4-5 weight tiles (16 rows x 32 bf16), 6-7 activation
/// tiles (16 pairs x 16 tokens); all 16 rows of 64 bytes.
const CONFIG: TileConfig = TileConfig::new([16; 8], [64; 8]);

/// out[t*ldo + r] = dot(x[t], w[r]) for t < n and r < nrows, nrows a multiple of 16, w row-major
/// with k bf16 per row. Weight rows go 32 at a time (two A tiles) against 32 tokens (two B tiles),
/// so each weight tile loaded feeds two products, and each activation tile two.
/// Safety: `available()` is true; w holds nrows * k bf16; out covers those elements.
pub unsafe fn gemm_rows(x: &Packed, w: *const u16, nrows: usize, out: *mut f32, ldo: usize) {
    debug_assert!(nrows % TILE == 0);
    let k = x.k;
    let blocks = x.n.div_ceil(TILE);
    let mut acc = [[0.0f32; TILE * TILE]; 4];
    CONFIG.load();
    let mut tb = 0;
    while tb < blocks {
        let two_t = tb + 1 < blocks;
        let mut r = 0;
        while r < nrows {
            let two_r = r + TILE < nrows;
            let a = w.add(r * k);
            match (two_r, two_t) {
                (true, true) => block::<true, true>(x, tb, a, k, &mut acc),
                (true, false) => block::<true, false>(x, tb, a, k, &mut acc),
                (false, true) => block::<false, true>(x, tb, a, k, &mut acc),
                (false, false) => block::<false, false>(x, tb, a, k, &mut acc),
            }
            for (i, tile) in acc.iter().enumerate() {
                let (ri, ti) = (i / 2, i % 2);
                if (ri == 1 && !two_r) || (ti == 1 && !two_t) {
                    continue;
                }
                let (r0, t0) = (r + ri * TILE, (tb + ti) * TILE);
                for t in 0..TILE.min(x.n - t0) {
                    let o = out.add((t0 + t) * ldo + r0);
                    for rr in 0..TILE {
                        *o.add(rr) = tile[rr * TILE + t];
                    }
                }
            }
            r += if two_r { 2 * TILE } else { TILE };
        }
        tb += if two_t { 2 } else { 1 };
    }
    release();
}

/// One (1|2) x (1|2) block of 16 x 16 products over the whole k: rows a.., tokens of block tb...
/// Accumulators start at zero and are stored into `acc` ([row tile * 2 + token tile]).
#[inline(always)]
unsafe fn block<const TWO_R: bool, const TWO_T: bool>(x: &Packed, tb: usize, a: *const u16, k: usize, acc: &mut [[f32; TILE * TILE]; 4]) {
    let lda = k * 2;
    let a1 = a.add(TILE * k);
    asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
    for ks in 0..k / KSTEP {
        let b0 = x.tile(tb, ks);
        let a0 = a.add(ks * KSTEP);
        asm!(
            "tileloadd tmm4, [{a0} + {lda} * 1]",
            "tileloadd tmm6, [{b0} + {ldb} * 1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            a0 = in(reg) a0, b0 = in(reg) b0, lda = in(reg) lda, ldb = in(reg) 64usize,
            options(nostack, readonly),
        );
        if TWO_T {
            let b1 = x.tile(tb + 1, ks);
            asm!(
                "tileloadd tmm7, [{b1} + {ldb} * 1]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                b1 = in(reg) b1, ldb = in(reg) 64usize,
                options(nostack, readonly),
            );
        }
        if TWO_R {
            asm!(
                "tileloadd tmm5, [{a1} + {lda} * 1]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                a1 = in(reg) a1.add(ks * KSTEP), lda = in(reg) lda,
                options(nostack, readonly),
            );
            if TWO_T {
                asm!("tdpbf16ps tmm3, tmm5, tmm7", options(nostack, nomem));
            }
        }
    }
    let s = 64usize;
    asm!("tilestored [{p} + {s} * 1], tmm0", p = in(reg) acc[0].as_mut_ptr(), s = in(reg) s, options(nostack));
    if TWO_T {
        asm!("tilestored [{p} + {s} * 1], tmm1", p = in(reg) acc[1].as_mut_ptr(), s = in(reg) s, options(nostack));
    }
    if TWO_R {
        asm!("tilestored [{p} + {s} * 1], tmm2", p = in(reg) acc[2].as_mut_ptr(), s = in(reg) s, options(nostack));
        if TWO_T {
            asm!("tilestored [{p} + {s} * 1], tmm3", p = in(reg) acc[3].as_mut_ptr(), s = in(reg) s, options(nostack));
        }
    }
}
