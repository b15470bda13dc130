//! Noise schedules as diffusers computes them: betas in f32, alphas_cumprod accumulated in f64 and
//! rounded to f32 (as torch.cumprod does on the CPU), and the timestep spacings.

use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BetaSchedule {
    Linear,
    ScaledLinear,
    SquaredCosCapV2,
}

impl BetaSchedule {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "linear" => Ok(Self::Linear),
            "scaled_linear" => Ok(Self::ScaledLinear),
            "squaredcos_cap_v2" => Ok(Self::SquaredCosCapV2),
            other => Err(Error::Invalid(format!(
                "beta_schedule \"{other}\" is not supported (linear, scaled_linear, squaredcos_cap_v2)"
            ))),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spacing {
    Leading,
    Trailing,
    Linspace,
}

impl Spacing {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "leading" => Ok(Self::Leading),
            "trailing" => Ok(Self::Trailing),
            "linspace" => Ok(Self::Linspace),
            other => Err(Error::Invalid(format!(
                "timestep_spacing \"{other}\" is not supported (leading, trailing, linspace)"
            ))),
        }
    }
}

/// torch.linspace(start, end, n) in f32 (computed in f64, rounded once).
pub fn linspace_f32(start: f64, end: f64, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start as f32];
    }
    (0..n).map(|i| (start + (end - start) * i as f64 / (n - 1) as f64) as f32).collect()
}

/// The betas of a schedule over `t` training steps, as f32 values.
pub fn betas(schedule: BetaSchedule, beta_start: f64, beta_end: f64, t: usize) -> Vec<f32> {
    match schedule {
        BetaSchedule::Linear => linspace_f32(beta_start, beta_end, t),
        BetaSchedule::ScaledLinear => {
            linspace_f32(beta_start.sqrt(), beta_end.sqrt(), t).iter().map(|b| b * b).collect()
        }
        BetaSchedule::SquaredCosCapV2 => {
            let abar = |x: f64| ((x + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
            (0..t)
                .map(|i| {
                    let (t1, t2) = (i as f64 / t as f64, (i + 1) as f64 / t as f64);
                    (1.0 - abar(t2) / abar(t1)).min(0.999) as f32
                })
                .collect()
        }
    }
}

/// cumprod(1 - betas): f32 factors multiplied in f64, each prefix rounded to f32.
pub fn alphas_cumprod(betas: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    betas
        .iter()
        .map(|&b| {
            acc *= (1.0f32 - b) as f64;
            acc as f32
        })
        .collect()
}

/// Integer timesteps for `n` inference steps over `t` training steps (DDPM / DDIM rules).
pub fn integer_timesteps(spacing: Spacing, t: usize, n: usize, steps_offset: usize) -> Vec<i64> {
    match spacing {
        Spacing::Linspace => {
            let mut ts: Vec<i64> = (0..n)
                .map(|i| if n == 1 { 0.0 } else { (t - 1) as f64 * i as f64 / (n - 1) as f64 })
                .map(|v| round_half_even(v) as i64)
                .collect();
            ts.reverse();
            ts
        }
        Spacing::Leading => {
            let ratio = t / n;
            (0..n).rev().map(|i| (i * ratio + steps_offset) as i64).collect()
        }
        Spacing::Trailing => {
            let ratio = t as f64 / n as f64;
            arange_desc(t as f64, ratio).into_iter().map(|v| round_half_even(v) as i64 - 1).collect()
        }
    }
}

/// np.arange(start, 0, -step): start, start - step, ... while > 0.
pub fn arange_desc(start: f64, step: f64) -> Vec<f64> {
    let count = (start / step).ceil() as usize;
    (0..count).map(|i| start - i as f64 * step).collect()
}

/// numpy's round: halves to even.
pub fn round_half_even(v: f64) -> f64 {
    let r = v.round();
    if (v - v.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - v.signum()
    } else {
        r
    }
}

/// np.interp(x, arange(len), ys) in f64.
pub fn interp(x: f64, ys: &[f64]) -> f64 {
    if x <= 0.0 {
        return ys[0];
    }
    let last = ys.len() - 1;
    if x >= last as f64 {
        return ys[last];
    }
    let i = x.floor() as usize;
    let frac = x - i as f64;
    ys[i] + (ys[i + 1] - ys[i]) * frac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacings_match_diffusers_examples() {
        // DDIMScheduler(1000).set_timesteps(10) with the three spacings.
        assert_eq!(
            integer_timesteps(Spacing::Leading, 1000, 10, 0),
            vec![900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
        );
        assert_eq!(integer_timesteps(Spacing::Leading, 1000, 10, 1)[9], 1);
        assert_eq!(
            integer_timesteps(Spacing::Trailing, 1000, 10, 0),
            vec![999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
        );
        assert_eq!(
            integer_timesteps(Spacing::Linspace, 1000, 10, 0),
            vec![999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
        );
    }

    #[test]
    fn numpy_rounding() {
        assert_eq!(round_half_even(0.5), 0.0);
        assert_eq!(round_half_even(1.5), 2.0);
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(2.4), 2.0);
        assert_eq!(round_half_even(-0.5), -0.0);
    }
}
