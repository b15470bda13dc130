//! `sample --check`: a graph's ops run one at a time, each op's output compared with its kernel's
//! CPU reference computed from the very inputs the device gave it, so the first op that goes wrong
//! is named even when every later one only passes the damage on.

use super::ops::Env;
use super::{Executable, Graph};
use crate::gpu::Context;
use crate::Result;

/// The tolerance rule of every kernel test and of `check`: the worst element's
/// |got - want| / (|want| + rms(want)) and where it is. The rms term keeps elements where a long
/// sum cancels to near zero from asking more than f32 accumulation gives; a NaN is infinitely far.
pub fn worst_error(got: &[f32], want: &[f32]) -> (usize, f64) {
    let rms = (want.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / want.len().max(1) as f64).sqrt();
    let mut worst = (0, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let e = (g as f64 - w as f64).abs() / ((w as f64).abs() + rms + 1e-30);
        let e = if e.is_nan() { f64::INFINITY } else { e };
        if e > worst.1 {
            worst = (i, e);
        }
    }
    worst
}

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
    /// Compares `got` with `want` by the kernel tests' rule (`worst_error`).
    pub fn new(layer: &str, kind: &'static str, got: &[f32], want: &[f32]) -> Self {
        let (at, error) = worst_error(got, want);
        Self { layer: layer.to_string(), kind, error, at, got: got[at], want: want[at] }
    }
}

/// Runs every op of `exe` (lowered from `g`) alone, in order, and checks each of its outputs; the graph's
/// inputs must already hold their values on the device.
pub fn check_ops(ctx: &Context, g: &Graph, exe: &Executable) -> Result<Vec<OpCheck>> {
    let env = Env { ctx, graph: g, exe };
    let mut rows = Vec::with_capacity(g.nodes.len());
    for (i, node) in g.nodes.iter().enumerate() {
        let dispatches: Vec<_> =
            exe.dispatches.iter().zip(&exe.nodes).filter(|(_, &n)| n == i).map(|(d, _)| d.clone()).collect();
        ctx.run(&dispatches);
        let wants = node.op.get().reference(&env)?;
        for (k, (&out, want)) in node.outputs.iter().zip(&wants).enumerate() {
            // A backward op's gradients are told apart by their place (see the op's outputs).
            let layer = if node.outputs.len() > 1 {
                format!("{} [output {k}]", node.layer)
            } else {
                node.layer.clone()
            };
            rows.push(OpCheck::new(&layer, node.op.kind(), &env.read(out)?, want));
        }
    }
    Ok(rows)
}
