//! Elementwise kernels (shaders/elementwise.wgsl): SiLU, add, accumulate, affine, nearest 2x upsample, and
//! channel concat as buffer copies; the backward of SiLU and of the upsample, and the MSE loss's
//! gradient. One launcher per op over a shared binding layout, each beside its reference.

use crate::gpu::{Binding, Context, CopyOp, Cost, Dispatch, KernelSpec};
use crate::kernels::{check_len, grid_1d};
use crate::{bail_shape, Result};

const BINDINGS: &[Binding] = &[Binding::Read, Binding::Read, Binding::Write, Binding::Uniform];
const WG: usize = 256;

macro_rules! spec {
    ($name:ident, $entry:literal) => {
        static $name: KernelSpec =
            KernelSpec { shader: &crate::shaders::ELEMENTWISE, entry: $entry, bindings: BINDINGS };
    };
}
spec!(SILU, "silu");
spec!(ADD, "add");
spec!(ACCUMULATE, "accumulate");
spec!(AFFINE, "affine");
spec!(UPSAMPLE, "upsample_nearest2x");
spec!(SILU_BACKWARD, "silu_backward");
spec!(UPSAMPLE_BACKWARD, "upsample_nearest2x_backward");
spec!(MSE_GRAD, "mse_grad");
spec!(GAUSSIAN_SAMPLE, "gaussian_sample");
spec!(SUM_SHARES, "sum_shares");
spec!(GELU, "gelu");
spec!(GEGLU, "geglu");

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    mode: u32,
    oh: u32,
    ow: u32,
    h: u32,
    w: u32,
    alpha: f32,
    beta: f32,
}

fn launch(
    ctx: &Context,
    spec: &KernelSpec,
    params: Params,
    src0: &wgpu::Buffer,
    src1: Option<&wgpu::Buffer>,
    dst: &wgpu::Buffer,
    bytes: usize,
) -> Result<Dispatch> {
    let len = params.len as usize;
    if len == 0 {
        bail_shape!("{}: empty tensor", spec.entry);
    }
    check_len(spec.entry, "output", dst, len)?;
    let uniform = ctx.uniform(&params);
    ctx.dispatch(
        spec,
        &[],
        &[src0, src1.unwrap_or(&ctx.dummy), dst, &uniform],
        grid_1d(ctx, len, WG),
        Cost { flops: len as u64, bytes: 4 * bytes as u64 },
    )
}

/// y = x * sigmoid(x) over `len` elements.
pub fn silu(ctx: &Context, len: usize, x: &wgpu::Buffer, y: &wgpu::Buffer) -> Result<Dispatch> {
    check_len("silu", "input", x, len)?;
    let p = Params { len: len as u32, ..Default::default() };
    launch(ctx, &SILU, p, x, None, y, 2 * len)
}

/// y = a + b over `len` elements.
pub fn add(
    ctx: &Context,
    len: usize,
    a: &wgpu::Buffer,
    b: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Dispatch> {
    check_len("add", "a", a, len)?;
    check_len("add", "b", b, len)?;
    let p = Params { len: len as u32, ..Default::default() };
    launch(ctx, &ADD, p, a, Some(b), y, 3 * len)
}

/// acc += x over `len` elements (a micro-batch's gradient into the batch's).
pub fn accumulate(ctx: &Context, len: usize, x: &wgpu::Buffer, acc: &wgpu::Buffer) -> Result<Dispatch> {
    check_len("accumulate", "x", x, len)?;
    let p = Params { len: len as u32, ..Default::default() };
    launch(ctx, &ACCUMULATE, p, x, None, acc, 3 * len)
}

/// y = alpha * x + beta over `len` elements.
pub fn affine(
    ctx: &Context,
    len: usize,
    alpha: f32,
    beta: f32,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Dispatch> {
    check_len("affine", "input", x, len)?;
    let p = Params { len: len as u32, alpha, beta, ..Default::default() };
    launch(ctx, &AFFINE, p, x, None, y, 2 * len)
}

/// A diagonal Gaussian posterior's latents: `moments` [B, 2L, plane] (mean, then log-variance),
/// `eps` [B, L, plane] (unused when `mode`); out = (mean + exp(logvar / 2) eps - shift) * scale with
/// logvar clamped to [-30, 20], as diffusers' DiagonalGaussianDistribution and the pipelines'
/// scaling compute it.
#[allow(clippy::too_many_arguments)]
pub fn gaussian_sample(
    ctx: &Context,
    batch: usize,
    latent_channels: usize,
    plane: usize,
    mode: bool,
    (scale, shift): (f32, f32),
    moments: &wgpu::Buffer,
    eps: &wgpu::Buffer,
    out: &wgpu::Buffer,
) -> Result<Dispatch> {
    let len = batch * latent_channels * plane;
    check_len("gaussian_sample", "moments", moments, 2 * len)?;
    check_len("gaussian_sample", "eps", eps, if mode { 0 } else { len })?;
    let p = Params {
        len: len as u32,
        mode: mode as u32,
        h: latent_channels as u32,
        w: plane as u32,
        alpha: scale,
        beta: shift,
        ..Default::default()
    };
    launch(ctx, &GAUSSIAN_SAMPLE, p, moments, Some(eps), out, 4 * len)
}

/// Reference of `gaussian_sample` (f64).
pub fn reference_gaussian_sample(
    latent_channels: usize,
    plane: usize,
    mode: bool,
    (scale, shift): (f32, f32),
    moments: &[f32],
    eps: &[f32],
) -> Vec<f32> {
    let per = latent_channels * plane;
    (0..moments.len() / 2)
        .map(|i| {
            let m = (i / per) * 2 * per + i % per;
            let mut x = moments[m] as f64;
            if !mode {
                x += (0.5 * (moments[m + per] as f64).clamp(-30.0, 20.0)).exp() * eps[i] as f64;
            }
            ((x - shift as f64) * scale as f64) as f32
        })
        .collect()
}

/// y [len] = the sum of `shares` [shares, len] in order, ((s0 + s1) + s2) + ...: the same
/// additions `accumulate` makes share by share.
pub fn sum_shares(
    ctx: &Context,
    len: usize,
    shares: usize,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Dispatch> {
    if shares == 0 {
        bail_shape!("sum_shares: no shares");
    }
    check_len("sum_shares", "shares", x, shares * len)?;
    let p = Params { len: len as u32, h: shares as u32, ..Default::default() };
    launch(ctx, &SUM_SHARES, p, x, None, y, (shares + 1) * len)
}

/// Reference of `sum_shares` (and of `accumulate` share by share): f32 additions in order.
pub fn reference_sum_shares(len: usize, x: &[f32]) -> Vec<f32> {
    let mut acc = x[..len].to_vec();
    for share in x[len..].chunks(len) {
        for (a, v) in acc.iter_mut().zip(share) {
            *a += v;
        }
    }
    acc
}

/// y [N, Ca + Cb, HW] = concat(a [N, Ca, HW], b [N, Cb, HW]) along channels.
#[allow(clippy::too_many_arguments)]
pub fn concat_channels(
    _ctx: &Context,
    n: usize,
    ca: usize,
    cb: usize,
    hw: usize,
    a: &wgpu::Buffer,
    b: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Dispatch> {
    check_len("concat", "first input", a, n * ca * hw)?;
    check_len("concat", "second input", b, n * cb * hw)?;
    let len = n * (ca + cb) * hw;
    check_len("concat", "output", y, len)?;
    for (what, buf, usage) in [
        ("first input", a, wgpu::BufferUsages::COPY_SRC),
        ("second input", b, wgpu::BufferUsages::COPY_SRC),
        ("output", y, wgpu::BufferUsages::COPY_DST),
    ] {
        if !buf.usage().contains(usage) {
            return Err(crate::Error::Gpu(format!("concat: the {what} buffer needs {usage:?} usage")));
        }
    }
    // Channels are the outer dimension of each image, so the concatenation is 2N byte copies.
    let (bytes_a, bytes_b) = (4 * (ca * hw) as u64, 4 * (cb * hw) as u64);
    let mut copies = Vec::with_capacity(2 * n);
    for i in 0..n as u64 {
        let dst_offset = i * (bytes_a + bytes_b);
        copies.push(CopyOp::Buffer {
            src: a.clone(),
            src_offset: i * bytes_a,
            dst: y.clone(),
            dst_offset,
            size: bytes_a,
        });
        copies.push(CopyOp::Buffer {
            src: b.clone(),
            src_offset: i * bytes_b,
            dst: y.clone(),
            dst_offset: dst_offset + bytes_a,
            size: bytes_b,
        });
    }
    copies.retain(|c| !matches!(c, CopyOp::Buffer { size: 0, .. }));
    Ok(Dispatch::copies_only("concat_channels", copies, Cost { flops: 0, bytes: 8 * len as u64 }))
}

/// The backward of `concat_channels`: dy [N, Ca + Cb, HW] split into da [N, Ca, HW] and db [N, Cb,
/// HW], as 2N byte copies. (Where a tensor feeds the concat and another op, as a UNet's skips do,
/// the caller adds the gradients.)
#[allow(clippy::too_many_arguments)]
pub fn concat_channels_backward(
    _ctx: &Context,
    n: usize,
    ca: usize,
    cb: usize,
    hw: usize,
    dy: &wgpu::Buffer,
    da: &wgpu::Buffer,
    db: &wgpu::Buffer,
) -> Result<Dispatch> {
    check_len("concat backward", "dy", dy, n * (ca + cb) * hw)?;
    check_len("concat backward", "first gradient", da, n * ca * hw)?;
    check_len("concat backward", "second gradient", db, n * cb * hw)?;
    let (bytes_a, bytes_b) = (4 * (ca * hw) as u64, 4 * (cb * hw) as u64);
    let mut copies = Vec::with_capacity(2 * n);
    for i in 0..n as u64 {
        let src_offset = i * (bytes_a + bytes_b);
        copies.push(CopyOp::Buffer {
            src: dy.clone(),
            src_offset,
            dst: da.clone(),
            dst_offset: i * bytes_a,
            size: bytes_a,
        });
        copies.push(CopyOp::Buffer {
            src: dy.clone(),
            src_offset: src_offset + bytes_a,
            dst: db.clone(),
            dst_offset: i * bytes_b,
            size: bytes_b,
        });
    }
    copies.retain(|c| !matches!(c, CopyOp::Buffer { size: 0, .. }));
    Ok(Dispatch::copies_only(
        "concat_channels_backward",
        copies,
        Cost { flops: 0, bytes: 8 * (n * (ca + cb) * hw) as u64 },
    ))
}

/// y [planes, 2H, 2W] = nearest 2x upsampling of x [planes, H, W] (planes = N * C).
pub fn upsample_nearest2x(
    ctx: &Context,
    planes: usize,
    h: usize,
    w: usize,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Dispatch> {
    upsample_nearest(ctx, planes, (h, w), (2 * h, 2 * w), x, y)
}

/// Nearest upsampling of each of `planes` planes from `from` (h, w) to `to` (oh, ow), as
/// F.interpolate(size=to, mode="nearest") picks: source row y h / oh (floored). A UNet whose
/// latents do not halve evenly upsamples to its skip's size this way.
pub fn upsample_nearest(
    ctx: &Context,
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Dispatch> {
    if h == 0 || w == 0 || oh < h || ow < w {
        bail_shape!("upsample: {h}x{w} to {oh}x{ow}");
    }
    check_len("upsample", "input", x, planes * h * w)?;
    let len = planes * oh * ow;
    let p = Params {
        len: len as u32,
        h: h as u32,
        w: w as u32,
        oh: oh as u32,
        ow: ow as u32,
        ..Default::default()
    };
    launch(ctx, &UPSAMPLE, p, x, None, y, len + planes * h * w)
}

/// dx = dy * SiLU'(x) over `len` elements.
pub fn silu_backward(
    ctx: &Context,
    len: usize,
    x: &wgpu::Buffer,
    dy: &wgpu::Buffer,
    dx: &wgpu::Buffer,
) -> Result<Dispatch> {
    check_len("silu backward", "x", x, len)?;
    check_len("silu backward", "dy", dy, len)?;
    let p = Params { len: len as u32, ..Default::default() };
    launch(ctx, &SILU_BACKWARD, p, x, Some(dy), dx, 3 * len)
}

/// dx [planes, H, W] = the sum of each pixel's 2x2 block of dy [planes, 2H, 2W].
pub fn upsample_nearest2x_backward(
    ctx: &Context,
    planes: usize,
    h: usize,
    w: usize,
    dy: &wgpu::Buffer,
    dx: &wgpu::Buffer,
) -> Result<Dispatch> {
    let len = planes * h * w;
    check_len("upsample backward", "dy", dy, 4 * len)?;
    let p = Params { len: len as u32, h: h as u32, w: w as u32, ..Default::default() };
    launch(ctx, &UPSAMPLE_BACKWARD, p, dy, None, dx, 5 * len)
}

/// d pred = f32(2 / mean_over) * (pred - target) over `len` values: the gradient of `F.mse_loss`
/// (mean) when `mean_over` = `len`; a micro-batch of a larger batch passes the whole batch's count.
pub fn mse_grad(
    ctx: &Context,
    len: usize,
    mean_over: usize,
    pred: &wgpu::Buffer,
    target: &wgpu::Buffer,
    grad: &wgpu::Buffer,
) -> Result<Dispatch> {
    check_len("mse gradient", "prediction", pred, len)?;
    check_len("mse gradient", "target", target, len)?;
    if mean_over < len {
        bail_shape!("mse gradient: a mean over {mean_over} values of {len}");
    }
    let p = Params { len: len as u32, alpha: mse_grad_scale(mean_over), ..Default::default() };
    launch(ctx, &MSE_GRAD, p, pred, Some(target), grad, 3 * len)
}

/// 2 / len rounded to f32 once, as PyTorch's mse_loss backward scales.
fn mse_grad_scale(len: usize) -> f32 {
    (2.0 / len as f64) as f32
}

pub fn reference_silu_backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
    x.iter()
        .zip(dy)
        .map(|(&x, &g)| {
            let (x, s) = (x as f64, 1.0 / (1.0 + (-x as f64).exp()));
            (g as f64 * s * (1.0 + x * (1.0 - s))) as f32
        })
        .collect()
}

pub fn reference_upsample_backward(planes: usize, h: usize, w: usize, dy: &[f32]) -> Vec<f32> {
    let mut dx = vec![0.0f32; planes * h * w];
    for p in 0..planes {
        for y in 0..h {
            for x in 0..w {
                let at = |a: usize, b: usize| dy[(p * 2 * h + 2 * y + a) * 2 * w + 2 * x + b] as f64;
                dx[(p * h + y) * w + x] = (at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1)) as f32;
            }
        }
    }
    dx
}

/// The same f32 arithmetic as the kernel (and PyTorch): the difference, then one product.
pub fn reference_mse_grad(pred: &[f32], target: &[f32], mean_over: usize) -> Vec<f32> {
    let scale = mse_grad_scale(mean_over);
    pred.iter().zip(target).map(|(&p, &t)| scale * (p - t)).collect()
}

pub fn reference_silu(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| (v as f64 / (1.0 + (-v as f64).exp())) as f32).collect()
}

pub fn reference_add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

pub fn reference_affine(alpha: f32, beta: f32, x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| (v as f64 * alpha as f64 + beta as f64) as f32).collect()
}

pub fn reference_concat(n: usize, ca: usize, cb: usize, hw: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut y = Vec::with_capacity(n * (ca + cb) * hw);
    for i in 0..n {
        y.extend_from_slice(&a[i * ca * hw..(i + 1) * ca * hw]);
        y.extend_from_slice(&b[i * cb * hw..(i + 1) * cb * hw]);
    }
    y
}

pub fn reference_upsample(planes: usize, h: usize, w: usize, x: &[f32]) -> Vec<f32> {
    reference_upsample_to(planes, (h, w), (2 * h, 2 * w), x)
}

/// `upsample_nearest`'s reference: PyTorch's nearest index, floor(dst * in / out).
pub fn reference_upsample_to(
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    x: &[f32],
) -> Vec<f32> {
    let mut y = vec![0.0; planes * oh * ow];
    for p in 0..planes {
        for oy in 0..oh {
            for ox in 0..ow {
                y[(p * oh + oy) * ow + ox] = x[(p * h + oy * h / oh) * w + ox * w / ow];
            }
        }
    }
    y
}

/// Which GELU: transformers' "gelu" (exact, with erf: PyTorch's default) or "quick_gelu"
/// (CLIP's x sigmoid(1.702 x)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gelu {
    Erf,
    Quick,
}

impl Gelu {
    fn mode(self) -> u32 {
        match self {
            Gelu::Erf => 0,
            Gelu::Quick => 1,
        }
    }

    /// The activation in f64.
    pub fn reference(self, x: f64) -> f64 {
        match self {
            Gelu::Erf => 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)),
            Gelu::Quick => x / (1.0 + (-1.702 * x).exp()),
        }
    }
}

/// y = gelu(x) over `len` elements.
pub fn gelu(ctx: &Context, kind: Gelu, len: usize, x: &wgpu::Buffer, y: &wgpu::Buffer) -> Result<Dispatch> {
    check_len("gelu", "input", x, len)?;
    let p = Params { len: len as u32, mode: kind.mode(), ..Default::default() };
    launch(ctx, &GELU, p, x, None, y, 2 * len)
}

/// GEGLU: x [n, 2c, hw] (values, then gates, along the channels) to y [n, c, hw] = value *
/// gelu(gate).
pub fn geglu(
    ctx: &Context,
    kind: Gelu,
    n: usize,
    c: usize,
    hw: usize,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Dispatch> {
    let len = n * c * hw;
    check_len("geglu", "input", x, 2 * len)?;
    let p = Params { len: len as u32, mode: kind.mode(), h: (c * hw) as u32, ..Default::default() };
    launch(ctx, &GEGLU, p, x, None, y, 3 * len)
}

/// GEGLU's reference.
pub fn reference_geglu(kind: Gelu, n: usize, c: usize, hw: usize, x: &[f32]) -> Vec<f32> {
    let half = c * hw;
    (0..n * half)
        .map(|i| {
            let v = (i / half) * 2 * half + i % half;
            (x[v] as f64 * kind.reference(x[v + half] as f64)) as f32
        })
        .collect()
}
