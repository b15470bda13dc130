//! LayerNorm over each pixel's (token's) channels of an NCHW tensor: nn.LayerNorm(C) on the
//! [N, HW, C] tokens of a transformer block or CLIP's text model, in the engine's layout.

use super::{Env, OpKind};
use crate::gpu::Dispatch;
use crate::graph::{Graph, Op, TensorId};
use crate::kernels::layer_norm::{self as kernel, LayerNormShape};
use crate::{Error, Result};

use super::NormWeight;

#[derive(Clone, Debug, PartialEq)]
pub struct LayerNorm {
    pub x: TensorId,
    pub shape: LayerNormShape,
    /// Params [C] each.
    pub gamma: TensorId,
    pub beta: TensorId,
}

impl Graph {
    pub fn layer_norm(&mut self, layer: &str, x: TensorId, weight: NormWeight, eps: f32) -> Result<TensorId> {
        let [n, c, h, w] = self.nchw(layer, x)?;
        if c != weight.c {
            return Err(Error::Shape(format!("{layer}: input has {c} channels, the norm has {}", weight.c)));
        }
        let shape = LayerNormShape { n, c, hw: h * w, eps };
        let (gamma, beta) = (self.param(weight.gamma, c), self.param(weight.beta, c));
        Ok(self.push(layer, Op::LayerNorm(LayerNorm { x, shape, gamma, beta }), vec![n, c, h, w]))
    }
}

impl OpKind for LayerNorm {
    fn kind(&self) -> &'static str {
        "layer norm"
    }

    fn inputs(&self) -> Vec<TensorId> {
        vec![self.x, self.gamma, self.beta]
    }

    fn lower(&self, env: &Env, outs: &[TensorId]) -> Result<Vec<Dispatch>> {
        let b = |t| env.buffer(t);
        Ok(vec![kernel::layer_norm(
            env.ctx,
            &self.shape,
            b(self.x),
            b(self.gamma),
            b(self.beta),
            b(outs[0]),
        )?])
    }

    fn reference(&self, env: &Env) -> Result<Vec<Vec<f32>>> {
        let (x, g, b) = (env.read(self.x)?, env.read(self.gamma)?, env.read(self.beta)?);
        Ok(vec![kernel::reference(&self.shape, &x, &g, &b)])
    }
}
