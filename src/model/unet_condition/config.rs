//! UNet2DConditionModel's config.json as Stable Diffusion 1.x and 2.x folders hold it
//! (../shared/TEXT2IMG.md section 3). The fields those models use are honoured; a config that
//! needs more (SDXL's added embeddings and deeper transformers, the x4 upscaler's class
//! embedding, LCM's time condition, dual or cross-only attention) is refused, naming the field.

use serde_json::Value;

use crate::model::config::{invalid, Fields};
use crate::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CondDownBlock {
    Down,
    CrossAttnDown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CondUpBlock {
    Up,
    CrossAttnUp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct UNetConditionConfig {
    pub sample_size: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f32,
    pub down_blocks: Vec<CondDownBlock>,
    pub up_blocks: Vec<CondUpBlock>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub downsample_padding: usize,
    pub mid_block_scale_factor: f32,
    pub norm_num_groups: usize,
    pub norm_eps: f32,
    /// The text's width (the text encoder's hidden size).
    pub cross_attention_dim: usize,
    /// Attention heads of each down block (diffusers' `attention_head_dim`, which counts heads:
    /// diffusers#2011); the mid block takes the last, the up blocks these reversed.
    pub heads: Vec<usize>,
    /// proj_in and proj_out as Linear on the tokens (SD 2.x) instead of 1x1 convs: the same
    /// product, other weight shapes.
    pub use_linear_projection: bool,
}

/// The fields a Stable Diffusion 1.x or 2.x config may hold whose values the engine checks or
/// ignores (inference-only settings, and those every supported value of which means the same).
const KNOWN: &[&str] = &[
    "sample_size",
    "in_channels",
    "out_channels",
    "center_input_sample",
    "flip_sin_to_cos",
    "freq_shift",
    "down_block_types",
    "mid_block_type",
    "up_block_types",
    "only_cross_attention",
    "block_out_channels",
    "layers_per_block",
    "downsample_padding",
    "mid_block_scale_factor",
    "dropout",
    "act_fn",
    "norm_num_groups",
    "norm_eps",
    "cross_attention_dim",
    "transformer_layers_per_block",
    "reverse_transformer_layers_per_block",
    "encoder_hid_dim",
    "encoder_hid_dim_type",
    "attention_head_dim",
    "num_attention_heads",
    "dual_cross_attention",
    "use_linear_projection",
    "class_embed_type",
    "addition_embed_type",
    "addition_time_embed_dim",
    "num_class_embeds",
    "upcast_attention",
    "resnet_time_scale_shift",
    "resnet_skip_time_act",
    "resnet_out_scale_factor",
    "time_embedding_type",
    "time_embedding_dim",
    "time_embedding_act_fn",
    "timestep_post_act",
    "time_cond_proj_dim",
    "conv_in_kernel",
    "conv_out_kernel",
    "projection_class_embeddings_input_dim",
    "attention_type",
    "class_embeddings_concat",
    "mid_block_only_cross_attention",
    "cross_attention_norm",
    "addition_embed_type_num_heads",
];

impl UNetConditionConfig {
    /// Parses config.json text; `path` names the file in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| invalid(path, format!("malformed JSON: {e}")))?;
        let obj = value.as_object().ok_or_else(|| invalid(path, "config.json must hold a JSON object"))?;
        if let Some(class) = obj.get("_class_name").and_then(Value::as_str) {
            if class != "UNet2DConditionModel" {
                return Err(invalid(
                    path,
                    format!("_class_name \"{class}\": a UNet2DConditionModel is expected"),
                ));
            }
        }
        for key in obj.keys() {
            if !key.starts_with('_') && !KNOWN.contains(&key.as_str()) {
                return Err(invalid(path, format!("unknown config field '{key}'")));
            }
        }
        let f = Fields { path, obj };
        // What SD 1.x and 2.x never set: each names the model family that needs it.
        let absent: [(&str, &str); 8] = [
            ("addition_embed_type", "SDXL's added text and time embeddings"),
            ("class_embed_type", "a class embedding (the x4 upscaler's noise level)"),
            ("num_class_embeds", "a class embedding"),
            ("time_cond_proj_dim", "a guidance-scale time condition (LCM)"),
            ("encoder_hid_dim", "a projection of the text (Kandinsky, IF)"),
            ("num_attention_heads", "num_attention_heads (diffusers itself refuses it for this model)"),
            ("projection_class_embeddings_input_dim", "SDXL's added embeddings"),
            ("time_embedding_dim", "a time embedding of another width"),
        ];
        for (key, what) in absent {
            if let Some(v) = f.get(key) {
                return Err(invalid(
                    path,
                    format!("{key} = {v}: {what} is not supported (Stable Diffusion 1.x and 2.x UNets)"),
                ));
            }
        }
        for (key, value) in [
            ("dual_cross_attention", true),
            ("only_cross_attention", true),
            ("mid_block_only_cross_attention", true),
            ("class_embeddings_concat", true),
            ("resnet_skip_time_act", true),
        ] {
            if f.get(key).and_then(Value::as_bool) == Some(value) {
                return Err(invalid(path, format!("{key} = true is not supported")));
            }
        }
        if let Some(v) = f.get("transformer_layers_per_block") {
            let all_one = match v {
                Value::Array(a) => a.iter().all(|x| x.as_u64() == Some(1)),
                other => other.as_u64() == Some(1),
            };
            if !all_one {
                return Err(invalid(
                    path,
                    format!("transformer_layers_per_block {v}: deeper transformers (SDXL) are not supported, one layer a block is"),
                ));
            }
        }
        f.expect_str("act_fn", &["silu", "swish"])?;
        f.expect_str("time_embedding_type", &["positional"])?;
        f.expect_str("time_embedding_act_fn", &[])?;
        f.expect_str("timestep_post_act", &[])?;
        f.expect_str("resnet_time_scale_shift", &["default"])?;
        f.expect_str("attention_type", &["default"])?;
        f.expect_str("cross_attention_norm", &[])?;
        f.expect_str("mid_block_type", &["UNetMidBlock2DCrossAttn"])?;
        if f.bool("center_input_sample", false)? {
            return Err(invalid(path, "center_input_sample = true is not supported"));
        }
        for key in ["conv_in_kernel", "conv_out_kernel"] {
            if f.usize(key, Some(3))? != 3 {
                return Err(invalid(path, format!("{key}: only 3 is supported")));
            }
        }
        if f.f32("resnet_out_scale_factor", 1.0)? != 1.0 {
            return Err(invalid(path, "resnet_out_scale_factor other than 1 is not supported"));
        }
        let down_blocks = f
            .strings("down_block_types")?
            .iter()
            .map(|s| match s.as_str() {
                "DownBlock2D" => Ok(CondDownBlock::Down),
                "CrossAttnDownBlock2D" => Ok(CondDownBlock::CrossAttnDown),
                other => Err(invalid(path, format!("unsupported down block type \"{other}\""))),
            })
            .collect::<Result<Vec<_>>>()?;
        let up_blocks = f
            .strings("up_block_types")?
            .iter()
            .map(|s| match s.as_str() {
                "UpBlock2D" => Ok(CondUpBlock::Up),
                "CrossAttnUpBlock2D" => Ok(CondUpBlock::CrossAttnUp),
                other => Err(invalid(path, format!("unsupported up block type \"{other}\""))),
            })
            .collect::<Result<Vec<_>>>()?;
        let block_out_channels = match f.get("block_out_channels") {
            Some(_) => f.usizes("block_out_channels")?,
            None => vec![320, 640, 1280, 1280],
        };
        let n = block_out_channels.len();
        let heads = match f.get("attention_head_dim") {
            None => vec![8; n],
            Some(Value::Array(_)) => f.usizes("attention_head_dim")?,
            Some(_) => vec![f.usize("attention_head_dim", None)?; n],
        };
        let cross = match f.get("cross_attention_dim") {
            None => 1280,
            Some(Value::Array(_)) => {
                let dims = f.usizes("cross_attention_dim")?;
                match dims.split_first() {
                    Some((first, rest)) if rest.iter().all(|d| d == first) => *first,
                    _ => return Err(invalid(path, "a cross_attention_dim per block is not supported")),
                }
            }
            Some(_) => f.usize("cross_attention_dim", None)?,
        };
        let c = Self {
            sample_size: f.usize("sample_size", Some(64))?,
            in_channels: f.usize("in_channels", Some(4))?,
            out_channels: f.usize("out_channels", Some(4))?,
            flip_sin_to_cos: f.bool("flip_sin_to_cos", true)?,
            freq_shift: f.f32("freq_shift", 0.0)?,
            down_blocks,
            up_blocks,
            block_out_channels,
            layers_per_block: f.usize("layers_per_block", Some(2))?,
            downsample_padding: f.usize("downsample_padding", Some(1))?,
            mid_block_scale_factor: f.f32("mid_block_scale_factor", 1.0)?,
            norm_num_groups: f.usize("norm_num_groups", Some(32))?,
            norm_eps: f.f32("norm_eps", 1e-5)?,
            cross_attention_dim: cross,
            heads,
            use_linear_projection: f.bool("use_linear_projection", false)?,
        };
        // upcast_attention asks for f32 scores and softmax under f16: every value is f32 here.
        f.bool("upcast_attention", false)?;
        f.f32("dropout", 0.0)?;
        c.check(path)?;
        Ok(c)
    }

    fn check(&self, path: &str) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 || self.down_blocks.len() != n || self.up_blocks.len() != n || self.heads.len() != n {
            return Err(invalid(
                path,
                format!(
                    "{} down blocks, {} up blocks, {} attention_head_dim entries and {n} block_out_channels: they must match",
                    self.down_blocks.len(),
                    self.up_blocks.len(),
                    self.heads.len()
                ),
            ));
        }
        if self.in_channels == 0
            || self.out_channels == 0
            || self.layers_per_block == 0
            || self.cross_attention_dim == 0
        {
            return Err(invalid(
                path,
                "in_channels, out_channels, layers_per_block and cross_attention_dim must be positive",
            ));
        }
        for (i, (&c, &h)) in self.block_out_channels.iter().zip(&self.heads).enumerate() {
            if self.norm_num_groups == 0 || !c.is_multiple_of(self.norm_num_groups) {
                return Err(invalid(
                    path,
                    format!(
                        "norm_num_groups {} does not divide block channel count {c}",
                        self.norm_num_groups
                    ),
                ));
            }
            if h == 0 || !c.is_multiple_of(h) {
                return Err(invalid(
                    path,
                    format!("block {i}: {h} attention heads do not divide its {c} channels"),
                ));
            }
        }
        if self.downsample_padding > 1 {
            return Err(invalid(
                path,
                format!("downsample_padding {} is not supported (0 or 1)", self.downsample_padding),
            ));
        }
        Ok(())
    }

    /// Resolution levels past the first: latents must be multiples of 2^this each side.
    pub fn downscale(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }

    pub fn time_embed_dim(&self) -> usize {
        4 * self.block_out_channels[0]
    }
}
