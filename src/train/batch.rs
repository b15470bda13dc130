//! Each step's batch made on the device, into a `TrainStep`'s inputs: x0 gathered from the
//! dataset (which lives on the device when it fits one binding, else each submission's images
//! stream into a ring), eps standard normal and t uniform in [0, T), both Philox numbers keyed by
//! (seed, step, element) with the step read from the optimizer's counter. The host only writes
//! each submission's rows of the index ring (`DataOrder`) before submitting it.

use std::ops::Range;

use crate::gpu::{Context, Dispatch};
use crate::io::dataset::Dataset;
use crate::io::npy::Values;
use crate::kernels::data::{self, Gather, Pixels, FLIP};
use crate::kernels::rng::{self, NoiseKey};
use crate::train::order::{ClassDropout, DataOrder};
use crate::train::TrainStep;
use crate::{Error, Result};

/// A class-conditional run's labels: the model's class id of every dataset image, and the
/// dropout that trains the null class.
#[derive(Clone, Debug)]
pub struct BatchLabels {
    pub ids: Vec<u32>,
    pub dropout: ClassDropout,
}

pub struct DeviceBatches {
    /// Steps the index ring holds: a submission takes at most this many.
    pub ring: usize,
    /// Whether the whole dataset is on the device (else each submission's images stream in).
    pub resident: bool,
    pub order: DataOrder,
    images: wgpu::Buffer,
    indices: wgpu::Buffer,
    /// The labels and their ring (each submission's steps' labels, after the dropout).
    labels: Option<(BatchLabels, wgpu::Buffer)>,
    /// Makes a step's batch: gather, noise, timesteps (and labels).
    pub dispatches: Vec<Dispatch>,
    batch: usize,
    per_image: usize,
}

/// The dataset's values as the kernel reads them (8-bit values packed four to a word).
fn words(values: &Values, range: Range<usize>) -> Vec<u32> {
    match values {
        Values::U8(v) => data::pack_u8(&v[range]),
        Values::F32(v) => v[range].iter().map(|x| x.to_bits()).collect(),
    }
}

impl DeviceBatches {
    /// Batches for `step` (its batch size and inputs) from `dataset`, with the optimizer's step
    /// counter `counter`, over `timesteps` training timesteps; at most `ring` steps a submission.
    /// A class-conditional step needs `labels`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: &Context,
        dataset: &Dataset,
        step: &TrainStep,
        counter: &wgpu::Buffer,
        timesteps: usize,
        seed: u64,
        random_flip: bool,
        ring: usize,
        labels: Option<BatchLabels>,
    ) -> Result<Self> {
        let per_image = dataset.channels * dataset.size * dataset.size;
        let batch = step.batch;
        let pixels = match dataset.values {
            Values::U8(_) => Pixels::U8,
            Values::F32(_) => Pixels::F32,
        };
        let bytes_per_value = if pixels == Pixels::U8 { 1 } else { 4 };
        let whole = (dataset.count * per_image * bytes_per_value) as u64;
        let resident = whole <= ctx.max_binding_bytes();
        let ring = ring.max(1);
        let stored = if resident { dataset.count } else { ring * batch };
        let word_count = (stored * per_image * bytes_per_value).div_ceil(4);
        if 4 * word_count as u64 > ctx.max_binding_bytes() {
            return Err(Error::Shape(format!(
                "{} steps of {batch} images do not fit one binding of this device: use a smaller batch",
                ring
            )));
        }
        let images = ctx.scratch_buffer("dataset", word_count);
        if resident {
            ctx.queue.write_buffer(
                &images,
                0,
                bytemuck::cast_slice(&words(&dataset.values, 0..dataset.count * per_image)),
            );
        }
        let indices = ctx.scratch_buffer("index ring", ring * batch);
        let g = Gather { pixels, images: stored, per_image, width: dataset.size, batch, ring };
        let key = NoiseKey { seed, stream_base: 0, substream: 0 };
        let mut dispatches = vec![
            data::gather_images(ctx, &g, &images, &indices, counter, &step.x0)?,
            rng::normal(ctx, key, batch, per_image, Some(counter), &step.eps)?,
            rng::timesteps(ctx, key, batch, timesteps, counter, &step.t_index, &step.t_value)?,
        ];
        let labels = match (labels, &step.labels) {
            (Some(l), Some(out)) => {
                if l.ids.len() != dataset.count {
                    return Err(Error::Invalid(format!(
                        "{} labels for the {} images of {}",
                        l.ids.len(),
                        dataset.count,
                        dataset.source
                    )));
                }
                let label_ring = ctx.scratch_buffer("label ring", ring * batch);
                dispatches.push(data::gather_labels(ctx, batch, ring, &label_ring, counter, out)?);
                Some((l, label_ring))
            }
            (None, None) => None,
            (None, Some(_)) => {
                return Err(Error::Invalid(format!(
                    "{}: the model is class-conditional, but the data has no labels",
                    dataset.source
                )))
            }
            (Some(_), None) => {
                return Err(Error::Invalid("labels for a model without a class embedding".into()))
            }
        };
        Ok(Self {
            ring,
            resident,
            order: DataOrder::new(seed, dataset.count, batch, random_flip),
            images,
            indices,
            labels,
            dispatches,
            batch,
            per_image,
        })
    }

    /// Writes the index ring's rows (and, streaming, the images) of `steps` (0-based, at most
    /// `ring` of them), before the submission that runs them.
    pub fn prepare(&mut self, ctx: &Context, dataset: &Dataset, steps: Range<u64>) -> Result<()> {
        if steps.end - steps.start > self.ring as u64 {
            return Err(Error::Invalid(format!(
                "{} steps in a submission of at most {}",
                steps.end - steps.start,
                self.ring
            )));
        }
        let mut rows = vec![0u32; self.ring * self.batch];
        let mut label_rows = vec![0.0f32; self.ring * self.batch];
        let mut streamed = vec![];
        for k in steps.clone() {
            let slot = (k % self.ring as u64) as usize;
            let mut batch = self.order.batch(k);
            if let Some((l, _)) = &self.labels {
                let ids: Vec<u32> = batch.iter().map(|&e| l.ids[(e & !FLIP) as usize]).collect();
                for (i, id) in l.dropout.apply(k, &ids).into_iter().enumerate() {
                    label_rows[slot * self.batch + i] = id as f32;
                }
            }
            if !self.resident {
                for (i, entry) in batch.iter_mut().enumerate() {
                    let image = (*entry & !FLIP) as usize;
                    streamed.push((slot * self.batch + i, image));
                    *entry = (slot * self.batch + i) as u32 | (*entry & FLIP);
                }
            }
            rows[slot * self.batch..(slot + 1) * self.batch].copy_from_slice(&batch);
        }
        // Rows of steps outside this submission are rewritten too, unused: the previous
        // submission, which read them, runs before this write (queue order).
        ctx.queue.write_buffer(&self.indices, 0, bytemuck::cast_slice(&rows));
        if let Some((_, ring)) = &self.labels {
            ctx.queue.write_buffer(ring, 0, bytemuck::cast_slice(&label_rows));
        }
        if !self.resident {
            let per = self.per_image;
            let mut values = match &dataset.values {
                Values::U8(_) => Values::U8(vec![0; self.ring * self.batch * per]),
                Values::F32(_) => Values::F32(vec![0.0; self.ring * self.batch * per]),
            };
            for (at, image) in streamed {
                match (&mut values, &dataset.values) {
                    (Values::U8(dst), Values::U8(src)) => {
                        dst[at * per..(at + 1) * per].copy_from_slice(&src[image * per..(image + 1) * per])
                    }
                    (Values::F32(dst), Values::F32(src)) => {
                        dst[at * per..(at + 1) * per].copy_from_slice(&src[image * per..(image + 1) * per])
                    }
                    _ => unreachable!("same kind"), // ok: made above from the same kind
                }
            }
            let n = self.ring * self.batch * per;
            ctx.queue.write_buffer(&self.images, 0, bytemuck::cast_slice(&words(&values, 0..n)));
        }
        Ok(())
    }
}
