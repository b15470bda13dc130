//! UNet2DModel's config.json, as diffusers writes it. Every field UNet2DModel takes is known here:
//! supported values are honoured, unsupported values and unknown fields are errors that name them.

use serde_json::{Map, Value};

use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownBlock {
    Down,
    AttnDown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpBlock {
    Up,
    AttnUp,
}

/// UNet2DModel's class embedding (CONDITIONING.md), added to the time embedding after its MLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassEmbedding {
    /// `num_class_embeds` without a `class_embed_type`: nn.Embedding [rows, time_embed_dim] on
    /// integer labels 0..rows.
    Table { rows: usize },
    /// `class_embed_type: "timestep"`: the label through the sinusoidal projection and its own
    /// MLP (linear_1, SiLU, linear_2); any integer label.
    Timestep,
}

/// Extra config.json keys this engine writes for class-conditional models (diffusers ignores
/// them with a warning): the class names by id, and the label of the null class that
/// classifier-free guidance trained.
pub const CLASS_NAMES_KEY: &str = "id2label";
pub const NULL_CLASS_KEY: &str = "null_class_id";

/// A class name as a folder name: an image-folder dataset's subfolder ('/' and '\' can't be in
/// one: "T-shirt/top" becomes "T-shirt_top").
pub fn folder_name(name: &str) -> String {
    name.replace(['/', '\\'], "_")
}

#[derive(Clone, Debug, PartialEq)]
pub struct UNetConfig {
    pub sample_size: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub center_input_sample: bool,
    pub time_embedding_dim: Option<usize>,
    pub freq_shift: f32,
    pub flip_sin_to_cos: bool,
    pub down_blocks: Vec<DownBlock>,
    pub up_blocks: Vec<UpBlock>,
    pub mid_block: bool,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub mid_block_scale_factor: f32,
    pub downsample_padding: usize,
    pub attention_head_dim: Option<usize>,
    pub norm_num_groups: usize,
    pub attn_norm_num_groups: Option<usize>,
    pub norm_eps: f32,
    pub add_attention: bool,
    pub class_embedding: Option<ClassEmbedding>,
    /// The class names by id (`id2label`), where the folder has them.
    pub class_names: Option<Vec<String>>,
    /// The null class label (`null_class_id`), where the folder records one.
    pub null_class: Option<usize>,
}

pub(crate) fn invalid(path: &str, msg: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{path}: {msg}"))
}

/// Reads fields out of a config.json object (every model family's), naming the file and the
/// field in errors.
pub(crate) struct Fields<'a> {
    pub path: &'a str,
    pub obj: &'a Map<String, Value>,
}

impl Fields<'_> {
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn usize(&self, key: &str, default: Option<usize>) -> Result<usize> {
        match self.get(key) {
            None => default.ok_or_else(|| invalid(self.path, format!("missing field '{key}'"))),
            Some(Value::Array(a)) if key == "sample_size" => {
                // [h, w]: only square sizes are supported.
                let dims: Vec<_> = a.iter().filter_map(Value::as_u64).collect();
                match dims.as_slice() {
                    [h, w] if h == w => Ok(*h as usize),
                    _ => {
                        Err(invalid(self.path, format!("sample_size {a:?}: only square sizes are supported")))
                    }
                }
            }
            Some(v) => v.as_u64().map(|n| n as usize).ok_or_else(|| {
                invalid(self.path, format!("field '{key}' must be a non-negative integer, not {v}"))
            }),
        }
    }

    pub(crate) fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        self.get(key).map(|_| self.usize(key, None)).transpose()
    }

    pub(crate) fn f32(&self, key: &str, default: f32) -> Result<f32> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .map(|x| x as f32)
                .ok_or_else(|| invalid(self.path, format!("field '{key}' must be a number, not {v}"))),
        }
    }

    pub(crate) fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| invalid(self.path, format!("field '{key}' must be true or false, not {v}"))),
        }
    }

    pub(crate) fn str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| invalid(self.path, format!("field '{key}' must be a string, not {v}"))),
        }
    }

    /// A string field that must have one of the supported values (default when absent).
    pub(crate) fn expect_str(&self, key: &str, supported: &[&str]) -> Result<()> {
        match self.str(key)? {
            Some(v) if !supported.contains(&v) => Err(invalid(
                self.path,
                format!("{key} = \"{v}\" is not supported (supported: {})", supported.join(", ")),
            )),
            _ => Ok(()),
        }
    }

    pub(crate) fn strings(&self, key: &str) -> Result<Vec<String>> {
        let arr = self
            .get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| invalid(self.path, format!("field '{key}' must be a list of block types")))?;
        arr.iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid(self.path, format!("{key}: {v} is not a string")))
            })
            .collect()
    }

    pub(crate) fn usizes(&self, key: &str) -> Result<Vec<usize>> {
        let arr = self
            .get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| invalid(self.path, format!("field '{key}' must be a list of integers")))?;
        arr.iter()
            .map(|v| {
                v.as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| invalid(self.path, format!("{key}: {v} is not an integer")))
            })
            .collect()
    }
}

/// Every field UNet2DModel.__init__ takes (diffusers 0.42).
const KNOWN: &[&str] = &[
    "sample_size",
    "in_channels",
    "out_channels",
    "center_input_sample",
    "time_embedding_type",
    "time_embedding_dim",
    "freq_shift",
    "flip_sin_to_cos",
    "down_block_types",
    "mid_block_type",
    "up_block_types",
    "block_out_channels",
    "layers_per_block",
    "mid_block_scale_factor",
    "downsample_padding",
    "downsample_type",
    "upsample_type",
    "dropout",
    "act_fn",
    "attention_head_dim",
    "norm_num_groups",
    "attn_norm_num_groups",
    "norm_eps",
    "resnet_time_scale_shift",
    "add_attention",
    "class_embed_type",
    "num_class_embeds",
    "num_train_timesteps",
    CLASS_NAMES_KEY,
    NULL_CLASS_KEY,
];

/// `id2label`: {"0": "name", ...} with the ids 0..n, each once.
fn class_names(f: &Fields) -> Result<Option<Vec<String>>> {
    let Some(v) = f.get(CLASS_NAMES_KEY) else { return Ok(None) };
    let bad = |msg: String| invalid(f.path, format!("{CLASS_NAMES_KEY}: {msg}"));
    let obj = v.as_object().ok_or_else(|| bad(format!("must map class ids to names, not {v}")))?;
    let mut names = vec![None; obj.len()];
    for (id, name) in obj {
        let k: usize = id.parse().map_err(|_| bad(format!("'{id}' is not a class id")))?;
        let name = name.as_str().ok_or_else(|| bad(format!("the name of class {id} is not a string")))?;
        match names.get_mut(k) {
            Some(slot) => *slot = Some(name.to_string()),
            None => return Err(bad(format!("ids must run 0..{} without gaps; '{id}' does not", obj.len()))),
        }
    }
    let names: Option<Vec<String>> = names.into_iter().collect();
    names.map(Some).ok_or_else(|| bad(format!("ids must run 0..{} without gaps", obj.len())))
}

impl UNetConfig {
    /// Parses config.json text; `path` names the file in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| invalid(path, format!("malformed JSON: {e}")))?;
        let obj = value.as_object().ok_or_else(|| invalid(path, "config.json must hold a JSON object"))?;
        if let Some(class) = obj.get("_class_name").and_then(Value::as_str) {
            if class != "UNet2DModel" {
                return Err(invalid(path, format!("_class_name \"{class}\": only UNet2DModel is supported")));
            }
        }
        for key in obj.keys() {
            if !key.starts_with('_') && !KNOWN.contains(&key.as_str()) {
                return Err(invalid(path, format!("unknown config field '{key}'")));
            }
        }
        let f = Fields { path, obj };
        f.expect_str("time_embedding_type", &["positional"])?;
        f.expect_str("act_fn", &["silu", "swish"])?;
        f.expect_str("resnet_time_scale_shift", &["default"])?;
        f.expect_str("downsample_type", &["conv"])?;
        f.expect_str("upsample_type", &["conv"])?;
        let class_embedding = match (f.str("class_embed_type")?, f.opt_usize("num_class_embeds")?) {
            (None, None) => None,
            (None, Some(0)) => return Err(invalid(path, "num_class_embeds is 0: a class table needs rows")),
            (None, Some(rows)) => Some(ClassEmbedding::Table { rows }),
            (Some("timestep"), _) => Some(ClassEmbedding::Timestep),
            (Some("identity"), _) => {
                return Err(invalid(
                    path,
                    "class_embed_type \"identity\" (the caller's own float vectors as labels) is not supported; \
                     integer labels are (num_class_embeds, or class_embed_type \"timestep\")",
                ))
            }
            (Some(other), _) => {
                return Err(invalid(
                    path,
                    format!("class_embed_type \"{other}\" is not supported (supported: null with num_class_embeds, \"timestep\")"),
                ))
            }
        };
        let class_names = class_names(&f)?;
        let null_class = f.opt_usize(NULL_CLASS_KEY)?;
        let mid_block = match f.str("mid_block_type")? {
            None if f.obj.contains_key("mid_block_type") => false, // explicit null: no mid block
            None | Some("UNetMidBlock2D") => true,
            Some(other) => return Err(invalid(path, format!("unknown mid_block_type \"{other}\""))),
        };
        let down_blocks = f
            .strings("down_block_types")?
            .iter()
            .map(|s| match s.as_str() {
                "DownBlock2D" => Ok(DownBlock::Down),
                "AttnDownBlock2D" => Ok(DownBlock::AttnDown),
                other => Err(invalid(path, format!("unsupported down block type \"{other}\""))),
            })
            .collect::<Result<Vec<_>>>()?;
        let up_blocks = f
            .strings("up_block_types")?
            .iter()
            .map(|s| match s.as_str() {
                "UpBlock2D" => Ok(UpBlock::Up),
                "AttnUpBlock2D" => Ok(UpBlock::AttnUp),
                other => Err(invalid(path, format!("unsupported up block type \"{other}\""))),
            })
            .collect::<Result<Vec<_>>>()?;
        let cfg = UNetConfig {
            sample_size: f.usize("sample_size", None)?,
            in_channels: f.usize("in_channels", Some(3))?,
            out_channels: f.usize("out_channels", Some(3))?,
            center_input_sample: f.bool("center_input_sample", false)?,
            time_embedding_dim: f.opt_usize("time_embedding_dim")?,
            freq_shift: f.f32("freq_shift", 0.0)?,
            flip_sin_to_cos: f.bool("flip_sin_to_cos", true)?,
            down_blocks,
            up_blocks,
            mid_block,
            block_out_channels: f.usizes("block_out_channels")?,
            layers_per_block: f.usize("layers_per_block", Some(2))?,
            mid_block_scale_factor: f.f32("mid_block_scale_factor", 1.0)?,
            downsample_padding: f.usize("downsample_padding", Some(1))?,
            attention_head_dim: if f.obj.contains_key("attention_head_dim") {
                f.opt_usize("attention_head_dim")?
            } else {
                Some(8) // diffusers' default when the field is absent
            },
            norm_num_groups: f.usize("norm_num_groups", Some(32))?,
            attn_norm_num_groups: f.opt_usize("attn_norm_num_groups")?,
            norm_eps: f.f32("norm_eps", 1e-5)?,
            add_attention: f.bool("add_attention", true)?,
            class_embedding,
            class_names,
            null_class,
        };
        // dropout only matters in training; any value is fine for inference.
        f.f32("dropout", 0.0)?;
        cfg.check(path)?;
        Ok(cfg)
    }

    fn check(&self, path: &str) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(invalid(path, "block_out_channels is empty"));
        }
        if self.down_blocks.len() != n || self.up_blocks.len() != n {
            return Err(invalid(
                path,
                format!(
                    "{} down blocks, {} up blocks and {} block_out_channels: the three must match",
                    self.down_blocks.len(),
                    self.up_blocks.len(),
                    n
                ),
            ));
        }
        if self.in_channels == 0 || self.out_channels == 0 || self.layers_per_block == 0 {
            return Err(invalid(path, "in_channels, out_channels and layers_per_block must be positive"));
        }
        let levels = 1usize << (n - 1);
        if self.sample_size == 0 || !self.sample_size.is_multiple_of(levels) {
            return Err(invalid(
                path,
                format!(
                    "sample_size {} must be a positive multiple of {levels} ({n} resolution levels)",
                    self.sample_size
                ),
            ));
        }
        for &c in &self.block_out_channels {
            if self.norm_num_groups == 0 || c % self.norm_num_groups != 0 {
                return Err(invalid(
                    path,
                    format!(
                        "norm_num_groups {} does not divide block channel count {c}",
                        self.norm_num_groups
                    ),
                ));
            }
        }
        self.check_classes(path)?;
        if self.downsample_padding > 1 {
            return Err(invalid(
                path,
                format!("downsample_padding {} is not supported (0 or 1)", self.downsample_padding),
            ));
        }
        Ok(())
    }

    fn check_classes(&self, path: &str) -> Result<()> {
        let rows = match self.class_embedding {
            None if self.class_names.is_some() || self.null_class.is_some() => {
                return Err(invalid(
                    path,
                    format!("{CLASS_NAMES_KEY} or {NULL_CLASS_KEY} without a class embedding (num_class_embeds or class_embed_type)"),
                ))
            }
            None => return Ok(()),
            Some(ClassEmbedding::Table { rows }) => Some(rows),
            Some(ClassEmbedding::Timestep) => None,
        };
        if let (Some(rows), Some(names)) = (rows, &self.class_names) {
            if names.len() > rows {
                return Err(invalid(
                    path,
                    format!("{} class names for a class table of {rows} rows", names.len()),
                ));
            }
        }
        if let (Some(rows), Some(null)) = (rows, self.null_class) {
            if null >= rows {
                return Err(invalid(
                    path,
                    format!("{NULL_CLASS_KEY} {null} is outside the class table's {rows} rows"),
                ));
            }
        }
        Ok(())
    }

    /// The classes image k of an unlabelled request cycles through: the named classes, else
    /// every row of the class table but the null class. None: no class embedding, or a
    /// "timestep" embedding without names (it takes any integer).
    pub fn num_classes(&self) -> Option<usize> {
        if let Some(names) = &self.class_names {
            return Some(names.len());
        }
        match self.class_embedding? {
            ClassEmbedding::Table { rows } => Some(match self.null_class {
                Some(null) if null + 1 == rows => rows - 1,
                _ => rows,
            }),
            ClassEmbedding::Timestep => None,
        }
    }

    /// The label classifier-free guidance uses for "no class": the folder's null class, else the
    /// class table's last row. None for a "timestep" embedding without a recorded null class.
    pub fn default_null_class(&self) -> Option<usize> {
        match (self.null_class, self.class_embedding?) {
            (Some(n), _) => Some(n),
            (None, ClassEmbedding::Table { rows }) => Some(rows - 1),
            (None, ClassEmbedding::Timestep) => None,
        }
    }

    /// The largest label the class embedding takes (the table's last row), None where any
    /// integer is a label ("timestep").
    pub fn max_label(&self) -> Option<usize> {
        match self.class_embedding? {
            ClassEmbedding::Table { rows } => Some(rows - 1),
            ClassEmbedding::Timestep => None,
        }
    }

    /// Width of the time embedding MLP (time_embedding_dim, else 4 x block_out_channels[0]).
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim.unwrap_or(4 * self.block_out_channels[0])
    }

    /// (heads, head_dim) of an attention block over `channels`.
    pub fn heads(&self, channels: usize) -> (usize, usize) {
        let head_dim = self.attention_head_dim.unwrap_or(channels);
        (channels / head_dim.max(1), head_dim)
    }
}
