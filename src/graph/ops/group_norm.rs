//! GroupNorm (optionally fused with SiLU) over an NCHW tensor, and its backward.

use super::{Backward, Env, OpKind};
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

/// The backward of a `GroupNorm` (its SiLU included): outputs dx, d gamma, d beta.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupNormBackward {
    pub x: TensorId,
    pub gamma: TensorId,
    pub beta: TensorId,
    pub dy: TensorId,
    pub shape: GroupNormShape,
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

    fn lower(&self, env: &Env, outs: &[TensorId]) -> Result<Vec<Dispatch>> {
        let out = outs[0];
        let (gamma, beta) = (env.buffer(self.gamma), env.buffer(self.beta));
        Ok(vec![kernel::group_norm(env.ctx, &self.shape, env.buffer(self.x), gamma, beta, env.buffer(out))?])
    }

    fn reference(&self, env: &Env) -> Result<Vec<Vec<f32>>> {
        Ok(vec![kernel::reference(
            &self.shape,
            &env.read(self.x)?,
            &env.read(self.gamma)?,
            &env.read(self.beta)?,
        )])
    }

    fn backward(&self, g: &mut Graph, at: &Backward) -> Result<Vec<(TensorId, TensorId)>> {
        let wanted = [self.x, self.gamma, self.beta];
        if !wanted.iter().any(|&t| at.needs(t)) {
            return Ok(vec![]);
        }
        let (x, gamma, beta, shape) = (self.x, self.gamma, self.beta, self.shape);
        let op = Op::GroupNormBackward(GroupNormBackward { x, gamma, beta, dy: at.dy, shape });
        let shapes = vec![g.shape(x).to_vec(), vec![shape.c], vec![shape.c]];
        let outs = g.push_many(at.layer, op, shapes);
        Ok(wanted.into_iter().zip(outs).filter(|&(t, _)| at.needs(t)).collect())
    }
}

impl OpKind for GroupNormBackward {
    fn kind(&self) -> &'static str {
        "group norm backward"
    }

    fn inputs(&self) -> Vec<TensorId> {
        vec![self.x, self.gamma, self.beta, self.dy]
    }

    fn lower(&self, env: &Env, outs: &[TensorId]) -> Result<Vec<Dispatch>> {
        let b = |t| env.buffer(t);
        let grads = kernel::GroupNormGrads {
            x: b(self.x),
            gamma: b(self.gamma),
            beta: b(self.beta),
            dy: b(self.dy),
            dx: b(outs[0]),
            dgamma: b(outs[1]),
            dbeta: b(outs[2]),
        };
        kernel::group_norm_backward(env.ctx, &self.shape, &grads)
    }

    fn reference(&self, env: &Env) -> Result<Vec<Vec<f32>>> {
        let (x, gamma, beta, dy) =
            (env.read(self.x)?, env.read(self.gamma)?, env.read(self.beta)?, env.read(self.dy)?);
        let (dx, dgamma, dbeta) = kernel::reference_backward(&self.shape, &x, &gamma, &beta, &dy);
        Ok(vec![dx, dgamma, dbeta])
    }
}
