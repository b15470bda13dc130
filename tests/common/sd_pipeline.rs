//! A Stable Diffusion pipeline folder as save_pretrained writes it, assembled from the tiny
//! golden components (tests/golden: tokenizer, clip_text, unet_cond, sd_pipeline), as
//! tools/make_sd_pipeline_goldens.py assembles it for diffusers. Included with `#[path]`.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};

fn golden(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(path)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

/// The `variant` ("sd1" or "sd2") pipeline in target/test-scratch/sd-pipeline/<name>.
pub fn assemble_as(variant: &str, name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-scratch/sd-pipeline").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let tok = dir.join("tokenizer");
    std::fs::create_dir_all(&tok).unwrap();
    for f in ["vocab.json", "merges.txt"] {
        let mut text = String::new();
        let gz = std::fs::File::open(golden(&format!("tokenizer/{f}.gz"))).unwrap();
        flate2::read::GzDecoder::new(gz).read_to_string(&mut text).unwrap();
        std::fs::write(tok.join(f), text).unwrap();
    }
    copy_dir(&golden(&format!("tokenizer/{variant}")), &tok);
    copy_dir(&golden(&format!("clip_text/{variant}")), &dir.join("text_encoder"));
    copy_dir(&golden(&format!("unet_cond/{variant}")), &dir.join("unet"));
    copy_dir(&golden("sd_pipeline/vae"), &dir.join("vae"));
    copy_dir(&golden(&format!("sd_pipeline/{variant}/scheduler")), &dir.join("scheduler"));
    std::fs::copy(golden(&format!("sd_pipeline/{variant}/model_index.json")), dir.join("model_index.json"))
        .unwrap();
    dir
}

/// The `variant` pipeline named `name` with another golden UNet (unet_cond/<unet>) in unet/.
pub fn assemble_with_unet(variant: &str, name: &str, unet: &str) -> PathBuf {
    let dir = assemble_as(variant, name);
    std::fs::remove_dir_all(dir.join("unet")).unwrap();
    copy_dir(&golden(&format!("unet_cond/{unet}")), &dir.join("unet"));
    dir
}

/// The `variant` pipeline under its own name.
pub fn assemble(variant: &str) -> PathBuf {
    assemble_as(variant, variant)
}

/// Stable Diffusion 1.5's real configs (tests/data/sd15-configs) with CLIP's tokenizer and empty
/// weight files: enough to plan a run at real size, nothing to load.
pub fn sd15_configs() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/test-scratch/sd-pipeline/sd15-configs");
    let _ = std::fs::remove_dir_all(&dir);
    let from = root.join("tests/data/sd15-configs");
    copy_dir(&from, &dir);
    for part in ["unet", "text_encoder", "vae", "scheduler"] {
        copy_dir(&from.join(part), &dir.join(part));
    }
    for (part, file) in [
        ("unet", "diffusion_pytorch_model.safetensors"),
        ("vae", "diffusion_pytorch_model.safetensors"),
        ("text_encoder", "model.safetensors"),
    ] {
        std::fs::write(dir.join(part).join(file), b"").unwrap();
    }
    let tok = assemble_as("sd1", "sd15-tokenizer").join("tokenizer");
    copy_dir(&tok, &dir.join("tokenizer"));
    dir
}
