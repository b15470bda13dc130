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
