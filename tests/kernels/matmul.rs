use rand::Rng;
use wgpu_diffusion::kernels::matmul::{self, Bias, MatmulShape, Strides};
use wgpu_diffusion::kernels::Launch;

use crate::*;

fn check(s: MatmulShape, seed: u64) {
    let mut r = rng(seed);
    let a_len = (s.batch - 1) * s.a.batch + (s.m - 1) * s.a.row + (s.k - 1) * s.a.col + 1;
    let b_len = (s.batch - 1) * s.b.batch + (s.k - 1) * s.b.row + (s.n - 1) * s.b.col + 1;
    let a = random(&mut r, a_len);
    let b = random(&mut r, b_len);
    let bias = random(&mut r, s.m.max(s.n) * s.batch);
    let want = matmul::reference(&s, &a, &b, Some(&bias));
    let (at, bt, biast, c) = (upload(&a), upload(&b), upload(&bias), output(s.batch * s.m * s.n));
    let bias_buf = (s.bias != Bias::None).then_some(&*biast.buffer);
    for v in variants() {
        ctx().run(
            &matmul::matmul(ctx(), Launch::One(v), &s, &at.buffer, &bt.buffer, bias_buf, &c.buffer).unwrap(),
        );
        assert_close(&format!("matmul {v:?} {s:?}"), &read(&c), &want, RTOL);
    }
    // Split-K (what GPUs run for few rows): k split evenly or not, more splits than steps.
    for splits in [2, 3, 7] {
        let d = matmul::matmul(ctx(), Launch::Split(splits), &s, &at.buffer, &bt.buffer, bias_buf, &c.buffer)
            .unwrap();
        ctx().run(&d);
        assert_close(&format!("matmul split-K x{splits} {s:?}"), &read(&c), &want, RTOL);
    }
}

fn dense(batch: usize, m: usize, n: usize, k: usize) -> MatmulShape {
    MatmulShape {
        batch,
        m,
        n,
        k,
        a: Strides::row_major(m, k),
        b: Strides::row_major(k, n),
        bias: Bias::None,
        silu: false,
    }
}

#[test]
fn matmul_dense_shapes() {
    check(dense(1, 1, 1, 1), 1);
    check(dense(1, 7, 5, 3), 2);
    check(dense(3, 13, 17, 29), 3);
    check(dense(1, 64, 64, 64), 4);
    check(dense(2, 33, 65, 130), 5);
    check(dense(1, 128, 96, 257), 6);
}

#[test]
fn matmul_transposed_and_broadcast_operands() {
    let mut s = dense(2, 9, 11, 6);
    s.b = Strides::transposed(6, 11);
    check(s, 7);
    s.a = Strides::transposed(9, 6);
    check(s, 8);
    s.b = Strides::row_major(6, 11).broadcast();
    check(s, 9);
}

#[test]
fn matmul_four_steps_per_texel_with_padded_strides() {
    // Strides that are multiples of 4 let the subgroup kernel take 4 steps of k per texel where
    // k % 4 == 0 too (else it takes single steps). A and B each along k or along their other
    // dimension.
    for (i, (batch, m, n, k)) in
        [(1, 37, 10, 8), (2, 70, 13, 11), (3, 33, 64, 12), (1usize, 5usize, 3usize, 4usize)]
            .into_iter()
            .enumerate()
    {
        let kp = k.next_multiple_of(4);
        let np = n.next_multiple_of(4);
        let mut s = dense(batch, m, n, k);
        s.a = Strides { batch: m * kp, row: kp, col: 1 };
        s.b = Strides { batch: k * np, row: np, col: 1 };
        check(s, 40 + i as u64);
        s.b = Strides { batch: n * kp, row: 1, col: kp };
        check(s, 50 + i as u64);
        s.b = Strides { batch: 0, row: 1, col: kp };
        s.bias = Bias::PerRow;
        check(s, 60 + i as u64);
        // A along m (Q^T in attention scores).
        let mp = m.next_multiple_of(4);
        s.a = Strides { batch: k * mp, row: 1, col: mp };
        check(s, 70 + i as u64);
        s.b = Strides { batch: k * np, row: np, col: 1 };
        check(s, 80 + i as u64);
    }
}

#[test]
fn matmul_bias_and_silu() {
    for (i, bias) in [Bias::None, Bias::PerColumn, Bias::PerRow, Bias::ColumnScale].into_iter().enumerate() {
        for silu in [false, true] {
            let mut s = dense(2, 10, 14, 23);
            s.bias = bias;
            s.silu = silu;
            check(s, 20 + i as u64 * 2 + silu as u64);
        }
    }
}

#[test]
fn matmul_random_shapes() {
    let mut r = rng(77);
    for seed in 0..15 {
        let mut s = dense(
            r.random_range(1..=3),
            r.random_range(1..=70),
            r.random_range(1..=70),
            r.random_range(1..=90),
        );
        if r.random_bool(0.5) {
            s.b = Strides::transposed(s.k, s.n);
        }
        s.bias = [Bias::None, Bias::PerColumn, Bias::PerRow, Bias::ColumnScale][r.random_range(0..4)];
        s.silu = r.random_bool(0.5);
        check(s, 100 + seed);
    }
}

#[test]
fn linear_matches_pytorch_layout() {
    // y = x W^T + b with W stored [out, in], as torch.nn.Linear.
    let (rows, fin, fout) = (5, 12, 7);
    let mut r = rng(3);
    let (x, w, b) = (random(&mut r, rows * fin), random(&mut r, fout * fin), random(&mut r, fout));
    for silu in [false, true] {
        let want: Vec<f32> = (0..rows * fout)
            .map(|i| {
                let (row, o) = (i / fout, i % fout);
                let mut v: f64 =
                    (0..fin).map(|k| x[row * fin + k] as f64 * w[o * fin + k] as f64).sum::<f64>()
                        + b[o] as f64;
                if silu {
                    v /= 1.0 + (-v).exp();
                }
                v as f32
            })
            .collect();
        let (xt, wt, bt, y) = (upload(&x), upload(&w), upload(&b), output(rows * fout));
        ctx().run(
            &matmul::linear(
                ctx(),
                rows,
                fin,
                fout,
                silu,
                &xt.buffer,
                &wt.buffer,
                Some(&bt.buffer),
                &y.buffer,
            )
            .unwrap(),
        );
        assert_close("linear", &read(&y), &want, RTOL);
        // And split-K on the same Linear, as a GPU runs a time-embedding projection.
        let shape = MatmulShape {
            batch: 1,
            m: rows,
            n: fout,
            k: fin,
            a: Strides::row_major(rows, fin),
            b: Strides::transposed(fin, fout),
            bias: Bias::PerColumn,
            silu,
        };
        let y2 = output(rows * fout);
        let d = matmul::matmul(
            ctx(),
            Launch::Split(4),
            &shape,
            &xt.buffer,
            &wt.buffer,
            Some(&bt.buffer),
            &y2.buffer,
        )
        .unwrap();
        ctx().run(&d);
        assert_close("linear split-K", &read(&y2), &want, RTOL);
    }
}

#[test]
fn matmul_picks_split_k_only_on_gpus() {
    let c = ctx();
    let temb = MatmulShape {
        a: Strides::row_major(1, 512),
        b: Strides::transposed(512, 256),
        ..dense(1, 1, 256, 512)
    };
    let splits = matmul::auto_splits(c, &temb).unwrap();
    if c.is_cpu() {
        assert_eq!(splits, 1, "CPU drivers do not split");
    } else {
        assert!(splits > 1, "one row leaves a GPU idle: {splits} split(s)");
        assert_eq!(matmul::auto_splits(c, &dense(1, 512, 512, 512)).unwrap(), 1, "32+ rows run unsplit");
        assert_eq!(
            matmul::auto_splits(c, &dense(1, 1, 256, 16)).unwrap(),
            1,
            "16 steps are too few to split"
        );
    }
}

#[test]
fn matmul_rejects_bad_shapes_and_buffers() {
    let c = ctx();
    let buf = output(64);
    let empty = dense(1, 4, 4, 0);
    for err in [
        matmul::matmul(c, Launch::Auto, &empty, &buf.buffer, &buf.buffer, None, &buf.buffer).unwrap_err(),
        matmul::matmul(c, Launch::Split(3), &empty, &buf.buffer, &buf.buffer, None, &buf.buffer).unwrap_err(),
    ] {
        assert!(err.to_string().contains("empty shape"), "{err}");
    }
    let s = MatmulShape { bias: Bias::PerColumn, ..dense(1, 4, 4, 4) };
    let err =
        matmul::matmul(c, Launch::Split(2), &s, &buf.buffer, &buf.buffer, None, &buf.buffer).unwrap_err();
    assert!(err.to_string().contains("no bias buffer"), "{err}");
    // C of 16x16 outputs into a buffer of 64 values.
    let err = matmul::matmul(
        c,
        Launch::Split(2),
        &dense(1, 16, 16, 4),
        &buf.buffer,
        &buf.buffer,
        None,
        &buf.buffer,
    )
    .unwrap_err();
    assert!(err.to_string().contains("C holds"), "{err}");
}

// Geometry. The grid is x: column blocks (4 columns an invocation, 16 invocations a workgroup on
// the portable kernel, 8..64 on the subgroup one), y: row blocks (4 rows an invocation and 1..4
// invocations a workgroup portable, 32 rows a workgroup subgroup), z: batch entries (times
// split-K's k ranges). The reduce pass of split-K is 1-D over C and spills into y.
// - a time-embedding Linear at every batch in BATCHES (rows = images, 32 -> 128 features): 1 to
//   33 rows, so one row block up to 3 along y (the last partial) portable and 2 subgroup, 2 column
//   workgroups along x;
// - attention's scores product at 7x7 (49 x 49 x 32) for every batch as z, 1 to 33, with a
//   partial column and row block;
// - portable, subgroup (forced, for any row count) and split-K into 2, 3 and 7 (`check`), and the
//   graph's `linear`;
// - split-K's reduce pass on `spill_ctx` (4 workgroups per dimension): 33 x 64 outputs are 9
//   workgroups on a 4 x 3 grid, 3 past the end; its first pass (1 x 3 x 3) fits. x, y and z of the
//   first pass do not spill: z is batch x heads, y is rows / 16 (a Linear's rows are images).
#[test]
fn matmul_geometry_every_batch() {
    for (i, &batch) in BATCHES.iter().enumerate() {
        let seed = 600 + 10 * i as u64;
        let mut temb = dense(1, batch, 128, 32);
        temb.b = Strides::transposed(32, 128);
        temb.bias = Bias::PerColumn;
        temb.silu = true;
        check(temb, seed);
        let mut scores = dense(batch, 49, 49, 32);
        scores.a = Strides::transposed(49, 32);
        scores.bias = Bias::ColumnScale;
        check(scores, seed + 1);
        // The graph's launch.
        let mut r = rng(seed + 2);
        let (x, w, b) = (random(&mut r, batch * 32), random(&mut r, 128 * 32), random(&mut r, 128));
        let want = matmul::reference(&temb, &x, &w, Some(&b));
        let (xt, wt, bt, y) = (upload(&x), upload(&w), upload(&b), output(batch * 128));
        let d =
            matmul::linear(ctx(), batch, 32, 128, true, &xt.buffer, &wt.buffer, Some(&bt.buffer), &y.buffer)
                .unwrap();
        ctx().run(&d);
        assert_close(&format!("linear, batch {batch}"), &read(&y), &want, RTOL);
    }
}

#[test]
fn matmul_geometry_split_k_reduce_spills_into_y() {
    let c = spill_ctx();
    let mut s = dense(1, 33, 64, 40);
    s.bias = Bias::PerRow;
    let mut r = rng(650);
    let (a, b, bias) = (random(&mut r, 33 * 40), random(&mut r, 40 * 64), random(&mut r, 33));
    let want = matmul::reference(&s, &a, &b, Some(&bias));
    let (at, bt, biast, out) =
        (upload_on(c, &a), upload_on(c, &b), upload_on(c, &bias), output_on(c, 33 * 64));
    let d = matmul::matmul(c, Launch::Split(3), &s, &at.buffer, &bt.buffer, Some(&biast.buffer), &out.buffer)
        .unwrap();
    assert_eq!(d[1].workgroups, [4, 3, 1], "the reduce pass spills into y");
    c.run(&d);
    assert_close("matmul split-K, reduce spilled into y", &read_on(c, &out), &want, RTOL);
}

// The Linear backward: three matmuls over strided views (dX: rows x in, dW: out x in with k =
// rows, db: 1 x out with k = rows). Rows at every batch in BATCHES (the time-embedding MLP's rows
// are images), so dW and db reduce over 1 to 33 images; odd feature counts; run twice for the
// same bits.
#[test]
fn linear_backward_every_batch() {
    for (i, &rows) in BATCHES.iter().enumerate() {
        for (fin, fout) in [(32, 128), (7, 5)] {
            let mut r = rng(800 + i as u64);
            let (x, w, dy) =
                (random(&mut r, rows * fin), random(&mut r, fout * fin), random(&mut r, rows * fout));
            let (want_dx, want_dw, want_db) = matmul::reference_linear_backward(rows, fin, fout, &x, &w, &dy);
            let (xt, wt, dyt) = (upload(&x), upload(&w), upload(&dy));
            let (dx, dw, db) = (output(rows * fin), output(fout * fin), output(fout));
            let grads = matmul::LinearGrads {
                x: &xt.buffer,
                weight: &wt.buffer,
                dy: &dyt.buffer,
                dx: Some(&dx.buffer),
                dw: Some(&dw.buffer),
                db: Some(&db.buffer),
            };
            let d = matmul::linear_backward(ctx(), rows, fin, fout, &grads).unwrap();
            ctx().run(&d);
            let what = format!("linear backward, {rows} rows, {fin} -> {fout}");
            assert_close(&format!("{what}: dX"), &read(&dx), &want_dx, RTOL);
            let first_dw = read(&dw);
            assert_close(&format!("{what}: dW"), &first_dw, &want_dw, RTOL);
            assert_close(&format!("{what}: db"), &read(&db), &want_db, RTOL);
            ctx().run(&d);
            assert_eq!(read(&dw), first_dw, "{what}: dW, the same bits again");
        }
    }
}
