//! Latent pipelines from diffusers folders (tools/make_latent_goldens.py): an LDMPipeline with a
//! VQModel and one with an AutoencoderKL, whole chains from given latents for three samplers,
//! decoded on the device after the chain as LDMPipeline decodes (`decode(latents / scaling)`),
//! within 2e-3 of diffusers; the final latents kept as `--save-latents` keeps them.

use wgpu_diffusion::diffusion::{SamplerKind, SamplerPlan, SchedulerConfig};
use wgpu_diffusion::model::tensors::read_safetensors;
use wgpu_diffusion::pipeline::latent::Posterior;
use wgpu_diffusion::pipeline::{Job, Pipeline, Start};

use crate::*;

fn chain(name: &str, sampler: &str, steps: usize) {
    let dir = golden(&format!("latent/{name}"));
    let pipeline = Pipeline::open(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(pipeline.is_latent());
    let path = dir.join(format!("{sampler}-{steps}.json"));
    let file = SchedulerConfig::parse_file(&std::fs::read_to_string(&path).unwrap(), "config").unwrap();
    let cfg = SchedulerConfig::resolve(SamplerKind::parse(sampler).unwrap(), Some(&file), "config").unwrap();
    let plan = SamplerPlan::new(&cfg, steps, 0.0).unwrap();
    let g = read_safetensors(&dir.join(format!("{sampler}-{steps}.safetensors"))).unwrap();
    let job = Job {
        seed: 0,
        batch: 2,
        images: 0..2,
        init_noise: Some(g["x_T"].data.clone()),
        start: Start::Chain { plan, img2img: None },
        classes: None,
        posterior: Posterior::Sample,
    };
    let mut loaded = pipeline.load(ctx()).unwrap();
    let out = loaded.run_keeping_latents(ctx(), &job, true, &mut |_, _| {}).unwrap();
    let what = format!("{name} {sampler} {steps} steps");
    assert_close(&format!("{what}: final latents"), out.latents.as_ref().unwrap(), &g["latents"].data, 2e-3);
    assert_close(&format!("{what}: decoded images"), &out.images, &g["image"].data, 2e-3);
}

#[test]
fn vq_latent_pipeline_chains_match_diffusers() {
    chain("ldm-vq", "ddim", 10);
    chain("ldm-vq", "dpm++2m", 12);
    chain("ldm-vq", "euler", 10);
}

#[test]
fn kl_latent_pipeline_chains_match_diffusers() {
    chain("ldm-kl", "ddim", 10);
    chain("ldm-kl", "dpm++2m", 12);
    chain("ldm-kl", "euler", 10);
}
