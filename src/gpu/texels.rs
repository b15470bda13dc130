//! Texel views of buffers: a kernel that reads an operand many times can bind it as an rgba32float
//! texture instead of a storage buffer. The dispatch copies the buffer into a staging texture just
//! before it runs (a plain copy, ~10 GB/s even on lavapipe), and the kernel reads it with
//! `textureLoad`.
//!
//! Why: on lavapipe a storage-buffer load runs lane by lane (~22 cycles per lane for an f32, ~78
//! for a vec4), while a texel fetch is vectorised (~8 cycles per lane for a whole vec4): reading
//! weights and activations as texels makes conv2d several times faster there. On GPUs texture
//! reads go through the texture cache, which suits the reuse pattern of convolutions too.
//!
//! Layout: float `i` of the buffer is component `i % 4` of texel `i / 4`, and texel `t` sits at
//! `(t % TEXELS_PER_ROW, t / TEXELS_PER_ROW)`. WGSL kernels use the same constants.

use std::collections::HashMap;
use std::sync::Mutex;

/// Texels per row: 16 KiB rows, a multiple of the 256-byte copy pitch.
pub const TEXELS_PER_ROW: u32 = 1024;
const BYTES_PER_ROW: u64 = TEXELS_PER_ROW as u64 * 16;

/// Staging textures shared by every dispatch, one per (operand slot, row count rounded up to a power
/// of two). Sharing is safe: each copy is recorded right before the one dispatch that reads it, and
/// a queue runs copies and dispatches in order.
#[derive(Default)]
pub struct TexelStaging {
    textures: Mutex<HashMap<(usize, u32), wgpu::Texture>>,
}

impl TexelStaging {
    /// Rows a texel view of `floats` values needs.
    pub fn rows(floats: usize) -> u32 {
        (floats.div_ceil(4) as u64).div_ceil(TEXELS_PER_ROW as u64).max(1) as u32
    }

    /// The staging texture for operand `slot` holding at least `rows` rows.
    pub fn texture(&self, device: &wgpu::Device, slot: usize, rows: u32) -> wgpu::Texture {
        let rows = rows.next_power_of_two();
        let mut textures = self.textures.lock().unwrap_or_else(|p| p.into_inner());
        textures
            .entry((slot, rows))
            .or_insert_with(|| {
                device.create_texture(&wgpu::TextureDescriptor {
                    label: Some("texel staging"),
                    size: wgpu::Extent3d { width: TEXELS_PER_ROW, height: rows, depth_or_array_layers: 1 },
                    mip_level_count: 1,
                    sample_count: 1,
                    dimension: wgpu::TextureDimension::D2,
                    format: wgpu::TextureFormat::Rgba32Float,
                    usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
                    view_formats: &[],
                })
            })
            .clone()
    }

    /// Bytes held by staging textures.
    pub fn bytes(&self) -> u64 {
        let textures = self.textures.lock().unwrap_or_else(|p| p.into_inner());
        textures.values().map(|t| t.height() as u64 * BYTES_PER_ROW).sum()
    }
}

/// Copies the first `texels` texels of `buffer` into `texture` (row-major, TEXELS_PER_ROW wide).
#[derive(Clone, Debug)]
pub struct TexelCopy {
    pub buffer: wgpu::Buffer,
    pub texture: wgpu::Texture,
    pub texels: u64,
}

impl TexelCopy {
    pub fn record(&self, enc: &mut wgpu::CommandEncoder) {
        let per_row = TEXELS_PER_ROW as u64;
        let (full_rows, tail) = (self.texels / per_row, self.texels % per_row);
        let copy = |enc: &mut wgpu::CommandEncoder, row: u64, width: u64, height: u64| {
            enc.copy_buffer_to_texture(
                wgpu::TexelCopyBufferInfo {
                    buffer: &self.buffer,
                    layout: wgpu::TexelCopyBufferLayout {
                        offset: row * BYTES_PER_ROW,
                        bytes_per_row: Some(BYTES_PER_ROW as u32),
                        rows_per_image: None,
                    },
                },
                wgpu::TexelCopyTextureInfo {
                    texture: &self.texture,
                    mip_level: 0,
                    origin: wgpu::Origin3d { x: 0, y: row as u32, z: 0 },
                    aspect: wgpu::TextureAspect::All,
                },
                wgpu::Extent3d { width: width as u32, height: height as u32, depth_or_array_layers: 1 },
            );
        };
        if full_rows > 0 {
            copy(enc, 0, per_row, full_rows);
        }
        if tail > 0 {
            copy(enc, full_rows, tail, 1);
        }
    }
}
