//! Diffusers models: folder layouts, config.json, safetensors weights, and UNet2DModel on the graph.

pub mod arch;
pub mod blocks;
pub mod clip;
pub mod config;
pub mod tensors;
pub mod unet;
pub mod unet_condition;
pub mod vae;
pub mod weights;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use config::UNetConfig;
pub use tensors::HostTensor;
pub use weights::WeightBank;

use crate::gpu::Context;
use crate::graph::{Executable, TensorId};
use crate::{Error, Result};

/// Where a model's files are: a flat UNet folder (as on the hub) or a pipeline folder
/// (`save_pretrained` of a pipeline: `unet/` and `scheduler/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFolder {
    pub root: PathBuf,
    pub unet_config: PathBuf,
    pub unet_weights: PathBuf,
    pub scheduler_config: Option<PathBuf>,
}

const CONVERT_BIN: &str = "convert it once with: python -c \"import torch, safetensors.torch as st; \
st.save_file(torch.load('diffusion_pytorch_model.bin', map_location='cpu'), 'diffusion_pytorch_model.safetensors')\"";

impl ModelFolder {
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::Invalid(format!("model folder {} does not exist", dir.display())));
        }
        let (unet_dir, scheduler) = if dir.join("unet").join("config.json").is_file() {
            (dir.join("unet"), dir.join("scheduler").join("scheduler_config.json"))
        } else {
            (dir.to_path_buf(), dir.join("scheduler_config.json"))
        };
        if !unet_dir.join("config.json").is_file() {
            return Err(Error::Invalid(format!(
                "{}: no config.json (a diffusers UNet folder has config.json and diffusion_pytorch_model.safetensors, \
                 a pipeline folder has them under unet/)",
                dir.display()
            )));
        }
        Self::from_dirs(dir, &unet_dir, Some(&scheduler))
    }

    /// A folder whose UNet is in `unet_dir` and scheduler config (where it exists) at `scheduler`
    /// (a pipeline folder's components, as model_index.json names them).
    pub fn from_dirs(root: &Path, unet_dir: &Path, scheduler: Option<&Path>) -> Result<Self> {
        let (unet_config, unet_weights) = component_files(unet_dir)?;
        Ok(Self {
            root: root.to_path_buf(),
            unet_config,
            unet_weights,
            scheduler_config: scheduler.filter(|s| s.is_file()).map(Path::to_path_buf),
        })
    }
}

/// A diffusers model component's files: (config.json, its safetensors weights, the fp16 variant
/// where that is all there is).
pub fn component_files(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let config = dir.join("config.json");
    if !dir.is_dir() {
        return Err(Error::Invalid(format!("{}: no such component folder", dir.display())));
    }
    if !config.is_file() {
        return Err(Error::Invalid(format!("{}: no config.json", dir.display())));
    }
    let candidates = ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"];
    match candidates.iter().map(|n| dir.join(n)).find(|p| p.is_file()) {
        Some(p) => Ok((config, p)),
        None if dir.join("diffusion_pytorch_model.bin").is_file() => Err(Error::Invalid(format!(
            "{}: only a PyTorch .bin checkpoint is there; {CONVERT_BIN}",
            dir.display()
        ))),
        None => Err(Error::Invalid(format!("{}: no diffusion_pytorch_model.safetensors", dir.display()))),
    }
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.display().to_string(), source })
}

/// A UNet2DModel with its weights on the device.
pub struct UNet {
    pub config: UNetConfig,
    pub bank: WeightBank,
    /// Ops in one forward (graph nodes, batch independent).
    pub ops: usize,
}

/// A forward for a fixed batch: the executable and where its inputs and output live.
pub struct UNetExecutable {
    pub exe: Executable,
    /// The graph `exe` was lowered from (for `check` runs).
    pub graph: crate::graph::Graph,
    pub batch: usize,
    pub sample: TensorId,
    pub timesteps: TensorId,
    /// Class labels [batch] as f32, for a class-conditional model.
    pub class_labels: Option<TensorId>,
    /// Text states [batch, D, 1, T], for a text-conditioned model.
    pub text: Option<TensorId>,
    /// An inpainting UNet's further input channels [batch, E, H, W].
    pub extra: Option<TensorId>,
    pub output: TensorId,
}

impl UNetExecutable {
    pub fn class_labels_buffer(&self) -> Option<&wgpu::Buffer> {
        self.class_labels.map(|t| self.exe.buffer(t))
    }
    pub fn text_buffer(&self) -> Option<&wgpu::Buffer> {
        self.text.map(|t| self.exe.buffer(t))
    }
    pub fn extra_buffer(&self) -> Option<&wgpu::Buffer> {
        self.extra.map(|t| self.exe.buffer(t))
    }
    pub fn sample_buffer(&self) -> &wgpu::Buffer {
        self.exe.buffer(self.sample)
    }
    pub fn timesteps_buffer(&self) -> &wgpu::Buffer {
        self.exe.buffer(self.timesteps)
    }
    pub fn output_buffer(&self) -> &wgpu::Buffer {
        self.exe.buffer(self.output)
    }
}

impl UNet {
    /// Loads a model folder (flat or pipeline layout).
    pub fn load(ctx: &Context, folder: &ModelFolder) -> Result<Self> {
        let config =
            UNetConfig::parse(&read_text(&folder.unet_config)?, &folder.unet_config.display().to_string())?;
        let tensors = tensors::read_safetensors(&folder.unet_weights)?;
        Self::from_tensors(ctx, config, tensors, &folder.unet_weights.display().to_string())
    }

    /// Checks every tensor the architecture needs (names and shapes) and uploads it.
    pub fn from_tensors(
        ctx: &Context,
        config: UNetConfig,
        tensors: HashMap<String, HostTensor>,
        source: &str,
    ) -> Result<Self> {
        let mut bank = WeightBank::new(tensors, source);
        let ops = unet::build(ctx, &config, &mut bank, 1)?.graph.nodes.len();
        bank.release_host();
        Ok(Self { config, bank, ops })
    }

    /// An architecture with random weights (benchmarks).
    pub fn random(ctx: &Context, config: UNetConfig, seed: u64) -> Result<Self> {
        let mut bank = WeightBank::synthetic(seed);
        let ops = unet::build(ctx, &config, &mut bank, 1)?.graph.nodes.len();
        Ok(Self { config, bank, ops })
    }

    /// The graph for `batch` images, planned and lowered.
    pub fn executable(&mut self, ctx: &Context, batch: usize) -> Result<UNetExecutable> {
        let g = unet::build(ctx, &self.config, &mut self.bank, batch)?;
        let exe = Executable::new(ctx, &g.graph, &self.bank.buffers)?;
        Ok(UNetExecutable {
            exe,
            graph: g.graph,
            batch,
            sample: g.sample,
            timesteps: g.timesteps,
            class_labels: g.class_labels,
            text: None,
            extra: None,
            output: g.output,
        })
    }

    /// Planned (peak, naive) activation bytes for `batch`, without allocating.
    pub fn plan_bytes(&mut self, ctx: &Context, batch: usize) -> Result<(u64, u64)> {
        let g = unet::build(ctx, &self.config, &mut self.bank, batch)?;
        let plan = crate::graph::Plan::new(&g.graph);
        Ok((plan.peak_bytes, plan.naive_bytes))
    }

    /// The largest batch whose every tensor fits the device's buffer and binding limits, and a
    /// texel view (kernels read their operands as texels).
    pub fn max_batch(&mut self, ctx: &Context) -> Result<usize> {
        let g = unet::build(ctx, &self.config, &mut self.bank, 1)?;
        let per_image = g.graph.activations().map(|t| g.graph.bytes(t)).max().unwrap_or(1);
        let limit = ctx
            .limits
            .max_buffer_size
            .min(ctx.limits.max_storage_buffer_binding_size)
            .min(ctx.max_texel_bytes());
        let mut max = (limit / per_image.max(1)) as usize;
        // Attention launches one workgroup row (fused) or matmul layer (composed) per (image,
        // head), and that grid dimension does not spill: batch x heads stays within the limit.
        let heads = g.graph.nodes.iter().filter_map(|n| match n.op {
            crate::graph::Op::Attention(ref a) => Some(a.shape.heads),
            _ => None,
        });
        if let Some(heads) = heads.max() {
            max = max.min(ctx.limits.max_compute_workgroups_per_dimension as usize / heads);
        }
        if max == 0 {
            return Err(Error::Shape(format!(
                "one image needs a {per_image}-byte tensor, over this device's {limit}-byte buffer (or texture) limit"
            )));
        }
        Ok(max)
    }

    /// One forward on host data: sample [B, C, H, W] and one timestep per image. Batches over the
    /// device's limits run as micro-batches of the largest size that fits.
    pub fn forward(&mut self, ctx: &Context, sample: &[f32], timesteps: &[f32]) -> Result<Vec<f32>> {
        self.forward_micro(ctx, sample, timesteps, None, usize::MAX)
    }

    /// `forward` of a class-conditional model: one class label per image.
    pub fn forward_labelled(
        &mut self,
        ctx: &Context,
        sample: &[f32],
        timesteps: &[f32],
        labels: &[f32],
    ) -> Result<Vec<f32>> {
        self.forward_micro(ctx, sample, timesteps, Some(labels), usize::MAX)
    }

    /// Checks that `labels` suit the model: given exactly when it has a class embedding, one per
    /// image, each a row of its class table (diffusers raises the first two as errors).
    pub fn check_labels(&self, labels: Option<&[f32]>, batch: usize) -> Result<()> {
        match (self.config.class_embedding.is_some(), labels) {
            (true, None) => Err(Error::Invalid(
                "class_labels should be provided when doing class conditioning (this model has a class embedding)"
                    .into(),
            )),
            (false, Some(_)) => Err(Error::Invalid(
                "class labels were given, but this model has no class embedding".into(),
            )),
            (false, None) => Ok(()),
            (true, Some(l)) => {
                if l.len() != batch {
                    return Err(Error::Shape(format!("{} class labels for {batch} images", l.len())));
                }
                // A class table takes its rows; a "timestep" embedding any integer.
                let range = self.config.max_label().map(|m| 0.0..=m as f32);
                let bad = |v: f32| v.fract() != 0.0 || !v.is_finite() || range.as_ref().is_some_and(|r| !r.contains(&v));
                match (l.iter().find(|&&v| bad(v)), &range) {
                    (Some(v), Some(r)) => Err(Error::Invalid(format!(
                        "class label {v} is not a class of this model (0..={})",
                        r.end()
                    ))),
                    (Some(v), None) => Err(Error::Invalid(format!("class label {v} is not an integer"))),
                    (None, _) => Ok(()),
                }
            }
        }
    }

    /// `forward` with micro-batches of at most `max_micro` images (and class labels, one per
    /// image, for a class-conditional model).
    pub fn forward_micro(
        &mut self,
        ctx: &Context,
        sample: &[f32],
        timesteps: &[f32],
        labels: Option<&[f32]>,
        max_micro: usize,
    ) -> Result<Vec<f32>> {
        let batch = timesteps.len();
        let s = self.config.sample_size;
        let per_in = self.config.in_channels * s * s;
        let per_out = self.config.out_channels * s * s;
        if batch == 0 || sample.len() != batch * per_in {
            return Err(Error::Shape(format!(
                "sample has {} values; {batch} images of [{}, {s}, {s}] need {}",
                sample.len(),
                self.config.in_channels,
                batch * per_in
            )));
        }
        self.check_labels(labels, batch)?;
        let micro = batch.min(self.max_batch(ctx)?).min(max_micro.max(1));
        let unet = self.executable(ctx, micro)?;
        let mut out = Vec::with_capacity(batch * per_out);
        for start in (0..batch).step_by(micro) {
            let n = micro.min(batch - start);
            // A last, smaller micro-batch runs padded with copies of its first image.
            let mut xs = sample[start * per_in..(start + n) * per_in].to_vec();
            let mut ts = timesteps[start..start + n].to_vec();
            let mut ls = labels.map(|l| l[start..start + n].to_vec());
            for _ in n..micro {
                xs.extend_from_slice(&sample[start * per_in..(start + 1) * per_in]);
                ts.push(timesteps[start]);
                if let (Some(ls), Some(l)) = (ls.as_mut(), labels) {
                    ls.push(l[start]);
                }
            }
            ctx.queue.write_buffer(unet.sample_buffer(), 0, bytemuck::cast_slice(&xs));
            ctx.queue.write_buffer(unet.timesteps_buffer(), 0, bytemuck::cast_slice(&ts));
            if let (Some(buf), Some(ls)) = (unet.class_labels_buffer(), &ls) {
                ctx.queue.write_buffer(buf, 0, bytemuck::cast_slice(ls));
            }
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            unet.exe.record(&mut enc);
            ctx.queue.submit([enc.finish()]);
            let y = ctx.read_buffer(unet.output_buffer(), micro * per_out)?;
            out.extend_from_slice(&y[..n * per_out]);
        }
        Ok(out)
    }
}
