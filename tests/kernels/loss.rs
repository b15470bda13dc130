//! The MSE loss, the sum of squares, and the backward elementwise kernels (SiLU, nearest 2x upsample, the MSE gradient).
//!
//! Geometry: the loss's first pass is 1-D over at most 256 workgroups of 256, each summing
//! ceil(len / (256 x workgroups)) values an invocation; its second pass is one workgroup. Lengths
//! 1 (one partial value), 255 and 257 (one and two workgroups, partial), 28x28 at every batch in
//! BATCHES, and 2^20 + 3 (241 workgroups of 17 values an invocation, the last short); on
//! `spill_ctx` (98 values an image) the first pass is at most 13 workgroups on a 4 x 4 grid. The backward kernels are
//! 1-D over their outputs, 256 a workgroup, as the forward ones (see elementwise.rs): every batch
//! in BATCHES, and on `spill_ctx`.

use wgpu_diffusion::gpu::Context;
use wgpu_diffusion::kernels::{elementwise as ew, loss};

use crate::*;

fn check_loss_on(c: &Context, len: usize, mean_over: usize, seed: u64) {
    let mut r = rng(seed);
    let (pred, target) = (random(&mut r, len), random(&mut r, len));
    let (pt, tt, out) = (upload_on(c, &pred), upload_on(c, &target), output_on(c, 1));
    let d = loss::mse_loss(c, len, mean_over, &pt.buffer, &tt.buffer, &out.buffer).unwrap();
    c.run(&d);
    let got = read_on(c, &out)[0];
    let want = loss::reference_mse(&pred, &target, mean_over);
    assert!(((got - want) / want).abs() <= 1e-5, "mse of {len}: {got} vs {want}");
    // Deterministic: the same bits again.
    c.run(&d);
    assert_eq!(read_on(c, &out)[0].to_bits(), got.to_bits(), "mse of {len}, run twice");
    // The sum of squares (clipping's), into slot 2 of 3.
    let sums = upload_on(c, &[7.0; 3]);
    c.run(&loss::sum_of_squares(c, len, &pt.buffer, &sums.buffer, 2).unwrap());
    let want: f64 = pred.iter().map(|&v| (v as f64).powi(2)).sum();
    let got = read_on(c, &sums);
    assert!(
        ((got[2] as f64 - want) / want).abs() <= 1e-5 && got[..2] == [7.0, 7.0],
        "sum of squares of {len}: {got:?} vs {want}"
    );
    let grad = output_on(c, len);
    c.run(&[ew::mse_grad(c, len, mean_over, &pt.buffer, &tt.buffer, &grad.buffer).unwrap()]);
    assert_eq!(
        read_on(c, &grad),
        ew::reference_mse_grad(&pred, &target, mean_over),
        "mse gradient of {len}, bit for bit"
    );
}

#[test]
fn mse_loss_and_gradient_every_length() {
    for (i, len) in [1, 255, 257, 10_007, (1 << 20) + 3].into_iter().enumerate() {
        check_loss_on(ctx(), len, len, 10 + i as u64);
    }
    for (i, &n) in BATCHES.iter().enumerate() {
        check_loss_on(ctx(), n * 784, n * 784, 20 + i as u64);
        // 98 values an image: the gradient's 1-D grid (up to 13 workgroups) fits 4 x 4 too.
        check_loss_on(spill_ctx(), n * 98, n * 98, 30 + i as u64);
    }
    // A micro-batch of 3 images out of 12: the mean is over the whole batch.
    check_loss_on(ctx(), 3 * 784, 12 * 784, 40);
    assert!(loss::mse_loss(ctx(), 10, 9, &ctx().dummy, &ctx().dummy, &ctx().dummy).is_err());
}

#[test]
fn silu_and_upsample_backward_every_batch() {
    for (i, &n) in BATCHES.iter().enumerate() {
        for c in [ctx(), spill_ctx()] {
            let len = n * 98;
            let mut r = rng(40 + i as u64);
            let x: Vec<f32> = random(&mut r, len).iter().map(|v| v * 12.0).collect(); // saturating tails
            let dy = random(&mut r, len);
            let (xt, dyt, dx) = (upload_on(c, &x), upload_on(c, &dy), output_on(c, len));
            c.run(&[ew::silu_backward(c, len, &xt.buffer, &dyt.buffer, &dx.buffer).unwrap()]);
            assert_close(
                &format!("silu backward, {len}"),
                &read_on(c, &dx),
                &ew::reference_silu_backward(&x, &dy),
                RTOL,
            );
            // 2 planes of 7x7 an image, upsampled to 14x14.
            let planes = 2 * n;
            let dy = random(&mut r, planes * 196);
            let (dyt, dx) = (upload_on(c, &dy), output_on(c, planes * 49));
            c.run(&[ew::upsample_nearest2x_backward(c, planes, 7, 7, &dyt.buffer, &dx.buffer).unwrap()]);
            let want = ew::reference_upsample_backward(planes, 7, 7, &dy);
            assert_close(&format!("upsample backward, {planes} planes"), &read_on(c, &dx), &want, RTOL);
        }
    }
    // Odd sizes: 3 planes of 5x3, 1x1.
    for (planes, h, w) in [(3, 5, 3), (1, 1, 1)] {
        let dy = random(&mut rng(50), planes * 4 * h * w);
        let (dyt, dx) = (upload(&dy), output(planes * h * w));
        run(ew::upsample_nearest2x_backward(ctx(), planes, h, w, &dyt.buffer, &dx.buffer).unwrap());
        assert_close(
            "upsample backward, odd",
            &read(&dx),
            &ew::reference_upsample_backward(planes, h, w, &dy),
            RTOL,
        );
    }
}

#[test]
fn silu_backward_matches_finite_differences_of_the_forward_reference() {
    // The backward reference itself, against the forward's slope: a cross-check of the formula.
    let x = [-8.0f32, -1.5, -0.1, 0.0, 0.3, 2.0, 9.0];
    let dy = vec![1.0f32; x.len()];
    let got = ew::reference_silu_backward(&x, &dy);
    for (i, &v) in x.iter().enumerate() {
        let f = |v: f64| v / (1.0 + (-v).exp());
        let h = 1e-4;
        let slope = (f(v as f64 + h) - f(v as f64 - h)) / (2.0 * h);
        assert!((got[i] as f64 - slope).abs() < 1e-6, "x = {v}: {} vs {slope}", got[i]);
    }
}

#[test]
fn concat_backward_splits_dy_every_batch() {
    for (i, &n) in BATCHES.iter().enumerate() {
        let (ca, cb, hw) = (3, 5, 49);
        let dy = random(&mut rng(70 + i as u64), n * (ca + cb) * hw);
        let (dyt, da, db) = (upload(&dy), output(n * ca * hw), output(n * cb * hw));
        run(ew::concat_channels_backward(ctx(), n, ca, cb, hw, &dyt.buffer, &da.buffer, &db.buffer).unwrap());
        let (ga, gb) = (read(&da), read(&db));
        // Concatenating the gradients back gives dy: a copy, exact.
        assert_eq!(ew::reference_concat(n, ca, cb, hw, &ga, &gb), dy, "concat backward, batch {n}");
    }
}
