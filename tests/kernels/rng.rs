use wgpu_diffusion::kernels::rng::{self, NoiseKey};

use crate::*;

fn generate(key: NoiseKey, streams: usize, per_stream: usize) -> Vec<f32> {
    let out = output(streams * per_stream);
    run(rng::normal(ctx(), key, streams, per_stream, None, &out.buffer).unwrap());
    read(&out)
}

#[test]
fn philox_known_answer() {
    // Random123's published known-answer vectors for philox4x32-10.
    assert_eq!(rng::philox4x32_10([0, 0, 0, 0], [0, 0]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
    assert_eq!(
        rng::philox4x32_10([0xffffffff; 4], [0xffffffff; 2]),
        [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
    );
    assert_eq!(
        rng::philox4x32_10([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]),
        [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
    );
}

#[test]
fn device_matches_reference() {
    let key = NoiseKey { seed: 0x1234_5678_9abc_def0, stream_base: 3, substream: 11 };
    let got = generate(key, 3, 1001);
    let want = rng::reference(key, 0, 3, 1001);
    let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs() / (1.0 + w.abs())).fold(0.0f32, f32::max);
    assert!(worst <= 1e-5, "device vs reference: {worst:e}");
}

#[test]
fn same_key_same_numbers_whatever_the_dispatch() {
    let key = NoiseKey { seed: 42, stream_base: 0, substream: 0 };
    let a = generate(key, 4, 999);
    assert_eq!(a, generate(key, 4, 999), "same key, same bits");
    // A longer stream starts with the same numbers.
    let longer = generate(key, 1, 5000);
    assert_eq!(&a[..999], &longer[..999]);
    // Stream k of a batch equals stream k alone.
    for k in 0..4 {
        let alone = generate(NoiseKey { stream_base: k as u32, ..key }, 1, 999);
        assert_eq!(&a[k * 999..(k + 1) * 999], &alone[..], "stream {k}");
    }
    assert_ne!(a, generate(NoiseKey { seed: 43, ..key }, 4, 999), "another seed, other numbers");
    assert_ne!(a, generate(NoiseKey { substream: 1, ..key }, 4, 999), "another substream, other numbers");
}

#[test]
fn device_step_counter_shifts_the_substream() {
    let key = NoiseKey { seed: 9, stream_base: 0, substream: 5 };
    let counter = ctx().upload_u32(&[2], &[1]).unwrap();
    let out = output(100);
    run(rng::normal(ctx(), key, 1, 100, Some(&counter.buffer), &out.buffer).unwrap());
    assert_eq!(read(&out), generate(NoiseKey { substream: 7, ..key }, 1, 100));
}

#[test]
fn statistics_over_a_million_samples() {
    let n = 1 << 20;
    let x: Vec<f64> = generate(NoiseKey { seed: 2024, stream_base: 0, substream: 0 }, 2, n / 2)
        .iter()
        .map(|&v| v as f64)
        .collect();
    let nf = n as f64;
    let mean = x.iter().sum::<f64>() / nf;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / nf;
    let kurt = x.iter().map(|v| (v - mean).powi(4)).sum::<f64>() / nf / (var * var);
    let within_1 = x.iter().filter(|v| v.abs() < 1.0).count() as f64 / nf;
    // Standard errors: mean 1e-3, variance 1.4e-3, kurtosis ~5e-3, fraction 4.5e-4. Bounds are ~5 sigma.
    assert!(mean.abs() < 5e-3, "mean {mean}");
    assert!((var - 1.0).abs() < 7e-3, "variance {var}");
    assert!((kurt - 3.0).abs() < 0.03, "kurtosis {kurt}");
    assert!((within_1 - 0.682_689).abs() < 2.5e-3, "P(|z| < 1) = {within_1}");
    // Independence: neighbours within a stream, across the Box-Muller pair, and across streams.
    let corr = |a: &[f64], b: &[f64]| {
        let m = a.len() as f64;
        a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>() / m
    };
    let half = n / 2;
    for (what, r) in [
        ("lag 1", corr(&x[..n - 1], &x[1..])),
        ("lag 2", corr(&x[..n - 2], &x[2..])),
        ("lag 4", corr(&x[..n - 4], &x[4..])),
        ("stream 0 vs 1", corr(&x[..half], &x[half..])),
    ] {
        assert!(r.abs() < 5e-3, "{what} correlation {r}");
    }
}

// Geometry: 1-D over (stream, group of 4 values), 256 a workgroup, split over x and y past the
// limit. Every batch in BATCHES of one 28x28 image a stream (1 to 26 workgroups, the last partial:
// 33 x 196 groups), and on `spill_ctx` batches 1 to 16 of 7x7 maps (16 x 13 = 208 groups; at 33
// streams of 149 values, 5 workgroups on a 4 x 2 grid).
#[test]
fn normal_geometry_every_batch() {
    let key = NoiseKey { seed: 77, stream_base: 5, substream: 3 };
    let on = |c: &wgpu_diffusion::gpu::Context, streams: usize, per: usize| {
        let out = output_on(c, streams * per);
        c.run(&[rng::normal(c, key, streams, per, None, &out.buffer).unwrap()]);
        let got = read_on(c, &out);
        let want = rng::reference(key, 0, streams, per);
        let worst =
            got.iter().zip(&want).map(|(g, w)| (g - w).abs() / (1.0 + w.abs())).fold(0.0f32, f32::max);
        assert!(worst <= 1e-5, "{streams} streams of {per}: {worst:e}");
        got
    };
    for &n in &BATCHES {
        let all = on(ctx(), n, 784);
        // Stream k of the batch is stream k alone, whatever the grid.
        let last = on(spill_ctx(), 1, 784);
        assert_eq!(&all[..784], &last[..], "stream 0, batch {n}");
        on(spill_ctx(), n.min(16), 49);
    }
    on(spill_ctx(), 33, 149);
}

// Training's timesteps: one invocation an image, 256 a workgroup (batches 1 to 300: two
// workgroups, the second partial), keyed by the device step counter.
#[test]
fn timesteps_match_the_reference_and_are_uniform() {
    let c = ctx();
    let key = NoiseKey { seed: 5, stream_base: 0, substream: 0 };
    let counter = c.upload_u32(&[3], &[1]).unwrap();
    for &batch in BATCHES.iter().chain(&[300]) {
        let (index, value) = (c.upload_u32(&vec![u32::MAX; batch], &[batch]).unwrap(), output(batch));
        run(rng::timesteps(c, key, batch, 1000, &counter.buffer, &index.buffer, &value.buffer).unwrap());
        let want = rng::reference_timesteps(key, 3, batch, 1000);
        assert_eq!(c.read_u32(&index).unwrap(), want, "batch {batch}");
        assert_eq!(read(&value), want.iter().map(|&t| t as f32).collect::<Vec<_>>(), "batch {batch}");
    }
    // Uniform over [0, T): 20000 draws of T = 10 (one per image of many steps' batches).
    let mut counts = [0usize; 10];
    for step in 0..100 {
        for t in rng::reference_timesteps(key, step, 200, 10) {
            counts[t as usize] += 1;
        }
    }
    assert!(counts.iter().all(|&n| (1800..2200).contains(&n)), "{counts:?}");
    // Another step, other timesteps; the noise's blocks (last word 0) are not these.
    assert_ne!(rng::reference_timesteps(key, 0, 64, 1000), rng::reference_timesteps(key, 1, 64, 1000));
}
