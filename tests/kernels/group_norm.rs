use wgpu_diffusion::kernels::group_norm::{self, GroupNormShape};

use crate::*;

fn check_with(s: GroupNormShape, x: &[f32], seed: u64) {
    let mut r = rng(seed);
    // Non-trivial affine parameters, so (1, 0) defaults cannot hide a bug.
    let gamma: Vec<f32> = random(&mut r, s.c).iter().map(|v| 1.0 + v).collect();
    let beta = random(&mut r, s.c);
    let want = group_norm::reference(&s, x, &gamma, &beta);
    let (xt, gt, bt, y) = (upload(x), upload(&gamma), upload(&beta), output(x.len()));
    // One lane per group in workgroups of 256 (CPU drivers), a few, and 64 lanes in workgroups
    // of 64 (GPUs) or 256.
    for (lanes, wg) in [(1, 256), (8, 64), (64, 64), (64, 256)] {
        if lanes < group_norm::min_lanes(&s) {
            continue;
        }
        let (x, g, b) = (&xt.buffer, &gt.buffer, &bt.buffer);
        run(group_norm::group_norm_lanes(ctx(), lanes, wg, &s, x, g, b, &y.buffer).unwrap());
        assert_close(&format!("group norm, {lanes} lanes, workgroup {wg}, {s:?}"), &read(&y), &want, RTOL);
    }
}

fn check(n: usize, c: usize, hw: usize, groups: usize, silu: bool, seed: u64) {
    let s = GroupNormShape { n, c, hw, groups, eps: 1e-6, silu };
    let x = random(&mut rng(seed), n * c * hw);
    check_with(s, &x, seed + 1);
}

#[test]
fn group_norm_odd_shapes() {
    check(1, 3, 49, 1, false, 1);
    check(1, 3, 49, 3, true, 2);
    check(2, 6, 1, 3, false, 3); // 1x1 spatial
    check(3, 10, 35, 5, true, 4);
    check(1, 1, 1, 1, false, 5); // a single element normalises to beta
}

#[test]
fn group_norm_unet_shapes() {
    check(2, 32, 64, 32, true, 6);
    check(2, 64, 256, 32, false, 7);
    check(1, 128, 1024, 32, true, 8);
}

#[test]
fn group_norm_eps_matters() {
    for eps in [1e-6, 1e-5, 1e-2] {
        let s = GroupNormShape { n: 2, c: 8, hw: 9, groups: 4, eps, silu: false };
        // Small values, so eps is comparable to the variance.
        let x: Vec<f32> = random(&mut rng(9), 2 * 8 * 9).iter().map(|v| v * 0.05).collect();
        check_with(s, &x, 10);
    }
}

#[test]
fn group_norm_is_stable_for_large_hw_and_offset() {
    // Mean 100, small spread, 2 x 256 x 256 per group: E[x^2] - E[x]^2 would lose most digits.
    let (n, c, hw) = (1, 4, 256 * 256);
    let x: Vec<f32> = random(&mut rng(11), n * c * hw).iter().map(|v| 100.0 + 0.01 * v).collect();
    check_with(GroupNormShape { n, c, hw, groups: 2, eps: 1e-6, silu: true }, &x, 12);
}

#[test]
fn group_norm_default_lanes_cover_long_groups() {
    // One lane per group would loop 2 x 64K times here; lavapipe stops a shader's loops after about
    // 64K iterations in all, silently. The default spreads such groups over more lanes.
    let s = GroupNormShape { n: 1, c: 8, hw: 256 * 256, groups: 2, eps: 1e-6, silu: false };
    assert!(group_norm::default_lanes(ctx(), &s) > 1 || !ctx().is_cpu());
    let x = random(&mut rng(13), s.c * s.hw);
    let (gamma, beta) = (vec![1.5f32; s.c], vec![0.25f32; s.c]);
    let want = group_norm::reference(&s, &x, &gamma, &beta);
    let (xt, gt, bt, y) = (upload(&x), upload(&gamma), upload(&beta), output(x.len()));
    run(group_norm::group_norm(ctx(), &s, &xt.buffer, &gt.buffer, &bt.buffer, &y.buffer).unwrap());
    assert_close("group norm, long groups, default lanes", &read(&y), &want, RTOL);
}

#[test]
fn group_norm_rejects_groups_not_dividing_channels() {
    let s = GroupNormShape { n: 1, c: 6, hw: 4, groups: 4, eps: 1e-6, silu: false };
    let t = output(24);
    let err = group_norm::group_norm(ctx(), &s, &t.buffer, &t.buffer, &t.buffer, &t.buffer).unwrap_err();
    assert!(err.to_string().contains("4 groups do not divide 6 channels"), "{err}");
}

#[test]
fn group_norm_single_pass_survives_offsets_and_outliers() {
    // Statistics come from sums of x - shift and its square, shift being the mean of 4 samples per
    // channel. Channels of one group with different means on a large common offset, and a first
    // pixel 50 standard deviations out in every channel (one of the 4 samples), must still match.
    let (n, c, hw) = (2, 8, 1024);
    let mut x = random(&mut rng(21), n * c * hw);
    for (i, v) in x.iter_mut().enumerate() {
        let ch = (i / hw) % c;
        *v = 1000.0 + 0.5 * ch as f32 + 0.01 * *v;
        if i % hw == 0 {
            *v += 0.5;
        }
    }
    check_with(GroupNormShape { n, c, hw, groups: 2, eps: 1e-6, silu: false }, &x, 22);
}
