use wgpu_diffusion::model::tensors::read_safetensors;
use wgpu_diffusion::model::{ModelFolder, UNet};

use crate::*;

fn check(name: &str, max_micro: usize) {
    let dir = golden_dir(name);
    let folder = ModelFolder::open(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut unet = UNet::load(ctx(), &folder).unwrap_or_else(|e| panic!("{name}: {e}"));
    let io = read_safetensors(&dir.join("io.safetensors")).unwrap();
    let got = unet.forward_micro(ctx(), &io["sample"].data, &io["timesteps"].data, None, max_micro).unwrap();
    assert_eq!(got.len(), io["output"].data.len());
    assert_close(&format!("{name} (micro-batch {max_micro})"), &got, &io["output"].data, RTOL);
}

#[test]
fn cifar10_structure_legacy_names_padding_0() {
    check("cifar10-structure", usize::MAX);
}

#[test]
fn fashion_shape_f16_multi_head() {
    check("fashion-f16", usize::MAX);
}

#[test]
fn odd_sizes_bf16_pipeline_layout_centered_input() {
    check("odd-bf16-pipeline", usize::MAX);
}

#[test]
fn attention_everywhere_small_heads() {
    check("all-attention", usize::MAX);
}

#[test]
fn no_mid_block() {
    check("no-mid-block", usize::MAX);
}

#[test]
fn micro_batches_give_the_same_output() {
    check("fashion-f16", 2); // 3 images: a micro-batch of 2, then one of 1 (padded)
    check("cifar10-structure", 1);
}

#[test]
fn pipeline_layout_finds_the_scheduler_config() {
    let folder = ModelFolder::open(&golden_dir("odd-bf16-pipeline")).unwrap();
    assert!(folder.unet_config.ends_with("unet/config.json"));
    assert!(folder.scheduler_config.as_ref().is_some_and(|p| p.ends_with("scheduler/scheduler_config.json")));
    let flat = ModelFolder::open(&golden_dir("fashion-f16")).unwrap();
    assert!(flat.scheduler_config.as_ref().is_some_and(|p| p.ends_with("fashion-f16/scheduler_config.json")));
}

#[test]
fn the_plan_reuses_buffers() {
    let folder = ModelFolder::open(&golden_dir("cifar10-structure")).unwrap();
    let mut unet = UNet::load(ctx(), &folder).unwrap();
    let (peak1, naive1) = unet.plan_bytes(ctx(), 1).unwrap();
    let (peak4, naive4) = unet.plan_bytes(ctx(), 4).unwrap();
    assert!(peak1 * 3 < naive1, "planned {peak1} vs naive {naive1}");
    assert_eq!(naive4, 4 * naive1, "activations scale with the batch");
    assert!(peak4 <= 4 * peak1);
}

#[test]
fn max_batch_keeps_batch_times_heads_within_the_grid_limit() {
    // The bundled model has 2-head attention: at most 5 images where a grid dimension holds 10.
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights/fashion-mnist");
    let folder = ModelFolder::open(&dir).unwrap();
    let mut c = wgpu_diffusion::gpu::Context::new(&Default::default()).unwrap();
    c.limits.max_compute_workgroups_per_dimension = 10;
    let mut unet = UNet::load(&c, &folder).unwrap();
    assert_eq!(unet.max_batch(&c).unwrap(), 5);
}
