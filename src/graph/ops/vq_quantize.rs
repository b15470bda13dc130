//! VQModel's quantizer: each latent pixel to its nearest codebook entry (z + (e - z), as diffusers'
//! straight-through estimator writes it), with the chosen codes as a second output.

use super::{Env, OpKind};
use crate::gpu::Dispatch;
use crate::graph::{Graph, Op, TensorId, WeightId};
use crate::kernels::vq::{self as kernel, VqShape};
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct VqQuantize {
    pub z: TensorId,
    /// The codebook [codes, D], a param.
    pub codebook: TensorId,
    pub shape: VqShape,
}

impl Graph {
    /// (quantized [B, D, H, W], indices [B, H, W] as f32) of latents `z` against `codebook`
    /// (a weight [codes, D]).
    pub fn vq_quantize(
        &mut self,
        layer: &str,
        z: TensorId,
        codebook: WeightId,
        codes: usize,
    ) -> Result<(TensorId, TensorId)> {
        let [n, d, h, w] = self.nchw(layer, z)?;
        if codes == 0 {
            return Err(Error::Shape(format!("{layer}: an empty codebook")));
        }
        let codebook = self.param(codebook, codes * d);
        let shape = VqShape { batch: n, dim: d, plane: h * w, codes };
        let outs = self.push_many(
            layer,
            Op::VqQuantize(VqQuantize { z, codebook, shape }),
            vec![vec![n, d, h, w], vec![n, h, w]],
        );
        Ok((outs[0], outs[1]))
    }
}

impl OpKind for VqQuantize {
    fn kind(&self) -> &'static str {
        "vq quantize"
    }

    fn inputs(&self) -> Vec<TensorId> {
        vec![self.z, self.codebook]
    }

    fn lower(&self, env: &Env, outs: &[TensorId]) -> Result<Vec<Dispatch>> {
        let (z, e) = (env.buffer(self.z), env.buffer(self.codebook));
        let (q, idx) = (env.buffer(outs[0]), env.buffer(outs[1]));
        Ok(vec![kernel::quantize(env.ctx, &self.shape, z, e, q, idx)?])
    }

    fn reference(&self, env: &Env) -> Result<Vec<Vec<f32>>> {
        let (q, idx) = kernel::reference(&self.shape, &env.read(self.z)?, &env.read(self.codebook)?);
        Ok(vec![q, idx])
    }
}
