//! Named architectures, so benchmarks need nothing downloaded: their config.json, used with
//! random weights (`UNet::random`).

use super::UNetConfig;
use crate::{Error, Result};

/// google/ddpm-cifar10-32 (REFERENCE.md): 35.7M parameters, 12.4 GFLOP per image.
const DDPM_CIFAR10_32: &str = r#"{
  "_class_name": "UNet2DModel", "sample_size": 32, "in_channels": 3, "out_channels": 3,
  "block_out_channels": [128, 256, 256, 256], "layers_per_block": 2,
  "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
  "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
  "norm_num_groups": 32, "norm_eps": 1e-6, "act_fn": "silu", "attention_head_dim": null,
  "flip_sin_to_cos": false, "freq_shift": 1, "downsample_padding": 0, "time_embedding_type": "positional",
  "center_input_sample": false, "mid_block_scale_factor": 1
}"#;

/// The bundled Fashion-MNIST model's architecture (tools/train_fashion_mnist.py, UNET_CONFIG).
const FASHION_MNIST: &str = r#"{
  "_class_name": "UNet2DModel", "sample_size": 28, "in_channels": 1, "out_channels": 1,
  "block_out_channels": [32, 64, 64], "layers_per_block": 1,
  "down_block_types": ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
  "up_block_types": ["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
  "norm_num_groups": 8, "attention_head_dim": 32, "downsample_padding": 1,
  "flip_sin_to_cos": true, "freq_shift": 0
}"#;

pub const NAMES: &str = "ddpm-cifar10-32, fashion-mnist";

/// The config.json text of a named architecture.
pub fn config_text(name: &str) -> Result<&'static str> {
    match name {
        "ddpm-cifar10-32" => Ok(DDPM_CIFAR10_32),
        "fashion-mnist" => Ok(FASHION_MNIST),
        other => Err(Error::Invalid(format!("unknown architecture '{other}' (known: {NAMES})"))),
    }
}

pub fn config(name: &str) -> Result<UNetConfig> {
    UNetConfig::parse(config_text(name)?, name)
}
