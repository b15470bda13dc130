use wgpu_diffusion::diffusion::{self, ChainInput, SamplerKind, SamplerPlan, SchedulerConfig};
use wgpu_diffusion::model::tensors::read_safetensors;
use wgpu_diffusion::model::{ModelFolder, UNet};

use crate::*;

fn model() -> (UNet, SchedulerConfig, ModelFolder) {
    let folder = ModelFolder::open(&golden("unet/fashion-f16")).unwrap();
    let unet = UNet::load(ctx(), &folder).unwrap();
    let path = folder.scheduler_config.clone().unwrap();
    let file = SchedulerConfig::parse_file(&std::fs::read_to_string(&path).unwrap(), "scheduler_config.json")
        .unwrap();
    let cfg = SchedulerConfig::resolve(SamplerKind::Ddpm, Some(&file), "scheduler_config.json").unwrap();
    (unet, cfg, folder)
}

fn whole_chain(sampler: &str, steps: usize) {
    let (mut unet, _, _) = model();
    // The scheduler config diffusers ran with (the model's, plus the golden's overrides).
    let path = golden(&format!("samplers/chains/{sampler}-{steps}.json"));
    let file = SchedulerConfig::parse_file(&std::fs::read_to_string(&path).unwrap(), "chain config").unwrap();
    let cfg =
        SchedulerConfig::resolve(SamplerKind::parse(sampler).unwrap(), Some(&file), "chain config").unwrap();
    let plan = SamplerPlan::new(&cfg, steps, 0.0).unwrap();
    let g = read_safetensors(&golden(&format!("samplers/chains/{sampler}-{steps}.safetensors"))).unwrap();
    let input = ChainInput::all(0, 2, Some(&g["x_T"].data));
    let got = diffusion::sample(ctx(), &mut unet, &plan, &input, &mut |_, _| {}).unwrap();
    assert_close(&format!("{sampler} {steps} steps from x_T"), &got, &g["sample"].data, RTOL);
}

#[test]
fn ddim_chain_matches_diffusers() {
    whole_chain("ddim", 10);
}

#[test]
fn dpm_solver_pp_2m_chain_matches_diffusers() {
    whole_chain("dpm++2m", 12);
}

#[test]
fn euler_chain_matches_diffusers() {
    whole_chain("euler", 10);
}

#[test]
fn pndm_chain_matches_diffusers() {
    whole_chain("pndm", 10);
}

#[test]
fn same_seed_same_bytes_and_batch_elements_are_independent() {
    let (mut unet, cfg, _) = model();
    let plan = SamplerPlan::new(&cfg, 4, 0.0).unwrap();
    let run = |unet: &mut UNet, seed, batch| {
        diffusion::sample(ctx(), unet, &plan, &ChainInput::all(seed, batch, None), &mut |_, _| {}).unwrap()
    };
    let a = run(&mut unet, 5, 3);
    assert_eq!(a, run(&mut unet, 5, 3), "same seed, same bytes");
    let per = 28 * 28;
    // Element 0 of a batch is what the same seed gives for a batch of one.
    assert_eq!(&a[..per], &run(&mut unet, 5, 1)[..], "element 0 alone");
    assert_ne!(a, run(&mut unet, 6, 3), "another seed, another sample");
}

#[test]
fn ddpm_chain_statistics_over_many_seeds() {
    // With a model that predicts zero noise (all weights zero: every conv, norm and linear is zero),
    // DDPM's chain is a linear Gaussian process we can write down: x_{prev} = c_x0 * x0 + c_xt * x + sigma z
    // with x0 = x / sqrt(abar_t), clipped to [-1, 1]. Its mean is 0 and each element's variance
    // follows a recursion (without clipping, which the chosen steps keep rare). Check both over
    // many seeds.
    // A small model (16x16, 3 channels) keeps this affordable on a CPU driver.
    let (_, cfg, _) = model();
    let folder = ModelFolder::open(&golden("unet/no-mid-block")).unwrap();
    let mut tensors = wgpu_diffusion::model::tensors::read_safetensors(&folder.unet_weights).unwrap();
    for t in tensors.values_mut() {
        t.data.iter_mut().for_each(|v| *v = 0.0);
    }
    let config = wgpu_diffusion::model::UNetConfig::parse(
        &std::fs::read_to_string(&folder.unet_config).unwrap(),
        "config",
    )
    .unwrap();
    let mut unet = UNet::from_tensors(ctx(), config, tensors, "zeroed").unwrap();
    let file = SchedulerConfig::parse_file(r#"{"clip_sample": false}"#, "test").unwrap();
    let cfg = SchedulerConfig::resolve(SamplerKind::Ddpm, Some(&file), "test").unwrap_or(cfg);
    let plan = SamplerPlan::new(&cfg, 20, 0.0).unwrap();
    // Variance recursion: var' = (a + b)^2 var + sigma^2, with a = c_x0 / sqrt(abar_t), b = c_xt.
    let mut var = 1.0f64;
    for r in &plan.rows {
        let k = r.next_x0 as f64 * r.x0_x as f64 + r.next_x as f64;
        var = k * k * var + (r.noise_scale as f64).powi(2);
    }
    let batch = 32;
    let x = diffusion::sample(ctx(), &mut unet, &plan, &ChainInput::all(99, batch, None), &mut |_, _| {})
        .unwrap();
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let got_var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    // 24,576 samples: standard errors ~ sqrt(var / n) for the mean, var * sqrt(2 / n) for the variance.
    assert!(mean.abs() < 5.0 * (var / n).sqrt(), "mean {mean}, expected 0 (var {var})");
    assert!((got_var - var).abs() < 5.0 * var * (2.0 / n).sqrt(), "variance {got_var}, expected {var}");
}

#[test]
fn bundled_model_ddim_matches_diffusers() {
    // weights/fashion-mnist, loaded as a user loads it, against diffusers' DDIM from the same x_T
    // (tools/make_bundled_golden.py).
    let folder = ModelFolder::open(&golden("../../weights/fashion-mnist")).unwrap();
    let mut unet = UNet::load(ctx(), &folder).unwrap();
    let path = folder.scheduler_config.clone().expect("the bundled model has a scheduler config");
    let file = SchedulerConfig::parse_file(&std::fs::read_to_string(&path).unwrap(), "scheduler_config.json")
        .unwrap();
    let cfg = SchedulerConfig::resolve(SamplerKind::Ddim, Some(&file), "scheduler_config.json").unwrap();
    let plan = SamplerPlan::new(&cfg, 10, 0.0).unwrap();
    let g = read_safetensors(&golden("samplers/chains/bundled-ddim-10.safetensors")).unwrap();
    let input = ChainInput::all(0, 4, Some(&g["x_T"].data));
    let got = diffusion::sample(ctx(), &mut unet, &plan, &input, &mut |_, _| {}).unwrap();
    assert_close("bundled model, DDIM 10 steps from x_T", &got, &g["sample"].data, RTOL);
}

/// Image k of a batch of N, sampled alone as shard k of N (its own process would do the same), is
/// bit for bit image k of the whole run, for every sampler; and shards of several images add up
/// to the run. Batch 9: past one workgroup of 8 (see the group norm bug this guards against).
#[test]
fn every_sampler_image_k_alone_is_image_k_of_the_batch() {
    let (mut unet, _, folder) = model();
    let per = 28 * 28;
    let n = 9;
    for kind in ["ddpm", "ddim", "dpm++2m", "euler", "euler-a"] {
        let kind = SamplerKind::parse(kind).unwrap();
        let path = folder.scheduler_config.clone().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let file = SchedulerConfig::parse_file(&text, "scheduler_config.json").unwrap();
        let cfg = SchedulerConfig::resolve(kind, Some(&file), "scheduler_config.json").unwrap();
        // eta 1 for DDIM, so that its chain draws noise too.
        let eta = if kind == SamplerKind::parse("ddim").unwrap() { 1.0 } else { 0.0 };
        let plan = SamplerPlan::new(&cfg, 3, eta).unwrap();
        let mut run = |images: std::ops::Range<usize>| {
            let input = ChainInput {
                seed: 11,
                batch: n,
                images,
                init_noise: None,
                img2img: None,
                conditioning: None,
                text: None,
                mask: None,
            };
            diffusion::sample(ctx(), &mut unet, &plan, &input, &mut |_, _| {}).unwrap()
        };
        let whole = run(0..n);
        assert!(whole.iter().all(|v| v.is_finite()), "{kind:?}: finite");
        for k in 0..n {
            assert_eq!(&run(k..k + 1)[..], &whole[k * per..(k + 1) * per], "{kind:?}: image {k} alone");
        }
        let shards: Vec<f32> = [0..4, 4..8, 8..9].into_iter().flat_map(&mut run).collect();
        assert_eq!(shards, whole, "{kind:?}: three shards");
    }
}
