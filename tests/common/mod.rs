//! Helpers shared by the GPU test binaries (included with `#[path]`).
#![allow(dead_code)]

use std::sync::OnceLock;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wgpu_diffusion::gpu::{Context, ContextOptions, Dispatch, Tensor};

pub const RTOL: f64 = 1e-4;

pub fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| match Context::new(&ContextOptions::default()) {
        Ok(c) => c,
        Err(e) => panic!("GPU tests need an adapter: {e}"),
    })
}

/// The batch sizes every launcher is tested at: one image, odd sizes on both sides of 8 (where
/// workgroups of 8 or 64 lanes stop dividing the grid), the default `sample` batch, and one past 32.
pub const BATCHES: [usize; 5] = [1, 7, 9, 16, 33];

/// The per-dimension workgroup limit of `spill_ctx`.
pub const SPILL_LIMIT: u32 = 4;

/// A second context on the same adapter whose `max_compute_workgroups_per_dimension` is lowered to
/// SPILL_LIMIT, so that 1-D launches of a few workgroups already spill into the grid's y dimension
/// (on a real device that takes more than 65535 workgroups). Its buffers are its own: use the
/// `_on` helpers with it.
pub fn spill_ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        let mut c = Context::new(&ContextOptions::default()).expect("GPU tests need an adapter");
        c.limits.max_compute_workgroups_per_dimension = SPILL_LIMIT;
        c
    })
}

pub fn upload_on(c: &Context, data: &[f32]) -> Tensor {
    c.upload(data, &[data.len()]).expect("upload")
}

/// NaN-filled, as `output`.
pub fn output_on(c: &Context, n: usize) -> Tensor {
    upload_on(c, &vec![f32::NAN; n])
}

pub fn read_on(c: &Context, t: &Tensor) -> Vec<f32> {
    c.read(t).expect("read back")
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Uniform values in [-1, 1).
pub fn random(r: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| r.random_range(-1.0f32..1.0)).collect()
}

pub fn upload(data: &[f32]) -> Tensor {
    upload_on(ctx(), data)
}

pub fn output(n: usize) -> Tensor {
    // Filled with NaN so an element the kernel forgets to write cannot pass.
    output_on(ctx(), n)
}

pub fn run(d: Dispatch) {
    ctx().run(&[d]);
}

pub fn read(t: &Tensor) -> Vec<f32> {
    read_on(ctx(), t)
}

/// Per-element check against a reference (see the module comment for the tolerance).
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (i, err) = wgpu_diffusion::graph::check::worst_error(got, want);
    assert!(
        err <= rtol,
        "{what}: element {i} is {} but the reference says {} (relative error {err:.2e} > {rtol:.0e})",
        got[i],
        want[i]
    );
}
