//! One module per WGSL kernel family: the launcher (shapes in, `Dispatch` out) beside a plain-Rust
//! reference of what the kernel computes. References accumulate in f64 and are used by tests and
//! `--check` runs only.

pub mod attention;
pub mod conv2d;
pub mod conv2d_backward;
pub mod data;
pub mod diffusion;
pub mod elementwise;
pub mod embedding;
pub mod group_norm;
pub mod layer_norm;
pub mod loss;
pub mod matmul;
pub mod optim;
pub mod rng;
pub mod softmax;
pub mod vq;

/// Workgroups needed for `n` items at `per_group` items each.
pub(crate) fn groups(n: usize, per_group: usize) -> u32 {
    n.div_ceil(per_group).max(1) as u32
}

/// Checks that `buf` holds at least `len` f32 values, naming the op and the operand otherwise.
pub(crate) fn check_len(op: &str, what: &str, buf: &wgpu::Buffer, len: usize) -> crate::Result<()> {
    if buf.size() < (len * 4) as u64 {
        crate::bail_shape!("{op}: {what} holds {} values, needs {len}", buf.size() / 4);
    }
    Ok(())
}

/// Splits a 1-D launch of `n` items, `per_group` per workgroup, over x and y within the device limit.
pub(crate) fn grid_1d(ctx: &crate::gpu::Context, n: usize, per_group: usize) -> [u32; 3] {
    crate::gpu::grid(groups(n, per_group), ctx.limits.max_compute_workgroups_per_dimension)
}

/// Invocations that keep a large GPU busy: fewer, and conv2d and matmul split their reduction.
const GPU_BUSY_INVOCATIONS: usize = 32 * 1024;
const MAX_SPLITS: usize = 64;

/// Split-K's split count for a launch of `invocations` whose reduction loop has `steps` steps, each
/// split keeping at least `min_steps`: enough splits to reach GPU_BUSY_INVOCATIONS.
pub(crate) fn split_count(invocations: usize, steps: usize, min_steps: usize) -> usize {
    let max_splits = (steps / min_steps.max(1)).clamp(1, MAX_SPLITS);
    (GPU_BUSY_INVOCATIONS / invocations.max(1)).clamp(1, max_splits)
}

/// The shared scratch buffer for `floats` partial sums of a split-K launch (see
/// `Context::shared_scratch`), refused where one binding cannot hold them.
pub(crate) fn split_scratch(
    ctx: &crate::gpu::Context,
    op: &str,
    floats: usize,
) -> crate::Result<wgpu::Buffer> {
    if 4 * floats as u64 > ctx.max_binding_bytes() {
        crate::bail_shape!(
            "{op}: split-K partial sums ({floats} values) exceed the device's storage binding size"
        );
    }
    Ok(ctx.shared_scratch("split-K partial sums", floats))
}

/// Which kernel of a family with a subgroup variant (conv2d, matmul) to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The subgroup kernel where the adapter and the shape allow it, else the portable one.
    Auto,
    /// The portable kernel: any adapter.
    Portable,
    /// The subgroup kernel: needs SUBGROUP with subgroups of at least 8 lanes.
    Subgroup,
}

/// How a conv2d or matmul runs: one launcher per family takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launch {
    /// What the graph runs: the adapter's kernel, split-K where a GPU would be left idle (see
    /// `conv2d::auto_splits`, `matmul::auto_splits`).
    Auto,
    /// One dispatch of this kernel variant, never split (tests run each; attention's products).
    One(Variant),
    /// Split-K into this many splits, then a reduce pass (GPUs pick it; tests force it anywhere).
    Split(usize),
}

/// Whether this adapter can run the subgroup kernels (they share loads across 8 lanes).
pub fn has_subgroup_kernels(ctx: &crate::gpu::Context) -> bool {
    ctx.has(wgpu::Features::SUBGROUP) && ctx.info.subgroup_min_size >= 8
}

/// Resolves `variant` for a kernel family: `wide_enough` says whether the shape fills the subgroup
/// kernel's 8 blocks (else Auto picks the portable kernel).
pub(crate) fn use_subgroups(
    ctx: &crate::gpu::Context,
    variant: Variant,
    wide_enough: bool,
    op: &str,
) -> crate::Result<bool> {
    match variant {
        Variant::Auto => Ok(has_subgroup_kernels(ctx) && wide_enough),
        Variant::Portable => Ok(false),
        Variant::Subgroup if has_subgroup_kernels(ctx) => Ok(true),
        Variant::Subgroup => {
            crate::bail_shape!("{op}: the subgroup kernel needs subgroups of at least 8 lanes")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_count;

    #[test]
    fn split_count_fills_a_gpu_within_the_loop() {
        // A 4x4 map at 256 channels: 32 invocations, 2304 steps, at least 64 steps a split.
        assert_eq!(split_count(32, 256 * 9, 64), 36);
        // Enough invocations already: no split.
        assert_eq!(split_count(40_000, 256 * 9, 64), 1);
        // Too few steps to split.
        assert_eq!(split_count(1, 16, 32), 1);
        // Capped.
        assert_eq!(split_count(1, 1 << 20, 32), 64);
        // Between: 32K / 4096 invocations.
        assert_eq!(split_count(4096, 1 << 20, 32), 8);
    }
}
