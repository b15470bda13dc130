//! A text model's token embedding (CLIP's embeddings module): out [N, dim, 1, T] = the token
//! table's rows for ids [N, T] (f32 token ids) plus the position table's first T rows, in the
//! engine's channel-major layout of a sequence. The token table may come in row ranges (one
//! dispatch each), as a vocabulary can outgrow a storage binding.

use super::{Env, OpKind};
use crate::gpu::Dispatch;
use crate::graph::{Graph, Op, TensorId, WeightId};
use crate::kernels::embedding::{self as kernel, TokenShape};
use crate::model::weights::TableRows;
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct TokenEmbedding {
    pub ids: TensorId,
    /// The token table's row ranges as params, with their first rows and counts.
    pub table: Vec<(TensorId, usize, usize)>,
    /// The position table [T, dim] (its first T rows), a param.
    pub positions: TensorId,
    pub shape: TokenShape,
}

impl Graph {
    /// out [N, dim, 1, T] = table[ids] + positions[..T]; ids [N, T].
    pub fn token_embedding(
        &mut self,
        layer: &str,
        ids: TensorId,
        table: &[TableRows],
        positions: WeightId,
        dim: usize,
    ) -> Result<TensorId> {
        let (batch, tokens) = match *self.shape(ids) {
            [n, t] => (n, t),
            ref s => return Err(Error::Shape(format!("{layer}: ids must be [batch, tokens], got {s:?}"))),
        };
        let vocab = table.iter().map(|r| r.start + r.rows).max().unwrap_or(0);
        let table = table.iter().map(|r| (self.param(r.weight, r.rows * dim), r.start, r.rows)).collect();
        let positions = self.param(positions, tokens * dim);
        let op = TokenEmbedding { ids, table, positions, shape: TokenShape { batch, tokens, dim, vocab } };
        Ok(self.push(layer, Op::TokenEmbedding(op), vec![batch, dim, 1, tokens]))
    }
}

impl OpKind for TokenEmbedding {
    fn kind(&self) -> &'static str {
        "token embedding"
    }

    fn inputs(&self) -> Vec<TensorId> {
        let mut v = vec![self.ids, self.positions];
        v.extend(self.table.iter().map(|t| t.0));
        v
    }

    fn lower(&self, env: &Env, outs: &[TensorId]) -> Result<Vec<Dispatch>> {
        let (ids, pos, out) = (env.buffer(self.ids), env.buffer(self.positions), env.buffer(outs[0]));
        self.table
            .iter()
            .map(|&(t, start, rows)| {
                kernel::token_embedding(env.ctx, &self.shape, (start, rows), ids, env.buffer(t), pos, out)
            })
            .collect()
    }

    fn reference(&self, env: &Env) -> Result<Vec<Vec<f32>>> {
        let mut table = vec![];
        for &(t, _, _) in &self.table {
            table.extend(env.read(t)?);
        }
        let (ids, pos) = (env.read(self.ids)?, env.read(self.positions)?);
        Ok(vec![kernel::reference_token_embedding(&self.shape, &ids, &table, &pos)])
    }
}
