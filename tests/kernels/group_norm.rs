use wgpu_diffusion::kernels::group_norm::{self, GroupNormShape};

use wgpu_diffusion::gpu::Context;

use crate::*;

/// The (lanes per group, workgroup size) pairs the launcher can be asked for: the CPU default (one
/// lane, 32 groups a workgroup), the GPU default (64 lanes, one group a workgroup), and between.
const LAUNCHES: [(usize, usize); 5] = [(1, 32), (1, 256), (8, 64), (64, 64), (64, 256)];

fn check_with(s: GroupNormShape, x: &[f32], seed: u64) {
    check_on(ctx(), &LAUNCHES, s, x, seed);
    check_default(s, x, seed);
}

fn inputs(s: &GroupNormShape, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut r = rng(seed);
    // Non-trivial affine parameters, so (1, 0) defaults cannot hide a bug.
    let gamma: Vec<f32> = random(&mut r, s.c).iter().map(|v| 1.0 + v).collect();
    (gamma, random(&mut r, s.c))
}

/// The launch the graph makes, with the lanes and workgroup the adapter type selects.
fn check_default(s: GroupNormShape, x: &[f32], seed: u64) {
    let (gamma, beta) = inputs(&s, seed);
    let want = group_norm::reference(&s, x, &gamma, &beta);
    let (xt, gt, bt, y) = (upload(x), upload(&gamma), upload(&beta), output(x.len()));
    run(group_norm::group_norm(ctx(), &s, &xt.buffer, &gt.buffer, &bt.buffer, &y.buffer).unwrap());
    assert_close(&format!("group norm, default launch, {s:?}"), &read(&y), &want, RTOL);
}

fn check_on(c: &Context, launches: &[(usize, usize)], s: GroupNormShape, x: &[f32], seed: u64) {
    let (gamma, beta) = inputs(&s, seed);
    let want = group_norm::reference(&s, x, &gamma, &beta);
    let (xt, gt, bt) = (upload_on(c, x), upload_on(c, &gamma), upload_on(c, &beta));
    for &(lanes, wg) in launches {
        if lanes < group_norm::min_lanes(&s) {
            continue;
        }
        let y = output_on(c, x.len());
        let (x, g, b) = (&xt.buffer, &gt.buffer, &bt.buffer);
        c.run(&[group_norm::group_norm_lanes(c, lanes, wg, &s, x, g, b, &y.buffer).unwrap()]);
        let what = format!("group norm, {lanes} lanes, workgroup {wg}, {s:?}");
        assert_close(&what, &read_on(c, &y), &want, RTOL);
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

// Geometry: the grid is 1-D over (image, group) pairs, WG / L pairs a workgroup, split over x and
// y past the device's per-dimension limit (`gpu::grid`).
// - every batch in BATCHES at the bundled model's shapes (8 groups of 4 and 8 channels, 28x28 and
//   7x7): 8 to 264 pairs, so one workgroup at batch 1 and 9 workgroups, the last partial (264 =
//   8 x 32 + 8), at batch 33 with the CPU default; batch 9 and 16 are what once left images 8+
//   unnormalised, when the kernel ran 64-invocation workgroups on a grid sized for 256;
// - every (lanes, workgroup) pair in LAUNCHES, the default launch included;
// - on `spill_ctx` (4 workgroups per dimension): batch 33 with one lane is 9 workgroups on a 4 x 3
//   grid, 3 of them past the end, and 32 pairs a workgroup with 2 or 4 lanes likewise; 64 pairs
//   a workgroup is 5 workgroups on 4 x 2; with 64 lanes 264 workgroups do not fit 4 x 4 and are
//   refused with an error.
#[test]
fn group_norm_geometry_every_batch_and_launch() {
    for (i, &n) in BATCHES.iter().enumerate() {
        for (c, hw) in [(32, 28 * 28), (64, 49)] {
            let s = GroupNormShape { n, c, hw, groups: 8, eps: 1e-5, silu: true };
            let x = random(&mut rng(300 + i as u64), n * c * hw);
            check_with(s, &x, 400 + i as u64);
        }
    }
    // Many groups of one channel at an odd size: every pair its own group, no whole texels.
    let s = GroupNormShape { n: 9, c: 32, hw: 49, groups: 32, eps: 1e-6, silu: true };
    check_with(s, &random(&mut rng(310), 9 * 32 * 49), 410);
}

#[test]
fn group_norm_geometry_spills_into_y() {
    let c = spill_ctx();
    let s = GroupNormShape { n: 33, c: 16, hw: 25, groups: 8, eps: 1e-5, silu: false };
    let x = random(&mut rng(320), 33 * 16 * 25);
    check_on(c, &[(1, 32), (1, 64), (2, 64), (4, 128)], s, &x, 420);
    let (t, g) = (output_on(c, x.len()), output_on(c, 16));
    let err =
        group_norm::group_norm_lanes(c, 64, 64, &s, &t.buffer, &g.buffer, &g.buffer, &t.buffer).unwrap_err();
    assert!(err.to_string().contains("exceed this device's 4 per dimension"), "{err}");
}

// The backward (group_norm_backward.wgsl, then group_norm_param_grads.wgsl over the batch). Its
// first kernel has the forward's geometry (1-D over (image, group) pairs, WG / L a workgroup);
// the second is one invocation per channel, 64 a workgroup. Cases: every batch in BATCHES at the
// bundled model's shapes with and without the fused SiLU, every (lanes, workgroup) pair in
// LAUNCHES that the loop cap allows, 4 x 3 workgroups on `spill_ctx`, odd sizes, and a large
// common offset.
fn check_backward_on(c: &Context, launches: &[(usize, usize)], s: GroupNormShape, x: &[f32], seed: u64) {
    let (gamma, beta) = inputs(&s, seed);
    let dy = random(&mut rng(seed + 7), x.len());
    let (want_dx, want_dg, want_db) = group_norm::reference_backward(&s, x, &gamma, &beta, &dy);
    let (xt, gt, bt, dyt) = (upload_on(c, x), upload_on(c, &gamma), upload_on(c, &beta), upload_on(c, &dy));
    let run_with = |lanes: Option<(usize, usize)>| {
        let (dx, dg, db) = (output_on(c, x.len()), output_on(c, s.c), output_on(c, s.c));
        let g = group_norm::GroupNormGrads {
            x: &xt.buffer,
            gamma: &gt.buffer,
            beta: &bt.buffer,
            dy: &dyt.buffer,
            dx: &dx.buffer,
            dgamma: &dg.buffer,
            dbeta: &db.buffer,
        };
        let d = match lanes {
            Some((l, wg)) => group_norm::group_norm_backward_lanes(c, l, wg, &s, &g).unwrap(),
            None => group_norm::group_norm_backward(c, &s, &g).unwrap(),
        };
        c.run(&d);
        let what = format!("group norm backward, {lanes:?} lanes/workgroup, {s:?}");
        assert_close(&format!("{what}: dx"), &read_on(c, &dx), &want_dx, RTOL);
        assert_close(&format!("{what}: d gamma"), &read_on(c, &dg), &want_dg, RTOL);
        assert_close(&format!("{what}: d beta"), &read_on(c, &db), &want_db, RTOL);
    };
    for &(lanes, wg) in launches {
        if lanes >= group_norm::min_lanes_backward(&s) {
            run_with(Some((lanes, wg)));
        }
    }
    run_with(None);
}

#[test]
fn group_norm_backward_every_batch_and_launch() {
    for (i, &n) in BATCHES.iter().enumerate() {
        for (c, hw, silu) in [(32, 28 * 28, true), (64, 49, false)] {
            let s = GroupNormShape { n, c, hw, groups: 8, eps: 1e-5, silu };
            let x = random(&mut rng(500 + i as u64), n * c * hw);
            let launches: &[(usize, usize)] = if n <= 9 { &LAUNCHES } else { &LAUNCHES[..1] };
            check_backward_on(ctx(), launches, s, &x, 600 + i as u64);
        }
    }
    check_backward_on(
        ctx(),
        &LAUNCHES,
        GroupNormShape { n: 3, c: 10, hw: 35, groups: 5, eps: 1e-6, silu: true },
        &random(&mut rng(610), 3 * 10 * 35),
        611,
    );
    // A large common offset: the statistics still hold their digits.
    let x: Vec<f32> = random(&mut rng(620), 2 * 8 * 1024).iter().map(|v| 100.0 + 0.01 * v).collect();
    check_backward_on(
        ctx(),
        &LAUNCHES[..1],
        GroupNormShape { n: 2, c: 8, hw: 1024, groups: 2, eps: 1e-6, silu: false },
        &x,
        621,
    );
}

#[test]
fn group_norm_backward_spills_into_y() {
    let s = GroupNormShape { n: 33, c: 16, hw: 25, groups: 8, eps: 1e-5, silu: true };
    let x = random(&mut rng(630), 33 * 16 * 25);
    check_backward_on(spill_ctx(), &[(1, 32), (2, 64)], s, &x, 631);
}

#[test]
fn group_norm_backward_reference_matches_finite_differences() {
    // The reference's formulas against central differences of the forward reference, in f64
    // terms: loss = sum(dy * y).
    let s = GroupNormShape { n: 2, c: 4, hw: 6, groups: 2, eps: 1e-5, silu: true };
    let mut r = rng(640);
    let x: Vec<f32> = random(&mut r, 48).iter().map(|v| v * 2.0).collect();
    let (gamma, beta) = inputs(&s, 641);
    let dy = random(&mut r, 48);
    let (dx, dg, db) = group_norm::reference_backward(&s, &x, &gamma, &beta, &dy);
    let loss = |x: &[f32], g: &[f32], b: &[f32]| -> f64 {
        group_norm::reference(&s, x, g, b).iter().zip(&dy).map(|(&y, &d)| y as f64 * d as f64).sum()
    };
    let h = 1e-2f32;
    let fd = |f: &dyn Fn(f32) -> f64| (f(h) - f(-h)) / (2.0 * h as f64);
    for i in [0, 7, 30, 47] {
        let slope = fd(&|e| {
            let mut xe = x.clone();
            xe[i] += e;
            loss(&xe, &gamma, &beta)
        });
        assert!((dx[i] as f64 - slope).abs() < 2e-3 * (1.0 + slope.abs()), "dx[{i}] {} vs {slope}", dx[i]);
    }
    for c in 0..4 {
        let slope_g = fd(&|e| {
            let mut g = gamma.clone();
            g[c] += e;
            loss(&x, &g, &beta)
        });
        let slope_b = fd(&|e| {
            let mut b = beta.clone();
            b[c] += e;
            loss(&x, &gamma, &b)
        });
        assert!(
            (dg[c] as f64 - slope_g).abs() < 2e-3 * (1.0 + slope_g.abs()),
            "dgamma[{c}] {} vs {slope_g}",
            dg[c]
        );
        assert!(
            (db[c] as f64 - slope_b).abs() < 2e-3 * (1.0 + slope_b.abs()),
            "dbeta[{c}] {} vs {slope_b}",
            db[c]
        );
    }
}

#[test]
fn group_norm_backward_default_lanes_cover_long_groups() {
    // 4 x 64K values a group: one lane would run past lavapipe's loop cap; the default spreads it.
    let s = GroupNormShape { n: 1, c: 8, hw: 256 * 256, groups: 2, eps: 1e-6, silu: true };
    assert!(group_norm::min_lanes_backward(&s) > 1);
    let x = random(&mut rng(650), s.c * s.hw);
    check_backward_on(ctx(), &[], s, &x, 651);
}
