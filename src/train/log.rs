//! A run's JSON-lines log (`train_log.jsonl`: one line a step with step, loss, lr, grad_norm and
//! seconds) and its loss curve (`io::plot`), beside the checkpoints.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::io::plot;
use crate::train::StepLog;
use crate::{Error, Result};

pub struct RunLog {
    pub path: PathBuf,
    file: std::fs::File,
}

/// The lines of `path` whose step is at most `keep`.
fn lines_up_to(path: &Path, keep: u64) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else { return vec![] };
    text.lines()
        .filter(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(Value::as_u64))
                .is_some_and(|s| s <= keep)
        })
        .map(str::to_string)
        .collect()
}

/// (step, loss) of every line of a log (ours, or any with those two keys).
pub fn points(path: &Path) -> Vec<(f64, f64)> {
    lines_up_to(path, u64::MAX)
        .iter()
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            Some((v.get("step")?.as_f64()?, v.get("loss")?.as_f64()?))
        })
        .collect()
}

impl RunLog {
    /// Opens `path` for a run at step `first`: the lines of steps up to it are kept (a resumed
    /// run drops those a killed one wrote past its checkpoint).
    pub fn open(path: &Path, first: u64) -> Result<Self> {
        let kept = lines_up_to(path, first);
        let io = |source| Error::Io { path: path.display().to_string(), source };
        let mut file = std::fs::File::create(path).map_err(io)?;
        for l in &kept {
            writeln!(file, "{l}").map_err(io)?;
        }
        Ok(Self { path: path.to_path_buf(), file })
    }

    pub fn write(&mut self, l: &StepLog, seconds: f64) -> Result<()> {
        let line = serde_json::json!({
            "step": l.step, "loss": l.loss, "lr": l.lr, "grad_norm": l.grad_norm, "seconds": seconds,
        });
        writeln!(self.file, "{line}")
            .map_err(|source| Error::Io { path: self.path.display().to_string(), source })
    }

    pub fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|source| Error::Io { path: self.path.display().to_string(), source })
    }

    /// Draws this run's losses (red) and, when given, another run's (blue) into `png`.
    pub fn draw_curve(&self, png: &Path, compare: Option<&Path>) -> Result<()> {
        let (ours, theirs) = (points(&self.path), compare.map(points).unwrap_or_default());
        let mut series = vec![plot::Series { points: &ours, rgb: [200, 40, 40] }];
        if !theirs.is_empty() {
            series.push(plot::Series { points: &theirs, rgb: [40, 70, 200] });
        }
        plot::loss_curve(png, &series)
    }
}
