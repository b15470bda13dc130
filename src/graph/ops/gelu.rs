//! GELU (exact or CLIP's quick form) elementwise, and GEGLU: half the channels times the GELU of
//! the other half (diffusers' feed-forward in transformer blocks).

use super::{Env, OpKind};
use crate::gpu::Dispatch;
use crate::graph::{Graph, Op, TensorId};
use crate::kernels::elementwise::{self as kernel, Gelu as Kind};
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct Gelu {
    pub x: TensorId,
    pub kind: Kind,
}

/// y [N, C, H, W] = x[:, :C] * gelu(x[:, C:]) of x [N, 2C, H, W].
#[derive(Clone, Debug, PartialEq)]
pub struct Geglu {
    pub x: TensorId,
    pub kind: Kind,
}

impl Graph {
    pub fn gelu(&mut self, layer: &str, x: TensorId, kind: Kind) -> TensorId {
        let shape = self.shape(x).to_vec();
        self.push(layer, Op::Gelu(Gelu { x, kind }), shape)
    }

    pub fn geglu(&mut self, layer: &str, x: TensorId, kind: Kind) -> Result<TensorId> {
        let [n, c2, h, w] = self.nchw(layer, x)?;
        if c2 % 2 != 0 {
            return Err(Error::Shape(format!("{layer}: GEGLU splits {c2} channels in two halves")));
        }
        Ok(self.push(layer, Op::Geglu(Geglu { x, kind }), vec![n, c2 / 2, h, w]))
    }
}

impl OpKind for Gelu {
    fn kind(&self) -> &'static str {
        "gelu"
    }

    fn inputs(&self) -> Vec<TensorId> {
        vec![self.x]
    }

    fn lower(&self, env: &Env, outs: &[TensorId]) -> Result<Vec<Dispatch>> {
        let out = outs[0];
        Ok(vec![kernel::gelu(env.ctx, self.kind, env.len(out), env.buffer(self.x), env.buffer(out))?])
    }

    fn reference(&self, env: &Env) -> Result<Vec<Vec<f32>>> {
        Ok(vec![env.read(self.x)?.iter().map(|&v| self.kind.reference(v as f64) as f32).collect()])
    }
}

impl OpKind for Geglu {
    fn kind(&self) -> &'static str {
        "geglu"
    }

    fn inputs(&self) -> Vec<TensorId> {
        vec![self.x]
    }

    fn lower(&self, env: &Env, outs: &[TensorId]) -> Result<Vec<Dispatch>> {
        let &[n, c, h, w] = env.graph.shape(outs[0]) else {
            return Err(Error::Shape("geglu: an NCHW output".into()));
        };
        Ok(vec![kernel::geglu(env.ctx, self.kind, n, c, h * w, env.buffer(self.x), env.buffer(outs[0]))?])
    }

    fn reference(&self, env: &Env) -> Result<Vec<Vec<f32>>> {
        let &[n, c, h, w] = env.graph.shape(self.x) else {
            return Err(Error::Shape("geglu: an NCHW input".into()));
        };
        Ok(vec![kernel::reference_geglu(self.kind, n, c / 2, h * w, &env.read(self.x)?)])
    }
}
