//! Decoding and encoding in overlapping tiles, as diffusers' `enable_tiling` does
//! (../shared/LATENT.md section 3): the input (latents to decode, or an image to encode) cut into
//! tiles of the autoencoder's sample size at a stride of 3/4 of a tile, each run alone on the
//! device by the same graph, then blended into one output: each tile's first quarter of rows
//! (columns) mixed linearly with the tile above (left), in row-major order over the tiles already
//! blended, and cropped to 3/4 of a tile. The blend is arithmetic on the tiles' outputs (decoded
//! pixels, or an encoder's moments), done as they come back.

use super::{Autoencoder, AutoencoderExecutable, Stage};
use crate::gpu::{record_all, Context, CopyOp, Cost, Dispatch};
use crate::Result;

/// A tiling for an autoencoder downscaling `down` times: of latents (`tile` latents a side) for
/// the decoder, or of an image (`tile` pixels a side) for the encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TilePlan {
    /// Tile side in the input's units (diffusers' tile_latent_min_size, sample_size / downscale,
    /// to decode; tile_sample_min_size, sample_size, to encode).
    pub tile: usize,
    pub down: usize,
    /// Tiles of an image to encode (else of latents to decode).
    pub encode: bool,
}

impl TilePlan {
    /// diffusers' decode tiles for this autoencoder: its sample_size in pixels.
    pub fn for_autoencoder(vae: &Autoencoder) -> Self {
        let c = &vae.config;
        Self { tile: (c.sample_size / c.downscale()).max(1), down: c.downscale(), encode: false }
    }

    /// diffusers' encode tiles: sample_size pixels.
    pub fn encoder_for(vae: &Autoencoder) -> Self {
        let c = &vae.config;
        Self { tile: c.sample_size.max(1), down: c.downscale(), encode: true }
    }

    /// Whether diffusers would tile an input of `h` x `w` (only when larger than a tile).
    pub fn splits(&self, h: usize, w: usize) -> bool {
        h > self.tile || w > self.tile
    }

    /// Stride between tiles, in the input's units: int(tile x 0.75).
    pub fn stride(&self) -> usize {
        (self.tile * 3 / 4).max(1)
    }

    /// An output side for an input side of `n`: x down to decode; to encode, what the encoder's
    /// downsamplers (padded right and bottom by one, 3x3, stride 2) leave.
    pub fn out_len(&self, n: usize) -> usize {
        if !self.encode {
            return n * self.down;
        }
        let mut n = n;
        for _ in 0..self.down.trailing_zeros() {
            n = (n.max(2) - 2) / 2 + 1;
        }
        n
    }

    /// Output rows (columns) each seam blends over: int(tile out x 0.25).
    pub fn blend_extent(&self) -> usize {
        self.out_len(self.tile) / 4
    }

    /// Output rows (columns) each tile keeps: a tile's output - the blend extent.
    pub fn row_limit(&self) -> usize {
        self.out_len(self.tile) - self.blend_extent()
    }

    /// The tiles' starts along a side of `n` latents, and their lengths (the last ones shorter).
    pub fn spans(&self, n: usize) -> Vec<(usize, usize)> {
        (0..n).step_by(self.stride()).map(|s| (s, self.tile.min(n - s))).collect()
    }
}

/// Runs an autoencoder stage tile by tile on an input in a device buffer: one executable per
/// tile shape.
pub struct TiledDecoder {
    pub plan: TilePlan,
    /// The input [c, h, w] of one image (latents to decode, an image to encode).
    c: usize,
    h: usize,
    w: usize,
    out_c: usize,
    exes: Vec<((usize, usize), AutoencoderExecutable)>,
    /// Images a tile executable takes at once.
    pub batch: usize,
}

impl TiledDecoder {
    /// Tiles `plan` over an input of `h` x `w` (its units), for `stage` (Decode or DecodeLatents
    /// with a decode plan, Encode with an encode plan), up to `batch` images a tile at once.
    pub fn new(
        ctx: &Context,
        vae: &mut Autoencoder,
        plan: TilePlan,
        stage: Stage,
        batch: usize,
        h: usize,
        w: usize,
    ) -> Result<Self> {
        if plan.encode != (stage == Stage::Encode) {
            return Err(crate::Error::Invalid(format!("{stage:?} with a tile plan for the other stage")));
        }
        let mut shapes = vec![];
        for &(_, th) in &plan.spans(h) {
            for &(_, tw) in &plan.spans(w) {
                if !shapes.contains(&(th, tw)) {
                    shapes.push((th, tw));
                }
            }
        }
        let d = plan.down;
        let mut exes = vec![];
        for (th, tw) in shapes {
            // Executables are sized by their latents; an encoder tile must be whole latents.
            let (lh, lw) = if plan.encode { (th / d, tw / d) } else { (th, tw) };
            if plan.encode && (th % d != 0 || tw % d != 0) {
                return Err(crate::Error::Shape(format!(
                    "an encoder tile of {th}x{tw} pixels is not whole {d}x{d} latents"
                )));
            }
            exes.push(((th, tw), vae.executable(ctx, stage, batch, lh, lw)?));
        }
        let (c, out_c) = if plan.encode {
            (vae.config.in_channels, vae.config.encoder_out_channels_after_quant())
        } else {
            (vae.config.latent_width(), vae.config.out_channels)
        };
        Ok(Self { plan, c, h, w, out_c, exes, batch })
    }

    /// The arithmetic of one image's tiles, every tile counted.
    pub fn flops_per_image(&self) -> u64 {
        let mut total = 0;
        for &(_, th) in &self.plan.spans(self.h) {
            for &(_, tw) in &self.plan.spans(self.w) {
                let e = self.exe(th, tw);
                total += e.exe.dispatches.iter().map(|d| d.cost.flops).sum::<u64>() / self.batch as u64;
            }
        }
        total
    }

    /// The tiles of one image.
    pub fn tiles(&self) -> usize {
        self.plan.spans(self.h).len() * self.plan.spans(self.w).len()
    }

    fn exe(&self, th: usize, tw: usize) -> &AutoencoderExecutable {
        &self.exes.iter().find(|(s, _)| *s == (th, tw)).expect("a tile shape planned in new").1
        // ok: new planned every span
    }

    /// Runs images `0..n` of `input` [n, c, h, w] on the device, tile by tile; returns the
    /// blended outputs [n, out_c, out h, out w].
    pub fn decode(&self, ctx: &Context, input: &wgpu::Buffer, n: usize) -> Result<Vec<f32>> {
        let latents = input;
        let (c, h, w) = (self.c, self.h, self.w);
        let p = self.plan;
        let (oh, ow) = (p.out_len(h), p.out_len(w));
        let mut out = vec![0.0f32; n * self.out_c * oh * ow];
        for first in (0..n).step_by(self.batch) {
            let m = self.batch.min(n - first);
            // Each tile of these m images, decoded: rows[i][j] = [m, out_c, th d, tw d].
            let mut rows: Vec<Vec<(usize, usize, Vec<f32>)>> = vec![];
            for &(y0, th) in &self.plan.spans(h) {
                let mut row = vec![];
                for &(x0, tw) in &self.plan.spans(w) {
                    let e = self.exe(th, tw);
                    // The tile's rows of every channel of every image, into the tile graph's input.
                    let mut copies = vec![];
                    for img in 0..m {
                        for ch in 0..c {
                            for y in 0..th {
                                let src = ((((first + img) * c + ch) * h + y0 + y) * w + x0) as u64 * 4;
                                let dst = (((img * c + ch) * th + y) * tw) as u64 * 4;
                                copies.push(CopyOp::buffer(
                                    latents,
                                    src,
                                    e.input_buffer(),
                                    dst,
                                    tw as u64 * 4,
                                ));
                            }
                        }
                    }
                    let mut list = vec![Dispatch::copies_only("input tile", copies, Cost::default())];
                    list.extend(e.exe.dispatches.iter().cloned());
                    let mut enc = ctx.device.create_command_encoder(&Default::default());
                    record_all(&mut enc, &list);
                    ctx.queue.submit([enc.finish()]);
                    let (toh, tow) = (p.out_len(th), p.out_len(tw));
                    row.push((toh, tow, ctx.read_buffer(e.output_buffer(), m * self.out_c * toh * tow)?));
                }
                rows.push(row);
            }
            for img in 0..m {
                let tiles: Vec<Vec<Tile>> = rows
                    .iter()
                    .map(|row| {
                        row.iter()
                            .map(|(th, tw, v)| {
                                let per = self.out_c * th * tw;
                                Tile { h: *th, w: *tw, v: v[img * per..(img + 1) * per].to_vec() }
                            })
                            .collect()
                    })
                    .collect();
                let image = blend(tiles, self.out_c, &self.plan, (oh, ow));
                let per = self.out_c * oh * ow;
                out[(first + img) * per..(first + img + 1) * per].copy_from_slice(&image);
            }
        }
        Ok(out)
    }
}

/// One decoded tile of one image: [c, h, w].
#[derive(Clone, Debug)]
pub struct Tile {
    pub h: usize,
    pub w: usize,
    pub v: Vec<f32>,
}

/// diffusers' blend of decoded tiles (rows of tiles, row-major) into one image [c, oh, ow]:
/// blend_v with the (blended) tile above, blend_h with the (blended) tile to the left, both in
/// place over `blend_extent` pixels, then each tile cropped to `row_limit` and the crops joined.
pub fn blend(mut rows: Vec<Vec<Tile>>, c: usize, plan: &TilePlan, (oh, ow): (usize, usize)) -> Vec<f32> {
    let (extent, limit) = (plan.blend_extent(), plan.row_limit());
    for i in 0..rows.len() {
        for j in 0..rows[i].len() {
            if i > 0 {
                let above = rows[i - 1][j].clone();
                let tile = &mut rows[i][j];
                let e = extent.min(above.h).min(tile.h);
                for ch in 0..c {
                    for y in 0..e {
                        let t = y as f32 / e as f32;
                        for x in 0..tile.w.min(above.w) {
                            let a = above.v[(ch * above.h + above.h - e + y) * above.w + x];
                            let b = &mut tile.v[(ch * tile.h + y) * tile.w + x];
                            *b = a * (1.0 - t) + *b * t;
                        }
                    }
                }
            }
            if j > 0 {
                let left = rows[i][j - 1].clone();
                let tile = &mut rows[i][j];
                let e = extent.min(left.w).min(tile.w);
                for ch in 0..c {
                    for y in 0..tile.h.min(left.h) {
                        for x in 0..e {
                            let t = x as f32 / e as f32;
                            let a = left.v[(ch * left.h + y) * left.w + left.w - e + x];
                            let b = &mut tile.v[(ch * tile.h + y) * tile.w + x];
                            *b = a * (1.0 - t) + *b * t;
                        }
                    }
                }
            }
        }
    }
    let mut out = vec![0.0f32; c * oh * ow];
    let mut y0 = 0;
    for row in &rows {
        let mut x0 = 0;
        let mut row_h = 0;
        for tile in row {
            let (kh, kw) = (tile.h.min(limit), tile.w.min(limit));
            for ch in 0..c {
                for y in 0..kh {
                    for x in 0..kw {
                        if y0 + y < oh && x0 + x < ow {
                            out[(ch * oh + y0 + y) * ow + x0 + x] = tile.v[(ch * tile.h + y) * tile.w + x];
                        }
                    }
                }
            }
            x0 += kw;
            row_h = kh;
        }
        y0 += row_h;
    }
    out
}
