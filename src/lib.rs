//! wgpu-diffusion: denoising diffusion models on any GPU through wgpu and hand-written WGSL kernels.
//!
//! Layers, top to bottom (see DESIGN.md): `kernels` (one launcher + CPU reference per WGSL file)
//! on `gpu` (adapter, device, buffer pool, pipeline cache, dispatch recording).

pub mod error;
pub mod gpu;
pub mod kernels;
pub mod shaders;

pub use error::{Error, Result};
