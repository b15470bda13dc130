//! Stable Diffusion image to image and inpainting against diffusers' StableDiffusionImg2ImgPipeline
//! and StableDiffusionInpaintPipeline (tools/make_sd_edit_goldens.py): the golden PNGs read as the
//! pipelines' processors read them, the posteriors at their mode and the noise given, then whole
//! runs compared after the decode: img2img on SD 1.x- and 2.x-shaped folders (PNDM and
//! v-prediction DDIM), inpainting with SD 1.x's 4-channel UNet (the latents blended with the
//! image's after each step) and with a 9-channel inpainting UNet (mask and masked-image latents as
//! further input channels).

use serde_json::Value;
use wgpu_diffusion::diffusion::SamplerPlan;
use wgpu_diffusion::io::images::{load_mask_floored, load_rgb_floored};
use wgpu_diffusion::model::tensors::read_safetensors;
use wgpu_diffusion::pipeline::latent::{Posterior, Tiling};
use wgpu_diffusion::pipeline::text::{latent_mask, masked_image, TextJob, TextPipeline, TextStart};

use crate::sd_pipeline::{assemble, assemble_with_unet};
use crate::*;

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(golden("sd_pipeline/edit_cases.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    doc["cases"].as_array().unwrap().clone()
}

fn run_case(case: &Value) {
    let variant = case["variant"].as_str().unwrap();
    let unet = case["unet"].as_str().unwrap().trim_start_matches("unet_cond/");
    let inpaint = case.get("mask").is_some();
    let dir = if unet == variant { assemble(variant) } else { assemble_with_unet(variant, unet, unet) };
    let pipeline = TextPipeline::open(&dir).unwrap();
    let g = read_safetensors(&golden(&format!("sd_pipeline/{}", case["file"].as_str().unwrap()))).unwrap();
    let prefix = case["prefix"].as_str().unwrap();
    let key = |k: &str| format!("{prefix}{k}");
    let what = format!("{variant} {} ({unet} unet)", case["pipeline"].as_str().unwrap());

    let png = golden(&format!("sd_pipeline/{}", case["image"].as_str().unwrap()));
    let (image, h, w) = load_rgb_floored(&png, pipeline.downscale()).unwrap();
    if let Some(want) = g.get(&key("image_in")) {
        assert_eq!(image, want.data, "{what}: the preprocessed image");
    }
    let steps = case["num_inference_steps"].as_u64().unwrap() as usize;
    let plan = SamplerPlan::new(&pipeline.scheduler(None).unwrap(), steps, 0.0).unwrap();
    let strength = case["strength"].as_f64().unwrap();
    let cut = plan.img2img(strength).unwrap().unwrap();
    assert_eq!(cut.plan.timesteps, g[&key("timesteps")].data, "{what}: timesteps");
    let start = if inpaint {
        let mask_png = golden(&format!("sd_pipeline/{}", case["mask"].as_str().unwrap()));
        let mask = load_mask_floored(&mask_png, &png, pipeline.downscale()).unwrap();
        assert_eq!(mask, g[&key("mask")].data, "{what}: the binarised mask");
        let d = pipeline.downscale();
        assert_eq!(latent_mask(&mask, (h / d, w / d), d), g[&key("mask_latent")].data, "{what}: latent mask");
        if let Some(want) = g.get(&key("masked_image")) {
            assert_eq!(masked_image(&image, &mask), want.data, "{what}: the masked image");
        }
        let noising = (strength < 1.0).then_some(cut.noising);
        TextStart::Inpaint { image, mask, noising, posterior: Posterior::Mode }
    } else {
        TextStart::Img2Img { image, noising: cut.noising, posterior: Posterior::Mode }
    };
    let job = TextJob {
        prompts: vec![case["prompt"].as_str().unwrap().to_string()],
        image_prompts: vec![0],
        negative: case["negative_prompt"].as_str().unwrap().to_string(),
        guidance_scale: case["guidance_scale"].as_f64().unwrap() as f32,
        plan: cut.plan,
        height: h,
        width: w,
        seed: 0,
        batch: 1,
        images: 0..1,
        init_noise: Some(g[&key("noise")].data.clone()),
        tiling: Tiling::Auto,
        memory_budget: None,
        start,
    };
    let mut loaded = pipeline.load(ctx()).unwrap();
    let out = loaded.run(ctx(), &job, true, &mut |_, _| {}, &mut |w| panic!("{w}")).unwrap();
    assert_close(
        &format!("{what}: final latents"),
        &out.latents.unwrap(),
        &g[&key("final_latents")].data,
        2e-3,
    );
    let want = &g[&key("decoded")].data;
    let worst = out.images.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    eprintln!("{what}: worst decoded difference {worst:e}");
    assert_eq!(out.images.len(), want.len());
    assert!(worst <= 2e-3, "{what}: the decoded image differs from diffusers' by up to {worst:e}");
}

#[test]
fn stable_diffusion_img2img_matches_diffusers_after_the_decode() {
    let cases: Vec<Value> = cases().into_iter().filter(|c| c.get("mask").is_none()).collect();
    assert_eq!(cases.len(), 2);
    for case in &cases {
        run_case(case);
    }
}

#[test]
fn stable_diffusion_inpainting_matches_diffusers_after_the_decode() {
    let cases: Vec<Value> = cases().into_iter().filter(|c| c.get("mask").is_some()).collect();
    assert_eq!(cases.len(), 2, "the 4-channel blend and the 9-channel UNet");
    for case in &cases {
        run_case(case);
    }
}
