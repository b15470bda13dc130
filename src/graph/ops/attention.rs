//! Multi-head self-attention over the H*W tokens of q, k, v [N, heads * head_dim, H, W].

use super::{Env, OpKind};
use crate::gpu::Dispatch;
use crate::graph::{Graph, Op, TensorId};
use crate::kernels::attention::{self as kernel, AttentionShape};
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct Attention {
    pub q: TensorId,
    pub k: TensorId,
    pub v: TensorId,
    pub shape: AttentionShape,
}

impl Graph {
    /// Self-attention over the H*W tokens of q, k, v [N, heads * head_dim, H, W].
    pub fn attention(
        &mut self,
        layer: &str,
        q: TensorId,
        k: TensorId,
        v: TensorId,
        heads: usize,
    ) -> Result<TensorId> {
        let [n, c, h, w] = self.nchw(layer, q)?;
        if self.shape(k) != self.shape(q) || self.shape(v) != self.shape(q) {
            return Err(Error::Shape(format!(
                "{layer}: q {:?}, k {:?} and v {:?} differ",
                self.shape(q),
                self.shape(k),
                self.shape(v)
            )));
        }
        if heads == 0 || c % heads != 0 {
            return Err(Error::Shape(format!("{layer}: {heads} heads do not divide {c} channels")));
        }
        let head_dim = c / heads;
        let shape = AttentionShape {
            batch: n,
            heads,
            head_dim,
            tokens: h * w,
            scale: 1.0 / (head_dim as f32).sqrt(),
        };
        Ok(self.push(layer, Op::Attention(Attention { q, k, v, shape }), vec![n, c, h, w]))
    }
}

impl OpKind for Attention {
    fn kind(&self) -> &'static str {
        "attention"
    }

    fn inputs(&self) -> Vec<TensorId> {
        vec![self.q, self.k, self.v]
    }

    fn lower(&self, env: &Env, out: TensorId) -> Result<Vec<Dispatch>> {
        let b = |t| env.buffer(t);
        kernel::attention(env.ctx, &self.shape, b(self.q), b(self.k), b(self.v), b(out))
    }

    fn reference(&self, env: &Env) -> Result<Vec<f32>> {
        Ok(kernel::reference(&self.shape, &env.read(self.q)?, &env.read(self.k)?, &env.read(self.v)?))
    }
}
