//! The samplers diffusers users know, as per-step coefficient tables for the `sampler_step` kernel.
//!
//! Choosing a sampler behaves like diffusers' `Scheduler.from_config(scheduler_config.json)`: the
//! sampler's defaults, overridden by the file's keys that this sampler takes (others are ignored, as
//! diffusers ignores them). A key whose value we do not implement is an error that names it.
//! Coefficients are computed once in f64 from the same f32 schedule diffusers uses.

use serde_json::{Map, Value};

use super::schedule::{self, BetaSchedule, Spacing};
use crate::kernels::diffusion::{DdpmVariance, Prediction, StepCoeffs};
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SamplerKind {
    Ddpm,
    Ddim,
    DpmPP2M,
    Euler,
    EulerAncestral,
    /// PNDM with skip_prk_steps: PLMS, Stable Diffusion 1.x's scheduler.
    Pndm,
}

impl SamplerKind {
    pub const NAMES: &'static str = "ddpm, ddim, dpm++2m, euler, euler-a, pndm";

    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "ddpm" => Ok(Self::Ddpm),
            "ddim" => Ok(Self::Ddim),
            "dpm++2m" | "dpmpp2m" | "dpm-solver++" | "dpmsolver++" => Ok(Self::DpmPP2M),
            "euler" => Ok(Self::Euler),
            "euler-a" | "euler_a" | "euler-ancestral" => Ok(Self::EulerAncestral),
            "pndm" | "plms" => Ok(Self::Pndm),
            other => {
                Err(Error::Invalid(format!("unknown sampler '{other}': expected one of {}", Self::NAMES)))
            }
        }
    }

    /// diffusers' class for this sampler.
    pub fn class_name(self) -> &'static str {
        match self {
            Self::Ddpm => "DDPMScheduler",
            Self::Ddim => "DDIMScheduler",
            Self::DpmPP2M => "DPMSolverMultistepScheduler",
            Self::Euler => "EulerDiscreteScheduler",
            Self::EulerAncestral => "EulerAncestralDiscreteScheduler",
            Self::Pndm => "PNDMScheduler",
        }
    }

    /// The sampler named by a scheduler_config.json `_class_name`, if we have it.
    pub fn from_class_name(name: &str) -> Option<Self> {
        [Self::Ddpm, Self::Ddim, Self::DpmPP2M, Self::Euler, Self::EulerAncestral, Self::Pndm]
            .into_iter()
            .find(|k| k.class_name() == name)
    }

    /// Keys this scheduler's __init__ takes beyond the common ones, with the default each has.
    fn own_keys(self) -> &'static [(&'static str, KeyDefault)] {
        use KeyDefault::*;
        match self {
            Self::Ddpm => &[
                ("timestep_spacing", Str("leading")),
                ("variance_type", Str("fixed_small")),
                ("clip_sample", Bool(true)),
                ("clip_sample_range", Num(1.0)),
                ("thresholding", Bool(false)),
                ("dynamic_thresholding_ratio", Ignored),
                ("sample_max_value", Ignored),
            ],
            Self::Ddim => &[
                ("timestep_spacing", Str("leading")),
                ("clip_sample", Bool(true)),
                ("clip_sample_range", Num(1.0)),
                ("set_alpha_to_one", Bool(true)),
                ("thresholding", Bool(false)),
                ("dynamic_thresholding_ratio", Ignored),
                ("sample_max_value", Ignored),
            ],
            Self::Euler => &[
                ("timestep_spacing", Str("linspace")),
                ("interpolation_type", Str("linear")),
                ("use_karras_sigmas", Bool(false)),
                ("use_exponential_sigmas", Bool(false)),
                ("use_beta_sigmas", Bool(false)),
                ("sigma_min", Null),
                ("sigma_max", Null),
                ("timestep_type", Str("discrete")),
                ("final_sigmas_type", Str("zero")),
            ],
            Self::EulerAncestral => &[("timestep_spacing", Str("linspace"))],
            Self::Pndm => &[
                ("timestep_spacing", Str("leading")),
                ("skip_prk_steps", Bool(false)),
                ("set_alpha_to_one", Bool(false)),
            ],
            Self::DpmPP2M => &[
                ("timestep_spacing", Str("linspace")),
                ("solver_order", Num(2.0)),
                ("thresholding", Bool(false)),
                ("dynamic_thresholding_ratio", Ignored),
                ("sample_max_value", Ignored),
                ("algorithm_type", Str("dpmsolver++")),
                ("solver_type", Str("midpoint")),
                ("lower_order_final", Bool(true)),
                ("euler_at_final", Bool(false)),
                ("use_karras_sigmas", Bool(false)),
                ("use_exponential_sigmas", Bool(false)),
                ("use_beta_sigmas", Bool(false)),
                ("use_lu_lambdas", Bool(false)),
                ("use_flow_sigmas", Bool(false)),
                ("flow_shift", Ignored),
                ("final_sigmas_type", Str("zero")),
                ("lambda_min_clipped", Null),
                ("variance_type", Null),
                ("use_dynamic_shifting", Bool(false)),
                ("time_shift_type", Ignored),
            ],
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum KeyDefault {
    Str(&'static str),
    Bool(bool),
    Num(f64),
    Null,
    /// Only used by options we refuse anyway (thresholding), so any value is fine.
    Ignored,
}

const COMMON: &[(&str, KeyDefault)] = &[
    ("num_train_timesteps", KeyDefault::Num(1000.0)),
    ("beta_start", KeyDefault::Num(0.0001)),
    ("beta_end", KeyDefault::Num(0.02)),
    ("beta_schedule", KeyDefault::Str("linear")),
    ("trained_betas", KeyDefault::Null),
    ("prediction_type", KeyDefault::Str("epsilon")),
    ("steps_offset", KeyDefault::Num(0.0)),
    ("rescale_betas_zero_snr", KeyDefault::Bool(false)),
];

/// A scheduler configuration resolved for one sampler (defaults + the file's keys).
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    pub kind: SamplerKind,
    values: Map<String, Value>,
    source: String,
}

impl SchedulerConfig {
    /// `file`: the scheduler_config.json object, if the model folder has one; `source` names it in errors.
    pub fn resolve(kind: SamplerKind, file: Option<&Map<String, Value>>, source: &str) -> Result<Self> {
        let mut values = Map::new();
        for (key, default) in COMMON.iter().chain(kind.own_keys()) {
            let v = match default {
                KeyDefault::Str(s) => Value::from(*s),
                KeyDefault::Bool(b) => Value::from(*b),
                KeyDefault::Num(n) => Value::from(*n),
                KeyDefault::Null | KeyDefault::Ignored => Value::Null,
            };
            values.insert(key.to_string(), v);
        }
        if let Some(file) = file {
            for (key, v) in file {
                if values.contains_key(key) {
                    values.insert(key.clone(), v.clone());
                }
            }
        }
        let cfg = Self { kind, values, source: source.to_string() };
        cfg.check_unsupported()?;
        Ok(cfg)
    }

    /// Parses scheduler_config.json text into its JSON object.
    pub fn parse_file(text: &str, source: &str) -> Result<Map<String, Value>> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::Invalid(format!("{source}: malformed JSON: {e}")))?;
        v.as_object().cloned().ok_or_else(|| Error::Invalid(format!("{source}: must hold a JSON object")))
    }

    fn err(&self, msg: String) -> Error {
        Error::Invalid(format!("{} ({}): {msg}", self.source, self.kind.class_name()))
    }

    fn get(&self, key: &str) -> &Value {
        self.values.get(key).unwrap_or(&Value::Null)
    }

    fn str(&self, key: &str) -> Result<String> {
        self.get(key).as_str().map(str::to_string).ok_or_else(|| self.err(format!("{key} must be a string")))
    }

    fn f64(&self, key: &str) -> Result<f64> {
        self.get(key).as_f64().ok_or_else(|| self.err(format!("{key} must be a number")))
    }

    fn bool(&self, key: &str) -> Result<bool> {
        self.get(key).as_bool().ok_or_else(|| self.err(format!("{key} must be true or false")))
    }

    /// Keys whose non-default values we do not implement.
    fn check_unsupported(&self) -> Result<()> {
        let off = |key: &str| -> Result<()> {
            match self.get(key) {
                Value::Null | Value::Bool(false) => Ok(()),
                v => Err(self.err(format!("{key} = {v} is not supported"))),
            }
        };
        for key in [
            "trained_betas",
            "rescale_betas_zero_snr",
            "thresholding",
            "use_karras_sigmas",
            "use_exponential_sigmas",
            "use_beta_sigmas",
            "use_lu_lambdas",
            "use_flow_sigmas",
            "use_dynamic_shifting",
            "sigma_min",
            "sigma_max",
        ] {
            off(key)?;
        }
        let expect = |key: &str, ok: &[&str]| -> Result<()> {
            match self.get(key) {
                Value::Null => Ok(()),
                Value::String(s) if ok.contains(&s.as_str()) => Ok(()),
                v => Err(self.err(format!("{key} = {v} is not supported (supported: {})", ok.join(", ")))),
            }
        };
        if self.kind == SamplerKind::DpmPP2M {
            expect("algorithm_type", &["dpmsolver++"])?;
            expect("solver_type", &["midpoint", "heun"])?;
            expect("final_sigmas_type", &["zero", "sigma_min"])?;
            if let Value::Number(n) = self.get("lambda_min_clipped") {
                if n.as_f64().is_some_and(f64::is_finite) {
                    return Err(self.err(format!("lambda_min_clipped = {n} is not supported")));
                }
            }
            let order = self.f64("solver_order")?;
            if order != 1.0 && order != 2.0 {
                return Err(self.err(format!("solver_order = {order} is not supported (1 or 2)")));
            }
            if let Value::String(v) = self.get("variance_type") {
                if v.starts_with("learned") {
                    return Err(self.err(format!("variance_type = \"{v}\" is not supported")));
                }
            }
        }
        if self.kind == SamplerKind::Euler {
            expect("interpolation_type", &["linear"])?;
            expect("timestep_type", &["discrete"])?;
            expect("final_sigmas_type", &["zero", "sigma_min"])?;
        }
        if self.kind == SamplerKind::Ddpm {
            expect("variance_type", &["fixed_small", "fixed_small_log", "fixed_large"])?;
        }
        if self.kind == SamplerKind::Pndm && self.get("skip_prk_steps") != &Value::Bool(true) {
            return Err(self.err(
                "skip_prk_steps = false (PNDM's Runge-Kutta warm-up) is not supported: PLMS is, \
                 skip_prk_steps = true, as Stable Diffusion's scheduler configs set it"
                    .into(),
            ));
        }
        Ok(())
    }

    pub fn num_train_timesteps(&self) -> Result<usize> {
        let t = self.f64("num_train_timesteps")?;
        if t < 2.0 || t.fract() != 0.0 {
            return Err(self.err(format!("num_train_timesteps = {t} must be an integer of at least 2")));
        }
        Ok(t as usize)
    }

    pub fn prediction(&self) -> Result<Prediction> {
        match self.str("prediction_type")?.as_str() {
            "epsilon" => Ok(Prediction::Epsilon),
            "sample" => Ok(Prediction::Sample),
            "v_prediction" => Ok(Prediction::VPrediction),
            other => Err(self.err(format!("prediction_type \"{other}\" is not supported"))),
        }
    }

    /// The f32 betas of this configuration's schedule.
    pub fn betas(&self) -> Result<Vec<f32>> {
        let schedule =
            BetaSchedule::parse(&self.str("beta_schedule")?).map_err(|e| self.err(e.to_string()))?;
        let t = self.num_train_timesteps()?;
        Ok(schedule::betas(schedule, self.f64("beta_start")?, self.f64("beta_end")?, t))
    }

    /// The f32 alphas_cumprod of this configuration's schedule.
    pub fn alphas_cumprod(&self) -> Result<Vec<f32>> {
        Ok(schedule::alphas_cumprod(&self.betas()?))
    }

    pub fn clip(&self) -> Result<Option<f32>> {
        Ok(if self.bool("clip_sample")? { Some(self.f64("clip_sample_range")? as f32) } else { None })
    }

    fn spacing(&self) -> Result<Spacing> {
        Spacing::parse(&self.str("timestep_spacing")?).map_err(|e| self.err(e.to_string()))
    }

    fn steps_offset(&self) -> Result<usize> {
        Ok(self.f64("steps_offset")?.max(0.0) as usize)
    }
}

/// Everything the chain needs for one sampler, steps and configuration.
#[derive(Clone, Debug)]
pub struct SamplerPlan {
    pub kind: SamplerKind,
    /// The timestep the UNet sees at each step (fractional for Euler with linspace spacing).
    pub timesteps: Vec<f32>,
    /// One coefficient row per step.
    pub rows: Vec<StepCoeffs>,
    /// x_T = init_noise_sigma * N(0, I).
    pub init_noise_sigma: f64,
    /// Whether any step adds fresh noise (so the chain must generate it).
    pub adds_noise: bool,
    /// Per step, the (a, b) of this scheduler's `add_noise` at its timestep: x = a x0 + b eps
    /// (VP for DDPM, DDIM, DPM-Solver++ and PNDM; x0 + sigma eps for the Euler schedulers).
    /// Where img2img starts.
    pub noising: Vec<(f64, f64)>,
    /// PNDM's schedule, which img2img rebuilds its rows from (its step counter restarts).
    pub pndm: Option<Box<Pndm>>,
}

impl SamplerPlan {
    pub fn new(cfg: &SchedulerConfig, steps: usize, eta: f64) -> Result<Self> {
        let t = cfg.num_train_timesteps()?;
        if steps == 0 || steps > t {
            return Err(Error::Invalid(format!(
                "--steps {steps}: must be between 1 and num_train_timesteps ({t})"
            )));
        }
        if eta < 0.0 || !eta.is_finite() {
            return Err(Error::Invalid(format!("--eta {eta}: must be a non-negative number")));
        }
        let ac: Vec<f64> = cfg.alphas_cumprod()?.iter().map(|&a| a as f64).collect();
        let plan = match cfg.kind {
            SamplerKind::Ddpm => ddpm(cfg, &ac, steps)?,
            SamplerKind::Ddim => ddim(cfg, &ac, steps, eta)?,
            SamplerKind::Euler | SamplerKind::EulerAncestral => euler(cfg, &ac, steps)?,
            SamplerKind::DpmPP2M => dpm_pp_2m(cfg, &ac, steps)?,
            SamplerKind::Pndm => pndm(cfg, ac, steps)?,
        };
        Ok(plan)
    }
}

/// Where img2img (SDEdit) starts in a plan: diffusers' `get_timesteps` and `add_noise` at the first
/// kept timestep.
#[derive(Clone, Debug)]
pub struct Img2ImgPlan {
    /// The plan from the begin index on (its first step first order, as a multistep solver's
    /// first step is).
    pub plan: SamplerPlan,
    /// x = a x0 + b eps starts the chain.
    pub noising: (f64, f64),
    /// The begin index into the whole plan (steps skipped).
    pub begin: usize,
}

impl SamplerPlan {
    /// img2img at `strength`: init = min(int(N strength), N) steps run, from t_start = N - init
    /// (pipeline_stable_diffusion_img2img.py). None when no step runs (strength 0, or N strength
    /// under 1): the input comes back unchanged (diffusers leaves that case undefined).
    pub fn img2img(&self, strength: f64) -> Result<Option<Img2ImgPlan>> {
        if !(0.0..=1.0).contains(&strength) {
            return Err(Error::Invalid(format!("--strength {strength}: must be between 0 and 1")));
        }
        let n = self.pndm.as_ref().map_or(self.rows.len(), |p| p.steps);
        let init = ((n as f64 * strength) as usize).min(n);
        if init == 0 {
            return Ok(None);
        }
        let begin = n - init;
        if let Some(p) = &self.pndm {
            // diffusers slices PLMS's timesteps (its repeated one included) and its step
            // counter starts again, so the second kept step still re-steps the first's sample.
            let ts = &p.timesteps[begin..];
            let plan = SamplerPlan {
                rows: p.rows(ts),
                timesteps: ts.iter().map(|&t| t as f32).collect(),
                noising: vp_noising(&p.ac, ts),
                ..self.clone()
            };
            return Ok(Some(Img2ImgPlan { noising: plan.noising[0], plan, begin }));
        }
        let mut plan = self.clone();
        plan.rows.drain(..begin);
        plan.timesteps.drain(..begin);
        plan.noising.drain(..begin);
        // A multistep solver keeps no history at its begin index: its first step is first order
        // (second order adds d to next_x0 and takes it from next_prev_x0).
        let first = &mut plan.rows[0];
        first.next_x0 += first.next_prev_x0;
        first.next_prev_x0 = 0.0;
        Ok(Some(Img2ImgPlan { noising: plan.noising[0], plan, begin }))
    }
}

fn ddpm(cfg: &SchedulerConfig, ac: &[f64], steps: usize) -> Result<SamplerPlan> {
    let ts = schedule::integer_timesteps(cfg.spacing()?, ac.len(), steps, cfg.steps_offset()?);
    check_range(&ts, ac.len())?;
    let variance = match cfg.str("variance_type")?.as_str() {
        "fixed_large" => DdpmVariance::FixedLarge,
        _ => DdpmVariance::FixedSmall, // fixed_small_log draws the same noise scale
    };
    let (pred, clip) = (cfg.prediction()?, cfg.clip()?);
    let rows = (0..ts.len())
        .map(|i| {
            let t = ts[i];
            let prev = ts.get(i + 1).copied().unwrap_or(-1);
            let abar_prev = if prev >= 0 { ac[prev as usize] } else { 1.0 };
            StepCoeffs {
                timestep: t as f32,
                ..StepCoeffs::ddpm(ac[t as usize], abar_prev, pred, clip, variance, t > 0)
            }
        })
        .collect();
    Ok(SamplerPlan {
        kind: SamplerKind::Ddpm,
        timesteps: ts.iter().map(|&t| t as f32).collect(),
        rows,
        init_noise_sigma: 1.0,
        adds_noise: true,
        noising: vp_noising(ac, &ts),
        pndm: None,
    })
}

fn ddim(cfg: &SchedulerConfig, ac: &[f64], steps: usize, eta: f64) -> Result<SamplerPlan> {
    let t_train = ac.len();
    let ts = schedule::integer_timesteps(cfg.spacing()?, t_train, steps, cfg.steps_offset()?);
    check_range(&ts, t_train)?;
    let final_abar = if cfg.bool("set_alpha_to_one")? { 1.0 } else { ac[0] };
    let (pred, clip) = (cfg.prediction()?, cfg.clip()?);
    let stride = (t_train / steps) as i64;
    let rows = ts
        .iter()
        .map(|&t| {
            let prev = t - stride;
            let abar_prev = if prev >= 0 { ac[prev as usize] } else { final_abar };
            StepCoeffs {
                timestep: t as f32,
                ..StepCoeffs::ddim(ac[t as usize], abar_prev, pred, clip, eta, false)
            }
        })
        .collect();
    Ok(SamplerPlan {
        kind: SamplerKind::Ddim,
        timesteps: ts.iter().map(|&t| t as f32).collect(),
        rows,
        init_noise_sigma: 1.0,
        adds_noise: eta > 0.0,
        noising: vp_noising(ac, &ts),
        pndm: None,
    })
}

/// sqrt(abar_t) x0 + sqrt(1 - abar_t) eps at each integer timestep.
fn vp_noising(ac: &[f64], ts: &[i64]) -> Vec<(f64, f64)> {
    ts.iter().map(|&t| (ac[t as usize].sqrt(), (1.0 - ac[t as usize]).sqrt())).collect()
}

fn check_range(ts: &[i64], t_train: usize) -> Result<()> {
    match ts.iter().find(|&&t| t < 0 || t as usize >= t_train) {
        Some(t) => Err(Error::Invalid(format!(
            "timestep {t} falls outside the {t_train} training timesteps (check steps_offset and --steps)"
        ))),
        None => Ok(()),
    }
}

/// Every training sigma sqrt((1 - abar) / abar), in f32 as diffusers computes it.
fn train_sigmas(ac: &[f64]) -> Vec<f64> {
    ac.iter().map(|&a| (((1.0 - a as f32) / a as f32).sqrt()) as f64).collect()
}

/// Float timesteps of the Euler schedulers (no rounding for linspace), as f32.
fn euler_timesteps(spacing: Spacing, t: usize, n: usize, offset: usize) -> Vec<f32> {
    match spacing {
        Spacing::Linspace => {
            let mut v: Vec<f32> = (0..n)
                .map(|i| if n == 1 { 0.0 } else { ((t - 1) as f64 * i as f64 / (n - 1) as f64) as f32 })
                .collect();
            v.reverse();
            v
        }
        _ => schedule::integer_timesteps(spacing, t, n, offset).iter().map(|&x| x as f32).collect(),
    }
}

fn x0_from_sigma(pred: Prediction, sigma: f64) -> (f64, f64) {
    match pred {
        Prediction::Epsilon => (1.0, -sigma),
        Prediction::Sample => (0.0, 1.0),
        Prediction::VPrediction => (1.0 / (sigma * sigma + 1.0), -sigma / (sigma * sigma + 1.0).sqrt()),
    }
}

fn euler(cfg: &SchedulerConfig, ac: &[f64], steps: usize) -> Result<SamplerPlan> {
    let ancestral = cfg.kind == SamplerKind::EulerAncestral;
    let pred = cfg.prediction()?;
    if ancestral && pred == Prediction::Sample {
        return Err(Error::Invalid(
            "euler-a does not support prediction_type \"sample\" (diffusers does not either)".into(),
        ));
    }
    let spacing = cfg.spacing()?;
    let ts = euler_timesteps(spacing, ac.len(), steps, cfg.steps_offset()?);
    let all = train_sigmas(ac);
    let mut sigmas: Vec<f64> = ts.iter().map(|&t| schedule::interp(t as f64, &all) as f32 as f64).collect();
    let last = if !ancestral && cfg.str("final_sigmas_type")? == "sigma_min" { all[0] } else { 0.0 };
    sigmas.push(last as f32 as f64);
    let max_sigma = sigmas.iter().cloned().fold(0.0, f64::max);
    let init_noise_sigma = if matches!(spacing, Spacing::Linspace | Spacing::Trailing) {
        max_sigma
    } else {
        (max_sigma * max_sigma + 1.0).sqrt()
    };
    let mut adds_noise = false;
    let rows = (0..steps)
        .map(|i| {
            let (s, s_next) = (sigmas[i], sigmas[i + 1]);
            let (x0_x, x0_m) = x0_from_sigma(pred, s);
            // x_next = x + (x - x0) / s * (target - s) [+ sigma_up z]
            let (target, sigma_up) = if ancestral {
                let up = (s_next * s_next * (s * s - s_next * s_next) / (s * s)).max(0.0).sqrt();
                ((s_next * s_next - up * up).max(0.0).sqrt(), up)
            } else {
                (s_next, 0.0)
            };
            adds_noise |= sigma_up > 0.0;
            let k = (target - s) / s;
            StepCoeffs {
                x0_x: x0_x as f32,
                x0_m: x0_m as f32,
                next_x: (1.0 + k) as f32,
                next_x0: -k as f32,
                noise_scale: sigma_up as f32,
                model_in_scale: (1.0 / (s * s + 1.0).sqrt()) as f32,
                timestep: ts[i],
                ..Default::default()
            }
        })
        .collect();
    let noising = sigmas[..steps].iter().map(|&s| (1.0, s)).collect();
    Ok(SamplerPlan { kind: cfg.kind, timesteps: ts, rows, init_noise_sigma, adds_noise, noising, pndm: None })
}

fn dpm_pp_2m(cfg: &SchedulerConfig, ac: &[f64], steps: usize) -> Result<SamplerPlan> {
    let t_train = ac.len();
    let spacing = cfg.spacing()?;
    let offset = cfg.steps_offset()?;
    // DPMSolverMultistepScheduler.set_timesteps: N + 1 points, the last dropped.
    let ts: Vec<i64> = match spacing {
        Spacing::Linspace => {
            let n = steps + 1;
            let mut v: Vec<i64> = (0..n)
                .map(|i| schedule::round_half_even((t_train - 1) as f64 * i as f64 / (n - 1) as f64) as i64)
                .collect();
            v.reverse();
            v.truncate(steps);
            v
        }
        Spacing::Leading => {
            let ratio = t_train / (steps + 1);
            (1..=steps).rev().map(|i| (i * ratio + offset) as i64).collect()
        }
        Spacing::Trailing => schedule::arange_desc(t_train as f64, t_train as f64 / steps as f64)
            .into_iter()
            .map(|v| schedule::round_half_even(v) as i64 - 1)
            .collect(),
    };
    check_range(&ts, t_train)?;
    let n = ts.len();
    let all = train_sigmas(ac);
    let mut sigmas: Vec<f64> = ts.iter().map(|&t| all[t as usize] as f32 as f64).collect();
    sigmas.push(if cfg.str("final_sigmas_type")? == "sigma_min" { all[0] as f32 as f64 } else { 0.0 });
    let pred = cfg.prediction()?;
    let order = cfg.f64("solver_order")? as usize;
    let heun = cfg.str("solver_type")? == "heun";
    let final_zero = cfg.str("final_sigmas_type")? == "zero";
    let lower_final = cfg.bool("lower_order_final")?;
    let euler_final = cfg.bool("euler_at_final")?;
    // (alpha_t, sigma_t, lambda) of a sigma; lambda is +inf at sigma 0.
    let ast = |s: f64| {
        let a = 1.0 / (s * s + 1.0).sqrt();
        (a, s * a, a.ln() - (s * a).ln())
    };
    let rows = (0..n)
        .map(|i| {
            let (a_s, s_s, l_s) = ast(sigmas[i]);
            let (a_t, s_t, l_t) = ast(sigmas[i + 1]);
            let (x0_x, x0_m) = match pred {
                Prediction::Epsilon => (1.0 / a_s, -s_s / a_s),
                Prediction::Sample => (0.0, 1.0),
                Prediction::VPrediction => (a_s, -s_s),
            };
            let last_is_first_order = i == n - 1 && (euler_final || (lower_final && n < 15) || final_zero);
            let first_order = order == 1 || i == 0 || last_is_first_order;
            // exp(-h) - 1 with h = l_t - l_s; at sigma_t = 0, h is infinite and exp(-h) is 0.
            let em1 = if sigmas[i + 1] == 0.0 { -1.0 } else { (-(l_t - l_s)).exp() - 1.0 };
            let ratio = if sigmas[i + 1] == 0.0 { 0.0 } else { s_t / s_s };
            let (mut next_x0, mut next_prev) = (-a_t * em1, 0.0);
            if !first_order {
                let h = l_t - l_s;
                let (_, _, l_s1) = ast(sigmas[i - 1]);
                let r0 = (l_s - l_s1) / h;
                // D1 = (x0 - prev_x0) / r0
                let d1 = if heun { a_t * (em1 / h + 1.0) } else { -0.5 * a_t * em1 };
                next_x0 += d1 / r0;
                next_prev = -d1 / r0;
            }
            StepCoeffs {
                x0_x: x0_x as f32,
                x0_m: x0_m as f32,
                next_x: ratio as f32,
                next_x0: next_x0 as f32,
                next_prev_x0: next_prev as f32,
                model_in_scale: 1.0,
                timestep: ts[i] as f32,
                ..Default::default()
            }
        })
        .collect();
    // add_noise: alpha_t x0 + sigma_t eps at the step's sigma.
    let noising = sigmas[..n].iter().map(|&s| (ast(s).0, ast(s).1)).collect();
    Ok(SamplerPlan {
        kind: SamplerKind::DpmPP2M,
        timesteps: ts.iter().map(|&t| t as f32).collect(),
        rows,
        init_noise_sigma: 1.0,
        adds_noise: false,
        noising,
        pndm: None,
    })
}

/// PNDMScheduler with skip_prk_steps (PLMS), as ../shared/TEXT2IMG.md section 5 tells it.
#[derive(Clone, Debug)]
pub struct Pndm {
    /// The inference steps asked for (the timesteps are one more).
    pub steps: usize,
    /// The PLMS timesteps, the second-to-last base one repeated: 981, 961, 961, 941, ...
    pub timesteps: Vec<i64>,
    ac: Vec<f64>,
    /// num_train_timesteps // steps, the distance every step goes back.
    delta: i64,
    final_abar: f64,
    prediction: Prediction,
}

impl Pndm {
    /// The chain's rows for `ts`, its step counter starting at 0. Each step is
    ///   x' = A X + B (w0 e + w1 h1 + w2 h2 + w3 h3)
    /// with e the model output, h1..h3 the outputs before (the history keeps raw outputs: x0 is
    /// the output itself), X the sample (the one saved before step 0 at step 1), and
    /// (A, B) PNDM's _get_prev_sample from t to t - delta (step 1: from t + delta to t).
    fn rows(&self, ts: &[i64]) -> Vec<StepCoeffs> {
        let mut history = 0usize;
        ts.iter()
            .enumerate()
            .map(|(k, &t)| {
                let (from, to) = if k == 1 { (t + self.delta, t) } else { (t, t - self.delta) };
                if k != 1 {
                    history = (history + 1).min(4);
                }
                let w: [f64; 4] = match (k, history) {
                    (1, _) => [0.5, 0.5, 0.0, 0.0],
                    (_, 1) => [1.0, 0.0, 0.0, 0.0],
                    (_, 2) => [1.5, -0.5, 0.0, 0.0],
                    (_, 3) => [23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0, 0.0],
                    _ => [55.0 / 24.0, -59.0 / 24.0, 37.0 / 24.0, -9.0 / 24.0],
                };
                let a = self.ac[from as usize];
                let b = if to >= 0 { self.ac[to as usize] } else { self.final_abar };
                let k_e = (b - a) / (a * (1.0 - b).sqrt() + (a * (1.0 - a) * b).sqrt());
                let (big_a, big_b) = match self.prediction {
                    Prediction::VPrediction => ((b / a).sqrt() - k_e * (1.0 - a).sqrt(), -k_e * a.sqrt()),
                    _ => ((b / a).sqrt(), -k_e),
                };
                StepCoeffs {
                    x0_m: 1.0,
                    next_x: big_a as f32,
                    next_x0: (big_b * w[0]) as f32,
                    next_prev_x0: (big_b * w[1]) as f32,
                    next_prev2: (big_b * w[2]) as f32,
                    next_prev3: (big_b * w[3]) as f32,
                    model_in_scale: 1.0,
                    timestep: t as f32,
                    depth: 3.0,
                    skip_history: (k == 1) as u8 as f32,
                    from_saved: (k == 1) as u8 as f32,
                    save: (k == 0) as u8 as f32,
                    ..Default::default()
                }
            })
            .collect()
    }
}

fn pndm(cfg: &SchedulerConfig, ac: Vec<f64>, steps: usize) -> Result<SamplerPlan> {
    let t_train = ac.len();
    let prediction = cfg.prediction()?;
    if prediction == Prediction::Sample {
        return Err(
            cfg.err("prediction_type \"sample\" is not supported by PNDM (diffusers refuses it too)".into())
        );
    }
    // Ascending base timesteps, then base[:-1] ++ base[-2] ++ base[-1], reversed.
    let mut base = schedule::integer_timesteps(cfg.spacing()?, t_train, steps, cfg.steps_offset()?);
    base.reverse();
    let mut plms: Vec<i64> = base[..base.len() - 1].to_vec();
    if base.len() >= 2 {
        plms.push(base[base.len() - 2]);
    }
    plms.push(base[base.len() - 1]);
    plms.reverse();
    check_range(&plms, t_train)?;
    let delta = (t_train / steps) as i64;
    if plms.len() > 1 && plms[1] + delta >= t_train as i64 {
        return Err(Error::Invalid(format!(
            "timestep {} falls outside the {t_train} training timesteps",
            plms[1] + delta
        )));
    }
    let final_abar = if cfg.bool("set_alpha_to_one")? { 1.0 } else { ac[0] };
    let p = Pndm { steps, timesteps: plms.clone(), ac, delta, final_abar, prediction };
    Ok(SamplerPlan {
        kind: SamplerKind::Pndm,
        timesteps: plms.iter().map(|&t| t as f32).collect(),
        rows: p.rows(&plms),
        init_noise_sigma: 1.0,
        adds_noise: false,
        noising: vp_noising(&p.ac, &plms),
        pndm: Some(Box::new(p)),
    })
}
