//! The training goldens of tools/make_grad_goldens.py (PyTorch autograd on four small random
//! UNet2DModels): forward noising, the UNet forward and the MSE loss, then the training step's
//! gradient of every parameter (forward + backward on the device through one planned graph),
//! against PyTorch's; also as micro-batches whose gradients accumulate.

use wgpu_diffusion::diffusion::{SamplerKind, SchedulerConfig};
use wgpu_diffusion::graph::check::worst_error;
use wgpu_diffusion::kernels::{diffusion as diff, loss};
use wgpu_diffusion::model::tensors::read_safetensors;
use wgpu_diffusion::model::{ModelFolder, UNet};
use wgpu_diffusion::train::{StepOptions, TrainStep};

use crate::*;

const NAMES: [&str; 4] = ["fashion-multihead", "cifar-legacy-pad0", "batch12", "all-attention"];
const LEGACY: [(&str, &str); 4] =
    [(".query.", ".to_q."), (".key.", ".to_k."), (".value.", ".to_v."), (".proj_attn.", ".to_out.0.")];

fn dir(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/grad").join(name)
}

#[test]
fn noising_forward_and_loss_match_pytorch() {
    let c = ctx();
    for name in NAMES {
        let (folder, g, ac, ts) = golden(name);
        let (x0, eps, x_t, t) = (&g["x0"].data, &g["eps"].data, &g["x_t"].data, &g["timesteps"].data);
        let batch = t.len();
        let per = x0.len() / batch;
        // x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, as the scheduler's add_noise.
        let (x0t, epst, out) = (upload(x0), upload(&eps[..]), output(x0.len()));
        let (tt, table) = (c.upload_u32(&ts, &[batch]).unwrap(), upload(&diff::noise_table(&ac)));
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
        assert_close(&format!("{name}: forward noising"), &read(&out), x_t, RTOL);
        // The UNet on x_t, then the loss on the device.
        let mut unet = UNet::load(c, &folder).unwrap();
        let pred = unet.forward(c, x_t, t).unwrap();
        let (pt, et, l) = (upload(&pred), upload(&eps[..]), output(1));
        c.run(&loss::mse_loss(c, pred.len(), pred.len(), &pt.buffer, &et.buffer, &l.buffer).unwrap());
        let (got, want) = (read(&l)[0], g["loss"].data[0]);
        assert!(((got - want) / want).abs() <= 1e-5, "{name}: loss {got} vs PyTorch's {want}");
    }
}

#[test]
fn goldens_hold_a_gradient_for_every_parameter() {
    for name in NAMES {
        let weights = read_safetensors(&dir(name).join("diffusion_pytorch_model.safetensors")).unwrap();
        let g = read_safetensors(&dir(name).join("grads.safetensors")).unwrap();
        for (file_name, w) in &weights {
            let mut current = file_name.clone();
            for (old, new) in LEGACY {
                current = current.replace(old, new);
            }
            let grad = g
                .get(&format!("grad.{current}"))
                .unwrap_or_else(|| panic!("{name}: no gradient of {file_name}"));
            assert_eq!(grad.shape, w.shape, "{name}: {file_name}");
            assert!(grad.data.iter().all(|v| v.is_finite()), "{name}: {file_name} finite");
        }
        assert_eq!(
            g.keys().filter(|k| k.starts_with("grad.")).count(),
            weights.len(),
            "{name}: one gradient a parameter"
        );
    }
}

/// The golden's model and batch: (folder, goldens, alphas_cumprod, t as indices).
fn golden(
    name: &str,
) -> (ModelFolder, std::collections::HashMap<String, wgpu_diffusion::model::HostTensor>, Vec<f64>, Vec<u32>) {
    let folder = ModelFolder::open(&dir(name)).unwrap();
    let g = read_safetensors(&dir(name).join("grads.safetensors")).unwrap();
    let text = std::fs::read_to_string(folder.scheduler_config.as_ref().unwrap()).unwrap();
    let file = SchedulerConfig::parse_file(&text, "scheduler_config.json").unwrap();
    let sched = SchedulerConfig::resolve(SamplerKind::Ddpm, Some(&file), "scheduler_config.json").unwrap();
    let ac = sched.alphas_cumprod().unwrap().iter().map(|&a| a as f64).collect();
    let t = g["timesteps"].data.iter().map(|&v| v as u32).collect();
    (folder, g, ac, t)
}

/// Runs a training step on the golden's batch with at most `max_micro` images a micro-batch and
/// checks the loss and every parameter's gradient; returns the micro-batch size and the worst
/// gradient error.
fn check_gradients(name: &str, max_micro: usize) -> (usize, f64) {
    let c = ctx();
    let (folder, g, ac, t) = golden(name);
    let mut unet = UNet::load(c, &folder).unwrap();
    let options = StepOptions { max_micro, ..StepOptions::default() };
    let step = TrainStep::new(c, &mut unet, &ac, t.len(), &options).unwrap();
    step.upload(c, &g["x0"].data, &t, &g["eps"].data).unwrap();
    c.run(&step.dispatches);
    let (got, want) = (step.loss(c).unwrap(), g["loss"].data[0]);
    assert!(((got - want) / want).abs() <= 1e-5, "{name}: loss {got} vs PyTorch's {want}");
    let grads = step.read_gradients(c, &unet).unwrap();
    assert_eq!(
        grads.len(),
        g.keys().filter(|k| k.starts_with("grad.")).count(),
        "{name}: one gradient a parameter"
    );
    let max_abs = |v: &[f32]| v.iter().fold(0.0f64, |m, &x| m.max(x.abs() as f64));
    let mut worst = (String::new(), 0.0f64);
    for (tensor, got) in &grads {
        let want = &g[&format!("grad.{tensor}")];
        assert_eq!(want.shape, got.shape, "{name}: {tensor}");
        let data = &got.data;
        if let Some(block) = tensor.strip_suffix(".to_k.bias") {
            // Zero in exact arithmetic: a key bias b adds q.b to every score of a query's row,
            // which the softmax cancels. Both engines give rounding noise (~1e-10 here, where
            // PyTorch's relative rule would compare noise with noise): it must stay that small
            // beside the key weight's gradient.
            let weight = &grads.iter().find(|(t, _)| *t == format!("{block}.to_k.weight")).unwrap().1.data;
            let (ours, theirs, scale) = (max_abs(data), max_abs(&want.data), max_abs(weight));
            assert!(
                ours <= 1e-5 * scale && theirs <= 1e-5 * scale,
                "{name}: {tensor} {ours:.1e} {theirs:.1e}"
            );
            continue;
        }
        let (_, e) = worst_error(data, &want.data);
        if e > worst.1 {
            worst = (tensor.clone(), e);
        }
    }
    assert!(
        worst.1 <= 1e-4,
        "{name} (micro-batch {}): d loss / d {} is off by {:.2e}",
        step.micro,
        worst.0,
        worst.1
    );
    (step.micro, worst.1)
}

#[test]
fn every_gradient_matches_pytorch_autograd() {
    for name in NAMES {
        let (micro, worst) = check_gradients(name, usize::MAX);
        let batch = golden(name).3.len();
        assert_eq!(micro, batch, "{name}: one micro-batch");
        eprintln!("{name}: worst gradient error {worst:.2e}");
    }
}

#[test]
fn micro_batches_accumulate_the_same_gradients() {
    // Batch 12 as 3 micro-batches of 4, and as 12 of 1.
    for max_micro in [4, 1] {
        let (micro, worst) = check_gradients("batch12", max_micro);
        assert_eq!(micro, max_micro);
        eprintln!("batch12 in micro-batches of {micro}: worst gradient error {worst:.2e}");
    }
}
