//! One file per op: its payload (what it reads, its shape parameters, its weights), the builder
//! that checks its shapes as the graph is built (`impl Graph`), its lowering to kernel dispatches,
//! and the CPU reference `check` runs it against. Adding an op touches its own file and the `Op`
//! enum (graph/mod.rs).

mod add;
mod affine;
mod attention;
mod concat;
mod conv2d;
mod embedding_lookup;
mod gelu;
mod group_norm;
mod layer_norm;
mod linear;
mod loss;
mod silu;
mod timestep_embedding;
mod token_embedding;
mod upsample;
mod vq_quantize;

pub use add::Add;
pub use affine::Affine;
pub use attention::{Attention, AttentionBackward};
pub use concat::{Concat, ConcatBackward};
pub use conv2d::{Conv2d, Conv2dBackwardInput, Conv2dBackwardParams, ConvWeight};
pub use embedding_lookup::{EmbeddingLookup, EmbeddingLookupBackward};
pub use gelu::{Geglu, Gelu};
pub use group_norm::{GroupNorm, GroupNormBackward, NormWeight};
pub use layer_norm::LayerNorm;
pub use linear::{Linear, LinearBackward, LinearWeight};
pub use loss::{MseGrad, MseLoss};
pub use silu::{Silu, SiluBackward};
pub use timestep_embedding::TimestepEmbedding;
pub use token_embedding::TokenEmbedding;
pub use upsample::{Upsample2x, Upsample2xBackward};
pub use vq_quantize::VqQuantize;

use super::{Executable, Graph, TensorId};
use crate::gpu::{Context, Dispatch};
use crate::{Error, Result};

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

/// What an op's backward sees while `autodiff` extends the graph.
pub struct Backward<'a> {
    /// The forward node's layer, which its backward nodes carry too.
    pub layer: &'a str,
    /// d loss / d (the forward node's output).
    pub dy: TensorId,
    /// Which tensors of the forward graph need a gradient (by id).
    pub needs: &'a [bool],
}

impl Backward<'_> {
    /// Whether `t` needs a gradient: it is a trainable param, or depends on one, and the loss
    /// depends on it.
    pub fn needs(&self, t: TensorId) -> bool {
        self.needs.get(t).copied().unwrap_or(false)
    }
}

/// What every op provides.
pub trait OpKind {
    /// The op's kind, as `check` names it.
    fn kind(&self) -> &'static str;
    /// The tensors it reads.
    fn inputs(&self) -> Vec<TensorId>;
    /// Its dispatches, writing `outs` (the node's outputs: one for a forward op, a gradient each
    /// for a backward op). Attention is several dispatches; so are conv2d and Linear where GPUs
    /// split K; concat is copies only.
    fn lower(&self, env: &Env, outs: &[TensorId]) -> Result<Vec<Dispatch>>;
    /// What its kernel's CPU reference makes of the inputs the device holds, one vector an output.
    fn reference(&self, env: &Env) -> Result<Vec<Vec<f32>>>;
    /// Adds to `g` the ops computing the gradients of those of its inputs that need one, given
    /// `at.dy`, and returns (input, gradient) pairs (autodiff sums an input's pairs where it is
    /// used more than once). Backward ops themselves have none.
    fn backward(&self, _g: &mut Graph, at: &Backward) -> Result<Vec<(TensorId, TensorId)>> {
        Err(Error::Invalid(format!("{}: no gradient through a {} op", at.layer, self.kind())))
    }
}
