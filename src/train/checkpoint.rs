//! Checkpoints: the output folder is a diffusers UNet folder (`config.json`,
//! `diffusion_pytorch_model.safetensors` holding the EMA weights, `scheduler_config.json`, a model
//! card `README.md`) that `UNet2DModel.from_pretrained` and `sample --model` load, plus
//! `training_state.safetensors` for `--resume`: the raw weights, AdamW's moments and the EMA (in
//! the file's layout, so PyTorch can read them too), with the step and the recipe as metadata.
//! Every file is written to a temporary name and renamed, so a run killed at any moment leaves
//! the last good checkpoint readable; the resume state is one file, so it is never half new.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use crate::gpu::Context;
use crate::model::tensors::{parse_safetensors, safetensors_bytes, safetensors_metadata};
use crate::model::{HostTensor, UNet};
use crate::train::optimizer::Held;
use crate::train::recipe::{prediction_name, Recipe};
use crate::train::Trainer;
use crate::{Error, Result};

pub const STATE_FILE: &str = "training_state.safetensors";
const STATE_FORMAT: &str = "wgpu-diffusion training state 1";
const WEIGHTS_FILE: &str = "diffusion_pytorch_model.safetensors";

/// What a checkpoint says beside its tensors.
pub struct CheckpointInfo<'a> {
    /// The UNet's config.json text.
    pub unet_config: &'a str,
    /// The scheduler_config.json object the run trained with.
    pub scheduler: &'a serde_json::Map<String, Value>,
    /// Where the data came from, and how the run began (architecture, config or init folder).
    pub data: &'a str,
    pub started_from: &'a str,
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io { path: path.display().to_string(), source };
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

/// The run's scheduler config with its prediction type: what a checkpoint saves and what its
/// sample grids sample with.
pub fn run_scheduler(
    scheduler: &serde_json::Map<String, Value>,
    recipe: &Recipe,
) -> serde_json::Map<String, Value> {
    let mut s = scheduler.clone();
    s.insert("prediction_type".into(), Value::from(prediction_name(recipe.prediction)));
    s.entry("_class_name").or_insert_with(|| Value::from("DDPMScheduler"));
    s
}

/// `run_scheduler` as the scheduler_config.json text.
pub fn scheduler_json(scheduler: &serde_json::Map<String, Value>, recipe: &Recipe) -> String {
    serde_json::to_string_pretty(&Value::Object(run_scheduler(scheduler, recipe))).expect("a JSON object")
    // ok: serialising a Map cannot fail
}

fn model_card(info: &CheckpointInfo, recipe: &Recipe, steps: u64, ema: bool) -> String {
    let recipe_json = serde_json::to_string_pretty(&recipe.to_json()).expect("JSON"); // ok: a Value
    let config: Value = serde_json::from_str(info.unet_config).unwrap_or(Value::Null);
    let classes = config.get("num_class_embeds").and_then(Value::as_u64);
    let (tag, usage) = match classes {
        // diffusers has no pipeline for a class-conditional UNet2DModel: the guided loop by hand.
        Some(n) => {
            let null = config.get("null_class_id").and_then(Value::as_u64).unwrap_or(n - 1);
            let scale = crate::pipeline::DEFAULT_GUIDANCE_SCALE;
            (
                "class-conditional-image-generation",
                format!(
                    "```python\nimport torch\nfrom diffusers import DDIMScheduler, UNet2DModel\n\
                     unet = UNet2DModel.from_pretrained(\"DIR\").eval()\n\
                     # clip_sample off: clipping x0 at the noisiest steps erases the class under guidance\n\
                     scheduler = DDIMScheduler.from_pretrained(\"DIR\", clip_sample=False)\n\
                     labels = torch.arange({classes})  # one image a class\n\
                     null = torch.full_like(labels, {null})  # the unconditional label\n\
                     size = unet.config.sample_size\n\
                     x = torch.randn(len(labels), unet.config.in_channels, size, size)\n\
                     scheduler.set_timesteps(50)\nfor t in scheduler.timesteps:\n\
                     \x20   with torch.no_grad():\n\
                     \x20       uncond, cond = unet(torch.cat([x, x]), t, class_labels=torch.cat([null, labels])).sample.chunk(2)\n\
                     \x20   x = scheduler.step(uncond + {scale} * (cond - uncond), t, x).prev_sample\n```\n\n\
                     or `wgpu-diffusion sample --model DIR --per-class 8` (guidance {scale}, `--class NAME` for one class).",
                    classes = n.min(null),
                ),
            )
        }
        None => (
            "unconditional-image-generation",
            "```python\nfrom diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel\n\
             unet = UNet2DModel.from_pretrained(\"DIR\")\nscheduler = DDPMScheduler.from_pretrained(\"DIR\")\n\
             images = DDPMPipeline(unet=unet, scheduler=scheduler)(batch_size=16).images\n```\n\n\
             or `wgpu-diffusion sample --model DIR`."
                .to_string(),
        ),
    };
    format!(
        "---\nlibrary_name: diffusers\ntags:\n- {tag}\n- diffusion\n- wgpu-diffusion\n---\n\n\
         # UNet2DModel trained with wgpu-diffusion\n\n\
         {steps} of {total} optimizer steps on `{data}`, from {start}. The weights in \
         `{WEIGHTS_FILE}` are {which}.\n\n{usage}\n\n## Recipe\n\n```json\n{recipe_json}\n```\n",
        total = recipe.steps,
        data = info.data,
        start = info.started_from,
        which = if ema {
            "the exponential moving average (EMAModel) of the trained weights"
        } else {
            "the trained weights (no EMA)"
        },
    )
}

/// Writes the checkpoint of `trainer` (all submitted work finished) into `dir`.
pub fn save(ctx: &Context, unet: &UNet, trainer: &Trainer, dir: &Path, info: &CheckpointInfo) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.display().to_string(), source })?;
    let opt = &trainer.optimizer;
    let steps = opt.steps_taken(ctx)?;
    let ema = trainer.recipe.ema.is_some();
    let mut state: Vec<(String, HostTensor)> = vec![];
    for (prefix, held) in [("weight", Held::Weights), ("m", Held::FirstMoment), ("v", Held::SecondMoment)]
        .into_iter()
        .chain(ema.then_some(("ema", Held::Ema)))
    {
        state.extend(opt.read(ctx, unet, held)?.into_iter().map(|(n, t)| (format!("{prefix}.{n}"), t)));
    }
    let named: Vec<(&str, &HostTensor)> = state.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let meta = [
        ("format", STATE_FORMAT.to_string()),
        ("step", steps.to_string()),
        ("recipe", trainer.recipe.to_json().to_string()),
        // So a resumed run's model card still says where the run began.
        ("started_from", info.started_from.to_string()),
    ];
    // The resume state first: the folder's other files are what a user loads.
    write_atomic(&dir.join(STATE_FILE), &safetensors_bytes(&named, &meta))?;
    let prefix = if ema { "ema." } else { "weight." };
    let model: Vec<(&str, &HostTensor)> =
        state.iter().filter_map(|(n, t)| n.strip_prefix(prefix).map(|n| (n, t))).collect();
    write_atomic(&dir.join(WEIGHTS_FILE), &safetensors_bytes(&model, &[("format", "pt".to_string())]))?;
    write_atomic(&dir.join("config.json"), info.unet_config.as_bytes())?;
    write_atomic(
        &dir.join("scheduler_config.json"),
        scheduler_json(info.scheduler, &trainer.recipe).as_bytes(),
    )?;
    write_atomic(&dir.join("README.md"), model_card(info, &trainer.recipe, steps, ema).as_bytes())
}

/// A run's state as a checkpoint holds it.
pub struct TrainingState {
    pub steps: u64,
    pub recipe: Recipe,
    /// What the run began from (the model card's words), where the state records it.
    pub started_from: Option<String>,
    /// By prefix ("weight", "m", "v", "ema"), then the file tensor's name.
    pub tensors: HashMap<String, HashMap<String, HostTensor>>,
}

/// Reads `dir`'s resume state.
pub fn load_state(dir: &Path) -> Result<TrainingState> {
    let path = dir.join(STATE_FILE);
    let shown = path.display().to_string();
    if !path.is_file() {
        return Err(Error::Invalid(format!(
            "{shown}: no training state to resume from (is {} a `train` output?)",
            dir.display()
        )));
    }
    let bytes = std::fs::read(&path).map_err(|source| Error::Io { path: shown.clone(), source })?;
    let meta = safetensors_metadata(&bytes, &shown)?;
    if meta.get("format").map(String::as_str) != Some(STATE_FORMAT) {
        return Err(Error::Invalid(format!("{shown}: not a wgpu-diffusion training state")));
    }
    let steps = meta
        .get("step")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Invalid(format!("{shown}: no step count")))?;
    let recipe_text = meta.get("recipe").ok_or_else(|| Error::Invalid(format!("{shown}: no recipe")))?;
    let recipe_json: Value = serde_json::from_str(recipe_text)
        .map_err(|e| Error::Invalid(format!("{shown}: malformed recipe ({e})")))?;
    let recipe = Recipe::from_json(&recipe_json, &shown)?;
    let mut tensors: HashMap<String, HashMap<String, HostTensor>> = HashMap::new();
    for (name, t) in parse_safetensors(&bytes, &shown)? {
        let (prefix, rest) = name
            .split_once('.')
            .ok_or_else(|| Error::Invalid(format!("{shown}: unexpected tensor '{name}'")))?;
        tensors.entry(prefix.to_string()).or_default().insert(rest.to_string(), t);
    }
    if !tensors.contains_key("weight") || !tensors.contains_key("m") || !tensors.contains_key("v") {
        return Err(Error::Invalid(format!("{shown}: the weights or AdamW's moments are missing")));
    }
    if recipe.ema.is_some() && !tensors.contains_key("ema") {
        return Err(Error::Invalid(format!("{shown}: the recipe has an EMA but the state holds none")));
    }
    Ok(TrainingState { steps, recipe, started_from: meta.get("started_from").cloned(), tensors })
}

/// Writes the moments and the EMA of `state` into `trainer`'s buffers (the weights were loaded
/// into `unet` from the state) and sets its step counter.
pub fn restore(ctx: &Context, unet: &UNet, trainer: &mut Trainer, state: &TrainingState) -> Result<()> {
    for w in &trainer.optimizer.weights {
        let layout = &unet.bank.layouts[w.weight];
        let name = layout.name().ok_or_else(|| Error::Invalid("a trained constant".into()))?;
        let targets = [("m", Some(&w.m)), ("v", Some(&w.v)), ("ema", w.shadow.as_ref())];
        for (prefix, buffer) in targets {
            let Some(buffer) = buffer else { continue };
            let t = state
                .tensors
                .get(prefix)
                .and_then(|m| m.get(name))
                .ok_or_else(|| Error::Invalid(format!("{STATE_FILE}: no '{prefix}.{name}'")))?;
            let data = layout.to_buffer(t)?.expect("a file tensor"); // ok: named above
            if data.len() != w.len {
                return Err(Error::Invalid(format!(
                    "{STATE_FILE}: '{prefix}.{name}' does not fit the model"
                )));
            }
            ctx.queue.write_buffer(buffer, 0, bytemuck::cast_slice(&data));
        }
    }
    trainer.resume_at(ctx, state.steps)
}
