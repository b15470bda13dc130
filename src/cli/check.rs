//! `sample --check`: the chain's first step op by op against the CPU references, naming the first
//! op whose output differs (the tool for a wrong picture: which kernel, at which layer).

use wgpu_diffusion::diffusion::{self, ChainInput, SamplerPlan};
use wgpu_diffusion::gpu::Context;
use wgpu_diffusion::model::{ModelFolder, UNet};
use wgpu_diffusion::{Error, Result};

use super::sample::SampleArgs;

/// An op differs where its worst element is off by more than this, relative to |reference| +
/// rms(reference) (the kernel tests ask 1e-4; one op from the device's own inputs does not drift).
pub const TOLERANCE: f64 = 1e-3;

pub fn run(
    args: &SampleArgs,
    folder: &ModelFolder,
    plan: &SamplerPlan,
    batch: usize,
    init_noise: Option<&[f32]>,
) -> Result<()> {
    let ctx = Context::new(&args.device.options()?)?;
    let mut unet = UNet::load(&ctx, folder)?;
    let input = ChainInput::all(args.seed, batch, init_noise);
    eprintln!(
        "{}: checking the first {} step of a batch of {batch} op by op on {}",
        folder.root.display(),
        args.scheduler,
        ctx.info.name
    );
    let rows = diffusion::check_first_step(&ctx, &mut unet, plan, &input)?;
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
