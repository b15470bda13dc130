//! An autoencoder's config.json, as diffusers writes it for AutoencoderKL and VQModel
//! (../shared/LATENT.md sections 2 and 5). Every field their __init__ takes is known here;
//! supported values are honoured, the rest are errors that name them.

use serde_json::Value;

use crate::model::config::{invalid, Fields};
use crate::Result;

/// Which autoencoder, with what only it has.
#[derive(Clone, Debug, PartialEq)]
pub enum AutoencoderKind {
    /// AutoencoderKL: the encoder writes the moments (mean, log-variance) of a diagonal Gaussian.
    Kl,
    /// VQModel: latents quantized to the nearest of `num_vq_embeddings` codes of `vq_embed_dim`
    /// values before the decoder.
    Vq { num_vq_embeddings: usize, vq_embed_dim: usize },
}

#[derive(Clone, Debug, PartialEq)]
pub struct AutoencoderConfig {
    pub kind: AutoencoderKind,
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    /// The image size it was trained at (also diffusers' tiling's tile size).
    pub sample_size: usize,
    pub scaling_factor: f32,
    /// SD3 / Flux style: latents = (z - shift) * scale.
    pub shift_factor: Option<f32>,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    pub mid_block_add_attention: bool,
}

/// The fields both autoencoders' __init__ take.
const COMMON_KEYS: &[&str] = &[
    "in_channels",
    "out_channels",
    "down_block_types",
    "up_block_types",
    "block_out_channels",
    "layers_per_block",
    "act_fn",
    "latent_channels",
    "norm_num_groups",
    "sample_size",
    "scaling_factor",
    "force_upcast",
    "mid_block_add_attention",
];

/// The fields only AutoencoderKL's takes.
const KL_KEYS: &[&str] =
    &["shift_factor", "latents_mean", "latents_std", "use_quant_conv", "use_post_quant_conv"];

/// The fields only VQModel's takes.
const VQ_KEYS: &[&str] = &["num_vq_embeddings", "vq_embed_dim", "norm_type", "lookup_from_codebook"];

impl AutoencoderConfig {
    /// Parses config.json text of `class` ("AutoencoderKL" or "VQModel": the component's class
    /// from model_index.json, else the file's own `_class_name`); `path` names the file in errors.
    pub fn parse(text: &str, class: Option<&str>, path: &str) -> Result<Self> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| invalid(path, format!("malformed JSON: {e}")))?;
        let obj = value.as_object().ok_or_else(|| invalid(path, "config.json must hold a JSON object"))?;
        let class = class.or_else(|| obj.get("_class_name").and_then(Value::as_str)).unwrap_or("");
        let (keys, vq) = match class {
            "AutoencoderKL" => (KL_KEYS, false),
            "VQModel" => (VQ_KEYS, true),
            other => {
                return Err(invalid(
                    path,
                    format!("_class_name \"{other}\": the autoencoders are AutoencoderKL and VQModel"),
                ))
            }
        };
        for key in obj.keys() {
            if !key.starts_with('_') && !keys.contains(&key.as_str()) && !COMMON_KEYS.contains(&key.as_str())
            {
                return Err(invalid(path, format!("unknown {class} config field '{key}'")));
            }
        }
        let f = Fields { path, obj };
        f.expect_str("act_fn", &["silu", "swish"])?;
        for (key, want) in
            [("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")]
        {
            if f.get(key).is_some() {
                if let Some(other) = f.strings(key)?.iter().find(|t| *t != want) {
                    return Err(invalid(path, format!("{key}: \"{other}\" is not supported (only {want})")));
                }
            }
        }
        let block_out_channels = match f.get("block_out_channels") {
            Some(_) => f.usizes("block_out_channels")?,
            None => vec![64],
        };
        let levels = block_out_channels.len();
        for key in ["down_block_types", "up_block_types"] {
            if f.get(key).is_some() && f.strings(key)?.len() != levels {
                return Err(invalid(
                    path,
                    format!("{key} must have one entry per block_out_channels ({levels})"),
                ));
            }
        }
        for key in ["latents_mean", "latents_std"] {
            if f.get(key).is_some() {
                return Err(invalid(
                    path,
                    format!("{key}: per-channel latent statistics (SDXL's pipelines) are not supported"),
                ));
            }
        }
        let latent_channels = f.usize("latent_channels", Some(if vq { 3 } else { 4 }))?;
        let kind = if vq {
            f.expect_str("norm_type", &["group"])?;
            if f.bool("lookup_from_codebook", false)? {
                return Err(invalid(
                    path,
                    "lookup_from_codebook (latents given as code indices) is not supported",
                ));
            }
            AutoencoderKind::Vq {
                num_vq_embeddings: f.usize("num_vq_embeddings", Some(256))?,
                vq_embed_dim: f.opt_usize("vq_embed_dim")?.unwrap_or(latent_channels),
            }
        } else {
            AutoencoderKind::Kl
        };
        f.bool("force_upcast", !vq)?; // read only by SDXL's pipelines; f32 here anyway
        let cfg = Self {
            kind,
            in_channels: f.usize("in_channels", Some(3))?,
            out_channels: f.usize("out_channels", Some(3))?,
            block_out_channels,
            layers_per_block: f.usize("layers_per_block", Some(1))?,
            latent_channels,
            norm_num_groups: f.usize("norm_num_groups", Some(32))?,
            sample_size: f.usize("sample_size", Some(32))?,
            scaling_factor: f.f32("scaling_factor", 0.18215)?,
            shift_factor: f.get("shift_factor").map(|_| f.f32("shift_factor", 0.0)).transpose()?,
            // VQModel always has both convs; AutoencoderKL may leave them out.
            use_quant_conv: vq || f.bool("use_quant_conv", true)?,
            use_post_quant_conv: vq || f.bool("use_post_quant_conv", true)?,
            mid_block_add_attention: f.bool("mid_block_add_attention", true)?,
        };
        cfg.check(path)?;
        Ok(cfg)
    }

    fn check(&self, path: &str) -> Result<()> {
        if self.block_out_channels.is_empty() {
            return Err(invalid(path, "block_out_channels is empty"));
        }
        if [self.in_channels, self.out_channels, self.latent_channels, self.layers_per_block].contains(&0) {
            return Err(invalid(
                path,
                "in_channels, out_channels, latent_channels and layers_per_block must be positive",
            ));
        }
        if let Some(&c) = self
            .block_out_channels
            .iter()
            .find(|&&c| self.norm_num_groups == 0 || !c.is_multiple_of(self.norm_num_groups))
        {
            return Err(invalid(
                path,
                format!("norm_num_groups {} does not divide block channel count {c}", self.norm_num_groups),
            ));
        }
        if !(self.scaling_factor.is_finite() && self.scaling_factor != 0.0) {
            return Err(invalid(
                path,
                format!("scaling_factor {} must be a non-zero number", self.scaling_factor),
            ));
        }
        if let AutoencoderKind::Vq { num_vq_embeddings: 0, .. } = self.kind {
            return Err(invalid(path, "num_vq_embeddings is 0: a codebook needs codes"));
        }
        Ok(())
    }

    /// How much smaller the latents are than the image, each side (2^(levels - 1)).
    pub fn downscale(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }

    /// Channels the encoder's conv_out writes: the Gaussian's 2L moments (KL) or L latents.
    pub fn encoder_out_channels(&self) -> usize {
        match self.kind {
            AutoencoderKind::Kl => 2 * self.latent_channels,
            AutoencoderKind::Vq { .. } => self.latent_channels,
        }
    }

    /// Channels of the encode graph's output: quant_conv's (the moments, or a VQModel's D-wide
    /// latents).
    pub fn encoder_out_channels_after_quant(&self) -> usize {
        match self.kind {
            AutoencoderKind::Kl => 2 * self.latent_channels,
            AutoencoderKind::Vq { vq_embed_dim, .. } => vq_embed_dim,
        }
    }

    /// Channels of what `encode` returns and `decode` takes: L (KL), the codes' width (VQ).
    pub fn latent_width(&self) -> usize {
        match self.kind {
            AutoencoderKind::Kl => self.latent_channels,
            AutoencoderKind::Vq { vq_embed_dim, .. } => vq_embed_dim,
        }
    }

    /// diffusers' class name.
    pub fn class_name(&self) -> &'static str {
        match self.kind {
            AutoencoderKind::Kl => "AutoencoderKL",
            AutoencoderKind::Vq { .. } => "VQModel",
        }
    }
}

/// Stable Diffusion 1.x/2.x's VAE (AutoencoderKL: 128/256/512/512, two resnets a level, 4 latent
/// channels, 83.7M parameters), as its config.json has it: benchmarks run it with random weights.
pub const STABLE_DIFFUSION_VAE: &str = r#"{
  "_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3, "latent_channels": 4,
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
  "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "act_fn": "silu",
  "norm_num_groups": 32, "sample_size": 512, "scaling_factor": 0.18215
}"#;
