//! RePaint inpainting (Lugmayr et al. 2022) as diffusers' `RePaintScheduler` and `RePaintPipeline`
//! compute it (../shared/EDITING.md sections 1-4): the timestep list with its jumps, each step a
//! DDIM step of the unknown region joined with the noised original through the mask, each jump
//! back an undo step that renoises. On the device it is one chain: steps and undo steps are rows
//! of two tables read by counters, recorded many to a submission, nothing read back until the end.

use std::ops::Range;

use super::chain::{check_conditioning, micro_batch, step_ends, Conditioning, Guide, StepState};
use super::samplers::SchedulerConfig;
use crate::gpu::{Context, CopyOp, Cost, Dispatch, Tensor};
use crate::graph::replay::replay_sequence;
use crate::kernels::diffusion::{self, MixBuffers, MixRow, Prediction, StepCoeffs};
use crate::kernels::rng;
use crate::model::UNet;
use crate::{Error, Result};

/// diffusers' `RePaintScheduler.set_timesteps(N, jump_length, jump_n_sample)`: N = min(T, N);
/// a jump back of `jump_length` levels `jump_n_sample - 1` times at every `jump_length`-th level,
/// all times T // N.
pub fn timesteps(train: usize, steps: usize, jump_length: usize, jump_n_sample: usize) -> Vec<i64> {
    let n = steps.min(train);
    let mut jumps = vec![0usize; n];
    if jump_length > 0 {
        for j in (0..n.saturating_sub(jump_length)).step_by(jump_length) {
            jumps[j] = jump_n_sample.saturating_sub(1);
        }
    }
    let mut out = vec![];
    let mut t = n;
    while t >= 1 {
        t -= 1;
        out.push(t);
        if jumps[t] > 0 {
            jumps[t] -= 1;
            for _ in 0..jump_length {
                t += 1;
                out.push(t);
            }
        }
    }
    let stride = (train / n.max(1)) as i64;
    out.into_iter().map(|t| t as i64 * stride).collect()
}

/// One entry of the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A UNet evaluation and a step down to t - T // N.
    Step { t: i64 },
    /// A jump back up: T // N renoisings.
    Undo { t_last: i64 },
}

/// RePaint's whole schedule as table rows.
#[derive(Clone, Debug)]
pub struct RepaintPlan {
    pub entries: Vec<Entry>,
    /// Per step: DDIM's row (model input, timestep, the unknown region's update).
    pub steps: Vec<StepCoeffs>,
    /// Per step its join, per undo its T // N renoisings, in chain order.
    pub mixes: Vec<MixRow>,
    /// Renoisings an undo step makes (T // N).
    pub per_undo: usize,
    /// Standard normals the chain draws: x_T, one a step, `per_undo` an undo step.
    pub draws: usize,
}

impl RepaintPlan {
    /// The plan for `steps` inference steps, jumps of `jump_length` levels repeated
    /// `jump_n_sample` times, and `eta` (the pipeline's, which it writes into the scheduler).
    pub fn new(
        cfg: &SchedulerConfig,
        steps: usize,
        jump_length: usize,
        jump_n_sample: usize,
        eta: f64,
    ) -> Result<Self> {
        let train = cfg.num_train_timesteps()?;
        if steps == 0 || steps > train {
            return Err(Error::Invalid(format!(
                "--steps {steps}: must be between 1 and num_train_timesteps ({train})"
            )));
        }
        if jump_length == 0 || jump_n_sample == 0 {
            return Err(Error::Invalid("--jump-length and --jump-n-sample must be at least 1".into()));
        }
        if !(0.0..=1.0).contains(&eta) {
            return Err(Error::Invalid(format!("--eta {eta}: must be between 0 and 1")));
        }
        if cfg.prediction()? != Prediction::Epsilon {
            return Err(Error::Invalid(
                "RePaint takes epsilon-prediction models (diffusers' RePaintScheduler has no prediction_type)".into(),
            ));
        }
        let betas: Vec<f64> = cfg.betas()?.iter().map(|&b| b as f64).collect();
        let ac: Vec<f64> = cfg.alphas_cumprod()?.iter().map(|&a| a as f64).collect();
        // RePaint clips to [-1, 1] when clip_sample (its range is fixed).
        let clip = cfg.clip()?.map(|_| 1.0);
        let stride = (train / steps) as i64;
        let list = timesteps(train, steps, jump_length, jump_n_sample);
        let (mut entries, mut rows, mut mixes) = (vec![], vec![], vec![]);
        let mut t_last = list[0] + 1;
        for &t in &list {
            if t < t_last {
                let prev = t - stride;
                let (a, a_prev) = (ac[t as usize], if prev >= 0 { ac[prev as usize] } else { 1.0 });
                // The unknown region: DDIM with the model's eps, noise sigma z only where t > 0.
                let mut row = StepCoeffs::ddim(a, a_prev, Prediction::Epsilon, clip, eta, false);
                if t == 0 || eta == 0.0 {
                    row.noise_scale = 0.0;
                }
                rows.push(StepCoeffs { timestep: t as f32, ..row });
                mixes.push(MixRow {
                    known_orig: a_prev.sqrt() as f32,
                    known_z: (1.0 - a_prev).sqrt() as f32,
                    keep: 1.0,
                    fresh: 0.0,
                    use_mask: 1.0,
                    _pad: [0.0; 3],
                });
                entries.push(Entry::Step { t });
            } else {
                // undo_step(x, t_last): betas[t_last + i], one level above where x is (the quirk
                // diffusers has, kept).
                for i in 0..stride {
                    let b = *betas.get((t_last + i) as usize).ok_or_else(|| {
                        Error::Invalid(format!("RePaint's undo step reads beta {} of {train}", t_last + i))
                    })?;
                    mixes.push(MixRow {
                        keep: (1.0 - b).sqrt() as f32,
                        fresh: b.sqrt() as f32,
                        ..MixRow::default()
                    });
                }
                entries.push(Entry::Undo { t_last });
            }
            t_last = t;
        }
        let per_undo = stride as usize;
        let undos = entries.iter().filter(|e| matches!(e, Entry::Undo { .. })).count();
        let draws = 1 + rows.len() + per_undo * undos;
        Ok(Self { entries, steps: rows, mixes, per_undo, draws })
    }
}

impl RepaintPlan {
    /// The rows of the first step at `t`: its DDIM row and its join.
    pub fn step_at(&self, t: i64) -> Option<(StepCoeffs, MixRow)> {
        let (mut step, mut mix) = (0, 0);
        for e in &self.entries {
            match *e {
                Entry::Step { t: s } if s == t => return Some((self.steps[step], self.mixes[mix])),
                Entry::Step { .. } => (step, mix) = (step + 1, mix + 1),
                Entry::Undo { .. } => mix += self.per_undo,
            }
        }
        None
    }

    /// The renoising rows of the first undo step from `t_last`.
    pub fn undo_at(&self, t_last: i64) -> Option<&[MixRow]> {
        let mut mix = 0;
        for e in &self.entries {
            match *e {
                Entry::Undo { t_last: u } if u == t_last => {
                    return Some(&self.mixes[mix..mix + self.per_undo])
                }
                Entry::Undo { .. } => mix += self.per_undo,
                Entry::Step { .. } => mix += 1,
            }
        }
        None
    }
}

/// What an inpainting chain works on.
pub struct InpaintInput<'a> {
    pub seed: u64,
    /// Results in the whole run; `images` those made here (as `ChainInput`).
    pub batch: usize,
    pub images: Range<usize>,
    /// The image [C, H, W] in [-1, 1] and the mask [C, H, W] (1 keeps, 0 fills).
    pub image: &'a [f32],
    pub mask: &'a [f32],
    /// Every standard normal the chain draws, [draws, batch, C, H, W] in draw order (tests give
    /// diffusers' own); None: Philox keyed by (seed, image index, draw).
    pub noise_tape: Option<&'a [f32]>,
    /// The class of each image, for a class-conditional model (as the sampling chain's).
    pub conditioning: Option<Conditioning<'a>>,
}

/// Runs RePaint for `input.images` and returns the results [images, C, H, W].
pub fn inpaint(
    ctx: &Context,
    unet: &mut UNet,
    plan: &RepaintPlan,
    input: &InpaintInput,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<f32>> {
    let cfg = &unet.config;
    let per = cfg.in_channels * cfg.sample_size * cfg.sample_size;
    if input.image.len() != per || input.mask.len() != per {
        return Err(Error::Shape(format!(
            "the image has {} values and the mask {}, the model takes {per}",
            input.image.len(),
            input.mask.len()
        )));
    }
    if let Some(tape) = input.noise_tape {
        if tape.len() != plan.draws * input.batch * per {
            return Err(Error::Shape(format!(
                "a noise tape of {} values for {} draws",
                tape.len(),
                plan.draws
            )));
        }
    }
    check_conditioning(unet, input.conditioning.as_ref(), input.batch)?;
    let copies = input.conditioning.as_ref().map_or(1, Conditioning::copies);
    let micro = micro_batch(ctx, unet, input.batch, copies)?;
    let net = unet.executable(ctx, micro * copies)?;
    let len = micro * per;
    let guided = if copies > 1 { Some(ctx.zeros(&[len])?) } else { None };
    let guide = match (input.conditioning.and_then(|c| c.guidance), &guided) {
        (Some(g), Some(out)) => Some(Guide { scale: g.scale, out: &out.buffer }),
        _ => None,
    };
    let repeat = |v: &[f32]| -> Result<Tensor> {
        ctx.upload(&v.iter().copied().cycle().take(len).collect::<Vec<_>>(), &[len])
    };
    let (orig, mask) = (repeat(input.image)?, repeat(input.mask)?);
    let (x, noise, history) =
        (ctx.zeros(&[len])?, ctx.zeros(&[len])?, ctx.zeros(&[diffusion::HISTORY_SLOTS * len])?);
    let step_table =
        ctx.upload(bytemuck::cast_slice(&plan.steps), &[plan.steps.len() * diffusion::ROW_LEN])?;
    let mix_table = ctx.upload(bytemuck::cast_slice(&plan.mixes), &[plan.mixes.len() * 8])?;
    let counters = [ctx.zeros(&[1])?, ctx.zeros(&[1])?, ctx.zeros(&[1])?];
    let [step_counter, mix_counter, draw_counter] = &counters;
    let tape = input.noise_tape.map(|t| ctx.upload(t, &[t.len()])).transpose()?;
    // The chain's parts: a UNet evaluation, the step's update, the join or renoising, a draw.
    let state = StepState {
        x: &x.buffer,
        noise: &noise.buffer,
        history: &history.buffer,
        table: &step_table.buffer,
        counter: &step_counter.buffer,
    };
    let ends = step_ends(ctx, &net, len, plan.steps.len(), &state, guide)?;
    let update = ends.update();
    let mut unet_part = vec![ends.prepare];
    unet_part.extend(net.exe.dispatches.iter().cloned());
    let mb = MixBuffers {
        x: &x.buffer,
        orig: &orig.buffer,
        mask: &mask.buffer,
        noise: &noise.buffer,
        rows: &mix_table.buffer,
        counter: &mix_counter.buffer,
    };
    let mix = [
        diffusion::repaint_mix(ctx, len, plan.mixes.len(), &mb)?,
        diffusion::advance_step(ctx, &mix_counter.buffer)?,
    ];
    let images = input.images.clone();
    let total = plan.entries.len() * images.len().div_ceil(micro);
    let mut done = 0;
    let mut out = Vec::with_capacity(images.len() * per);
    for start in images.clone().step_by(micro) {
        let n = micro.min(images.end - start);
        for c in &counters {
            ctx.queue.write_buffer(&c.buffer, 0, bytemuck::cast_slice(&[0u32]));
        }
        if let (Some(c), Some(buf)) = (&input.conditioning, net.class_labels_buffer()) {
            ctx.queue.write_buffer(buf, 0, bytemuck::cast_slice(&c.rows(start, n, micro)));
        }
        // The draws of this micro-batch: Philox keyed by the global image index, or tape slices.
        let draws: Vec<Vec<Dispatch>> = match &tape {
            Some(t) => (0..plan.draws)
                .map(|d| {
                    let at = ((d * input.batch + start) * per * 4) as u64;
                    let size = (n * per * 4) as u64;
                    let c = CopyOp::buffer(&t.buffer, at, &noise.buffer, 0, size);
                    vec![Dispatch::copies_only("noise tape", vec![c], Cost::default())]
                })
                .collect(),
            None => {
                let key = rng::NoiseKey { seed: input.seed, stream_base: start as u32, substream: 0 };
                vec![vec![
                    rng::normal(ctx, key, micro, per, Some(&draw_counter.buffer), &noise.buffer)?,
                    diffusion::advance_step(ctx, &draw_counter.buffer)?,
                ]]
            }
        };
        // x_T is the first draw.
        let mut head: Vec<Dispatch> = draws[0].clone();
        let to_x = CopyOp::buffer(&noise.buffer, 0, &x.buffer, 0, (len * 4) as u64);
        head.push(Dispatch::copies_only("x_T", vec![to_x], Cost::default()));
        // Each entry's dispatches: a step is the UNet, its draw, the update and the join; an
        // undo step is its draws, each with a renoising. With Philox every step (and every undo
        // step) records the same list; a tape's copies differ by draw, so each entry has its own.
        let mut next = 1; // the head took draw 0
        let mut entry_list = |e: &Entry| -> Vec<Dispatch> {
            let mut draw = || {
                let d = if tape.is_some() { next } else { 0 };
                next += 1;
                draws[d].clone()
            };
            match e {
                Entry::Step { .. } => {
                    let mut l = unet_part.clone();
                    l.extend(draw());
                    l.extend(update.iter().cloned());
                    l.extend(mix.iter().cloned());
                    l
                }
                Entry::Undo { .. } => {
                    (0..plan.per_undo).flat_map(|_| draw().into_iter().chain(mix.iter().cloned())).collect()
                }
            }
        };
        let (lists, sequence): (Vec<Vec<Dispatch>>, Vec<usize>) = if tape.is_some() {
            (plan.entries.iter().map(&mut entry_list).collect(), (0..plan.entries.len()).collect())
        } else {
            let kinds = vec![entry_list(&Entry::Step { t: 0 }), entry_list(&Entry::Undo { t_last: 0 })];
            (kinds, plan.entries.iter().map(|e| matches!(e, Entry::Undo { .. }) as usize).collect())
        };
        let kinds: Vec<&[Dispatch]> = lists.iter().map(|l| l.as_slice()).collect();
        replay_sequence(ctx, &head, &kinds, &sequence, &mut |k| {
            done += k;
            progress(done, total);
        })?;
        let y = ctx.read_buffer(&x.buffer, len)?;
        out.extend_from_slice(&y[..n * per]);
    }
    Ok(out)
}
