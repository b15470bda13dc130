//! [a, b] along channels: buffer copies, one pair per image.

use super::{Env, OpKind};
use crate::gpu::Dispatch;
use crate::graph::{Graph, Op, TensorId};
use crate::kernels::elementwise as kernel;
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct Concat {
    pub a: TensorId,
    pub b: TensorId,
}

impl Graph {
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
        Ok(self.push(layer, Op::Concat(Concat { a, b }), vec![n, ca + cb, h, w]))
    }
}

impl Concat {
    /// (images, channels of a, channels of b, H * W).
    fn dims(&self, g: &Graph) -> (usize, usize, usize, usize) {
        let (sa, sb) = (g.shape(self.a), g.shape(self.b));
        (sa[0], sa[1], sb[1], sa[2] * sa[3])
    }
}

impl OpKind for Concat {
    fn kind(&self) -> &'static str {
        "concat"
    }

    fn inputs(&self) -> Vec<TensorId> {
        vec![self.a, self.b]
    }

    fn lower(&self, env: &Env, out: TensorId) -> Result<Vec<Dispatch>> {
        let (n, ca, cb, hw) = self.dims(env.graph);
        let (a, b, y) = (env.buffer(self.a), env.buffer(self.b), env.buffer(out));
        Ok(vec![kernel::concat_channels(env.ctx, n, ca, cb, hw, a, b, y)?])
    }

    fn reference(&self, env: &Env) -> Result<Vec<f32>> {
        let (n, ca, cb, hw) = self.dims(env.graph);
        Ok(kernel::reference_concat(n, ca, cb, hw, &env.read(self.a)?, &env.read(self.b)?))
    }
}
