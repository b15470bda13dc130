//! nn.Embedding: rows of a table [rows, dim] picked by labels [batch] (f32 class ids), and its
//! backward (the table's gradient; labels take none).

use super::{Backward, Env, OpKind};
use crate::gpu::Dispatch;
use crate::graph::{Graph, Op, TensorId, WeightId};
use crate::kernels::embedding::{self as kernel, LookupShape};
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddingLookup {
    pub labels: TensorId,
    /// The table [rows, dim], a param.
    pub table: TensorId,
    pub shape: LookupShape,
}

/// d table [rows * dim] from dy [batch, dim]: each row sums the dy of the images with its label.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddingLookupBackward {
    pub labels: TensorId,
    pub dy: TensorId,
    pub shape: LookupShape,
}

impl Graph {
    /// out [batch, dim] = table[labels]; `table` is a weight [rows, dim].
    pub fn embedding_lookup(
        &mut self,
        layer: &str,
        labels: TensorId,
        table: WeightId,
        rows: usize,
        dim: usize,
    ) -> Result<TensorId> {
        let batch = match *self.shape(labels) {
            [b] => b,
            ref s => return Err(Error::Shape(format!("{layer}: labels must be [batch], got {s:?}"))),
        };
        let table = self.param(table, rows * dim);
        let op = EmbeddingLookup { labels, table, shape: LookupShape { batch, rows, dim } };
        Ok(self.push(layer, Op::EmbeddingLookup(op), vec![batch, dim]))
    }
}

impl OpKind for EmbeddingLookup {
    fn kind(&self) -> &'static str {
        "embedding lookup"
    }

    fn inputs(&self) -> Vec<TensorId> {
        vec![self.labels, self.table]
    }

    fn lower(&self, env: &Env, outs: &[TensorId]) -> Result<Vec<Dispatch>> {
        let (labels, table, out) = (env.buffer(self.labels), env.buffer(self.table), env.buffer(outs[0]));
        Ok(vec![kernel::lookup(env.ctx, &self.shape, labels, table, out)?])
    }

    fn reference(&self, env: &Env) -> Result<Vec<Vec<f32>>> {
        Ok(vec![kernel::reference_lookup(&self.shape, &env.read(self.labels)?, &env.read(self.table)?)])
    }

    fn backward(&self, g: &mut Graph, at: &Backward) -> Result<Vec<(TensorId, TensorId)>> {
        if !at.needs(self.table) {
            return Ok(vec![]);
        }
        let op = EmbeddingLookupBackward { labels: self.labels, dy: at.dy, shape: self.shape };
        let d = g.push(at.layer, Op::EmbeddingLookupBackward(op), vec![self.shape.rows * self.shape.dim]);
        Ok(vec![(self.table, d)])
    }
}

impl OpKind for EmbeddingLookupBackward {
    fn kind(&self) -> &'static str {
        "embedding lookup backward"
    }

    fn inputs(&self) -> Vec<TensorId> {
        vec![self.labels, self.dy]
    }

    fn lower(&self, env: &Env, outs: &[TensorId]) -> Result<Vec<Dispatch>> {
        let (labels, dy, d) = (env.buffer(self.labels), env.buffer(self.dy), env.buffer(outs[0]));
        Ok(vec![kernel::lookup_backward(env.ctx, &self.shape, labels, dy, d)?])
    }

    fn reference(&self, env: &Env) -> Result<Vec<Vec<f32>>> {
        Ok(vec![kernel::reference_lookup_backward(&self.shape, &env.read(self.labels)?, &env.read(self.dy)?)])
    }
}
