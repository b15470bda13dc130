//! A planned graph lowered once to a list of dispatches over planned buffers. Running it records that
//! list into a compute pass: no allocation, no pipeline or bind group creation per run.

use super::{Graph, Op, Plan, TensorId};
use crate::gpu::{Context, Dispatch};
use crate::kernels::{attention, conv2d, elementwise, embedding, group_norm, matmul};
use crate::{Error, Result};

pub struct Executable {
    pub dispatches: Vec<Dispatch>,
    /// The graph layer of each dispatch, for the profiler.
    pub layers: Vec<String>,
    /// The graph node (index into `Graph::nodes`) of each dispatch, for `check`.
    pub nodes: Vec<usize>,
    pub plan: Plan,
    slots: Vec<wgpu::Buffer>,
}

const MIB: f64 = (1 << 20) as f64;

impl Executable {
    /// Plans `g`, checks the plan against the device's limits, allocates the slots and lowers every
    /// op. `weights` are the model's long-lived buffers that ops refer to by `WeightId`.
    pub fn new(ctx: &Context, g: &Graph, weights: &[wgpu::Buffer]) -> Result<Self> {
        let plan = Plan::new(g);
        let limit = ctx.max_binding_bytes();
        if let Some(t) = (0..g.shapes.len()).find(|&t| g.bytes(t) > limit) {
            let layer = g.nodes.iter().find(|n| n.output == t).map_or("an input", |n| n.layer.as_str());
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
        };
        for (i, node) in g.nodes.iter().enumerate() {
            let list = exe.lower(ctx, g, &node.op, node.output, weights).map_err(|e| match e {
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

    /// The buffer holding tensor `t` (valid while `t` is live; inputs and outputs always).
    pub fn buffer(&self, t: TensorId) -> &wgpu::Buffer {
        &self.slots[self.plan.slot_of[t]]
    }

    /// Records every dispatch (and the texel copies some of them need) into `enc`.
    pub fn record(&self, enc: &mut wgpu::CommandEncoder) {
        crate::gpu::record_all(enc, &self.dispatches);
    }

    /// The dispatches of one op (attention is several; so are conv2d and Linear where GPUs split K).
    fn lower(
        &self,
        ctx: &Context,
        g: &Graph,
        op: &Op,
        out: TensorId,
        weights: &[wgpu::Buffer],
    ) -> Result<Vec<Dispatch>> {
        let b = |t: TensorId| self.buffer(t);
        let w = |id: usize| &weights[id];
        let y = b(out);
        let len = g.bytes(out) as usize / 4;
        let single = match *op {
            Op::Conv2d { x, ref shape, weight, channel_add, residual, scale } => {
                let epi = conv2d::Epilogue {
                    bias: weight.bias.map(w),
                    channel_add: channel_add.map(b),
                    residual: residual.map(b),
                    scale,
                };
                return conv2d::conv2d(ctx, shape, b(x), w(weight.weight), &epi, y);
            }
            Op::GroupNorm { x, ref shape, weight } => {
                group_norm::group_norm(ctx, shape, b(x), w(weight.gamma), w(weight.beta), y)
            }
            Op::Linear { x, rows, weight, silu } => {
                return matmul::linear(
                    ctx,
                    rows,
                    weight.fin,
                    weight.fout,
                    silu,
                    b(x),
                    w(weight.weight),
                    weight.bias.map(w),
                    y,
                )
            }
            Op::Attention { q, k, v, ref shape } => {
                return attention::attention(ctx, shape, b(q), b(k), b(v), y)
            }
            Op::Silu { x } => elementwise::silu(ctx, len, b(x), y),
            Op::Affine { x, alpha, beta } => elementwise::affine(ctx, len, alpha, beta, b(x), y),
            Op::Concat { a, b: second } => {
                let (sa, sb) = (g.shape(a), g.shape(second));
                elementwise::concat_channels(ctx, sa[0], sa[1], sb[1], sa[2] * sa[3], b(a), b(second), y)
            }
            Op::Upsample2x { x } => {
                let s = g.shape(x);
                elementwise::upsample_nearest2x(ctx, s[0] * s[1], s[2], s[3], b(x), y)
            }
            Op::TimestepEmbedding { t, ref cfg, freqs } => {
                embedding::timestep_embedding(ctx, cfg, g.shape(t)[0], b(t), w(freqs), y)
            }
        };
        single.map(|d| vec![d])
    }
}
