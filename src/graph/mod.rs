//! A static graph of kernel ops on tensor ids, built once per batch size with shapes checked as it is
//! built (a mismatch is an error naming the layer), then planned (`plan`) and lowered to a list of
//! dispatches (`executable`). Each op lives in its own file under `ops/`: payload, builder, lowering
//! and CPU reference.

pub mod autodiff;
pub mod check;
pub mod executable;
pub mod ops;
pub mod plan;
pub mod replay;

use crate::{Error, Result};

pub use executable::Executable;
pub use ops::{ConvWeight, LinearWeight, NormWeight, OpKind};
pub use plan::Plan;

pub type TensorId = usize;
/// Index of a long-lived weight buffer owned by the model (see `model::WeightBank`).
pub type WeightId = usize;

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    // The forward ops.
    Conv2d(ops::Conv2d),
    GroupNorm(ops::GroupNorm),
    Linear(ops::Linear),
    Attention(ops::Attention),
    Silu(ops::Silu),
    /// alpha * x + beta
    Affine(ops::Affine),
    Concat(ops::Concat),
    Upsample2x(ops::Upsample2x),
    TimestepEmbedding(ops::TimestepEmbedding),
    EmbeddingLookup(ops::EmbeddingLookup),
    VqQuantize(ops::VqQuantize),
    LayerNorm(ops::LayerNorm),
    Gelu(ops::Gelu),
    Geglu(ops::Geglu),
    TokenEmbedding(ops::TokenEmbedding),
    // What training adds: the loss and the ops autodiff builds.
    Add(ops::Add),
    MseLoss(ops::MseLoss),
    MseGrad(ops::MseGrad),
    Conv2dBackwardInput(ops::Conv2dBackwardInput),
    Conv2dBackwardParams(ops::Conv2dBackwardParams),
    GroupNormBackward(ops::GroupNormBackward),
    LinearBackward(ops::LinearBackward),
    AttentionBackward(ops::AttentionBackward),
    SiluBackward(ops::SiluBackward),
    ConcatBackward(ops::ConcatBackward),
    Upsample2xBackward(ops::Upsample2xBackward),
    EmbeddingLookupBackward(ops::EmbeddingLookupBackward),
}

impl Op {
    /// The op itself: its inputs, lowering and reference.
    pub fn get(&self) -> &dyn OpKind {
        match self {
            Op::Conv2d(o) => o,
            Op::GroupNorm(o) => o,
            Op::Linear(o) => o,
            Op::Attention(o) => o,
            Op::Silu(o) => o,
            Op::Affine(o) => o,
            Op::Concat(o) => o,
            Op::Upsample2x(o) => o,
            Op::TimestepEmbedding(o) => o,
            Op::EmbeddingLookup(o) => o,
            Op::VqQuantize(o) => o,
            Op::LayerNorm(o) => o,
            Op::Gelu(o) => o,
            Op::Geglu(o) => o,
            Op::TokenEmbedding(o) => o,
            Op::Add(o) => o,
            Op::MseLoss(o) => o,
            Op::MseGrad(o) => o,
            Op::Conv2dBackwardInput(o) => o,
            Op::Conv2dBackwardParams(o) => o,
            Op::GroupNormBackward(o) => o,
            Op::LinearBackward(o) => o,
            Op::AttentionBackward(o) => o,
            Op::SiluBackward(o) => o,
            Op::ConcatBackward(o) => o,
            Op::Upsample2xBackward(o) => o,
            Op::EmbeddingLookupBackward(o) => o,
        }
    }

    /// The tensors this op reads.
    pub fn inputs(&self) -> Vec<TensorId> {
        self.get().inputs()
    }

    /// The op's kind, as `check` and the profiler name it.
    pub fn kind(&self) -> &'static str {
        self.get().kind()
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    /// The diffusers module this op belongs to (`down_blocks.1.resnets.0.conv1`).
    pub layer: String,
    pub op: Op,
    /// What it writes: one tensor for a forward op; a backward op may write several gradients
    /// (a conv's d weight, d bias and d channel add).
    pub outputs: Vec<TensorId>,
}

impl Node {
    /// The first (for a forward op, the only) output.
    pub fn output(&self) -> TensorId {
        self.outputs[0]
    }
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// Shape of every tensor, by id.
    pub shapes: Vec<Vec<usize>>,
    pub nodes: Vec<Node>,
    pub inputs: Vec<TensorId>,
    pub outputs: Vec<TensorId>,
    /// Weights as tensors: each param tensor is a long-lived buffer of the model (by `WeightId`),
    /// never planned into a slot, so that ops read weights as they read activations (and their
    /// gradients can be plain tensors too). In the kernel's layout (conv weights packed).
    pub params: Vec<(TensorId, WeightId)>,
    /// Params that are constants of the model, never trained (the timestep embedding's
    /// frequencies): autodiff computes no gradient for them.
    pub frozen: Vec<TensorId>,
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn shape(&self, t: TensorId) -> &[usize] {
        &self.shapes[t]
    }

    pub fn bytes(&self, t: TensorId) -> u64 {
        4 * numel(&self.shapes[t]) as u64
    }

    pub fn input(&mut self, shape: &[usize]) -> TensorId {
        self.shapes.push(shape.to_vec());
        let id = self.shapes.len() - 1;
        self.inputs.push(id);
        id
    }

    /// The param tensor of weight `weight` (`len` values), made on first use.
    pub fn param(&mut self, weight: WeightId, len: usize) -> TensorId {
        if let Some(&(t, _)) = self.params.iter().find(|&&(_, w)| w == weight) {
            return t;
        }
        self.shapes.push(vec![len]);
        let id = self.shapes.len() - 1;
        self.params.push((id, weight));
        id
    }

    /// A param that is a constant of the model (see `frozen`).
    pub fn constant(&mut self, weight: WeightId, len: usize) -> TensorId {
        let t = self.param(weight, len);
        if !self.frozen.contains(&t) {
            self.frozen.push(t);
        }
        t
    }

    /// The weight behind `t`, where `t` is a param.
    pub fn weight_of(&self, t: TensorId) -> Option<WeightId> {
        self.params.iter().find(|&&(p, _)| p == t).map(|&(_, w)| w)
    }

    /// Activations: every tensor but the params (what grows with the batch).
    pub fn activations(&self) -> impl Iterator<Item = TensorId> + '_ {
        (0..self.shapes.len()).filter(|&t| self.weight_of(t).is_none())
    }

    pub fn mark_output(&mut self, t: TensorId) {
        self.outputs.push(t);
    }

    pub(crate) fn push(&mut self, layer: &str, op: Op, shape: Vec<usize>) -> TensorId {
        self.push_many(layer, op, vec![shape])[0]
    }

    /// A node writing one tensor of each shape.
    pub(crate) fn push_many(&mut self, layer: &str, op: Op, shapes: Vec<Vec<usize>>) -> Vec<TensorId> {
        let first = self.shapes.len();
        self.shapes.extend(shapes);
        let outputs: Vec<TensorId> = (first..self.shapes.len()).collect();
        self.nodes.push(Node { layer: layer.to_string(), op, outputs: outputs.clone() });
        outputs
    }

    /// The node that writes `t`, if any (inputs and params have none).
    pub fn producer(&self, t: TensorId) -> Option<&Node> {
        self.nodes.iter().find(|n| n.outputs.contains(&t))
    }

    pub(crate) fn nchw(&self, layer: &str, t: TensorId) -> Result<[usize; 4]> {
        match *self.shape(t) {
            [n, c, h, w] => Ok([n, c, h, w]),
            ref s => Err(Error::Shape(format!("{layer}: expected an NCHW tensor, got shape {s:?}"))),
        }
    }
}

impl Graph {
    /// The scratch this graph's attention ops will take on `ctx`'s device beside the planned
    /// activations: each op's own buffers, and the shared ones once (see
    /// `kernels::attention::planned_scratch`). For memory plans made before anything is lowered.
    pub fn attention_scratch(&self, ctx: &crate::gpu::Context) -> u64 {
        let (mut owned, mut shared) = (0, std::collections::BTreeSet::new());
        for node in &self.nodes {
            if let Op::Attention(a) = &node.op {
                let (own, keys) = crate::kernels::attention::planned_scratch(ctx, &a.shape);
                owned += own;
                shared.extend(keys);
            }
        }
        owned + shared.iter().map(|&(_, b)| b).sum::<u64>()
    }
}
