//! Image k of a batch is what the UNet makes of image k alone, at every batch size users run: the
//! forward at batch B in {1, 3, 9, 16, 33} against 33 batch-1 forwards, for the bundled model and
//! two golden configs. Within 1e-5 relative (the kernels' per-image arithmetic does not depend on
//! the batch; on GPUs split-K's split count does, so the bits may differ, not the values).

use rand::Rng;
use wgpu_diffusion::model::{ModelFolder, UNet};

use crate::*;

const SIZES: [usize; 5] = [1, 3, 9, 16, 33];
const MAX: usize = 33;

fn check(folder: &std::path::Path, seed: u64) {
    let folder = ModelFolder::open(folder).unwrap();
    let mut unet = UNet::load(ctx(), &folder).unwrap();
    let s = unet.config.sample_size;
    let per = unet.config.in_channels * s * s;
    let per_out = unet.config.out_channels * s * s;
    let mut r = rng(seed);
    let x: Vec<f32> = (0..MAX * per).map(|_| r.random_range(-1.0f32..1.0) * 1.5).collect();
    let t: Vec<f32> = (0..MAX).map(|_| r.random_range(0..1000) as f32).collect();
    // Each image alone: one batch-1 executable run 33 times.
    let alone = unet.forward_micro(ctx(), &x, &t, None, 1).unwrap();
    for b in SIZES {
        let got = unet.forward(ctx(), &x[..b * per], &t[..b]).unwrap();
        for k in 0..b {
            let what = format!("{}: image {k} of a batch of {b} vs alone", folder.root.display());
            assert_close(
                &what,
                &got[k * per_out..(k + 1) * per_out],
                &alone[k * per_out..(k + 1) * per_out],
                1e-5,
            );
        }
    }
}

#[test]
fn bundled_model_is_batch_invariant() {
    check(&std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights/fashion-mnist"), 1);
}

#[test]
fn golden_all_attention_is_batch_invariant() {
    check(&golden_dir("all-attention"), 2);
}

#[test]
fn golden_odd_sizes_bf16_is_batch_invariant() {
    check(&golden_dir("odd-bf16-pipeline"), 3);
}
