//! A static graph of kernel ops on tensor ids, built once per batch size with shapes checked as it is
//! built (a mismatch is an error naming the layer), then planned (`plan`) and lowered to a list of
//! dispatches (`executable`).

pub mod check;
pub mod executable;
pub mod plan;

use crate::kernels::attention::AttentionShape;
use crate::kernels::conv2d::{Conv2dShape, Padding};
use crate::kernels::embedding::EmbeddingConfig;
use crate::kernels::group_norm::GroupNormShape;
use crate::{Error, Result};

pub use executable::Executable;
pub use plan::Plan;

pub type TensorId = usize;
/// Index of a long-lived weight buffer owned by the model (see `model::WeightBank`).
pub type WeightId = usize;

/// A conv weight already on the device, packed for the conv kernel, with its bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvWeight {
    pub weight: WeightId,
    pub bias: Option<WeightId>,
    pub cout: usize,
    pub cin: usize,
    pub k: usize,
}

/// A PyTorch Linear weight [out, in] on the device, with its bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearWeight {
    pub weight: WeightId,
    pub bias: Option<WeightId>,
    pub fout: usize,
    pub fin: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormWeight {
    pub gamma: WeightId,
    pub beta: WeightId,
    pub c: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Conv2d {
        x: TensorId,
        shape: Conv2dShape,
        weight: ConvWeight,
        channel_add: Option<TensorId>,
        residual: Option<TensorId>,
        scale: f32,
    },
    GroupNorm {
        x: TensorId,
        shape: GroupNormShape,
        weight: NormWeight,
    },
    Linear {
        x: TensorId,
        rows: usize,
        weight: LinearWeight,
        silu: bool,
    },
    Attention {
        q: TensorId,
        k: TensorId,
        v: TensorId,
        shape: AttentionShape,
    },
    Silu {
        x: TensorId,
    },
    /// alpha * x + beta
    Affine {
        x: TensorId,
        alpha: f32,
        beta: f32,
    },
    Concat {
        a: TensorId,
        b: TensorId,
    },
    Upsample2x {
        x: TensorId,
    },
    TimestepEmbedding {
        t: TensorId,
        cfg: EmbeddingConfig,
        freqs: WeightId,
    },
}

impl Op {
    /// The op's kind, as `check` and the profiler name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Conv2d { .. } => "conv2d",
            Op::GroupNorm { .. } => "group norm",
            Op::Linear { .. } => "linear",
            Op::Attention { .. } => "attention",
            Op::Silu { .. } => "silu",
            Op::Affine { .. } => "affine",
            Op::Concat { .. } => "concat",
            Op::Upsample2x { .. } => "upsample",
            Op::TimestepEmbedding { .. } => "timestep embedding",
        }
    }

    /// The tensors this op reads.
    pub fn inputs(&self) -> Vec<TensorId> {
        match *self {
            Op::Conv2d { x, channel_add, residual, .. } => {
                [Some(x), channel_add, residual].into_iter().flatten().collect()
            }
            Op::GroupNorm { x, .. }
            | Op::Linear { x, .. }
            | Op::Silu { x }
            | Op::Affine { x, .. }
            | Op::Upsample2x { x } => vec![x],
            Op::Attention { q, k, v, .. } => vec![q, k, v],
            Op::Concat { a, b } => vec![a, b],
            Op::TimestepEmbedding { t, .. } => vec![t],
        }
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    /// The diffusers module this op belongs to (`down_blocks.1.resnets.0.conv1`).
    pub layer: String,
    pub op: Op,
    pub output: TensorId,
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// Shape of every tensor, by id.
    pub shapes: Vec<Vec<usize>>,
    pub nodes: Vec<Node>,
    pub inputs: Vec<TensorId>,
    pub outputs: Vec<TensorId>,
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

    pub fn mark_output(&mut self, t: TensorId) {
        self.outputs.push(t);
    }

    fn push(&mut self, layer: &str, op: Op, shape: Vec<usize>) -> TensorId {
        self.shapes.push(shape);
        let output = self.shapes.len() - 1;
        self.nodes.push(Node { layer: layer.to_string(), op, output });
        output
    }

    fn nchw(&self, layer: &str, t: TensorId) -> Result<[usize; 4]> {
        match *self.shape(t) {
            [n, c, h, w] => Ok([n, c, h, w]),
            ref s => Err(Error::Shape(format!("{layer}: expected an NCHW tensor, got shape {s:?}"))),
        }
    }

    /// conv2d with a fused epilogue: (conv(x) + bias + channel_add[n, c] + residual) * scale.
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d(
        &mut self,
        layer: &str,
        x: TensorId,
        weight: ConvWeight,
        stride: usize,
        pad: Padding,
        channel_add: Option<TensorId>,
        residual: Option<TensorId>,
        scale: f32,
    ) -> Result<TensorId> {
        let [n, c, h, w] = self.nchw(layer, x)?;
        if c != weight.cin {
            return Err(Error::Shape(format!(
                "{layer}: input has {c} channels, the weight expects {}",
                weight.cin
            )));
        }
        let shape =
            Conv2dShape { n, cin: c, h, w, cout: weight.cout, kh: weight.k, kw: weight.k, stride, pad };
        let (ho, wo) = shape.out_hw().map_err(|e| Error::Shape(format!("{layer}: {e}")))?;
        let out = vec![n, weight.cout, ho, wo];
        if let Some(t) = channel_add {
            if self.shape(t) != [n, weight.cout] {
                return Err(Error::Shape(format!(
                    "{layer}: channel add has shape {:?}, expected [{n}, {}]",
                    self.shape(t),
                    weight.cout
                )));
            }
        }
        if let Some(t) = residual {
            if self.shape(t) != out.as_slice() {
                return Err(Error::Shape(format!(
                    "{layer}: residual has shape {:?}, output {out:?}",
                    self.shape(t)
                )));
            }
        }
        Ok(self.push(layer, Op::Conv2d { x, shape, weight, channel_add, residual, scale }, out))
    }

    pub fn group_norm(
        &mut self,
        layer: &str,
        x: TensorId,
        weight: NormWeight,
        groups: usize,
        eps: f32,
        silu: bool,
    ) -> Result<TensorId> {
        let [n, c, h, w] = self.nchw(layer, x)?;
        if c != weight.c {
            return Err(Error::Shape(format!("{layer}: input has {c} channels, the norm has {}", weight.c)));
        }
        let shape = GroupNormShape { n, c, hw: h * w, groups, eps, silu };
        shape.check().map_err(|e| Error::Shape(format!("{layer}: {e}")))?;
        Ok(self.push(layer, Op::GroupNorm { x, shape, weight }, vec![n, c, h, w]))
    }

    /// y [rows, out] = x [rows, in] W^T + b (then SiLU).
    pub fn linear(&mut self, layer: &str, x: TensorId, weight: LinearWeight, silu: bool) -> Result<TensorId> {
        let (rows, fin) = match *self.shape(x) {
            [rows, fin] => (rows, fin),
            ref s => {
                return Err(Error::Shape(format!("{layer}: expected a [rows, features] tensor, got {s:?}")))
            }
        };
        if fin != weight.fin {
            return Err(Error::Shape(format!(
                "{layer}: input has {fin} features, the weight expects {}",
                weight.fin
            )));
        }
        Ok(self.push(layer, Op::Linear { x, rows, weight, silu }, vec![rows, weight.fout]))
    }

    /// Self-attention over the H*W tokens of q, k, v [N, heads * head_dim, H, W].
    pub fn attention(
        &mut self,
        layer: &str,
        q: TensorId,
        k: TensorId,
        v: TensorId,
        heads: usize,
    ) -> Result<TensorId> {
        let [n, c, h, w] = self.nchw(layer, q)?;
        if self.shape(k) != self.shape(q) || self.shape(v) != self.shape(q) {
            return Err(Error::Shape(format!(
                "{layer}: q {:?}, k {:?} and v {:?} differ",
                self.shape(q),
                self.shape(k),
                self.shape(v)
            )));
        }
        if heads == 0 || c % heads != 0 {
            return Err(Error::Shape(format!("{layer}: {heads} heads do not divide {c} channels")));
        }
        let head_dim = c / heads;
        let shape = AttentionShape {
            batch: n,
            heads,
            head_dim,
            tokens: h * w,
            scale: 1.0 / (head_dim as f32).sqrt(),
        };
        Ok(self.push(layer, Op::Attention { q, k, v, shape }, vec![n, c, h, w]))
    }

    pub fn silu(&mut self, layer: &str, x: TensorId) -> TensorId {
        let shape = self.shape(x).to_vec();
        self.push(layer, Op::Silu { x }, shape)
    }

    pub fn affine(&mut self, layer: &str, x: TensorId, alpha: f32, beta: f32) -> TensorId {
        let shape = self.shape(x).to_vec();
        self.push(layer, Op::Affine { x, alpha, beta }, shape)
    }

    /// [a, b] along channels.
    pub fn concat(&mut self, layer: &str, a: TensorId, b: TensorId) -> Result<TensorId> {
        let [n, ca, h, w] = self.nchw(layer, a)?;
        let [nb, cb, hb, wb] = self.nchw(layer, b)?;
        if (n, h, w) != (nb, hb, wb) {
            return Err(Error::Shape(format!(
                "{layer}: cannot concatenate {:?} and {:?} along channels",
                self.shape(a),
                self.shape(b)
            )));
        }
        Ok(self.push(layer, Op::Concat { a, b }, vec![n, ca + cb, h, w]))
    }

    pub fn upsample2x(&mut self, layer: &str, x: TensorId) -> Result<TensorId> {
        let [n, c, h, w] = self.nchw(layer, x)?;
        Ok(self.push(layer, Op::Upsample2x { x }, vec![n, c, 2 * h, 2 * w]))
    }

    pub fn timestep_embedding(
        &mut self,
        layer: &str,
        t: TensorId,
        cfg: EmbeddingConfig,
        freqs: WeightId,
    ) -> Result<TensorId> {
        let batch = match *self.shape(t) {
            [b] => b,
            ref s => return Err(Error::Shape(format!("{layer}: timesteps must be [batch], got {s:?}"))),
        };
        Ok(self.push(layer, Op::TimestepEmbedding { t, cfg, freqs }, vec![batch, cfg.dim]))
    }
}
