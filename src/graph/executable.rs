//! A planned graph lowered once to a list of dispatches over planned buffers. Running it records that
//! list into a compute pass: no allocation, no pipeline or bind group creation per run.

use super::ops::Env;
use super::{Graph, Plan, TensorId};
use crate::gpu::{Context, Dispatch};
use crate::{Error, Result};

pub struct Executable {
    pub dispatches: Vec<Dispatch>,
    /// The graph layer of each dispatch, for the profiler.
    pub layers: Vec<String>,
    /// The graph node (index into `Graph::nodes`) of each dispatch, for `check`.
    pub nodes: Vec<usize>,
    pub plan: Plan,
    slots: Vec<wgpu::Buffer>,
    /// The model's buffer of each param tensor (see `Graph::params`).
    params: Vec<(TensorId, wgpu::Buffer)>,
}

const MIB: f64 = (1 << 20) as f64;

impl Executable {
    /// Plans `g`, checks the plan against the device's limits, allocates the slots and lowers every
    /// op. `weights` are the model's long-lived buffers that ops refer to by `WeightId`.
    pub fn new(ctx: &Context, g: &Graph, weights: &[wgpu::Buffer]) -> Result<Self> {
        let plan = Plan::new(g);
        let limit = ctx.max_binding_bytes();
        if let Some(t) = g.activations().find(|&t| g.bytes(t) > limit) {
            let layer = g.producer(t).map_or("an input", |n| n.layer.as_str());
            return Err(Error::Shape(format!(
                "{layer} needs a {:.1} MiB tensor {:?}, over this device's {:.1} MiB buffer limit; use a smaller batch",
                g.bytes(t) as f64 / MIB,
                g.shape(t),
                limit as f64 / MIB
            )));
        }
        let slots: Vec<wgpu::Buffer> = plan
            .slot_bytes
            .iter()
            .map(|&bytes| {
                ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("activation"),
                    // Whole 16-byte texels, so any tensor can be copied into a texel view.
                    size: bytes.max(16).div_ceil(16) * 16,
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })
            .collect();
        let mut exe = Executable {
            dispatches: Vec::with_capacity(g.nodes.len()),
            layers: Vec::new(),
            nodes: Vec::new(),
            plan,
            slots,
            params: g.params.iter().map(|&(t, w)| (t, weights[w].clone())).collect(),
        };
        for (i, node) in g.nodes.iter().enumerate() {
            let env = Env { ctx, graph: g, exe: &exe };
            let list = node.op.get().lower(&env, &node.outputs).map_err(|e| match e {
                Error::Shape(m) => Error::Shape(format!("{}: {m}", node.layer)),
                other => other,
            })?;
            for d in list {
                exe.dispatches.push(d);
                exe.layers.push(node.layer.clone());
                exe.nodes.push(i);
            }
        }
        Ok(exe)
    }

    /// The buffer holding tensor `t` (valid while `t` is live; inputs, outputs and params always).
    pub fn buffer(&self, t: TensorId) -> &wgpu::Buffer {
        match self.plan.slot_of[t] {
            Plan::PARAM => &self.params.iter().find(|(p, _)| *p == t).expect("a param of this graph").1, // ok: planned so
            slot => &self.slots[slot],
        }
    }

    /// Records every dispatch (and the texel copies some of them need) into `enc`.
    pub fn record(&self, enc: &mut wgpu::CommandEncoder) {
        crate::gpu::record_all(enc, &self.dispatches);
    }
}
