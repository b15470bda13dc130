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
}

/// Floats a step logs: each micro-batch's loss share, then the gradient norm.
fn row_len(step: &TrainStep) -> usize {
    step.batch / step.micro + 1
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
        let options = StepOptions { prediction: recipe.prediction, max_micro: usize::MAX, memory_budget };
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
        body.extend(optimizer.dispatches.iter().cloned());
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
                loss: r[..row - 1].iter().sum(),
                lr: self.recipe.schedule().lr_at(k + 1),
                grad_norm: r[row - 1],
            })
            .collect())
    }
}
