//! `sample --check`: a graph's ops run one at a time, each op's output compared with its kernel's
//! CPU reference computed from the very inputs the device gave it, so the first op that goes wrong
//! is named even when every later one only passes the damage on.

use super::{Executable, Graph, Op, TensorId};
use crate::gpu::Context;
use crate::kernels::matmul::{Bias, MatmulShape, Strides};
use crate::kernels::{attention, conv2d, elementwise, embedding, group_norm, matmul};
use crate::Result;

/// One op's output against its reference.
#[derive(Clone, Debug)]
pub struct OpCheck {
    pub layer: String,
    pub kind: &'static str,
    /// The worst |got - want| / (|want| + rms(want)) over the output (infinite for a NaN).
    pub error: f64,
    /// Where the worst element is, what the device wrote there and what the reference says.
    pub at: usize,
    pub got: f32,
    pub want: f32,
}

impl OpCheck {
    /// Compares `got` with `want` by the kernel tests' rule.
    pub fn new(layer: &str, kind: &'static str, got: &[f32], want: &[f32]) -> Self {
        let rms = (want.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / want.len().max(1) as f64).sqrt();
        let mut worst = (0, 0.0f64);
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let e = (g as f64 - w as f64).abs() / ((w as f64).abs() + rms + 1e-30);
            let e = if e.is_nan() { f64::INFINITY } else { e };
            if e > worst.1 {
                worst = (i, e);
            }
        }
        let (at, error) = worst;
        Self { layer: layer.to_string(), kind, error, at, got: got[at], want: want[at] }
    }
}

/// Runs every op of `exe` (lowered from `g`) alone, in order, and checks its output; the graph's
/// inputs must already hold their values on the device. `weights` are the buffers ops refer to.
pub fn check_ops(
    ctx: &Context,
    g: &Graph,
    exe: &Executable,
    weights: &[wgpu::Buffer],
) -> Result<Vec<OpCheck>> {
    let numel = |t: TensorId| g.shape(t).iter().product::<usize>();
    let read = |t: TensorId| ctx.read_buffer(exe.buffer(t), numel(t));
    let weight = |id: usize, len: usize| ctx.read_buffer(&weights[id], len);
    let mut rows = Vec::with_capacity(g.nodes.len());
    for (i, node) in g.nodes.iter().enumerate() {
        let dispatches: Vec<_> =
            exe.dispatches.iter().zip(&exe.nodes).filter(|(_, &n)| n == i).map(|(d, _)| d.clone()).collect();
        ctx.run(&dispatches);
        let want = match node.op {
            Op::Conv2d { x, ref shape, weight: w, channel_add, residual, scale } => {
                let packed = weight(w.weight, shape.packed_weight_len())?;
                let full = conv2d::unpack_weight(&packed, shape.cout, shape.cin, shape.kh, shape.kw)?;
                let bias = w.bias.map(|b| weight(b, shape.cout)).transpose()?;
                let chan = channel_add.map(read).transpose()?;
                let res = residual.map(read).transpose()?;
                conv2d::reference(
                    shape,
                    &read(x)?,
                    &full,
                    bias.as_deref(),
                    chan.as_deref(),
                    res.as_deref(),
                    scale,
                )
            }
            Op::GroupNorm { x, ref shape, weight: w } => {
                group_norm::reference(shape, &read(x)?, &weight(w.gamma, w.c)?, &weight(w.beta, w.c)?)
            }
            Op::Linear { x, rows, weight: w, silu } => {
                let s = MatmulShape {
                    batch: 1,
                    m: rows,
                    n: w.fout,
                    k: w.fin,
                    a: Strides::row_major(rows, w.fin),
                    b: Strides::transposed(w.fin, w.fout),
                    bias: if w.bias.is_some() { Bias::PerColumn } else { Bias::None },
                    silu,
                };
                let bias = w.bias.map(|b| weight(b, w.fout)).transpose()?;
                matmul::reference(&s, &read(x)?, &weight(w.weight, w.fout * w.fin)?, bias.as_deref())
            }
            Op::Attention { q, k, v, ref shape } => {
                attention::reference(shape, &read(q)?, &read(k)?, &read(v)?)
            }
            Op::Silu { x } => elementwise::reference_silu(&read(x)?),
            Op::Affine { x, alpha, beta } => elementwise::reference_affine(alpha, beta, &read(x)?),
            Op::Concat { a, b } => {
                let (sa, sb) = (g.shape(a), g.shape(b));
                elementwise::reference_concat(sa[0], sa[1], sb[1], sa[2] * sa[3], &read(a)?, &read(b)?)
            }
            Op::Upsample2x { x } => {
                let s = g.shape(x);
                elementwise::reference_upsample(s[0] * s[1], s[2], s[3], &read(x)?)
            }
            Op::TimestepEmbedding { t, ref cfg, .. } => embedding::reference(cfg, &read(t)?),
        };
        rows.push(OpCheck::new(&node.layer, node.op.kind(), &read(node.output)?, &want));
    }
    Ok(rows)
}
