//! UNet2DModel against diffusers goldens (tools/make_unet_goldens.py), and every kind of bad model
//! input a user can give, each refused with a clear error.

mod bad_input;
mod batch_invariance;
mod checkpoint;
mod class_golden;
mod clip_text_golden;
mod golden;
mod grad_golden;
mod tokenizer;
mod train_golden;
mod train_step;
mod trainer;
mod unet_cond_golden;
mod vae_golden;
mod weight_bank;

#[path = "../common/mod.rs"]
mod common;
pub use common::*;

use std::path::PathBuf;

pub fn golden_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/unet").join(name)
}

/// A fresh, empty folder under target/ for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-scratch").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}
