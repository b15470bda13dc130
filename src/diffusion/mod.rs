//! Diffusion: noise schedules, the samplers as coefficient tables, and the reverse chain on the device.

pub mod chain;
pub mod denoiser;
pub mod repaint;
pub mod samplers;
pub mod schedule;
pub mod shard;

pub use chain::{
    check_first_step, sample, sample_then, AfterChain, ChainInput, Conditioning, Guidance, Img2ImgStart,
    LatentMask, ReadBack, TextInput,
};
pub use denoiser::{Denoiser, TextDenoiser};
pub use samplers::{Img2ImgPlan, SamplerKind, SamplerPlan, SchedulerConfig};
pub use shard::Shard;
