//! The device layer: adapter and device, buffers from a pool, cached pipelines, dispatch recording.

mod buffers;
mod context;
mod dispatch;
mod pipelines;
mod profiler;
mod texels;

pub use buffers::{BufferPool, PooledBuffer, Tensor};
pub use context::{list_adapters, AdapterSummary, BackendChoice, Context, ContextOptions};
pub use dispatch::{grid, record_all, CopyOp, Cost, Dispatch};
pub use pipelines::{Binding, KernelSpec, PipelineCache, ShaderSource};
pub use profiler::{median, Profiler};
pub use texels::{TexelCopy, TexelStaging, TEXELS_PER_ROW};
