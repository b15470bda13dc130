//! The one executor that replays a step: a list of dispatches recorded `steps` times, many steps
//! per submission, nothing read back in between (the step's own state, such as the step counter,
//! lives on the device). The sampling chain runs on it; so will the training step.

use std::time::Instant;

use crate::gpu::{record_all, Context, Dispatch};
use crate::Result;

/// A submission is sized to about this much work, so progress moves on slow devices while fast
/// ones get many steps per submission.
const SECONDS_PER_SUBMISSION: f64 = 0.5;
const MAX_STEPS_PER_SUBMISSION: usize = 64;

/// Records `first` once, then `step` `steps` times: the first step alone (to time it), then chunks
/// of about SECONDS_PER_SUBMISSION each. `progress` hears how many steps each submission finished.
pub fn replay(
    ctx: &Context,
    first: &[Dispatch],
    step: &[Dispatch],
    steps: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<()> {
    replay_sequence(ctx, first, &[step], &vec![0; steps], progress)
}

/// `replay` for a chain of several kinds of step (RePaint's steps and undo steps): records
/// `first`, then `kinds[k]` for each k of `sequence`, in submissions as `replay` makes them.
pub fn replay_sequence(
    ctx: &Context,
    first: &[Dispatch],
    kinds: &[&[Dispatch]],
    sequence: &[usize],
    progress: &mut dyn FnMut(usize),
) -> Result<()> {
    let steps = sequence.len();
    let mut recorded = 0;
    let mut per_step = f64::INFINITY;
    while recorded < steps {
        let chunk = if per_step.is_finite() {
            ((SECONDS_PER_SUBMISSION / per_step) as usize).clamp(1, MAX_STEPS_PER_SUBMISSION)
        } else {
            1
        };
        let chunk = chunk.min(steps - recorded);
        let t0 = Instant::now();
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        let head = if recorded == 0 { first } else { &[] };
        let body = sequence[recorded..recorded + chunk].iter().flat_map(|&k| kinds[k]);
        record_all(&mut enc, head.iter().chain(body));
        ctx.queue.submit([enc.finish()]);
        ctx.wait()?;
        per_step = t0.elapsed().as_secs_f64() / chunk as f64;
        recorded += chunk;
        progress(chunk);
    }
    Ok(())
}
