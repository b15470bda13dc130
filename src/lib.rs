//! wgpu-diffusion: denoising diffusion models on any GPU through wgpu and hand-written WGSL kernels.
//!
//! Layers, top to bottom (see DESIGN.md): `pipeline` (a diffusers folder's models and scheduler,
//! sample / img2img / inpaint) and `train` (training steps) on `diffusion` (sampling chains) on
//! `model` (diffusers folders, UNet2DModel) on `graph`
//! (static graph, buffer plan, executable) on `kernels` (one launcher + CPU reference per WGSL file)
//! on `gpu` (adapter, device, buffer pool, pipeline cache, dispatch recording).

pub mod diffusion;
pub mod error;
pub mod gpu;
pub mod graph;
pub mod io;
pub mod kernels;
pub mod model;
pub mod pipeline;
pub mod shaders;
pub mod train;

pub use error::{Error, Result};
