//! Device buffers from a pool, and the tensor type that owns one.
//!
//! Buffers are kept by exact (256-byte rounded) size and handed out again when a tensor is dropped,
//! so repeated eager launches (tests, the bench harness) do not allocate each time.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

pub struct BufferPool {
    device: wgpu::Device,
    free: Mutex<HashMap<u64, Vec<wgpu::Buffer>>>,
}

impl BufferPool {
    pub fn new(device: wgpu::Device) -> Self {
        Self { device, free: Mutex::new(HashMap::new()) }
    }

    fn bucket(bytes: u64) -> u64 {
        bytes.max(16).div_ceil(256) * 256
    }

    /// A storage buffer of at least `bytes`, reused from the pool when one is free.
    pub fn acquire(self: &Arc<Self>, bytes: u64) -> PooledBuffer {
        let size = Self::bucket(bytes);
        let reused = self.free.lock().ok().and_then(|mut f| f.get_mut(&size).and_then(Vec::pop));
        let buffer = reused.unwrap_or_else(|| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("tensor"),
                size,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        PooledBuffer { buffer: Some(buffer), pool: Arc::clone(self) }
    }

    /// Bytes held by free buffers (for `info` and tests of reuse).
    pub fn free_bytes(&self) -> u64 {
        self.free.lock().map(|f| f.iter().map(|(size, v)| size * v.len() as u64).sum()).unwrap_or(0)
    }
}

/// A buffer that goes back to its pool when dropped.
pub struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    pool: Arc<BufferPool>,
}

impl Deref for PooledBuffer {
    type Target = wgpu::Buffer;
    fn deref(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop") // ok: only taken in drop
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let (Some(buffer), Ok(mut free)) = (self.buffer.take(), self.pool.free.lock()) {
            free.entry(buffer.size()).or_default().push(buffer);
        }
    }
}

/// A dense f32 (or u32) tensor on the device, row-major (NCHW for images).
pub struct Tensor {
    pub buffer: PooledBuffer,
    pub shape: Vec<usize>,
}

impl Tensor {
    pub fn new(buffer: PooledBuffer, shape: Vec<usize>) -> Self {
        Self { buffer, shape }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}
