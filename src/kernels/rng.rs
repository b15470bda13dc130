//! Standard normal noise on the device (shaders/rng.wgsl): Philox4x32-10 + Box-Muller, keyed by
//! (seed, stream, substream, element) so any element can be regenerated alone, on any dispatch shape.

use crate::gpu::{Binding, Context, Cost, Dispatch, KernelSpec};
use crate::kernels::{check_len, grid_1d};
use crate::{bail_shape, Result};

static SPEC: KernelSpec = KernelSpec {
    shader: &crate::shaders::RNG,
    entry: "normal",
    bindings: &[Binding::Write, Binding::Read, Binding::Uniform],
};

static TIMESTEPS: KernelSpec = KernelSpec {
    shader: &crate::shaders::RNG,
    entry: "timesteps",
    bindings: &[Binding::Write, Binding::Read, Binding::Uniform, Binding::Write],
};

/// Which numbers: element e of stream s is a function of (seed, stream_base + s, substream + step, e).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NoiseKey {
    pub seed: u64,
    /// First stream (for example the first batch element).
    pub stream_base: u32,
    /// Sub-stream (for example the sampling step); the device-side step counter is added to it.
    pub substream: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    seed_lo: u32,
    seed_hi: u32,
    stream_base: u32,
    substream: u32,
    per_stream: u32,
    streams: u32,
    _pad: [u32; 2],
}

fn params(ctx: &Context, key: NoiseKey, streams: usize, per_stream: usize) -> wgpu::Buffer {
    ctx.uniform(&Params {
        seed_lo: key.seed as u32,
        seed_hi: (key.seed >> 32) as u32,
        stream_base: key.stream_base,
        substream: key.substream,
        per_stream: per_stream as u32,
        streams: streams as u32,
        _pad: [0; 2],
    })
}

/// Fills `out` [streams, per_stream] with N(0, 1) noise. `step_counter` (one u32 on the device) is
/// added to the substream; pass None for 0.
pub fn normal(
    ctx: &Context,
    key: NoiseKey,
    streams: usize,
    per_stream: usize,
    step_counter: Option<&wgpu::Buffer>,
    out: &wgpu::Buffer,
) -> Result<Dispatch> {
    let len = streams * per_stream;
    if len == 0 {
        bail_shape!("normal noise: empty output");
    }
    check_len("normal noise", "output", out, len)?;
    let params = params(ctx, key, streams, per_stream);
    ctx.dispatch(
        &SPEC,
        &[],
        &[out, step_counter.unwrap_or(&ctx.dummy), &params],
        grid_1d(ctx, streams * per_stream.div_ceil(4), 256),
        Cost { flops: 200 * len as u64, bytes: 4 * len as u64 },
    )
}

/// Training's timesteps: for image i of `batch`, t uniform in [0, `steps`) keyed by (seed,
/// stream_base, substream + step_counter[0], i), written as u32 indices and as f32 values (what
/// the noising and the embedding take). One invocation an image; `batch` within one dimension.
pub fn timesteps(
    ctx: &Context,
    key: NoiseKey,
    batch: usize,
    steps: usize,
    step_counter: &wgpu::Buffer,
    index: &wgpu::Buffer,
    value: &wgpu::Buffer,
) -> Result<Dispatch> {
    if batch == 0 || steps == 0 {
        bail_shape!("timesteps: {batch} images of {steps} steps");
    }
    let groups = batch.div_ceil(256);
    if groups > ctx.limits.max_compute_workgroups_per_dimension as usize {
        bail_shape!("timesteps: a batch of {batch} is over this device's grid");
    }
    check_len("timesteps", "indices", index, batch)?;
    check_len("timesteps", "values", value, batch)?;
    check_len("timesteps", "step counter", step_counter, 1)?;
    let params = params(ctx, key, batch, steps);
    ctx.dispatch(
        &TIMESTEPS,
        &[],
        &[value, step_counter, &params, index],
        [groups as u32, 1, 1],
        Cost { flops: 100 * batch as u64, bytes: 8 * batch as u64 },
    )
}

/// Reference of `timesteps`: the indices for the device counter's value `step`.
pub fn reference_timesteps(key: NoiseKey, step: u32, batch: usize, steps: usize) -> Vec<u32> {
    (0..batch as u32)
        .map(|i| {
            let counter = [i, key.stream_base, key.substream + step, 1];
            philox4x32_10(counter, [key.seed as u32, (key.seed >> 32) as u32])[0] % steps as u32
        })
        .collect()
}

/// Philox4x32-10 block function.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (counter, key);
    for _ in 0..10 {
        let p0 = 0xD251_1F53u64 * c[0] as u64;
        let p1 = 0xCD9E_8D57u64 * c[2] as u64;
        c = [(p1 >> 32) as u32 ^ c[1] ^ k[0], p1 as u32, (p0 >> 32) as u32 ^ c[3] ^ k[1], p0 as u32];
        k = [k[0].wrapping_add(0x9E37_79B9), k[1].wrapping_add(0xBB67_AE85)];
    }
    c
}

fn uniform01(bits: u32) -> f64 {
    ((bits >> 8) as f64 + 0.5) / 16_777_216.0
}

/// Reference: the same numbers on the CPU, in f64 before the final rounding.
pub fn reference(key: NoiseKey, step: u32, streams: usize, per_stream: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(streams * per_stream);
    for s in 0..streams {
        for e in 0..per_stream {
            let q = (e / 4) as u32;
            let counter = [q, key.stream_base + s as u32, key.substream + step, 0];
            let bits = philox4x32_10(counter, [key.seed as u32, (key.seed >> 32) as u32]);
            let pair = if e % 4 < 2 { 0 } else { 2 };
            let r = (-2.0 * uniform01(bits[pair]).ln()).sqrt();
            let a = std::f64::consts::PI * (2.0 * uniform01(bits[pair + 1]) - 1.0);
            out.push((if e % 2 == 0 { r * a.cos() } else { r * a.sin() }) as f32);
        }
    }
    out
}
