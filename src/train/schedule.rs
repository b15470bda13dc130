//! The per-step scalars of training, on the host in f64 as diffusers and PyTorch compute them
//! (../shared/TRAINING.md sections 3 and 4): the learning rate of diffusers' `get_scheduler`
//! (LambdaLR, which steps once at construction, so optimizer step k uses lambda(k - 1)) and the
//! decay of diffusers' `EMAModel`. They become the optimizer's table rows (`kernels::optim`).

use crate::kernels::optim::{AdamW, StepRow};
use crate::{Error, Result};

/// diffusers' `get_scheduler` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LrKind {
    Constant,
    ConstantWithWarmup,
    Linear,
    Cosine,
}

impl LrKind {
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "constant" => Self::Constant,
            "constant_with_warmup" => Self::ConstantWithWarmup,
            "linear" => Self::Linear,
            "cosine" => Self::Cosine,
            other => {
                return Err(Error::Invalid(format!(
                "unknown learning-rate schedule '{other}' (constant, constant_with_warmup, linear, cosine)"
            )))
            }
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    pub kind: LrKind,
    pub lr: f64,
    pub warmup: u64,
    pub total: u64,
}

impl LrSchedule {
    /// LambdaLR's factor after `s` scheduler steps (diffusers/optimization.py). Constant ignores
    /// the warm-up, as diffusers' does; cosine is half a cycle and rises again past `total`.
    pub fn lambda(&self, s: u64) -> f64 {
        let (s, w, t) = (s as f64, self.warmup as f64, self.total as f64);
        let warming = self.kind != LrKind::Constant && s < w;
        if warming {
            return s / w.max(1.0);
        }
        match self.kind {
            LrKind::Constant | LrKind::ConstantWithWarmup => 1.0,
            LrKind::Linear => ((t - s) / (t - w).max(1.0)).max(0.0),
            LrKind::Cosine => {
                let q = (s - w) / (t - w).max(1.0);
                (0.5 * (1.0 + (std::f64::consts::PI * 2.0 * 0.5 * q).cos())).max(0.0)
            }
        }
    }

    /// The learning rate of optimizer step `k` (1-based).
    pub fn lr_at(&self, k: u64) -> f64 {
        self.lr * self.lambda(k.saturating_sub(1))
    }
}

/// diffusers' `EMAModel` decay schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EmaSchedule {
    pub max_decay: f64,
    pub min_decay: f64,
    pub update_after_step: u64,
    /// `use_ema_warmup` with (inv_gamma, power).
    pub warmup: Option<(f64, f64)>,
}

impl EmaSchedule {
    /// The decay of the EMA's `k`-th step (1-based: `optimization_step` after its increment).
    pub fn decay_at(&self, k: u64) -> f64 {
        let s = k as f64 - self.update_after_step as f64 - 1.0;
        if s <= 0.0 {
            return 0.0;
        }
        let d = match self.warmup {
            Some((inv_gamma, power)) => 1.0 - (1.0 + s / inv_gamma).powf(-power),
            None => (1.0 + s) / (10.0 + s),
        };
        d.min(self.max_decay).max(self.min_decay)
    }
}

/// The optimizer's table: one row per step 1..=steps.
pub fn step_rows(h: &AdamW, lr: &LrSchedule, ema: &EmaSchedule, steps: u64) -> Vec<StepRow> {
    (1..=steps).map(|k| StepRow::new(h, k, lr.lr_at(k), ema.decay_at(k))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_and_the_lambda_lr_offset() {
        // TRAINING.md: with W = 500, steps 1, 2, 501 get lr 0, 2e-7, 1e-4.
        let s = LrSchedule { kind: LrKind::Cosine, lr: 1e-4, warmup: 500, total: 10_000 };
        assert_eq!(s.lr_at(1), 0.0);
        assert!((s.lr_at(2) - 2e-7).abs() < 1e-18);
        assert!((s.lr_at(501) - 1e-4).abs() < 1e-18);
        // Cosine reaches 0 at the end, linear too; constant ignores the warm-up.
        assert!(s.lr_at(10_001).abs() < 1e-18);
        let linear = LrSchedule { kind: LrKind::Linear, ..s };
        assert!((linear.lr_at(5251) - 0.5e-4).abs() < 1e-15);
        let constant = LrSchedule { kind: LrKind::Constant, ..s };
        assert_eq!(constant.lr_at(1), 1e-4);
        assert_eq!(LrSchedule { kind: LrKind::ConstantWithWarmup, ..s }.lr_at(20_000), 1e-4);
        assert!(LrKind::parse("cosine_with_restarts").is_err());
    }

    #[test]
    fn ema_decay_as_diffusers() {
        // TRAINING.md: with power 3/4 the decays run 0, .4054, .5613, .6464, .7009.
        let e = EmaSchedule {
            max_decay: 0.9999,
            min_decay: 0.0,
            update_after_step: 0,
            warmup: Some((1.0, 0.75)),
        };
        let want = [0.0, 0.4054, 0.5613, 0.6464, 0.7009];
        for (k, w) in want.iter().enumerate() {
            assert!(
                (e.decay_at(k as u64 + 1) - w).abs() < 1e-4,
                "step {}: {}",
                k + 1,
                e.decay_at(k as u64 + 1)
            );
        }
        // Without warm-up: (1 + s) / (10 + s), capped.
        let plain = EmaSchedule { warmup: None, ..e };
        assert_eq!(plain.decay_at(1), 0.0);
        assert!((plain.decay_at(2) - 2.0 / 11.0).abs() < 1e-15);
        assert_eq!(plain.decay_at(10_000_000), 0.9999);
    }
}
