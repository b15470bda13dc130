//! y = x * sigmoid(x), elementwise.

use super::{Env, OpKind};
use crate::gpu::Dispatch;
use crate::graph::{Graph, Op, TensorId};
use crate::kernels::elementwise as kernel;
use crate::Result;

#[derive(Clone, Debug, PartialEq)]
pub struct Silu {
    pub x: TensorId,
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

    fn lower(&self, env: &Env, out: TensorId) -> Result<Vec<Dispatch>> {
        Ok(vec![kernel::silu(env.ctx, env.len(out), env.buffer(self.x), env.buffer(out))?])
    }

    fn reference(&self, env: &Env) -> Result<Vec<f32>> {
        Ok(kernel::reference_silu(&env.read(self.x)?))
    }
}
