use wgpu_diffusion::kernels::elementwise as ew;

use wgpu_diffusion::gpu::Context;

use crate::*;

const LENS: [usize; 5] = [1, 7, 255, 257, 10_007];

#[test]
fn silu_add_affine() {
    for (i, &len) in LENS.iter().enumerate() {
        let mut r = rng(i as u64);
        let a: Vec<f32> = random(&mut r, len).iter().map(|v| v * 20.0).collect(); // saturating tails too
        let b = random(&mut r, len);
        let (at, bt) = (upload(&a), upload(&b));

        let y = output(len);
        run(ew::silu(ctx(), len, &at.buffer, &y.buffer).unwrap());
        assert_close("silu", &read(&y), &ew::reference_silu(&a), RTOL);

        let y = output(len);
        run(ew::add(ctx(), len, &at.buffer, &bt.buffer, &y.buffer).unwrap());
        assert_close("add", &read(&y), &ew::reference_add(&a, &b), RTOL);

        let y = output(len);
        run(ew::affine(ctx(), len, -0.37, 0.25, &at.buffer, &y.buffer).unwrap());
        assert_close("affine", &read(&y), &ew::reference_affine(-0.37, 0.25, &a), RTOL);
    }
}

#[test]
fn concat_channels() {
    for (i, &(n, ca, cb, hw)) in
        [(1, 1, 1, 1), (2, 3, 5, 49), (3, 64, 32, 16), (1, 7, 1, 9)].iter().enumerate()
    {
        let mut r = rng(10 + i as u64);
        let (a, b) = (random(&mut r, n * ca * hw), random(&mut r, n * cb * hw));
        let (at, bt, y) = (upload(&a), upload(&b), output(n * (ca + cb) * hw));
        run(ew::concat_channels(ctx(), n, ca, cb, hw, &at.buffer, &bt.buffer, &y.buffer).unwrap());
        // A copy: exact.
        assert_eq!(read(&y), ew::reference_concat(n, ca, cb, hw, &a, &b), "concat {n} {ca} {cb} {hw}");
    }
}

#[test]
fn upsample_nearest2x() {
    for (i, &(planes, h, w)) in [(1, 1, 1), (6, 7, 5), (2, 16, 16), (3, 1, 9)].iter().enumerate() {
        let x = random(&mut rng(20 + i as u64), planes * h * w);
        let (xt, y) = (upload(&x), output(planes * 4 * h * w));
        run(ew::upsample_nearest2x(ctx(), planes, h, w, &xt.buffer, &y.buffer).unwrap());
        assert_eq!(read(&y), ew::reference_upsample(planes, h, w, &x), "upsample {planes} {h} {w}");
    }
}

// Geometry: every kernel here is 1-D, 256 elements a workgroup, split over x and y past the
// device's per-dimension limit (concatenation is buffer copies, one pair per image).
// - BATCHES x one 7x7x2 map (98 values an image): 98 to 3234 elements, 1 to 13 workgroups, the
//   last partial; upsampling 1..33 images of 2 planes of 7x7 to 14x14;
// - the same on `spill_ctx` (4 workgroups per dimension): 3234 elements are 13 workgroups on a
//   4 x 4 grid, 3 past the end; the largest upsample 12936 outputs, 51 workgroups, is refused.
fn check_unary_on(c: &Context, len: usize, seed: u64) {
    let a: Vec<f32> = random(&mut rng(seed), len).iter().map(|v| v * 20.0).collect();
    let b = random(&mut rng(seed + 1), len);
    let (at, bt) = (upload_on(c, &a), upload_on(c, &b));
    let y = output_on(c, len);
    c.run(&[ew::silu(c, len, &at.buffer, &y.buffer).unwrap()]);
    assert_close(&format!("silu, {len}"), &read_on(c, &y), &ew::reference_silu(&a), RTOL);
    let y = output_on(c, len);
    c.run(&[ew::add(c, len, &at.buffer, &bt.buffer, &y.buffer).unwrap()]);
    assert_close(&format!("add, {len}"), &read_on(c, &y), &ew::reference_add(&a, &b), RTOL);
    let y = output_on(c, len);
    c.run(&[ew::affine(c, len, 1.5, -0.5, &at.buffer, &y.buffer).unwrap()]);
    assert_close(&format!("affine, {len}"), &read_on(c, &y), &ew::reference_affine(1.5, -0.5, &a), RTOL);
    // acc += a, twice: b + a + a, each sum rounded as f32 (as on the host).
    let acc = upload_on(c, &b);
    c.run(&[ew::accumulate(c, len, &at.buffer, &acc.buffer).unwrap()]);
    c.run(&[ew::accumulate(c, len, &at.buffer, &acc.buffer).unwrap()]);
    let want: Vec<f32> = b.iter().zip(&a).map(|(&b, &a)| (b + a) + a).collect();
    assert_eq!(read_on(c, &acc), want, "accumulate, {len}");
}

#[test]
fn elementwise_geometry_every_batch() {
    for (i, &n) in BATCHES.iter().enumerate() {
        for c in [ctx(), spill_ctx()] {
            check_unary_on(c, n * 98, 800 + i as u64);
        }
        let x = random(&mut rng(810 + i as u64), n * 2 * 49);
        let (xt, y) = (upload(&x), output(n * 2 * 196));
        run(ew::upsample_nearest2x(ctx(), n * 2, 7, 7, &xt.buffer, &y.buffer).unwrap());
        assert_eq!(read(&y), ew::reference_upsample(n * 2, 7, 7, &x), "upsample, batch {n}");
        let (a, b) = (random(&mut rng(820), n * 3 * 49), random(&mut rng(821), n * 5 * 49));
        let (at, bt, y) = (upload(&a), upload(&b), output(n * 8 * 49));
        run(ew::concat_channels(ctx(), n, 3, 5, 49, &at.buffer, &bt.buffer, &y.buffer).unwrap());
        assert_eq!(read(&y), ew::reference_concat(n, 3, 5, 49, &a, &b), "concat, batch {n}");
    }
    // Upsampling spilled into y: 4 planes of 7x7 are 784 outputs, 4 workgroups; 9 planes 7 (4 x 2).
    let c = spill_ctx();
    let x = random(&mut rng(830), 9 * 49);
    let (xt, y) = (upload_on(c, &x), output_on(c, 9 * 196));
    let d = ew::upsample_nearest2x(c, 9, 7, 7, &xt.buffer, &y.buffer).unwrap();
    assert_eq!(d.workgroups, [4, 2, 1]);
    c.run(&[d]);
    assert_eq!(read_on(c, &y), ew::reference_upsample(9, 7, 7, &x), "upsample spilled into y");
    let big = output_on(c, 33 * 2 * 196);
    let err = ew::upsample_nearest2x(c, 66, 7, 7, &big.buffer, &big.buffer).unwrap_err();
    assert!(err.to_string().contains("exceed this device's 4 per dimension"), "{err}");
}

/// The one spill a CPU driver reaches with real limits: an affine over more elements than
/// 65535 workgroups of 256 hold (16.8M values, 64 MiB, under lavapipe's 128 MiB binding), so the
/// grid spills into y on the device's own limit, not a lowered one.
#[test]
fn elementwise_geometry_spills_into_y_at_the_real_limit() {
    let max = ctx().limits.max_compute_workgroups_per_dimension as usize;
    let len = max * 256 + 1000;
    if 4 * len as u64 > ctx().max_binding_bytes() {
        eprintln!("{len} values exceed this device's binding: the lowered-limit spill tests cover it");
        return;
    }
    let x: Vec<f32> = (0..len).map(|i| (i % 1031) as f32 * 0.01 - 5.0).collect();
    let (xt, y) = (upload(&x), output(len));
    let d = ew::affine(ctx(), len, 0.5, 1.0, &xt.buffer, &y.buffer).unwrap();
    assert_eq!(d.workgroups, [max as u32, 2, 1]);
    run(d);
    let got = read(&y);
    let want = ew::reference_affine(0.5, 1.0, &x);
    // Exact: fma of values with few bits.
    let bad = got.iter().zip(&want).position(|(g, w)| g != w);
    assert_eq!(bad, None, "first element that differs");
}

// Geometry: gaussian_sample is 1-D over the latents (256 a workgroup): every batch in BATCHES of
// 4 channels over 7x7 (1 to 26 workgroups, the last partial), both modes, a scale and a shift;
// on `spill_ctx` 9 images are 7 workgroups on a 4 x 2 grid.
#[test]
fn gaussian_sample_every_batch_and_mode() {
    let on = |c: &wgpu_diffusion::gpu::Context, b: usize, mode: bool, seed: u64| {
        let (l, plane) = (4, 49);
        let mut r = rng(seed);
        // Log-variances past the clamp on both sides.
        let moments: Vec<f32> = random(&mut r, b * 2 * l * plane).iter().map(|v| v * 40.0).collect();
        let eps = random(&mut r, b * l * plane);
        let (mt, et, out) = (upload_on(c, &moments), upload_on(c, &eps), output_on(c, b * l * plane));
        let scale = (0.18215, 0.1);
        c.run(&[
            ew::gaussian_sample(c, b, l, plane, mode, scale, &mt.buffer, &et.buffer, &out.buffer).unwrap()
        ]);
        let want = ew::reference_gaussian_sample(l, plane, mode, scale, &moments, &eps);
        assert_close(&format!("gaussian_sample batch {b} mode {mode}"), &read_on(c, &out), &want, RTOL);
    };
    for (i, &b) in BATCHES.iter().enumerate() {
        on(ctx(), b, false, 300 + i as u64);
        on(ctx(), b, true, 310 + i as u64);
    }
    on(spill_ctx(), 9, false, 320);
}

/// The fixed-order sum ranks rely on: `sum_shares` over K shares gives the bits that `accumulate`
/// gives summing the same shares one by one (one process), and its reference's, for every K and
/// a length past a workgroup; on `spill_ctx` too.
#[test]
fn sum_shares_is_accumulate_share_by_share_bit_for_bit() {
    let on = |c: &wgpu_diffusion::gpu::Context, k: usize, len: usize, seed: u64| {
        let mut r = rng(seed);
        // Values of mixed magnitudes, where the order of additions shows in the bits.
        let x: Vec<f32> = random(&mut r, k * len)
            .iter()
            .enumerate()
            .map(|(i, v)| v * 10f32.powi((i % 7) as i32 - 3))
            .collect();
        let (xt, y) = (upload_on(c, &x), output_on(c, len));
        c.run(&[ew::sum_shares(c, len, k, &xt.buffer, &y.buffer).unwrap()]);
        let by_kernel = read_on(c, &y);
        // One process: the first share copied, then each share accumulated in order.
        let acc = upload_on(c, &x[..len]);
        for s in 1..k {
            let share = upload_on(c, &x[s * len..(s + 1) * len]);
            c.run(&[ew::accumulate(c, len, &share.buffer, &acc.buffer).unwrap()]);
        }
        let by_accumulate = read_on(c, &acc);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&by_kernel), bits(&by_accumulate), "{k} shares of {len}");
        assert_eq!(
            bits(&by_kernel),
            bits(&ew::reference_sum_shares(len, &x)),
            "{k} shares of {len}: reference"
        );
    };
    for (i, k) in [1, 2, 3, 4, 8].into_iter().enumerate() {
        on(ctx(), k, 1000, 400 + i as u64);
    }
    on(spill_ctx(), 4, 3000, 410);
}

#[test]
fn gelu_both_kinds_and_geglu() {
    for kind in [ew::Gelu::Erf, ew::Gelu::Quick] {
        for (i, &len) in LENS.iter().enumerate() {
            // Past erf's clamp at 4 and deep into both tails.
            let x: Vec<f32> = random(&mut rng(40 + i as u64), len).iter().map(|v| v * 12.0).collect();
            let (xt, y) = (upload(&x), output(len));
            run(ew::gelu(ctx(), kind, len, &xt.buffer, &y.buffer).unwrap());
            let want: Vec<f32> = x.iter().map(|&v| kind.reference(v as f64) as f32).collect();
            assert_close(&format!("{kind:?} gelu, {len}"), &read(&y), &want, RTOL);
        }
        // GEGLU where its halves are whole channels: 1x1 maps, odd sizes, a launch of many groups.
        for (i, &(n, c, hw)) in [(1, 1, 1), (2, 3, 77), (3, 40, 64), (1, 1280, 9)].iter().enumerate() {
            let x: Vec<f32> =
                random(&mut rng(50 + i as u64), n * 2 * c * hw).iter().map(|v| v * 4.0).collect();
            let (xt, y) = (upload(&x), output(n * c * hw));
            run(ew::geglu(ctx(), kind, n, c, hw, &xt.buffer, &y.buffer).unwrap());
            let want = ew::reference_geglu(kind, n, c, hw, &x);
            assert_close(&format!("{kind:?} geglu {n}x{c}x{hw}"), &read(&y), &want, RTOL);
        }
    }
}

/// Nearest upsampling to a given size (F.interpolate's floor rule), as a UNet whose latents do
/// not halve evenly meets its skips: 2 -> 3, 3 -> 6, (2, 2) -> (3, 4), (5, 7) -> (10, 14), and
/// a launch of several groups.
#[test]
fn upsample_nearest_to_a_size() {
    for (i, &(planes, from, to)) in [
        (1, (2, 2), (3, 3)),
        (3, (3, 3), (6, 6)),
        (2, (2, 2), (3, 4)),
        (5, (5, 7), (10, 14)),
        (64, (7, 9), (13, 17)),
    ]
    .iter()
    .enumerate()
    {
        let x = random(&mut rng(60 + i as u64), planes * from.0 * from.1);
        let (xt, y) = (upload(&x), output(planes * to.0 * to.1));
        run(ew::upsample_nearest(ctx(), planes, from, to, &xt.buffer, &y.buffer).unwrap());
        assert_eq!(read(&y), ew::reference_upsample_to(planes, from, to, &x), "{from:?} -> {to:?}");
    }
    // Rows 0, 0, 1 of a 2-row plane at 3 rows, as diffusers' 12x12 latents take them.
    assert_eq!(ew::reference_upsample_to(1, (2, 1), (3, 1), &[5.0, 7.0]), vec![5.0, 5.0, 7.0]);
}
