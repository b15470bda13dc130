//! Nearest-neighbour 2x upsampling of every (n, c) plane.

use super::{Env, OpKind};
use crate::gpu::Dispatch;
use crate::graph::{Graph, Op, TensorId};
use crate::kernels::elementwise as kernel;
use crate::Result;

#[derive(Clone, Debug, PartialEq)]
pub struct Upsample2x {
    pub x: TensorId,
}

impl Graph {
    pub fn upsample2x(&mut self, layer: &str, x: TensorId) -> Result<TensorId> {
        let [n, c, h, w] = self.nchw(layer, x)?;
        Ok(self.push(layer, Op::Upsample2x(Upsample2x { x }), vec![n, c, 2 * h, 2 * w]))
    }
}

impl Upsample2x {
    /// (planes, H, W) of the input.
    fn dims(&self, g: &Graph) -> (usize, usize, usize) {
        let s = g.shape(self.x);
        (s[0] * s[1], s[2], s[3])
    }
}

impl OpKind for Upsample2x {
    fn kind(&self) -> &'static str {
        "upsample"
    }

    fn inputs(&self) -> Vec<TensorId> {
        vec![self.x]
    }

    fn lower(&self, env: &Env, out: TensorId) -> Result<Vec<Dispatch>> {
        let (planes, h, w) = self.dims(env.graph);
        Ok(vec![kernel::upsample_nearest2x(env.ctx, planes, h, w, env.buffer(self.x), env.buffer(out))?])
    }

    fn reference(&self, env: &Env) -> Result<Vec<f32>> {
        let (planes, h, w) = self.dims(env.graph);
        Ok(kernel::reference_upsample(planes, h, w, &env.read(self.x)?))
    }
}
