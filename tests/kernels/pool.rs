use std::sync::Arc;

use wgpu_diffusion::gpu::BufferPool;

use crate::ctx;

#[test]
fn dropped_buffers_return_to_the_pool_and_are_reused() {
    let pool = Arc::new(BufferPool::new(ctx().device.clone()));
    let a = pool.acquire(1000);
    let size = a.size();
    assert!(size >= 1000);
    let first: wgpu::Buffer = (*a).clone();
    drop(a);
    assert_eq!(pool.free_bytes(), size);
    let b = pool.acquire(1000);
    assert!(*b == first, "the same buffer is handed out again");
    assert_eq!(pool.free_bytes(), 0);
    let c = pool.acquire(1000);
    assert!(*c != first, "a buffer in use is not handed out twice");
}

#[test]
fn pooled_tensors_start_at_zero() {
    let shape = [12_345, 7];
    let t = ctx().upload(&vec![5.0; 12_345 * 7], &shape).expect("upload");
    drop(t);
    let again = ctx().zeros(&shape).expect("alloc");
    assert!(ctx().read(&again).expect("read").iter().all(|&v| v == 0.0), "reused buffers are cleared");
}

#[test]
fn pipelines_are_built_once_per_variant() {
    use wgpu_diffusion::gpu::{Binding, KernelSpec};
    static SPEC: KernelSpec = KernelSpec {
        shader: &wgpu_diffusion::shaders::MATMUL,
        entry: "matmul",
        bindings: &[Binding::Texels, Binding::Texels, Binding::Read, Binding::Write, Binding::Uniform],
    };
    let c = ctx();
    let (a, _) = c.pipelines.get(&c.device, &SPEC, &[("SILU", 1.0)]);
    let (b, _) = c.pipelines.get(&c.device, &SPEC, &[("SILU", 1.0)]);
    let (other, _) = c.pipelines.get(&c.device, &SPEC, &[("SILU", 0.0)]);
    assert!(a == b, "same overrides, same pipeline");
    assert!(a != other, "other overrides, another pipeline");
}

#[test]
fn texel_capacity_matches_what_fits() {
    // max_batch plans with max_texel_bytes; dispatches check fits_texels: they must agree.
    let c = ctx();
    let floats = (c.max_texel_bytes() / 4) as usize;
    assert!(c.fits_texels(floats));
    assert!(!c.fits_texels(floats + 1));
    assert!(c.max_texel_bytes() <= c.limits.max_texture_dimension_2d as u64 * 1024 * 16);
}
