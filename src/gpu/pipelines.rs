//! Shader modules, bind group layouts and compute pipelines, each built once and cached.
//!
//! A pipeline is keyed by (shader file, entry point, override constants): kernels are specialised
//! with WGSL `override`s (tile sizes, fused epilogues) rather than by editing source text.

use std::collections::HashMap;
use std::sync::Mutex;

use super::context::Context;
use super::dispatch::{CopyOp, Cost, Dispatch};
use super::texels::{TexelCopy, TexelStaging};
use crate::{Error, Result};

/// One `.wgsl` file of `shaders/`, compiled into the binary.
#[derive(Debug)]
pub struct ShaderSource {
    pub name: &'static str,
    pub source: &'static str,
}

/// How a kernel sees one binding of group 0 (in binding order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Binding {
    /// `var<storage, read>`
    Read,
    /// `var<storage, read_write>`
    Write,
    /// `var<uniform>`
    Uniform,
    /// `texture_2d<f32>`: a buffer read as rgba32float texels (see `gpu::texels`); the dispatch
    /// copies the buffer into a staging texture first.
    Texels,
}

/// An entry point and the bindings it declares.
#[derive(Debug)]
pub struct KernelSpec {
    pub shader: &'static ShaderSource,
    pub entry: &'static str,
    pub bindings: &'static [Binding],
}

type PipelineKey = (&'static str, &'static str, Vec<(&'static str, u64)>);

#[derive(Default)]
pub struct PipelineCache {
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    layouts: Mutex<HashMap<Vec<Binding>, (wgpu::BindGroupLayout, wgpu::PipelineLayout)>>,
    pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl PipelineCache {
    /// Number of distinct pipelines built so far.
    pub fn len(&self) -> usize {
        lock(&self.pipelines).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn layout(
        &self,
        device: &wgpu::Device,
        bindings: &[Binding],
    ) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
        lock(&self.layouts)
            .entry(bindings.to_vec())
            .or_insert_with(|| {
                let entries: Vec<_> = bindings
                    .iter()
                    .enumerate()
                    .map(|(i, b)| wgpu::BindGroupLayoutEntry {
                        binding: i as u32,
                        visibility: wgpu::ShaderStages::COMPUTE,
                        ty: match b {
                            Binding::Texels => wgpu::BindingType::Texture {
                                sample_type: wgpu::TextureSampleType::Float { filterable: false },
                                view_dimension: wgpu::TextureViewDimension::D2,
                                multisampled: false,
                            },
                            _ => wgpu::BindingType::Buffer {
                                ty: match b {
                                    Binding::Read => wgpu::BufferBindingType::Storage { read_only: true },
                                    Binding::Write => wgpu::BufferBindingType::Storage { read_only: false },
                                    _ => wgpu::BufferBindingType::Uniform,
                                },
                                has_dynamic_offset: false,
                                min_binding_size: None,
                            },
                        },
                        count: None,
                    })
                    .collect();
                let bgl = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: None,
                    entries: &entries,
                });
                let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: None,
                    bind_group_layouts: &[Some(&bgl)],
                    immediate_size: 0,
                });
                (bgl, pl)
            })
            .clone()
    }

    /// The pipeline for `spec` with these override constants, built on first use.
    pub fn get(
        &self,
        device: &wgpu::Device,
        spec: &KernelSpec,
        overrides: &[(&'static str, f64)],
    ) -> (wgpu::ComputePipeline, wgpu::BindGroupLayout) {
        let (bgl, layout) = self.layout(device, spec.bindings);
        let key = (
            spec.shader.name,
            spec.entry,
            overrides.iter().map(|&(k, v)| (k, v.to_bits())).collect::<Vec<_>>(),
        );
        if let Some(p) = lock(&self.pipelines).get(&key) {
            return (p.clone(), bgl);
        }
        let module = lock(&self.modules)
            .entry(spec.shader.name)
            .or_insert_with(|| {
                device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(spec.shader.name),
                    source: wgpu::ShaderSource::Wgsl(spec.shader.source.into()),
                })
            })
            .clone();
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(spec.entry),
            layout: Some(&layout),
            module: &module,
            entry_point: Some(spec.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: overrides,
                // Kernels initialise the workgroup memory they read.
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        lock(&self.pipelines).insert(key, pipeline.clone());
        (pipeline, bgl)
    }
}

impl Context {
    /// Builds one launch: the cached pipeline, a bind group over `buffers` (in binding order) and
    /// the workgroup count. Fails with a clear error when a buffer exceeds a binding limit.
    pub fn dispatch(
        &self,
        spec: &KernelSpec,
        overrides: &[(&'static str, f64)],
        buffers: &[&wgpu::Buffer],
        workgroups: [u32; 3],
        cost: Cost,
    ) -> Result<Dispatch> {
        self.dispatch_texels(spec, overrides, buffers, &[], workgroups, cost)
    }

    /// Whether a buffer of `floats` values fits a texel view on this device.
    pub fn fits_texels(&self, floats: usize) -> bool {
        TexelStaging::rows(floats).next_power_of_two() <= self.limits.max_texture_dimension_2d
    }

    /// The largest buffer, in bytes, that fits a texel view on this device (staging textures have a
    /// power-of-two number of rows).
    pub fn max_texel_bytes(&self) -> u64 {
        let max_rows = self.limits.max_texture_dimension_2d.max(1);
        let rows = 1u64 << (31 - max_rows.leading_zeros());
        rows * crate::gpu::TEXELS_PER_ROW as u64 * 16
    }

    /// `dispatch` for kernels with `Binding::Texels` operands: `texel_floats[k]` is how many floats
    /// of the k-th such buffer the kernel reads; they are copied into staging textures before it runs.
    pub fn dispatch_texels(
        &self,
        spec: &KernelSpec,
        overrides: &[(&'static str, f64)],
        buffers: &[&wgpu::Buffer],
        texel_floats: &[usize],
        workgroups: [u32; 3],
        cost: Cost,
    ) -> Result<Dispatch> {
        let texel_bindings = spec.bindings.iter().filter(|&&b| b == Binding::Texels).count();
        if buffers.len() != spec.bindings.len() || texel_floats.len() != texel_bindings {
            return Err(Error::Gpu(format!(
                "{}: {} buffers and {} texel lengths for {} bindings ({texel_bindings} texel views)",
                spec.entry,
                buffers.len(),
                texel_floats.len(),
                spec.bindings.len()
            )));
        }
        let max_dim = self.limits.max_compute_workgroups_per_dimension;
        if workgroups.iter().any(|&g| g > max_dim) {
            return Err(Error::Shape(format!(
                "{}: {workgroups:?} workgroups exceed this device's {max_dim} per dimension; use a smaller batch",
                spec.entry
            )));
        }
        let mut copies = Vec::new();
        let mut views = Vec::new();
        for (b, kind) in buffers.iter().zip(spec.bindings) {
            let limit = match kind {
                Binding::Uniform => self.limits.max_uniform_buffer_binding_size,
                Binding::Texels => {
                    let floats = texel_floats[copies.len()];
                    if !b.usage().contains(wgpu::BufferUsages::COPY_SRC) {
                        return Err(Error::Gpu(format!(
                            "{}: a buffer read as texels needs COPY_SRC usage",
                            spec.entry
                        )));
                    }
                    if !self.fits_texels(floats) || b.size() < floats.div_ceil(4) as u64 * 16 {
                        return Err(Error::Shape(format!(
                            "{}: {floats} values do not fit a texel view on this device \
                             (texture height limit {}, buffer {} bytes); use a smaller batch",
                            spec.entry,
                            self.limits.max_texture_dimension_2d,
                            b.size()
                        )));
                    }
                    let texture = self.texels.texture(&self.device, copies.len(), TexelStaging::rows(floats));
                    views.push(texture.create_view(&Default::default()));
                    copies.push(CopyOp::Texels(TexelCopy {
                        buffer: (*b).clone(),
                        texture,
                        texels: floats.div_ceil(4) as u64,
                    }));
                    continue;
                }
                _ => self.limits.max_storage_buffer_binding_size,
            };
            if b.size() > limit {
                return Err(Error::Shape(format!(
                    "{}: a buffer of {} bytes exceeds this device's binding limit of {limit} bytes; use a smaller batch",
                    spec.entry,
                    b.size()
                )));
            }
        }
        let (pipeline, bgl) = self.pipelines.get(&self.device, spec, overrides);
        let mut views = views.iter();
        let entries: Vec<_> = buffers
            .iter()
            .zip(spec.bindings)
            .enumerate()
            .map(|(i, (b, kind))| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: match kind {
                    Binding::Texels => wgpu::BindingResource::TextureView(
                        views.next().expect("one view per texel binding"), // ok: built above
                    ),
                    _ => b.as_entire_binding(),
                },
            })
            .collect();
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(spec.entry),
            layout: &bgl,
            entries: &entries,
        });
        Ok(Dispatch { label: spec.entry, kernel: Some((pipeline, bind_group)), workgroups, cost, copies })
    }
}
