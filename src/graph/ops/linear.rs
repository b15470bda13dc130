//! A PyTorch Linear: y [rows, out] = x [rows, in] W^T + b (then SiLU), and its backward.

use super::{Backward, Env, OpKind};
use crate::gpu::Dispatch;
use crate::graph::{Graph, Op, TensorId, WeightId};
use crate::kernels::elementwise;
use crate::kernels::matmul::{self as kernel, Bias, MatmulShape, Strides};
use crate::{Error, Result};

/// A PyTorch Linear weight [out, in] on the device, with its bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearWeight {
    pub weight: WeightId,
    pub bias: Option<WeightId>,
    pub fout: usize,
    pub fin: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Linear {
    pub x: TensorId,
    pub rows: usize,
    pub fin: usize,
    pub fout: usize,
    /// The weight [out, in] as stored, and the bias, as params.
    pub weight: TensorId,
    pub bias: Option<TensorId>,
    pub silu: bool,
}

/// The backward of a `Linear`: outputs d weight [out, in], then d bias and dx where asked for.
/// A fused SiLU's backward needs the pre-activation, which the forward never stored: it is
/// recomputed (a Linear is the time embedding's, [batch, features], small).
#[derive(Clone, Debug, PartialEq)]
pub struct LinearBackward {
    pub forward: Linear,
    pub dy: TensorId,
    pub want_bias: bool,
    pub want_dx: bool,
}

impl Graph {
    /// y [rows, out] = x [rows, in] W^T + b (then SiLU).
    pub fn linear(&mut self, layer: &str, x: TensorId, weight: LinearWeight, silu: bool) -> Result<TensorId> {
        let (rows, fin) = match *self.shape(x) {
            [rows, fin] => (rows, fin),
            ref s => {
                return Err(Error::Shape(format!("{layer}: expected a [rows, features] tensor, got {s:?}")))
            }
        };
        if fin != weight.fin {
            return Err(Error::Shape(format!(
                "{layer}: input has {fin} features, the weight expects {}",
                weight.fin
            )));
        }
        let (fout, bias) = (weight.fout, weight.bias.map(|b| self.param(b, weight.fout)));
        let w = self.param(weight.weight, fout * fin);
        let op = Linear { x, rows, fin, fout, weight: w, bias, silu };
        Ok(self.push(layer, Op::Linear(op), vec![rows, fout]))
    }
}

impl OpKind for Linear {
    fn kind(&self) -> &'static str {
        "linear"
    }

    fn inputs(&self) -> Vec<TensorId> {
        [Some(self.x), Some(self.weight), self.bias].into_iter().flatten().collect()
    }

    fn lower(&self, env: &Env, outs: &[TensorId]) -> Result<Vec<Dispatch>> {
        let out = outs[0];
        let (x, w, y) = (env.buffer(self.x), env.buffer(self.weight), env.buffer(out));
        let bias = self.bias.map(|b| env.buffer(b));
        kernel::linear(env.ctx, self.rows, self.fin, self.fout, self.silu, x, w, bias, y)
    }

    fn reference(&self, env: &Env) -> Result<Vec<Vec<f32>>> {
        Ok(vec![self.reference_with(env, self.silu)?])
    }

    fn backward(&self, g: &mut Graph, at: &Backward) -> Result<Vec<(TensorId, TensorId)>> {
        let want_bias = self.bias.is_some_and(|b| at.needs(b));
        let want_dx = at.needs(self.x);
        if !at.needs(self.weight) && !want_bias && !want_dx {
            return Ok(vec![]);
        }
        let mut shapes = vec![vec![self.fout * self.fin]];
        shapes.extend(want_bias.then(|| vec![self.fout]));
        shapes.extend(want_dx.then(|| vec![self.rows, self.fin]));
        let op = LinearBackward { forward: self.clone(), dy: at.dy, want_bias, want_dx };
        let outs = g.push_many(at.layer, Op::LinearBackward(op), shapes);
        let mut grads = vec![];
        if at.needs(self.weight) {
            grads.push((self.weight, outs[0]));
        }
        grads.extend(self.bias.filter(|_| want_bias).map(|b| (b, outs[1])));
        grads.extend(want_dx.then(|| (self.x, outs[outs.len() - 1])));
        Ok(grads)
    }
}

impl Linear {
    /// What `kernel::linear`'s reference makes of the device's inputs, with or without the SiLU.
    fn reference_with(&self, env: &Env, silu: bool) -> Result<Vec<f32>> {
        // The shape `kernel::linear` builds: W [out, in] read as W^T.
        let s = MatmulShape {
            batch: 1,
            m: self.rows,
            n: self.fout,
            k: self.fin,
            a: Strides::row_major(self.rows, self.fin),
            b: Strides::transposed(self.fin, self.fout),
            bias: if self.bias.is_some() { Bias::PerColumn } else { Bias::None },
            silu,
        };
        let bias = self.bias.map(|b| env.read(b)).transpose()?;
        Ok(kernel::reference(&s, &env.read(self.x)?, &env.read(self.weight)?, bias.as_deref()))
    }
}

impl OpKind for LinearBackward {
    fn kind(&self) -> &'static str {
        "linear backward"
    }

    fn inputs(&self) -> Vec<TensorId> {
        let mut t = self.forward.inputs();
        t.push(self.dy);
        t
    }

    fn lower(&self, env: &Env, outs: &[TensorId]) -> Result<Vec<Dispatch>> {
        let f = &self.forward;
        let (ctx, x, w) = (env.ctx, env.buffer(f.x), env.buffer(f.weight));
        let mut list = vec![];
        let pre_silu;
        let dy = if f.silu {
            // z = x W^T + b again, then dz = dy SiLU'(z).
            let len = f.rows * f.fout;
            let z = ctx.scratch_buffer("linear backward: pre-activation", len);
            list.extend(kernel::linear(
                ctx,
                f.rows,
                f.fin,
                f.fout,
                false,
                x,
                w,
                f.bias.map(|b| env.buffer(b)),
                &z,
            )?);
            pre_silu = ctx.scratch_buffer("linear backward: d pre-activation", len);
            list.push(elementwise::silu_backward(ctx, len, &z, env.buffer(self.dy), &pre_silu)?);
            &pre_silu
        } else {
            env.buffer(self.dy)
        };
        let grads = kernel::LinearGrads {
            x,
            weight: w,
            dy,
            dx: self.want_dx.then(|| env.buffer(outs[outs.len() - 1])),
            dw: Some(env.buffer(outs[0])),
            db: self.want_bias.then(|| env.buffer(outs[1])),
        };
        list.extend(kernel::linear_backward(ctx, f.rows, f.fin, f.fout, &grads)?);
        Ok(list)
    }

    fn reference(&self, env: &Env) -> Result<Vec<Vec<f32>>> {
        let f = &self.forward;
        let mut dy = env.read(self.dy)?;
        if f.silu {
            dy = elementwise::reference_silu_backward(&f.reference_with(env, false)?, &dy);
        }
        let (x, w) = (env.read(f.x)?, env.read(f.weight)?);
        let (dx, dw, db) = kernel::reference_linear_backward(f.rows, f.fin, f.fout, &x, &w, &dy);
        let mut outs = vec![dw];
        outs.extend(self.want_bias.then_some(db));
        outs.extend(self.want_dx.then_some(dx));
        Ok(outs)
    }
}
