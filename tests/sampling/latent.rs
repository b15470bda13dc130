//! Latent pipelines from diffusers folders (tools/make_latent_goldens.py): an LDMPipeline with a
//! VQModel and one with an AutoencoderKL, whole chains from given latents for three samplers,
//! decoded on the device after the chain as LDMPipeline decodes (`decode(latents / scaling)`),
//! within 2e-3 of diffusers; the final latents kept as `--save-latents` keeps them.

use wgpu_diffusion::diffusion::{SamplerKind, SamplerPlan, SchedulerConfig};
use wgpu_diffusion::model::tensors::read_safetensors;
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
        init_noise: Some(g["x_T"].data.clone()),
        ..Job::new(0, 2, Start::Chain { plan, img2img: None })
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

#[test]
fn the_decode_tiles_by_itself_past_the_memory_budget_and_refuses_what_cannot_run() {
    use wgpu_diffusion::pipeline::latent::{plan_decode, DecodePlan, Tiling};
    let pipeline = Pipeline::open(&golden("latent/ldm-kl")).unwrap();
    let mut loaded = pipeline.load(ctx()).unwrap();
    let vae = loaded.autoencoder.as_mut().unwrap();
    let whole = match plan_decode(ctx(), vae, (8, 8), 2, Tiling::Auto, None).unwrap() {
        DecodePlan::Whole { batch } => batch,
        other => panic!("{other:?}"),
    };
    assert_eq!(whole, 2);
    // diffusers' tiles are the whole 8x8 latents here: --vae-tiling splits nothing.
    assert_eq!(plan_decode(ctx(), vae, (8, 8), 2, Tiling::On, None).unwrap(), DecodePlan::Whole { batch: 2 });
    let (peak, _) = vae.plan_bytes(ctx(), wgpu_diffusion::model::vae::Stage::DecodeLatents, 1, 8, 8).unwrap();
    match plan_decode(ctx(), vae, (8, 8), 2, Tiling::Auto, Some(peak - 1)).unwrap() {
        DecodePlan::Tiled { plan, batch, reason } => {
            assert!(plan.tile == 4 && batch >= 1, "{reason}");
            assert!(reason.contains("tiles of 4x4 latents") && reason.contains("budget"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let err = plan_decode(ctx(), vae, (8, 8), 2, Tiling::Auto, Some(0)).unwrap_err().to_string();
    assert!(err.contains("cannot run") && err.contains("not even in tiles"), "{err}");
    // A run under that budget decodes in tiles and writes finite images of the right size.
    let plan =
        SamplerPlan::new(&SchedulerConfig::resolve(SamplerKind::Ddim, None, "d").unwrap(), 2, 0.0).unwrap();
    let job = Job { memory_budget: Some(peak - 1), ..Job::new(0, 2, Start::Chain { plan, img2img: None }) };
    let out = loaded.run(ctx(), &job, &mut |_, _| {}).unwrap();
    assert_eq!(out.len(), 2 * 3 * 64 * 64);
    assert!(out.iter().all(|v| v.is_finite()));
}

#[test]
fn kl_latent_img2img_matches_diffusers() {
    use wgpu_diffusion::pipeline::latent::Posterior;
    let dir = golden("latent/ldm-kl");
    let pipeline = Pipeline::open(&dir).unwrap();
    let g = read_safetensors(&dir.join("img2img-ddim-10-0.6.safetensors")).unwrap();
    let file = SchedulerConfig::parse_file(&std::fs::read_to_string(dir.join("ddim-10.json")).unwrap(), "c")
        .unwrap();
    let cfg = SchedulerConfig::resolve(SamplerKind::Ddim, Some(&file), "c").unwrap();
    let p = SamplerPlan::new(&cfg, 10, 0.0).unwrap().img2img(0.6).unwrap().unwrap();
    // The input image in pixels; the run encodes it (the posterior's mode) before the chain.
    let start = Start::Chain { plan: p.plan, img2img: Some((g["image"].data.clone(), p.noising)) };
    let job = Job {
        init_noise: Some(g["noise"].data.clone()),
        posterior: Posterior::Mode,
        ..Job::new(0, 2, start)
    };
    let mut loaded = pipeline.load(ctx()).unwrap();
    let out = loaded.run(ctx(), &job, &mut |_, _| {}).unwrap();
    assert_close("KL img2img, DDIM 10 steps at strength 0.6", &out, &g["decoded"].data, 2e-3);
}

#[test]
fn latent_images_depend_only_on_seed_and_index() {
    // Shards of a batch make the same bits; image 0 alone the same values, for a VQ pipeline
    // with a sampler that adds noise every step.
    let pipeline = Pipeline::open(&golden("latent/ldm-vq")).unwrap();
    let mut loaded = pipeline.load(ctx()).unwrap();
    let plan = pipeline.sampler_plan("euler-a", 3, 0.0).unwrap();
    let run = |loaded: &mut wgpu_diffusion::pipeline::Loaded,
               batch: usize,
               images: std::ops::Range<usize>| {
        let job = Job { images, ..Job::new(4, batch, Start::Chain { plan: plan.clone(), img2img: None }) };
        loaded.run(ctx(), &job, &mut |_, _| {}).unwrap()
    };
    let per = 3 * 32 * 32;
    let whole = run(&mut loaded, 7, 0..7);
    assert_eq!(run(&mut loaded, 7, 3..7), whole[3 * per..], "a shard of the batch");
    assert_close("image 0 alone", &run(&mut loaded, 1, 0..1), &whole[..per], 1e-5);
}
