//! conv2d's backward (shaders/conv2d_backward.wgsl and the forward kernels), beside its CPU
//! reference.
//!
//! The input gradient is conv_transpose2d, run as a stride-1 forward conv (the fast kernel)
//! over dy dilated by the stride, with the weight mirrored per tap and its channel axes swapped
//! (both done on the device, since weights change as they train), padded by k - 1 - pad and, on
//! the bottom and right, by the output padding (the input rows the forward's last window left
//! over). The forward's output scale is the backward's epilogue scale.

use crate::gpu::{Binding, Context, Cost, Dispatch, KernelSpec};
use crate::kernels::conv2d::{self, Conv2dShape, Epilogue, Launch, Padding};
use crate::kernels::{check_len, grid_1d};
use crate::{bail_shape, Result};

const BINDINGS: &[Binding] = &[Binding::Read, Binding::Write, Binding::Uniform];
static FLIP: KernelSpec =
    KernelSpec { shader: &crate::shaders::CONV2D_BACKWARD, entry: "flip_weight", bindings: BINDINGS };
static DILATE: KernelSpec =
    KernelSpec { shader: &crate::shaders::CONV2D_BACKWARD, entry: "dilate", bindings: BINDINGS };

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    kh: u32,
    kw: u32,
    cin: u32,
    cout: u32,
    cout_pad: u32,
    cin_pad: u32,
    stride: u32,
    ho: u32,
    wo: u32,
    hd: u32,
    wd: u32,
    groups_x: u32,
    _pad: [u32; 3],
}

/// A buffer owned by the dispatches that use it (kept alive by their bind groups).
fn scratch(ctx: &Context, label: &str, floats: usize) -> wgpu::Buffer {
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: (floats.div_ceil(4) * 16).max(16) as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
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

/// dx [N, Cin, H, W] = d loss / d x of `conv2d` with shape `s` and packed weight `packed_weight`,
/// given dy [N, Cout, Ho, Wo] = d loss / d output and the forward's output `scale`.
pub fn conv2d_backward_input(
    ctx: &Context,
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
    let t = transposed_shape(s)?;
    let mut out = vec![];
    let flipped = scratch(ctx, "conv2d backward: flipped weight", t.packed_weight_len());
    let base = Params {
        kh: s.kh as u32,
        kw: s.kw as u32,
        cin: s.cin as u32,
        cout: s.cout as u32,
        cout_pad: (s.cout.div_ceil(4) * 4) as u32,
        cin_pad: (s.cin.div_ceil(4) * 4) as u32,
        stride: s.stride as u32,
        ho: ho as u32,
        wo: wo as u32,
        hd: t.h as u32,
        wd: t.w as u32,
        ..Default::default()
    };
    out.push(launch(
        ctx,
        &FLIP,
        Params { len: t.packed_weight_len() as u32, ..base },
        packed_weight,
        &flipped,
    )?);
    let dilated;
    let src = if s.stride == 1 {
        dy
    } else {
        let len = s.n * s.cout * t.h * t.w;
        dilated = scratch(ctx, "conv2d backward: dilated dy", len);
        out.push(launch(ctx, &DILATE, Params { len: len as u32, ..base }, dy, &dilated)?);
        &dilated
    };
    let epilogue = Epilogue { bias: None, channel_add: None, residual: None, scale };
    out.extend(conv2d::conv2d(ctx, Launch::Auto, &t, src, &flipped, &epilogue, dx)?);
    Ok(out)
}

/// Plain reference of the input gradient, straight from the forward's sum, in f64: `weight` in
/// PyTorch layout [Cout, Cin, KH, KW].
pub fn reference_backward_input(s: &Conv2dShape, dy: &[f32], weight: &[f32], scale: f32) -> Vec<f32> {
    let (ho, wo) = s.out_hw().expect("reference: valid shape"); // ok: test-only helper
    let mut dx = vec![0.0f64; s.n * s.cin * s.h * s.w];
    for n in 0..s.n {
        for co in 0..s.cout {
            for oy in 0..ho {
                for ox in 0..wo {
                    let g = dy[((n * s.cout + co) * ho + oy) * wo + ox] as f64 * scale as f64;
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
                                let w = weight[((co * s.cin + ci) * s.kh + ky) * s.kw + kx] as f64;
                                dx[((n * s.cin + ci) * s.h + iy as usize) * s.w + ix as usize] += g * w;
                            }
                        }
                    }
                }
            }
        }
    }
    dx.into_iter().map(|v| v as f32).collect()
}
