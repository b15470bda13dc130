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
    pub weight: LinearWeight,
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
        Ok(self.push(layer, Op::Linear(Linear { x, rows, weight, silu }), vec![rows, weight.fout]))
    }
}

impl OpKind for Linear {
    fn kind(&self) -> &'static str {
        "linear"
    }

    fn inputs(&self) -> Vec<TensorId> {
        vec![self.x]
    }

    fn lower(&self, env: &Env, out: TensorId) -> Result<Vec<Dispatch>> {
        let w = &self.weight;
        let bias = w.bias.map(|b| env.weight(b));
        kernel::linear(
            env.ctx,
            self.rows,
            w.fin,
            w.fout,
            self.silu,
            env.buffer(self.x),
            env.weight(w.weight),
            bias,
            env.buffer(out),
        )
    }

    fn reference(&self, env: &Env) -> Result<Vec<f32>> {
        let w = &self.weight;
        // The shape `kernel::linear` builds: W [out, in] read as W^T.
        let s = MatmulShape {
            batch: 1,
            m: self.rows,
            n: w.fout,
            k: w.fin,
            a: Strides::row_major(self.rows, w.fin),
            b: Strides::transposed(w.fin, w.fout),
            bias: if w.bias.is_some() { Bias::PerColumn } else { Bias::None },
            silu: self.silu,
        };
        let bias = w.bias.map(|b| env.read_weight(b, w.fout)).transpose()?;
        Ok(kernel::reference(
            &s,
            &env.read(self.x)?,
            &env.read_weight(w.weight, w.fout * w.fin)?,
            bias.as_deref(),
        ))
    }
}
