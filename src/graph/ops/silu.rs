//! y = x * sigmoid(x), elementwise, and its backward.

use super::{Backward, Env, OpKind};
use crate::gpu::Dispatch;
use crate::graph::{Graph, Op, TensorId};
use crate::kernels::elementwise as kernel;
use crate::Result;

#[derive(Clone, Debug, PartialEq)]
pub struct Silu {
    pub x: TensorId,
}

/// dx = dy * SiLU'(x).
#[derive(Clone, Debug, PartialEq)]
pub struct SiluBackward {
    pub x: TensorId,
    pub dy: TensorId,
}

impl Graph {
    pub fn silu(&mut self, layer: &str, x: TensorId) -> TensorId {
        let shape = self.shape(x).to_vec();
        self.push(layer, Op::Silu(Silu { x }), shape)
    }
}

impl OpKind for Silu {
    fn kind(&self) -> &'static str {
        "silu"
    }

    fn inputs(&self) -> Vec<TensorId> {
        vec![self.x]
    }

    fn lower(&self, env: &Env, outs: &[TensorId]) -> Result<Vec<Dispatch>> {
        let out = outs[0];
        Ok(vec![kernel::silu(env.ctx, env.len(out), env.buffer(self.x), env.buffer(out))?])
    }

    fn reference(&self, env: &Env) -> Result<Vec<Vec<f32>>> {
        Ok(vec![kernel::reference_silu(&env.read(self.x)?)])
    }

    fn backward(&self, g: &mut Graph, at: &Backward) -> Result<Vec<(TensorId, TensorId)>> {
        if !at.needs(self.x) {
            return Ok(vec![]);
        }
        let shape = g.shape(self.x).to_vec();
        let dx = g.push(at.layer, Op::SiluBackward(SiluBackward { x: self.x, dy: at.dy }), shape);
        Ok(vec![(self.x, dx)])
    }
}

impl OpKind for SiluBackward {
    fn kind(&self) -> &'static str {
        "silu backward"
    }

    fn inputs(&self) -> Vec<TensorId> {
        vec![self.x, self.dy]
    }

    fn lower(&self, env: &Env, outs: &[TensorId]) -> Result<Vec<Dispatch>> {
        let (x, dy, dx) = (env.buffer(self.x), env.buffer(self.dy), env.buffer(outs[0]));
        Ok(vec![kernel::silu_backward(env.ctx, env.len(self.x), x, dy, dx)?])
    }

    fn reference(&self, env: &Env) -> Result<Vec<Vec<f32>>> {
        Ok(vec![kernel::reference_silu_backward(&env.read(self.x)?, &env.read(self.dy)?)])
    }
}
