//! Stable Diffusion text to image against diffusers' StableDiffusionPipeline
//! (tools/make_sd_pipeline_goldens.py): pipeline folders assembled from the tiny components the
//! model goldens use (CLIP's real tokenizer, SD 1.x- and 2.x-shaped text encoders and UNets, an
//! SD-shaped VAE) with SD 1.5's PNDM and SD 2.1's v-prediction DDIM; whole chains from given
//! latents, guided and not, square and not, compared after the decode.

use serde_json::Value;
use wgpu_diffusion::model::tensors::read_safetensors;
use wgpu_diffusion::pipeline::latent::Tiling;
use wgpu_diffusion::pipeline::text::{TextJob, TextPipeline, TextStart};

use crate::sd_pipeline::assemble;
use crate::*;

fn run_case(case: &Value) {
    let variant = case["variant"].as_str().unwrap();
    let pipeline = TextPipeline::open(&assemble(variant)).unwrap();
    let g = read_safetensors(&golden(&format!("sd_pipeline/{}", case["file"].as_str().unwrap()))).unwrap();
    let key = |k: &str| format!("{}{k}", case["prefix"].as_str().unwrap());
    let what = format!("{variant} {}", case["run"].as_str().unwrap());
    let prompts: Vec<String> =
        case["prompts"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
    // The tokens diffusers' encode_prompt made.
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let (ids, warnings) = pipeline.tokenize(&refs);
    let want: Vec<u32> = g[&key("prompt_ids")].data.iter().map(|&v| v as u32).collect();
    assert_eq!(ids, want, "{what}: prompt ids");
    assert!(warnings.is_empty());
    let steps = case["num_inference_steps"].as_u64().unwrap() as usize;
    let cfg = pipeline.scheduler(None).unwrap();
    let plan = wgpu_diffusion::diffusion::SamplerPlan::new(&cfg, steps, 0.0).unwrap();
    let want_ts: Vec<f32> = g[&key("timesteps")].data.clone();
    assert_eq!(plan.timesteps, want_ts, "{what}: timesteps");
    let negative =
        case["negative_prompt"].as_array().and_then(|a| a.first()).and_then(Value::as_str).unwrap_or("");
    let job = TextJob {
        prompts: prompts.clone(),
        image_prompts: (0..prompts.len()).collect(),
        negative: negative.to_string(),
        guidance_scale: case["guidance_scale"].as_f64().unwrap() as f32,
        plan,
        height: case["height"].as_u64().unwrap() as usize,
        width: case["width"].as_u64().unwrap() as usize,
        seed: 0,
        batch: prompts.len(),
        images: 0..prompts.len(),
        init_noise: Some(g[&key("latents_in")].data.clone()),
        tiling: Tiling::Auto,
        memory_budget: None,
        start: TextStart::Noise,
    };
    let mut loaded = pipeline.load(ctx()).unwrap();
    let out = loaded.run(ctx(), &job, true, &mut |_, _| {}, &mut |w| panic!("{w}")).unwrap();
    // The latents grow to ~18 on a random UNet at guidance 7.5: relative to their scale.
    let latents = out.latents.unwrap();
    assert_close(&format!("{what}: final latents"), &latents, &g[&key("final_latents")].data, 2e-3);
    let want = &g[&key("decoded")].data;
    let worst = out.images.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    eprintln!("{what}: worst decoded difference {worst:e}");
    assert_eq!(out.images.len(), want.len());
    assert!(worst <= 2e-3, "{what}: the decoded images differ from diffusers' by up to {worst:e}");
}

#[test]
fn stable_diffusion_pipelines_match_diffusers_after_the_decode() {
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(golden("sd_pipeline/cases.json")).unwrap()).unwrap();
    let cases = index["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    for case in cases {
        run_case(case);
    }
}
