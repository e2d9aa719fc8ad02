//! Collectives between tensor-parallel ranks. One interface, two transports: `ThreadGroup` for
//! ranks that are threads of this process (CPU, shared memory), and NCCL for GPUs
//! (`backend::cuda::nccl`, loaded at run time through cudarc). `Solo` is the tp = 1 case.
//!
//! Every rank calls the same collectives in the same order with buffers of the same length
//! (all_gather: each rank's own length). Reductions add the ranks' values in rank order, so
//! every rank holds bit-identical results.

use std::sync::{Arc, Condvar, Mutex};

pub trait Communicator: Send + Sync {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// `buf[i] = Σ_ranks buf[i]` on every rank.
    fn all_reduce_sum(&self, buf: &mut [f32]);
    /// Every rank's `local` concatenated in rank order into `out` (whose length is the sum of
    /// the ranks' lengths) on every rank.
    fn all_gather(&self, local: &[f32], out: &mut [f32]);
    /// Called by a rank that failed mid-pass, so the others stop waiting for it (they fail too).
    fn abandon(&self) {}
    /// Re-arms the group after a failed pass, while no rank is inside a collective.
    fn mend(&self) {}
}

/// The only rank of a world of one.
pub struct Solo;

impl Communicator for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _buf: &mut [f32]) {}
    fn all_gather(&self, local: &[f32], out: &mut [f32]) {
        out.copy_from_slice(local);
    }
}

/// A rank's published buffer: where it is and how long.
#[derive(Clone, Copy)]
struct Published {
    ptr: *mut f32,
    len: usize,
}
// Safety: the pointers are only dereferenced between the barriers that bracket a collective,
// while every publishing rank is blocked in that collective and its buffer is alive.
unsafe impl Send for Published {}

struct Shared {
    barrier: Rendezvous,
    slots: Mutex<Vec<Published>>,
}

/// A barrier that a failing rank can break: the ranks waiting in it (and any that arrive later)
/// panic instead of waiting forever for a rank that has died. `mend` re-arms it once every rank
/// has left the collective.
struct Rendezvous {
    world: usize,
    state: Mutex<RendezvousState>,
    turn: Condvar,
}

#[derive(Default)]
struct RendezvousState {
    arrived: usize,
    generation: u64,
    broken: bool,
}

impl Rendezvous {
    fn wait(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.broken {
            drop(st);
            panic!("a tensor-parallel rank failed during this forward pass");
        }
        st.arrived += 1;
        if st.arrived == self.world {
            st.arrived = 0;
            st.generation += 1;
            self.turn.notify_all();
            return;
        }
        let generation = st.generation;
        while st.generation == generation && !st.broken {
            st = self.turn.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.generation == generation {
            drop(st);
            panic!("a tensor-parallel rank failed during this forward pass");
        }
    }

    fn break_all(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.broken = true;
        self.turn.notify_all();
    }

    fn mend(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *st = RendezvousState { generation: st.generation + 1, ..Default::default() };
    }
}

/// Ranks that are threads of one process; `ThreadGroup::new(n)` returns one handle per rank,
/// each to be used by exactly one thread.
pub struct ThreadGroup {
    rank: usize,
    world: usize,
    shared: Arc<Shared>,
}

impl ThreadGroup {
    pub fn new(world: usize) -> Vec<ThreadGroup> {
        assert!(world >= 1);
        let shared = Arc::new(Shared {
            barrier: Rendezvous { world, state: Mutex::new(RendezvousState::default()), turn: Condvar::new() },
            slots: Mutex::new(vec![Published { ptr: std::ptr::null_mut(), len: 0 }; world]),
        });
        (0..world).map(|rank| ThreadGroup { rank, world, shared: shared.clone() }).collect()
    }

    /// Publishes this rank's buffer, waits for all, returns everyone's.
    fn exchange(&self, ptr: *mut f32, len: usize) -> Vec<Published> {
        self.shared.slots.lock().unwrap_or_else(|e| e.into_inner())[self.rank] = Published { ptr, len };
        self.shared.barrier.wait();
        self.shared.slots.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Communicator for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    /// Reduce-scatter then all-gather in place: rank r sums chunk r across all buffers and
    /// writes the sum back into every buffer, so the work and memory traffic split evenly.
    fn all_reduce_sum(&self, buf: &mut [f32]) {
        if self.world == 1 {
            return;
        }
        let all = self.exchange(buf.as_mut_ptr(), buf.len());
        let len = buf.len();
        assert!(all.iter().all(|p| p.len == len), "all_reduce_sum: ranks passed different lengths");
        let chunk = super::plan::even_split(len, self.world, self.rank);
        let mut sum = vec![0.0f32; chunk.len()];
        for p in &all {
            // Safety: between the barriers every buffer is alive and only read here.
            let src = unsafe { std::slice::from_raw_parts(p.ptr.add(chunk.start), chunk.len()) };
            for (s, &v) in sum.iter_mut().zip(src) {
                *s += v;
            }
        }
        // Everyone has read its chunk of every buffer before anyone overwrites one.
        self.shared.barrier.wait();
        for p in &all {
            // Safety: ranks write disjoint chunks; nobody reads until the last barrier.
            let dst = unsafe { std::slice::from_raw_parts_mut(p.ptr.add(chunk.start), chunk.len()) };
            dst.copy_from_slice(&sum);
        }
        self.shared.barrier.wait();
    }

    fn abandon(&self) {
        self.shared.barrier.break_all();
    }

    fn mend(&self) {
        self.shared.barrier.mend();
    }

    fn all_gather(&self, local: &[f32], out: &mut [f32]) {
        if self.world == 1 {
            out.copy_from_slice(local);
            return;
        }
        let all = self.exchange(local.as_ptr() as *mut f32, local.len());
        let total: usize = all.iter().map(|p| p.len).sum();
        assert_eq!(out.len(), total, "all_gather: output length is not the sum of the ranks' lengths");
        let mut at = 0;
        for p in &all {
            // Safety: `local` buffers are alive and unchanged until the barrier below.
            let src = unsafe { std::slice::from_raw_parts(p.ptr, p.len) };
            out[at..at + p.len].copy_from_slice(src);
            at += p.len;
        }
        self.shared.barrier.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_ranks<T: Send>(world: usize, f: impl Fn(&ThreadGroup) -> T + Sync) -> Vec<T> {
        on_ranks_of(&ThreadGroup::new(world), f)
    }

    fn on_ranks_of<T: Send>(group: &[ThreadGroup], f: impl Fn(&ThreadGroup) -> T + Sync) -> Vec<T> {
        std::thread::scope(|s| {
            let handles: Vec<_> = group.iter().map(|g| s.spawn(|| f(g))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn all_reduce_sums_in_rank_order_on_every_rank() {
        for world in [1, 2, 3, 4] {
            for len in [0, 1, 5, 1000] {
                let results = on_ranks(world, |g| {
                    let mut v: Vec<f32> = (0..len).map(|i| (i * (g.rank() + 1)) as f32 + 0.25).collect();
                    for _ in 0..3 {
                        g.all_reduce_sum(&mut v);
                    }
                    v
                });
                let w = world as f32;
                for v in &results {
                    for (i, &x) in v.iter().enumerate() {
                        let once: f32 = (0..world).map(|r| (i * (r + 1)) as f32 + 0.25).sum();
                        assert_eq!(x, once * w * w, "world {world} len {len} i {i}");
                    }
                }
                assert!(results.windows(2).all(|p| p[0] == p[1]));
            }
        }
    }

    #[test]
    fn a_failed_rank_releases_the_others_and_the_group_can_be_mended() {
        let group = ThreadGroup::new(3);
        let outcomes: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = group
                .iter()
                .map(|g| {
                    s.spawn(move || {
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            if g.rank() == 2 {
                                g.abandon();
                                return;
                            }
                            g.all_reduce_sum(&mut [1.0]);
                        }))
                        .is_ok()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(outcomes, vec![false, false, true]);
        group[0].mend();
        let sums = on_ranks_of(&group, |g| {
            let mut v = [g.rank() as f32];
            g.all_reduce_sum(&mut v);
            v[0]
        });
        assert_eq!(sums, vec![3.0; 3]);
    }

    #[test]
    fn all_gather_concatenates_uneven_parts_in_rank_order() {
        let results = on_ranks(3, |g| {
            let local: Vec<f32> = (0..g.rank() + 1).map(|i| (g.rank() * 10 + i) as f32).collect();
            let mut out = vec![0.0; 6];
            g.all_gather(&local, &mut out);
            out
        });
        for out in results {
            assert_eq!(out, vec![0.0, 10.0, 11.0, 20.0, 21.0, 22.0]);
        }
    }
}
