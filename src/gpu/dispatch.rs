//! A recorded kernel launch: what the graph executor stores and replays.

use super::texels::TexelCopy;

/// Work done by one dispatch, for the profiler's GFLOP/s and GB/s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    pub flops: u64,
    /// Bytes read plus bytes written, counting each tensor once.
    pub bytes: u64,
}

/// A copy recorded before a dispatch's kernel (or instead of one).
#[derive(Clone, Debug)]
pub enum CopyOp {
    /// An operand read as texels.
    Texels(TexelCopy),
    /// Plain bytes between buffers (channel concatenation is nothing else).
    Buffer { src: wgpu::Buffer, src_offset: u64, dst: wgpu::Buffer, dst_offset: u64, size: u64 },
}

impl CopyOp {
    /// `size` bytes of `src` from `src_offset` to `dst` at `dst_offset`.
    pub fn buffer(
        src: &wgpu::Buffer,
        src_offset: u64,
        dst: &wgpu::Buffer,
        dst_offset: u64,
        size: u64,
    ) -> Self {
        CopyOp::Buffer { src: src.clone(), src_offset, dst: dst.clone(), dst_offset, size }
    }

    pub fn record(&self, enc: &mut wgpu::CommandEncoder) {
        match self {
            CopyOp::Texels(c) => c.record(enc),
            CopyOp::Buffer { src, src_offset, dst, dst_offset, size } => {
                enc.copy_buffer_to_buffer(src, *src_offset, dst, *dst_offset, *size)
            }
        }
    }
}

/// One launch, built once and recorded any number of times: copies, then a kernel (absent for an
/// op that is only copies).
#[derive(Clone, Debug)]
pub struct Dispatch {
    pub label: &'static str,
    pub kernel: Option<(wgpu::ComputePipeline, wgpu::BindGroup)>,
    pub workgroups: [u32; 3],
    pub cost: Cost,
    /// Recorded just before the kernel, outside any compute pass.
    pub copies: Vec<CopyOp>,
}

impl Dispatch {
    /// An op made only of copies.
    pub fn copies_only(label: &'static str, copies: Vec<CopyOp>, cost: Cost) -> Self {
        Self { label, kernel: None, workgroups: [0; 3], cost, copies }
    }

    /// Records the kernel; its copies must already be recorded (see `record_all`).
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        if let Some((pipeline, bind_group)) = &self.kernel {
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, bind_group, &[]);
            let [x, y, z] = self.workgroups;
            pass.dispatch_workgroups(x, y, z);
        }
    }

    pub fn record_copies(&self, enc: &mut wgpu::CommandEncoder) {
        for c in &self.copies {
            c.record(enc);
        }
    }
}

/// Records dispatches in order into `enc`: runs of dispatches share a compute pass, and a pass ends
/// where a dispatch has copies to record first (copies cannot be recorded inside a pass).
pub fn record_all<'a>(enc: &mut wgpu::CommandEncoder, dispatches: impl IntoIterator<Item = &'a Dispatch>) {
    let mut pass: Option<wgpu::ComputePass<'static>> = None;
    for d in dispatches {
        if !d.copies.is_empty() {
            drop(pass.take());
            d.record_copies(enc);
        }
        if d.kernel.is_some() {
            let p = pass.get_or_insert_with(|| enc.begin_compute_pass(&Default::default()).forget_lifetime());
            d.record(p);
        }
    }
}

/// Splits `groups` workgroups over x and y so no dimension exceeds `max_per_dim`.
/// Kernels rebuild the linear index as `wg.x + wg.y * num_workgroups.x` and bound-check it.
pub fn grid(groups: u32, max_per_dim: u32) -> [u32; 3] {
    if groups <= max_per_dim {
        [groups.max(1), 1, 1]
    } else {
        [max_per_dim, groups.div_ceil(max_per_dim), 1]
    }
}

#[cfg(test)]
mod tests {
    use super::grid;

    #[test]
    fn grid_covers_all_groups() {
        for (groups, max) in [(1, 65535), (65535, 65535), (65536, 65535), (1_000_000, 65535), (7, 3)] {
            let [x, y, z] = grid(groups, max);
            assert!(x <= max && y <= max && z == 1);
            assert!(x as u64 * y as u64 >= groups as u64);
            assert!((x as u64) * (y as u64 - 1) < groups as u64, "no empty row of groups");
        }
    }
}
