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

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Uniform values in [-1, 1).
pub fn random(r: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| r.random_range(-1.0f32..1.0)).collect()
}

pub fn upload(data: &[f32]) -> Tensor {
    ctx().upload(data, &[data.len()]).expect("upload")
}

pub fn output(n: usize) -> Tensor {
    // Filled with NaN so an element the kernel forgets to write cannot pass.
    upload(&vec![f32::NAN; n])
}

pub fn run(d: Dispatch) {
    ctx().run(&[d]);
}

pub fn read(t: &Tensor) -> Vec<f32> {
    ctx().read(t).expect("read back")
}

/// Per-element check against a reference (see the module comment for the tolerance).
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let rms = (want.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / want.len().max(1) as f64).sqrt();
    let mut worst = (0usize, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w as f64).abs() / ((w as f64).abs() + rms + 1e-30);
        let err = if err.is_nan() { f64::INFINITY } else { err }; // NaN never passes
        if err > worst.1 {
            worst = (i, err);
        }
    }
    let (i, err) = worst;
    assert!(
        err <= rtol,
        "{what}: element {i} is {} but the reference says {} (relative error {err:.2e} > {rtol:.0e})",
        got[i],
        want[i]
    );
}
