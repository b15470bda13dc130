//! Every kernel against its plain-Rust reference on random data, on whatever adapter is found
//! (lavapipe in CI). A missing adapter fails these tests: CI must prove every kernel.
//!
//! Tolerance: f32 kernels must match the f64 reference per element within
//! |got - want| <= 1e-4 * (|want| + rms(want)); the rms term keeps elements near zero (where a sum
//! cancels) from demanding more than f32 accumulation can give.

mod attention;
mod conv2d;
mod conv2d_backward;
mod data;
mod diffusion;
mod elementwise;
mod embedding;
mod group_norm;
mod layer_norm;
mod loss;
mod matmul;
mod optim;
mod pool;
mod rng;
mod softmax;
mod vq;

#[path = "../common/mod.rs"]
mod common;
pub use common::*;

/// The variants of a kernel family with a subgroup kernel (conv2d, its weight gradient, matmul)
/// that this adapter runs: the portable one, and the subgroup one where subgroups of 8+ lanes
/// exist.
pub fn variants() -> Vec<wgpu_diffusion::kernels::Variant> {
    use wgpu_diffusion::kernels::{has_subgroup_kernels, Variant};
    let mut v = vec![Variant::Portable];
    if has_subgroup_kernels(ctx()) {
        v.push(Variant::Subgroup);
    }
    v
}
