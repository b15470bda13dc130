use rand::Rng;
use wgpu_diffusion::kernels::conv2d::{self, Conv2dShape, Epilogue, Launch, Padding, Variant};

use crate::*;

#[derive(Clone, Copy)]
struct Flags {
    bias: bool,
    channel_add: bool,
    residual: bool,
    scale: f32,
}

const PLAIN: Flags = Flags { bias: true, channel_add: false, residual: false, scale: 1.0 };

/// Checks `s` with every kernel variant this adapter can run.
fn check(s: Conv2dShape, f: Flags, seed: u64) {
    check_variant(s, f, seed, Variant::Portable);
    if wgpu_diffusion::kernels::has_subgroup_kernels(ctx()) {
        check_variant(s, f, seed, Variant::Subgroup);
    } else {
        eprintln!("no subgroups of 8+ lanes on this adapter: the subgroup conv kernel is not tested here");
    }
}

fn check_variant(s: Conv2dShape, f: Flags, seed: u64, variant: Variant) {
    check_launch(s, f, seed, Launch::One(variant));
}

fn check_launch(s: Conv2dShape, f: Flags, seed: u64, launch: Launch) {
    let c = ctx();
    let mut r = rng(seed);
    let out_len = s.out_len().expect("valid shape");
    let x = random(&mut r, s.n * s.cin * s.h * s.w);
    let w = random(&mut r, s.cout * s.cin * s.kh * s.kw);
    let bias = random(&mut r, s.cout);
    let chan = random(&mut r, s.n * s.cout);
    let res = random(&mut r, out_len);
    let want = conv2d::reference(
        &s,
        &x,
        &w,
        f.bias.then_some(&bias[..]),
        f.channel_add.then_some(&chan[..]),
        f.residual.then_some(&res[..]),
        f.scale,
    );
    let packed = conv2d::pack_weight(&w, s.cout, s.cin, s.kh, s.kw).unwrap();
    let (xt, wt, bt, ct, rt, out) =
        (upload(&x), upload(&packed), upload(&bias), upload(&chan), upload(&res), output(out_len));
    let epi = Epilogue {
        bias: f.bias.then_some(&*bt.buffer),
        channel_add: f.channel_add.then_some(&*ct.buffer),
        residual: f.residual.then_some(&*rt.buffer),
        scale: f.scale,
    };
    let dispatches = conv2d::conv2d(c, launch, &s, &xt.buffer, &wt.buffer, &epi, &out.buffer).unwrap();
    c.run(&dispatches);
    assert_close(&format!("conv2d {launch:?} {s:?}"), &read(&out), &want, RTOL);
}

#[allow(clippy::too_many_arguments)]
fn shape(
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: Padding,
) -> Conv2dShape {
    Conv2dShape { n, cin, h, w, cout, kh: k, kw: k, stride, pad }
}

#[test]
fn conv2d_3x3_same_padding_odd_sizes() {
    check(shape(1, 3, 7, 7, 5, 3, 1, Padding::same(1)), PLAIN, 1);
    check(shape(2, 5, 9, 6, 7, 3, 1, Padding::same(1)), PLAIN, 2);
}

#[test]
fn conv2d_stride_2_both_paddings() {
    // Downsample2D(padding=1) and Downsample2D(padding=0): pad right/bottom by one.
    check(shape(2, 4, 8, 8, 8, 3, 2, Padding::same(1)), PLAIN, 3);
    check(shape(2, 4, 8, 8, 8, 3, 2, Padding::right_bottom(1)), PLAIN, 4);
    check(shape(1, 3, 7, 7, 3, 3, 2, Padding::right_bottom(1)), PLAIN, 5);
    check(shape(1, 6, 7, 5, 9, 3, 2, Padding::same(1)), PLAIN, 6);
}

#[test]
fn conv2d_1x1_and_1x1_spatial() {
    check(shape(2, 8, 5, 6, 3, 1, 1, Padding::default()), PLAIN, 7);
    check(shape(3, 6, 1, 1, 7, 1, 1, Padding::default()), PLAIN, 8);
    check(shape(3, 6, 1, 1, 7, 3, 1, Padding::same(1)), PLAIN, 9);
    check(shape(1, 1, 1, 1, 1, 1, 1, Padding::default()), PLAIN, 10);
}

#[test]
fn conv2d_larger_kernels_and_channels() {
    check(shape(1, 2, 6, 6, 1, 5, 1, Padding::same(2)), PLAIN, 11);
    check(shape(1, 32, 16, 16, 64, 3, 1, Padding::same(1)), PLAIN, 12);
    check(shape(2, 64, 8, 8, 32, 3, 1, Padding::same(1)), PLAIN, 13);
}

#[test]
fn conv2d_wide_layers_with_partial_channel_groups() {
    // 33 and 37 output channels: the subgroup kernel's second group of 8 blocks is partial.
    check(shape(2, 5, 7, 7, 33, 3, 1, Padding::same(1)), PLAIN, 30);
    check(
        shape(1, 9, 9, 9, 37, 3, 2, Padding::right_bottom(1)),
        Flags { bias: true, channel_add: true, residual: false, scale: 0.5 },
        31,
    );
    check(
        shape(3, 16, 1, 1, 40, 1, 1, Padding::default()),
        Flags { bias: false, channel_add: true, residual: true, scale: 1.0 },
        32,
    );
    check(
        shape(1, 8, 5, 3, 64, 3, 1, Padding::same(1)),
        Flags { bias: true, channel_add: true, residual: true, scale: 0.7 },
        33,
    );
}

#[test]
fn conv2d_stride_1_on_whole_texel_rows() {
    // W % 4 == 0 at stride 1: the subgroup kernel reads each lane's 4 inputs per tap as one or two
    // texels. Borders on both sides, 1x1/3x3/5x5, odd heights, batches, partial channel groups.
    check(shape(2, 5, 7, 4, 33, 3, 1, Padding::same(1)), PLAIN, 40);
    check(shape(1, 3, 5, 8, 32, 5, 1, Padding::same(2)), PLAIN, 41);
    check(shape(3, 7, 3, 12, 40, 1, 1, Padding::default()), PLAIN, 42);
    check(
        shape(2, 9, 6, 16, 64, 3, 1, Padding::same(1)),
        Flags { bias: true, channel_add: true, residual: true, scale: 0.5 },
        43,
    );
    check(shape(1, 4, 9, 8, 36, 3, 1, Padding::right_bottom(1)), PLAIN, 44);
}

#[test]
fn conv2d_every_fusion_flag() {
    let s = shape(2, 6, 5, 7, 34, 3, 1, Padding::same(1));
    let mut seed = 100;
    for bias in [false, true] {
        for channel_add in [false, true] {
            for residual in [false, true] {
                for scale in [1.0, 0.5] {
                    seed += 1;
                    check(s, Flags { bias, channel_add, residual, scale }, seed);
                }
            }
        }
    }
}

#[test]
fn conv2d_random_shapes() {
    let mut r = rng(42);
    for seed in 0..12 {
        let k = [1, 3, 3, 5][r.random_range(0..4)];
        let stride = r.random_range(1..=2);
        let pad = match r.random_range(0..3) {
            0 => Padding::default(),
            1 => Padding::same(k / 2),
            _ => Padding::right_bottom(1),
        };
        let s = shape(
            r.random_range(1..=3),
            r.random_range(1..=9),
            r.random_range(k..=11),
            r.random_range(k..=11),
            r.random_range(1..=45),
            k,
            stride,
            pad,
        );
        let f = Flags {
            bias: r.random_bool(0.7),
            channel_add: r.random_bool(0.5),
            residual: r.random_bool(0.5),
            scale: if r.random_bool(0.5) { 1.0 } else { 0.7 },
        };
        check(s, f, 1000 + seed);
    }
}

#[test]
fn conv2d_split_k_matches_the_reference() {
    // Split-K (what `conv2d` picks on GPUs for small maps): partial sums over input-channel ranges,
    // then a reduce pass with the epilogue. Splits that divide Cin and splits that do not, more
    // splits than channels, stride 2, whole-texel rows and not, every epilogue input.
    if !wgpu_diffusion::kernels::has_subgroup_kernels(ctx()) {
        eprintln!("no subgroups of 8+ lanes on this adapter: split-K conv2d is not tested here");
        return;
    }
    let all = Flags { bias: true, channel_add: true, residual: true, scale: 0.5 };
    check_launch(shape(1, 16, 4, 4, 64, 3, 1, Padding::same(1)), PLAIN, 60, Launch::Split(4));
    check_launch(shape(2, 13, 8, 8, 36, 3, 1, Padding::same(1)), all, 61, Launch::Split(5));
    check_launch(shape(1, 3, 5, 7, 33, 3, 1, Padding::same(1)), all, 62, Launch::Split(8));
    check_launch(shape(2, 10, 9, 9, 40, 3, 2, Padding::right_bottom(1)), all, 63, Launch::Split(3));
    check_launch(shape(1, 24, 4, 4, 32, 1, 1, Padding::default()), PLAIN, 64, Launch::Split(24));
    let f = Flags { bias: false, channel_add: true, residual: false, scale: 1.0 };
    check_launch(shape(3, 9, 6, 12, 48, 3, 1, Padding::same(1)), f, 65, Launch::Split(2));
}

#[test]
fn conv2d_picks_split_k_only_on_gpus() {
    let c = ctx();
    let small = shape(1, 256, 4, 4, 256, 3, 1, Padding::same(1));
    let splits = conv2d::auto_splits(c, &small).unwrap();
    if c.is_cpu() || !wgpu_diffusion::kernels::has_subgroup_kernels(c) {
        assert_eq!(splits, 1, "CPU drivers and adapters without the subgroup kernel do not split");
    } else {
        assert!(splits > 1, "a 4x4 map leaves a GPU idle: {splits} split(s)");
        let big = shape(16, 128, 64, 64, 128, 3, 1, Padding::same(1));
        assert_eq!(conv2d::auto_splits(c, &big).unwrap(), 1, "a large grid needs no split");
        let few_channels = shape(1, 4, 4, 4, 64, 3, 1, Padding::same(1));
        assert_eq!(conv2d::auto_splits(c, &few_channels).unwrap(), 1, "36 steps are too few to split");
    }
}

#[test]
fn conv2d_rejects_bad_shapes() {
    let c = ctx();
    let s = shape(1, 2, 2, 2, 2, 5, 1, Padding::default());
    let x = output(8);
    let err = conv2d::conv2d(c, Launch::Auto, &s, &x.buffer, &x.buffer, &Epilogue::default(), &x.buffer)
        .unwrap_err();
    assert!(err.to_string().contains("does not fit"), "{err}");
    let s = shape(1, 2, 16, 16, 2, 3, 1, Padding::same(1));
    let small = output(100);
    let w = output(s.packed_weight_len());
    let err = conv2d::conv2d(c, Launch::Auto, &s, &small.buffer, &w.buffer, &Epilogue::default(), &x.buffer)
        .unwrap_err();
    assert!(err.to_string().contains("input holds"), "{err}");
    // Split-K refuses what the one-dispatch launch refuses, before any split arithmetic.
    let empty = shape(1, 0, 4, 4, 32, 3, 1, Padding::same(1));
    let err =
        conv2d::conv2d(c, Launch::Split(4), &empty, &x.buffer, &x.buffer, &Epilogue::default(), &x.buffer)
            .unwrap_err();
    assert!(err.to_string().contains("empty shape"), "{err}");
    let err =
        conv2d::conv2d(c, Launch::Split(2), &s, &small.buffer, &w.buffer, &Epilogue::default(), &x.buffer)
            .unwrap_err();
    assert!(err.to_string().contains("holds"), "{err}");
}

// Geometry. The grid is x: pixel blocks (8 pixels an invocation on the portable kernel, 4 on the
// subgroup one; WG_X = 8..64 invocations, narrower for small maps), y: channel blocks (2 vec4
// blocks an invocation portable, 8 subgroup), z: split-K's input-channel ranges.
// - BATCHES at 7x7, 3 -> 36 channels (Cout4 = 9): batch 1 is 49 pixels (one narrow workgroup, a
//   partial one), batch 33 is 1617 pixels (4 portable workgroups or 7 subgroup ones along x, the
//   last partial); y is 5 blocks portable (the last with one vec4 block) and 2 subgroup (the
//   second with one of its 8);
// - BATCHES at 28x28 stride 1 (the subgroup kernel's whole-texel-row path), 1 -> 32 channels, and
//   at 14x14 stride 2 with diffusers' right/bottom padding, every epilogue input;
// - every launch: portable, subgroup and split-K into 3 where the adapter has subgroups, and the
//   graph's `conv2d`;
// - x does not spill: 65535 workgroups are 16M+ output pixels, more than the largest activation
//   of any batch the model's `max_batch` allows on a binding of the device; past the limit the
//   launch is refused (checked on `spill_ctx`, whose limit is 4).
fn check_every_launch(s: Conv2dShape, f: Flags, seed: u64) {
    check(s, f, seed);
    if wgpu_diffusion::kernels::has_subgroup_kernels(ctx()) {
        check_launch(s, f, seed, Launch::Split(3));
    }
    // What the graph runs: `conv2d` with the split the adapter type selects.
    let mut r = rng(seed);
    let x = random(&mut r, s.n * s.cin * s.h * s.w);
    let w = random(&mut r, s.cout * s.cin * s.kh * s.kw);
    let want = conv2d::reference(&s, &x, &w, None, None, None, 1.0);
    let packed = conv2d::pack_weight(&w, s.cout, s.cin, s.kh, s.kw).unwrap();
    let (xt, wt, out) = (upload(&x), upload(&packed), output(s.out_len().unwrap()));
    let d =
        conv2d::conv2d(ctx(), Launch::Auto, &s, &xt.buffer, &wt.buffer, &Epilogue::default(), &out.buffer)
            .unwrap();
    ctx().run(&d);
    assert_close(&format!("conv2d (graph launch) {s:?}"), &read(&out), &want, RTOL);
}

#[test]
fn conv2d_geometry_every_batch() {
    let all = Flags { bias: true, channel_add: true, residual: true, scale: 0.5 };
    for (i, &n) in BATCHES.iter().enumerate() {
        let seed = 500 + 10 * i as u64;
        check_every_launch(shape(n, 3, 7, 7, 36, 3, 1, Padding::same(1)), PLAIN, seed);
        check_every_launch(shape(n, 1, 28, 28, 32, 3, 1, Padding::same(1)), all, seed + 1);
        check_every_launch(shape(n, 2, 14, 14, 9, 3, 2, Padding::right_bottom(1)), all, seed + 2);
    }
}

#[test]
fn conv2d_geometry_refuses_a_grid_over_the_limit() {
    let c = spill_ctx();
    // 33 x 7 x 7 pixels: 4 portable workgroups along x fit; 36 channels are 5 blocks along y.
    let s = shape(33, 3, 7, 7, 36, 3, 1, Padding::same(1));
    let (x, w, out) =
        (output_on(c, 33 * 3 * 49), output_on(c, s.packed_weight_len()), output_on(c, 33 * 36 * 49));
    let err = conv2d::conv2d(
        c,
        Launch::One(Variant::Portable),
        &s,
        &x.buffer,
        &w.buffer,
        &Epilogue::default(),
        &out.buffer,
    )
    .unwrap_err();
    assert!(err.to_string().contains("exceed this device's 4 per dimension"), "{err}");
}

#[test]
fn conv2d_geometry_split_k_reduce_spills_into_y() {
    let c = spill_ctx();
    if !wgpu_diffusion::kernels::has_subgroup_kernels(c) {
        eprintln!("no subgroups of 8+ lanes on this adapter: split-K conv2d is not tested here");
        return;
    }
    // 1 x 4 x 4 pixels x 128 channels: the first pass is 1 x 4 x 3 workgroups, the reduce pass
    // 2048 outputs in 8 workgroups on a 4 x 2 grid.
    let s = shape(1, 6, 4, 4, 128, 3, 1, Padding::same(1));
    let mut r = rng(660);
    let (x, w, bias, res) =
        (random(&mut r, 96), random(&mut r, 128 * 54), random(&mut r, 128), random(&mut r, 2048));
    let want = conv2d::reference(&s, &x, &w, Some(&bias), None, Some(&res), 0.5);
    let packed = conv2d::pack_weight(&w, 128, 6, 3, 3).unwrap();
    let (xt, wt, bt, rt, out) = (
        upload_on(c, &x),
        upload_on(c, &packed),
        upload_on(c, &bias),
        upload_on(c, &res),
        output_on(c, 2048),
    );
    let epi = Epilogue { bias: Some(&bt.buffer), channel_add: None, residual: Some(&rt.buffer), scale: 0.5 };
    let d = conv2d::conv2d(c, Launch::Split(3), &s, &xt.buffer, &wt.buffer, &epi, &out.buffer).unwrap();
    assert_eq!(d[1].workgroups, [4, 2, 1], "the reduce pass spills into y");
    c.run(&d);
    assert_close("conv2d split-K, reduce spilled into y", &read_on(c, &out), &want, RTOL);
}

#[test]
fn unpack_weight_inverts_pack_weight() {
    for (cout, cin, k) in [(1, 1, 1), (5, 3, 3), (36, 7, 1), (9, 2, 5)] {
        let w = random(&mut rng(cout as u64), cout * cin * k * k);
        let packed = conv2d::pack_weight(&w, cout, cin, k, k).unwrap();
        assert_eq!(conv2d::unpack_weight(&packed, cout, cin, k, k).unwrap(), w, "{cout} {cin} {k}");
    }
    assert!(conv2d::unpack_weight(&[0.0; 3], 1, 1, 1, 1).is_err());
}
