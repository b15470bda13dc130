//! The training batch gather against its reference: 8-bit and f32 datasets, mirrored images, the
//! index ring's row picked by the device step counter.
//!
//! Geometry: 1-D over the batch's values, 256 a workgroup, split over x and y past the limit:
//! every batch in BATCHES of 28x28 grey images (4 to 102 workgroups, the last partial),
//! 3 x 5 x 7 RGB images with an odd row width, and the same on `spill_ctx` (4 x 4 grids).

use wgpu_diffusion::gpu::Context;
use wgpu_diffusion::kernels::data::{self, Gather, Pixels, FLIP};

use crate::*;

fn check_on(c: &Context, pixels: Pixels, batch: usize, (ch, h, w): (usize, usize, usize), seed: u64) {
    let mut r = rng(seed);
    let (images, ring, per) = (11, 3, ch * h * w);
    let bytes: Vec<u8> = random(&mut r, images * per).iter().map(|v| ((v + 1.0) * 127.9) as u8).collect();
    let floats = random(&mut r, images * per);
    let (store, values): (Vec<u32>, Vec<f32>) = match pixels {
        Pixels::U8 => (data::pack_u8(&bytes), bytes.iter().map(|&b| b as f32).collect()),
        Pixels::F32 => (floats.iter().map(|x| x.to_bits()).collect(), floats.clone()),
    };
    let indices: Vec<u32> =
        (0..ring * batch).map(|k| (k * 7 % images) as u32 | if k % 3 == 1 { FLIP } else { 0 }).collect();
    let g = Gather { pixels, images, per_image: per, width: w, batch, ring };
    let store_t = c.upload_u32(&store, &[store.len()]).unwrap();
    let index_t = c.upload_u32(&indices, &[indices.len()]).unwrap();
    // Step 4 reads row 4 % 3 = 1.
    let counter = c.upload_u32(&[4], &[1]).unwrap();
    let out = output_on(c, batch * per);
    c.run(&[
        data::gather_images(c, &g, &store_t.buffer, &index_t.buffer, &counter.buffer, &out.buffer).unwrap()
    ]);
    let want = data::reference(&g, &values, &indices, 1);
    assert_eq!(read_on(c, &out), want, "{pixels:?} batch {batch} of [{ch}, {h}, {w}]");
}

#[test]
fn gather_every_batch_and_layout() {
    for (i, &b) in BATCHES.iter().enumerate() {
        for pixels in [Pixels::U8, Pixels::F32] {
            check_on(ctx(), pixels, b, (1, 28, 28), i as u64);
            check_on(ctx(), pixels, b, (3, 5, 7), 10 + i as u64);
            check_on(spill_ctx(), pixels, b, (3, 5, 7), 20 + i as u64);
        }
    }
}

#[test]
fn eight_bit_values_scale_as_torchvision() {
    // ToTensor then Normalize(0.5, 0.5).
    assert_eq!(data::scale_u8(0), -1.0);
    assert_eq!(data::scale_u8(255), 1.0);
    assert_eq!(data::scale_u8(128), (128.0f32 / 255.0 - 0.5) / 0.5);
}
