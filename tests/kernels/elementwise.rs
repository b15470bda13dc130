use wgpu_diffusion::kernels::elementwise as ew;

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
