//! CLIPTextModel against transformers (tools/make_clip_text_goldens.py): tiny random text
//! encoders shaped like SD 1.x's (quick_gelu, 3 layers; the published layout: `text_model.`
//! names and an int64 position_ids) and SD 2.x's (exact gelu, 2 layers; transformers 5's
//! layout), five prompts each from the real tokenizer (the empty one, one cut at 77 tokens,
//! unicode, 80 "!").

use std::path::PathBuf;

use wgpu_diffusion::model::clip::ClipTextModel;
use wgpu_diffusion::model::tensors::read_safetensors;

use crate::*;

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/clip_text").join(name)
}

fn check(variant: &str) {
    let mut model = ClipTextModel::load(ctx(), &golden(variant)).unwrap();
    let g = read_safetensors(&golden(&format!("{variant}-hidden.safetensors"))).unwrap();
    let ids: Vec<u32> = g["input_ids"].data.iter().map(|&v| v as u32).collect();
    let batch = g["input_ids"].shape[0];
    let got = model.encode(ctx(), &ids, batch).unwrap();
    let want = &g["last_hidden_state"].data;
    assert_eq!(got.len(), want.len());
    let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    eprintln!("{variant}: worst difference {worst:e}");
    assert!(worst <= 1e-4, "{variant}: last_hidden_state differs from transformers' by up to {worst:e}");
}

#[test]
fn clip_text_model_sd1_matches_transformers() {
    check("sd1");
}

#[test]
fn clip_text_model_sd2_matches_transformers() {
    check("sd2");
}

#[test]
fn bad_text_encoder_folders_are_one_clear_error() {
    let copy = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let dir = scratch(&format!("clip-text-{name}"));
        std::fs::copy(golden("sd2/model.safetensors"), dir.join("model.safetensors")).unwrap();
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(golden("sd2/config.json")).unwrap()).unwrap();
        edit(&mut v);
        std::fs::write(dir.join("config.json"), v.to_string()).unwrap();
        dir
    };
    let err = |dir: PathBuf| ClipTextModel::load(ctx(), &dir).err().expect("an error").to_string();
    let e = err(copy("act", &|v| v["hidden_act"] = "gelu_new".into()));
    assert!(e.contains("gelu_new") && e.contains("quick_gelu, gelu"), "{e}");
    let e =
        err(copy("projection", &|v| v["architectures"] = serde_json::json!(["CLIPTextModelWithProjection"])));
    assert!(e.contains("CLIPTextModelWithProjection"), "{e}");
    let e = err(copy("width", &|v| v["hidden_size"] = 64.into()));
    assert!(e.contains("token_embedding") && e.contains("[49408, 32]"), "{e}");
    let dir = copy("no-weights", &|_| {});
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    assert!(err(dir).contains("no model.safetensors"));
}
