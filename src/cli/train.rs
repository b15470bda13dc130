//! `train`: DDPM training on the device, from a dataset to a diffusers model folder. Recipe flags
//! are optional here so that `--resume` can tell the ones a user gave (which must agree with the
//! saved run) from defaults (diffusers' train_unconditional.py's, with the EMA on).

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use serde_json::{Map, Value};
use wgpu_diffusion::diffusion::{self, ChainInput, Conditioning, SamplerKind, SamplerPlan, SchedulerConfig};
use wgpu_diffusion::gpu::{Context, ContextOptions};
use wgpu_diffusion::io::dataset::Dataset;
use wgpu_diffusion::io::images;
use wgpu_diffusion::kernels::optim::AdamW;
use wgpu_diffusion::model::{arch, ModelFolder, UNet, UNetConfig};
use wgpu_diffusion::train::batch::BatchLabels;
use wgpu_diffusion::train::checkpoint::{self, CheckpointInfo};
use wgpu_diffusion::train::classes;
use wgpu_diffusion::train::log::{self, RunLog};
use wgpu_diffusion::train::order::ClassDropout;
use wgpu_diffusion::train::ranks::{self, Ranks};
use wgpu_diffusion::train::recipe::{default_grad_shares, parse_prediction, Recipe};
use wgpu_diffusion::train::schedule::{EmaSchedule, LrKind};
use wgpu_diffusion::train::{init, Held, StepLog, Trainer};
use wgpu_diffusion::{Error, Result};

use super::DeviceArgs;

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Training images: a folder of PNG/JPEG, an IDX file (gzipped or not), a folder holding
    /// train-images-idx3-ubyte[.gz] (Debian's dataset-fashion-mnist), or an NCHW .npy.
    #[arg(long)]
    pub data: PathBuf,
    /// The output folder: a diffusers model folder, checkpointed as the run goes.
    #[arg(long)]
    pub out: PathBuf,
    /// A named architecture to train from scratch: fashion-mnist (the default) or ddpm-cifar10-32.
    #[arg(long, conflicts_with_all = ["config", "init"])]
    pub arch: Option<String>,
    /// A diffusers UNet2DModel config.json to train from scratch.
    #[arg(long, conflicts_with = "init")]
    pub config: Option<PathBuf>,
    /// Fine-tune this diffusers model folder (its weights and scheduler config).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Optimizer steps [default: 100 epochs of the data, train_unconditional's num_epochs].
    #[arg(long)]
    pub steps: Option<u64>,
    /// Images a step [default: 16].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Peak learning rate [default: 1e-4].
    #[arg(long, allow_hyphen_values = true)]
    pub lr: Option<f64>,
    /// constant, constant_with_warmup, linear or cosine (diffusers' get_scheduler) [default: cosine].
    #[arg(long)]
    pub lr_schedule: Option<String>,
    /// Warm-up steps of the schedule [default: 500].
    #[arg(long)]
    pub warmup: Option<u64>,
    /// AdamW's decoupled weight decay [default: 1e-6, a no-op in f32 at lr 1e-4, as in diffusers].
    #[arg(long, allow_hyphen_values = true)]
    pub weight_decay: Option<f64>,
    /// AdamW's beta1 [default: 0.95].
    #[arg(long, allow_hyphen_values = true)]
    pub adam_beta1: Option<f64>,
    /// AdamW's beta2 [default: 0.999].
    #[arg(long, allow_hyphen_values = true)]
    pub adam_beta2: Option<f64>,
    /// AdamW's epsilon [default: 1e-8].
    #[arg(long, allow_hyphen_values = true)]
    pub adam_epsilon: Option<f64>,
    /// The EMA's maximum decay [default: 0.9999].
    #[arg(long, allow_hyphen_values = true)]
    pub ema_decay: Option<f64>,
    /// The EMA warm-up's power [default: 0.75].
    #[arg(long, allow_hyphen_values = true)]
    pub ema_power: Option<f64>,
    /// The EMA warm-up's inverse gamma [default: 1.0].
    #[arg(long, allow_hyphen_values = true)]
    pub ema_inv_gamma: Option<f64>,
    /// Train without an EMA (the raw weights are saved).
    #[arg(long)]
    pub no_ema: bool,
    /// Clip the gradients' global norm to this (0: off) [default: 1.0].
    #[arg(long, allow_hyphen_values = true)]
    pub grad_clip: Option<f32>,
    /// epsilon, v_prediction or sample [default: epsilon, or the --init folder's].
    #[arg(long)]
    pub prediction_type: Option<String>,
    /// Seeds the initial weights, the data order, t and the noise [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Mirror images left to right at random.
    #[arg(long)]
    pub random_flip: bool,
    /// Write a checkpoint every N steps (and at the end) [default: 500, train_unconditional's
    /// checkpointing_steps].
    #[arg(long)]
    pub save_every: Option<u64>,
    /// Sample a grid with fixed seeds every K steps into OUT/samples/ [default: every 10 epochs,
    /// train_unconditional's save_images_epochs; 0: never].
    #[arg(long)]
    pub sample_every: Option<u64>,
    /// Another run's JSON-lines log (train_log.jsonl, or tools/train_reference_curve.py's) to draw
    /// beside this run's losses in loss.png (blue; this run is red).
    #[arg(long)]
    pub compare_log: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint, with its saved recipe.
    #[arg(long)]
    pub resume: bool,
    /// Stop once step N is done and checkpointed (a job with a time limit), to continue with
    /// --resume; the recipe still runs to --steps.
    #[arg(long)]
    pub stop_at: Option<u64>,
    /// Steps recorded into one submission at most.
    #[arg(long, default_value_t = 16)]
    pub steps_per_submission: usize,
    /// Memory (MiB) one micro-batch's training graph may plan; larger batches run as micro-batches.
    #[arg(long, default_value_t = 4096)]
    pub memory_budget_mib: u64,
    /// Train a class-conditional model of N classes on the data's labels: an --arch or --config
    /// model without a class embedding, or an unconditional --init folder (starting from its exact
    /// outputs), gets a class table of N + 1 rows, the last the null class.
    #[arg(long)]
    pub num_classes: Option<usize>,
    /// Swap a label for the null class with this probability (classifier-free guidance
    /// training) [default: 0.1 for a class-conditional model].
    #[arg(long, allow_hyphen_values = true)]
    pub class_dropout: Option<f64>,
    /// Sum each batch's gradient in K fixed shares (contiguous by image index, each summed alone,
    /// then added in order), so 1 to K ranks (any divisor) give the same bits; more shares are
    /// smaller micro-batches, slower on one GPU [default: the most up to 4 that divide --batch].
    #[arg(long)]
    pub grad_shards: Option<usize>,
    /// The class embedding's learning rate over --lr: a class table new to an --init model
    /// learns this many times faster than the trained weights it joins [default: 1].
    #[arg(long, allow_hyphen_values = true)]
    pub class_lr_scale: Option<f64>,
    /// The class labels of the images: an .npy of integers, one per image (IDX data finds
    /// train-labels-idx1-ubyte[.gz] beside its images; an image folder's subfolders are its classes).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// The classes' names, separated by commas, or one of fashion-mnist, mnist, cifar10 (an
    /// image folder's subfolders name its classes).
    #[arg(long)]
    pub class_names: Option<String>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

const DEFAULT_ARCH: &str = "fashion-mnist";
/// Grids of this many images, with this sampler.
const SAMPLE_IMAGES: usize = 16;
const SAMPLE_SEED: u64 = 0;
const LOG_FILE: &str = "train_log.jsonl";

type Tensors = std::collections::HashMap<String, wgpu_diffusion::model::HostTensor>;

/// The model a run starts from: its config.json text (and object), weights and scheduler config.
struct Start {
    config_text: String,
    config_json: Map<String, Value>,
    config: UNetConfig,
    tensors: Option<Tensors>,
    scheduler: Map<String, Value>,
    described: String,
}

/// config.json's object.
fn config_object(text: &str, source: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Error::Invalid(format!("{source}: config.json must hold a JSON object"))),
        Err(e) => Err(Error::Invalid(format!("{source}: malformed JSON: {e}"))),
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.display().to_string(), source })
}

/// diffusers' DDPMScheduler defaults, for models trained from scratch.
fn default_scheduler() -> Map<String, Value> {
    let v = serde_json::json!({
        "_class_name": "DDPMScheduler",
        "num_train_timesteps": 1000,
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "variance_type": "fixed_small",
        "clip_sample": true,
        "prediction_type": "epsilon",
    });
    v.as_object().cloned().expect("an object") // ok: a literal object
}

/// A model folder's config and scheduler config (DDPM's defaults where it has none), with
/// `tensors` as its weights.
fn from_folder(dir: &Path, tensors: Option<Tensors>, described: String) -> Result<Start> {
    let folder = ModelFolder::open(dir)?;
    let text = read(&folder.unet_config)?;
    let shown = folder.unet_config.display().to_string();
    let config = UNetConfig::parse(&text, &shown)?;
    let config_json = config_object(&text, &shown)?;
    let scheduler = match &folder.scheduler_config {
        Some(p) => SchedulerConfig::parse_file(&read(p)?, &p.display().to_string())?,
        None => default_scheduler(),
    };
    let tensors = match tensors {
        Some(t) => t,
        None => wgpu_diffusion::model::tensors::read_safetensors(&folder.unet_weights)?,
    };
    Ok(Start { config_text: text, config_json, config, tensors: Some(tensors), scheduler, described })
}

fn start(args: &TrainArgs) -> Result<Start> {
    if let Some(dir) = &args.init {
        return from_folder(dir, None, format!("the weights of {}", dir.display()));
    }
    let (text, described) = match (&args.config, &args.arch) {
        (Some(p), _) => (read(p)?, format!("{} with PyTorch's default init", p.display())),
        (None, name) => {
            let name = name.as_deref().unwrap_or(DEFAULT_ARCH);
            (
                arch::config_text(name)?.to_string(),
                format!("the {name} architecture with PyTorch's default init"),
            )
        }
    };
    let config = UNetConfig::parse(&text, "config.json")?;
    let config_json = config_object(&text, "config.json")?;
    Ok(Start {
        config_text: text,
        config_json,
        config,
        tensors: None,
        scheduler: default_scheduler(),
        described,
    })
}

/// The class dropout asked for: a probability below 1.
fn class_dropout(args: &TrainArgs) -> Result<Option<f64>> {
    if let Some(k) = args.class_lr_scale.filter(|k| !(k.is_finite() && *k > 0.0)) {
        return Err(Error::Invalid(format!("--class-lr-scale {k}: a positive number")));
    }
    match args.class_dropout {
        Some(p) if !(p.is_finite() && (0.0..1.0).contains(&p)) => {
            Err(Error::Invalid(format!("--class-dropout {p}: a probability from 0 up to (not including) 1")))
        }
        p => Ok(p),
    }
}

/// The recipe from the flags and defaults; `epoch_steps` sizes the defaults counted in epochs.
fn recipe(args: &TrainArgs, scheduler: &Map<String, Value>, epoch_steps: u64) -> Result<Recipe> {
    let d = Recipe::default();
    let steps = args.steps.unwrap_or(100 * epoch_steps);
    if steps == 0 {
        return Err(Error::Invalid("--steps must be at least 1".into()));
    }
    let batch = args.batch.unwrap_or(d.batch);
    if batch == 0 {
        return Err(Error::Invalid("--batch must be at least 1".into()));
    }
    let prediction = match (&args.prediction_type, scheduler.get("prediction_type").and_then(Value::as_str)) {
        (Some(p), _) => parse_prediction(p)?,
        (None, Some(p)) if args.init.is_some() => parse_prediction(p)?,
        _ => d.prediction,
    };
    let positive = |name: &str, v: f64| -> Result<f64> {
        if v.is_finite() && v >= 0.0 {
            Ok(v)
        } else {
            Err(Error::Invalid(format!("--{name} must be a finite number of at least 0, not {v}")))
        }
    };
    let ema = (!args.no_ema).then(|| EmaSchedule {
        max_decay: args.ema_decay.unwrap_or(0.9999),
        min_decay: 0.0,
        update_after_step: 0,
        warmup: Some((args.ema_inv_gamma.unwrap_or(1.0), args.ema_power.unwrap_or(0.75))),
    });
    if let Some(e) = ema {
        positive("ema-decay", e.max_decay)?;
        if e.max_decay > 1.0 {
            return Err(Error::Invalid(format!("--ema-decay {} is over 1", e.max_decay)));
        }
    }
    let clip = args.grad_clip.unwrap_or(1.0);
    positive("grad-clip", clip as f64)?;
    Ok(Recipe {
        steps,
        batch,
        lr: positive("lr", args.lr.unwrap_or(d.lr))?,
        lr_kind: LrKind::parse(args.lr_schedule.as_deref().unwrap_or("cosine"))?,
        warmup: args.warmup.unwrap_or(d.warmup),
        adamw: AdamW {
            beta1: positive("adam-beta1", args.adam_beta1.unwrap_or(d.adamw.beta1))?,
            beta2: positive("adam-beta2", args.adam_beta2.unwrap_or(d.adamw.beta2))?,
            eps: positive("adam-epsilon", args.adam_epsilon.unwrap_or(d.adamw.eps))?,
            weight_decay: positive("weight-decay", args.weight_decay.unwrap_or(d.adamw.weight_decay))?,
        },
        ema,
        grad_clip: (clip > 0.0).then_some(clip),
        prediction,
        seed: args.seed.unwrap_or(d.seed),
        random_flip: args.random_flip,
        class_dropout: 0.0,
        class_lr_scale: 1.0,
        grad_shares: grad_shares(args, batch)?,
    })
}

/// The batch's gradient shares: `--grad-shards K`, else `default_grad_shares`.
fn grad_shares(args: &TrainArgs, batch: usize) -> Result<usize> {
    match args.grad_shards {
        Some(k) if k == 0 || !batch.is_multiple_of(k) => {
            Err(Error::Invalid(format!("--grad-shards {k}: a divisor of the batch ({batch})")))
        }
        Some(k) => Ok(k),
        None => Ok(default_grad_shares(batch)),
    }
}

/// The flags that change a run's numbers, given with `--resume`.
fn recipe_flags_given(args: &TrainArgs) -> Vec<&'static str> {
    let given = [
        ("--arch", args.arch.is_some()),
        ("--config", args.config.is_some()),
        ("--init", args.init.is_some()),
        ("--steps", args.steps.is_some()),
        ("--batch", args.batch.is_some()),
        ("--lr", args.lr.is_some()),
        ("--lr-schedule", args.lr_schedule.is_some()),
        ("--warmup", args.warmup.is_some()),
        ("--weight-decay", args.weight_decay.is_some()),
        ("--adam-beta1", args.adam_beta1.is_some()),
        ("--adam-beta2", args.adam_beta2.is_some()),
        ("--adam-epsilon", args.adam_epsilon.is_some()),
        ("--ema-decay", args.ema_decay.is_some()),
        ("--ema-power", args.ema_power.is_some()),
        ("--ema-inv-gamma", args.ema_inv_gamma.is_some()),
        ("--no-ema", args.no_ema),
        ("--grad-clip", args.grad_clip.is_some()),
        ("--prediction-type", args.prediction_type.is_some()),
        ("--seed", args.seed.is_some()),
        ("--random-flip", args.random_flip),
        ("--num-classes", args.num_classes.is_some()),
        ("--class-dropout", args.class_dropout.is_some()),
        ("--class-names", args.class_names.is_some()),
        ("--class-lr-scale", args.class_lr_scale.is_some()),
        ("--grad-shards", args.grad_shards.is_some()),
    ];
    given.iter().filter(|g| g.1).map(|g| g.0).collect()
}

fn alphas(scheduler: &Map<String, Value>) -> Result<Vec<f64>> {
    let cfg = SchedulerConfig::resolve(SamplerKind::Ddpm, Some(scheduler), "the scheduler config")?;
    Ok(cfg.alphas_cumprod()?.iter().map(|&a| a as f64).collect())
}

/// A grid of `SAMPLE_IMAGES` fixed-seed samples of the EMA (or raw) weights; a class-conditional
/// model's image k is of class k mod the classes, at `sample`'s default guidance.
fn sample_grid(
    ctx: &Context,
    unet: &UNet,
    trainer: &Trainer,
    scheduler: &Map<String, Value>,
    recipe: &Recipe,
    path: &Path,
) -> Result<()> {
    let mut buffers = unet.bank.buffers.clone();
    for w in &trainer.optimizer.weights {
        if let Some(s) = &w.shadow {
            buffers[w.weight] = s.clone();
        }
    }
    let mut model =
        UNet { config: unet.config.clone(), bank: unet.bank.with_buffers(buffers)?, ops: unet.ops };
    let sched = checkpoint::run_scheduler(scheduler, recipe);
    let kind = SamplerKind::parse(super::sample::DEFAULT_SAMPLER)?;
    let cfg = SchedulerConfig::resolve(kind, Some(&sched), "the run's scheduler config")?;
    let plan = SamplerPlan::new(&cfg, super::sample::DEFAULT_STEPS, 0.0)?;
    let classes = wgpu_diffusion::pipeline::default_classes(&unet.config, SAMPLE_IMAGES)?;
    let conditioning = classes.as_ref().map(|c| Conditioning { labels: &c.labels, guidance: c.guidance });
    let input = ChainInput { conditioning, ..ChainInput::all(SAMPLE_SEED, SAMPLE_IMAGES, None) };
    let out = diffusion::sample(ctx, &mut model, &plan, &input, &mut |_, _| {})?;
    let c = &unet.config;
    let grid = images::grid(
        &out,
        SAMPLE_IMAGES,
        c.in_channels,
        c.sample_size,
        c.sample_size,
        images::square_cols(SAMPLE_IMAGES),
    )?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|source| Error::Io { path: dir.display().to_string(), source })?;
    }
    images::save_png(&grid, path)
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let ranks = Ranks::from_launch()?;
    match run_on(args, &ranks) {
        // One rank's error ends every rank's process: none waits for it in a collective.
        Err(e) if ranks.size > 1 => {
            // One write, so ranks' lines do not interleave.
            let line = format!("error: rank {} of {}: {e}\n", ranks.rank, ranks.size);
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            ranks.abort(1)
        }
        r => r,
    }
}

/// The run on this process: one of `ranks`, which share each step's gradient shares; rank 0
/// alone writes the run's files.
fn run_on(args: &TrainArgs, ranks: &Ranks) -> Result<()> {
    // Rank 0 speaks for the run; other ranks report only themselves.
    let root = ranks.is_root();
    if let Some(p) = &args.compare_log {
        if log::points(p).is_empty() {
            return Err(Error::Invalid(format!(
                "--compare-log {}: no JSON lines with step and loss",
                p.display()
            )));
        }
    }
    let resumed = if args.resume { Some(checkpoint::load_state(&args.out)?) } else { None };
    if resumed.is_some() {
        let given = recipe_flags_given(args);
        if !given.is_empty() {
            return Err(Error::Invalid(format!(
                "--resume continues the run in {} with its saved recipe; drop {}",
                args.out.display(),
                given.join(", ")
            )));
        }
    } else if args.out.join(checkpoint::STATE_FILE).is_file() {
        return Err(Error::Invalid(format!(
            "{} already holds a training run: --resume continues it, or choose another --out",
            args.out.display()
        )));
    }
    // Every flag is checked before any data is read.
    let dropout = class_dropout(args)?;
    let given_names = args.class_names.as_deref().map(classes::parse_names).transpose()?;
    let mut start = match &resumed {
        // The raw weights from the resume state (the folder's file holds the EMA).
        Some(state) => {
            let began = state.started_from.clone().unwrap_or_else(|| "a resumed run".into());
            from_folder(&args.out, state.tensors.get("weight").cloned(), began)?
        }
        None => start(args)?,
    };
    if resumed.is_none() {
        recipe(args, &start.scheduler, 1)?;
    }
    let conditional = classes::set_up_config(
        &mut start.config_json,
        start.tensors.as_mut(),
        args.num_classes,
        "the model's config",
    )?;
    if !conditional {
        let given = [
            ("--class-dropout", dropout.is_some()),
            ("--class-names", given_names.is_some()),
            ("--class-lr-scale", args.class_lr_scale.is_some()),
        ];
        if let Some((flag, _)) = given.iter().find(|g| g.1) {
            return Err(Error::Invalid(format!(
                "{flag} is for a class-conditional model: give --num-classes N (or a model with a class embedding)"
            )));
        }
    }
    let t_load = Instant::now();
    let mut dataset = Dataset::load(&args.data, start.config.in_channels, start.config.sample_size)?;
    if let Some(path) = &args.labels {
        dataset = dataset.with_labels_file(path)?;
    }
    if root {
        eprintln!(
            "{}: {} images of {s}x{s} ({:.1} s to load)",
            dataset.source,
            dataset.count,
            t_load.elapsed().as_secs_f64(),
            s = dataset.size
        );
    }
    let recipe = match &resumed {
        Some(state) => state.recipe.clone(),
        None => {
            let batch = args.batch.unwrap_or(Recipe::default().batch) as u64;
            let r = recipe(args, &start.scheduler, (dataset.count as u64).div_ceil(batch.max(1)))?;
            Recipe {
                class_dropout: if conditional { dropout.unwrap_or(0.1) } else { 0.0 },
                class_lr_scale: args.class_lr_scale.unwrap_or(1.0),
                ..r
            }
        }
    };
    // A class-conditional run's classes: recorded in the config, the data's labels mapped.
    let labels = if conditional {
        let c = classes::settle(
            &mut start.config_json,
            dataset.labels.as_ref(),
            given_names,
            recipe.class_dropout,
            &dataset.source,
            "the model's config",
        )?;
        start.config_text = serde_json::to_string_pretty(&Value::Object(start.config_json.clone()))
            .map_err(|e| Error::Invalid(format!("config.json: {e}")))?;
        start.config = UNetConfig::parse(&start.config_text, "the model's config")?;
        if root {
            eprintln!(
                "class-conditional: {} classes ({}), null class {}, labels dropped with probability {}",
                c.names.len(),
                c.names.join(", "),
                c.null,
                recipe.class_dropout
            );
        }
        Some(BatchLabels {
            dropout: ClassDropout::new(recipe.seed, recipe.class_dropout, c.null),
            ids: c.ids,
        })
    } else {
        if root && dataset.labels.is_some() {
            eprintln!(
                "(the data has class labels; --num-classes N trains a class-conditional model on them)"
            );
        }
        None
    };
    let own = match ranks.size {
        1 => None,
        n => Some(ranks::own_shares(recipe.grad_shares, ranks.rank, n)?),
    };
    let ctx = Context::new(&ContextOptions { local_rank: ranks.local_rank, ..args.device.options()? })?;
    let tensors = match start.tensors {
        Some(t) => t,
        None => init::pytorch_default(&ctx, &start.config, recipe.seed)?,
    };
    let mut unet = UNet::from_tensors(&ctx, start.config.clone(), tensors, &start.described)?;
    let alphas = alphas(&start.scheduler)?;
    let mut trainer = Trainer::sharing(
        &ctx,
        &mut unet,
        &alphas,
        &dataset,
        &recipe,
        args.memory_budget_mib << 20,
        args.steps_per_submission,
        labels,
        own.clone(),
    )?;
    let first = match &resumed {
        Some(state) => {
            checkpoint::restore(&ctx, &unet, &mut trainer, state)?;
            state.steps
        }
        None => 0,
    };
    let mut log = match root {
        true => {
            std::fs::create_dir_all(&args.out)
                .map_err(|source| Error::Io { path: args.out.display().to_string(), source })?;
            Some(RunLog::open(&args.out.join(LOG_FILE), first)?)
        }
        false => None,
    };
    let epoch_steps = (dataset.count as u64).div_ceil(recipe.batch as u64);
    let save_every = args.save_every.unwrap_or(500).max(1);
    let sample_every = args.sample_every.unwrap_or(10 * epoch_steps);
    let info = CheckpointInfo {
        unet_config: &start.config_text,
        scheduler: &start.scheduler,
        data: &dataset.source,
        started_from: &start.described,
    };
    if let Some(own) = &own {
        eprintln!(
            "rank {} of {} on {}: gradient shares {}..{} of {}",
            ranks.rank, ranks.size, ctx.info.name, own.start, own.end, recipe.grad_shares
        );
    }
    if root {
        eprintln!(
        "training {} ({:.2}M parameters) for steps {}..{} of {}, batch {} (micro-batches of {}), on {}; {} dataset, planned {:.1} MiB",
        start.described,
        unet.bank.parameters as f64 / 1e6,
        first + 1,
        recipe.steps,
        recipe.steps,
        recipe.batch,
        trainer.step.micro,
        ctx.info.name,
        if trainer.batches.resident { "resident" } else { "streamed" },
        trainer.step.peak_bytes as f64 / (1 << 20) as f64,
    );
    }
    let bar = match root {
        true => super::progress_bar(recipe.steps, "{bar:30} {pos}/{len} steps  {msg}  ETA {eta}"),
        false => indicatif::ProgressBar::hidden(),
    };
    bar.set_position(first);
    let t0 = Instant::now();
    let write_logs = |logs: Vec<StepLog>, log: &mut Option<RunLog>| -> Result<()> {
        for l in logs {
            let secs = t0.elapsed().as_secs_f64();
            if let Some(log) = log {
                log.write(&l, secs)?;
            }
            if !l.loss.is_finite() {
                return Err(Error::Invalid(format!(
                    "step {}: the loss is {} (try a lower --lr, or --grad-clip)",
                    l.step, l.loss
                )));
            }
            let done = (l.step - first) as f64;
            bar.set_position(l.step);
            bar.set_message(format!(
                "loss {:.4}  {:.2} steps/s  {:.1} images/s",
                l.loss,
                done / secs,
                done * recipe.batch as f64 / secs
            ));
        }
        Ok(())
    };
    let end = args.stop_at.unwrap_or(recipe.steps).min(recipe.steps);
    if end <= first {
        return Err(Error::Invalid(match args.stop_at {
            Some(_) => format!("--stop-at {end}: the run is already at step {first}"),
            None => format!(
                "the run in {} is finished: it is at step {first} of {}",
                args.out.display(),
                recipe.steps
            ),
        }));
    }
    let (mut sent_bytes, mut exchange_secs) = (0u64, 0f64);
    let mut at = first;
    while at < end {
        // Submissions end where a checkpoint or a sample grid is due.
        let next_save = (at / save_every + 1) * save_every;
        let next_sample = at.checked_div(sample_every).map_or(u64::MAX, |k| (k + 1) * sample_every);
        let until = next_save.min(next_sample).min(end);
        let n = ((until - at) as usize).min(trainer.ring());
        if own.is_some() {
            // A shared step: this rank's shares, every rank's, then the same update on each.
            let mine = trainer.compute_shares(&ctx, &dataset)?;
            let t_exchange = Instant::now();
            sent_bytes += 4 * (mine.gradients.len() + mine.losses.len()) as u64;
            let all = ranks.exchange(mine)?;
            exchange_secs += t_exchange.elapsed().as_secs_f64();
            let step = trainer.apply_shares(&ctx, &all)?;
            write_logs(vec![step], &mut log)?;
            at += 1;
        } else {
            let logs = trainer.submit(&ctx, &dataset, n)?;
            write_logs(logs, &mut log)?;
            at += n as u64;
        }
        let save = at % save_every == 0 || at == end;
        let sample = sample_every > 0 && at % sample_every == 0;
        if save || sample {
            let logs = trainer.finish(&ctx)?;
            write_logs(logs, &mut log)?;
            if let Some(log) = &mut log {
                log.flush()?;
            }
        }
        if save && ranks.size > 1 {
            // Every rank must hold rank 0's bits before rank 0 writes them for all.
            let weights = trainer.optimizer.read(&ctx, &unet, Held::Weights)?;
            ranks.check_same_weights(ranks::checksum(
                weights.iter().flat_map(|(_, t)| t.data.iter().copied()),
            ))?;
        }
        if !root {
            continue;
        }
        if sample {
            sample_grid(
                &ctx,
                &unet,
                &trainer,
                &start.scheduler,
                &recipe,
                &args.out.join("samples").join(format!("step-{at:06}.png")),
            )?;
        }
        if let (true, Some(log)) = (save, &log) {
            checkpoint::save(&ctx, &unet, &trainer, &args.out, &info)?;
            log.draw_curve(&args.out.join("loss.png"), args.compare_log.as_deref())?;
        }
    }
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    let done = (end - first) as f64;
    if ranks.size > 1 {
        // Each rank's own line: the exchange waits for the slowest rank, so its share differs.
        let line = format!(
            "rank {}: sent {:.2} MiB a step to the all-gather (receiving {} times that); the exchange took \
             {:.1} ms a step, {:.1}% of the step\n",
            ranks.rank,
            sent_bytes as f64 / done / (1 << 20) as f64,
            ranks.size - 1,
            exchange_secs * 1e3 / done,
            100.0 * exchange_secs / secs
        );
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    }
    if !root {
        return Ok(());
    }
    eprintln!(
        "wrote {} at step {end} of {}: {} steps in {secs:.1} s, {:.2} steps/s, {:.1} images/s; log {}, curve {}",
        args.out.display(),
        recipe.steps,
        end - first,
        done / secs,
        done * recipe.batch as f64 / secs,
        log.as_ref().map_or(String::new(), |l| l.path.display().to_string()),
        args.out.join("loss.png").display()
    );
    Ok(())
}
