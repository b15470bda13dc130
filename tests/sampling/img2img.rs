//! img2img (SDEdit) against diffusers (tools/make_img2img_goldens.py): the timesteps a strength
//! keeps, the noising at the first of them and the whole chain, for DDIM, DPM-Solver++ (2M, whose
//! first kept step is first order) and Euler on the fashion-f16 golden UNet, from the noise
//! diffusers drew. Strength 0 runs nothing.

use wgpu_diffusion::diffusion::{self, ChainInput, Img2ImgStart, SamplerKind, SamplerPlan, SchedulerConfig};
use wgpu_diffusion::model::tensors::read_safetensors;
use wgpu_diffusion::model::{ModelFolder, UNet};

use crate::*;

/// The plan of a golden case, and its name (`strength` as Python prints it).
fn plan(sampler: &str, steps: usize, strength: &str) -> (SamplerPlan, String) {
    let name = format!("{sampler}-{steps}-{strength}");
    let path = golden(&format!("img2img/{name}.json"));
    let file =
        SchedulerConfig::parse_file(&std::fs::read_to_string(&path).unwrap(), "img2img config").unwrap();
    let cfg = SchedulerConfig::resolve(SamplerKind::parse(sampler).unwrap(), Some(&file), "img2img config")
        .unwrap();
    (SamplerPlan::new(&cfg, steps, 0.0).unwrap(), name)
}

fn chain(sampler: &str, steps: usize, strength: &str) {
    let (full, name) = plan(sampler, steps, strength);
    let g = read_safetensors(&golden(&format!("img2img/{name}.safetensors"))).unwrap();
    let p = full.img2img(strength.parse().unwrap()).unwrap().expect("steps to run");
    assert_eq!(p.plan.timesteps, g["timesteps"].data, "{name}: the timesteps kept");
    assert_eq!(p.begin + p.plan.rows.len(), steps);
    let mut unet = UNet::load(ctx(), &ModelFolder::open(&golden("unet/fashion-f16")).unwrap()).unwrap();
    let input = ChainInput {
        img2img: Some(Img2ImgStart { image: &g["image"].data, noising: p.noising }),
        ..ChainInput::all(0, 2, Some(&g["noise"].data))
    };
    let got = diffusion::sample(ctx(), &mut unet, &p.plan, &input, &mut |_, _| {}).unwrap();
    assert_close(&format!("{name}: the img2img chain"), &got, &g["sample"].data, 2e-3);
}

#[test]
fn ddim_img2img_matches_diffusers() {
    chain("ddim", 10, "0.5");
    // int(10 x 0.29) = 2 steps (f64 truncation, as diffusers).
    chain("ddim", 10, "0.29");
}

#[test]
fn dpm_solver_pp_2m_img2img_matches_diffusers() {
    chain("dpm++2m", 12, "0.5");
    chain("dpm++2m", 12, "1.0");
}

#[test]
fn euler_img2img_matches_diffusers() {
    chain("euler", 10, "0.5");
    chain("euler", 10, "1.0");
}

#[test]
fn strength_zero_runs_nothing_and_out_of_range_is_refused() {
    let (full, _) = plan("ddim", 10, "0.5");
    assert!(full.img2img(0.0).unwrap().is_none());
    assert!(full.img2img(0.09).unwrap().is_none(), "int(10 x 0.09) = 0 steps");
    assert_eq!(full.img2img(1.0).unwrap().unwrap().begin, 0);
    for bad in [-0.1, 1.5, f64::NAN] {
        assert!(full.img2img(bad).is_err(), "{bad}");
    }
}
