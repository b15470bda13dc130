use wgpu_diffusion::kernels::diffusion::{self as diff, DdpmVariance, Prediction, StepCoeffs};

use crate::*;

/// diffusers' linear betas 1e-4..0.02 over T = 1000 (f32 linspace), and their cumulative product.
fn alphas_cumprod() -> Vec<f64> {
    let t = 1000;
    let mut acc = 1.0f64;
    (0..t)
        .map(|i| {
            let beta = (1e-4f32 + (0.02f32 - 1e-4f32) * i as f32 / (t - 1) as f32) as f64;
            acc *= 1.0 - beta;
            acc
        })
        .collect()
}

/// The DDPM step as diffusers writes it, in f64, independent of StepCoeffs.
#[allow(clippy::too_many_arguments)]
fn ddpm_direct(
    at: f64,
    ap: f64,
    pred: Prediction,
    clip: Option<f64>,
    var: DdpmVariance,
    x: f64,
    m: f64,
    z: f64,
) -> f64 {
    let mut x0 = match pred {
        Prediction::Epsilon => (x - (1.0 - at).sqrt() * m) / at.sqrt(),
        Prediction::Sample => m,
        Prediction::VPrediction => at.sqrt() * x - (1.0 - at).sqrt() * m,
    };
    if let Some(c) = clip {
        x0 = x0.clamp(-c, c);
    }
    let beta = 1.0 - at / ap;
    let mean = ap.sqrt() * beta / (1.0 - at) * x0 + (1.0 - beta).sqrt() * (1.0 - ap) / (1.0 - at) * x;
    let v = match var {
        DdpmVariance::FixedSmall => ((1.0 - ap) / (1.0 - at) * beta).max(1e-20),
        DdpmVariance::FixedLarge => beta,
    };
    mean + v.sqrt() * z
}

/// The DDIM step as diffusers writes it (use_clipped_model_output = false), in f64.
#[allow(clippy::too_many_arguments)]
fn ddim_direct(
    at: f64,
    ap: f64,
    pred: Prediction,
    clip: Option<f64>,
    eta: f64,
    x: f64,
    m: f64,
    z: f64,
) -> f64 {
    let (mut x0, eps) = match pred {
        Prediction::Epsilon => ((x - (1.0 - at).sqrt() * m) / at.sqrt(), m),
        Prediction::Sample => (m, (x - at.sqrt() * m) / (1.0 - at).sqrt()),
        Prediction::VPrediction => {
            (at.sqrt() * x - (1.0 - at).sqrt() * m, at.sqrt() * m + (1.0 - at).sqrt() * x)
        }
    };
    if let Some(c) = clip {
        x0 = x0.clamp(-c, c);
    }
    let std = eta * ((1.0 - ap) / (1.0 - at) * (1.0 - at / ap)).sqrt();
    ap.sqrt() * x0 + (1.0 - ap - std * std).sqrt() * eps + std * z
}

/// One `sampler_step` then `advance_step` over [x, model output, noise, history, table, counter].
fn step_on_device(len: usize, steps: usize, t: [&wgpu_diffusion::gpu::Tensor; 6]) {
    let bufs = diff::StepBuffers {
        x: &t[0].buffer,
        model_out: &t[1].buffer,
        noise: &t[2].buffer,
        history: &t[3].buffer,
        table: &t[4].buffer,
        step_counter: &t[5].buffer,
    };
    let c = ctx();
    c.run(&[diff::sampler_step(c, len, steps, &bufs).unwrap(), diff::advance_step(c, &t[5].buffer).unwrap()]);
}

/// Runs `sampler_step` on the device for each table row in turn (advancing the step counter on
/// the device between them) and checks every intermediate against `direct`.
fn check_chain(rows: &[StepCoeffs], direct: &dyn Fn(usize, f64, f64, f64) -> f64, what: &str) {
    let len = 1000;
    let mut r = rng(7);
    let mut x = random(&mut r, len).iter().map(|v| v * 3.0).collect::<Vec<f32>>(); // some x0 beyond the clip
    let xt = upload(&x);
    let table = upload(bytemuck::cast_slice(rows));
    let counter = ctx().upload_u32(&[0], &[1]).unwrap();
    let mut prev = random(&mut r, diff::HISTORY_SLOTS * len);
    let prevt = upload(&prev);
    for (i, row) in rows.iter().enumerate() {
        let (m, z) = (random(&mut r, len), random(&mut r, len));
        let (mt, zt) = (upload(&m), upload(&z));
        step_on_device(len, rows.len(), [&xt, &mt, &zt, &prevt, &table, &counter]);
        let got = read(&xt);
        let want_kernel = diff::reference_step(row, &x, &m, &z, &mut prev);
        assert_close(&format!("{what} step {i}: previous x0"), &read(&prevt), &prev, RTOL);
        assert_close(&format!("{what} step {i} vs reference_step"), &got, &want_kernel, RTOL);
        let want_direct: Vec<f32> =
            (0..len).map(|j| direct(i, x[j] as f64, m[j] as f64, z[j] as f64) as f32).collect();
        assert_close(&format!("{what} step {i} vs diffusers formula"), &got, &want_direct, RTOL);
        x = got;
    }
    assert_eq!(ctx().read_u32(&counter).unwrap(), vec![rows.len() as u32]);
}

#[test]
fn ddpm_steps_every_prediction_variance_and_clip() {
    let ac = alphas_cumprod();
    let ts = [999usize, 600, 100, 1, 0];
    for pred in [Prediction::Epsilon, Prediction::Sample, Prediction::VPrediction] {
        for var in [DdpmVariance::FixedSmall, DdpmVariance::FixedLarge] {
            for clip in [None, Some(1.0f32)] {
                let prev = |i: usize| if ts[i] == 0 { 1.0 } else { ac[ts[i] - 1] };
                let rows: Vec<_> = (0..ts.len())
                    .map(|i| StepCoeffs::ddpm(ac[ts[i]], prev(i), pred, clip, var, ts[i] > 0))
                    .collect();
                let direct = |i: usize, x, m, z| {
                    let z = if ts[i] > 0 { z } else { 0.0 };
                    ddpm_direct(ac[ts[i]], prev(i), pred, clip.map(|c| c as f64), var, x, m, z)
                };
                check_chain(&rows, &direct, &format!("ddpm {pred:?} {var:?} clip {clip:?}"));
            }
        }
    }
}

#[test]
fn ddim_steps_every_prediction_eta_and_clip() {
    let ac = alphas_cumprod();
    let ts = [980usize, 780, 580, 380, 180, 0];
    for pred in [Prediction::Epsilon, Prediction::Sample, Prediction::VPrediction] {
        for eta in [0.0, 1.0] {
            for clip in [None, Some(1.0f32)] {
                // prev_t = t - 200; set_alpha_to_one gives abar_prev = 1 below zero.
                let prev = |i: usize| if ts[i] < 200 { 1.0 } else { ac[ts[i] - 200] };
                let rows: Vec<_> = (0..ts.len())
                    .map(|i| StepCoeffs::ddim(ac[ts[i]], prev(i), pred, clip, eta, false))
                    .collect();
                let direct = |i: usize, x, m, z| {
                    ddim_direct(ac[ts[i]], prev(i), pred, clip.map(|c| c as f64), eta, x, m, z)
                };
                check_chain(&rows, &direct, &format!("ddim {pred:?} eta {eta} clip {clip:?}"));
            }
        }
    }
}

#[test]
fn add_noise_uses_each_items_timestep() {
    let ac = alphas_cumprod();
    let (batch, per_item) = (5, 37);
    let t = [0u32, 1, 500, 998, 999];
    let mut r = rng(3);
    let (x0, eps) = (random(&mut r, batch * per_item), random(&mut r, batch * per_item));
    let (x0t, epst, out) = (upload(&x0), upload(&eps), output(batch * per_item));
    let tt = ctx().upload_u32(&t, &[batch]).unwrap();
    let table = upload(&diff::noise_table(&ac));
    run(diff::add_noise(
        ctx(),
        batch,
        per_item,
        ac.len(),
        &x0t.buffer,
        &epst.buffer,
        &tt.buffer,
        &table.buffer,
        &out.buffer,
    )
    .unwrap());
    assert_close("add_noise", &read(&out), &diff::reference_add_noise(&ac, &t, &x0, &eps), RTOL);
}

#[test]
fn multistep_history_and_prepare_step() {
    // A row that uses the previous x0 (as DPM-Solver++ 2M does) and a model-input scale (as Euler does).
    let c = ctx();
    let (batch, per) = (3, 50);
    let len = batch * per;
    let rows = [
        StepCoeffs {
            x0_x: 0.5,
            x0_m: -0.25,
            next_x0: 0.7,
            next_x: 0.1,
            model_in_scale: 0.3,
            timestep: 980.5,
            ..Default::default()
        },
        StepCoeffs {
            x0_x: 0.9,
            x0_m: 0.2,
            next_x0: 1.2,
            next_prev_x0: -0.4,
            model_in_scale: 0.6,
            timestep: 20.0,
            ..Default::default()
        },
    ];
    let mut r = rng(11);
    let mut x = random(&mut r, len);
    let mut prev = vec![0.0; diff::HISTORY_SLOTS * len];
    let (xt, prevt, zt) = (upload(&x), upload(&prev), upload(&vec![0.0; len]));
    let (model_in, tt) = (output(len), output(batch));
    let table = upload(bytemuck::cast_slice(&rows));
    let counter = c.upload_u32(&[0], &[1]).unwrap();
    for row in &rows {
        run(diff::prepare_step(
            c,
            batch,
            len,
            1,
            rows.len(),
            &xt.buffer,
            &table.buffer,
            &counter.buffer,
            &model_in.buffer,
            &tt.buffer,
        )
        .unwrap());
        assert_eq!(read(&tt), vec![row.timestep; batch]);
        let want_in: Vec<f32> = x.iter().map(|v| v * row.model_in_scale).collect();
        assert_close("model input", &read(&model_in), &want_in, RTOL);
        let m = random(&mut r, len);
        let mt = upload(&m);
        step_on_device(len, rows.len(), [&xt, &mt, &zt, &prevt, &table, &counter]);
        x = diff::reference_step(row, &x, &m, &vec![0.0; len], &mut prev);
        assert_close("multistep sample", &read(&xt), &x, RTOL);
    }
}

// Geometry: add_noise, prepare_step, guide and sampler_step are 1-D over the batch's values, 256
// a workgroup, split over x and y past the limit (advance_step is one invocation).
// - every batch in BATCHES of 98 values an image (1..13 workgroups, the last partial), each image
//   at its own timestep for add_noise; prepare_step writes one timestep per image, and with
//   guidance x twice (up to 26 workgroups) and two timesteps an image; guide reads both halves;
// - the same on `spill_ctx` (13 workgroups on a 4 x 4 grid at batch 33, 3 past the end; with
//   guidance up to batch 16: 13 workgroups, the most its 4 x 4 grid holds).
fn check_geometry_on(c: &wgpu_diffusion::gpu::Context, batch: usize, seed: u64, copies: usize) {
    let per = 98;
    let len = batch * per;
    let ac = alphas_cumprod();
    let mut r = rng(seed);
    let (x0, eps) = (random(&mut r, len), random(&mut r, len));
    let t: Vec<u32> = (0..batch as u32).map(|i| i * 97 % 1000).collect();
    let (x0t, epst, out) = (upload_on(c, &x0), upload_on(c, &eps), output_on(c, len));
    let (tt, table) = (c.upload_u32(&t, &[batch]).unwrap(), upload_on(c, &diff::noise_table(&ac)));
    let d = diff::add_noise(
        c,
        batch,
        per,
        ac.len(),
        &x0t.buffer,
        &epst.buffer,
        &tt.buffer,
        &table.buffer,
        &out.buffer,
    );
    c.run(&[d.unwrap()]);
    assert_close(
        &format!("add_noise, batch {batch}"),
        &read_on(c, &out),
        &diff::reference_add_noise(&ac, &t, &x0, &eps),
        RTOL,
    );

    let row = StepCoeffs {
        x0_x: 1.3,
        x0_m: -0.4,
        clip: 1.0,
        eps_x: 0.2,
        eps_m: 0.9,
        eps_x0: -0.1,
        next_x0: 0.8,
        next_x: 0.3,
        next_eps: 0.5,
        next_prev_x0: -0.2,
        noise_scale: 0.1,
        model_in_scale: 0.7,
        timestep: 321.0,
        ..Default::default()
    };
    let (x, raw, z) = (random(&mut r, len), random(&mut r, copies * len), random(&mut r, len));
    let mut prev = random(&mut r, diff::HISTORY_SLOTS * len);
    let (xt, rawt, zt, prevt) = (upload_on(c, &x), upload_on(c, &raw), upload_on(c, &z), upload_on(c, &prev));
    let (model_in, ts, guided) =
        (output_on(c, copies * len), output_on(c, copies * batch), output_on(c, len));
    let table = upload_on(c, bytemuck::cast_slice(&[row]));
    let counter = c.upload_u32(&[0], &[1]).unwrap();
    let scale = 3.5;
    // Under guidance the sampler reads the guided output, else the model's own.
    let (m, mt) =
        if copies == 2 { (diff::reference_guide(len, scale, &raw), &guided) } else { (raw.clone(), &rawt) };
    let bufs = diff::StepBuffers {
        x: &xt.buffer,
        model_out: &mt.buffer,
        noise: &zt.buffer,
        history: &prevt.buffer,
        table: &table.buffer,
        step_counter: &counter.buffer,
    };
    let mut list = vec![diff::prepare_step(
        c,
        copies * batch,
        len,
        copies,
        1,
        &xt.buffer,
        &table.buffer,
        &counter.buffer,
        &model_in.buffer,
        &ts.buffer,
    )
    .unwrap()];
    if copies == 2 {
        list.push(diff::guide(c, len, scale, &rawt.buffer, &guided.buffer).unwrap());
    }
    list.push(diff::sampler_step(c, len, 1, &bufs).unwrap());
    c.run(&list);
    let what = format!("batch {batch}, {copies} rows an image");
    assert_eq!(read_on(c, &ts), vec![321.0; copies * batch], "timesteps, {what}");
    let want_in: Vec<f32> = x.iter().cycle().take(copies * len).map(|v| v * 0.7).collect();
    assert_close(&format!("model input, {what}"), &read_on(c, &model_in), &want_in, RTOL);
    if copies == 2 {
        assert_close(&format!("guidance, {what}"), &read_on(c, &guided), &m, RTOL);
    }
    let want = diff::reference_step(&row, &x, &m, &z, &mut prev);
    assert_close(&format!("sampler step, batch {batch}"), &read_on(c, &xt), &want, RTOL);
    assert_close(&format!("previous x0, batch {batch}"), &read_on(c, &prevt), &prev, RTOL);
}

#[test]
fn diffusion_geometry_every_batch() {
    for (i, &n) in BATCHES.iter().enumerate() {
        for copies in [1, 2] {
            check_geometry_on(ctx(), n, 1000 + i as u64, copies);
            if copies * n <= 33 {
                check_geometry_on(spill_ctx(), n, 1010 + i as u64, copies);
            }
        }
    }
}

// RePaint's join and renoising (repaint_mix): 1-D, 256 a workgroup, spilled into y past the
// limit; every batch in BATCHES of 28x28 (up to 102 workgroups) and, on `spill_ctx`, of 5x7
// (up to 5 workgroups on a 4 x 2 grid); the counter picks row 1 (a join) or row 2 (a renoising).
#[test]
fn repaint_mix_every_batch() {
    use wgpu_diffusion::kernels::diffusion::{MixBuffers, MixRow};
    let rows = [
        MixRow::default(),
        MixRow { known_orig: 0.8, known_z: 0.6, keep: 1.0, fresh: 0.0, use_mask: 1.0, _pad: [0.0; 3] },
        MixRow { keep: 0.99, fresh: 0.141, ..MixRow::default() },
    ];
    let on = |c: &wgpu_diffusion::gpu::Context, n: usize, row: u32, seed: u64| {
        let mut r = rng(seed);
        let (x, orig, z) = (random(&mut r, n), random(&mut r, n), random(&mut r, n));
        let mask: Vec<f32> = random(&mut r, n).iter().map(|v| (*v > 0.0) as u32 as f32).collect();
        let (xt, ot, mt, zt) = (upload_on(c, &x), upload_on(c, &orig), upload_on(c, &mask), upload_on(c, &z));
        let table = upload_on(c, bytemuck::cast_slice(&rows));
        let counter = c.upload_u32(&[row], &[1]).unwrap();
        let b = MixBuffers {
            x: &xt.buffer,
            orig: &ot.buffer,
            mask: &mt.buffer,
            noise: &zt.buffer,
            rows: &table.buffer,
            counter: &counter.buffer,
        };
        c.run(&[diff::repaint_mix(c, n, rows.len(), &b).unwrap()]);
        let want = diff::reference_mix(&rows[row as usize], &x, &orig, &mask, &z);
        assert_close(&format!("repaint_mix row {row} over {n}"), &read_on(c, &xt), &want, RTOL);
    };
    for (i, &b) in BATCHES.iter().enumerate() {
        on(ctx(), b * 784, 1, i as u64);
        on(ctx(), b * 784, 2, 10 + i as u64);
        on(spill_ctx(), b * 35, 1 + (i % 2) as u32, 20 + i as u64);
    }
}
