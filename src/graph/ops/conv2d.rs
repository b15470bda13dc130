//! conv2d with a fused epilogue: (conv(x) + bias + channel_add[n, c] + residual) * scale, and its
//! backward: the input gradient, and the weight, bias and channel-add gradients (the residual's is
//! dy * scale, no kernel at all where the scale is 1).

use super::{Backward, Env, OpKind};
use crate::gpu::Dispatch;
use crate::graph::{Graph, Op, TensorId, WeightId};
use crate::kernels::conv2d::{self as kernel, Conv2dShape, Padding};
use crate::kernels::conv2d_backward as backward;
use crate::kernels::Variant;
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

/// dx of a `Conv2d`: a transposed convolution of dy by the packed weight.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2dBackwardInput {
    pub dy: TensorId,
    pub weight: TensorId,
    pub shape: Conv2dShape,
    pub scale: f32,
}

/// The parameter gradients of a `Conv2d`: outputs d weight (packed), then d bias and d channel add
/// where asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2dBackwardParams {
    pub x: TensorId,
    pub dy: TensorId,
    pub shape: Conv2dShape,
    pub scale: f32,
    pub bias: bool,
    pub channel_add: bool,
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

    fn lower(&self, env: &Env, outs: &[TensorId]) -> Result<Vec<Dispatch>> {
        let out = outs[0];
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

    fn reference(&self, env: &Env) -> Result<Vec<Vec<f32>>> {
        let s = &self.shape;
        let weight = kernel::unpack_weight(&env.read(self.weight)?, s.cout, s.cin, s.kh, s.kw)?;
        let bias = self.bias.map(|b| env.read(b)).transpose()?;
        let chan = self.channel_add.map(|t| env.read(t)).transpose()?;
        let res = self.residual.map(|t| env.read(t)).transpose()?;
        let x = env.read(self.x)?;
        Ok(vec![kernel::reference(
            s,
            &x,
            &weight,
            bias.as_deref(),
            chan.as_deref(),
            res.as_deref(),
            self.scale,
        )])
    }

    fn backward(&self, g: &mut Graph, at: &Backward) -> Result<Vec<(TensorId, TensorId)>> {
        let (s, scale, dy) = (self.shape, self.scale, at.dy);
        let mut grads = vec![];
        if at.needs(self.x) {
            let op = Conv2dBackwardInput { dy, weight: self.weight, shape: s, scale };
            let dx = g.push(at.layer, Op::Conv2dBackwardInput(op), vec![s.n, s.cin, s.h, s.w]);
            grads.push((self.x, dx));
        }
        let bias = self.bias.filter(|&b| at.needs(b));
        let chan = self.channel_add.filter(|&c| at.needs(c));
        if at.needs(self.weight) || bias.is_some() || chan.is_some() {
            let mut shapes = vec![vec![s.packed_weight_len()]];
            shapes.extend(bias.map(|_| vec![s.cout]));
            shapes.extend(chan.map(|_| vec![s.n, s.cout]));
            let op = Conv2dBackwardParams {
                x: self.x,
                dy,
                shape: s,
                scale,
                bias: bias.is_some(),
                channel_add: chan.is_some(),
            };
            let outs = g.push_many(at.layer, Op::Conv2dBackwardParams(op), shapes);
            if at.needs(self.weight) {
                grads.push((self.weight, outs[0]));
            }
            grads.extend(bias.map(|b| (b, outs[1])));
            grads.extend(chan.map(|c| (c, outs[outs.len() - 1])));
        }
        if let Some(r) = self.residual.filter(|&r| at.needs(r)) {
            let dr = if scale == 1.0 { dy } else { g.affine(at.layer, dy, scale, 0.0) };
            grads.push((r, dr));
        }
        Ok(grads)
    }
}

impl OpKind for Conv2dBackwardInput {
    fn kind(&self) -> &'static str {
        "conv2d dx"
    }

    fn inputs(&self) -> Vec<TensorId> {
        vec![self.dy, self.weight]
    }

    fn lower(&self, env: &Env, outs: &[TensorId]) -> Result<Vec<Dispatch>> {
        let (dy, w, dx) = (env.buffer(self.dy), env.buffer(self.weight), env.buffer(outs[0]));
        backward::conv2d_backward_input(env.ctx, backward::GradForm::Auto, &self.shape, dy, w, self.scale, dx)
    }

    fn reference(&self, env: &Env) -> Result<Vec<Vec<f32>>> {
        let s = &self.shape;
        let weight = kernel::unpack_weight(&env.read(self.weight)?, s.cout, s.cin, s.kh, s.kw)?;
        Ok(vec![backward::reference_backward_input(s, &env.read(self.dy)?, &weight, self.scale)])
    }
}

impl OpKind for Conv2dBackwardParams {
    fn kind(&self) -> &'static str {
        "conv2d dW"
    }

    fn inputs(&self) -> Vec<TensorId> {
        vec![self.x, self.dy]
    }

    fn lower(&self, env: &Env, outs: &[TensorId]) -> Result<Vec<Dispatch>> {
        let grads = backward::ConvParamGrads {
            dw: env.buffer(outs[0]),
            db: self.bias.then(|| env.buffer(outs[1])),
            dchan: self.channel_add.then(|| env.buffer(outs[outs.len() - 1])),
        };
        let (x, dy) = (env.buffer(self.x), env.buffer(self.dy));
        backward::conv2d_backward_params(env.ctx, Variant::Auto, &self.shape, x, dy, self.scale, &grads)
    }

    fn reference(&self, env: &Env) -> Result<Vec<Vec<f32>>> {
        let s = &self.shape;
        let (x, dy) = (env.read(self.x)?, env.read(self.dy)?);
        let (dw, db, dchan) = backward::reference_backward_params(s, &x, &dy, self.scale);
        let mut outs = vec![kernel::pack_weight(&dw, s.cout, s.cin, s.kh, s.kw)?];
        outs.extend(self.bias.then_some(db));
        outs.extend(self.channel_add.then_some(dchan));
        Ok(outs)
    }
}
