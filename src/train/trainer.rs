//! The training loop: each step's batch (`DeviceBatches`), gradients (`TrainStep`) and
//! optimizer step (`Optimizer`) recorded back to back, many steps a submission, all driven by the
//! optimizer's step counter on the device. Each step's loss and gradient norm are copied into a
//! log buffer, read back one submission late (the next is already queued), so the device never
//! waits for the host.

use std::ops::Range;
use std::sync::mpsc;

use crate::gpu::{record_all, Context, CopyOp, Cost, Dispatch};
use crate::io::dataset::Dataset;
use crate::model::UNet;
use crate::train::batch::{BatchLabels, DeviceBatches};
use crate::train::optimizer::state;
use crate::train::recipe::Recipe;
use crate::train::{Optimizer, StepOptions, TrainStep};
use crate::{Error, Result};

/// What one step logs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepLog {
    /// 1-based: the optimizer steps taken after it.
    pub step: u64,
    pub loss: f32,
    pub lr: f64,
    /// The global gradient norm before clipping.
    pub grad_norm: f32,
}

/// One of two alternating log buffers: a submission's steps write theirs, the host reads it
/// after the next submission is queued.
struct LogBuffers {
    device: wgpu::Buffer,
    staging: wgpu::Buffer,
    /// Per step of a submission: its loss shares and the norm into row j.
    copies: Vec<Dispatch>,
}

struct Pending {
    set: usize,
    steps: Range<u64>,
    index: wgpu::SubmissionIndex,
    mapped: mpsc::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>,
}

pub struct Trainer {
    pub recipe: Recipe,
    pub step: TrainStep,
    pub optimizer: Optimizer,
    pub batches: DeviceBatches,
    /// Steps submitted so far, counted from the run's start (a resumed run starts past zero).
    pub submitted: u64,
    /// One step after its batch: gradients, then the optimizer.
    body: Vec<Dispatch>,
    logs: [LogBuffers; 2],
    submissions: usize,
    pending: Option<Pending>,
    /// Where ranks share each step: every share's gradients of each weight, gathered, and the
    /// fixed-order sums of them into the step's gradients.
    shared: Option<Shared>,
}

/// A rank's view of a shared step: the gathered shares [shares, len] of each trained weight and
/// the dispatches that sum them, then the optimizer's.
struct Shared {
    gathered: Vec<wgpu::Buffer>,
    finish: Vec<Dispatch>,
}

/// What a rank computed of one step: its shares' gradients (flat, share after share, each in
/// `ShareExchange::offsets` order) and its micro-batches' losses. Ranks' parts, joined in rank
/// order, are the whole step's.
#[derive(Clone, Debug, PartialEq)]
pub struct SharePart {
    pub gradients: Vec<f32>,
    pub losses: Vec<f32>,
}

/// Floats a step logs: each micro-batch's loss share, then the gradient norm.
fn row_len(step: &TrainStep) -> usize {
    step.own.len() * step.per_share + 1
}

impl Trainer {
    /// A trainer for `unet` (its weights are trained in place) on `dataset`, with the noise
    /// schedule `alphas_cumprod`, at most `ring` steps a submission; a class-conditional model
    /// trains on `labels`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: &Context,
        unet: &mut UNet,
        alphas_cumprod: &[f64],
        dataset: &Dataset,
        recipe: &Recipe,
        memory_budget: u64,
        ring: usize,
        labels: Option<BatchLabels>,
    ) -> Result<Self> {
        Self::sharing(ctx, unet, alphas_cumprod, dataset, recipe, memory_budget, ring, labels, None)
    }

    /// `new` for one of several ranks sharing each step: this trainer computes the recipe's
    /// gradient shares `own` (`compute_shares`), the ranks exchange them, and each applies the
    /// whole step (`apply_shares`). None: every share, as `new`.
    #[allow(clippy::too_many_arguments)]
    pub fn sharing(
        ctx: &Context,
        unet: &mut UNet,
        alphas_cumprod: &[f64],
        dataset: &Dataset,
        recipe: &Recipe,
        memory_budget: u64,
        ring: usize,
        labels: Option<BatchLabels>,
        own: Option<Range<usize>>,
    ) -> Result<Self> {
        // Shared steps exchange gradients between steps: one step a submission.
        let ring = if own.is_some() { 1 } else { ring };
        let c = &unet.config;
        if (dataset.channels, dataset.size) != (c.in_channels, c.sample_size) {
            return Err(Error::Invalid(format!(
                "{}: images of [{}, {s}, {s}], the model takes [{}, {}, {}]",
                dataset.source,
                dataset.channels,
                c.in_channels,
                c.sample_size,
                c.sample_size,
                s = dataset.size
            )));
        }
        if c.out_channels != c.in_channels {
            return Err(Error::Invalid(format!(
                "a model with {} output channels for {} input channels cannot be trained to denoise",
                c.out_channels, c.in_channels
            )));
        }
        let options = StepOptions {
            prediction: recipe.prediction,
            memory_budget,
            shares: recipe.grad_shares,
            own,
            ..StepOptions::default()
        };
        let step = TrainStep::new(ctx, unet, alphas_cumprod, recipe.batch, &options)?;
        let rows = recipe.rows();
        // A class table learns `class_lr_scale` times faster than the weights it joins.
        let class_scale = recipe.class_lr_scale as f32;
        let optimizer = Optimizer::with_lr_scales(
            ctx,
            unet,
            &step.gradients,
            &recipe.adamw,
            &rows,
            recipe.grad_clip,
            recipe.ema.is_some(),
            &|name| if name.starts_with("class_embedding.") { class_scale } else { 1.0 },
        )?;
        let ring = ring.clamp(1, recipe.steps.max(1) as usize);
        let batches = DeviceBatches::new(
            ctx,
            dataset,
            &step,
            &optimizer.state,
            alphas_cumprod.len(),
            recipe.seed,
            recipe.random_flip,
            ring,
            labels,
        )?;
        let mut body = step.dispatches.clone();
        let shared = match &step.exchange {
            Some(_) => {
                let mut finish = vec![];
                let mut gathered = vec![];
                for g in &step.gradients {
                    let buf = ctx.scratch_buffer("gathered gradient shares", step.shares * g.len);
                    finish.push(crate::kernels::elementwise::sum_shares(
                        ctx,
                        g.len,
                        step.shares,
                        &buf,
                        &g.buffer,
                    )?);
                    gathered.push(buf);
                }
                finish.extend(optimizer.dispatches.iter().cloned());
                Some(Shared { gathered, finish })
            }
            None => {
                body.extend(optimizer.dispatches.iter().cloned());
                None
            }
        };
        let row = row_len(&step) as u64;
        let logs = [0, 1].map(|_| {
            let device = ctx.scratch_buffer("step logs", ring * row as usize);
            let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("step logs (read-back)"),
                size: 4 * ring as u64 * row,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let copies = (0..ring as u64)
                .map(|j| {
                    let at = 4 * j * row;
                    let c = vec![
                        CopyOp::buffer(&step.losses, 0, &device, at, 4 * (row - 1)),
                        CopyOp::buffer(
                            &optimizer.state,
                            4 * state::NORM as u64,
                            &device,
                            at + 4 * (row - 1),
                            4,
                        ),
                    ];
                    Dispatch::copies_only("step log", c, Cost::default())
                })
                .collect();
            LogBuffers { device, staging, copies }
        });
        Ok(Self {
            recipe: recipe.clone(),
            step,
            optimizer,
            batches,
            submitted: 0,
            body,
            logs,
            submissions: 0,
            pending: None,
            shared,
        })
    }

    /// A shared step's first half: the next step's batch and this rank's shares of its
    /// gradients, read back for the exchange.
    pub fn compute_shares(&mut self, ctx: &Context, dataset: &Dataset) -> Result<SharePart> {
        let x = self.step.exchange.as_ref().ok_or_else(|| Error::Invalid("not a shared trainer".into()))?;
        let k = self.submitted;
        self.batches.prepare(ctx, dataset, k..k + 1)?;
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        record_all(&mut enc, self.batches.dispatches.iter().chain(&self.body));
        ctx.queue.submit([enc.finish()]);
        let mut gradients = Vec::with_capacity(x.staging.len() * x.total_len);
        for b in &x.staging {
            gradients.extend(ctx.read_buffer(b, x.total_len)?);
        }
        let losses = ctx.read_buffer(&self.step.losses, self.step.own.len() * self.step.per_share)?;
        Ok(SharePart { gradients, losses })
    }

    /// A shared step's second half, on every rank alike: the whole step's shares (every rank's
    /// parts joined in rank order) summed in the fixed order, then clipping, AdamW and the EMA.
    pub fn apply_shares(&mut self, ctx: &Context, all: &SharePart) -> Result<StepLog> {
        let (Some(x), Some(shared)) = (&self.step.exchange, &self.shared) else {
            return Err(Error::Invalid("not a shared trainer".into()));
        };
        let shares = self.step.shares;
        if all.gradients.len() != shares * x.total_len || all.losses.len() != shares * self.step.per_share {
            return Err(Error::Shape(format!(
                "a step's shares: {} gradient values and {} losses, {shares} shares need {} and {}",
                all.gradients.len(),
                all.losses.len(),
                shares * x.total_len,
                shares * self.step.per_share
            )));
        }
        // Each weight's shares side by side: [shares, len].
        for ((g, &at), buf) in self.step.gradients.iter().zip(&x.offsets).zip(&shared.gathered) {
            let mut rows = Vec::with_capacity(shares * g.len);
            for s in 0..shares {
                let from = s * x.total_len + at;
                rows.extend_from_slice(&all.gradients[from..from + g.len]);
            }
            ctx.queue.write_buffer(buf, 0, bytemuck::cast_slice(&rows));
        }
        ctx.run(&shared.finish);
        let words = ctx.read_raw(&self.optimizer.state, 16)?;
        let norm = f32::from_bits(u32::from_le_bytes(
            words[4 * state::NORM..4 * state::NORM + 4].try_into().expect("4 bytes"),
        )); // ok: read 16
        self.submitted += 1;
        let step = self.submitted;
        Ok(StepLog {
            step,
            loss: crate::train::step::sum_losses(&all.losses, self.step.per_share),
            lr: self.recipe.schedule().lr_at(step),
            grad_norm: norm,
        })
    }

    /// Steps a submission holds at most.
    pub fn ring(&self) -> usize {
        self.batches.ring
    }

    /// Continues a run at step `steps_taken` (weights, moments and EMA already restored).
    pub fn resume_at(&mut self, ctx: &Context, steps_taken: u64) -> Result<()> {
        self.optimizer.set_steps_taken(ctx, steps_taken)?;
        self.submitted = steps_taken;
        Ok(())
    }

    /// Submits the next `n` steps (at most `ring`, never past the recipe's end) and returns the
    /// logs of the submission before, which the device has finished by the time this one runs.
    pub fn submit(&mut self, ctx: &Context, dataset: &Dataset, n: usize) -> Result<Vec<StepLog>> {
        let n = n.min(self.ring()).min((self.recipe.steps - self.submitted) as usize);
        if n == 0 {
            return self.finish(ctx);
        }
        let steps = self.submitted..self.submitted + n as u64;
        self.batches.prepare(ctx, dataset, steps.clone())?;
        let set = self.submissions % 2;
        let logs = &self.logs[set];
        let mut list = Vec::with_capacity(n * (self.body.len() + 4));
        for j in 0..n {
            list.extend(self.batches.dispatches.iter().cloned());
            list.extend(self.body.iter().cloned());
            list.push(logs.copies[j].clone());
        }
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        record_all(&mut enc, &list);
        let bytes = 4 * (n * row_len(&self.step)) as u64;
        enc.copy_buffer_to_buffer(&logs.device, 0, &logs.staging, 0, bytes);
        let index = ctx.queue.submit([enc.finish()]);
        let (tx, rx) = mpsc::channel();
        logs.staging.slice(..bytes).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        let before = self.pending.replace(Pending { set, steps, index, mapped: rx });
        self.submitted += n as u64;
        self.submissions += 1;
        match before {
            Some(p) => self.read_logs(ctx, p),
            None => Ok(vec![]),
        }
    }

    /// Waits for the last submission and returns its logs.
    pub fn finish(&mut self, ctx: &Context) -> Result<Vec<StepLog>> {
        match self.pending.take() {
            Some(p) => self.read_logs(ctx, p),
            None => Ok(vec![]),
        }
    }

    fn read_logs(&self, ctx: &Context, p: Pending) -> Result<Vec<StepLog>> {
        ctx.device
            .poll(wgpu::PollType::Wait { submission_index: Some(p.index), timeout: None })
            .map_err(|e| Error::Gpu(format!("device poll failed: {e}")))?;
        p.mapped
            .recv()
            .map_err(|_| Error::Gpu("the step logs' read-back was never answered".into()))?
            .map_err(|e| Error::Gpu(format!("the step logs' read-back failed: {e}")))?;
        let staging = &self.logs[p.set].staging;
        let row = row_len(&self.step);
        let n = (p.steps.end - p.steps.start) as usize;
        let values: Vec<f32> = {
            let view = staging
                .slice(..4 * (n * row) as u64)
                .get_mapped_range()
                .map_err(|e| Error::Gpu(format!("the step logs' mapping failed: {e}")))?;
            bytemuck::pod_collect_to_vec(&view)
        };
        staging.unmap();
        Ok(p.steps
            .zip(values.chunks(row))
            .map(|(k, r)| StepLog {
                step: k + 1,
                loss: crate::train::step::sum_losses(&r[..row - 1], self.step.per_share),
                lr: self.recipe.schedule().lr_at(k + 1),
                grad_norm: r[row - 1],
            })
            .collect())
    }
}
