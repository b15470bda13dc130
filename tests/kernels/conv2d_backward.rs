//! conv2d's backward against its reference.
//!
//! Geometry: the input gradient's conv form is a weight flip (1-D over the flipped weight), a
//! dilation or phases for strides (1-D over the map) and a stride-1 forward conv (see conv2d.rs
//! for its grid, which these shapes reach the same way: 1 to 33 images of 7x7 and 8x8, channel
//! blocks partial). Its column form is a matmul (see matmul.rs) and col2im, 1-D over dx's rows in
//! workgroups of 64 (up to 11 here), the stride a pipeline constant. The transposed stride-2
//! kernel is 1-D over (dx row, image, quad of 4 columns) in workgroups of 8 to 64, blocks of 32
//! dx channels along y. Every form runs every case it applies to.
//! Cases: every batch in BATCHES at 3 -> 36 channels, 3x3 same padding; stride 2 with both of
//! diffusers' paddings on even and odd maps (output padding 1 and 0); 1x1; 5x5 with padding 2;
//! an output scale; the transposed kernel's shapes (W % 4 == 0, 2x2 to 5x5); the operating points
//! where Auto picks each form (bundled 28 -> 14 at batch 16, ddpm-cifar10-32 at 16x16 and below),
//! and Auto's pick itself.
//!
//! The parameter gradients: x and dy are copied channels-last (a workgroup per image and block of
//! 4 channels, 64 lanes walking the plane; dy's copy also sums it into d channel add). The
//! portable weight gradient is 1-D over (split, tap, pair of 4-input-channel blocks, pair of
//! 4-output-channel blocks), 64 a workgroup; the subgroup one is (tap, input block) along x in
//! workgroups of 8 to 64, blocks of 32 output channels along y, splits along z. Splits are whole
//! output rows (up to 16,384 pixels a split; on CPU drivers as many as give 16 workgroups, on
//! GPUs as fill the device, up to 64) summed in order by the split-K reduce; the bias gradient is
//! a matmul with k = N. Both kernels run every case (the subgroup one where the adapter has it,
//! also below 32 output channels). Cases: every batch in BATCHES (up to 33 x 7 x 7 pixels: 1 to 6
//! splits); 33 x 28 x 28 = 25,872 pixels (16 splits); single and partial blocks (3 -> 36: one
//! input block, 9 output blocks, a second block of 32 with one; 5 -> 9; 12 -> 20), 32 -> 64 (72
//! lanes: three workgroups of 24), stride 2 with both paddings, 1x1, 5x5; the same bits when run
//! twice; d bias without d channel add (one image: written in its place).

use wgpu_diffusion::kernels::conv2d::{self, Conv2dShape, Padding};
use wgpu_diffusion::kernels::conv2d_backward as back;

use crate::*;

#[allow(clippy::too_many_arguments)]
fn check_params(
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: Padding,
    scale: f32,
    seed: u64,
) {
    let s = Conv2dShape { n, cin, h, w, cout, kh: k, kw: k, stride, pad };
    let (ho, wo) = s.out_hw().unwrap();
    let mut r = rng(seed);
    let (x, dy) = (random(&mut r, n * cin * h * w), random(&mut r, n * cout * ho * wo));
    let (want_dw, want_db, want_dchan) = back::reference_backward_params(&s, &x, &dy, scale);
    let (xt, dyt) = (upload(&x), upload(&dy));
    let (dw, db, dchan) = (output(s.packed_weight_len()), output(cout), output(n * cout));
    let g = back::ConvParamGrads { dw: &dw.buffer, db: Some(&db.buffer), dchan: Some(&dchan.buffer) };
    // In the packed layout, padding channels zero.
    let want_packed = conv2d::pack_weight(&want_dw, cout, cin, k, k).unwrap();
    // Each kernel on every shape (the subgroup one also below the 32 output channels where Auto
    // would pick it).
    for variant in variants() {
        let d = back::conv2d_backward_params(ctx(), variant, &s, &xt.buffer, &dyt.buffer, scale, &g).unwrap();
        ctx().run(&d);
        let what = format!("conv2d parameter gradients {s:?}, {variant:?} kernel");
        let got = read(&dw);
        assert_close(&format!("{what}: d weight"), &got, &want_packed, RTOL);
        assert_close(&format!("{what}: d bias"), &read(&db), &want_db, RTOL);
        assert_close(&format!("{what}: d channel add"), &read(&dchan), &want_dchan, RTOL);
        ctx().run(&d);
        assert_eq!(read(&dw), got, "{what}: the same bits again");
        // Without d channel add (a conv with no time embedding): d bias the same (with one
        // image it is written where d channel add would be).
        let (dw2, db2) = (output(s.packed_weight_len()), output(cout));
        let g2 = back::ConvParamGrads { dw: &dw2.buffer, db: Some(&db2.buffer), dchan: None };
        let d =
            back::conv2d_backward_params(ctx(), variant, &s, &xt.buffer, &dyt.buffer, scale, &g2).unwrap();
        ctx().run(&d);
        assert_eq!(read(&dw2), got, "{what}: d weight without d channel add");
        assert_close(&format!("{what}: d bias without d channel add"), &read(&db2), &want_db, RTOL);
    }
}

#[test]
fn conv2d_parameter_gradients_every_batch() {
    for (i, &n) in BATCHES.iter().enumerate() {
        check_params(n, 3, 7, 7, 36, 3, 1, Padding::same(1), 1.0, 50 + i as u64);
    }
    // 25,872 pixels: more than one split of the reduction on CPU drivers.
    check_params(33, 1, 28, 28, 5, 3, 1, Padding::same(1), 0.5, 60);
}

#[test]
fn conv2d_parameter_gradients_strides_paddings_and_kernels() {
    check_params(2, 5, 8, 8, 9, 3, 2, Padding::same(1), 1.0, 70);
    check_params(3, 4, 7, 8, 9, 3, 2, Padding::right_bottom(1), 1.0, 71);
    check_params(2, 8, 5, 6, 7, 1, 1, Padding::default(), 0.7, 72);
    check_params(1, 2, 6, 6, 3, 5, 1, Padding::same(2), 1.0, 73);
    check_params(2, 32, 8, 8, 64, 3, 1, Padding::same(1), 1.0, 74);
    check_params(3, 12, 9, 7, 20, 3, 2, Padding::same(1), 0.5, 75);
}

#[allow(clippy::too_many_arguments)]
fn check(
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: Padding,
    scale: f32,
    seed: u64,
) {
    let s = Conv2dShape { n, cin, h, w, cout, kh: k, kw: k, stride, pad };
    let (ho, wo) = s.out_hw().unwrap();
    let mut r = rng(seed);
    let (dy, weight) = (random(&mut r, n * cout * ho * wo), random(&mut r, cout * cin * k * k));
    let want = back::reference_backward_input(&s, &dy, &weight, scale);
    let packed = conv2d::pack_weight(&weight, cout, cin, k, k).unwrap();
    let (dyt, wt, dx) = (upload(&dy), upload(&packed), output(n * cin * h * w));
    let mut forms = vec![back::GradForm::Conv, back::GradForm::Columns];
    if back::transposed_applies(ctx(), &s) {
        forms.push(back::GradForm::Transposed);
    }
    for form in forms {
        let d =
            back::conv2d_backward_input(ctx(), form, &s, &dyt.buffer, &wt.buffer, scale, &dx.buffer).unwrap();
        ctx().run(&d);
        assert_close(&format!("conv2d input gradient {s:?}, {form:?} form"), &read(&dx), &want, RTOL);
    }
}

#[test]
fn conv2d_input_gradient_every_batch() {
    for (i, &n) in BATCHES.iter().enumerate() {
        check(n, 3, 7, 7, 36, 3, 1, Padding::same(1), 1.0, 10 + i as u64);
    }
}

#[test]
fn conv2d_input_gradient_strides_paddings_and_kernels() {
    // Downsample2D(padding=1) and (padding=0: right/bottom only), on even and odd maps.
    for (i, (h, pad)) in [
        (8, Padding::same(1)),
        (7, Padding::same(1)),
        (8, Padding::right_bottom(1)),
        (7, Padding::right_bottom(1)),
    ]
    .into_iter()
    .enumerate()
    {
        check(2, 5, h, h, 9, 3, 2, pad, 1.0, 20 + i as u64);
        check(9, 4, h, h + 1, 33, 3, 2, pad, 0.5, 30 + i as u64);
    }
    // Stride 3 over a 2x2 kernel: one residue in three has no tap, so the dilated form runs;
    // stride 3 over 5x5 runs by phases of 2, 2 and 1 taps.
    check(2, 3, 9, 8, 5, 2, 3, Padding::default(), 1.0, 43);
    check(2, 3, 10, 11, 5, 5, 3, Padding::same(2), 1.0, 44);
    check(3, 6, 5, 6, 7, 1, 1, Padding::default(), 1.0, 40);
    check(1, 2, 6, 6, 3, 5, 1, Padding::same(2), 1.0, 41);
    check(2, 32, 8, 8, 64, 3, 1, Padding::same(1), 0.7, 42);
    // The transposed stride-2 kernel's geometry (W % 4 == 0): 1 to 2 blocks of 32 dx channels,
    // lanes (row, image, quad) over 8 to 64 a workgroup, subgroups spanning two dx rows (3 quads
    // a row) and one (8 quads), odd heights, 2x2, 3x3 and 5x5 kernels, both paddings.
    check(12, 7, 9, 12, 36, 3, 2, Padding::same(1), 0.5, 48);
    check(3, 40, 7, 28, 16, 3, 2, Padding::right_bottom(1), 1.0, 49);
    check(2, 33, 6, 32, 9, 3, 2, Padding::same(1), 1.0, 50);
    check(2, 6, 8, 8, 5, 2, 2, Padding::default(), 1.0, 51);
    check(2, 6, 11, 12, 5, 5, 2, Padding::same(2), 1.0, 52);
    // An odd dy width (12 -> 5): no tap column reads its two dy columns as one texel half.
    check(2, 6, 8, 12, 5, 3, 2, Padding::default(), 1.0, 55);
    // The operating points where Auto picks the transposed kernel (the bundled model's 28 -> 14
    // at batch 16) and the column form (ddpm-cifar10-32's 16 -> 8).
    check(16, 32, 28, 28, 32, 3, 2, Padding::same(1), 1.0, 53);
    check(1, 256, 16, 16, 256, 3, 2, Padding::right_bottom(1), 1.0, 54);
    // Where Auto picks the column form (N Ho Wo <= Cout), at ddpm-cifar10-32's low resolutions.
    check(2, 64, 4, 5, 96, 3, 1, Padding::same(1), 1.0, 45);
    check(1, 256, 4, 4, 256, 3, 1, Padding::same(1), 1.0, 46);
    check(1, 96, 8, 8, 80, 3, 2, Padding::right_bottom(1), 1.0, 47);
}

#[test]
fn conv2d_input_gradient_auto_picks_its_form_by_shape() {
    use back::GradForm;
    let shape =
        |n, c, hw, stride, pad| Conv2dShape { n, cin: c, h: hw, w: hw, cout: c, kh: 3, kw: 3, stride, pad };
    let auto = |s: &Conv2dShape| GradForm::Auto.resolve(ctx(), s).unwrap();
    // ddpm-cifar10-32: columns at 16x16 and below (N Ho Wo <= Cout), the conv form at 32x32.
    assert_eq!(auto(&shape(1, 256, 16, 1, Padding::same(1))), GradForm::Columns);
    assert_eq!(auto(&shape(1, 256, 16, 2, Padding::right_bottom(1))), GradForm::Columns);
    assert_eq!(auto(&shape(1, 128, 32, 1, Padding::same(1))), GradForm::Conv);
    // Its 32 -> 16 downsample: phases (16-wide dy rows are whole texels).
    assert_eq!(auto(&shape(1, 128, 32, 2, Padding::right_bottom(1))), GradForm::Conv);
    // The bundled model's 28 -> 14 at batch 16: the transposed kernel where subgroups exist.
    let bundled = shape(16, 32, 28, 2, Padding::same(1));
    let want = if back::transposed_applies(ctx(), &bundled) { GradForm::Transposed } else { GradForm::Conv };
    assert_eq!(auto(&bundled), want);
    // Asked for where it cannot run: a clear error.
    assert!(GradForm::Transposed.resolve(ctx(), &shape(2, 8, 7, 2, Padding::same(1))).is_err());
}
