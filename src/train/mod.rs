//! Training on the device: a step's gradients (`step`), from a batch already on the device to a
//! gradient buffer per weight, through the planned forward + backward graph; the learning-rate
//! and EMA schedules that make the optimizer's table (`schedule`).

pub mod batch;
pub mod checkpoint;
pub mod init;
pub mod optimizer;
pub mod order;
pub mod recipe;
pub mod schedule;
pub mod step;
pub mod trainer;

pub use optimizer::{Held, Optimizer};
pub use recipe::Recipe;
pub use step::{ParamGradient, StepOptions, TrainGraph, TrainStep};
pub use trainer::{StepLog, Trainer};
