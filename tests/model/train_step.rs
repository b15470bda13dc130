//! The training step's graph: what autodiff builds (and leaves out), how the planner keeps it,
//! every forward and backward op inside it against its CPU reference, the same bits run after run,
//! and the bundled model's gradient at the batch users train with (16) against micro-batches.

use wgpu_diffusion::graph::check::{check_ops, worst_error};
use wgpu_diffusion::graph::{Op, Plan};
use wgpu_diffusion::kernels::diffusion::Prediction;
use wgpu_diffusion::model::{ModelFolder, UNet};
use wgpu_diffusion::train::{StepOptions, TrainStep};

use crate::*;

fn golden_model(name: &str) -> UNet {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/grad").join(name);
    UNet::load(ctx(), &ModelFolder::open(&dir).unwrap()).unwrap()
}

/// A linear schedule's alphas_cumprod (1000 steps).
fn schedule() -> Vec<f64> {
    let mut abar = 1.0;
    (0..1000)
        .map(|i| {
            abar *= 1.0 - (1e-4 + (0.02 - 1e-4) * i as f64 / 999.0);
            abar
        })
        .collect()
}

/// A random batch for `step`: x0, t, eps.
fn random_batch(step: &TrainStep, seed: u64) -> (Vec<f32>, Vec<u32>, Vec<f32>) {
    let per: usize = step.graph.graph.shape(step.graph.sample)[1..].iter().product();
    let mut r = rng(seed);
    let (x0, eps) = (random(&mut r, step.batch * per), random(&mut r, step.batch * per));
    let t = (0..step.batch as u32).map(|i| (i * 97 + 13) % 1000).collect();
    (x0, t, eps)
}

#[test]
fn autodiff_builds_only_the_gradients_the_loss_needs() {
    let mut unet = golden_model("fashion-multihead");
    let step = TrainStep::new(ctx(), &mut unet, &schedule(), 3, &StepOptions::default()).unwrap();
    let g = &step.graph.graph;
    // Every trainable param has a gradient, the timestep embedding's frequencies (frozen) none.
    assert_eq!(step.graph.gradients.params.len(), g.params.len() - g.frozen.len());
    assert_eq!(g.frozen.len(), 1);
    assert!(step.graph.gradients.of(g.frozen[0]).is_none());
    // No backward of the timestep embedding (its input is the timesteps), and no input gradient
    // of conv_in (its input is the noised sample): each conv has a d weight, all but one a dx.
    let count = |f: &dyn Fn(&Op) -> bool| g.nodes.iter().filter(|n| f(&n.op)).count();
    let convs = count(&|o| matches!(o, Op::Conv2d(_)));
    assert_eq!(count(&|o| matches!(o, Op::Conv2dBackwardParams(_))), convs);
    assert_eq!(count(&|o| matches!(o, Op::Conv2dBackwardInput(_))), convs - 1);
    assert!(g.nodes.iter().all(|n| !(matches!(n.op, Op::Conv2dBackwardInput(_)) && n.layer == "conv_in")));
    // Tensors used twice get their gradients summed: each resnet's input (norm1 and the
    // shortcut), each skip (the next block and its up-block concat), the time embedding (every
    // resnet's projection).
    let resnets =
        g.nodes.iter().filter(|n| n.layer.ends_with(".norm1") && matches!(n.op, Op::GroupNorm(_))).count();
    let projections = count(&|o| matches!(o, Op::Linear(_))) - 2;
    assert!(count(&|o| matches!(o, Op::Add(_))) >= resnets + projections - 1);
    // Gradients land in slots of their own, which nothing else shares.
    let plan = &step.exe.plan;
    for &(_, grad) in &step.graph.gradients.params {
        assert!(g.outputs.contains(&grad));
        let shared = (0..g.shapes.len()).filter(|&t| plan.slot_of[t] == plan.slot_of[grad]).count();
        assert_eq!(shared, 1, "a gradient's slot is its own");
    }
}

#[test]
fn the_planner_keeps_each_activation_until_its_last_backward_use() {
    let mut unet = golden_model("all-attention");
    let step = TrainStep::new(ctx(), &mut unet, &schedule(), 2, &StepOptions::default()).unwrap();
    let (g, plan) = (&step.graph.graph, &step.exe.plan);
    assert_eq!(plan, &Plan::new(g));
    // Live range of a tensor: from the node that writes it to the last node that reads it
    // (inputs and outputs: the whole run). No two tensors live at once share a slot.
    let n = g.nodes.len();
    let mut live = vec![(0usize, 0usize); g.shapes.len()];
    for (i, node) in g.nodes.iter().enumerate() {
        for &o in &node.outputs {
            live[o] = (i, i);
        }
    }
    for (i, node) in g.nodes.iter().enumerate() {
        for t in node.op.inputs() {
            live[t].1 = live[t].1.max(i);
        }
    }
    for &t in g.inputs.iter().chain(&g.outputs) {
        live[t] = (0, n);
    }
    let activations: Vec<usize> = g.activations().collect();
    for (a, &t) in activations.iter().enumerate() {
        for &u in &activations[a + 1..] {
            let ((d1, l1), (d2, l2)) = (live[t], live[u]);
            if d1 <= l2 && d2 <= l1 {
                assert_ne!(plan.slot_of[t], plan.slot_of[u], "tensors {t} and {u} live together in one slot");
            }
        }
    }
    // Forward activations the backward reads stay alive past the forward: the planner does not
    // free them at their last forward use.
    let forward_end = g.nodes.iter().position(|n| matches!(n.op, Op::MseLoss(_))).unwrap();
    assert!(activations.iter().any(|&t| live[t].0 < forward_end && live[t].1 > forward_end + 1));
    assert!(plan.peak_bytes < plan.naive_bytes);
    assert!(step.peak_bytes > plan.peak_bytes);
}

#[test]
fn every_op_of_the_training_graph_matches_its_reference() {
    // Batch 9 (more than 8 images: multi-workgroup grids) on the multi-head golden model.
    let c = ctx();
    let mut unet = golden_model("fashion-multihead");
    let step = TrainStep::new(c, &mut unet, &schedule(), 9, &StepOptions::default()).unwrap();
    let (x0, t, eps) = random_batch(&step, 1);
    step.upload(c, &x0, &t, &eps).unwrap();
    c.run(&step.dispatches);
    let rows = check_ops(c, &step.graph.graph, &step.exe).unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    for r in &rows {
        kinds.insert(r.kind);
        // The key bias's gradient is zero in exact arithmetic (see grad_golden.rs): noise.
        if r.layer.ends_with(".to_k [output 1]") {
            continue;
        }
        assert!(
            r.error <= 1e-4,
            "{} ({}): off by {:.2e} at {} ({} vs {})",
            r.layer,
            r.kind,
            r.error,
            r.at,
            r.got,
            r.want
        );
    }
    for kind in [
        "conv2d dx",
        "conv2d dW",
        "group norm backward",
        "linear backward",
        "attention backward",
        "concat backward",
        "upsample backward",
        "add",
        "mse loss",
        "mse gradient",
    ] {
        assert!(kinds.contains(kind), "no {kind} op was checked");
    }
}

#[test]
fn a_step_gives_the_same_bits_every_run() {
    let c = ctx();
    let mut unet = golden_model("cifar-legacy-pad0");
    let step = TrainStep::new(c, &mut unet, &schedule(), 4, &StepOptions::default()).unwrap();
    let (x0, t, eps) = random_batch(&step, 2);
    step.upload(c, &x0, &t, &eps).unwrap();
    c.run(&step.dispatches);
    let first = step.read_gradients(c, &unet).unwrap();
    c.run(&step.dispatches);
    c.run(&step.dispatches);
    let third = step.read_gradients(c, &unet).unwrap();
    for ((name, a), (_, b)) in first.iter().zip(&third) {
        assert_eq!(a.data, b.data, "{name}: the same bits again");
    }
}

#[test]
fn the_bundled_models_batch_16_gradient_equals_its_micro_batches() {
    // The batch users train with, as one micro-batch, against 4 micro-batches of 4: other grids
    // at every op, the same gradient up to summation order.
    let c = ctx();
    let folder = ModelFolder::open(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights/fashion-mnist"),
    )
    .unwrap();
    let mut unet = UNet::load(c, &folder).unwrap();
    let whole = TrainStep::new(c, &mut unet, &schedule(), 16, &StepOptions::default()).unwrap();
    let options = StepOptions { max_micro: 4, ..StepOptions::default() };
    let parts = TrainStep::new(c, &mut unet, &schedule(), 16, &options).unwrap();
    assert_eq!((whole.micro, parts.micro), (16, 4));
    let (x0, t, eps) = random_batch(&whole, 3);
    for step in [&whole, &parts] {
        step.upload(c, &x0, &t, &eps).unwrap();
        c.run(&step.dispatches);
    }
    let (l1, l2) = (whole.loss(c).unwrap(), parts.loss(c).unwrap());
    assert!(l1.is_finite() && ((l1 - l2) / l1).abs() <= 1e-5, "loss {l1} vs {l2}");
    let (a, b) = (whole.read_gradients(c, &unet).unwrap(), parts.read_gradients(c, &unet).unwrap());
    assert_eq!(a.len(), unet.bank.tensors_used);
    for ((name, ga), (_, gb)) in a.iter().zip(&b) {
        assert!(ga.data.iter().all(|v| v.is_finite()), "{name}: finite");
        if name.ends_with(".to_k.bias") {
            continue; // zero in exact arithmetic
        }
        let (at, e) = worst_error(&gb.data, &ga.data);
        assert!(e <= 1e-4, "{name}: micro-batches off by {e:.2e} at {at}");
    }
}

#[test]
fn a_batch_over_the_budget_runs_as_micro_batches_or_is_refused() {
    let c = ctx();
    let mut unet = golden_model("batch12");
    let full = TrainStep::new(c, &mut unet, &schedule(), 12, &StepOptions::default()).unwrap();
    assert_eq!(full.micro, 12);
    // A budget under the full batch's activations: the largest divisor that fits.
    let budget = full.exe.plan.peak_bytes - 1;
    let options = StepOptions { memory_budget: budget, ..StepOptions::default() };
    let split = TrainStep::new(c, &mut unet, &schedule(), 12, &options).unwrap();
    assert!(split.micro < 12 && 12 % split.micro == 0 && split.exe.plan.peak_bytes <= budget);
    let options = StepOptions { memory_budget: 1000, ..StepOptions::default() };
    let err = TrainStep::new(c, &mut unet, &schedule(), 12, &options).err().unwrap().to_string();
    assert!(err.contains("budget") && err.contains("micro-batches tried"), "{err}");
}

#[test]
fn the_loss_target_follows_the_prediction_type() {
    // epsilon: eps; sample: x0; v_prediction: sqrt(abar_t) eps - sqrt(1 - abar_t) x0.
    let c = ctx();
    let ac = schedule();
    let mut unet = golden_model("batch12");
    for prediction in [Prediction::Epsilon, Prediction::Sample, Prediction::VPrediction] {
        let options = StepOptions { prediction, max_micro: 4, ..StepOptions::default() };
        let step = TrainStep::new(c, &mut unet, &ac, 12, &options).unwrap();
        let (x0, t, eps) = random_batch(&step, 4);
        step.upload(c, &x0, &t, &eps).unwrap();
        c.run(&step.dispatches);
        // What the last micro-batch (images 8..12) left in the target.
        let per = x0.len() / 12;
        let got = c.read_buffer(step.exe.buffer(step.graph.target), 4 * per).unwrap();
        let want: Vec<f32> = (8 * per..12 * per)
            .map(|i| {
                let a = ac[t[i / per] as usize];
                match prediction {
                    Prediction::Epsilon => eps[i],
                    Prediction::Sample => x0[i],
                    Prediction::VPrediction => {
                        (a.sqrt() * eps[i] as f64 - (1.0 - a).sqrt() * x0[i] as f64) as f32
                    }
                }
            })
            .collect();
        assert_close(&format!("{prediction:?} target"), &got, &want, RTOL);
    }
}
