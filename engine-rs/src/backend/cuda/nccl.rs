//! NCCL (through cudarc, loaded at run time like the rest of CUDA) behind the same
//! `parallel::comm::Communicator` interface the CPU thread ranks use. `NcclRank::group(n)` opens
//! one communicator per GPU 0..n in this process (ncclCommInitAll); each rank's thread then calls
//! the collectives on its own handle. Host buffers are staged through the rank's GPU, so the CPU
//! rank code can run its all-reduces over NVLink/PCIe as they are; a GPU model calls
//! `all_reduce_device` on buffers that already live on the device.
//!
//! Status: compiled in every `cuda` build and checked on a multi-GPU host by scripts/gpu_tp_check.sh;
//! the CUDA model does not yet split itself over ranks (docs/scale-out.md).

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaSlice, CudaStream};
use cudarc::nccl::safe::{Comm, ReduceOp};

use super::device::guarded;
use crate::parallel::comm::Communicator;

pub struct NcclRank {
    comm: Comm,
    stream: Arc<CudaStream>,
}

// Safety: a rank's communicator is used by one thread at a time (the rank's own), as NCCL requires
// of a communicator; the handle only moves to that thread.
unsafe impl Send for NcclRank {}
unsafe impl Sync for NcclRank {}

impl NcclRank {
    /// One communicator per GPU 0..world, all in this process.
    pub fn group(world: usize) -> Result<Vec<NcclRank>, String> {
        guarded(|| {
            let mut streams = Vec::with_capacity(world);
            for ordinal in 0..world {
                let ctx = CudaContext::new(ordinal).map_err(|e| format!("cannot create a CUDA context on GPU {ordinal}: {e:?}"))?;
                streams.push(ctx.new_stream().map_err(|e| format!("cannot create a CUDA stream on GPU {ordinal}: {e:?}"))?);
            }
            let comms = Comm::from_devices(streams.clone()).map_err(|e| format!("ncclCommInitAll over {world} GPUs failed: {e:?}"))?;
            Ok(comms.into_iter().zip(streams).map(|(comm, stream)| NcclRank { comm, stream }).collect())
        })
        .and_then(|r| r)
    }

    /// Sums `buf` over the ranks in place on the device.
    pub fn all_reduce_device(&self, buf: &mut CudaSlice<f32>) -> Result<(), String> {
        self.comm.all_reduce_in_place(buf, &ReduceOp::Sum).map_err(|e| format!("ncclAllReduce failed: {e:?}"))?;
        Ok(())
    }

    fn bind(&self) {
        self.stream.context().bind_to_thread().unwrap_or_else(|e| panic!("cannot bind GPU {}: {e:?}", self.comm.rank()));
    }

    fn to_device(&self, host: &[f32]) -> CudaSlice<f32> {
        self.stream.clone_htod(host).unwrap_or_else(|e| panic!("host to device copy failed: {e:?}"))
    }

    fn to_host(&self, dev: &CudaSlice<f32>, host: &mut [f32]) {
        self.stream.memcpy_dtoh(dev, host).unwrap_or_else(|e| panic!("device to host copy failed: {e:?}"));
        self.stream.synchronize().unwrap_or_else(|e| panic!("stream synchronize failed: {e:?}"));
    }
}

impl Communicator for NcclRank {
    fn rank(&self) -> usize {
        self.comm.rank()
    }

    fn world_size(&self) -> usize {
        self.comm.world_size()
    }

    /// Panics on a CUDA or NCCL failure, as a failed CPU collective would: the TP model turns a
    /// rank's panic into the failure of that forward pass.
    fn all_reduce_sum(&self, buf: &mut [f32]) {
        if buf.is_empty() {
            return;
        }
        self.bind();
        let mut dev = self.to_device(buf);
        self.all_reduce_device(&mut dev).unwrap_or_else(|e| panic!("{e}"));
        self.to_host(&dev, buf);
    }

    /// NCCL gathers equal parts: the ranks first learn each other's lengths (an all-reduce of a
    /// one-hot vector), pad to the longest, gather, then drop the padding.
    fn all_gather(&self, local: &[f32], out: &mut [f32]) {
        self.bind();
        let world = self.world_size();
        let mut lens = vec![0.0f32; world];
        lens[self.rank()] = local.len() as f32;
        self.all_reduce_sum(&mut lens);
        let lens: Vec<usize> = lens.iter().map(|&l| l as usize).collect();
        let longest = lens.iter().copied().max().unwrap_or(0);
        assert_eq!(out.len(), lens.iter().sum::<usize>(), "all_gather: output length is not the sum of the ranks' lengths");
        if longest == 0 {
            return;
        }
        let mut padded = local.to_vec();
        padded.resize(longest, 0.0);
        let send = self.to_device(&padded);
        let mut recv = self
            .stream
            .alloc_zeros::<f32>(longest * world)
            .unwrap_or_else(|e| panic!("device allocation failed: {e:?}"));
        self.comm.all_gather(&send, &mut recv).unwrap_or_else(|e| panic!("ncclAllGather failed: {e:?}"));
        let mut all = vec![0.0f32; longest * world];
        self.to_host(&recv, &mut all);
        let mut at = 0;
        for (r, &len) in lens.iter().enumerate() {
            out[at..at + len].copy_from_slice(&all[r * longest..r * longest + len]);
            at += len;
        }
    }
}
