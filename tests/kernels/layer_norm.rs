//! LayerNorm over each token's channels of an NCHW tensor against its reference: tokens of one
//! channel (hw 1: CLIP's [N, C, 1, 77] after a transpose-free view, and 1x1 maps), odd channel
//! counts, more tokens than a workgroup, large offsets (the mean must not swamp the variance).

use wgpu_diffusion::kernels::layer_norm::{self, LayerNormShape};

use crate::*;

fn check(n: usize, c: usize, hw: usize, offset: f32, seed: u64) {
    let s = LayerNormShape { n, c, hw, eps: 1e-5 };
    let mut r = rng(seed);
    let x: Vec<f32> = random(&mut r, s.len()).iter().map(|v| v + offset).collect();
    let gamma: Vec<f32> = random(&mut r, c).iter().map(|v| 1.0 + v).collect();
    let beta = random(&mut r, c);
    let want = layer_norm::reference(&s, &x, &gamma, &beta);
    let (xt, gt, bt, y) = (upload(&x), upload(&gamma), upload(&beta), output(s.len()));
    run(layer_norm::layer_norm(ctx(), &s, &xt.buffer, &gt.buffer, &bt.buffer, &y.buffer).unwrap());
    assert_close(&format!("layer norm {s:?}, offset {offset}"), &read(&y), &want, RTOL);
}

#[test]
fn layer_norm_odd_shapes() {
    check(1, 1, 1, 0.0, 1); // one channel: beta
    check(1, 3, 1, 0.0, 2);
    check(2, 64, 77, 0.0, 3); // two prompts of CLIP-shaped tokens
    check(3, 7, 33, 0.0, 4);
    check(1, 320, 65, 0.0, 5); // past one workgroup of tokens
    check(7, 9, 9, 0.0, 6);
    check(9, 16, 1, 0.0, 7);
    check(2, 40, 16, 100.0, 8);
}
