//! The model's weights: host tensors read from safetensors are checked against the shapes the
//! architecture needs (by name), converted to the layout each kernel wants and uploaded once.

use std::collections::HashMap;

use super::tensors::HostTensor;
use crate::gpu::Context;
use crate::graph::{ConvWeight, LinearWeight, NormWeight, WeightId};
use crate::kernels::conv2d;
use crate::{Error, Result};

/// diffusers' names for attention projections, and the legacy names older checkpoints use.
const LEGACY_ATTENTION: [(&str, &str); 4] =
    [(".to_q.", ".query."), (".to_k.", ".key."), (".to_v.", ".value."), (".to_out.0.", ".proj_attn.")];

/// How a weight buffer holds a file tensor, so that a gradient (or a trained weight) in the
/// buffer's layout can be written back as the file's tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum WeightLayout {
    /// As the file stores it.
    Plain { name: String, shape: Vec<usize> },
    /// A conv weight [cout, cin, k, k] (or a Linear [cout, cin] used as a 1x1 conv: `shape` says
    /// which) packed for the conv kernel (`conv2d::pack_weight`).
    Packed { name: String, shape: Vec<usize>, cout: usize, cin: usize, k: usize },
    /// Derived by the model, not a file tensor (the timestep embedding's frequencies).
    Constant,
    /// Rows `start..start + shape[0]` of a table too large for one binding (a text model's
    /// vocabulary): a part of a file tensor, never trained.
    Rows { name: String, shape: Vec<usize>, start: usize },
}

impl WeightLayout {
    /// The file tensor's name, and `data` (in this layout) as the file's tensor; None for a
    /// constant.
    pub fn to_file(&self, data: &[f32]) -> Result<Option<(String, HostTensor)>> {
        Ok(match self {
            WeightLayout::Plain { name, shape } => {
                let data = data[..shape.iter().product()].to_vec();
                Some((name.clone(), HostTensor { shape: shape.clone(), data }))
            }
            WeightLayout::Packed { name, shape, cout, cin, k } => {
                let data = conv2d::unpack_weight(data, *cout, *cin, *k, *k)?;
                Some((name.clone(), HostTensor { shape: shape.clone(), data }))
            }
            WeightLayout::Constant => None,
            WeightLayout::Rows { name, .. } => {
                return Err(Error::Invalid(format!("'{name}': a part of a table, not a file tensor")))
            }
        })
    }

    /// The inverse of `to_file`: a file tensor's values in this buffer layout (None for a
    /// constant); the shape must be the layout's.
    pub fn to_buffer(&self, t: &HostTensor) -> Result<Option<Vec<f32>>> {
        let (name, shape) = match self {
            WeightLayout::Plain { name, shape } | WeightLayout::Packed { name, shape, .. } => (name, shape),
            WeightLayout::Constant => return Ok(None),
            WeightLayout::Rows { name, .. } => {
                return Err(Error::Invalid(format!("'{name}': a part of a table, not a file tensor")))
            }
        };
        if &t.shape != shape {
            return Err(Error::Invalid(format!(
                "tensor '{name}' has shape {:?}, expected {shape:?}",
                t.shape
            )));
        }
        Ok(Some(match self {
            WeightLayout::Packed { cout, cin, k, .. } => conv2d::pack_weight(&t.data, *cout, *cin, *k, *k)?,
            _ => t.data.clone(),
        }))
    }

    /// The file tensor's name (None for a constant).
    pub fn name(&self) -> Option<&str> {
        match self {
            WeightLayout::Plain { name, .. } | WeightLayout::Packed { name, .. } => Some(name),
            WeightLayout::Constant | WeightLayout::Rows { .. } => None,
        }
    }
}

/// Rows of a table uploaded as one buffer (`WeightBank::table_rows`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableRows {
    pub weight: WeightId,
    pub start: usize,
    pub rows: usize,
}

pub struct WeightBank {
    host: HashMap<String, HostTensor>,
    /// Random weights for tensors the file does not have (named architectures, benchmarks).
    synthetic: Option<rand::rngs::StdRng>,
    source: String,
    /// Device buffers, indexed by WeightId.
    pub buffers: Vec<wgpu::Buffer>,
    /// How each buffer holds its tensor, indexed by WeightId.
    pub layouts: Vec<WeightLayout>,
    by_key: HashMap<String, WeightId>,
    /// Parameters (values of file tensors) used by the model.
    pub parameters: usize,
    /// File tensors used by the model.
    pub tensors_used: usize,
    /// A planning bank: every weight is counted, none is read or put on the device (`info`'s
    /// memory plan of a model too large to load first).
    planning: bool,
    /// Bytes uploaded since the queue last ran: each upload stages its bytes until a submission
    /// completes, so a large model flushes as it goes (see `UPLOAD_FLUSH_BYTES`).
    unflushed: u64,
}

/// Uploads staged before the queue is flushed. Without it a 3.3 GB UNet held a second copy of its
/// weights in staging memory until the first step, and on a CPU driver (device memory is host
/// memory) the process kept ~5 GB more than its plan.
const UPLOAD_FLUSH_BYTES: u64 = 256 << 20;

impl WeightBank {
    /// `source` names the weights file in errors.
    pub fn new(host: HashMap<String, HostTensor>, source: &str) -> Self {
        Self {
            host,
            synthetic: None,
            source: source.to_string(),
            buffers: Vec::new(),
            layouts: Vec::new(),
            by_key: HashMap::new(),
            parameters: 0,
            tensors_used: 0,
            planning: false,
            unflushed: 0,
        }
    }

    /// A bank that takes any tensor an architecture asks for without values or device memory:
    /// its graphs plan, its weights count (`parameters`), nothing runs.
    pub fn planning() -> Self {
        Self { planning: true, ..Self::new(HashMap::new(), "a memory plan") }
    }

    /// Bytes the weights take on the device (f32).
    pub fn weight_bytes(&self) -> u64 {
        4 * self.parameters as u64
    }

    /// A bank that makes up every tensor (uniform in +-1/sqrt(fan_in); norm scales 1): an
    /// architecture with random weights, for benchmarks.
    pub fn synthetic(seed: u64) -> Self {
        use rand::SeedableRng;
        Self {
            synthetic: Some(rand::rngs::StdRng::seed_from_u64(seed)),
            ..Self::new(HashMap::new(), "random weights")
        }
    }

    /// The values of tensor `name` with `shape`, from the file or made up by a synthetic bank.
    fn fetch(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        if self.planning {
            return Ok(vec![]);
        }
        if self.find(name).is_none() {
            if let Some(rng) = self.synthetic.as_mut() {
                use rand::Rng;
                let n: usize = shape.iter().product();
                if shape.len() == 1 && name.ends_with(".weight") {
                    return Ok(vec![1.0; n]); // a norm's scale
                }
                let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
                let b = 1.0 / (fan_in as f32).sqrt();
                return Ok((0..n).map(|_| rng.random_range(-b..b)).collect());
            }
        }
        Ok(self.tensor(name, shape)?.data.clone())
    }

    /// The file's tensor for a diffusers name, accepting the legacy attention names.
    fn find(&self, name: &str) -> Option<&HostTensor> {
        self.host.get(name).or_else(|| {
            LEGACY_ATTENTION
                .iter()
                .find(|(new, _)| name.contains(new))
                .and_then(|(new, old)| self.host.get(&name.replacen(new, old, 1)))
        })
    }

    /// The tensor `name` with exactly `shape` (a Linear weight stored as [out, in, 1, 1] is accepted).
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<&HostTensor> {
        let t = self
            .find(name)
            .ok_or_else(|| Error::Invalid(format!("{}: missing tensor '{name}'", self.source)))?;
        let squeezed: Vec<usize> = t.shape.iter().copied().filter(|&d| d != 1).collect();
        let wanted: Vec<usize> = shape.iter().copied().filter(|&d| d != 1).collect();
        let same = t.shape == shape || (t.shape.len() != shape.len() && squeezed == wanted);
        if !same {
            return Err(Error::Invalid(format!(
                "{}: tensor '{name}' has shape {:?}, expected {shape:?}",
                self.source, t.shape
            )));
        }
        Ok(t)
    }

    fn upload(
        &mut self,
        ctx: &Context,
        key: String,
        layout: WeightLayout,
        data: &[f32],
        params: usize,
    ) -> WeightId {
        if let Some(&id) = self.by_key.get(&key) {
            return id;
        }
        if self.planning {
            self.buffers.push(ctx.dummy.clone());
            self.layouts.push(layout);
            self.parameters += params;
            self.tensors_used += (params > 0) as usize;
            let id = self.buffers.len() - 1;
            self.by_key.insert(key, id);
            return id;
        }
        use wgpu::util::DeviceExt;
        // Whole 16-byte texels and COPY_SRC: kernels may read a weight as texels (gpu::texels).
        let mut padded = data.to_vec();
        padded.resize(data.len().max(1).div_ceil(4) * 4, 0.0);
        let buffer = ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(&key),
            contents: bytemuck::cast_slice(&padded),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        });
        self.unflushed += 4 * padded.len() as u64;
        if self.unflushed >= UPLOAD_FLUSH_BYTES {
            // The staged copies run and their staging is freed for the next ones to reuse. A
            // failed poll (a lost device) is reported by the first step's own wait.
            ctx.queue.submit([]);
            let _ = ctx.wait();
            self.unflushed = 0;
        }
        self.buffers.push(buffer);
        self.layouts.push(layout);
        self.parameters += params;
        self.tensors_used += (params > 0) as usize;
        let id = self.buffers.len() - 1;
        self.by_key.insert(key, id);
        id
    }

    fn plain(&mut self, ctx: &Context, name: &str, shape: &[usize]) -> Result<WeightId> {
        if let Some(&id) = self.by_key.get(name) {
            return Ok(id);
        }
        let data = self.fetch(name, shape)?;
        let n = shape.iter().product();
        let layout = WeightLayout::Plain { name: name.to_string(), shape: shape.to_vec() };
        Ok(self.upload(ctx, name.to_string(), layout, &data, n))
    }

    /// A conv weight in the conv kernel's layout (nothing, planning).
    fn pack(&self, data: &[f32], cout: usize, cin: usize, k: usize) -> Result<Vec<f32>> {
        if self.planning {
            return Ok(vec![]);
        }
        conv2d::pack_weight(data, cout, cin, k, k)
    }

    /// `{prefix}.weight` [cout, cin, k, k] packed for the conv kernel, and `{prefix}.bias` [cout].
    pub fn conv(
        &mut self,
        ctx: &Context,
        prefix: &str,
        cout: usize,
        cin: usize,
        k: usize,
    ) -> Result<ConvWeight> {
        let name = format!("{prefix}.weight");
        let key = format!("{name} (packed)");
        let weight = match self.by_key.get(&key) {
            Some(&id) => id,
            None => {
                let data = self.fetch(&name, &[cout, cin, k, k])?;
                let packed = self.pack(&data, cout, cin, k)?;
                let n = cout * cin * k * k;
                let layout = WeightLayout::Packed { name, shape: vec![cout, cin, k, k], cout, cin, k };
                self.upload(ctx, key, layout, &packed, n)
            }
        };
        let bias = Some(self.plain(ctx, &format!("{prefix}.bias"), &[cout])?);
        Ok(ConvWeight { weight, bias, cout, cin, k })
    }

    /// A Linear `{prefix}` [fout, fin] used as a 1x1 conv over an NCHW map (attention projections).
    pub fn linear_as_conv(
        &mut self,
        ctx: &Context,
        prefix: &str,
        fout: usize,
        fin: usize,
    ) -> Result<ConvWeight> {
        let w = self.linear_as_conv_no_bias(ctx, prefix, fout, fin)?;
        let bias = Some(self.plain(ctx, &format!("{prefix}.bias"), &[fout])?);
        Ok(ConvWeight { bias, ..w })
    }

    /// `linear_as_conv` for a Linear without a bias (a transformer block's q, k and v).
    pub fn linear_as_conv_no_bias(
        &mut self,
        ctx: &Context,
        prefix: &str,
        fout: usize,
        fin: usize,
    ) -> Result<ConvWeight> {
        let name = format!("{prefix}.weight");
        let key = format!("{name} (packed 1x1)");
        let weight = match self.by_key.get(&key) {
            Some(&id) => id,
            None => {
                let data = self.fetch(&name, &[fout, fin])?;
                let packed = self.pack(&data, fout, fin, 1)?;
                let n = fout * fin;
                let layout =
                    WeightLayout::Packed { name, shape: vec![fout, fin], cout: fout, cin: fin, k: 1 };
                self.upload(ctx, key, layout, &packed, n)
            }
        };
        Ok(ConvWeight { weight, bias: None, cout: fout, cin: fin, k: 1 })
    }

    /// A Linear `{prefix}` [fout, fin] with bias, as stored.
    pub fn linear(&mut self, ctx: &Context, prefix: &str, fout: usize, fin: usize) -> Result<LinearWeight> {
        let weight = self.plain(ctx, &format!("{prefix}.weight"), &[fout, fin])?;
        let bias = Some(self.plain(ctx, &format!("{prefix}.bias"), &[fout])?);
        Ok(LinearWeight { weight, bias, fout, fin })
    }

    /// An embedding table `name` [rows, dim], as stored.
    pub fn table(&mut self, ctx: &Context, name: &str, rows: usize, dim: usize) -> Result<WeightId> {
        self.plain(ctx, name, &[rows, dim])
    }

    /// An embedding table `name` [rows, dim] in row ranges of at most `max_bytes` each (one
    /// range where it fits): CLIP's 49408-token vocabulary at SD's widths is over many devices'
    /// largest binding.
    pub fn table_rows(
        &mut self,
        ctx: &Context,
        name: &str,
        rows: usize,
        dim: usize,
        max_bytes: u64,
    ) -> Result<Vec<TableRows>> {
        let per = ((max_bytes / 4) as usize / dim.max(1)).max(1);
        if per >= rows {
            return Ok(vec![TableRows { weight: self.table(ctx, name, rows, dim)?, start: 0, rows }]);
        }
        let key = |start: usize, n: usize| format!("{name} (rows {start}..{})", start + n);
        let parts: Vec<(usize, usize)> = (0..rows).step_by(per).map(|s| (s, per.min(rows - s))).collect();
        // Built before (a second graph of the model): the parts are on the device and the host
        // copy may be gone.
        let cached = parts.iter().all(|&(s, n)| self.by_key.contains_key(&key(s, n)));
        let data = if cached { vec![] } else { self.fetch(name, &[rows, dim])? };
        let mut out = vec![];
        for (start, n) in parts {
            let layout = WeightLayout::Rows { name: name.to_string(), shape: vec![n, dim], start };
            let slice = if data.is_empty() { &data[..] } else { &data[start * dim..(start + n) * dim] };
            let weight = self.upload(ctx, key(start, n), layout, slice, n * dim);
            out.push(TableRows { weight, start, rows: n });
        }
        Ok(out)
    }

    /// A GroupNorm's `{prefix}.weight` and `{prefix}.bias`, [c] each.
    pub fn norm(&mut self, ctx: &Context, prefix: &str, c: usize) -> Result<NormWeight> {
        let gamma = self.plain(ctx, &format!("{prefix}.weight"), &[c])?;
        let beta = self.plain(ctx, &format!("{prefix}.bias"), &[c])?;
        Ok(NormWeight { gamma, beta, c })
    }

    /// A constant the model derives (not a file tensor), uploaded once under `key`.
    pub fn constant(&mut self, ctx: &Context, key: &str, data: &[f32]) -> WeightId {
        self.upload(ctx, key.to_string(), WeightLayout::Constant, data, 0)
    }

    /// The same weights but in `buffers` (indexed by WeightId as `self.buffers` are): a model
    /// over another copy of its weights (a trainer's EMA).
    pub fn with_buffers(&self, buffers: Vec<wgpu::Buffer>) -> Result<Self> {
        if buffers.len() != self.buffers.len() {
            return Err(Error::Invalid(format!(
                "{} buffers for {} weights",
                buffers.len(),
                self.buffers.len()
            )));
        }
        Ok(Self {
            host: HashMap::new(),
            synthetic: None,
            source: self.source.clone(),
            buffers,
            layouts: self.layouts.clone(),
            by_key: self.by_key.clone(),
            parameters: self.parameters,
            tensors_used: self.tensors_used,
            planning: self.planning,
            unflushed: 0,
        })
    }

    /// Drops the host copies once every weight is on the device.
    pub fn release_host(&mut self) {
        self.host = HashMap::new();
    }
}
