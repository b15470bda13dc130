//! UNet2DConditionModel against diffusers (tools/make_unet_cond_goldens.py): tiny random UNets
//! with SD's blocks, shaped like SD 1.5's (1x1-conv projections, one head count) and SD 2.1's
//! (Linear projections, a head count per block), and an SD-style inpainting UNet (9 input
//! channels), at square and non-square latents (some that do not halve evenly), three
//! timesteps, random text states.

use std::path::PathBuf;

use wgpu_diffusion::model::tensors::read_safetensors;
use wgpu_diffusion::model::unet_condition::{CondShape, UNetCondition};

use crate::*;

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/unet_cond").join(name)
}

fn check(model: &str, file: &str) {
    let mut unet = UNetCondition::load(ctx(), &golden(model)).unwrap();
    let g = read_safetensors(&golden(file)).unwrap();
    let s = &g["sample"].shape;
    let shape = CondShape {
        batch: s[0],
        height: s[2],
        width: s[3],
        text_tokens: g["encoder_hidden_states"].shape[1],
    };
    let got = unet
        .forward(ctx(), shape, &g["sample"].data, &g["timestep"].data, &g["encoder_hidden_states"].data)
        .unwrap();
    let want = &g["out"].data;
    let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    eprintln!("{file}: worst difference {worst:e}");
    assert_eq!(got.len(), want.len());
    assert!(worst <= 1e-4, "{file}: the UNet's output differs from diffusers' by up to {worst:e}");
}

#[test]
fn unet_condition_sd1_shaped_matches_diffusers() {
    check("sd1", "sd1-forward.safetensors");
    check("sd1", "sd1-forward-16.safetensors");
    // 12x12 latents: 12 -> 6 -> 3 -> 2 down, and up to each skip's size (2 -> 3 -> 6 -> 12).
    check("sd1", "sd1-forward-12.safetensors");
}

#[test]
fn unet_condition_sd2_shaped_matches_diffusers() {
    check("sd2", "sd2-forward.safetensors");
    check("sd2", "sd2-forward-8x16.safetensors");
    check("sd2", "sd2-forward-10x14.safetensors");
}

#[test]
fn unet_condition_inpainting_matches_diffusers() {
    check("sd1-inpaint", "sd1-inpaint-forward.safetensors");
}

#[test]
fn configs_past_sd_1_and_2_are_refused_naming_the_field() {
    use wgpu_diffusion::model::unet_condition::UNetConditionConfig;
    let base: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden("sd2/config.json")).unwrap()).unwrap();
    let refused = |key: &str, value: serde_json::Value, words: &[&str]| {
        let mut v = base.clone();
        v[key] = value;
        let e = UNetConditionConfig::parse(&v.to_string(), "unet/config.json").unwrap_err().to_string();
        for w in words {
            assert!(e.contains(w), "{key}: {e}");
        }
    };
    refused("addition_embed_type", "text_time".into(), &["addition_embed_type", "SDXL"]);
    refused(
        "transformer_layers_per_block",
        serde_json::json!([1, 2, 10]),
        &["transformer_layers_per_block", "SDXL"],
    );
    refused("class_embed_type", "timestep".into(), &["class_embed_type"]);
    refused("num_attention_heads", 8.into(), &["num_attention_heads"]);
    refused("time_cond_proj_dim", 256.into(), &["LCM"]);
    refused("mid_block_type", "UNetMidBlock2DSimpleCrossAttn".into(), &["mid_block_type"]);
    refused(
        "down_block_types",
        serde_json::json!(["SimpleCrossAttnDownBlock2D"]),
        &["SimpleCrossAttnDownBlock2D"],
    );
    refused("attention_head_dim", serde_json::json!([2, 4, 3, 4]), &["3 attention heads", "32 channels"]);
    refused("frobnicate", 1.into(), &["unknown config field 'frobnicate'"]);
    assert!(UNetConditionConfig::parse(&base.to_string(), "unet/config.json").is_ok());
}
