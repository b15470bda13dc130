//! Samplers against diffusers (tools/make_sampler_goldens.py): timesteps, init_noise_sigma and every
//! step of every sampler and spacing on the device; whole chains on a tiny UNet; DDPM statistics.

mod chains;
mod guided;
mod img2img;
mod latent;
mod repaint;
mod steps;
mod text2img;
mod text_edit;

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/sd_pipeline.rs"]
mod sd_pipeline;
pub use common::*;

use std::path::PathBuf;

pub fn golden(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(path)
}
