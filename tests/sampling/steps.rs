use serde_json::Value;
use wgpu_diffusion::diffusion::{SamplerKind, SamplerPlan, SchedulerConfig};
use wgpu_diffusion::kernels::diffusion as diff;
use wgpu_diffusion::model::tensors::read_safetensors;

use crate::*;

/// Runs one golden case through the plan and the device kernels; returns a failure message.
fn run_case(case: &Value) -> Result<(), String> {
    let name = case["name"].as_str().unwrap();
    let kind = SamplerKind::parse(case["sampler"].as_str().unwrap()).unwrap();
    let steps = case["steps"].as_u64().unwrap() as usize;
    let eta = case["eta"].as_f64().unwrap();
    let cfg = SchedulerConfig::resolve(kind, case["config"].as_object(), name).map_err(|e| e.to_string())?;
    let plan = SamplerPlan::new(&cfg, steps, eta).map_err(|e| e.to_string())?;
    let g = read_safetensors(&golden(&format!("samplers/steps/{name}.safetensors"))).unwrap();

    let want_ts = &g["timesteps"].data;
    if plan.timesteps.len() != want_ts.len()
        || plan.timesteps.iter().zip(want_ts).any(|(a, b)| (a - b).abs() > 1e-3 * b.abs().max(1.0))
    {
        return Err(format!("{name}: timesteps {:?}, diffusers {:?}", plan.timesteps, want_ts));
    }
    let sigma = g["init_noise_sigma"].data[0] as f64;
    if (plan.init_noise_sigma - sigma).abs() > 1e-5 * sigma {
        return Err(format!("{name}: init_noise_sigma {} vs diffusers {sigma}", plan.init_noise_sigma));
    }

    let c = ctx();
    let n = want_ts.len();
    let len = g["x"].data.len() / n;
    let batch = 2;
    let row = |t: &str, i: usize| g[t].data[i * len..(i + 1) * len].to_vec();
    let (x, m, z, prev, model_in, timesteps) = (
        output(len),
        output(len),
        output(len),
        upload(&vec![0.0; diff::HISTORY_SLOTS * len]),
        output(len),
        output(batch),
    );
    let table = upload(bytemuck::cast_slice(&plan.rows));
    let counter = c.upload_u32(&[0], &[1]).unwrap();
    for i in 0..n {
        c.queue.write_buffer(&x.buffer, 0, bytemuck::cast_slice(&row("x", i)));
        c.queue.write_buffer(&m.buffer, 0, bytemuck::cast_slice(&row("model_out", i)));
        c.queue.write_buffer(&z.buffer, 0, bytemuck::cast_slice(&row("noise", i)));
        let bufs = diff::StepBuffers {
            x: &x.buffer,
            model_out: &m.buffer,
            noise: &z.buffer,
            history: &prev.buffer,
            table: &table.buffer,
            step_counter: &counter.buffer,
        };
        c.run(&[
            diff::prepare_step(
                c,
                batch,
                len,
                1,
                n,
                &x.buffer,
                &table.buffer,
                &counter.buffer,
                &model_in.buffer,
                &timesteps.buffer,
            )
            .unwrap(),
            diff::sampler_step(c, len, n, &bufs).unwrap(),
            diff::advance_step(c, &counter.buffer).unwrap(),
        ]);
        let check = |what: &str, got: &[f32], want: &[f32]| -> Result<(), String> {
            std::panic::catch_unwind(|| assert_close(&format!("{name} step {i}: {what}"), got, want, RTOL))
                .map_err(|e| e.downcast_ref::<String>().cloned().unwrap_or_default())
        };
        check("model input", &read(&model_in), &row("model_in", i))?;
        check("prev_sample", &read(&x), &row("prev_sample", i))?;
        if read(&timesteps) != vec![plan.timesteps[i]; batch] {
            return Err(format!("{name} step {i}: timestep"));
        }
    }
    Ok(())
}

#[test]
fn every_sampler_spacing_and_option_matches_diffusers_step_by_step() {
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(golden("samplers/steps/cases.json")).unwrap()).unwrap();
    let cases = index.as_array().unwrap();
    assert!(cases.len() >= 40);
    let failures: Vec<String> = cases.iter().filter_map(|case| run_case(case).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn bad_sampler_settings_are_refused() {
    let err = |r: wgpu_diffusion::Result<SamplerPlan>| r.unwrap_err().to_string();
    let cfg = SchedulerConfig::resolve(SamplerKind::Ddim, None, "test").unwrap();
    assert!(err(SamplerPlan::new(&cfg, 0, 0.0)).contains("--steps 0"));
    assert!(err(SamplerPlan::new(&cfg, 1001, 0.0)).contains("--steps 1001"));
    assert!(SamplerKind::parse("heun").unwrap_err().to_string().contains("unknown sampler 'heun'"));
    let file = SchedulerConfig::parse_file(r#"{"use_karras_sigmas": true}"#, "s.json").unwrap();
    let e = SchedulerConfig::resolve(SamplerKind::Euler, Some(&file), "s.json").unwrap_err().to_string();
    assert!(e.contains("use_karras_sigmas"), "{e}");
    // DDIM does not take use_karras_sigmas, so (as in diffusers) the key is ignored there.
    assert!(SchedulerConfig::resolve(SamplerKind::Ddim, Some(&file), "s.json").is_ok());
    let file = SchedulerConfig::parse_file(r#"{"algorithm_type": "sde-dpmsolver++"}"#, "s.json").unwrap();
    assert!(SchedulerConfig::resolve(SamplerKind::DpmPP2M, Some(&file), "s.json").is_err());
    assert!(SchedulerConfig::parse_file("{", "s.json").unwrap_err().to_string().contains("malformed"));
}

#[test]
fn pndm_is_plms_and_its_img2img_restarts_the_step_counter() {
    let file =
        SchedulerConfig::parse_file(r#"{"skip_prk_steps": true, "steps_offset": 1}"#, "s.json").unwrap();
    let cfg = SchedulerConfig::resolve(SamplerKind::Pndm, Some(&file), "s.json").unwrap();
    let plan = SamplerPlan::new(&cfg, 10, 0.0).unwrap();
    // 901, 801, 801, 701, ..., 101, 1: the second timestep repeated, 11 in all.
    let want: Vec<f32> =
        [901, 801, 801, 701, 601, 501, 401, 301, 201, 101, 1].iter().map(|&t| t as f32).collect();
    assert_eq!(plan.timesteps, want);
    // diffusers' img2img slices the timesteps and starts PNDM's counter again: the kept part's
    // first step saves its sample and the second re-steps it.
    let i2i = SamplerPlan::img2img(&plan, 0.5).unwrap().unwrap();
    assert_eq!(i2i.begin, 5);
    assert_eq!(i2i.plan.timesteps, want[5..].to_vec());
    assert_eq!(
        (i2i.plan.rows[0].save, i2i.plan.rows[1].from_saved, i2i.plan.rows[2].from_saved),
        (1.0, 1.0, 0.0)
    );
    let e = SchedulerConfig::resolve(SamplerKind::Pndm, None, "s.json").unwrap_err().to_string();
    assert!(e.contains("skip_prk_steps"), "{e}");
}
