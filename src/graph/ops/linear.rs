//! A PyTorch Linear: y [rows, out] = x [rows, in] W^T + b (then SiLU).

use super::{Env, OpKind};
use crate::gpu::Dispatch;
use crate::graph::{Graph, Op, TensorId, WeightId};
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

    fn lower(&self, env: &Env, out: TensorId) -> Result<Vec<Dispatch>> {
        let (x, w, y) = (env.buffer(self.x), env.buffer(self.weight), env.buffer(out));
        let bias = self.bias.map(|b| env.buffer(b));
        kernel::linear(env.ctx, self.rows, self.fin, self.fout, self.silu, x, w, bias, y)
    }

    fn reference(&self, env: &Env) -> Result<Vec<f32>> {
        // The shape `kernel::linear` builds: W [out, in] read as W^T.
        let s = MatmulShape {
            batch: 1,
            m: self.rows,
            n: self.fout,
            k: self.fin,
            a: Strides::row_major(self.rows, self.fin),
            b: Strides::transposed(self.fin, self.fout),
            bias: if self.bias.is_some() { Bias::PerColumn } else { Bias::None },
            silu: self.silu,
        };
        let bias = self.bias.map(|b| env.read(b)).transpose()?;
        Ok(kernel::reference(&s, &env.read(self.x)?, &env.read(self.weight)?, bias.as_deref()))
    }
}
