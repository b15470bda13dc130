//! transformers' CLIPTextModel, the text encoder of Stable Diffusion 1.x and 2.x, from a pipeline
//! folder's `text_encoder/` (config.json, model.safetensors) on the graph, with the ops every
//! other model uses (../shared/TEXT2IMG.md section 2):
//!
//!   x = token_embedding[ids] + position_embedding[0..T]
//!   per layer: x += out_proj(causal attention(q, k, v of LN1 x));  x += fc2(act(fc1(LN2 x)))
//!   last_hidden_state = final_layer_norm(x)
//!
//! Tokens live as the engine's [N, C, 1, T] maps, so every Linear is the 1x1 conv the UNet's
//! attention projections are, and the attention is the UNet's kernel with a causal mask.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use crate::gpu::Context;
use crate::graph::{Executable, Graph, TensorId};
use crate::kernels::conv2d::Padding;
use crate::kernels::elementwise::Gelu;
use crate::model::config::{invalid, Fields};
use crate::model::tensors::{read_safetensors_where, HostTensor};
use crate::model::weights::WeightBank;
use crate::{Error, Result};

/// What transformers' CLIPTextConfig says of the model's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub layer_norm_eps: f32,
    pub hidden_act: Gelu,
}

impl ClipTextConfig {
    /// config.json's text (`path` names it in errors).
    pub fn parse(text: &str, path: &str) -> Result<Self> {
        let obj = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(invalid(path, "config.json must hold a JSON object")),
            Err(e) => return Err(invalid(path, format!("malformed JSON: {e}"))),
        };
        let f = Fields { path, obj: &obj };
        // SD 1.x and 2.x: a CLIPTextModel; SDXL's second encoder is CLIPTextModelWithProjection.
        if let Some(arch) = f.get("architectures").and_then(Value::as_array) {
            let names: Vec<&str> = arch.iter().filter_map(Value::as_str).collect();
            if !names.is_empty() && !names.contains(&"CLIPTextModel") {
                return Err(invalid(
                    path,
                    format!("a {} is not supported (a CLIPTextModel is)", names.join(", ")),
                ));
            }
        }
        let hidden_act = match f.str("hidden_act")?.unwrap_or("quick_gelu") {
            "quick_gelu" => Gelu::Quick,
            "gelu" => Gelu::Erf,
            other => {
                return Err(invalid(
                    path,
                    format!("hidden_act \"{other}\" is not supported (quick_gelu, gelu)"),
                ))
            }
        };
        let c = Self {
            vocab_size: f.usize("vocab_size", Some(49408))?,
            hidden_size: f.usize("hidden_size", Some(512))?,
            intermediate_size: f.usize("intermediate_size", Some(2048))?,
            num_hidden_layers: f.usize("num_hidden_layers", Some(12))?,
            num_attention_heads: f.usize("num_attention_heads", Some(8))?,
            max_position_embeddings: f.usize("max_position_embeddings", Some(77))?,
            layer_norm_eps: f.f32("layer_norm_eps", 1e-5)?,
            hidden_act,
        };
        if c.hidden_size == 0
            || c.num_attention_heads == 0
            || !c.hidden_size.is_multiple_of(c.num_attention_heads)
        {
            return Err(invalid(
                path,
                format!(
                    "{} attention heads do not divide hidden_size {}",
                    c.num_attention_heads, c.hidden_size
                ),
            ));
        }
        if c.vocab_size == 0 || c.max_position_embeddings == 0 || c.intermediate_size == 0 {
            return Err(invalid(
                path,
                "vocab_size, max_position_embeddings and intermediate_size must be positive",
            ));
        }
        Ok(c)
    }
}

/// A text encoder with its weights on the device.
pub struct ClipTextModel {
    pub config: ClipTextConfig,
    pub bank: WeightBank,
}

/// One graph of the encoder for a batch of prompts: ids in, last_hidden_state out.
pub struct ClipTextExecutable {
    pub exe: Executable,
    pub graph: Graph,
    /// Token ids [N, T] as f32.
    pub ids: TensorId,
    /// last_hidden_state [N, hidden, 1, T].
    pub output: TensorId,
}

/// transformers writes a CLIPTextModel's tensors without the `text_model.` prefix since 5.x;
/// published Stable Diffusion folders have it, and older files an int64 `position_ids` buffer.
const PREFIX: &str = "text_model.";

impl ClipTextModel {
    /// Loads a `text_encoder/` folder: config.json and model.safetensors.
    pub fn load(ctx: &Context, dir: &Path) -> Result<Self> {
        let config_path = dir.join("config.json");
        let shown = config_path.display().to_string();
        if !config_path.is_file() {
            return Err(Error::Invalid(format!(
                "{}: no config.json (a text encoder folder has config.json and model.safetensors)",
                dir.display()
            )));
        }
        let text = std::fs::read_to_string(&config_path)
            .map_err(|source| Error::Io { path: shown.clone(), source })?;
        let config = ClipTextConfig::parse(&text, &shown)?;
        let weights = dir.join("model.safetensors");
        if !weights.is_file() {
            let bin = dir.join("pytorch_model.bin");
            return Err(Error::Invalid(if bin.is_file() {
                format!("{}: only pytorch_model.bin; the engine reads safetensors (save_pretrained(..., safe_serialization=True))", dir.display())
            } else {
                format!("{}: no model.safetensors", dir.display())
            }));
        }
        let tensors = read_safetensors_where(&weights, |name| !name.ends_with("position_ids"))?;
        Self::from_tensors(ctx, config, tensors, &weights.display().to_string())
    }

    /// Checks every tensor the graph needs (names and shapes) and uploads it.
    pub fn from_tensors(
        ctx: &Context,
        config: ClipTextConfig,
        tensors: HashMap<String, HostTensor>,
        source: &str,
    ) -> Result<Self> {
        let tensors = tensors
            .into_iter()
            .map(|(k, v)| (k.strip_prefix(PREFIX).map(String::from).unwrap_or(k), v))
            .collect();
        let mut bank = WeightBank::new(tensors, source);
        build(ctx, &config, &mut bank, 1, 1)?;
        bank.release_host();
        Ok(Self { config, bank })
    }

    /// The graph for `batch` prompts of `tokens` ids, unplanned (memory plans), with `batch`.
    pub fn plan_graph(&mut self, ctx: &Context, batch: usize, tokens: usize) -> Result<(Graph, usize)> {
        Ok((build(ctx, &self.config, &mut self.bank, batch, tokens)?.0, batch))
    }

    /// The graph for `batch` prompts of `tokens` ids, planned and lowered.
    pub fn executable(&mut self, ctx: &Context, batch: usize, tokens: usize) -> Result<ClipTextExecutable> {
        let (graph, ids, output) = build(ctx, &self.config, &mut self.bank, batch, tokens)?;
        let exe = Executable::new(ctx, &graph, &self.bank.buffers)?;
        Ok(ClipTextExecutable { exe, graph, ids, output })
    }

    /// last_hidden_state [N, T, hidden] (token-major, as transformers returns it) of `ids`
    /// [N, T], read back: for tests and tools; pipelines keep the states on the device.
    pub fn encode(&mut self, ctx: &Context, ids: &[u32], batch: usize) -> Result<Vec<f32>> {
        let tokens = ids.len() / batch.max(1);
        if batch == 0 || ids.len() != batch * tokens {
            return Err(Error::Shape(format!("{} ids do not make {batch} prompts", ids.len())));
        }
        let e = self.executable(ctx, batch, tokens)?;
        let as_f32: Vec<f32> = ids.iter().map(|&i| i as f32).collect();
        ctx.queue.write_buffer(e.exe.buffer(e.ids), 0, bytemuck::cast_slice(&as_f32));
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        e.exe.record(&mut enc);
        ctx.queue.submit([enc.finish()]);
        let d = self.config.hidden_size;
        let channel_major = ctx.read_buffer(e.exe.buffer(e.output), batch * d * tokens)?;
        let mut out = vec![0.0; channel_major.len()];
        for b in 0..batch {
            for c in 0..d {
                for t in 0..tokens {
                    out[(b * tokens + t) * d + c] = channel_major[(b * d + c) * tokens + t];
                }
            }
        }
        Ok(out)
    }
}

/// The encoder's graph for `batch` prompts of `tokens` ids: (graph, ids, last_hidden_state).
fn build(
    ctx: &Context,
    c: &ClipTextConfig,
    bank: &mut WeightBank,
    batch: usize,
    tokens: usize,
) -> Result<(Graph, TensorId, TensorId)> {
    if tokens == 0 || tokens > c.max_position_embeddings {
        return Err(Error::Shape(format!(
            "a prompt of {tokens} tokens; the text encoder takes 1 to {}",
            c.max_position_embeddings
        )));
    }
    let d = c.hidden_size;
    let mut g = Graph::new();
    let ids = g.input(&[batch, tokens]);
    let table =
        bank.table_rows(ctx, "embeddings.token_embedding.weight", c.vocab_size, d, ctx.max_binding_bytes())?;
    let positions = bank.table(ctx, "embeddings.position_embedding.weight", c.max_position_embeddings, d)?;
    let mut x = g.token_embedding("embeddings", ids, &table, positions, d)?;
    let conv = |g: &mut Graph,
                bank: &mut WeightBank,
                p: &str,
                x: TensorId,
                fout: usize,
                residual: Option<TensorId>| {
        let fin = g.shape(x)[1];
        let w = bank.linear_as_conv(ctx, p, fout, fin)?;
        g.conv2d(p, x, w, 1, Padding::default(), None, residual, 1.0)
    };
    for l in 0..c.num_hidden_layers {
        let p = format!("encoder.layers.{l}");
        let n1 = bank.norm(ctx, &format!("{p}.layer_norm1"), d)?;
        let h = g.layer_norm(&format!("{p}.layer_norm1"), x, n1, c.layer_norm_eps)?;
        let q = conv(&mut g, bank, &format!("{p}.self_attn.q_proj"), h, d, None)?;
        let k = conv(&mut g, bank, &format!("{p}.self_attn.k_proj"), h, d, None)?;
        let v = conv(&mut g, bank, &format!("{p}.self_attn.v_proj"), h, d, None)?;
        let a = g.attention_over(&format!("{p}.self_attn"), q, k, v, c.num_attention_heads, true)?;
        x = conv(&mut g, bank, &format!("{p}.self_attn.out_proj"), a, d, Some(x))?;
        let n2 = bank.norm(ctx, &format!("{p}.layer_norm2"), d)?;
        let h = g.layer_norm(&format!("{p}.layer_norm2"), x, n2, c.layer_norm_eps)?;
        let h = conv(&mut g, bank, &format!("{p}.mlp.fc1"), h, c.intermediate_size, None)?;
        let h = g.gelu(&format!("{p}.mlp.act"), h, c.hidden_act);
        x = conv(&mut g, bank, &format!("{p}.mlp.fc2"), h, d, Some(x))?;
    }
    let nf = bank.norm(ctx, "final_layer_norm", d)?;
    let out = g.layer_norm("final_layer_norm", x, nf, c.layer_norm_eps)?;
    g.mark_output(out);
    Ok((g, ids, out))
}
