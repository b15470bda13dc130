//! y = alpha * x + beta, elementwise.

use super::{Backward, Env, OpKind};
use crate::gpu::Dispatch;
use crate::graph::{Graph, Op, TensorId};
use crate::kernels::elementwise as kernel;
use crate::Result;

#[derive(Clone, Debug, PartialEq)]
pub struct Affine {
    pub x: TensorId,
    pub alpha: f32,
    pub beta: f32,
}

impl Graph {
    pub fn affine(&mut self, layer: &str, x: TensorId, alpha: f32, beta: f32) -> TensorId {
        let shape = self.shape(x).to_vec();
        self.push(layer, Op::Affine(Affine { x, alpha, beta }), shape)
    }
}

impl OpKind for Affine {
    fn kind(&self) -> &'static str {
        "affine"
    }

    fn inputs(&self) -> Vec<TensorId> {
        vec![self.x]
    }

    fn lower(&self, env: &Env, outs: &[TensorId]) -> Result<Vec<Dispatch>> {
        let out = outs[0];
        let (x, y) = (env.buffer(self.x), env.buffer(out));
        Ok(vec![kernel::affine(env.ctx, env.len(out), self.alpha, self.beta, x, y)?])
    }

    fn reference(&self, env: &Env) -> Result<Vec<Vec<f32>>> {
        Ok(vec![kernel::reference_affine(self.alpha, self.beta, &env.read(self.x)?)])
    }

    /// dx = alpha dy: an affine op itself.
    fn backward(&self, g: &mut Graph, at: &Backward) -> Result<Vec<(TensorId, TensorId)>> {
        if !at.needs(self.x) {
            return Ok(vec![]);
        }
        Ok(vec![(self.x, g.affine(at.layer, at.dy, self.alpha, 0.0))])
    }
}
