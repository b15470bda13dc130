use wgpu_diffusion::kernels::vq::{self, VqShape};

use crate::*;

/// A codebook whose entries are far apart (so f32 and f64 distances pick the same code) and
/// latents near random codes.
fn case(s: &VqShape, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut r = rng(seed);
    let codebook: Vec<f32> =
        (0..s.codes * s.dim).map(|i| (i % 7) as f32 * 0.9 + random(&mut r, 1)[0] * 3.0).collect();
    let z = random(&mut r, s.batch * s.dim * s.plane).iter().map(|v| v * 4.0).collect();
    (z, codebook)
}

fn check_on(c: &wgpu_diffusion::gpu::Context, s: VqShape, seed: u64) {
    let (z, e) = case(&s, seed);
    let (zt, et) = (upload_on(c, &z), upload_on(c, &e));
    let (q, idx) = (output_on(c, z.len()), output_on(c, s.batch * s.plane));
    c.run(&[vq::quantize(c, &s, &zt.buffer, &et.buffer, &q.buffer, &idx.buffer).unwrap()]);
    let (want_q, want_idx) = vq::reference(&s, &z, &e);
    assert_eq!(read_on(c, &idx), want_idx, "{s:?}: codes");
    assert_close(&format!("{s:?}: quantized"), &read_on(c, &q), &want_q, RTOL);
}

// Geometry: one invocation a pixel, 64 a workgroup, over batch x H x W, spilled into y past the
// limit: every batch in BATCHES at 5x5 pixels (1 to 13 workgroups, the last partial), a 64x64 map
// (64 workgroups) with 3-wide codes; 8192 codes (the LDM CelebA-HQ codebook's size); on
// `spill_ctx` 33 x 5 x 5 pixels are 13 workgroups on a 4 x 4 grid.
#[test]
fn vq_quantize_geometry_and_codebook_sizes() {
    for &b in &BATCHES {
        check_on(ctx(), VqShape { batch: b, dim: 3, plane: 25, codes: 64 }, b as u64);
    }
    check_on(ctx(), VqShape { batch: 1, dim: 3, plane: 64 * 64, codes: 16 }, 100);
    check_on(ctx(), VqShape { batch: 2, dim: 4, plane: 9, codes: 8192 }, 101);
    check_on(spill_ctx(), VqShape { batch: 33, dim: 3, plane: 25, codes: 64 }, 102);
}

#[test]
fn vq_quantize_ties_take_the_first_code() {
    let s = VqShape { batch: 1, dim: 1, plane: 2, codes: 3 };
    // z = 0 is as far from -1 as from 1: the first (index 1) wins; z = 2 is nearest to code 2.
    let (zt, et) = (upload(&[0.0, 2.0]), upload(&[9.0, -1.0, 1.0]));
    let (q, idx) = (output(2), output(2));
    run(vq::quantize(ctx(), &s, &zt.buffer, &et.buffer, &q.buffer, &idx.buffer).unwrap());
    assert_eq!((read(&idx), read(&q)), (vec![1.0, 2.0], vec![-1.0, 1.0]));
}
