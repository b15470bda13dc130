//! conv2d with a fused epilogue: (conv(x) + bias + channel_add[n, c] + residual) * scale.

use super::{Env, OpKind};
use crate::gpu::Dispatch;
use crate::graph::{Graph, Op, TensorId, WeightId};
use crate::kernels::conv2d::{self as kernel, Conv2dShape, Padding};
use crate::{Error, Result};

/// A conv weight already on the device, packed for the conv kernel, with its bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvWeight {
    pub weight: WeightId,
    pub bias: Option<WeightId>,
    pub cout: usize,
    pub cin: usize,
    pub k: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Conv2d {
    pub x: TensorId,
    pub shape: Conv2dShape,
    /// The packed weight (see `kernel::pack_weight`) and the bias, as params.
    pub weight: TensorId,
    pub bias: Option<TensorId>,
    pub channel_add: Option<TensorId>,
    pub residual: Option<TensorId>,
    pub scale: f32,
}

impl Graph {
    /// conv2d with a fused epilogue: (conv(x) + bias + channel_add[n, c] + residual) * scale.
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d(
        &mut self,
        layer: &str,
        x: TensorId,
        weight: ConvWeight,
        stride: usize,
        pad: Padding,
        channel_add: Option<TensorId>,
        residual: Option<TensorId>,
        scale: f32,
    ) -> Result<TensorId> {
        let [n, c, h, w] = self.nchw(layer, x)?;
        if c != weight.cin {
            return Err(Error::Shape(format!(
                "{layer}: input has {c} channels, the weight expects {}",
                weight.cin
            )));
        }
        let shape =
            Conv2dShape { n, cin: c, h, w, cout: weight.cout, kh: weight.k, kw: weight.k, stride, pad };
        let (ho, wo) = shape.out_hw().map_err(|e| Error::Shape(format!("{layer}: {e}")))?;
        let out = vec![n, weight.cout, ho, wo];
        if let Some(t) = channel_add {
            if self.shape(t) != [n, weight.cout] {
                return Err(Error::Shape(format!(
                    "{layer}: channel add has shape {:?}, expected [{n}, {}]",
                    self.shape(t),
                    weight.cout
                )));
            }
        }
        if let Some(t) = residual {
            if self.shape(t) != out.as_slice() {
                return Err(Error::Shape(format!(
                    "{layer}: residual has shape {:?}, output {out:?}",
                    self.shape(t)
                )));
            }
        }
        let bias = weight.bias.map(|b| self.param(b, shape.cout));
        let weight = self.param(weight.weight, shape.packed_weight_len());
        Ok(self.push(layer, Op::Conv2d(Conv2d { x, shape, weight, bias, channel_add, residual, scale }), out))
    }
}

impl OpKind for Conv2d {
    fn kind(&self) -> &'static str {
        "conv2d"
    }

    fn inputs(&self) -> Vec<TensorId> {
        [Some(self.x), Some(self.weight), self.bias, self.channel_add, self.residual]
            .into_iter()
            .flatten()
            .collect()
    }

    fn lower(&self, env: &Env, out: TensorId) -> Result<Vec<Dispatch>> {
        let epi = kernel::Epilogue {
            bias: self.bias.map(|b| env.buffer(b)),
            channel_add: self.channel_add.map(|t| env.buffer(t)),
            residual: self.residual.map(|t| env.buffer(t)),
            scale: self.scale,
        };
        kernel::conv2d(
            env.ctx,
            kernel::Launch::Auto,
            &self.shape,
            env.buffer(self.x),
            env.buffer(self.weight),
            &epi,
            env.buffer(out),
        )
    }

    fn reference(&self, env: &Env) -> Result<Vec<f32>> {
        let s = &self.shape;
        let weight = kernel::unpack_weight(&env.read(self.weight)?, s.cout, s.cin, s.kh, s.kw)?;
        let bias = self.bias.map(|b| env.read(b)).transpose()?;
        let chan = self.channel_add.map(|t| env.read(t)).transpose()?;
        let res = self.residual.map(|t| env.read(t)).transpose()?;
        let x = env.read(self.x)?;
        Ok(kernel::reference(s, &x, &weight, bias.as_deref(), chan.as_deref(), res.as_deref(), self.scale))
    }
}
