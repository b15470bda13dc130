use rand::Rng;
use wgpu_diffusion::kernels::softmax;

use crate::*;

fn check(rows: usize, cols: usize, scale: f32, amplitude: f32, seed: u64) {
    let mut r = rng(seed);
    let mut x = random(&mut r, rows * cols);
    x.iter_mut().for_each(|v| *v *= amplitude);
    let want = softmax::reference(rows, cols, scale, &x);
    let (xt, out) = (upload(&x), output(rows * cols));
    run(softmax::softmax(ctx(), rows, cols, scale, &xt.buffer, &out.buffer).unwrap());
    assert_close(&format!("softmax {rows}x{cols} scale {scale}"), &read(&out), &want, RTOL);
    // Unnormalised, times the inverse sums it writes.
    let inv = output(rows);
    run(softmax::softmax_unnormalized(ctx(), rows, cols, scale, &xt.buffer, &out.buffer, &inv.buffer)
        .unwrap());
    let (e, inv) = (read(&out), read(&inv));
    let got: Vec<f32> = e.iter().enumerate().map(|(i, v)| v * inv[i / cols]).collect();
    assert_close(&format!("unnormalised softmax {rows}x{cols}"), &got, &want, RTOL);
    // In place, as composed attention runs it.
    run(softmax::softmax(ctx(), rows, cols, scale, &xt.buffer, &xt.buffer).unwrap());
    assert_close(&format!("in-place softmax {rows}x{cols}"), &read(&xt), &want, RTOL);
}

#[test]
fn softmax_rows_whole_texels_and_not() {
    check(1, 1, 1.0, 1.0, 1); // a single value: 1
    check(3, 4, 0.5, 1.0, 2);
    check(7, 13, 1.0, 1.0, 3);
    check(64, 256, 0.125, 1.0, 4);
    check(65, 1030, 1.0, 1.0, 5); // several texel rows per softmax row
}

#[test]
fn softmax_survives_large_scores() {
    check(5, 40, 1.0, 300.0, 6);
    check(5, 41, 2.0, 300.0, 7);
}

#[test]
fn softmax_random_shapes() {
    let mut r = rng(9);
    for seed in 0..10 {
        check(r.random_range(1..=80), r.random_range(1..=300), r.random_range(0.05..2.0), 3.0, 100 + seed);
    }
}

#[test]
fn softmax_rejects_short_buffers() {
    let t = output(10);
    let err = softmax::softmax(ctx(), 10, 30, 1.0, &t.buffer, &t.buffer).unwrap_err();
    assert!(err.to_string().contains("needs 300"), "{err}");
}

// Geometry: 1-D over rows, 64 rows a workgroup, split over x and y past the limit.
// - attention's rows at every batch in BATCHES (batch x 2 heads x 49 tokens of 49 scores): 98 to
//   3234 rows, 2 to 51 workgroups, the last partial; the same on `spill_ctx` up to batch 7 (686
//   rows, 11 workgroups on a 4 x 3 grid, one past the end).
#[test]
fn softmax_geometry_every_batch() {
    for (i, &n) in BATCHES.iter().enumerate() {
        check(n * 2 * 49, 49, 0.17, 2.0, 900 + i as u64);
    }
    let c = spill_ctx();
    for (i, rows) in [98usize, 686].into_iter().enumerate() {
        let x = random(&mut rng(910 + i as u64), rows * 49);
        let want = softmax::reference(rows, 49, 0.5, &x);
        let (xt, out) = (upload_on(c, &x), output_on(c, rows * 49));
        c.run(&[softmax::softmax(c, rows, 49, 0.5, &xt.buffer, &out.buffer).unwrap()]);
        assert_close(&format!("softmax {rows}x49 on the spill context"), &read_on(c, &out), &want, RTOL);
    }
}

// The softmax backward: 1-D over rows, 64 a workgroup; attention's rows at every batch in
// BATCHES (98 to 3234 rows of 49) and on `spill_ctx` (686 rows: 11 workgroups on 4 x 3).
#[test]
fn softmax_backward_every_batch() {
    let on = |c: &wgpu_diffusion::gpu::Context, rows: usize, cols: usize, seed: u64| {
        let x = random(&mut rng(seed), rows * cols);
        let probs = softmax::reference(rows, cols, 1.0, &x);
        let dp = random(&mut rng(seed + 1), rows * cols);
        let want = softmax::reference_backward(rows, cols, 0.25, &probs, &dp);
        let (pt, gt) = (upload_on(c, &probs), upload_on(c, &dp));
        c.run(&[softmax::softmax_backward(c, rows, cols, 0.25, &pt.buffer, &gt.buffer).unwrap()]);
        assert_close(&format!("softmax backward {rows}x{cols}"), &read_on(c, &gt), &want, RTOL);
    };
    for (i, &n) in BATCHES.iter().enumerate() {
        on(ctx(), n * 2 * 49, 49, 950 + i as u64);
    }
    on(spill_ctx(), 686, 49, 960);
    on(ctx(), 3, 1, 961);
}
