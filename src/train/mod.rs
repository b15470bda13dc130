//! Training on the device. A step is three dispatch lists recorded back to back, many steps a
//! submission, all keyed by the optimizer's step counter on the device:
//! - `batch`: the batch made on the device (x0 gathered by the index ring that `order` fills,
//!   Philox t and noise);
//! - `step`: its gradients, through the planned forward + backward graph;
//! - `optimizer`: clipping, AdamW and the EMA, from the table `schedule` makes.
//!
//! `trainer` runs them and reads the logs back late (`log` writes them); `recipe` is what decides
//! a run's numbers;
//! `init` makes a new model's weights; `checkpoint` writes and reads diffusers folders.

pub mod batch;
pub mod checkpoint;
pub mod classes;
pub mod init;
pub mod log;
pub mod optimizer;
pub mod order;
pub mod ranks;
pub mod recipe;
pub mod schedule;
pub mod step;
pub mod trainer;

pub use optimizer::{Held, Optimizer};
pub use recipe::Recipe;
pub use step::{ParamGradient, StepOptions, TrainGraph, TrainStep};
pub use trainer::{StepLog, Trainer};
