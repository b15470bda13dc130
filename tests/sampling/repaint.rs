//! RePaint against diffusers (tools/make_repaint_goldens.py): the timestep lists with their
//! jumps, a step (DDIM on the unknown region joined with the noised original through the mask)
//! and an undo step (its renoisings, with diffusers' beta indexing) on the device, and whole
//! RePaintPipeline chains on the fashion-f16 golden UNet fed the noise diffusers drew.

use wgpu_diffusion::diffusion::repaint::{self, InpaintInput, RepaintPlan};
use wgpu_diffusion::diffusion::{SamplerKind, SchedulerConfig};
use wgpu_diffusion::kernels::diffusion::{self as diff, MixBuffers};
use wgpu_diffusion::model::tensors::read_safetensors;
use wgpu_diffusion::model::{ModelFolder, UNet};

use crate::*;

fn config(file: Option<&str>) -> SchedulerConfig {
    let map =
        file.map(|f| SchedulerConfig::parse_file(&std::fs::read_to_string(golden(f)).unwrap(), f).unwrap());
    SchedulerConfig::resolve(SamplerKind::Ddpm, map.as_ref(), "repaint config").unwrap()
}

#[test]
fn timestep_lists_match_diffusers() {
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden("repaint/timesteps.json")).unwrap()).unwrap();
    for c in cases.as_array().unwrap() {
        let u = |k: &str| c[k].as_u64().unwrap() as usize;
        let want: Vec<i64> = c["timesteps"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        let got = repaint::timesteps(u("train"), u("steps"), u("jump_length"), u("jump_n_sample"));
        assert_eq!(got, want, "{c:?}");
    }
    // EDITING.md: (250, 10, 10) has 4570 entries, 2410 of them steps.
    let plan = RepaintPlan::new(&config(None), 250, 10, 10, 0.0).unwrap();
    assert_eq!(plan.entries.len(), 4570);
    assert_eq!(plan.steps.len(), 2410);
    assert_eq!(plan.draws, 1 + 2410 + 2160 * 4);
}

/// x <- sampler_step then repaint_mix (a step), on the device.
fn run_step(
    c: &wgpu_diffusion::gpu::Context,
    row: diff::StepCoeffs,
    mix: diff::MixRow,
    g: &Golden,
    key: &str,
) -> Vec<f32> {
    let get = |k: &str| upload(&g[&format!("{key}.{k}")].data);
    let (x, eps, orig, mask, z) = (get("x"), get("eps"), get("orig"), get("mask"), get("z"));
    let n = g[&format!("{key}.x")].data.len();
    let (table, mixes, counter, prev) = (
        upload(bytemuck::cast_slice(&[row])),
        upload(bytemuck::cast_slice(&[mix])),
        c.upload_u32(&[0], &[1]).unwrap(),
        output(diff::HISTORY_SLOTS * n),
    );
    let bufs = diff::StepBuffers {
        x: &x.buffer,
        model_out: &eps.buffer,
        noise: &z.buffer,
        history: &prev.buffer,
        table: &table.buffer,
        step_counter: &counter.buffer,
    };
    let mb = MixBuffers {
        x: &x.buffer,
        orig: &orig.buffer,
        mask: &mask.buffer,
        noise: &z.buffer,
        rows: &mixes.buffer,
        counter: &counter.buffer,
    };
    c.run(&[diff::sampler_step(c, n, 1, &bufs).unwrap(), diff::repaint_mix(c, n, 1, &mb).unwrap()]);
    read(&x)
}

type Golden = std::collections::HashMap<String, wgpu_diffusion::model::HostTensor>;

#[test]
fn step_and_undo_step_match_diffusers() {
    let c = ctx();
    let g = read_safetensors(&golden("repaint/steps.safetensors")).unwrap();
    for eta in ["0.0", "0.5"] {
        let plan = RepaintPlan::new(&config(None), 10, 3, 2, eta.parse().unwrap()).unwrap();
        for t in [900, 400, 100, 0] {
            let key = format!("step.eta{eta}.t{t}");
            let (row, mix) = plan.step_at(t).unwrap();
            let got = run_step(c, row, mix, &g, &key);
            assert_close(&key, &got, &g[&format!("{key}.out")].data, RTOL);
            // The reference agrees.
            let d = |k: &str| &g[&format!("{key}.{k}")].data;
            let mut prev = vec![0.0; diff::HISTORY_SLOTS * got.len()];
            let stepped = diff::reference_step(&row, d("x"), d("eps"), d("z"), &mut prev);
            let want = diff::reference_mix(&mix, &stepped, d("orig"), d("mask"), d("z"));
            assert_close(&format!("{key} reference"), &want, &g[&format!("{key}.out")].data, RTOL);
        }
    }
    // Undo steps: T // N = 100 renoisings, each with its own noise.
    let plan = RepaintPlan::new(&config(None), 10, 3, 2, 0.0).unwrap();
    for t_last in [600, 200] {
        let key = format!("undo.t{t_last}");
        let rows = plan.undo_at(t_last).unwrap();
        assert_eq!(rows.len(), 100);
        let (x, zs) = (upload(&g[&format!("{key}.x")].data), &g[&format!("{key}.z")].data);
        let n = g[&format!("{key}.x")].data.len();
        let table = upload(bytemuck::cast_slice(rows));
        let counter = c.upload_u32(&[0], &[1]).unwrap();
        let (zero, z) = (output(n), output(n));
        let mut list = vec![];
        let mut host = g[&format!("{key}.x")].data.clone();
        for (i, r) in rows.iter().enumerate() {
            let zi = &zs[i * n..(i + 1) * n];
            c.queue.write_buffer(&z.buffer, 0, bytemuck::cast_slice(zi));
            let mb = MixBuffers {
                x: &x.buffer,
                orig: &zero.buffer,
                mask: &zero.buffer,
                noise: &z.buffer,
                rows: &table.buffer,
                counter: &counter.buffer,
            };
            list.push(diff::repaint_mix(c, n, rows.len(), &mb).unwrap());
            list.push(diff::advance_step(c, &counter.buffer).unwrap());
            c.run(&list);
            list.clear();
            host = diff::reference_mix(r, &host, &host, &host, zi);
        }
        assert_close(&key, &read(&x), &g[&format!("{key}.out")].data, RTOL);
        assert_close(&format!("{key} reference"), &host, &g[&format!("{key}.out")].data, RTOL);
    }
}

fn whole_chain(eta: &str) {
    let g = read_safetensors(&golden(&format!("repaint/chain-eta{eta}.safetensors"))).unwrap();
    let plan =
        RepaintPlan::new(&config(Some("repaint/chain-config.json")), 10, 3, 2, eta.parse().unwrap()).unwrap();
    assert_eq!(plan.draws, g["tape"].shape[0], "one draw per randn diffusers made");
    let mut unet = UNet::load(ctx(), &ModelFolder::open(&golden("unet/fashion-f16")).unwrap()).unwrap();
    let input = InpaintInput {
        seed: 0,
        batch: 1,
        images: 0..1,
        image: &g["image"].data,
        mask: &g["mask"].data,
        noise_tape: Some(&g["tape"].data),
        conditioning: None,
    };
    let x = repaint::inpaint(ctx(), &mut unet, &plan, &input, &mut |_, _| {}).unwrap();
    // The pipeline's output: (x / 2 + 0.5) clamped to [0, 1].
    let got: Vec<f32> = x.iter().map(|v| (v / 2.0 + 0.5).clamp(0.0, 1.0)).collect();
    assert_close(&format!("RePaint chain, eta {eta}"), &got, &g["sample"].data, 2e-3);
    // The kept region is the original.
    for (i, &m) in g["mask"].data.iter().enumerate() {
        if m == 1.0 {
            assert!(
                (x[i] - g["image"].data[i]).abs() < 1e-5,
                "kept pixel {i}: {} vs {}",
                x[i],
                g["image"].data[i]
            );
        }
    }
}

#[test]
fn repaint_chains_match_diffusers() {
    whole_chain("0.0");
    whole_chain("1.0");
}
