//! group norm (shaders/group_norm.wgsl), optionally fused with SiLU, and its CPU reference.

use crate::gpu::{Binding, Context, Cost, Dispatch, KernelSpec};
use crate::kernels::{check_len, grid_1d};
use crate::{bail_shape, Result};

static SPEC: KernelSpec = KernelSpec {
    shader: &crate::shaders::GROUP_NORM,
    entry: "group_norm",
    // x is read as texels (see `gpu::texels`).
    bindings: &[Binding::Texels, Binding::Read, Binding::Read, Binding::Write, Binding::Uniform],
};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupNormShape {
    pub n: usize,
    pub c: usize,
    /// H * W
    pub hw: usize,
    pub groups: usize,
    pub eps: f32,
    pub silu: bool,
}

impl GroupNormShape {
    pub fn check(&self) -> Result<()> {
        if self.groups == 0 || !self.c.is_multiple_of(self.groups) {
            bail_shape!("group norm: {} groups do not divide {} channels", self.groups, self.c);
        }
        if self.n == 0 || self.hw == 0 {
            bail_shape!("group norm: empty shape {self:?}");
        }
        Ok(())
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    groups_total: u32,
    channels: u32,
    hw: u32,
    groups: u32,
    eps: f32,
    _pad: [u32; 3],
}

/// y = GroupNorm(x) * gamma + beta (then SiLU), x and y [N, C, H, W], gamma and beta [C].
pub fn group_norm(
    ctx: &Context,
    s: &GroupNormShape,
    x: &wgpu::Buffer,
    gamma: &wgpu::Buffer,
    beta: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Dispatch> {
    let lanes = default_lanes(ctx, s);
    // Workgroup size: one group's lanes on GPUs. On CPU drivers 32 invocations (32 groups with one
    // lane each): lavapipe runs a workgroup on one thread, so fewer, larger workgroups leave its
    // threads idle. Measured on ref-group-norm-b8 (256 groups), two rounds, median ms:
    // 16 -> 2.0/1.5, 32 -> 1.9/1.5, 64 -> 2.0/1.1, 128 -> 1.7/1.1, 256 -> 2.6/2.0; on cifar's
    // 1x128x32x32 32 is 2.5x faster than 256, and on the bundled model's 16x32x28x28 1.2-2x.
    let workgroup = if ctx.is_cpu() { lanes.max(32) } else { lanes };
    group_norm_lanes(ctx, lanes, workgroup, s, x, gamma, beta, y)
}

/// Refuses a launch of `lanes` per group in workgroups of `workgroup` that the kernels cannot run:
/// lanes not a power of two up to WG, fewer than `min` on a CPU driver (its loop cap), a workgroup
/// not a multiple of the lanes or over the device's limit.
fn check_launch(
    ctx: &Context,
    op: &str,
    s: &GroupNormShape,
    lanes: usize,
    workgroup: usize,
    min: usize,
) -> Result<()> {
    s.check()?;
    if !lanes.is_power_of_two() || lanes > WG {
        bail_shape!("{op}: {lanes} lanes per group; use a power of two up to {WG}");
    }
    if lanes < min && ctx.is_cpu() {
        bail_shape!(
            "{op}: groups of {} values are too long for {lanes} lane(s) each on a CPU driver; use at least {min}",
            s.c / s.groups * s.hw
        );
    }
    if !workgroup.is_multiple_of(lanes) || workgroup as u32 > ctx.limits.max_compute_invocations_per_workgroup
    {
        bail_shape!("{op}: a workgroup of {workgroup} for {lanes} lanes per group");
    }
    Ok(())
}

/// The most invocations per group (shaders/group_norm.wgsl).
const WG: usize = 64;

/// Loop iterations one invocation may run. lavapipe (gallivm) stops a shader's loops after 65535
/// iterations in all and carries on with wrong results, without an error; we stay well below.
const MAX_LANE_ITERATIONS: usize = 40_000;

/// The fewest lanes per group that keep each invocation's two passes under that cap.
pub fn min_lanes(s: &GroupNormShape) -> usize {
    let texels = (s.c / s.groups.max(1) * s.hw).div_ceil(4);
    (2 * texels + 5 * s.c).div_ceil(MAX_LANE_ITERATIONS).next_power_of_two()
}

/// Lanes per group: the whole workgroup on GPUs; on CPU drivers as few as the iteration cap allows
/// (barriers are costly there, and the vector units already run 8 groups side by side).
pub fn default_lanes(ctx: &Context, s: &GroupNormShape) -> usize {
    if ctx.is_cpu() {
        min_lanes(s).min(WG)
    } else {
        WG
    }
}

/// `group_norm` with `lanes` invocations per group (a power of two up to 64) and `workgroup`
/// invocations per workgroup (a multiple of `lanes`, within the device's limit); tests run several.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_lanes(
    ctx: &Context,
    lanes: usize,
    workgroup: usize,
    s: &GroupNormShape,
    x: &wgpu::Buffer,
    gamma: &wgpu::Buffer,
    beta: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Dispatch> {
    check_launch(ctx, "group norm", s, lanes, workgroup, min_lanes(s))?;
    let len = s.n * s.c * s.hw;
    check_len("group norm", "input", x, len)?;
    check_len("group norm", "output", y, len)?;
    check_len("group norm", "weight", gamma, s.c)?;
    check_len("group norm", "bias", beta, s.c)?;
    let wg = workgroup;
    let params = ctx.uniform(&Params {
        groups_total: (s.n * s.groups) as u32,
        channels: s.c as u32,
        hw: s.hw as u32,
        groups: s.groups as u32,
        eps: s.eps,
        _pad: [0; 3],
    });
    ctx.dispatch_texels(
        &SPEC,
        // WG must reach the shader: the grid below is sized for `wg` invocations per workgroup,
        // and a kernel left at its default size would leave the groups past it unwritten.
        &[
            ("SILU", s.silu as u8 as f64),
            ("VEC4", s.hw.is_multiple_of(4) as u8 as f64),
            ("L", lanes as f64),
            ("WG", wg as f64),
        ],
        &[x, gamma, beta, y, &params],
        &[len],
        grid_1d(ctx, s.n * s.groups, wg / lanes),
        Cost { flops: 8 * len as u64, bytes: 4 * (3 * len + 2 * s.c) as u64 },
    )
}

static SPEC_BACKWARD: KernelSpec = KernelSpec {
    shader: &crate::shaders::GROUP_NORM_BACKWARD,
    entry: "group_norm_backward",
    // x and dy are read as texels.
    bindings: &[
        Binding::Texels,
        Binding::Texels,
        Binding::Read,
        Binding::Read,
        Binding::Write,
        Binding::Write,
        Binding::Uniform,
    ],
};

static SPEC_PARAM_GRADS: KernelSpec = KernelSpec {
    shader: &crate::shaders::GROUP_NORM_PARAM_GRADS,
    entry: "group_norm_param_grads",
    bindings: &[Binding::Read, Binding::Write, Binding::Write, Binding::Uniform],
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ParamGradsParams {
    n: u32,
    channels: u32,
    _pad: [u32; 2],
}

/// The buffers of a group norm's backward.
pub struct GroupNormGrads<'a> {
    /// The forward's input [N, C, H, W] and affine parameters [C].
    pub x: &'a wgpu::Buffer,
    pub gamma: &'a wgpu::Buffer,
    pub beta: &'a wgpu::Buffer,
    /// d loss / d output (after the fused SiLU where the forward had one).
    pub dy: &'a wgpu::Buffer,
    /// Written: d loss / d x, and d loss / d gamma and d beta [C].
    pub dx: &'a wgpu::Buffer,
    pub dgamma: &'a wgpu::Buffer,
    pub dbeta: &'a wgpu::Buffer,
}

/// The fewest lanes per group that keep the backward's three passes under lavapipe's loop cap.
pub fn min_lanes_backward(s: &GroupNormShape) -> usize {
    let cg = s.c / s.groups.max(1);
    (3 * cg * s.hw + 6 * cg).div_ceil(MAX_LANE_ITERATIONS).next_power_of_two()
}

/// The backward of `group_norm` (fused SiLU included): dx, and d gamma, d beta reduced over the
/// batch on the device in a fixed order. Lanes and workgroup as the forward picks them.
pub fn group_norm_backward(ctx: &Context, s: &GroupNormShape, g: &GroupNormGrads) -> Result<Vec<Dispatch>> {
    let lanes = if ctx.is_cpu() { min_lanes_backward(s).min(WG) } else { WG };
    let workgroup = if ctx.is_cpu() { lanes.max(32) } else { lanes };
    group_norm_backward_lanes(ctx, lanes, workgroup, s, g)
}

/// `group_norm_backward` with `lanes` per group and `workgroup` invocations a workgroup (tests run
/// several).
pub fn group_norm_backward_lanes(
    ctx: &Context,
    lanes: usize,
    workgroup: usize,
    s: &GroupNormShape,
    g: &GroupNormGrads,
) -> Result<Vec<Dispatch>> {
    check_launch(ctx, "group norm backward", s, lanes, workgroup, min_lanes_backward(s))?;
    let wg = workgroup;
    let len = s.n * s.c * s.hw;
    for (what, buf, n) in [("input", g.x, len), ("dy", g.dy, len), ("dx", g.dx, len)] {
        check_len("group norm backward", what, buf, n)?;
    }
    for (what, buf) in [("weight", g.gamma), ("bias", g.beta), ("d weight", g.dgamma), ("d bias", g.dbeta)] {
        check_len("group norm backward", what, buf, s.c)?;
    }
    // The [N, C, 2] partial sums.
    let partials = ctx.scratch_buffer("group norm partial sums", 2 * s.n * s.c);
    let params = ctx.uniform(&Params {
        groups_total: (s.n * s.groups) as u32,
        channels: s.c as u32,
        hw: s.hw as u32,
        groups: s.groups as u32,
        eps: s.eps,
        _pad: [0; 3],
    });
    let backward = ctx.dispatch_texels(
        &SPEC_BACKWARD,
        &[
            ("SILU", s.silu as u8 as f64),
            ("VEC4", s.hw.is_multiple_of(4) as u8 as f64),
            ("L", lanes as f64),
            ("WG", wg as f64),
        ],
        &[g.x, g.dy, g.gamma, g.beta, g.dx, &partials, &params],
        &[len, len],
        grid_1d(ctx, s.n * s.groups, wg / lanes),
        Cost { flops: 20 * len as u64, bytes: 4 * (4 * len + 2 * s.n * s.c) as u64 },
    )?;
    let reduce_params = ctx.uniform(&ParamGradsParams { n: s.n as u32, channels: s.c as u32, _pad: [0; 2] });
    let reduce = ctx.dispatch(
        &SPEC_PARAM_GRADS,
        &[],
        &[&partials, g.dgamma, g.dbeta, &reduce_params],
        [s.c.div_ceil(64) as u32, 1, 1],
        Cost { flops: 2 * (s.n * s.c) as u64, bytes: 4 * (2 * s.n * s.c + 2 * s.c) as u64 },
    )?;
    Ok(vec![backward, reduce])
}

/// Plain reference of `group_norm_backward`: (dx, d gamma, d beta) in f64, two-pass statistics.
pub fn reference_backward(
    s: &GroupNormShape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let cg = s.c / s.groups;
    let len = cg * s.hw;
    let mut dx = vec![0.0f32; x.len()];
    let (mut dgamma, mut dbeta) = (vec![0.0f64; s.c], vec![0.0f64; s.c]);
    for g in 0..s.n * s.groups {
        let span = &x[g * len..(g + 1) * len];
        let mean = span.iter().map(|&v| v as f64).sum::<f64>() / len as f64;
        let var = span.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / len as f64;
        let rstd = 1.0 / (var + s.eps as f64).sqrt();
        let chan = |i: usize| (g % s.groups) * cg + i / s.hw;
        let xhat = |i: usize| (span[i] as f64 - mean) * rstd;
        let dz = |i: usize| {
            let d = dy[g * len + i] as f64;
            if s.silu {
                let z = xhat(i) * gamma[chan(i)] as f64 + beta[chan(i)] as f64;
                let sg = 1.0 / (1.0 + (-z).exp());
                d * sg * (1.0 + z * (1.0 - sg))
            } else {
                d
            }
        };
        let (mut m1, mut m2) = (0.0, 0.0);
        for i in 0..len {
            let gi = dz(i) * gamma[chan(i)] as f64;
            m1 += gi;
            m2 += gi * xhat(i);
            dgamma[chan(i)] += dz(i) * xhat(i);
            dbeta[chan(i)] += dz(i);
        }
        let (m1, m2) = (m1 / len as f64, m2 / len as f64);
        for i in 0..len {
            let gi = dz(i) * gamma[chan(i)] as f64;
            dx[g * len + i] = (rstd * (gi - m1 - xhat(i) * m2)) as f32;
        }
    }
    let f = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect();
    (dx, f(dgamma), f(dbeta))
}

pub fn reference(s: &GroupNormShape, x: &[f32], gamma: &[f32], beta: &[f32]) -> Vec<f32> {
    let cg = s.c / s.groups;
    let len = cg * s.hw;
    let mut y = vec![0.0f32; x.len()];
    for g in 0..s.n * s.groups {
        let span = &x[g * len..(g + 1) * len];
        let mean = span.iter().map(|&v| v as f64).sum::<f64>() / len as f64;
        let var = span.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / len as f64;
        let rstd = 1.0 / (var + s.eps as f64).sqrt();
        for (i, &v) in span.iter().enumerate() {
            let c = (g % s.groups) * cg + i / s.hw;
            let mut o = (v as f64 - mean) * rstd * gamma[c] as f64 + beta[c] as f64;
            if s.silu {
                o /= 1.0 + (-o).exp();
            }
            y[g * len + i] = o as f32;
        }
    }
    y
}
