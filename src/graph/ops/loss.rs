//! The MSE loss, sum((pred - target)^2) / mean_over, as `F.mse_loss` (mean_over = its length; a
//! micro-batch passes its whole batch's count), and its gradient: the root of the backward pass.

use super::{Env, OpKind};
use crate::gpu::Dispatch;
use crate::graph::{Graph, Op, TensorId};
use crate::kernels::{elementwise, loss as kernel};
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct MseLoss {
    pub pred: TensorId,
    pub target: TensorId,
    pub mean_over: usize,
}

/// d loss / d pred of `MseLoss`: f32(2 / mean_over) (pred - target).
#[derive(Clone, Debug, PartialEq)]
pub struct MseGrad {
    pub pred: TensorId,
    pub target: TensorId,
    pub mean_over: usize,
}

impl Graph {
    /// A scalar [1]: sum((pred - target)^2) / mean_over.
    pub fn mse_loss(
        &mut self,
        layer: &str,
        pred: TensorId,
        target: TensorId,
        mean_over: usize,
    ) -> Result<TensorId> {
        let len: usize = self.shape(pred).iter().product();
        if self.shape(pred) != self.shape(target) || mean_over < len {
            return Err(Error::Shape(format!(
                "{layer}: a loss of prediction {:?} against target {:?} over {mean_over} values",
                self.shape(pred),
                self.shape(target)
            )));
        }
        Ok(self.push(layer, Op::MseLoss(MseLoss { pred, target, mean_over }), vec![1]))
    }

    /// The gradient of `loss` (an `MseLoss`) with respect to its prediction.
    pub fn mse_grad(&mut self, layer: &str, loss: &MseLoss) -> TensorId {
        let shape = self.shape(loss.pred).to_vec();
        let MseLoss { pred, target, mean_over } = *loss;
        self.push(layer, Op::MseGrad(MseGrad { pred, target, mean_over }), shape)
    }
}

impl OpKind for MseLoss {
    fn kind(&self) -> &'static str {
        "mse loss"
    }

    fn inputs(&self) -> Vec<TensorId> {
        vec![self.pred, self.target]
    }

    fn lower(&self, env: &Env, outs: &[TensorId]) -> Result<Vec<Dispatch>> {
        let (p, t, l) = (env.buffer(self.pred), env.buffer(self.target), env.buffer(outs[0]));
        kernel::mse_loss(env.ctx, env.len(self.pred), self.mean_over, p, t, l)
    }

    fn reference(&self, env: &Env) -> Result<Vec<Vec<f32>>> {
        Ok(vec![vec![kernel::reference_mse(&env.read(self.pred)?, &env.read(self.target)?, self.mean_over)]])
    }
}

impl OpKind for MseGrad {
    fn kind(&self) -> &'static str {
        "mse gradient"
    }

    fn inputs(&self) -> Vec<TensorId> {
        vec![self.pred, self.target]
    }

    fn lower(&self, env: &Env, outs: &[TensorId]) -> Result<Vec<Dispatch>> {
        let (p, t, d) = (env.buffer(self.pred), env.buffer(self.target), env.buffer(outs[0]));
        Ok(vec![elementwise::mse_grad(env.ctx, env.len(self.pred), self.mean_over, p, t, d)?])
    }

    fn reference(&self, env: &Env) -> Result<Vec<Vec<f32>>> {
        let (p, t) = (env.read(self.pred)?, env.read(self.target)?);
        Ok(vec![elementwise::reference_mse_grad(&p, &t, self.mean_over)])
    }
}
