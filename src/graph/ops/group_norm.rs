//! GroupNorm (optionally fused with SiLU) over an NCHW tensor.

use super::{Env, OpKind};
use crate::gpu::Dispatch;
use crate::graph::{Graph, Op, TensorId, WeightId};
use crate::kernels::group_norm::{self as kernel, GroupNormShape};
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormWeight {
    pub gamma: WeightId,
    pub beta: WeightId,
    pub c: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct GroupNorm {
    pub x: TensorId,
    pub shape: GroupNormShape,
    /// Params [C] each.
    pub gamma: TensorId,
    pub beta: TensorId,
}

impl Graph {
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
        let (gamma, beta) = (self.param(weight.gamma, c), self.param(weight.beta, c));
        Ok(self.push(layer, Op::GroupNorm(GroupNorm { x, shape, gamma, beta }), vec![n, c, h, w]))
    }
}

impl OpKind for GroupNorm {
    fn kind(&self) -> &'static str {
        "group norm"
    }

    fn inputs(&self) -> Vec<TensorId> {
        vec![self.x, self.gamma, self.beta]
    }

    fn lower(&self, env: &Env, out: TensorId) -> Result<Vec<Dispatch>> {
        let (gamma, beta) = (env.buffer(self.gamma), env.buffer(self.beta));
        Ok(vec![kernel::group_norm(env.ctx, &self.shape, env.buffer(self.x), gamma, beta, env.buffer(out))?])
    }

    fn reference(&self, env: &Env) -> Result<Vec<f32>> {
        Ok(kernel::reference(&self.shape, &env.read(self.x)?, &env.read(self.gamma)?, &env.read(self.beta)?))
    }
}
