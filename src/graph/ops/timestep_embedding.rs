//! diffusers' sinusoidal timestep embedding of t [batch].

use super::{Env, OpKind};
use crate::gpu::Dispatch;
use crate::graph::{Graph, Op, TensorId, WeightId};
use crate::kernels::embedding::{self as kernel, EmbeddingConfig};
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct TimestepEmbedding {
    pub t: TensorId,
    pub cfg: EmbeddingConfig,
    /// The frequencies [dim / 2], a param (a constant of the model, never trained).
    pub freqs: TensorId,
}

impl Graph {
    pub fn timestep_embedding(
        &mut self,
        layer: &str,
        t: TensorId,
        cfg: EmbeddingConfig,
        freqs: WeightId,
    ) -> Result<TensorId> {
        let batch = match *self.shape(t) {
            [b] => b,
            ref s => return Err(Error::Shape(format!("{layer}: timesteps must be [batch], got {s:?}"))),
        };
        let freqs = self.constant(freqs, cfg.half());
        Ok(self.push(layer, Op::TimestepEmbedding(TimestepEmbedding { t, cfg, freqs }), vec![batch, cfg.dim]))
    }
}

impl OpKind for TimestepEmbedding {
    fn kind(&self) -> &'static str {
        "timestep embedding"
    }

    fn inputs(&self) -> Vec<TensorId> {
        vec![self.t, self.freqs]
    }

    fn lower(&self, env: &Env, outs: &[TensorId]) -> Result<Vec<Dispatch>> {
        let out = outs[0];
        let (t, f, y) = (env.buffer(self.t), env.buffer(self.freqs), env.buffer(out));
        Ok(vec![kernel::timestep_embedding(env.ctx, &self.cfg, env.len(self.t), t, f, y)?])
    }

    fn reference(&self, env: &Env) -> Result<Vec<Vec<f32>>> {
        Ok(vec![kernel::reference(&self.cfg, &env.read(self.t)?)])
    }
}
