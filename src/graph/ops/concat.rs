//! [a, b] along channels: buffer copies, one pair per image; its backward splits dy the same way.

use super::{Backward, Env, OpKind};
use crate::gpu::Dispatch;
use crate::graph::{Graph, Op, TensorId};
use crate::kernels::elementwise as kernel;
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct Concat {
    pub a: TensorId,
    pub b: TensorId,
}

/// dy [N, Ca + Cb, HW] split into (da, db).
#[derive(Clone, Debug, PartialEq)]
pub struct ConcatBackward {
    pub dy: TensorId,
    /// (images, channels of a, channels of b, H * W).
    pub dims: (usize, usize, usize, usize),
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

    fn lower(&self, env: &Env, outs: &[TensorId]) -> Result<Vec<Dispatch>> {
        let out = outs[0];
        let (n, ca, cb, hw) = self.dims(env.graph);
        let (a, b, y) = (env.buffer(self.a), env.buffer(self.b), env.buffer(out));
        Ok(vec![kernel::concat_channels(env.ctx, n, ca, cb, hw, a, b, y)?])
    }

    fn reference(&self, env: &Env) -> Result<Vec<Vec<f32>>> {
        let (n, ca, cb, hw) = self.dims(env.graph);
        Ok(vec![kernel::reference_concat(n, ca, cb, hw, &env.read(self.a)?, &env.read(self.b)?)])
    }

    fn backward(&self, g: &mut Graph, at: &Backward) -> Result<Vec<(TensorId, TensorId)>> {
        if !at.needs(self.a) && !at.needs(self.b) {
            return Ok(vec![]);
        }
        let shapes = vec![g.shape(self.a).to_vec(), g.shape(self.b).to_vec()];
        let op = Op::ConcatBackward(ConcatBackward { dy: at.dy, dims: self.dims(g) });
        let d = g.push_many(at.layer, op, shapes);
        Ok([(self.a, d[0]), (self.b, d[1])].into_iter().filter(|&(t, _)| at.needs(t)).collect())
    }
}

impl OpKind for ConcatBackward {
    fn kind(&self) -> &'static str {
        "concat backward"
    }

    fn inputs(&self) -> Vec<TensorId> {
        vec![self.dy]
    }

    fn lower(&self, env: &Env, outs: &[TensorId]) -> Result<Vec<Dispatch>> {
        let (n, ca, cb, hw) = self.dims;
        let (dy, da, db) = (env.buffer(self.dy), env.buffer(outs[0]), env.buffer(outs[1]));
        Ok(vec![kernel::concat_channels_backward(env.ctx, n, ca, cb, hw, dy, da, db)?])
    }

    fn reference(&self, env: &Env) -> Result<Vec<Vec<f32>>> {
        let (n, ca, cb, hw) = self.dims;
        let dy = env.read(self.dy)?;
        let (mut da, mut db) = (Vec::with_capacity(n * ca * hw), Vec::with_capacity(n * cb * hw));
        for image in dy.chunks(((ca + cb) * hw).max(1)) {
            da.extend_from_slice(&image[..ca * hw]);
            db.extend_from_slice(&image[ca * hw..]);
        }
        Ok(vec![da, db])
    }
}
