use wgpu_diffusion::kernels::embedding::{self, EmbeddingConfig};

use crate::*;

// The largest timesteps (~1000) make arguments of ~1000 rad; sin/cos must stay accurate there.
const TIMESTEPS: [f32; 7] = [0.0, 1.0, 2.5, 17.0, 500.0, 998.0, 999.0];

#[test]
fn timestep_embedding_matches_diffusers_formula() {
    for dim in [2, 32, 33, 128, 512] {
        for flip in [false, true] {
            for shift in [0.0, 1.0] {
                let cfg =
                    EmbeddingConfig { dim, flip_sin_to_cos: flip, freq_shift: shift, max_period: 10000.0 };
                if dim == 2 && shift == 1.0 {
                    continue; // half - shift = 0: refused, see below
                }
                let freqs = cfg.frequencies().unwrap();
                let (tt, ft, out) = (upload(&TIMESTEPS), upload(&freqs), output(TIMESTEPS.len() * dim));
                run(embedding::timestep_embedding(
                    ctx(),
                    &cfg,
                    TIMESTEPS.len(),
                    &tt.buffer,
                    &ft.buffer,
                    &out.buffer,
                )
                .unwrap());
                let got = read(&out);
                let want = embedding::reference(&cfg, &TIMESTEPS);
                // sin and cos are bounded by 1: an absolute bound is the meaningful one.
                let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0.0f32, f32::max);
                assert!(worst <= 1e-6, "dim {dim} flip {flip} shift {shift}: max abs error {worst:e}");
                if dim % 2 == 1 {
                    assert!(got.chunks(dim).all(|row| row[dim - 1] == 0.0), "odd dim pads a zero column");
                }
            }
        }
    }
}

#[test]
fn embedding_frequencies_follow_pytorch() {
    // freq_shift 1, dim 8: exp(-ln(1e4) * k / 3)
    let cfg = EmbeddingConfig { dim: 8, flip_sin_to_cos: false, freq_shift: 1.0, max_period: 10000.0 };
    let f = cfg.frequencies().unwrap();
    let want = [1.0f64, 0.046415888336127795, 0.0021544346900318843, 0.0001];
    for (g, w) in f.iter().zip(want) {
        assert!(((*g as f64) - w).abs() <= w * 2e-7, "{g} vs {w}");
    }
    let bad = EmbeddingConfig { dim: 2, freq_shift: 1.0, ..cfg };
    assert!(bad.frequencies().is_err());
}

// Geometry: 1-D over batch x dim values, 256 a workgroup, split over x and y past the limit.
// - every batch in BATCHES at dim 128 (the bundled model's): 1 to 17 workgroups, the last
//   partial at 33 x 128 = 4224; at dim 33 (an odd dim, a zero column) 1 to 5;
// - on `spill_ctx`: 33 x 33 = 1089 values are 5 workgroups on a 4 x 2 grid.
#[test]
fn timestep_embedding_geometry_every_batch() {
    let on = |c: &wgpu_diffusion::gpu::Context, batch: usize, dim: usize| {
        let cfg = EmbeddingConfig { dim, flip_sin_to_cos: true, freq_shift: 0.0, max_period: 10000.0 };
        let t: Vec<f32> = (0..batch).map(|i| (i * 31 % 1000) as f32).collect();
        let (tt, ft, out) =
            (upload_on(c, &t), upload_on(c, &cfg.frequencies().unwrap()), output_on(c, batch * dim));
        c.run(&[embedding::timestep_embedding(c, &cfg, batch, &tt.buffer, &ft.buffer, &out.buffer).unwrap()]);
        let got = read_on(c, &out);
        let worst = got
            .iter()
            .zip(&embedding::reference(&cfg, &t))
            .map(|(g, w)| (g - w).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= 1e-6, "batch {batch} dim {dim}: max abs error {worst:e}");
    };
    for &n in &BATCHES {
        on(ctx(), n, 128);
        on(ctx(), n, 33);
    }
    on(spill_ctx(), 33, 33);
}

/// Labels 0..rows in an order where rows repeat and some are absent; the last label past the
/// table (clamped into it, as the kernel promises).
fn labels(batch: usize, rows: usize) -> Vec<f32> {
    (0..batch).map(|i| ((i * 7 + 3) % (rows + 1)) as f32).collect()
}

// Geometry: lookup is 1-D over batch x dim outputs, its backward over rows x dim, 256 a
// workgroup, split over x and y past the limit:
// - every batch in BATCHES with an 11-row table at dim 128 (the bundled conditional model's):
//   1 to 17 workgroups, the last partial at 33 x 128 = 4224; backward 1408 = 6 workgroups;
// - dim 33 (odd: rows straddle workgroups) and a 1000-row table (backward 132 workgroups);
// - on `spill_ctx`: 33 x 33 = 1089 values are 5 workgroups on a 4 x 2 grid.
#[test]
fn class_embedding_lookup_and_backward_geometry() {
    use embedding::LookupShape;
    let on = |c: &wgpu_diffusion::gpu::Context, batch: usize, rows: usize, dim: usize| {
        let s = LookupShape { batch, rows, dim };
        let mut r = rng((batch * 1000 + rows + dim) as u64);
        let (l, table, dy) = (labels(batch, rows), random(&mut r, rows * dim), random(&mut r, batch * dim));
        let (lt, tt, dyt) = (upload_on(c, &l), upload_on(c, &table), upload_on(c, &dy));
        let (out, d) = (output_on(c, batch * dim), output_on(c, rows * dim));
        c.run(&[
            embedding::lookup(c, &s, &lt.buffer, &tt.buffer, &out.buffer).unwrap(),
            embedding::lookup_backward(c, &s, &lt.buffer, &dyt.buffer, &d.buffer).unwrap(),
        ]);
        let what = format!("batch {batch} rows {rows} dim {dim}");
        assert_eq!(read_on(c, &out), embedding::reference_lookup(&s, &l, &table), "lookup {what}");
        assert_close(
            &format!("lookup backward {what}"),
            &read_on(c, &d),
            &embedding::reference_lookup_backward(&s, &l, &dy),
            RTOL,
        );
    };
    for &n in &BATCHES {
        on(ctx(), n, 11, 128);
        on(ctx(), n, 5, 33);
    }
    on(ctx(), 33, 1000, 64);
    on(spill_ctx(), 33, 11, 33);
}

#[test]
fn class_embedding_backward_sums_repeated_labels_and_zeroes_absent_ones() {
    use embedding::LookupShape;
    let s = LookupShape { batch: 4, rows: 3, dim: 2 };
    let (l, dy) = ([2.0, 0.0, 2.0, 2.0], [1.0, 2.0, 10.0, 20.0, 100.0, 200.0, 1000.0, 2000.0]);
    let (lt, dyt, d) = (upload(&l), upload(&dy), output(6));
    run(embedding::lookup_backward(ctx(), &s, &lt.buffer, &dyt.buffer, &d.buffer).unwrap());
    assert_eq!(read(&d), vec![10.0, 20.0, 0.0, 0.0, 1101.0, 2202.0]);
    let bad = LookupShape { rows: 0, ..s };
    assert!(embedding::lookup(ctx(), &bad, &lt.buffer, &dyt.buffer, &d.buffer).is_err());
}

/// A text model's token embedding, the table whole and cut in row ranges (a vocabulary past a
/// binding), at every batch of BATCHES and CLIP's 77 positions; ids at both ends of the table.
#[test]
fn token_embedding_whole_and_in_row_ranges() {
    use rand::Rng;
    use wgpu_diffusion::kernels::embedding::{reference_token_embedding, token_embedding, TokenShape};
    let (vocab, dim, tokens) = (1000, 12, 77);
    let mut r = rng(900);
    let table = random(&mut r, vocab * dim);
    let positions = random(&mut r, tokens * dim);
    let pos = upload(&positions);
    for (i, &batch) in BATCHES.iter().enumerate() {
        let s = TokenShape { batch, tokens, dim, vocab };
        let mut ids: Vec<f32> = (0..batch * tokens).map(|_| r.random_range(0..vocab) as f32).collect();
        ids[0] = 0.0;
        ids[batch * tokens - 1] = (vocab - 1) as f32;
        let want = reference_token_embedding(&s, &ids, &table, &positions);
        let idt = upload(&ids);
        for per in [vocab, 300] {
            let out = output(batch * dim * tokens);
            let ranges: Vec<_> =
                (0..vocab).step_by(per).map(|start| (start, per.min(vocab - start))).collect();
            let parts: Vec<_> =
                ranges.iter().map(|&(st, n)| upload(&table[st * dim..(st + n) * dim])).collect();
            let list: Vec<_> = ranges
                .iter()
                .zip(&parts)
                .map(|(&range, part)| {
                    token_embedding(ctx(), &s, range, &idt.buffer, &part.buffer, &pos.buffer, &out.buffer)
                        .unwrap()
                })
                .collect();
            ctx().run(&list);
            // Sums of two values: exact.
            assert_eq!(read(&out), want, "batch {batch}, ranges of {per} rows ({i})");
        }
    }
}
