//! Classifier-free guidance inside the device chain against DiT's loop on a class-conditional
//! UNet2DModel (tools/make_guided_goldens.py): [null; class] rows in one evaluation, combined on
//! the device before the sampler update, for three samplers (one on v-prediction); and image k
//! of a guided run depends only on (seed, k, class, scale): batch invariance and shards.

use wgpu_diffusion::diffusion::{self, ChainInput, Conditioning, Guidance, SamplerKind, SamplerPlan};
use wgpu_diffusion::diffusion::{SchedulerConfig, Shard};
use wgpu_diffusion::model::tensors::read_safetensors;
use wgpu_diffusion::model::{ModelFolder, UNet};

use crate::*;

fn class_model() -> UNet {
    UNet::load(ctx(), &ModelFolder::open(&golden("class/class-table")).unwrap()).unwrap()
}

fn guided_chain(sampler: &str, steps: usize) {
    let mut unet = class_model();
    let path = golden(&format!("guided/{sampler}-{steps}.json"));
    let file = SchedulerConfig::parse_file(&std::fs::read_to_string(&path).unwrap(), "chain config").unwrap();
    let cfg =
        SchedulerConfig::resolve(SamplerKind::parse(sampler).unwrap(), Some(&file), "chain config").unwrap();
    let plan = SamplerPlan::new(&cfg, steps, 0.0).unwrap();
    let g = read_safetensors(&golden(&format!("guided/{sampler}-{steps}.safetensors"))).unwrap();
    let (scale, null) = (g["scale_null"].data[0], g["scale_null"].data[1]);
    let labels = &g["labels"].data;
    let input = ChainInput {
        conditioning: Some(Conditioning { labels, guidance: Some(Guidance { scale, null_label: null }) }),
        ..ChainInput::all(0, labels.len(), Some(&g["x_T"].data))
    };
    let got = diffusion::sample(ctx(), &mut unet, &plan, &input, &mut |_, _| {}).unwrap();
    assert_close(&format!("guided {sampler} {steps} steps from x_T"), &got, &g["sample"].data, 2e-3);
}

#[test]
fn guided_ddim_chain_matches_dit_loop() {
    guided_chain("ddim", 10);
}

#[test]
fn guided_dpm_solver_pp_2m_chain_matches_dit_loop() {
    guided_chain("dpm++2m", 12);
}

#[test]
fn guided_euler_v_prediction_chain_matches_dit_loop() {
    guided_chain("euler", 10);
}

/// A guided run of images `images` of a batch of `batch` (labels k mod 10, scale 2.5) with
/// `sampler` over 3 steps from the seed's Philox noise.
fn guided_run(
    unet: &mut UNet,
    sampler: SamplerKind,
    batch: usize,
    images: std::ops::Range<usize>,
) -> Vec<f32> {
    let folder = ModelFolder::open(&golden("class/class-table")).unwrap();
    let path = folder.scheduler_config.unwrap();
    let file = SchedulerConfig::parse_file(&std::fs::read_to_string(&path).unwrap(), "scheduler").unwrap();
    let cfg = SchedulerConfig::resolve(sampler, Some(&file), "scheduler").unwrap();
    let plan = SamplerPlan::new(&cfg, 3, 0.0).unwrap();
    let labels: Vec<f32> = (0..batch).map(|k| (k % 10) as f32).collect();
    let input = ChainInput {
        images,
        conditioning: Some(Conditioning {
            labels: &labels,
            guidance: Some(Guidance { scale: 2.5, null_label: 10.0 }),
        }),
        ..ChainInput::all(21, batch, None)
    };
    diffusion::sample(ctx(), unet, &plan, &input, &mut |_, _| {}).unwrap()
}

#[test]
fn guided_images_depend_only_on_seed_index_class_and_scale() {
    let mut unet = class_model();
    let per = 28 * 28;
    for sampler in ["ddpm", "ddim", "dpm++2m", "euler", "euler-a"] {
        let kind = SamplerKind::parse(sampler).unwrap();
        let whole = guided_run(&mut unet, kind, 9, 0..9);
        assert!(whole.iter().all(|v| v.is_finite()), "{sampler}");
        // Shards of the same batch run the same executable: the same bits.
        for shard in 0..3 {
            let range = Shard::new(shard, 3).unwrap().range(9);
            let part = guided_run(&mut unet, kind, 9, range.clone());
            assert_eq!(part, whole[range.start * per..range.end * per], "{sampler}: shard {shard} of 3");
        }
        // Image 0 made alone: the same values (another batch, the same per-image arithmetic).
        let alone = guided_run(&mut unet, kind, 1, 0..1);
        assert_close(&format!("{sampler}: image 0 alone vs in a batch of 9"), &alone, &whole[..per], 1e-5);
        // Another class gives another image; the labels are read per image.
        assert_ne!(&whole[..per], &whole[per..2 * per], "{sampler}: classes 0 and 1 differ");
    }
}

#[test]
fn guidance_is_refused_where_it_cannot_run() {
    let mut unet = class_model();
    let plan =
        SamplerPlan::new(&SchedulerConfig::resolve(SamplerKind::Ddim, None, "d").unwrap(), 2, 0.0).unwrap();
    let labels = [1.0, 2.0];
    let run = |unet: &mut UNet, c: Conditioning| {
        let input = ChainInput { conditioning: Some(c), ..ChainInput::all(0, 2, None) };
        diffusion::sample(ctx(), unet, &plan, &input, &mut |_, _| {}).unwrap_err().to_string()
    };
    let g = |scale, null_label| Some(Guidance { scale, null_label });
    assert!(
        run(&mut unet, Conditioning { labels: &labels, guidance: g(2.0, 11.0) }).contains("class label 11")
    );
    assert!(run(&mut unet, Conditioning { labels: &[1.0], guidance: None }).contains("1 class labels for 2"));
    assert!(run(&mut unet, Conditioning { labels: &labels, guidance: g(f32::NAN, 10.0) }).contains("finite"));
}

#[test]
fn bundled_conditional_model_guided_ddim_matches_diffusers() {
    // weights/fashion-mnist-cond as a user loads it, one image of each class at the default
    // guidance scale and the folder's null class, against DiT's loop in diffusers
    // (tools/make_bundled_golden.py).
    let folder = ModelFolder::open(&golden("../../weights/fashion-mnist-cond")).unwrap();
    let mut unet = UNet::load(ctx(), &folder).unwrap();
    let path = folder.scheduler_config.clone().expect("the bundled model has a scheduler config");
    let file = SchedulerConfig::parse_file(&std::fs::read_to_string(&path).unwrap(), "scheduler_config.json")
        .unwrap();
    let cfg = SchedulerConfig::resolve(SamplerKind::Ddim, Some(&file), "scheduler_config.json").unwrap();
    let plan = SamplerPlan::new(&cfg, 10, 0.0).unwrap();
    let g = read_safetensors(&golden("samplers/chains/bundled-cond-ddim-10.safetensors")).unwrap();
    let (scale, null) = (g["scale_null"].data[0], g["scale_null"].data[1]);
    assert_eq!(scale, wgpu_diffusion::pipeline::DEFAULT_GUIDANCE_SCALE, "the golden's scale is the default");
    assert_eq!(Some(null as usize), unet.config.null_class, "the golden's null class is the folder's");
    let labels = &g["labels"].data;
    let input = ChainInput {
        conditioning: Some(Conditioning { labels, guidance: Some(Guidance { scale, null_label: null }) }),
        ..ChainInput::all(0, labels.len(), Some(&g["x_T"].data))
    };
    let got = diffusion::sample(ctx(), &mut unet, &plan, &input, &mut |_, _| {}).unwrap();
    assert_close("bundled conditional model, guided DDIM 10 steps from x_T", &got, &g["sample"].data, 2e-3);
}
