//! Diffusion: noise schedules, the samplers as coefficient tables, and the reverse chain on the device.

pub mod chain;
pub mod samplers;
pub mod schedule;

pub use chain::{sample, ChainInput};
pub use samplers::{SamplerKind, SamplerPlan, SchedulerConfig};
