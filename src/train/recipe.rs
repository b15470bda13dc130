//! A training run's recipe: everything that decides its numbers (the data aside), kept in the
//! checkpoint so `--resume` continues the same run, and written into the model card. Defaults
//! are diffusers' `train_unconditional.py`'s (../shared/TRAINING.md section 5), with the EMA on.

use serde_json::{json, Value};

use crate::kernels::diffusion::Prediction;
use crate::kernels::optim::{AdamW, StepRow};
use crate::train::schedule::{step_rows, EmaSchedule, LrKind, LrSchedule};
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct Recipe {
    /// Optimizer steps of the whole run (the LR schedule's length).
    pub steps: u64,
    pub batch: usize,
    /// The peak learning rate, its schedule (diffusers' get_scheduler) and warm-up steps; the
    /// schedule's length is `steps`.
    pub lr: f64,
    pub lr_kind: LrKind,
    pub warmup: u64,
    pub adamw: AdamW,
    /// None: no EMA (the raw weights are saved).
    pub ema: Option<EmaSchedule>,
    /// Global-norm clipping (clip_grad_norm_'s max_norm); None: off.
    pub grad_clip: Option<f32>,
    pub prediction: Prediction,
    pub seed: u64,
    pub random_flip: bool,
    /// A class-conditional model's labels swap for the null class with this probability
    /// (classifier-free guidance training); 0 for an unconditional model.
    pub class_dropout: f64,
    /// The class embedding's learning rate over the run's (a table new to a fine-tuned model
    /// learns faster than the trained weights it joins); 1 elsewhere.
    pub class_lr_scale: f64,
    /// The fixed shares each batch's gradient is summed in (`StepOptions::shares`): what lets
    /// any number of ranks that divides it give the bits of one process.
    pub grad_shares: usize,
}

/// Gradient shares a batch is summed in unless told: the most up to 4 that divide the batch, so
/// 1, 2 or 4 ranks can share a run of a batch of 16 and give one process's bits. More shares
/// are smaller micro-batches: on one process 4 cost 1.16x a step of one share, 8 cost 1.36x
/// (`bench --train`, fashion-mnist at batch 16, lavapipe); 8 ranks take `--grad-shards 8`.
pub fn default_grad_shares(batch: usize) -> usize {
    (1..=4).rev().find(|k| batch.is_multiple_of(*k)).unwrap_or(1)
}

impl Default for Recipe {
    fn default() -> Self {
        Self {
            steps: 10_000,
            batch: 16,
            lr: 1e-4,
            lr_kind: LrKind::Cosine,
            warmup: 500,
            adamw: AdamW { beta1: 0.95, beta2: 0.999, eps: 1e-8, weight_decay: 1e-6 },
            ema: Some(EmaSchedule {
                max_decay: 0.9999,
                min_decay: 0.0,
                update_after_step: 0,
                warmup: Some((1.0, 0.75)),
            }),
            grad_clip: Some(1.0),
            prediction: Prediction::Epsilon,
            seed: 0,
            random_flip: false,
            class_dropout: 0.0,
            class_lr_scale: 1.0,
            grad_shares: 1,
        }
    }
}

pub fn prediction_name(p: Prediction) -> &'static str {
    match p {
        Prediction::Epsilon => "epsilon",
        Prediction::Sample => "sample",
        Prediction::VPrediction => "v_prediction",
    }
}

pub fn parse_prediction(name: &str) -> Result<Prediction> {
    Ok(match name {
        "epsilon" => Prediction::Epsilon,
        "sample" => Prediction::Sample,
        "v_prediction" => Prediction::VPrediction,
        other => {
            return Err(Error::Invalid(format!(
                "unknown prediction type '{other}' (epsilon, v_prediction, sample)"
            )))
        }
    })
}

pub fn lr_kind_name(k: LrKind) -> &'static str {
    match k {
        LrKind::Constant => "constant",
        LrKind::ConstantWithWarmup => "constant_with_warmup",
        LrKind::Linear => "linear",
        LrKind::Cosine => "cosine",
    }
}

impl Recipe {
    /// The learning-rate schedule over the run.
    pub fn schedule(&self) -> LrSchedule {
        LrSchedule { kind: self.lr_kind, lr: self.lr, warmup: self.warmup, total: self.steps }
    }

    /// The optimizer's table: one row a step of the run.
    pub fn rows(&self) -> Vec<StepRow> {
        // Without EMA the rows' decay is unused.
        let ema = self.ema.unwrap_or(EmaSchedule {
            max_decay: 0.0,
            min_decay: 0.0,
            update_after_step: 0,
            warmup: None,
        });
        step_rows(&self.adamw, &self.schedule(), &ema, self.steps)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "steps": self.steps,
            "batch": self.batch,
            "lr": self.lr,
            "lr_schedule": lr_kind_name(self.lr_kind),
            "warmup": self.warmup,
            "adam_beta1": self.adamw.beta1,
            "adam_beta2": self.adamw.beta2,
            "adam_epsilon": self.adamw.eps,
            "weight_decay": self.adamw.weight_decay,
            "ema": self.ema.map(|e| json!({
                "max_decay": e.max_decay,
                "min_decay": e.min_decay,
                "update_after_step": e.update_after_step,
                "inv_gamma": e.warmup.map(|w| w.0),
                "power": e.warmup.map(|w| w.1),
            })),
            "grad_clip": self.grad_clip,
            "prediction_type": prediction_name(self.prediction),
            "seed": self.seed,
            "random_flip": self.random_flip,
            "class_dropout": self.class_dropout,
            "class_lr_scale": self.class_lr_scale,
            "grad_shares": self.grad_shares,
        })
    }

    pub fn from_json(v: &Value, source: &str) -> Result<Self> {
        let bad =
            |key: &str| Error::Invalid(format!("{source}: the recipe's '{key}' is missing or malformed"));
        let f = |key: &str| v.get(key).and_then(Value::as_f64).ok_or_else(|| bad(key));
        let u = |key: &str| v.get(key).and_then(Value::as_u64).ok_or_else(|| bad(key));
        let s = |key: &str| v.get(key).and_then(Value::as_str).ok_or_else(|| bad(key));
        let steps = u("steps")?;
        let ema = match v.get("ema") {
            Some(Value::Null) | None => None,
            Some(e) => {
                let ef = |key: &str| e.get(key).and_then(Value::as_f64).ok_or_else(|| bad(key));
                let warmup = match (
                    e.get("inv_gamma").and_then(Value::as_f64),
                    e.get("power").and_then(Value::as_f64),
                ) {
                    (Some(g), Some(p)) => Some((g, p)),
                    _ => None,
                };
                Some(EmaSchedule {
                    max_decay: ef("max_decay")?,
                    min_decay: ef("min_decay")?,
                    update_after_step: e
                        .get("update_after_step")
                        .and_then(Value::as_u64)
                        .ok_or_else(|| bad("update_after_step"))?,
                    warmup,
                })
            }
        };
        Ok(Self {
            steps,
            batch: u("batch")? as usize,
            lr: f("lr")?,
            lr_kind: LrKind::parse(s("lr_schedule")?)?,
            warmup: u("warmup")?,
            adamw: AdamW {
                beta1: f("adam_beta1")?,
                beta2: f("adam_beta2")?,
                eps: f("adam_epsilon")?,
                weight_decay: f("weight_decay")?,
            },
            ema,
            grad_clip: v.get("grad_clip").and_then(Value::as_f64).map(|c| c as f32),
            prediction: parse_prediction(s("prediction_type")?)?,
            seed: u("seed")?,
            random_flip: v.get("random_flip").and_then(Value::as_bool).ok_or_else(|| bad("random_flip"))?,
            // Runs saved before class conditioning have no dropout.
            class_dropout: v.get("class_dropout").and_then(Value::as_f64).unwrap_or(0.0),
            class_lr_scale: v.get("class_lr_scale").and_then(Value::as_f64).unwrap_or(1.0),
            // Runs saved before gradient shares summed the batch as one.
            grad_shares: v.get("grad_shares").and_then(Value::as_u64).unwrap_or(1) as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip() {
        let r = Recipe::default();
        assert_eq!(Recipe::from_json(&r.to_json(), "t").unwrap(), r);
        let no_ema = Recipe {
            ema: None,
            grad_clip: None,
            prediction: Prediction::VPrediction,
            class_dropout: 0.25,
            class_lr_scale: 30.0,
            grad_shares: 4,
            ..r
        };
        assert_eq!(Recipe::from_json(&no_ema.to_json(), "t").unwrap(), no_ema);
        assert!(Recipe::from_json(&json!({"steps": 3}), "t").is_err());
    }
}
