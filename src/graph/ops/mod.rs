//! One file per op: its payload (what it reads, its shape parameters, its weights), the builder
//! that checks its shapes as the graph is built (`impl Graph`), its lowering to kernel dispatches,
//! and the CPU reference `check` runs it against. Adding an op touches its own file and the `Op`
//! enum (graph/mod.rs).

mod affine;
mod attention;
mod concat;
mod conv2d;
mod group_norm;
mod linear;
mod silu;
mod timestep_embedding;
mod upsample;

pub use affine::Affine;
pub use attention::Attention;
pub use concat::Concat;
pub use conv2d::{Conv2d, ConvWeight};
pub use group_norm::{GroupNorm, NormWeight};
pub use linear::{Linear, LinearWeight};
pub use silu::Silu;
pub use timestep_embedding::TimestepEmbedding;
pub use upsample::Upsample2x;

use super::{Executable, Graph, TensorId};
use crate::gpu::{Context, Dispatch};
use crate::Result;

/// What an op's lowering and reference see: the device, the graph, and the buffers of its tensors
/// (planned slots for activations, the model's buffers for params).
pub struct Env<'a> {
    pub ctx: &'a Context,
    pub graph: &'a Graph,
    pub exe: &'a Executable,
}

impl Env<'_> {
    /// The buffer planned for tensor `t`.
    pub fn buffer(&self, t: TensorId) -> &wgpu::Buffer {
        self.exe.buffer(t)
    }

    /// Values in tensor `t` (`check` runs only).
    pub fn read(&self, t: TensorId) -> Result<Vec<f32>> {
        self.ctx.read_buffer(self.buffer(t), self.graph.shape(t).iter().product())
    }

    /// Number of values in tensor `t`.
    pub fn len(&self, t: TensorId) -> usize {
        self.graph.shape(t).iter().product()
    }
}

/// What every op provides.
pub trait OpKind {
    /// The op's kind, as `check` names it.
    fn kind(&self) -> &'static str;
    /// The tensors it reads.
    fn inputs(&self) -> Vec<TensorId>;
    /// Its dispatches, writing `out` (attention is several; so are conv2d and Linear where GPUs
    /// split K; concat is copies only).
    fn lower(&self, env: &Env, out: TensorId) -> Result<Vec<Dispatch>>;
    /// What its kernel's CPU reference makes of the inputs the device holds.
    fn reference(&self, env: &Env) -> Result<Vec<f32>>;
}
