//! Nearest-neighbour upsampling of every (n, c) plane, 2x or to a given size (a UNet whose
//! latents do not halve evenly meets its skips' sizes), and the 2x one's backward.

use super::{Backward, Env, OpKind};
use crate::gpu::Dispatch;
use crate::graph::{Graph, Op, TensorId};
use crate::kernels::elementwise as kernel;
use crate::Result;

#[derive(Clone, Debug, PartialEq)]
pub struct Upsample2x {
    pub x: TensorId,
    /// The output's height and width (twice the input's but where a size is given).
    pub to: (usize, usize),
}

/// dx [planes, H, W] = the sums of dy's 2x2 blocks.
#[derive(Clone, Debug, PartialEq)]
pub struct Upsample2xBackward {
    pub dy: TensorId,
    pub planes: usize,
    pub h: usize,
    pub w: usize,
}

impl Graph {
    pub fn upsample2x(&mut self, layer: &str, x: TensorId) -> Result<TensorId> {
        let [_, _, h, w] = self.nchw(layer, x)?;
        self.upsample_to(layer, x, (2 * h, 2 * w))
    }

    /// Nearest upsampling to `to` (oh, ow), each at least the input's.
    pub fn upsample_to(&mut self, layer: &str, x: TensorId, to: (usize, usize)) -> Result<TensorId> {
        let [n, c, h, w] = self.nchw(layer, x)?;
        if to.0 < h || to.1 < w {
            return Err(crate::Error::Shape(format!("{layer}: upsampling {h}x{w} to {}x{}", to.0, to.1)));
        }
        Ok(self.push(layer, Op::Upsample2x(Upsample2x { x, to }), vec![n, c, to.0, to.1]))
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

    fn lower(&self, env: &Env, outs: &[TensorId]) -> Result<Vec<Dispatch>> {
        let out = outs[0];
        let (planes, h, w) = self.dims(env.graph);
        Ok(vec![kernel::upsample_nearest(
            env.ctx,
            planes,
            (h, w),
            self.to,
            env.buffer(self.x),
            env.buffer(out),
        )?])
    }

    fn reference(&self, env: &Env) -> Result<Vec<Vec<f32>>> {
        let (planes, h, w) = self.dims(env.graph);
        Ok(vec![kernel::reference_upsample_to(planes, (h, w), self.to, &env.read(self.x)?)])
    }

    fn backward(&self, g: &mut Graph, at: &Backward) -> Result<Vec<(TensorId, TensorId)>> {
        if !at.needs(self.x) {
            return Ok(vec![]);
        }
        let (planes, h, w) = self.dims(g);
        if self.to != (2 * h, 2 * w) {
            return Err(crate::Error::Invalid(format!(
                "{}: no gradient through an upsample to a given size",
                at.layer
            )));
        }
        let shape = g.shape(self.x).to_vec();
        let dx =
            g.push(at.layer, Op::Upsample2xBackward(Upsample2xBackward { dy: at.dy, planes, h, w }), shape);
        Ok(vec![(self.x, dx)])
    }
}

impl OpKind for Upsample2xBackward {
    fn kind(&self) -> &'static str {
        "upsample backward"
    }

    fn inputs(&self) -> Vec<TensorId> {
        vec![self.dy]
    }

    fn lower(&self, env: &Env, outs: &[TensorId]) -> Result<Vec<Dispatch>> {
        let (dy, dx) = (env.buffer(self.dy), env.buffer(outs[0]));
        Ok(vec![kernel::upsample_nearest2x_backward(env.ctx, self.planes, self.h, self.w, dy, dx)?])
    }

    fn reference(&self, env: &Env) -> Result<Vec<Vec<f32>>> {
        Ok(vec![kernel::reference_upsample_backward(self.planes, self.h, self.w, &env.read(self.dy)?)])
    }
}
