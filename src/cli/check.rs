//! `sample --check`: the chain's first step op by op against the CPU references, naming the first
//! op whose output differs (the tool for a wrong picture: which kernel, at which layer).

use wgpu_diffusion::gpu::Context;
use wgpu_diffusion::pipeline::{Job, Pipeline};
use wgpu_diffusion::{Error, Result};

use super::sample::SampleArgs;

/// An op differs where its worst element is off by more than this, relative to |reference| +
/// rms(reference) (the kernel tests ask 1e-4; one op from the device's own inputs does not drift).
pub const TOLERANCE: f64 = 1e-3;

pub fn run(args: &SampleArgs, pipeline: &Pipeline, job: &Job) -> Result<()> {
    let ctx = Context::new(&args.device.options()?)?;
    let mut loaded = pipeline.load(&ctx)?;
    eprintln!(
        "{}: checking the first {} step of a batch of {} op by op on {}",
        pipeline.folder.root.display(),
        args.sampler(),
        job.batch,
        ctx.info.name
    );
    let rows = loaded.check_first_step(&ctx, job)?;
    for r in &rows {
        let mark = if r.error <= TOLERANCE { "ok  " } else { "DIFF" };
        println!("{mark} {:>9.2e}  {} ({})", r.error, r.layer, r.kind);
    }
    match rows.iter().find(|r| r.error > TOLERANCE) {
        Some(r) => Err(Error::Invalid(format!(
            "{} ({}) is the first op whose output differs from its CPU reference: element {} is {}, the reference says {} (relative error {:.1e} > {TOLERANCE:.0e})",
            r.layer, r.kind, r.at, r.got, r.want, r.error
        ))),
        None => {
            let worst = rows.iter().map(|r| r.error).fold(0.0, f64::max);
            eprintln!("all {} ops within {TOLERANCE:.0e} of their CPU references (worst {worst:.1e})", rows.len());
            Ok(())
        }
    }
}
