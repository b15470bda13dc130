//! One training step's gradients on the device: for a batch (x0, t, eps) already on the device,
//! the forward noising, the UNet, the MSE loss and the backward, as one list of dispatches over
//! one planned graph (forward + backward). A batch too large for the device runs as micro-batches
//! whose gradients accumulate in fixed order; nothing is read back.

use std::ops::Range;

use crate::gpu::{Context, CopyOp, Cost, Dispatch};
use crate::graph::autodiff::{self, Gradients};
use crate::graph::{Executable, Graph, Plan, TensorId, WeightId};
use crate::kernels::diffusion::{self as diff, Prediction};
use crate::kernels::elementwise;
use crate::model::{unet, HostTensor, UNet};
use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct StepOptions {
    /// What the model predicts, and so what the loss compares it with (diffusers'
    /// `prediction_type`): eps, x0, or v = sqrt(abar) eps - sqrt(1 - abar) x0.
    pub prediction: Prediction,
    /// Micro-batches hold at most this many images (the batch's largest divisor that fits).
    pub max_micro: usize,
    /// Planned bytes (activations, kernels' scratch, gradients) one micro-batch may take.
    pub memory_budget: u64,
    /// The fixed shares the batch's gradient is summed in (contiguous, by image index, a
    /// divisor of the batch): each share's micro-batches summed alone, then the shares in order,
    /// whatever the number of processes computing them, so every split gives the same bits.
    pub shares: usize,
    /// The shares this process computes, where ranks share the work: each one's gradient is left
    /// apart for the exchange (`ShareExchange`). None: every share, summed here.
    pub own: Option<Range<usize>>,
}

impl Default for StepOptions {
    fn default() -> Self {
        Self {
            prediction: Prediction::Epsilon,
            max_micro: usize::MAX,
            memory_budget: 4 << 30,
            shares: 1,
            own: None,
        }
    }
}

/// Where a process that computes some shares of each batch leaves their gradients for the
/// other ranks: one flat buffer a share (every trained weight's gradient, in `gradients` order
/// at `offsets`), and the batch's summed gradients written back into `StepGradients`.
pub struct ShareExchange {
    /// Per share this process computes: its gradients, flat.
    pub staging: Vec<wgpu::Buffer>,
    /// Each trained weight's place in a flat share.
    pub offsets: Vec<usize>,
    /// Values in a flat share.
    pub total_len: usize,
}

/// The training graph of a UNet for `micro` images of a `batch`: forward, loss, backward.
pub struct TrainGraph {
    pub graph: Graph,
    /// Inputs: x_t, the timesteps as f32, the class labels as f32 (a class-conditional model),
    /// and the loss's target.
    pub sample: TensorId,
    pub timesteps: TensorId,
    pub class_labels: Option<TensorId>,
    pub target: TensorId,
    /// sum((pred - target)^2) / (the whole batch's values): the micro-batches' losses add up to
    /// the batch's mean.
    pub loss: TensorId,
    pub gradients: Gradients,
}

impl TrainGraph {
    pub fn build(ctx: &Context, unet: &mut UNet, micro: usize, batch: usize) -> Result<Self> {
        let net = unet::build(ctx, &unet.config, &mut unet.bank, micro)?;
        let mut graph = net.graph;
        let shape = graph.shape(net.output).to_vec();
        let target = graph.input(&shape);
        let per_image: usize = graph.shape(net.output)[1..].iter().product();
        let loss = graph.mse_loss("loss", net.output, target, batch * per_image)?;
        graph.mark_output(loss);
        let gradients = autodiff::backward(&mut graph, loss)?;
        Ok(Self {
            graph,
            sample: net.sample,
            timesteps: net.timesteps,
            class_labels: net.class_labels,
            target,
            loss,
            gradients,
        })
    }

    /// The planned bytes of its activations and gradients, and whether every tensor fits a binding.
    fn fits(&self, ctx: &Context, budget: u64) -> (u64, bool) {
        let plan = Plan::new(&self.graph);
        let bindable = self.graph.activations().all(|t| self.graph.bytes(t) <= ctx.max_binding_bytes());
        (plan.peak_bytes, bindable && plan.peak_bytes <= budget)
    }
}

/// A training step's gradient computation, lowered once.
pub struct TrainStep {
    pub batch: usize,
    /// Images a micro-batch (a divisor of `batch`).
    pub micro: usize,
    pub graph: TrainGraph,
    pub exe: Executable,
    /// The batch, written by the caller: x0 [B, C, H, W], eps (as x0), and the timesteps [B], as
    /// u32 indices (the noising) and as f32 values (the embedding).
    pub x0: wgpu::Buffer,
    pub eps: wgpu::Buffer,
    pub t_index: wgpu::Buffer,
    pub t_value: wgpu::Buffer,
    /// The batch's class labels [B] as f32 (after the class dropout), for a class-conditional
    /// model.
    pub labels: Option<wgpu::Buffer>,
    /// Each micro-batch's share of the loss.
    pub losses: wgpu::Buffer,
    /// Where the step leaves the gradient of each trained weight (the batch's, summed; with an
    /// exchange, written there by `ShareExchange`'s sum).
    pub gradients: Vec<ParamGradient>,
    /// The shares of the batch, this process's and the micro-batches a share takes.
    pub shares: usize,
    pub own: Range<usize>,
    pub per_share: usize,
    /// Where ranks share the work: the shares' gradients, left apart.
    pub exchange: Option<ShareExchange>,
    /// The whole step.
    pub dispatches: Vec<Dispatch>,
    /// Planned bytes: activation slots (forward and backward), the kernels' own scratch and
    /// constants, the gradient accumulators of micro-batched steps and the batch's inputs.
    pub peak_bytes: u64,
}

/// The gradient of one trained weight, in the weight buffer's layout (conv weights packed).
#[derive(Clone, Debug)]
pub struct ParamGradient {
    pub weight: WeightId,
    pub buffer: wgpu::Buffer,
    pub len: usize,
}

impl TrainStep {
    /// Plans a step for `batch` images with the noise schedule `alphas_cumprod`: picks the largest
    /// micro-batch (a divisor of a share of `batch`) whose graph fits the device and the budget.
    pub fn new(
        ctx: &Context,
        unet: &mut UNet,
        alphas_cumprod: &[f64],
        batch: usize,
        options: &StepOptions,
    ) -> Result<Self> {
        if batch == 0 {
            return Err(Error::Invalid("the batch must be at least 1".into()));
        }
        let shares = options.shares;
        if shares == 0 || !batch.is_multiple_of(shares) {
            return Err(Error::Invalid(format!(
                "a batch of {batch} does not split into {shares} gradient shares"
            )));
        }
        let share_len = batch / shares;
        let own = options.own.clone().unwrap_or(0..shares);
        if own.is_empty() || own.end > shares {
            return Err(Error::Invalid(format!("shares {own:?} of {shares}")));
        }
        let mut tried = vec![];
        let mut chosen = None;
        for micro in
            (1..=share_len.min(options.max_micro.max(1))).rev().filter(|&m| share_len.is_multiple_of(m))
        {
            let graph = TrainGraph::build(ctx, unet, micro, batch)?;
            let (bytes, fits) = graph.fits(ctx, options.memory_budget);
            if fits {
                chosen = Some((micro, graph));
                break;
            }
            tried.push(format!("{micro}: {:.1} MiB", bytes as f64 / (1 << 20) as f64));
        }
        let Some((micro, graph)) = chosen else {
            return Err(Error::Shape(format!(
                "not even one image's training step fits this device ({} bytes a binding) and the {:.1} MiB budget \
                 (micro-batches tried: {})",
                ctx.max_binding_bytes(),
                options.memory_budget as f64 / (1 << 20) as f64,
                tried.join(", ")
            )));
        };
        let owned_before = ctx.owned_bytes();
        let exe = Executable::new(ctx, &graph.graph, &unet.bank.buffers)?;
        let g = &graph.graph;
        let per_image: usize = g.shape(graph.sample)[1..].iter().product();
        let (len, micro_len) = (batch * per_image, micro * per_image);
        let (x0, eps) = (ctx.scratch_buffer("batch x0", len), ctx.scratch_buffer("batch eps", len));
        let (t_index, t_value) =
            (ctx.scratch_buffer("batch t (index)", batch), ctx.scratch_buffer("batch t", batch));
        let labels = graph.class_labels.map(|_| ctx.scratch_buffer("batch class labels", batch));
        let per_share = share_len / micro;
        // This process's micro-batches, and their losses.
        let splits = own.len() * per_share;
        let losses = ctx.scratch_buffer("micro-batch losses", splits);
        // The micro-batch's own x0, eps and t, copied out of the batch.
        let (mx0, meps, mt) = (
            ctx.scratch_buffer("micro-batch x0", micro_len),
            ctx.scratch_buffer("micro-batch eps", micro_len),
            ctx.scratch_buffer("micro-batch t", micro),
        );
        let steps = alphas_cumprod.len();
        let table = noise_table_buffer(ctx, &diff::noise_table(alphas_cumprod));
        // v = sqrt(abar) eps - sqrt(1 - abar) x0: add_noise with the rows (-sqrt(1 - abar), sqrt(abar)).
        let v_rows: Vec<f32> =
            alphas_cumprod.iter().flat_map(|&a| [-(1.0 - a).sqrt() as f32, a.sqrt() as f32]).collect();
        let v_table = noise_table_buffer(ctx, &v_rows);
        let (sample, timesteps, target) =
            (exe.buffer(graph.sample), exe.buffer(graph.timesteps), exe.buffer(graph.target));
        let params: Vec<(WeightId, TensorId, usize)> = graph
            .gradients
            .params
            .iter()
            .map(|&(p, grad)| (g.weight_of(p).expect("a param"), grad, g.shape(grad).iter().product())) // ok: autodiff returns params
            .collect();
        let scratch = |what: &str| -> Vec<wgpu::Buffer> {
            params.iter().map(|&(_, _, n)| ctx.scratch_buffer(what, n)).collect()
        };
        // A share's micro-batches summed in order (where it has several); the shares summed in
        // order into the batch's gradient (where this process sums several), or left apart for
        // the exchange.
        let share_acc = if per_share > 1 { scratch("share gradient") } else { vec![] };
        let exchange = options.own.as_ref().map(|_| {
            let mut offsets = vec![];
            let mut total_len = 0;
            for &(_, _, n) in &params {
                offsets.push(total_len);
                total_len += n;
            }
            let staging =
                own.clone().map(|_| ctx.scratch_buffer("share gradients (exchange)", total_len)).collect();
            ShareExchange { staging, offsets, total_len }
        });
        let totals = if exchange.is_some() || own.len() > 1 { scratch("batch gradient") } else { vec![] };
        let copy = |src: &wgpu::Buffer, dst: &wgpu::Buffer, at: usize, n: usize| {
            let c = CopyOp::buffer(src, 0, dst, 4 * at as u64, 4 * n as u64);
            Dispatch::copies_only("gradient accumulation", vec![c], Cost::default())
        };
        let mut dispatches = vec![];
        for (si, s) in own.clone().enumerate() {
            for j in 0..per_share {
                // k: the micro-batch's place in the batch; local: in this process's losses.
                let (k, local) = ((s * per_share + j) as u64, (si * per_share + j) as u64);
                let (img, f) = (4 * micro_len as u64, 4 * micro as u64);
                let mut inputs = vec![
                    CopyOp::buffer(&x0, k * img, &mx0, 0, img),
                    CopyOp::buffer(&eps, k * img, &meps, 0, img),
                    CopyOp::buffer(&t_index, k * f, &mt, 0, f),
                    CopyOp::buffer(&t_value, k * f, timesteps, 0, f),
                ];
                if let (Some(l), Some(input)) = (&labels, graph.class_labels) {
                    inputs.push(CopyOp::buffer(l, k * f, exe.buffer(input), 0, f));
                }
                dispatches.push(Dispatch::copies_only("micro-batch inputs", inputs, Cost::default()));
                dispatches
                    .push(diff::add_noise(ctx, micro, per_image, steps, &mx0, &meps, &mt, &table, sample)?);
                match options.prediction {
                    Prediction::Epsilon | Prediction::Sample => {
                        let src = if options.prediction == Prediction::Epsilon { &meps } else { &mx0 };
                        let c = vec![CopyOp::buffer(src, 0, target, 0, img)];
                        dispatches.push(Dispatch::copies_only("loss target", c, Cost::default()));
                    }
                    Prediction::VPrediction => dispatches.push(diff::add_noise(
                        ctx, micro, per_image, steps, &mx0, &meps, &mt, &v_table, target,
                    )?),
                }
                dispatches.extend(exe.dispatches.iter().cloned());
                let loss = vec![CopyOp::buffer(exe.buffer(graph.loss), 0, &losses, 4 * local, 4)];
                dispatches.push(Dispatch::copies_only("micro-batch loss", loss, Cost::default()));
                for (p, &(_, grad, n)) in params.iter().enumerate() {
                    let grad = exe.buffer(grad);
                    // The share's gradient so far.
                    let share = if per_share > 1 {
                        dispatches.push(if j == 0 {
                            copy(grad, &share_acc[p], 0, n)
                        } else {
                            elementwise::accumulate(ctx, n, grad, &share_acc[p])?
                        });
                        &share_acc[p]
                    } else {
                        grad
                    };
                    if j + 1 < per_share {
                        continue;
                    }
                    match &exchange {
                        Some(x) => dispatches.push(copy(share, &x.staging[si], x.offsets[p], n)),
                        None if totals.is_empty() => {}
                        None => dispatches.push(if si == 0 {
                            copy(share, &totals[p], 0, n)
                        } else {
                            elementwise::accumulate(ctx, n, share, &totals[p])?
                        }),
                    }
                }
            }
        }
        let gradients = params
            .iter()
            .enumerate()
            .map(|(i, &(weight, grad, len))| {
                let buffer = totals.get(i).or(share_acc.get(i)).unwrap_or_else(|| exe.buffer(grad)).clone();
                ParamGradient { weight, buffer, len }
            })
            .collect();
        // The buffers made since the plan (the batch, the accumulators, the kernels' scratch and
        // constants) are all counted by the context.
        let peak_bytes = exe.plan.peak_bytes + (ctx.owned_bytes() - owned_before);
        Ok(Self {
            batch,
            micro,
            graph,
            exe,
            x0,
            eps,
            t_index,
            t_value,
            labels,
            losses,
            gradients,
            shares,
            own,
            per_share,
            exchange,
            dispatches,
            peak_bytes,
        })
    }

    /// Writes a batch from the host: x0 and eps [B, C, H, W], t [B].
    pub fn upload(&self, ctx: &Context, x0: &[f32], t: &[u32], eps: &[f32]) -> Result<()> {
        self.upload_labelled(ctx, x0, t, eps, None)
    }

    /// `upload` with the class labels [B] of a class-conditional model (after any dropout).
    pub fn upload_labelled(
        &self,
        ctx: &Context,
        x0: &[f32],
        t: &[u32],
        eps: &[f32],
        labels: Option<&[f32]>,
    ) -> Result<()> {
        match (&self.labels, labels) {
            (Some(buf), Some(l)) if l.len() == self.batch => {
                ctx.queue.write_buffer(buf, 0, bytemuck::cast_slice(l))
            }
            (None, None) => {}
            (Some(_), _) => {
                return Err(Error::Shape(format!("a class-conditional step takes {} labels", self.batch)))
            }
            (None, Some(_)) => {
                return Err(Error::Shape("labels for a model without a class embedding".into()))
            }
        }
        let per_image: usize = self.graph.graph.shape(self.graph.sample)[1..].iter().product();
        if t.len() != self.batch || x0.len() != self.batch * per_image || eps.len() != x0.len() {
            return Err(Error::Shape(format!(
                "a batch of {} images of {per_image} values: got x0 {}, eps {}, t {}",
                self.batch,
                x0.len(),
                eps.len(),
                t.len()
            )));
        }
        let tv: Vec<f32> = t.iter().map(|&v| v as f32).collect();
        ctx.queue.write_buffer(&self.x0, 0, bytemuck::cast_slice(x0));
        ctx.queue.write_buffer(&self.eps, 0, bytemuck::cast_slice(eps));
        ctx.queue.write_buffer(&self.t_index, 0, bytemuck::cast_slice(t));
        ctx.queue.write_buffer(&self.t_value, 0, bytemuck::cast_slice(&tv));
        Ok(())
    }

    /// The batch's loss (the micro-batches' shares summed; reads back, so waits for the device).
    pub fn loss(&self, ctx: &Context) -> Result<f32> {
        let parts = ctx.read_buffer(&self.losses, self.own.len() * self.per_share)?;
        Ok(sum_losses(&parts, self.per_share))
    }
}

impl TrainStep {
    /// Every gradient read back as the file's tensor, by name (sorted).
    pub fn read_gradients(&self, ctx: &Context, unet: &UNet) -> Result<Vec<(String, HostTensor)>> {
        let mut out = vec![];
        for g in &self.gradients {
            let data = ctx.read_buffer(&g.buffer, g.len)?;
            out.extend(unet.bank.layouts[g.weight].to_file(&data)?);
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

/// The batch's loss from its micro-batches' (in batch order): each share's summed, then the
/// shares in order, as the gradients are, so every split of the work logs the same bits.
pub fn sum_losses(micro_losses: &[f32], per_share: usize) -> f32 {
    micro_losses.chunks(per_share.max(1)).map(|share| share.iter().sum::<f32>()).sum()
}

fn noise_table_buffer(ctx: &Context, rows: &[f32]) -> wgpu::Buffer {
    use wgpu::util::DeviceExt;
    ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("noise table"),
        contents: bytemuck::cast_slice(rows),
        usage: wgpu::BufferUsages::STORAGE,
    })
}
