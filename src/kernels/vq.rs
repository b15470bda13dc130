//! VQModel's nearest-code quantizer (shaders/vq.wgsl) and its reference.

use crate::gpu::{Binding, Context, Cost, Dispatch, KernelSpec};
use crate::kernels::{check_len, grid_1d};
use crate::{bail_shape, Result};

static SPEC: KernelSpec = KernelSpec {
    shader: &crate::shaders::VQ,
    entry: "quantize",
    bindings: &[Binding::Read, Binding::Read, Binding::Write, Binding::Write, Binding::Uniform],
};

/// `batch` latents of `dim` channels over `plane` (H * W) pixels, against `codes` entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VqShape {
    pub batch: usize,
    pub dim: usize,
    pub plane: usize,
    pub codes: usize,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    pixels: u32,
    plane: u32,
    dim: u32,
    codes: u32,
}

/// quantized [B, D, H, W] = z + (e - z) for each pixel's nearest code e; indices [B, H, W] its
/// index as f32.
pub fn quantize(
    ctx: &Context,
    s: &VqShape,
    z: &wgpu::Buffer,
    codebook: &wgpu::Buffer,
    quantized: &wgpu::Buffer,
    indices: &wgpu::Buffer,
) -> Result<Dispatch> {
    if s.batch == 0 || s.dim == 0 || s.plane == 0 || s.codes == 0 {
        bail_shape!("vq quantize: {s:?}");
    }
    let (pixels, len) = (s.batch * s.plane, s.batch * s.dim * s.plane);
    check_len("vq quantize", "latents", z, len)?;
    check_len("vq quantize", "codebook", codebook, s.codes * s.dim)?;
    check_len("vq quantize", "output", quantized, len)?;
    check_len("vq quantize", "indices", indices, pixels)?;
    let params = ctx.uniform(&Params {
        pixels: pixels as u32,
        plane: s.plane as u32,
        dim: s.dim as u32,
        codes: s.codes as u32,
    });
    ctx.dispatch(
        &SPEC,
        &[],
        &[z, codebook, quantized, indices, &params],
        grid_1d(ctx, pixels, 64),
        Cost { flops: (3 * pixels * s.codes * s.dim) as u64, bytes: (8 * len + 4 * s.codes * s.dim) as u64 },
    )
}

/// Reference: (quantized, indices), distances in f64 (a near-tie may pick the other code than the
/// f32 kernel; tests keep codes apart).
pub fn reference(s: &VqShape, z: &[f32], codebook: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut q = vec![0.0; z.len()];
    let mut idx = vec![0.0; s.batch * s.plane];
    for b in 0..s.batch {
        for p in 0..s.plane {
            let at = |d: usize| b * s.dim * s.plane + d * s.plane + p;
            let dist = |j: usize| -> f64 {
                (0..s.dim).map(|d| (z[at(d)] as f64 - codebook[j * s.dim + d] as f64).powi(2)).sum()
            };
            let best = (0..s.codes).fold(0, |best, j| if dist(j) < dist(best) { j } else { best });
            for d in 0..s.dim {
                let v = z[at(d)];
                q[at(d)] = v + (codebook[best * s.dim + d] - v);
            }
            idx[b * s.plane + p] = best as f32;
        }
    }
    (q, idx)
}
