//! The training goldens of tools/make_grad_goldens.py (PyTorch autograd on four small random
//! UNet2DModels): what the engine computes of them today, forward-noising, the UNet forward and
//! the MSE loss, against PyTorch's; and that each golden holds a gradient for every parameter of
//! its model file, for the backward pass to be checked against.

use wgpu_diffusion::diffusion::{SamplerKind, SchedulerConfig};
use wgpu_diffusion::kernels::{diffusion as diff, loss};
use wgpu_diffusion::model::tensors::read_safetensors;
use wgpu_diffusion::model::{ModelFolder, UNet};

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
        let folder = ModelFolder::open(&dir(name)).unwrap();
        let g = read_safetensors(&dir(name).join("grads.safetensors")).unwrap();
        let (x0, eps, x_t, t) = (&g["x0"].data, &g["eps"].data, &g["x_t"].data, &g["timesteps"].data);
        let batch = t.len();
        let per = x0.len() / batch;
        // x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, as the scheduler's add_noise.
        let text = std::fs::read_to_string(folder.scheduler_config.as_ref().unwrap()).unwrap();
        let file = SchedulerConfig::parse_file(&text, "scheduler_config.json").unwrap();
        let sched =
            SchedulerConfig::resolve(SamplerKind::Ddpm, Some(&file), "scheduler_config.json").unwrap();
        let ac: Vec<f64> = sched.alphas_cumprod().unwrap().iter().map(|&a| a as f64).collect();
        let ts: Vec<u32> = t.iter().map(|&v| v as u32).collect();
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
        c.run(&loss::mse_loss(c, pred.len(), &pt.buffer, &et.buffer, &l.buffer).unwrap());
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
