//! The trainer loop on a tiny model: the device makes each step's batch exactly as the
//! references say (x0 from the seeded data order, t and eps from Philox keyed by (seed, step,
//! element)); the same bits whether the dataset lives on the device or streams in, and however
//! many steps a submission holds.

use wgpu_diffusion::gpu::{Context, ContextOptions};
use wgpu_diffusion::io::dataset::Dataset;
use wgpu_diffusion::io::npy::Values;
use wgpu_diffusion::kernels::data::{self, Gather, Pixels};
use wgpu_diffusion::kernels::rng::{self, NoiseKey};
use wgpu_diffusion::model::{UNet, UNetConfig};
use wgpu_diffusion::train::order::DataOrder;
use wgpu_diffusion::train::{init, Held, Recipe, Trainer};

use crate::*;

fn config() -> UNetConfig {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny_unet_config.json");
    UNetConfig::parse(&std::fs::read_to_string(&path).unwrap(), "tiny").unwrap()
}

fn dataset(count: usize) -> Dataset {
    let mut r = rng(3);
    let bytes = random(&mut r, count * 64).iter().map(|v| ((v + 1.0) * 127.9) as u8).collect();
    Dataset { source: "random".into(), count, channels: 1, size: 8, values: Values::U8(bytes), labels: None }
}

fn alphas() -> Vec<f64> {
    let betas = wgpu_diffusion::diffusion::schedule::betas(
        wgpu_diffusion::diffusion::schedule::BetaSchedule::Linear,
        1e-4,
        0.02,
        1000,
    );
    wgpu_diffusion::diffusion::schedule::alphas_cumprod(&betas).iter().map(|&a| a as f64).collect()
}

fn recipe() -> Recipe {
    Recipe { steps: 6, batch: 5, seed: 11, random_flip: true, lr: 1e-3, warmup: 2, ..Recipe::default() }
}

/// Runs `steps` steps, `per` a submission, and returns the weights, the EMA and the losses.
fn train(c: &Context, data: &Dataset, steps: u64, per: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>, bool) {
    let recipe = recipe();
    let tensors = init::pytorch_default(c, &config(), recipe.seed).unwrap();
    let mut unet = UNet::from_tensors(c, config(), tensors, "init").unwrap();
    let mut t = Trainer::new(c, &mut unet, &alphas(), data, &recipe, 1 << 30, per, None).unwrap();
    let mut losses = vec![];
    while t.submitted < steps {
        losses.extend(t.submit(c, data, per).unwrap().iter().map(|l| l.loss));
    }
    losses.extend(t.finish(c).unwrap().iter().map(|l| l.loss));
    let flat = |h| t.optimizer.read(c, &unet, h).unwrap().into_iter().flat_map(|(_, x)| x.data).collect();
    (flat(Held::Weights), flat(Held::Ema), losses, t.batches.resident)
}

#[test]
fn the_device_batch_is_the_references() {
    let c = ctx();
    let data = dataset(7);
    let recipe = recipe();
    let tensors = init::pytorch_default(c, &config(), recipe.seed).unwrap();
    let mut unet = UNet::from_tensors(c, config(), tensors, "init").unwrap();
    let mut t = Trainer::new(c, &mut unet, &alphas(), &data, &recipe, 1 << 30, 4, None).unwrap();
    // Two steps, then the third's batch alone (the counter reads 2).
    t.submit(c, &data, 2).unwrap();
    t.finish(c).unwrap();
    t.batches.prepare(c, &data, 2..3).unwrap();
    c.run(&t.batches.dispatches);
    let per = 64;
    let x0 = c.read_buffer(&t.step.x0, 5 * per).unwrap();
    let values: Vec<f32> = (0..7).flat_map(|i| data.image(i)).collect();
    let mut order = DataOrder::new(11, 7, 5, true);
    let g = Gather { pixels: Pixels::U8, images: 7, per_image: per, width: 8, batch: 5, ring: 1 };
    assert_eq!(x0, data::reference(&g, &values, &order.batch(2), 0), "x0");
    let key = NoiseKey { seed: 11, stream_base: 0, substream: 0 };
    let eps = c.read_buffer(&t.step.eps, 5 * per).unwrap();
    let (_, worst) = wgpu_diffusion::graph::check::worst_error(&eps, &rng::reference(key, 2, 5, per));
    assert!(worst <= 1e-5, "eps off by {worst:e}");
    let ts = c.read_raw(&t.step.t_index, 20).unwrap();
    assert_eq!(bytemuck::cast_slice::<u8, u32>(&ts), rng::reference_timesteps(key, 2, 5, 1000));
}

#[test]
fn resident_or_streamed_and_any_submission_size_give_the_same_bits() {
    let data = dataset(1100);
    let (w, ema, losses, resident) = train(ctx(), &data, 6, 4);
    assert!(resident);
    assert_eq!(losses.len(), 6);
    assert!(w != ema, "the EMA is not the weights");
    // One step a submission.
    assert_eq!(train(ctx(), &data, 6, 1), (w.clone(), ema.clone(), losses.clone(), true));
    // A device whose bindings cannot hold the dataset (1100 x 64 bytes) but can hold every
    // activation and a ring of batches (4 x 5 x 64 bytes).
    let mut small = Context::new(&ContextOptions::default()).unwrap();
    small.limits.max_storage_buffer_binding_size = 64 << 10;
    let streamed = train(&small, &data, 6, 4);
    assert!(!streamed.3, "streamed");
    assert_eq!((streamed.0, streamed.1, streamed.2), (w, ema, losses));
}

/// `steps` steps of a run whose batches are summed in 4 gradient shares, split over `ranks`
/// trainers in this process that exchange their shares each step as MPI ranks do (joined in
/// rank order): every rank's weights, EMA and losses.
fn shared_run(data: &Dataset, steps: u64, ranks: usize) -> Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let c = ctx();
    let recipe = Recipe { batch: 8, grad_shares: 4, ..recipe() };
    let tensors = init::pytorch_default(c, &config(), recipe.seed).unwrap();
    let mut unets: Vec<UNet> =
        (0..ranks).map(|_| UNet::from_tensors(c, config(), tensors.clone(), "init").unwrap()).collect();
    let per = 4 / ranks;
    let mut trainers: Vec<Trainer> = unets
        .iter_mut()
        .enumerate()
        .map(|(r, u)| {
            let own = Some(r * per..(r + 1) * per);
            Trainer::sharing(c, u, &alphas(), data, &recipe, 1 << 30, 4, None, own).unwrap()
        })
        .collect();
    let mut losses = vec![vec![]; ranks];
    for _ in 0..steps {
        let parts: Vec<_> = trainers.iter_mut().map(|t| t.compute_shares(c, data).unwrap()).collect();
        let all = wgpu_diffusion::train::trainer::SharePart {
            gradients: parts.iter().flat_map(|p| p.gradients.clone()).collect(),
            losses: parts.iter().flat_map(|p| p.losses.clone()).collect(),
        };
        for (t, l) in trainers.iter_mut().zip(&mut losses) {
            l.push(t.apply_shares(c, &all).unwrap().loss);
        }
    }
    trainers
        .iter()
        .zip(&unets)
        .zip(losses)
        .map(|((t, u), l)| {
            let flat = |h| t.optimizer.read(c, u, h).unwrap().into_iter().flat_map(|(_, x)| x.data).collect();
            (flat(Held::Weights), flat(Held::Ema), l)
        })
        .collect()
}

#[test]
fn ranks_sharing_the_gradient_shares_give_one_process_bits() {
    let data = dataset(23);
    let c = ctx();
    // One process summing the 4 shares as it computes them.
    let recipe = Recipe { batch: 8, grad_shares: 4, ..recipe() };
    let tensors = init::pytorch_default(c, &config(), recipe.seed).unwrap();
    let mut unet = UNet::from_tensors(c, config(), tensors, "init").unwrap();
    let mut t = Trainer::new(c, &mut unet, &alphas(), &data, &recipe, 1 << 30, 3, None).unwrap();
    let mut losses = vec![];
    while t.submitted < 5 {
        let n = (5 - t.submitted as usize).min(3);
        losses.extend(t.submit(c, &data, n).unwrap().iter().map(|l| l.loss));
    }
    losses.extend(t.finish(c).unwrap().iter().map(|l| l.loss));
    let flat = |h| {
        t.optimizer.read(c, &unet, h).unwrap().into_iter().flat_map(|(_, x)| x.data).collect::<Vec<f32>>()
    };
    let one = (flat(Held::Weights), flat(Held::Ema), losses);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for ranks in [1, 2, 4] {
        for (r, got) in shared_run(&data, 5, ranks).into_iter().enumerate() {
            let what = format!("{ranks} ranks, rank {r}");
            assert_eq!(bits(&got.0), bits(&one.0), "{what}: weights");
            assert_eq!(bits(&got.1), bits(&one.1), "{what}: EMA");
            assert_eq!(bits(&got.2), bits(&one.2), "{what}: losses");
        }
    }
}
