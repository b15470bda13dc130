//! y = a + b, elementwise: where autodiff sums the gradients of a tensor used more than once.

use super::{Backward, Env, OpKind};
use crate::gpu::Dispatch;
use crate::graph::{Graph, Op, TensorId};
use crate::kernels::elementwise as kernel;
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct Add {
    pub a: TensorId,
    pub b: TensorId,
}

impl Graph {
    pub fn add(&mut self, layer: &str, a: TensorId, b: TensorId) -> Result<TensorId> {
        if self.shape(a) != self.shape(b) {
            return Err(Error::Shape(format!(
                "{layer}: cannot add {:?} and {:?}",
                self.shape(a),
                self.shape(b)
            )));
        }
        let shape = self.shape(a).to_vec();
        Ok(self.push(layer, Op::Add(Add { a, b }), shape))
    }
}

impl OpKind for Add {
    fn kind(&self) -> &'static str {
        "add"
    }

    fn inputs(&self) -> Vec<TensorId> {
        vec![self.a, self.b]
    }

    fn lower(&self, env: &Env, outs: &[TensorId]) -> Result<Vec<Dispatch>> {
        let (a, b, y) = (env.buffer(self.a), env.buffer(self.b), env.buffer(outs[0]));
        Ok(vec![kernel::add(env.ctx, env.len(outs[0]), a, b, y)?])
    }

    fn reference(&self, env: &Env) -> Result<Vec<Vec<f32>>> {
        Ok(vec![kernel::reference_add(&env.read(self.a)?, &env.read(self.b)?)])
    }

    fn backward(&self, _g: &mut Graph, at: &Backward) -> Result<Vec<(TensorId, TensorId)>> {
        Ok([self.a, self.b].into_iter().filter(|&t| at.needs(t)).map(|t| (t, at.dy)).collect())
    }
}
