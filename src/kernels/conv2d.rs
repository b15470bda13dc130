//! conv2d (shaders/conv2d.wgsl): NCHW implicit GEMM with a fused bias / channel-add / residual /
//! scale epilogue, and its CPU reference.

use crate::gpu::{Binding, Context, Cost, Dispatch, KernelSpec};
use crate::kernels::{check_len, grid_1d, groups, split_count, split_scratch, use_subgroups};
pub use crate::kernels::{Launch, Variant};
use crate::{bail_shape, Result};

/// Both kernels read the input and the packed weights as texels (see `gpu::texels`).
pub(crate) const BINDINGS: &[Binding] = &[
    Binding::Texels,
    Binding::Texels,
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::Write,
    Binding::Uniform,
];
static SPEC: KernelSpec = KernelSpec { shader: &crate::shaders::CONV2D, entry: "conv2d", bindings: BINDINGS };
/// The same convolution sharing weights across a subgroup (conv2d_subgroup.wgsl).
static SPEC_SUBGROUP: KernelSpec =
    KernelSpec { shader: &crate::shaders::CONV2D_SUBGROUP, entry: "conv2d", bindings: BINDINGS };
/// Split-K's second pass: sums the splits' partial outputs and applies the epilogue.
static SPEC_REDUCE: KernelSpec = KernelSpec {
    shader: &crate::shaders::CONV2D_REDUCE,
    entry: "conv2d_reduce",
    bindings: &[Binding::Read, Binding::Read, Binding::Read, Binding::Read, Binding::Write, Binding::Uniform],
};

/// Zero padding on each side. diffusers' `Downsample2D(padding=0)` pads only right and bottom.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Padding {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Padding {
    pub fn same(p: usize) -> Self {
        Self { top: p, bottom: p, left: p, right: p }
    }
    /// Pad right and bottom by `p` only.
    pub fn right_bottom(p: usize) -> Self {
        Self { top: 0, bottom: p, left: 0, right: p }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dShape {
    pub n: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: Padding,
}

impl Conv2dShape {
    /// Output height and width, or an error when the kernel does not fit the padded input.
    pub fn out_hw(&self) -> Result<(usize, usize)> {
        let ph = self.h + self.pad.top + self.pad.bottom;
        let pw = self.w + self.pad.left + self.pad.right;
        if self.stride == 0 || self.kh == 0 || self.kw == 0 || self.kh > ph || self.kw > pw {
            bail_shape!(
                "conv2d: kernel {}x{} stride {} does not fit input {}x{} padded to {ph}x{pw}",
                self.kh,
                self.kw,
                self.stride,
                self.h,
                self.w
            );
        }
        Ok(((ph - self.kh) / self.stride + 1, (pw - self.kw) / self.stride + 1))
    }

    pub fn out_len(&self) -> Result<usize> {
        let (ho, wo) = self.out_hw()?;
        Ok(self.n * self.cout * ho * wo)
    }

    pub(crate) fn cout4(&self) -> usize {
        self.cout.div_ceil(4)
    }

    pub fn packed_weight_len(&self) -> usize {
        self.kh * self.kw * self.cin * self.cout4() * 4
    }

    pub fn flops(&self) -> u64 {
        let (ho, wo) = self.out_hw().unwrap_or((0, 0));
        2 * (self.n * self.cout * ho * wo * self.cin * self.kh * self.kw) as u64
    }
}

/// Every (PyTorch index [Cout, Cin, KH, KW], packed index [KH*KW, Cin, Cout padded to 4]) pair.
fn weight_indices(cout: usize, cin: usize, kh: usize, kw: usize) -> impl Iterator<Item = (usize, usize)> {
    let cout_pad = cout.div_ceil(4) * 4;
    (0..cout * cin * kh * kw).map(move |i| {
        let (x, y, ci, co) = (i % kw, i / kw % kh, i / (kw * kh) % cin, i / (kw * kh * cin));
        (i, ((y * kw + x) * cin + ci) * cout_pad + co)
    })
}

/// Repacks a PyTorch weight [Cout, Cin, KH, KW] to the kernel's [KH*KW, Cin, Cout padded to 4].
pub fn pack_weight(w: &[f32], cout: usize, cin: usize, kh: usize, kw: usize) -> Result<Vec<f32>> {
    if w.len() != cout * cin * kh * kw {
        bail_shape!("conv2d weight: {} values for [{cout}, {cin}, {kh}, {kw}]", w.len());
    }
    let mut packed = vec![0.0f32; kh * kw * cin * cout.div_ceil(4) * 4];
    for (i, p) in weight_indices(cout, cin, kh, kw) {
        packed[p] = w[i];
    }
    Ok(packed)
}

/// The inverse of `pack_weight` (for `check` runs, which read weights back from the device).
pub fn unpack_weight(packed: &[f32], cout: usize, cin: usize, kh: usize, kw: usize) -> Result<Vec<f32>> {
    if packed.len() != kh * kw * cin * cout.div_ceil(4) * 4 {
        bail_shape!("conv2d packed weight: {} values for [{cout}, {cin}, {kh}, {kw}]", packed.len());
    }
    Ok(weight_indices(cout, cin, kh, kw).map(|(_, p)| packed[p]).collect())
}

/// What the epilogue adds; absent inputs are not read.
#[derive(Clone, Copy, Debug)]
pub struct Epilogue<'a> {
    /// [Cout]
    pub bias: Option<&'a wgpu::Buffer>,
    /// [N, Cout], added to every pixel of (n, c): the time embedding of a resnet block.
    pub channel_add: Option<&'a wgpu::Buffer>,
    /// Same shape as the output.
    pub residual: Option<&'a wgpu::Buffer>,
    /// Multiplies the sum (1 / output_scale_factor).
    pub scale: f32,
}

impl Default for Epilogue<'_> {
    fn default() -> Self {
        Self { bias: None, channel_add: None, residual: None, scale: 1.0 }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
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
    split_chans: u32,
    split_len: u32,
}

impl Params {
    /// The parameters of shape `s` with output map `out_hw` (the kernels' Params, conv2d_io.wgsl).
    pub(crate) fn new(
        s: &Conv2dShape,
        (hout, wout): (usize, usize),
        scale: f32,
        split: Option<Split>,
    ) -> Self {
        Params {
            n: s.n as u32,
            cin: s.cin as u32,
            h: s.h as u32,
            w: s.w as u32,
            cout: s.cout as u32,
            hout: hout as u32,
            wout: wout as u32,
            cout4: s.cout4() as u32,
            kh: s.kh as u32,
            kw: s.kw as u32,
            stride: s.stride as u32,
            pad_top: s.pad.top as u32,
            pad_left: s.pad.left as u32,
            scale,
            split_chans: split.map_or(0, |sp| sp.chans as u32),
            split_len: split.map_or(0, |sp| sp.len as u32),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ReduceParams {
    len: u32,
    splits: u32,
    split_len: u32,
    hw: u32,
    cout: u32,
    groups_x: u32,
    scale: f32,
    _pad: u32,
}

/// Split-K: the input channels of each split, and the floats between two splits' partial outputs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Split {
    splits: usize,
    chans: usize,
    len: usize,
}

/// A split keeps at least this many steps (input channels x taps) of the reduction loop.
const MIN_SPLIT_STEPS: usize = 64;

/// conv2d of `x` [N, Cin, H, W] with a packed weight (see `pack_weight`) into `out` [N, Cout, Ho, Wo],
/// launched as `launch` says: one dispatch, or two for split-K.
pub fn conv2d(
    ctx: &Context,
    launch: Launch,
    s: &Conv2dShape,
    x: &wgpu::Buffer,
    packed_weight: &wgpu::Buffer,
    epilogue: &Epilogue,
    out: &wgpu::Buffer,
) -> Result<Vec<Dispatch>> {
    let splits = match launch {
        Launch::Auto => auto_splits(ctx, s)?,
        Launch::One(variant) => {
            return Ok(vec![one(ctx, variant, s, x, packed_weight, epilogue, out, None)?])
        }
        Launch::Split(n) => return split_k(ctx, s, x, packed_weight, epilogue, out, n),
    };
    match splits {
        n if n > 1 => split_k(ctx, s, x, packed_weight, epilogue, out, n),
        _ => Ok(vec![one(ctx, Variant::Auto, s, x, packed_weight, epilogue, out, None)?]),
    }
}

/// How many input-channel splits `conv2d` uses: 1 on CPU drivers (their few cores are busy with
/// any grid) and where the subgroup kernel is not used; on GPUs, enough to keep a large GPU busy
/// on small maps, each split keeping MIN_SPLIT_STEPS loop steps (see `split_count`).
pub fn auto_splits(ctx: &Context, s: &Conv2dShape) -> Result<usize> {
    let (hout, wout) = s.out_hw()?;
    if ctx.is_cpu() || !use_subgroups(ctx, Variant::Auto, s.cout4() >= 8, "conv2d")? {
        return Ok(1);
    }
    let invocations = (s.n * hout * wout).div_ceil(4) * s.cout4().div_ceil(8);
    Ok(split_count(invocations, s.cin * s.kh * s.kw, MIN_SPLIT_STEPS))
}

/// conv2d as split-K on the subgroup kernel: `splits` dispatches' worth of workgroups each sum a
/// range of input channels into a shared scratch buffer, then conv2d_reduce.wgsl sums the ranges
/// and applies the epilogue.
fn split_k(
    ctx: &Context,
    s: &Conv2dShape,
    x: &wgpu::Buffer,
    packed_weight: &wgpu::Buffer,
    epilogue: &Epilogue,
    out: &wgpu::Buffer,
    splits: usize,
) -> Result<Vec<Dispatch>> {
    let (hout, wout) = s.out_hw()?;
    if s.n == 0 || s.cin == 0 || s.cout == 0 {
        bail_shape!("conv2d: empty shape {s:?}");
    }
    let out_len = s.n * s.cout * hout * wout;
    let chans = s.cin.div_ceil(splits.clamp(1, s.cin));
    let split = Split { splits: s.cin.div_ceil(chans), chans, len: out_len.div_ceil(4) * 4 };
    check_epilogue(s, out_len, epilogue)?;
    check_len("conv2d", "output", out, out_len)?;
    let scratch_floats = split.splits * split.len;
    let scratch = split_scratch(ctx, "conv2d", scratch_floats)?;
    let partial = Epilogue { bias: None, channel_add: None, residual: None, scale: 1.0 };
    let first = one(ctx, Variant::Subgroup, s, x, packed_weight, &partial, &scratch, Some(split))?;
    let workgroups = grid_1d(ctx, out_len, 256);
    let params = ctx.uniform(&ReduceParams {
        len: out_len as u32,
        splits: split.splits as u32,
        split_len: split.len as u32,
        hw: (hout * wout) as u32,
        cout: s.cout as u32,
        groups_x: workgroups[0],
        scale: epilogue.scale,
        _pad: 0,
    });
    let dummy = &ctx.dummy;
    let reduce = ctx.dispatch(
        &SPEC_REDUCE,
        &[
            ("HAS_BIAS", epilogue.bias.is_some() as u8 as f64),
            ("HAS_CHANNEL_ADD", epilogue.channel_add.is_some() as u8 as f64),
            ("HAS_RESIDUAL", epilogue.residual.is_some() as u8 as f64),
        ],
        &[
            &scratch,
            epilogue.bias.unwrap_or(dummy),
            epilogue.channel_add.unwrap_or(dummy),
            epilogue.residual.unwrap_or(dummy),
            out,
            &params,
        ],
        workgroups,
        Cost { flops: scratch_floats as u64, bytes: 4 * (scratch_floats + out_len) as u64 },
    )?;
    Ok(vec![first, reduce])
}

fn check_epilogue(s: &Conv2dShape, out_len: usize, epilogue: &Epilogue) -> Result<()> {
    if let Some(b) = epilogue.bias {
        check_len("conv2d", "bias", b, s.cout)?;
    }
    if let Some(b) = epilogue.channel_add {
        check_len("conv2d", "channel add", b, s.n * s.cout)?;
    }
    if let Some(b) = epilogue.residual {
        check_len("conv2d", "residual", b, out_len)?;
    }
    Ok(())
}

/// One conv2d dispatch of `variant`; `split` for split-K's first pass.
#[allow(clippy::too_many_arguments)]
fn one(
    ctx: &Context,
    variant: Variant,
    s: &Conv2dShape,
    x: &wgpu::Buffer,
    packed_weight: &wgpu::Buffer,
    epilogue: &Epilogue,
    out: &wgpu::Buffer,
    split: Option<Split>,
) -> Result<Dispatch> {
    let (hout, wout) = s.out_hw()?;
    if s.n == 0 || s.cin == 0 || s.cout == 0 {
        bail_shape!("conv2d: empty shape {s:?}");
    }
    let (in_len, out_len) = (s.n * s.cin * s.h * s.w, s.n * s.cout * hout * wout);
    check_len("conv2d", "input", x, in_len)?;
    check_len("conv2d", "weight", packed_weight, s.packed_weight_len())?;
    check_len("conv2d", "output", out, split.map_or(out_len, |sp| sp.splits * sp.len))?;
    check_epilogue(s, out_len, epilogue)?;
    let cout4 = s.cout4();
    let npix = s.n * hout * wout;
    // With subgroups of 8 or more lanes and at least 8 channel blocks, the subgroup kernel shares
    // each weight load across the subgroup: 4 pixels x 32 channels per invocation. Otherwise the
    // portable kernel: 8 pixels x 8 channels. A workgroup is a row of invocations over pixels, one
    // row per channel group; small maps get narrow workgroups (invocations past the last pixel still
    // run the loops, since neither kernel exits early).
    let subgroups = use_subgroups(ctx, variant, cout4 >= 8, "conv2d")?;
    let (spec, pix_per, blocks_per) = if subgroups { (&SPEC_SUBGROUP, 4, 8) } else { (&SPEC, 8, 2) };
    let wg_x = npix.div_ceil(pix_per).next_power_of_two().clamp(8, 64);
    let params = ctx.uniform(&Params::new(s, (hout, wout), epilogue.scale, split));
    let dummy = &ctx.dummy;
    let mut overrides = vec![
        ("WG_X", wg_x as f64),
        ("HAS_BIAS", epilogue.bias.is_some() as u8 as f64),
        ("HAS_CHANNEL_ADD", epilogue.channel_add.is_some() as u8 as f64),
        ("HAS_RESIDUAL", epilogue.residual.is_some() as u8 as f64),
        ("ALIGNED", (hout * wout).is_multiple_of(4) as u8 as f64),
    ];
    if subgroups {
        // Stride 1 over whole-texel rows: a lane's 4 pixels are 4 consecutive columns of one row
        // and read 4 consecutive input values per tap (measured: ref-conv2d-b8 ~28% faster).
        let rows4 = s.stride == 1 && s.w.is_multiple_of(4) && wout.is_multiple_of(4);
        overrides.push(("ROWS4", rows4 as u8 as f64));
        overrides.push(("SPLIT", split.is_some() as u8 as f64));
    } else if split.is_some() {
        bail_shape!("conv2d: split-K needs the subgroup kernel");
    }
    let bytes =
        4 * (in_len + s.packed_weight_len() + out_len * (1 + epilogue.residual.is_some() as usize)) as u64;
    ctx.dispatch_texels(
        spec,
        &overrides,
        &[
            x,
            packed_weight,
            epilogue.bias.unwrap_or(dummy),
            epilogue.channel_add.unwrap_or(dummy),
            epilogue.residual.unwrap_or(dummy),
            out,
            &params,
        ],
        &[in_len, s.packed_weight_len()],
        [groups(npix, pix_per * wg_x), groups(cout4, blocks_per), split.map_or(1, |sp| sp.splits as u32)],
        Cost { flops: s.flops(), bytes },
    )
}

/// Plain reference: `weight` in PyTorch layout [Cout, Cin, KH, KW], optional epilogue inputs as slices.
pub fn reference(
    s: &Conv2dShape,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    channel_add: Option<&[f32]>,
    residual: Option<&[f32]>,
    scale: f32,
) -> Vec<f32> {
    let (ho, wo) = s.out_hw().expect("reference: valid shape"); // ok: test-only helper
    let mut out = vec![0.0f32; s.n * s.cout * ho * wo];
    for n in 0..s.n {
        for co in 0..s.cout {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut acc = 0.0f64;
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
                                let xv = x[((n * s.cin + ci) * s.h + iy as usize) * s.w + ix as usize];
                                let wv = weight[((co * s.cin + ci) * s.kh + ky) * s.kw + kx];
                                acc += xv as f64 * wv as f64;
                            }
                        }
                    }
                    let o = ((n * s.cout + co) * ho + oy) * wo + ox;
                    acc += bias.map_or(0.0, |b| b[co] as f64);
                    acc += channel_add.map_or(0.0, |c| c[n * s.cout + co] as f64);
                    acc += residual.map_or(0.0, |r| r[o] as f64);
                    out[o] = (acc * scale as f64) as f32;
                }
            }
        }
    }
    out
}
