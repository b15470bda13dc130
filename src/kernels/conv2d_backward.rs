//! conv2d's backward (shaders/conv2d_backward.wgsl, col2im.wgsl, conv2d_transpose_subgroup.wgsl,
//! the weight-gradient kernels and the forward kernels), beside its CPU reference.
//!
//! The input gradient is conv_transpose2d, run as a stride-1 forward conv (the fast kernel)
//! over dy dilated by the stride, with the weight mirrored per tap and its channel axes swapped
//! (both done on the device, since weights change as they train), padded by k - 1 - pad and, on
//! the bottom and right, by the output padding (the input rows the forward's last window left
//! over). The forward's output scale is the backward's epilogue scale. A strided one runs by
//! phases instead where it can: one stride-1 conv per (row, column) residue of the input, over
//! dy itself with the taps that reach that residue, interleaved into dx (no products with the
//! dilated dy's zeros: 3 in 4 at stride 2). Where the map is small beside the channels, the
//! input gradient runs in the column form instead (`GradForm`): a matmul over the packed weight as
//! it is, then col2im (no flipped weight, whose copy was most of an 8x8 input gradient). At stride
//! 2 over narrow maps one kernel does the phases' work in one dispatch, with no interleave
//! (conv2d_transpose_subgroup.wgsl).

use crate::gpu::{Binding, Context, CopyOp, Cost, Dispatch, KernelSpec};
use crate::kernels::conv2d::{self, Conv2dShape, Epilogue, Launch, Padding};
use crate::kernels::matmul::{self, Bias, MatmulShape, Strides};
use crate::kernels::{check_len, grid_1d, groups, split_count, split_scratch, use_subgroups, Variant};
use crate::{bail_shape, Result};

const BINDINGS: &[Binding] = &[Binding::Read, Binding::Write, Binding::Uniform];
static FLIP: KernelSpec =
    KernelSpec { shader: &crate::shaders::FLIP_WEIGHT, entry: "flip_weight", bindings: BINDINGS };
static DILATE: KernelSpec =
    KernelSpec { shader: &crate::shaders::CONV2D_BACKWARD, entry: "dilate", bindings: BINDINGS };
static INTERLEAVE: KernelSpec =
    KernelSpec { shader: &crate::shaders::CONV2D_BACKWARD, entry: "interleave", bindings: BINDINGS };
static CHANNELS_LAST: KernelSpec = KernelSpec {
    shader: &crate::shaders::CHANNELS_LAST,
    entry: "channels_last",
    bindings: &[Binding::Read, Binding::Write, Binding::Uniform, Binding::Write],
};

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    ho: u32,
    wo: u32,
    hd: u32,
    wd: u32,
    groups_x: u32,
    _pad: [u32; 3],
}

/// flip_weight.wgsl's parameters.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct FlipParams {
    cin: u32,
    cout: u32,
    cin4: u32,
    cout4: u32,
    taps: u32,
    groups_x: u32,
    _pad: [u32; 2],
}

/// channels_last.wgsl's parameters.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ChannelsLastParams {
    c: u32,
    c4: u32,
    hw: u32,
    scale: f32,
}

fn launch(
    ctx: &Context,
    spec: &KernelSpec,
    mut p: Params,
    src: &wgpu::Buffer,
    dst: &wgpu::Buffer,
) -> Result<Dispatch> {
    let workgroups = grid_1d(ctx, p.len as usize, 256);
    p.groups_x = workgroups[0];
    let uniform = ctx.uniform(&p);
    ctx.dispatch(spec, &[], &[src, dst, &uniform], workgroups, Cost { flops: 0, bytes: 8 * p.len as u64 })
}

/// The stride-1 conv that computes the input gradient: its shape over (dilated) dy.
fn transposed_shape(s: &Conv2dShape) -> Result<Conv2dShape> {
    let (ho, wo) = s.out_hw()?;
    let (hd, wd) = ((ho - 1) * s.stride + 1, (wo - 1) * s.stride + 1);
    // Input rows and columns past the forward's last window.
    let extra_h = s.h + s.pad.top + s.pad.bottom - ((ho - 1) * s.stride + s.kh);
    let extra_w = s.w + s.pad.left + s.pad.right - ((wo - 1) * s.stride + s.kw);
    let p = &s.pad;
    if p.top >= s.kh || p.bottom >= s.kh || p.left >= s.kw || p.right >= s.kw {
        bail_shape!("conv2d backward: padding {p:?} of at least the kernel size {}x{}", s.kh, s.kw);
    }
    let pad = Padding {
        top: s.kh - 1 - p.top,
        bottom: s.kh - 1 - p.bottom + extra_h,
        left: s.kw - 1 - p.left,
        right: s.kw - 1 - p.right + extra_w,
    };
    Ok(Conv2dShape { n: s.n, cin: s.cout, h: hd, w: wd, cout: s.cin, kh: s.kh, kw: s.kw, stride: 1, pad })
}

/// How conv2d's input gradient runs: three exact forms (the tests run each on every case it
/// applies to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GradForm {
    /// The column form where the map is small beside the output channels (N Ho Wo <= Cout: its
    /// columns are then no larger than the flipped weight the conv form writes every step); the
    /// transposed kernel at stride 2 where the phases' dy rows are not whole texels (Wo % 4 != 0,
    /// so their convs read value by value) and dx has 32 channels or more; else the conv form.
    /// On lavapipe the column form ran ddpm-cifar10-32's 256-channel input gradients at 16x16 to
    /// 4x4 in 0.55-0.85 of the conv form's time, and 32x32 at 128 channels (8 times the columns)
    /// in twice; the transposed kernel ran the bundled model's 28 -> 14 input gradient in 0.55-0.8
    /// of its phases' time, and cifar's 32 -> 16 one (16-wide dy rows) in 0.7-1.3: no clear gain.
    Auto,
    /// The forward conv kernel over the flipped weight (by phases where strided).
    Conv,
    /// A matmul of the packed weight with dy into columns (no flipped weight), summed into dx by
    /// col2im (col2im.wgsl).
    Columns,
    /// Stride 2 in one dispatch (conv2d_transpose_subgroup.wgsl) over the flipped weight: needs
    /// subgroups and W % 4 == 0 (see `transposed_applies`).
    Transposed,
}

/// Whether `GradForm::Transposed` can run the input gradient of `s` on `ctx`.
pub fn transposed_applies(ctx: &Context, s: &Conv2dShape) -> bool {
    s.stride == 2 && s.w.is_multiple_of(4) && crate::kernels::has_subgroup_kernels(ctx)
}

impl GradForm {
    /// The form that runs the input gradient of `s` on `ctx`: Auto resolved, the others checked.
    pub fn resolve(self, ctx: &Context, s: &Conv2dShape) -> Result<GradForm> {
        let (ho, wo) = s.out_hw()?;
        Ok(match self {
            GradForm::Auto if s.n * ho * wo <= s.cout => GradForm::Columns,
            GradForm::Auto if transposed_applies(ctx, s) && s.cin >= 32 && !wo.is_multiple_of(4) => {
                GradForm::Transposed
            }
            GradForm::Auto => GradForm::Conv,
            GradForm::Transposed if !transposed_applies(ctx, s) => bail_shape!(
                "conv2d backward: the transposed kernel needs stride 2, W % 4 == 0 and subgroups ({s:?})"
            ),
            form => form,
        })
    }
}

/// dx [N, Cin, H, W] = d loss / d x of `conv2d` with shape `s` and packed weight `packed_weight`,
/// given dy [N, Cout, Ho, Wo] = d loss / d output and the forward's output `scale`, in `form`.
pub fn conv2d_backward_input(
    ctx: &Context,
    form: GradForm,
    s: &Conv2dShape,
    dy: &wgpu::Buffer,
    packed_weight: &wgpu::Buffer,
    scale: f32,
    dx: &wgpu::Buffer,
) -> Result<Vec<Dispatch>> {
    let (ho, wo) = s.out_hw()?;
    if s.n == 0 || s.cin == 0 || s.cout == 0 {
        bail_shape!("conv2d backward: empty shape {s:?}");
    }
    check_len("conv2d backward", "dy", dy, s.n * s.cout * ho * wo)?;
    check_len("conv2d backward", "weight", packed_weight, s.packed_weight_len())?;
    check_len("conv2d backward", "dx", dx, s.n * s.cin * s.h * s.w)?;
    let form = form.resolve(ctx, s)?;
    if form == GradForm::Columns {
        return input_grad_by_columns(ctx, s, dy, packed_weight, scale, dx);
    }
    let t = transposed_shape(s)?;
    let flipped = ctx.scratch_buffer("conv2d backward: flipped weight", t.packed_weight_len());
    let mut out = vec![flip_weight(ctx, s, packed_weight, &flipped)?];
    if form == GradForm::Transposed {
        out.push(transpose_stride2(ctx, s, dy, &flipped, scale, dx)?);
        return Ok(out);
    }
    if s.stride > 1 {
        if let Some(phases) = phases(s)? {
            return by_phases(ctx, s, &phases, dy, &flipped, scale, dx, out);
        }
    }
    let dilated;
    let src = if s.stride == 1 {
        dy
    } else {
        let len = s.n * s.cout * t.h * t.w;
        dilated = ctx.scratch_buffer("conv2d backward: dilated dy", len);
        let p = Params {
            len: len as u32,
            stride: s.stride as u32,
            ho: ho as u32,
            wo: wo as u32,
            hd: t.h as u32,
            wd: t.w as u32,
            ..Default::default()
        };
        out.push(launch(ctx, &DILATE, p, dy, &dilated)?);
        &dilated
    };
    let epilogue = Epilogue { bias: None, channel_add: None, residual: None, scale };
    let mut conv = conv2d::conv2d(ctx, Launch::Auto, &t, src, &flipped, &epilogue, dx)?;
    // Useful work is the forward's: over a dilated dy most products are with zeros.
    conv[0].cost.flops = s.flops();
    out.extend(conv);
    Ok(out)
}

static COL2IM: KernelSpec =
    KernelSpec { shader: &crate::shaders::COL2IM, entry: "col2im", bindings: BINDINGS };

/// col2im.wgsl's parameters.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ColumnParams {
    rows: u32,
    cin: u32,
    h: u32,
    w: u32,
    ho: u32,
    wo: u32,
    kh: u32,
    kw: u32,
    pad_top: u32,
    pad_left: u32,
    scale: f32,
    groups_x: u32,
    _pad: [u32; 4],
}

/// col2im (col2im.wgsl) of shape `s`: dx from its columns `cols`, a lane per dx row.
fn col2im(
    ctx: &Context,
    s: &Conv2dShape,
    scale: f32,
    cols: &wgpu::Buffer,
    dx: &wgpu::Buffer,
) -> Result<Dispatch> {
    let (ho, wo) = s.out_hw()?;
    let (rows, len) = (s.n * s.cin * s.h, s.n * s.cin * s.h * s.w);
    let workgroups = grid_1d(ctx, rows, 64);
    let uniform = ctx.uniform(&ColumnParams {
        rows: rows as u32,
        cin: s.cin as u32,
        h: s.h as u32,
        w: s.w as u32,
        ho: ho as u32,
        wo: wo as u32,
        kh: s.kh as u32,
        kw: s.kw as u32,
        pad_top: s.pad.top as u32,
        pad_left: s.pad.left as u32,
        scale,
        groups_x: workgroups[0],
        _pad: [0; 4],
    });
    let taps = (s.kh * s.kw) as u64;
    let cost = Cost { flops: 0, bytes: 4 * (taps + 1) * len as u64 };
    ctx.dispatch(&COL2IM, &[("STRIDE", s.stride as f64)], &[cols, dx, &uniform], workgroups, cost)
}

/// The input gradient in the column form: cols [N, KH KW Cin, Ho Wo] = W^T dy, one matmul over the
/// packed weight as it is ([KH KW Cin] rows of Cout), then col2im sums each input pixel's taps.
fn input_grad_by_columns(
    ctx: &Context,
    s: &Conv2dShape,
    dy: &wgpu::Buffer,
    packed_weight: &wgpu::Buffer,
    scale: f32,
    dx: &wgpu::Buffer,
) -> Result<Vec<Dispatch>> {
    let (ho, wo) = s.out_hw()?;
    let rows = s.kh * s.kw * s.cin;
    let cols_len = s.n * rows * ho * wo;
    if 4 * cols_len as u64 > ctx.max_binding_bytes() {
        bail_shape!("conv2d backward: the columns of dx ({s:?}) exceed the device's storage binding size");
    }
    let cols = ctx.shared_scratch("conv2d backward: dx columns", cols_len);
    let product = MatmulShape {
        batch: s.n,
        m: rows,
        n: ho * wo,
        k: s.cout,
        a: Strides { batch: 0, row: s.cout4() * 4, col: 1 },
        b: Strides::row_major(s.cout, ho * wo),
        bias: Bias::None,
        silu: false,
    };
    let mut out = matmul::matmul(ctx, Launch::Auto, &product, packed_weight, dy, None, &cols)?;
    out.push(col2im(ctx, s, scale, &cols, dx)?);
    Ok(out)
}

/// The input gradient at stride 2 in one dispatch (conv2d_transpose_subgroup.wgsl, which shares
/// the forward's bindings and Params): dy [N, Cout, Ho, Wo] and the flipped weight into dx, with
/// the forward's shape `s`, times `scale`.
fn transpose_stride2(
    ctx: &Context,
    s: &Conv2dShape,
    dy: &wgpu::Buffer,
    flipped: &wgpu::Buffer,
    scale: f32,
    dx: &wgpu::Buffer,
) -> Result<Dispatch> {
    static SPEC_TRANSPOSE: KernelSpec = KernelSpec {
        shader: &crate::shaders::CONV2D_TRANSPOSE_SUBGROUP,
        entry: "conv2d_transpose",
        bindings: conv2d::BINDINGS,
    };
    let (ho, wo) = s.out_hw()?;
    let cin4 = s.cin.div_ceil(4);
    let (dy_len, dx_len) = (s.n * s.cout * ho * wo, s.n * s.cin * s.h * s.w);
    let flipped_len = s.kh * s.kw * s.cout * cin4 * 4;
    check_len("conv2d transpose", "dy", dy, dy_len)?;
    check_len("conv2d transpose", "flipped weight", flipped, flipped_len)?;
    check_len("conv2d transpose", "dx", dx, dx_len)?;
    // One lane per quad of pixels in each of two dx rows (row pairs of 4 rows, see the kernel).
    let lanes = s.n * s.h.div_ceil(4) * 2 * (s.w / 4);
    let wg_x = lanes.next_power_of_two().clamp(8, 64);
    // The kernel's input is dy and its output dx: the forward's shape with the two swapped.
    let swapped = Conv2dShape { cin: s.cout, h: ho, w: wo, cout: s.cin, ..*s };
    let params = ctx.uniform(&conv2d::Params::new(&swapped, (s.h, s.w), scale, None));
    let dummy = &ctx.dummy;
    let overrides = [("WG_X", wg_x as f64), ("HAS_BIAS", 0.0), ("ALIGNED", 1.0)];
    ctx.dispatch_texels(
        &SPEC_TRANSPOSE,
        &overrides,
        &[dy, flipped, dummy, dummy, dummy, dx, &params],
        &[dy_len, flipped_len],
        [groups(lanes, wg_x), groups(cin4, 8), 1],
        Cost { flops: s.flops(), bytes: 4 * (dy_len + flipped_len + dx_len) as u64 },
    )
}

/// The packed weight of the input gradient's conv (flip_weight.wgsl): `packed_weight` mirrored
/// per tap with its channel axes swapped, into `flipped`.
fn flip_weight(
    ctx: &Context,
    s: &Conv2dShape,
    packed_weight: &wgpu::Buffer,
    flipped: &wgpu::Buffer,
) -> Result<Dispatch> {
    let (cin4, cout4) = (s.cin.div_ceil(4), s.cout.div_ceil(4));
    let [gx, gy, _] = grid_1d(ctx, cin4 * cout4, 64);
    let uniform = ctx.uniform(&FlipParams {
        cin: s.cin as u32,
        cout: s.cout as u32,
        cin4: cin4 as u32,
        cout4: cout4 as u32,
        taps: (s.kh * s.kw) as u32,
        groups_x: gx,
        _pad: [0; 2],
    });
    ctx.dispatch(
        &FLIP,
        &[],
        &[packed_weight, flipped, &uniform],
        [gx, gy, (s.kh * s.kw) as u32],
        Cost { flops: 0, bytes: 8 * s.packed_weight_len() as u64 },
    )
}

/// One phase of a strided input gradient along one axis: the input rows u = s m + r - pad with
/// m = m0.., which only the taps a = r + s alpha reach, from dy rows m - alpha.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AxisPhase {
    /// The residue r of u + pad.
    r: usize,
    /// Taps of the phase (ceil((k - r) / s)).
    taps: usize,
    /// First m, and how many rows.
    m0: usize,
    rows: usize,
    /// The phase conv's padding of dy.
    pad_before: usize,
    pad_after: usize,
}

/// The phases of one axis (input `size`, padding `pad` before, kernel `k`, stride `s`, dy
/// `out` long), or None where some phase has no tap or would need negative padding (then the
/// dilated form runs).
fn axis_phases(size: usize, pad: usize, k: usize, s: usize, out: usize) -> Option<Vec<AxisPhase>> {
    let mut phases = vec![];
    for r in 0..s {
        let taps = k.saturating_sub(r).div_ceil(s);
        let m0 = if pad > r { (pad - r).div_ceil(s) } else { 0 };
        let end = (size + pad).checked_sub(r)?.div_ceil(s);
        let rows = end.checked_sub(m0)?;
        if taps == 0 || rows == 0 {
            return None;
        }
        let pad_before = (taps - 1).checked_sub(m0)?;
        let pad_after = (rows + taps - 1).checked_sub(out + pad_before)?;
        phases.push(AxisPhase { r, taps, m0, rows, pad_before, pad_after });
    }
    Some(phases)
}

/// Both axes' phases of a strided conv's input gradient.
fn phases(s: &Conv2dShape) -> Result<Option<(Vec<AxisPhase>, Vec<AxisPhase>)>> {
    let (ho, wo) = s.out_hw()?;
    Ok(axis_phases(s.h, s.pad.top, s.kh, s.stride, ho).zip(axis_phases(s.w, s.pad.left, s.kw, s.stride, wo)))
}

/// A stride-s input gradient as s^2 stride-1 convs, one per (row, column) phase, each over dy
/// with only the taps that reach its pixels (no products with a dilated dy's zeros), then
/// interleaved into dx. Each phase's weight is its taps' slabs of the mirrored weight (copies).
#[allow(clippy::too_many_arguments)]
fn by_phases(
    ctx: &Context,
    s: &Conv2dShape,
    (rows, cols): &(Vec<AxisPhase>, Vec<AxisPhase>),
    dy: &wgpu::Buffer,
    flipped: &wgpu::Buffer,
    scale: f32,
    dx: &wgpu::Buffer,
    mut out: Vec<Dispatch>,
) -> Result<Vec<Dispatch>> {
    let (ho, wo) = s.out_hw()?;
    let slab = s.cout * s.cin.div_ceil(4) * 4;
    let largest =
        rows.iter().map(|p| p.rows).max().unwrap_or(1) * cols.iter().map(|p| p.rows).max().unwrap_or(1);
    if 4 * (s.n * s.cin * largest) as u64 > ctx.max_binding_bytes() {
        bail_shape!("conv2d backward: a phase of dx ({s:?}) exceeds the device's storage binding size");
    }
    let phase_out = ctx.shared_scratch("conv2d backward: phase", s.n * s.cin * largest);
    let most_taps = rows[0].taps * cols[0].taps;
    let phase_weight = ctx.shared_scratch("conv2d backward: phase weight", most_taps * slab);
    for pr in rows {
        for pc in cols {
            // The phase's taps, mirrored: tap (beta, gamma) is the forward's
            // (r + s (A - 1 - beta), c + s (B - 1 - gamma)), whose mirrored tap is k - 1 - that.
            let mut copies = vec![];
            for beta in 0..pr.taps {
                for gamma in 0..pc.taps {
                    let a = pr.r + s.stride * (pr.taps - 1 - beta);
                    let b = pc.r + s.stride * (pc.taps - 1 - gamma);
                    let tap = (s.kh - 1 - a) * s.kw + (s.kw - 1 - b);
                    copies.push(CopyOp::buffer(
                        flipped,
                        (4 * tap * slab) as u64,
                        &phase_weight,
                        (4 * (beta * pc.taps + gamma) * slab) as u64,
                        (4 * slab) as u64,
                    ));
                }
            }
            out.push(Dispatch::copies_only("conv2d backward: phase weight", copies, Cost::default()));
            let shape = Conv2dShape {
                n: s.n,
                cin: s.cout,
                h: ho,
                w: wo,
                cout: s.cin,
                kh: pr.taps,
                kw: pc.taps,
                stride: 1,
                pad: Padding {
                    top: pr.pad_before,
                    bottom: pr.pad_after,
                    left: pc.pad_before,
                    right: pc.pad_after,
                },
            };
            let epilogue = Epilogue { bias: None, channel_add: None, residual: None, scale };
            out.extend(conv2d::conv2d(ctx, Launch::Auto, &shape, dy, &phase_weight, &epilogue, &phase_out)?);
            // One lane a phase row.
            let p = Params {
                len: (s.n * s.cin * pr.rows) as u32,
                kh: pr.rows as u32,
                kw: pc.rows as u32,
                stride: s.stride as u32,
                ho: (s.stride * pr.m0 + pr.r - s.pad.top) as u32,
                wo: (s.stride * pc.m0 + pc.r - s.pad.left) as u32,
                hd: s.h as u32,
                wd: s.w as u32,
                ..Default::default()
            };
            let mut interleave = launch(ctx, &INTERLEAVE, p, &phase_out, dx)?;
            interleave.cost.bytes = 8 * (s.n * s.cin * pr.rows * pc.rows) as u64;
            out.push(interleave);
        }
    }
    Ok(out)
}

static WEIGHT_GRAD_SUBGROUP: KernelSpec = KernelSpec {
    shader: &crate::shaders::CONV2D_WEIGHT_GRAD_SUBGROUP,
    entry: "conv2d_weight_grad",
    bindings: &[Binding::Texels, Binding::Texels, Binding::Write, Binding::Uniform],
};
static WEIGHT_GRAD: KernelSpec = KernelSpec {
    shader: &crate::shaders::CONV2D_WEIGHT_GRAD,
    entry: "conv2d_weight_grad",
    // x and dy are read as texels.
    bindings: &[Binding::Texels, Binding::Texels, Binding::Write, Binding::Uniform],
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct WeightGradParams {
    n: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    hout: u32,
    wout: u32,
    cout4: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad_top: u32,
    pad_left: u32,
    scale: f32,
    cin4: u32,
    rows_per_split: u32,
    groups_x: u32,
    packed_len: u32,
    splits: u32,
    _pad: u32,
}

/// Pixels one invocation of the weight gradient walks at most: lavapipe stops a shader's loops
/// after 65535 iterations, silently (see group_norm.rs).
const MAX_PIXELS_PER_SPLIT: usize = 16_384;
/// Workgroups that keep a CPU driver's threads busy (lavapipe: one a core at a time).
const CPU_BUSY_WORKGROUPS: usize = 16;
/// Splits keep at least this many pixels each.
const MIN_PIXELS_PER_SPLIT: usize = 256;

/// The parameter gradients of a conv2d: what its backward writes besides dx.
pub struct ConvParamGrads<'a> {
    /// d loss / d weight, in the packed layout of the weight (`conv2d::pack_weight`).
    pub dw: &'a wgpu::Buffer,
    /// d loss / d bias [Cout].
    pub db: Option<&'a wgpu::Buffer>,
    /// d loss / d channel add [N, Cout] (the time embedding's projection in a resnet block).
    pub dchan: Option<&'a wgpu::Buffer>,
}

/// The weight, bias and channel-add gradients of `conv2d` with shape `s` and output `scale`, given
/// its input x and dy = d loss / d output. Every reduction over the batch runs in a fixed order.
pub fn conv2d_backward_params(
    ctx: &Context,
    variant: Variant,
    s: &Conv2dShape,
    x: &wgpu::Buffer,
    dy: &wgpu::Buffer,
    scale: f32,
    g: &ConvParamGrads,
) -> Result<Vec<Dispatch>> {
    let (ho, wo) = s.out_hw()?;
    if s.n == 0 || s.cin == 0 || s.cout == 0 {
        bail_shape!("conv2d backward: empty shape {s:?}");
    }
    let (x_len, dy_len, packed_len) =
        (s.n * s.cin * s.h * s.w, s.n * s.cout * ho * wo, s.packed_weight_len());
    check_len("conv2d backward", "x", x, x_len)?;
    check_len("conv2d backward", "dy", dy, dy_len)?;
    check_len("conv2d backward", "d weight", g.dw, packed_len)?;
    // d chan [N, Cout] (dy's planes summed, times scale) comes with dy's channels-last copy; d
    // bias = a row of ones times d chan viewed as [N, Cout]: a matmul, whose k loop runs in order.
    // With one image d bias is d chan: written there directly, or copied.
    if let Some(db) = g.db {
        check_len("conv2d backward", "d bias", db, s.cout)?;
    }
    let own_dchan;
    let dchan = match (g.dchan, g.db) {
        (Some(b), _) => {
            check_len("conv2d backward", "d channel add", b, s.n * s.cout)?;
            b
        }
        (None, Some(db)) if s.n == 1 => db,
        (None, _) => {
            own_dchan = ctx.scratch_buffer("conv2d backward: d channel add", s.n * s.cout);
            &own_dchan
        }
    };
    let mut out = weight_grad(ctx, variant, s, x, dy, scale, g.dw, dchan)?;
    match g.db {
        Some(db) if s.n == 1 && g.dchan.is_some() => {
            let copy = CopyOp::buffer(dchan, 0, db, 0, 4 * s.cout as u64);
            out.push(Dispatch::copies_only("conv2d backward: d bias", vec![copy], Cost::default()));
        }
        Some(db) if s.n > 1 => {
            let ones = ctx.constant_buffer("conv2d backward: constant column", s.n, 1.0);
            let sum_n = MatmulShape {
                batch: 1,
                m: 1,
                n: s.cout,
                k: s.n,
                a: Strides::row_major(1, s.n),
                b: Strides::row_major(s.n, s.cout),
                bias: Bias::None,
                silu: false,
            };
            out.extend(matmul::matmul(ctx, Launch::Auto, &sum_n, &ones, dchan, None, db)?);
        }
        // No bias, or one image without d channel add: d bias was written as d chan.
        _ => {}
    }
    Ok(out)
}

/// The subgroup kernel's workgroup size on a CPU driver: the multiple of 8 (its vector) up to 64
/// that leaves the fewest idle lanes in a row of `lanes`, the largest on a tie (a 32-channel 3x3
/// conv has 72 lanes: three workgroups of 24, where 64 would idle 56). GPUs take 64.
fn tight_workgroup(lanes: usize) -> usize {
    let wg = (1..=8).map(|k| 8 * k).min_by_key(|&wg| (lanes.div_ceil(wg) * wg, usize::MAX - wg));
    wg.unwrap_or(64)
}

/// d weight (conv2d_weight_grad.wgsl) over channels-last copies of x and dy: each invocation owns
/// one tap x 8 x 8 channels and walks its split's pixels in order; the splits summed in order.
/// dy's copy also writes d chan (`dchan`, [N, Cout]).
#[allow(clippy::too_many_arguments)]
fn weight_grad(
    ctx: &Context,
    variant: Variant,
    s: &Conv2dShape,
    x: &wgpu::Buffer,
    dy: &wgpu::Buffer,
    scale: f32,
    dw: &wgpu::Buffer,
    dchan: &wgpu::Buffer,
) -> Result<Vec<Dispatch>> {
    let (ho, wo) = s.out_hw()?;
    let packed_len = s.packed_weight_len();
    let (cin4, cout4) = (s.cin.div_ceil(4), s.cout.div_ceil(4));
    // Each split's invocations and workgroups. The subgroup kernel's: (tap, ci block) a row of
    // workgroups of `wg`, times the blocks of 32 output channels; the portable one's: (tap, pair
    // of ci blocks, pair of co blocks), 64 a workgroup, splits continuing the same index.
    let subgroups = use_subgroups(ctx, variant, cout4 >= 8, "conv2d weight gradient")?;
    let lanes = s.kh * s.kw * cin4;
    let blocks = s.kh * s.kw * cin4.div_ceil(2) * cout4.div_ceil(2);
    let (wg, invocations) = if subgroups {
        let wg = if ctx.is_cpu() { tight_workgroup(lanes) } else { 64 };
        (wg, lanes.div_ceil(wg) * wg * cout4.div_ceil(8))
    } else {
        (64, blocks)
    };
    let pixels = s.n * ho * wo;
    // Splits fill the device. A CPU driver runs a workgroup a thread at a time: a few workgroups
    // a thread keep it busy, and more splits only make the reduce longer.
    let busy = if ctx.is_cpu() {
        let groups = invocations.div_ceil(wg);
        CPU_BUSY_WORKGROUPS.div_ceil(groups).clamp(1, (pixels / MIN_PIXELS_PER_SPLIT).max(1))
    } else {
        split_count(invocations, pixels, MIN_PIXELS_PER_SPLIT)
    };
    let splits = pixels.div_ceil(MAX_PIXELS_PER_SPLIT).max(busy);
    // Splits are whole output rows.
    let rows = s.n * ho;
    let per_split = rows.div_ceil(splits.min(rows));
    let splits = rows.div_ceil(per_split);
    let mut out = vec![];
    let scratch = if splits > 1 {
        Some(split_scratch(ctx, "conv2d weight gradient", splits * packed_len)?)
    } else {
        None
    };
    // Channels-last copies of x and dy, 4 channels of a pixel a texel.
    let (xt_len, dyt_len) = (s.n * s.h * s.w * cin4 * 4, pixels * cout4 * 4);
    let xt = ctx.shared_scratch("conv2d weight gradient: x channels-last", xt_len);
    let dyt = ctx.shared_scratch("conv2d weight gradient: dy channels-last", dyt_len);
    for (src, dst, c, hw, sum) in [(x, &xt, s.cin, s.h * s.w, false), (dy, &dyt, s.cout, ho * wo, true)] {
        let c4 = c.div_ceil(4);
        let params = ctx.uniform(&ChannelsLastParams { c: c as u32, c4: c4 as u32, hw: hw as u32, scale });
        let bytes = 4 * (s.n * hw * (c + 4 * c4)) as u64;
        out.push(ctx.dispatch(
            &CHANNELS_LAST,
            &[("SUM", sum as u8 as f64)],
            &[src, dst, &params, dchan],
            [c4 as u32, s.n as u32, 1],
            Cost { flops: 0, bytes },
        )?);
    }
    let (spec, workgroups) = if subgroups {
        (&WEIGHT_GRAD_SUBGROUP, [lanes.div_ceil(wg) as u32, cout4.div_ceil(8) as u32, splits as u32])
    } else {
        (&WEIGHT_GRAD, grid_1d(ctx, blocks * splits, wg))
    };
    let params = ctx.uniform(&WeightGradParams {
        n: s.n as u32,
        cin: s.cin as u32,
        h: s.h as u32,
        w: s.w as u32,
        cout: s.cout as u32,
        hout: ho as u32,
        wout: wo as u32,
        cout4: cout4 as u32,
        kh: s.kh as u32,
        kw: s.kw as u32,
        stride: s.stride as u32,
        pad_top: s.pad.top as u32,
        pad_left: s.pad.left as u32,
        scale,
        cin4: cin4 as u32,
        rows_per_split: per_split as u32,
        groups_x: workgroups[0],
        packed_len: packed_len as u32,
        splits: splits as u32,
        _pad: 0,
    });
    // The portable kernel's workgroup is its constant 64.
    let overrides: &[(&str, f64)] = if subgroups { &[("WG", wg as f64)] } else { &[] };
    out.push(ctx.dispatch_texels(
        spec,
        overrides,
        &[&xt, &dyt, scratch.as_ref().unwrap_or(dw), &params],
        &[xt_len, dyt_len],
        workgroups,
        Cost { flops: s.flops(), bytes: 4 * (xt_len + dyt_len + splits * packed_len) as u64 },
    )?);
    if let Some(scratch) = &scratch {
        out.push(matmul::reduce_splits(
            ctx,
            scratch,
            splits,
            packed_len,
            packed_len,
            (1, 1),
            0,
            false,
            None,
            dw,
        )?);
    }
    Ok(out)
}

/// Every term of the forward's sum, out[dy] += w[weight] x[x], as (dy index, x index, weight
/// index in PyTorch layout [Cout, Cin, KH, KW]), taps in the padding left out: the one loop both
/// backward references walk.
fn for_each_term(s: &Conv2dShape, mut f: impl FnMut(usize, usize, usize)) {
    let (ho, wo) = s.out_hw().expect("reference: valid shape"); // ok: test-only helper
    for n in 0..s.n {
        for co in 0..s.cout {
            for oy in 0..ho {
                for ox in 0..wo {
                    let out = ((n * s.cout + co) * ho + oy) * wo + ox;
                    for ci in 0..s.cin {
                        for ky in 0..s.kh {
                            let iy = (oy * s.stride + ky) as isize - s.pad.top as isize;
                            if iy < 0 || iy >= s.h as isize {
                                continue;
                            }
                            for kx in 0..s.kw {
                                let ix = (ox * s.stride + kx) as isize - s.pad.left as isize;
                                if ix < 0 || ix >= s.w as isize {
                                    continue;
                                }
                                let input = ((n * s.cin + ci) * s.h + iy as usize) * s.w + ix as usize;
                                f(out, input, ((co * s.cin + ci) * s.kh + ky) * s.kw + kx);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Plain reference of `conv2d_backward_params` in f64: (d weight [Cout, Cin, KH, KW] in PyTorch
/// layout, d bias [Cout], d channel add [N, Cout]).
pub fn reference_backward_params(
    s: &Conv2dShape,
    x: &[f32],
    dy: &[f32],
    scale: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let g = |i: usize| dy[i] as f64 * scale as f64;
    let mut dw = vec![0.0f64; s.cout * s.cin * s.kh * s.kw];
    for_each_term(s, |out, input, w| dw[w] += g(out) * x[input] as f64);
    // d channel add [n, co]: dy's (n, co) plane summed, in order.
    let plane = dy.len() / (s.n * s.cout).max(1);
    let dchan: Vec<f64> = (0..s.n * s.cout).map(|nc| (0..plane).map(|p| g(nc * plane + p)).sum()).collect();
    let db: Vec<f64> = (0..s.cout).map(|co| (0..s.n).map(|n| dchan[n * s.cout + co]).sum()).collect();
    let f = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect();
    (f(dw), f(db), f(dchan))
}

/// Plain reference of the input gradient, straight from the forward's sum, in f64: `weight` in
/// PyTorch layout [Cout, Cin, KH, KW].
pub fn reference_backward_input(s: &Conv2dShape, dy: &[f32], weight: &[f32], scale: f32) -> Vec<f32> {
    let mut dx = vec![0.0f64; s.n * s.cin * s.h * s.w];
    for_each_term(s, |out, input, w| dx[input] += dy[out] as f64 * scale as f64 * weight[w] as f64);
    dx.into_iter().map(|v| v as f32).collect()
}
