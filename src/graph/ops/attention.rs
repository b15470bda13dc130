//! Multi-head self-attention over the H*W tokens of q, k, v [N, heads * head_dim, H, W], and its
//! backward (probabilities recomputed into scratch, see `kernels::attention::attention_backward`).

use super::{Backward, Env, OpKind};
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

/// The backward of `Attention`: outputs dq, dk, dv.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionBackward {
    pub q: TensorId,
    pub k: TensorId,
    pub v: TensorId,
    pub dy: TensorId,
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
        if self.shape(k) != self.shape(q) {
            return Err(Error::Shape(format!(
                "{layer}: q {:?} and k {:?} differ",
                self.shape(q),
                self.shape(k)
            )));
        }
        self.attention_over(layer, q, k, v, heads, false)
    }

    /// Attention of q [N, heads * head_dim, H, W]'s tokens over k and v [N, heads * head_dim,
    /// Hk, Wk]'s (cross-attention: the text's tokens), or with `causal`, over q's own tokens up
    /// to each query's (CLIP's text model).
    pub fn attention_over(
        &mut self,
        layer: &str,
        q: TensorId,
        k: TensorId,
        v: TensorId,
        heads: usize,
        causal: bool,
    ) -> Result<TensorId> {
        let [n, c, h, w] = self.nchw(layer, q)?;
        let [nk, ck, hk, wk] = self.nchw(layer, k)?;
        if (nk, ck) != (n, c) || self.shape(v) != self.shape(k) {
            return Err(Error::Shape(format!(
                "{layer}: q {:?}, k {:?} and v {:?} do not agree",
                self.shape(q),
                self.shape(k),
                self.shape(v)
            )));
        }
        if heads == 0 || c % heads != 0 {
            return Err(Error::Shape(format!("{layer}: {heads} heads do not divide {c} channels")));
        }
        if causal && hk * wk != h * w {
            return Err(Error::Shape(format!(
                "{layer}: a causal mask needs the queries' own tokens as keys"
            )));
        }
        let shape = AttentionShape {
            kv_tokens: hk * wk,
            causal,
            ..AttentionShape::self_attention(n, heads, c / heads, h * w)
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

    fn lower(&self, env: &Env, outs: &[TensorId]) -> Result<Vec<Dispatch>> {
        let out = outs[0];
        let b = |t| env.buffer(t);
        kernel::attention(env.ctx, &self.shape, b(self.q), b(self.k), b(self.v), b(out))
    }

    fn reference(&self, env: &Env) -> Result<Vec<Vec<f32>>> {
        Ok(vec![kernel::reference(&self.shape, &env.read(self.q)?, &env.read(self.k)?, &env.read(self.v)?)])
    }

    fn backward(&self, g: &mut Graph, at: &Backward) -> Result<Vec<(TensorId, TensorId)>> {
        let wanted = [self.q, self.k, self.v];
        if !wanted.iter().any(|&t| at.needs(t)) {
            return Ok(vec![]);
        }
        let (q, k, v, shape) = (self.q, self.k, self.v, self.shape);
        if shape.causal || shape.kv_tokens != shape.tokens {
            return Err(Error::Invalid(format!(
                "{}: no gradient through masked or cross-attention yet",
                at.layer
            )));
        }
        let op = Op::AttentionBackward(AttentionBackward { q, k, v, dy: at.dy, shape });
        let outs = g.push_many(at.layer, op, vec![g.shape(q).to_vec(); 3]);
        Ok(wanted.into_iter().zip(outs).filter(|&(t, _)| at.needs(t)).collect())
    }
}

impl OpKind for AttentionBackward {
    fn kind(&self) -> &'static str {
        "attention backward"
    }

    fn inputs(&self) -> Vec<TensorId> {
        vec![self.q, self.k, self.v, self.dy]
    }

    fn lower(&self, env: &Env, outs: &[TensorId]) -> Result<Vec<Dispatch>> {
        let b = |t| env.buffer(t);
        let grads = kernel::AttentionGrads {
            q: b(self.q),
            k: b(self.k),
            v: b(self.v),
            dout: b(self.dy),
            dq: b(outs[0]),
            dk: b(outs[1]),
            dv: b(outs[2]),
        };
        kernel::attention_backward(env.ctx, &self.shape, &grads)
    }

    fn reference(&self, env: &Env) -> Result<Vec<Vec<f32>>> {
        let (q, k, v, dy) = (env.read(self.q)?, env.read(self.k)?, env.read(self.v)?, env.read(self.dy)?);
        let (dq, dk, dv) = kernel::reference_backward(&self.shape, &q, &k, &v, &dy);
        Ok(vec![dq, dk, dv])
    }
}
