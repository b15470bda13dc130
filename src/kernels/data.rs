//! Training batches gathered from a dataset on the device (shaders/data.wgsl), by an index ring
//! read at the optimizer's step counter, so many steps run per submission; and its reference.

use crate::gpu::{Binding, Context, Cost, Dispatch, KernelSpec};
use crate::kernels::{check_len, grid_1d};
use crate::{bail_shape, Result};

static SPEC: KernelSpec = KernelSpec {
    shader: &crate::shaders::DATA,
    entry: "gather_images",
    bindings: &[Binding::Read, Binding::Read, Binding::Read, Binding::Write, Binding::Uniform],
};

static LABELS: KernelSpec = KernelSpec {
    shader: &crate::shaders::DATA,
    entry: "gather_labels",
    bindings: &[Binding::Read, Binding::Read, Binding::Read, Binding::Write, Binding::Uniform],
};

/// Bit 31 of an index entry: the image is mirrored left to right.
pub const FLIP: u32 = 1 << 31;

/// How the dataset's values are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pixels {
    /// 8-bit values packed four to a u32 (little-endian), scaled to [-1, 1] on the way.
    U8,
    /// f32 values in the model's range, used as they are.
    F32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    per_image: u32,
    width: u32,
    batch: u32,
    ring: u32,
    groups_x: u32,
    _pad: [u32; 3],
}

/// The shape of a gather: `batch` images of `per_image` values, rows `width` wide, from an index
/// ring of `ring` steps.
#[derive(Clone, Copy, Debug)]
pub struct Gather {
    pub pixels: Pixels,
    pub images: usize,
    pub per_image: usize,
    pub width: usize,
    pub batch: usize,
    pub ring: usize,
}

/// out [batch, per_image] = the images row `step_counter[0] % ring` of `indices` names.
pub fn gather_images(
    ctx: &Context,
    g: &Gather,
    images: &wgpu::Buffer,
    indices: &wgpu::Buffer,
    step_counter: &wgpu::Buffer,
    out: &wgpu::Buffer,
) -> Result<Dispatch> {
    if g.batch == 0 || g.per_image == 0 || g.ring == 0 || g.width == 0 || !g.per_image.is_multiple_of(g.width)
    {
        bail_shape!("gather: {g:?}");
    }
    let words = match g.pixels {
        Pixels::U8 => (g.images * g.per_image).div_ceil(4),
        Pixels::F32 => g.images * g.per_image,
    };
    check_len("gather", "images", images, words)?;
    check_len("gather", "index ring", indices, g.ring * g.batch)?;
    check_len("gather", "step counter", step_counter, 1)?;
    check_len("gather", "output", out, g.batch * g.per_image)?;
    let len = g.batch * g.per_image;
    let workgroups = grid_1d(ctx, len, 256);
    let params = ctx.uniform(&Params {
        per_image: g.per_image as u32,
        width: g.width as u32,
        batch: g.batch as u32,
        ring: g.ring as u32,
        groups_x: workgroups[0],
        _pad: [0; 3],
    });
    let mode = match g.pixels {
        Pixels::U8 => 0.0,
        Pixels::F32 => 1.0,
    };
    ctx.dispatch(
        &SPEC,
        &[("MODE", mode)],
        &[images, indices, step_counter, out, &params],
        workgroups,
        Cost { flops: 3 * len as u64, bytes: 5 * len as u64 },
    )
}

/// out [batch] = row `step_counter[0] % ring` of the label ring [ring, batch] (f32 class ids).
pub fn gather_labels(
    ctx: &Context,
    batch: usize,
    ring: usize,
    labels: &wgpu::Buffer,
    step_counter: &wgpu::Buffer,
    out: &wgpu::Buffer,
) -> Result<Dispatch> {
    if batch == 0 || ring == 0 {
        bail_shape!("gather labels: batch {batch}, ring {ring}");
    }
    check_len("gather labels", "label ring", labels, ring * batch)?;
    check_len("gather labels", "step counter", step_counter, 1)?;
    check_len("gather labels", "output", out, batch)?;
    let workgroups = grid_1d(ctx, batch, 256);
    let params = ctx.uniform(&Params {
        per_image: 1,
        width: 1,
        batch: batch as u32,
        ring: ring as u32,
        groups_x: workgroups[0],
        _pad: [0; 3],
    });
    ctx.dispatch(
        &LABELS,
        &[],
        &[&ctx.dummy, labels, step_counter, out, &params],
        workgroups,
        Cost { flops: 0, bytes: 8 * batch as u64 },
    )
}

/// Reference of `gather_labels` for the ring's row `row`.
pub fn reference_labels(labels: &[f32], batch: usize, row: usize) -> Vec<f32> {
    labels[row * batch..(row + 1) * batch].to_vec()
}

/// The value an 8-bit pixel becomes, as torchvision's ToTensor then Normalize(0.5, 0.5).
pub fn scale_u8(b: u8) -> f32 {
    (b as f32 / 255.0 - 0.5) / 0.5
}

/// Reference of `gather_images` for the index ring's row `row`, from the dataset's values (bytes
/// widened to f32 for `Pixels::U8`, scaled here).
pub fn reference(g: &Gather, values: &[f32], indices: &[u32], row: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(g.batch * g.per_image);
    for &entry in &indices[row * g.batch..(row + 1) * g.batch] {
        let img = (entry & !FLIP) as usize;
        for e in 0..g.per_image {
            let x = e % g.width;
            let col = if entry & FLIP != 0 { g.width - 1 - x } else { x };
            let v = values[img * g.per_image + e - x + col];
            out.push(match g.pixels {
                Pixels::U8 => scale_u8(v as u8),
                Pixels::F32 => v,
            });
        }
    }
    out
}

/// 8-bit values packed four to a word, as the kernel reads them.
pub fn pack_u8(bytes: &[u8]) -> Vec<u32> {
    bytes.chunks(4).map(|c| c.iter().enumerate().fold(0u32, |w, (k, &b)| w | (b as u32) << (8 * k))).collect()
}
