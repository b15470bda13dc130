//! Adapter selection and device creation.
//!
//! The device asks for the adapter's own limits (not wgpu's defaults) and every optional feature the
//! engine can use that the adapter has: timestamps for the profiler, f16 and subgroups for kernels.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::buffers::{BufferPool, Tensor};
use super::dispatch::{record_all, Dispatch};
use super::pipelines::PipelineCache;
use super::texels::TexelStaging;
use crate::{Error, Result};

/// Features used when present; none is required.
pub const OPTIONAL_FEATURES: wgpu::Features = wgpu::Features::TIMESTAMP_QUERY
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS)
    .union(wgpu::Features::SHADER_F16)
    .union(wgpu::Features::SUBGROUP);

const HOW_TO_GET_ONE: &str = "install a GPU driver with Vulkan, Metal or DX12 support; \
on Linux without a GPU, Mesa's software Vulkan driver works: `sudo apt-get install mesa-vulkan-drivers libvulkan1`";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    Vulkan,
    Metal,
    Dx12,
    Gl,
}

impl BackendChoice {
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "vulkan" | "vk" => Ok(Self::Vulkan),
            "metal" | "mtl" => Ok(Self::Metal),
            "dx12" | "d3d12" => Ok(Self::Dx12),
            "gl" | "gles" | "opengl" => Ok(Self::Gl),
            other => {
                Err(Error::Invalid(format!("unknown backend '{other}': expected vulkan, metal, dx12 or gl")))
            }
        }
    }

    fn backends(self) -> wgpu::Backends {
        match self {
            Self::Vulkan => wgpu::Backends::VULKAN,
            Self::Metal => wgpu::Backends::METAL,
            Self::Dx12 => wgpu::Backends::DX12,
            Self::Gl => wgpu::Backends::GL,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct ContextOptions {
    /// Only adapters of this backend; all backends when None.
    pub backend: Option<BackendChoice>,
    /// Index into the adapter list that `info` prints; the best adapter when None.
    pub adapter: Option<usize>,
    /// Without `adapter`: take the `local_rank`-th of the best adapters (the best kind on the
    /// best one's backend), counting round, so the ranks on one node take one GPU each.
    pub local_rank: usize,
}

/// What `info` prints about one adapter.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub index: usize,
    pub info: wgpu::AdapterInfo,
    pub features: wgpu::Features,
    pub limits: wgpu::Limits,
}

fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

fn backends_of(options: &ContextOptions) -> wgpu::Backends {
    options.backend.map_or(wgpu::Backends::all(), BackendChoice::backends)
}

/// Discrete GPUs first, software adapters last.
fn rank(device_type: wgpu::DeviceType) -> u32 {
    match device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// Every adapter of the requested backends, in a stable order (the order `--adapter N` counts in).
pub fn list_adapters(backend: Option<BackendChoice>) -> Vec<AdapterSummary> {
    let options = ContextOptions { backend, ..Default::default() };
    pollster::block_on(instance().enumerate_adapters(backends_of(&options)))
        .into_iter()
        .enumerate()
        .map(|(index, a)| AdapterSummary {
            index,
            info: a.get_info(),
            features: a.features(),
            limits: a.limits(),
        })
        .collect()
}

/// The device, its queue, and the caches every kernel launch goes through.
pub struct Context {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    /// Features enabled on the device (a subset of OPTIONAL_FEATURES).
    pub features: wgpu::Features,
    /// Limits enabled on the device: the adapter's own.
    pub limits: wgpu::Limits,
    pub pipelines: PipelineCache,
    pub pool: Arc<BufferPool>,
    /// Bound where a kernel's optional input is switched off, so one layout serves every variant.
    pub dummy: wgpu::Buffer,
    /// Staging textures for operands read as texels.
    pub texels: TexelStaging,
    /// Scratch storage buffers shared by every dispatch that needs one only while it runs (split-K
    /// partial sums of conv2d and matmul, the weight gradient's im2col), one per role and
    /// power-of-two size (or the largest binding): dispatches run in order, so reuse is safe, and
    /// one launch's buffers of different roles never alias.
    scratch: Mutex<HashMap<(&'static str, u64), wgpu::Buffer>>,
    /// Bytes of the buffers launchers own (`scratch_buffer`, `constant_buffer`), ever made.
    owned: std::sync::atomic::AtomicU64,
}

impl Context {
    pub fn new(options: &ContextOptions) -> Result<Self> {
        pollster::block_on(Self::new_async(options))
    }

    async fn new_async(options: &ContextOptions) -> Result<Self> {
        let instance = instance();
        let mut adapters = instance.enumerate_adapters(backends_of(options)).await;
        let which = match options.backend {
            Some(b) => format!("the {b:?} backend"),
            None => "any backend".to_string(),
        };
        if adapters.is_empty() {
            return Err(Error::NoAdapter(format!("none found on {which}; {HOW_TO_GET_ONE}")));
        }
        let adapter = match options.adapter {
            Some(i) if i < adapters.len() => adapters.swap_remove(i),
            Some(i) => {
                return Err(Error::NoAdapter(format!(
                    "--adapter {i} asked for, but {which} offers only {} adapter(s), numbered from 0 (see `info`)",
                    adapters.len()
                )))
            }
            None => {
                let best = (0..adapters.len())
                    .min_by_key(|&i| rank(adapters[i].get_info().device_type))
                    .expect("non-empty"); // ok: checked above
                let b = adapters[best].get_info();
                // The same GPU can show on two backends: count on the best one's only.
                let peers: Vec<usize> = (0..adapters.len())
                    .filter(|&i| {
                        let a = adapters[i].get_info();
                        a.backend == b.backend && rank(a.device_type) == rank(b.device_type)
                    })
                    .collect();
                adapters.swap_remove(peers[options.local_rank % peers.len()])
            }
        };
        let info = adapter.get_info();
        let features = adapter.features() & OPTIONAL_FEATURES;
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("wgpu-diffusion"),
                required_features: features,
                required_limits: limits.clone(),
                memory_hints: wgpu::MemoryHints::Performance,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Gpu(format!("adapter '{}' refused a device: {e}", info.name)))?;
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dummy"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::UNIFORM,
            mapped_at_creation: false,
        });
        Ok(Self {
            pool: Arc::new(BufferPool::new(device.clone())),
            pipelines: PipelineCache::default(),
            device,
            queue,
            info,
            features,
            limits,
            dummy,
            texels: TexelStaging::default(),
            scratch: Mutex::new(HashMap::new()),
            owned: Default::default(),
        })
    }

    /// The most bytes one storage binding (and so one scratch buffer) can hold on this device.
    pub fn max_binding_bytes(&self) -> u64 {
        // Whole f32s: a storage binding's size is a multiple of 4.
        self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size) & !3
    }

    /// A shared scratch buffer for `role` of at least `floats` f32 (see `scratch`); the caller
    /// checks that they fit `max_binding_bytes`. Rounded up to a power of two, but never past that
    /// limit (the whole buffer is bound). Readable as texels.
    pub fn shared_scratch(&self, role: &'static str, floats: usize) -> wgpu::Buffer {
        let bytes = self.shared_scratch_bytes(floats);
        let mut scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        scratch
            .entry((role, bytes))
            .or_insert_with(|| {
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(role),
                    size: bytes,
                    // COPY_DST: some roles are filled by copies (a strided input gradient's
                    // phase weights).
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })
            .clone()
    }

    /// The size `shared_scratch` gives a buffer of `floats` f32: memory plans add it before any
    /// buffer is made.
    pub fn shared_scratch_bytes(&self, floats: usize) -> u64 {
        (4 * floats as u64).next_power_of_two().max(256).min(self.max_binding_bytes())
    }

    /// Bytes of every buffer a launcher has made its own so far (`scratch_buffer`,
    /// `constant_buffer`): what a lowering adds to its plan, read before and after.
    pub fn owned_bytes(&self) -> u64 {
        self.owned.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes held by shared scratch buffers.
    pub fn scratch_bytes(&self) -> u64 {
        self.scratch.lock().unwrap_or_else(|p| p.into_inner()).keys().map(|&(_, b)| b).sum()
    }

    pub fn has(&self, feature: wgpu::Features) -> bool {
        self.features.contains(feature)
    }

    /// True on a CPU driver such as lavapipe, where kernels prefer other tile shapes.
    pub fn is_cpu(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// A tensor on the device holding `data`.
    pub fn upload(&self, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        let t = self.zeros(shape)?;
        if t.numel() != data.len() {
            crate::bail_shape!("upload: {} values for shape {shape:?}", data.len());
        }
        self.queue.write_buffer(&t.buffer, 0, bytemuck::cast_slice(data));
        Ok(t)
    }

    /// A tensor of `u32` values (timestep indices and the like), same pool as f32 tensors.
    pub fn upload_u32(&self, data: &[u32], shape: &[usize]) -> Result<Tensor> {
        let t = self.zeros(shape)?;
        if t.numel() != data.len() {
            crate::bail_shape!("upload: {} values for shape {shape:?}", data.len());
        }
        self.queue.write_buffer(&t.buffer, 0, bytemuck::cast_slice(data));
        Ok(t)
    }

    /// A tensor from the pool. Pooled buffers are reused, so contents are cleared here.
    pub fn zeros(&self, shape: &[usize]) -> Result<Tensor> {
        let t = self.empty(shape)?;
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.clear_buffer(&t.buffer, 0, None);
        self.queue.submit([enc.finish()]);
        Ok(t)
    }

    /// A tensor from the pool with whatever the buffer last held (for outputs that are overwritten).
    pub fn empty(&self, shape: &[usize]) -> Result<Tensor> {
        let numel: usize = shape.iter().product();
        let bytes = (numel.max(1) * 4) as u64;
        if bytes > self.limits.max_buffer_size {
            crate::bail_shape!(
                "a tensor of shape {shape:?} needs {bytes} bytes, over this device's max buffer size of {}",
                self.limits.max_buffer_size
            );
        }
        Ok(Tensor::new(self.pool.acquire(bytes), shape.to_vec()))
    }

    /// A storage buffer of `floats` f32 that belongs to the dispatches bound to it (their bind groups
    /// keep it alive), not to the pool: a kernel's own scratch, which a pooled tensor would hand
    /// back for reuse as soon as the launcher returned. Whole 16-byte texels, so it can be read as
    /// texels too.
    pub fn scratch_buffer(&self, label: &str, floats: usize) -> wgpu::Buffer {
        let size = (4 * floats as u64).div_ceil(16).max(1) * 16;
        self.owned.fetch_add(size, std::sync::atomic::Ordering::Relaxed);
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// `floats` copies of `value` (rounded up to whole texels), owned like `scratch_buffer`: a
    /// constant column for a matmul that sums, a per-column scale.
    pub fn constant_buffer(&self, label: &str, floats: usize, value: f32) -> wgpu::Buffer {
        use wgpu::util::DeviceExt;
        self.owned.fetch_add(16 * floats.max(1).div_ceil(4) as u64, std::sync::atomic::Ordering::Relaxed);
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::cast_slice(&vec![value; floats.max(1).div_ceil(4) * 4]),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        })
    }

    /// A uniform buffer holding one parameter block.
    pub fn uniform<T: bytemuck::Pod>(&self, value: &T) -> wgpu::Buffer {
        use wgpu::util::DeviceExt;
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: bytemuck::bytes_of(value),
            usage: wgpu::BufferUsages::UNIFORM,
        })
    }

    /// Records the dispatches into one compute pass and submits them (no wait).
    pub fn run(&self, dispatches: &[Dispatch]) {
        let mut enc = self.device.create_command_encoder(&Default::default());
        {
            record_all(&mut enc, dispatches);
        }
        self.queue.submit([enc.finish()]);
    }

    /// Reads a whole tensor back (waits for the device).
    pub fn read(&self, t: &Tensor) -> Result<Vec<f32>> {
        let bytes = self.read_bytes(&t.buffer, (t.numel() * 4) as u64)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Reads the first `len` f32 values of any buffer (waits for the device).
    pub fn read_buffer(&self, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
        let bytes = self.read_bytes(buffer, (len * 4) as u64)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    pub fn read_u32(&self, t: &Tensor) -> Result<Vec<u32>> {
        let bytes = self.read_bytes(&t.buffer, (t.numel() * 4) as u64)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// The first `size` bytes of any buffer with COPY_SRC usage (waits for the device).
    pub fn read_raw(&self, buffer: &wgpu::Buffer, size: u64) -> Result<Vec<u8>> {
        self.read_bytes(buffer, size)
    }

    fn read_bytes(&self, buffer: &wgpu::Buffer, size: u64) -> Result<Vec<u8>> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buffer, 0, &staging, 0, size);
        self.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|_| Error::Gpu("read-back was never answered".into()))?
            .map_err(|e| Error::Gpu(format!("read-back failed: {e}")))?;
        let out = staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("read-back mapping failed: {e}")))?
            .to_vec();
        staging.unmap();
        Ok(out)
    }

    /// Blocks until all submitted work is done.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Gpu(format!("device poll failed: {e}")))
    }
}
