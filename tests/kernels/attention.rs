use rand::Rng;
use wgpu_diffusion::kernels::attention::{self, AttentionShape};

use crate::*;

fn check_scaled(batch: usize, heads: usize, head_dim: usize, tokens: usize, amplitude: f32, seed: u64) {
    check_shape(AttentionShape::self_attention(batch, heads, head_dim, tokens), amplitude, seed);
}

/// Both paths against the reference, for any shape: self-, cross- or causal attention.
fn check_shape(s: AttentionShape, amplitude: f32, seed: u64) {
    let mut r = rng(seed);
    let mut q = random(&mut r, s.len());
    q.iter_mut().for_each(|v| *v *= amplitude);
    let (k, v) = (random(&mut r, s.kv_len()), random(&mut r, s.kv_len()));
    let want = attention::reference(&s, &q, &k, &v);
    let (qt, kt, vt) = (upload(&q), upload(&k), upload(&v));
    let (b, c) = (&*qt.buffer, (&*kt.buffer, &*vt.buffer));
    let composed = output(s.len());
    ctx().run(&attention::attention_composed(ctx(), &s, b, c.0, c.1, &composed.buffer).unwrap());
    assert_close(&format!("composed attention {s:?}"), &read(&composed), &want, RTOL);
    // By head groups: one pair a group, a group that divides none evenly, all in one group.
    let pairs = s.batch * s.heads;
    for group in [1, 2.min(pairs), pairs.div_ceil(2).max(1), pairs] {
        let grouped = output(s.len());
        let list =
            attention::attention_by_head_groups(ctx(), &s, group, b, c.0, c.1, &grouped.buffer).unwrap();
        ctx().run(&list);
        assert_close(&format!("attention by groups of {group} {s:?}"), &read(&grouped), &want, RTOL);
    }
    if s.head_dim <= attention::MAX_HEAD_DIM {
        let fused = output(s.len());
        ctx().run(&attention::attention_fused(ctx(), &s, b, c.0, c.1, &fused.buffer).unwrap());
        assert_close(&format!("fused attention {s:?}"), &read(&fused), &want, RTOL);
    }
}

fn check(batch: usize, heads: usize, head_dim: usize, tokens: usize, seed: u64) {
    check_scaled(batch, heads, head_dim, tokens, 1.0, seed);
}

#[test]
fn attention_single_head_odd_sizes() {
    check(1, 1, 3, 1, 1); // one token: the output is v
    check(1, 1, 3, 7, 2);
    check(2, 1, 5, 49, 3);
    check(1, 1, 4, 9, 4);
}

#[test]
fn attention_multi_head() {
    check(2, 2, 8, 49, 5);
    check(2, 4, 16, 64, 6);
    check(1, 3, 6, 25, 7);
}

#[test]
fn attention_unet_shapes() {
    check(1, 1, 64, 256, 8); // 16x16 feature map, 64 channels, one head
    check(2, 1, 130, 17, 9); // head dim not a multiple of 4
    check(1, 1, 512, 16, 10); // the largest head dim of the fused kernel
    check(1, 1, 600, 40, 12); // composed only
}

#[test]
fn attention_online_softmax_survives_large_scores() {
    // Scores in the hundreds: a softmax without the running max would overflow exp().
    check_scaled(1, 2, 16, 40, 60.0, 11);
}

#[test]
fn attention_random_shapes() {
    let mut r = rng(5);
    for seed in 0..8 {
        check(
            r.random_range(1..=2),
            r.random_range(1..=3),
            r.random_range(1..=40),
            r.random_range(1..=70),
            100 + seed,
        );
    }
}

#[test]
fn fused_attention_rejects_too_large_head_dim() {
    let s = AttentionShape { scale: 1.0, ..AttentionShape::self_attention(1, 1, 600, 2) };
    let t = output(1200);
    let err = attention::attention_fused(ctx(), &s, &t.buffer, &t.buffer, &t.buffer, &t.buffer).unwrap_err();
    assert!(err.to_string().contains("head dim 600"), "{err}");
}

#[test]
fn fused_attention_splits_long_sequences_into_key_ranges() {
    // A CPU driver cuts loops past 65535 iterations: long sequences run as dispatches over key
    // ranges carrying the online softmax's state; on a GPU one dispatch walks every key. Either
    // way the same values, with a 512-wide head (the autoencoders' mid-block attention).
    let s = AttentionShape::self_attention(2, 1, 512, 300);
    let mut r = rng(40);
    let (q, k, v) = (random(&mut r, s.len()), random(&mut r, s.len()), random(&mut r, s.len()));
    let (qt, kt, vt, out) = (upload(&q), upload(&k), upload(&v), output(s.len()));
    let list =
        attention::attention_fused(ctx(), &s, &qt.buffer, &kt.buffer, &vt.buffer, &out.buffer).unwrap();
    if ctx().is_cpu() {
        assert!(list.len() > 1, "{} dispatches", list.len());
    }
    ctx().run(&list);
    assert_close(
        &format!("key-ranged fused attention {s:?}"),
        &read(&out),
        &attention::reference(&s, &q, &k, &v),
        RTOL,
    );
    // 4096 tokens x 64 dims: one dispatch would run 147,456 loop iterations.
    check(1, 1, 64, 4096, 41);
}

#[test]
fn attention_by_head_groups_where_the_whole_scores_do_not_fit() {
    // SD 1.x's first blocks at a 512x512 image: 4096 tokens, heads of 40, a guided step's two
    // rows. The whole scores (2 x 2 heads here, 256 MiB) are past the composed path's limit, one
    // head's (64 MiB) fit: `attention` takes groups of one head. Checked on every query of
    // a few heads' first and last tokens against the f64 reference.
    let s = AttentionShape::self_attention(2, 2, 40, 4096);
    let mut r = rng(60);
    let (q, k, v) = (random(&mut r, s.len()), random(&mut r, s.len()), random(&mut r, s.len()));
    let (qt, kt, vt, out) = (upload(&q), upload(&k), upload(&v), output(s.len()));
    let list = attention::attention(ctx(), &s, &qt.buffer, &kt.buffer, &vt.buffer, &out.buffer).unwrap();
    assert!(list.iter().any(|d| d.label == "attention.gather"), "the graph's launch takes head groups");
    ctx().run(&list);
    let got = read(&out);
    // The reference over a few queries only (the whole is 4 x 4096 x 4096 x 40 in f64).
    let (d, t) = (s.head_dim, s.tokens);
    let mut worst = 0.0f64;
    for bh in 0..4 {
        for i in [0, 1, 2047, 4095] {
            let base = bh * d * t;
            let scores: Vec<f64> = (0..t)
                .map(|j| {
                    (0..d).map(|c| q[base + c * t + i] as f64 * k[base + c * t + j] as f64).sum::<f64>()
                        * s.scale as f64
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::MIN, f64::max);
            let w: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = w.iter().sum();
            for c in 0..d {
                let want = (0..t).map(|j| w[j] * v[base + c * t + j] as f64).sum::<f64>() / z;
                worst = worst.max((got[base + c * t + i] as f64 - want).abs());
            }
        }
    }
    assert!(worst < 1e-5, "largest error {worst}");
}

// Geometry. Composed: two matmuls with z = batch x heads (see matmul.rs) around a softmax that is
// 1-D over batch x heads x tokens rows (see softmax.rs). Fused: x is tokens / 64 workgroups, y is
// batch x heads.
// - BATCHES x 2 heads x 32 dims at 7x7 (the bundled model's attention: 49 tokens, one partial
//   workgroup along x fused) and at 3x3 (9 tokens), so y / z run from 2 to 66;
// - 1 head of 64 dims over 130 tokens at batch 9: 3 fused workgroups along x, the last partial;
// - both paths, and `attention` as the graph picks it.
#[test]
fn attention_geometry_every_batch() {
    for (i, &n) in BATCHES.iter().enumerate() {
        check(n, 2, 32, 49, 700 + i as u64);
        check(n, 2, 32, 9, 710 + i as u64);
    }
    check(9, 1, 64, 130, 720);
    // The graph's launch.
    let s = AttentionShape::self_attention(16, 2, 32, 49);
    let mut r = rng(730);
    let (q, k, v) = (random(&mut r, s.len()), random(&mut r, s.len()), random(&mut r, s.len()));
    let want = attention::reference(&s, &q, &k, &v);
    let (qt, kt, vt, out) = (upload(&q), upload(&k), upload(&v), output(s.len()));
    ctx().run(&attention::attention(ctx(), &s, &qt.buffer, &kt.buffer, &vt.buffer, &out.buffer).unwrap());
    assert_close("attention (graph launch), batch 16", &read(&out), &want, RTOL);
}

// The backward: the scores matmul (z = batch x heads), the softmax (1-D over rows), three more
// matmuls and the softmax backward (1-D over rows), so the geometry of matmul.rs and softmax.rs.
// Every batch in BATCHES at the bundled model's attention (2 heads of 32 at 7x7: 49 tokens), odd
// head dims and token counts, large scores (a softmax near one-hot).
fn check_backward(batch: usize, heads: usize, head_dim: usize, tokens: usize, amplitude: f32, seed: u64) {
    let s = AttentionShape::self_attention(batch, heads, head_dim, tokens);
    let mut r = rng(seed);
    let q: Vec<f32> = random(&mut r, s.len()).iter().map(|v| v * amplitude).collect();
    let (k, v, dout) = (random(&mut r, s.len()), random(&mut r, s.len()), random(&mut r, s.len()));
    let (want_dq, want_dk, want_dv) = attention::reference_backward(&s, &q, &k, &v, &dout);
    let (qt, kt, vt, dot) = (upload(&q), upload(&k), upload(&v), upload(&dout));
    let (dq, dk, dv) = (output(s.len()), output(s.len()), output(s.len()));
    let g = attention::AttentionGrads {
        q: &qt.buffer,
        k: &kt.buffer,
        v: &vt.buffer,
        dout: &dot.buffer,
        dq: &dq.buffer,
        dk: &dk.buffer,
        dv: &dv.buffer,
    };
    ctx().run(&attention::attention_backward(ctx(), &s, &g).unwrap());
    assert_close(&format!("attention backward {s:?}: dq"), &read(&dq), &want_dq, RTOL);
    assert_close(&format!("attention backward {s:?}: dk"), &read(&dk), &want_dk, RTOL);
    assert_close(&format!("attention backward {s:?}: dv"), &read(&dv), &want_dv, RTOL);
}

#[test]
fn attention_backward_every_batch_and_odd_sizes() {
    for (i, &n) in BATCHES.iter().enumerate() {
        check_backward(n, 2, 32, 49, 1.0, 900 + i as u64);
    }
    check_backward(1, 1, 3, 1, 1.0, 910); // one token: dq = dk = 0, dv = dout
    check_backward(2, 3, 5, 13, 1.0, 911);
    check_backward(1, 1, 64, 130, 1.0, 912);
    check_backward(2, 2, 16, 40, 40.0, 913);
}

#[test]
fn attention_backward_reference_matches_finite_differences() {
    let s = AttentionShape { scale: 0.6, ..AttentionShape::self_attention(1, 2, 3, 4) };
    let mut r = rng(920);
    let (q, k, v, dout) =
        (random(&mut r, s.len()), random(&mut r, s.len()), random(&mut r, s.len()), random(&mut r, s.len()));
    let (dq, dk, dv) = attention::reference_backward(&s, &q, &k, &v, &dout);
    let loss = |q: &[f32], k: &[f32], v: &[f32]| -> f64 {
        attention::reference(&s, q, k, v).iter().zip(&dout).map(|(&o, &d)| o as f64 * d as f64).sum()
    };
    let h = 1e-2f32;
    for i in [0, 5, 13, 23] {
        for (name, grad, which) in [("dq", &dq, 0), ("dk", &dk, 1), ("dv", &dv, 2)] {
            let at = |e: f32| {
                let (mut a, mut b, mut c) = (q.clone(), k.clone(), v.clone());
                [&mut a, &mut b, &mut c][which][i] += e;
                loss(&a, &b, &c)
            };
            let slope = (at(h) - at(-h)) / (2.0 * h as f64);
            assert!(
                (grad[i] as f64 - slope).abs() < 1e-3 * (1.0 + slope.abs()),
                "{name}[{i}] {} vs {slope}",
                grad[i]
            );
        }
    }
}

/// Queries over another sequence's keys and values (a UNet's cross-attention over the text).
fn cross(batch: usize, heads: usize, head_dim: usize, tokens: usize, kv_tokens: usize, seed: u64) {
    let s = AttentionShape { kv_tokens, ..AttentionShape::self_attention(batch, heads, head_dim, tokens) };
    check_shape(s, 3.0, seed);
}

/// Query i over keys 0..=i (CLIP's text model).
fn causal(batch: usize, heads: usize, head_dim: usize, tokens: usize, seed: u64) {
    let s = AttentionShape { causal: true, ..AttentionShape::self_attention(batch, heads, head_dim, tokens) };
    check_shape(s, 3.0, seed);
}

#[test]
fn cross_attention_over_other_sequences() {
    cross(1, 1, 3, 7, 1, 800); // one key: every query's output is v
    cross(1, 1, 3, 1, 9, 801); // one query
    cross(2, 4, 8, 64, 77, 802); // an 8x8 latent over a prompt
    cross(3, 2, 5, 49, 9, 803);
    cross(1, 8, 40, 1024, 77, 804); // SD 1.x's first blocks at 32x32 latents: 8 heads of 40
    for (i, &n) in BATCHES.iter().enumerate() {
        cross(n, 2, 16, 49, 77, 810 + i as u64);
    }
}

#[test]
fn causal_attention_sees_only_earlier_tokens() {
    causal(1, 1, 8, 1, 820);
    causal(2, 4, 8, 77, 821); // CLIP's 77 positions, two prompts
    causal(1, 2, 16, 33, 822);
    causal(3, 3, 5, 9, 823);
    // Long enough that a CPU driver's fused kernel walks key ranges, some past a query's own.
    causal(1, 1, 512, 300, 824);
    for (i, &n) in BATCHES.iter().enumerate() {
        causal(n, 2, 8, 77, 830 + i as u64);
    }
    // A query's output ignores later tokens: change the last key and value, the rest stands.
    let s = AttentionShape { causal: true, ..AttentionShape::self_attention(1, 1, 4, 5) };
    let mut r = rng(840);
    let (q, mut k, mut v) = (random(&mut r, s.len()), random(&mut r, s.len()), random(&mut r, s.len()));
    let before = attention::reference(&s, &q, &k, &v);
    for c in 0..4 {
        k[c * 5 + 4] += 1.0;
        v[c * 5 + 4] -= 1.0;
    }
    let after = attention::reference(&s, &q, &k, &v);
    let (qt, kt, vt, out) = (upload(&q), upload(&k), upload(&v), output(s.len()));
    ctx().run(&attention::attention(ctx(), &s, &qt.buffer, &kt.buffer, &vt.buffer, &out.buffer).unwrap());
    let got = read(&out);
    for c in 0..4 {
        for i in 0..4 {
            assert_eq!(before[c * 5 + i], after[c * 5 + i], "the reference's mask");
        }
        assert_ne!(before[c * 5 + 4], after[c * 5 + 4]);
    }
    assert_close("causal attention after the change", &got, &after, RTOL);
}

#[test]
fn masked_or_cross_attention_has_no_backward_yet() {
    let s = AttentionShape { causal: true, ..AttentionShape::self_attention(1, 1, 4, 5) };
    let t = output(20);
    let g = attention::AttentionGrads {
        q: &t.buffer,
        k: &t.buffer,
        v: &t.buffer,
        dout: &t.buffer,
        dq: &t.buffer,
        dk: &t.buffer,
        dv: &t.buffer,
    };
    assert!(attention::attention_backward(ctx(), &s, &g).is_err());
}

#[test]
fn planned_scratch_is_what_each_path_takes() {
    // `info`'s memory plan counts attention's scratch before any buffer exists: each path's plan
    // against what lowering it makes, on a context of its own (other tests share the global one).
    use wgpu_diffusion::gpu::{Context, ContextOptions};
    let ctx = Context::new(&ContextOptions::default()).unwrap();
    let buffer = |floats: usize| {
        ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: 4 * floats as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    };
    let shapes = [
        (AttentionShape::self_attention(2, 4, 16, 64), "composed"),
        (AttentionShape::self_attention(2, 2, 40, 4096), "attention.gather"),
        // Every pair in one group: on the op's own buffers, no copies.
        (AttentionShape { kv_tokens: 77, ..AttentionShape::self_attention(2, 8, 40, 4096) }, "composed"),
        (AttentionShape::self_attention(1, 1, 8, 8192), "attention"),
    ];
    for (s, label) in shapes {
        let (q, k, v, out) = (buffer(s.len()), buffer(s.kv_len()), buffer(s.kv_len()), buffer(s.len()));
        let (owned, shared) = (ctx.owned_bytes(), ctx.scratch_bytes());
        let list = attention::attention(&ctx, &s, &q, &k, &v, &out).unwrap();
        let (plan_owned, plan_shared) = attention::planned_scratch(&ctx, &s);
        let path = list.iter().map(|d| d.label).collect::<Vec<_>>();
        assert!(label == "composed" && path.len() == 3 || path.contains(&label), "{s:?}: {path:?}");
        assert_eq!(ctx.owned_bytes() - owned, plan_owned, "{s:?}: owned scratch");
        // Each shared role and size once: these shapes share none with an earlier one.
        assert_eq!(ctx.scratch_bytes() - shared, plan_shared.iter().map(|&(_, b)| b).sum::<u64>(), "{s:?}");
    }
}
