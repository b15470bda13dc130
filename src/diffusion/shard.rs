//! Splitting a batch over processes: shard I of N makes a contiguous range of the batch's images
//! (the last shard shorter), each keyed by its global index, so separate processes (a Slurm job
//! array, a Kubernetes Indexed Job) together make exactly the images one process makes.

use std::ops::Range;

use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// From 0.
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The whole batch in one process.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// `I/N`, I counting from 0.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            Error::Invalid(format!("--shard {text}: expected I/N with 0 <= I < N (I counts from 0), or auto"))
        };
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        Self::new(index, count).map_err(|_| bad())
    }

    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 || index >= count {
            return Err(Error::Invalid(format!(
                "shard {index} of {count}: the index must be below the count"
            )));
        }
        Ok(Self { index, count })
    }

    /// The shard the scheduler that launched this process assigns, read through `var` (the
    /// environment, in `sample`): a Slurm job array (SLURM_ARRAY_TASK_ID minus
    /// SLURM_ARRAY_TASK_MIN, of SLURM_ARRAY_TASK_COUNT), else a Kubernetes Indexed Job
    /// (JOB_COMPLETION_INDEX, of `count`, which its environment does not hold).
    pub fn from_scheduler(var: impl Fn(&str) -> Option<String>, count: Option<usize>) -> Result<Self> {
        let num =
            |name: &str| -> Result<Option<usize>> {
                match var(name) {
                    None => Ok(None),
                    Some(v) => v.trim().parse().map(Some).map_err(|_| {
                        Error::Invalid(format!("--shard auto: {name}={v} is not a whole number"))
                    }),
                }
            };
        if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
            let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let tasks = num("SLURM_ARRAY_TASK_COUNT")?.ok_or_else(|| {
                Error::Invalid(
                    "--shard auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not".into(),
                )
            })?;
            if id < min {
                return Err(Error::Invalid(format!(
                    "--shard auto: SLURM_ARRAY_TASK_ID={id} is below SLURM_ARRAY_TASK_MIN={min}"
                )));
            }
            return Self::new(id - min, tasks).map_err(|e| {
                Error::Invalid(format!("--shard auto (Slurm: task {id}, min {min}, count {tasks}): {e}"))
            });
        }
        if let Some(index) = num("JOB_COMPLETION_INDEX")? {
            let count = count.ok_or_else(|| {
                Error::Invalid(
                    "--shard auto: JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job); give the job's completions as --shard-count N".into(),
                )
            })?;
            return Self::new(index, count).map_err(|e| {
                Error::Invalid(format!("--shard auto (Kubernetes index {index}, count {count}): {e}"))
            });
        }
        Err(Error::Invalid(
            "--shard auto: neither a Slurm job array (SLURM_ARRAY_TASK_ID) nor a Kubernetes Indexed Job (JOB_COMPLETION_INDEX) launched this process; give --shard I/N".into(),
        ))
    }

    /// This shard's images of a batch of `batch`: ceil(batch / count) each, the last ones shorter
    /// (or empty where there are more shards than that leaves images for).
    pub fn range(&self, batch: usize) -> Range<usize> {
        let per = batch.div_ceil(self.count);
        let start = (self.index * per).min(batch);
        start..(start + per).min(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_the_batch_once_in_order() {
        for batch in [1, 7, 10, 16, 33, 50_000] {
            for count in [1, 2, 3, 4, 7, 16] {
                let ranges: Vec<_> = (0..count).map(|i| Shard::new(i, count).unwrap().range(batch)).collect();
                let all: Vec<usize> = ranges.iter().flat_map(|r| r.clone()).collect();
                assert_eq!(all, (0..batch).collect::<Vec<_>>(), "{batch} over {count}");
                assert!(ranges.windows(2).all(|w| w[0].len() >= w[1].len()), "the last shorter");
            }
        }
        assert_eq!(Shard::new(2, 3).unwrap().range(10), 8..10);
    }

    #[test]
    fn parse_and_refuse() {
        assert_eq!(Shard::parse("2/3").unwrap(), Shard { index: 2, count: 3 });
        for bad in ["3/3", "1", "a/3", "0/0", "-1/2"] {
            assert!(Shard::parse(bad).unwrap_err().to_string().contains("I/N"), "{bad}");
        }
    }

    #[test]
    fn from_scheduler_reads_slurm_and_kubernetes() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "12"),
            ("SLURM_ARRAY_TASK_MIN", "10"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]);
        assert_eq!(Shard::from_scheduler(slurm, None).unwrap(), Shard { index: 2, count: 4 });
        let k8s = env(&[("JOB_COMPLETION_INDEX", "3")]);
        assert_eq!(Shard::from_scheduler(k8s, Some(5)).unwrap(), Shard { index: 3, count: 5 });
        assert!(Shard::from_scheduler(k8s, None).unwrap_err().to_string().contains("--shard-count"));
        let neither = Shard::from_scheduler(env(&[]), Some(5)).unwrap_err().to_string();
        assert!(neither.contains("neither a Slurm job array"), "{neither}");
        let past = env(&[("SLURM_ARRAY_TASK_ID", "9"), ("SLURM_ARRAY_TASK_COUNT", "4")]);
        assert!(Shard::from_scheduler(past, None).is_err());
    }
}
