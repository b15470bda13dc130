//! Kernel bench harness: every kernel at the shapes the ddpm-cifar10-32 UNet and the bundled
//! Fashion-MNIST model use, plus the reference shapes of the performance table (rows `ref-*`).
//!
//!     cargo bench --bench kernels [-- --filter conv2d] [-- --dispatches] [-- --save-baseline NAME] [-- --baseline NAME]
//!
//! GPU time comes from timestamp queries (wall time with a device sync where the adapter has none,
//! and the table says so). Each row: a warm-up run, then repeated runs; median and min, GFLOP/s and
//! GB/s from the kernel's own FLOP and byte counts. Writes target/bench/kernels.json.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::{json, Value};
use wgpu_diffusion::gpu::{median, Context, ContextOptions, Dispatch, Profiler, Tensor};
use wgpu_diffusion::kernels::attention::{self, AttentionShape};
use wgpu_diffusion::kernels::conv2d::{self, Conv2dShape, Epilogue, Padding};
use wgpu_diffusion::kernels::diffusion::{self as diff, StepCoeffs};
use wgpu_diffusion::kernels::group_norm::{self, GroupNormShape};
use wgpu_diffusion::kernels::matmul::{self, Bias, MatmulShape, Strides};
use wgpu_diffusion::kernels::{conv2d_backward, elementwise, rng, Variant};

/// Builds a case's dispatch, returning it with the tensors it needs kept alive.
/// A case's dispatches (attention is several) and the tensors they use.
type Build = Box<dyn Fn(&Context) -> (Vec<Dispatch>, Vec<Tensor>)>;

/// A benchmark case: its name, a shape description, and its builder.
struct Case {
    name: String,
    shape: String,
    build: Build,
}

fn zeros(ctx: &Context, n: usize) -> Tensor {
    ctx.upload(&vec![0.01; n], &[n]).expect("alloc")
}

#[allow(clippy::too_many_arguments)]
fn conv_case(
    name: &str,
    n: usize,
    cin: usize,
    hw: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: Padding,
) -> Case {
    let s = Conv2dShape { n, cin, h: hw, w: hw, cout, kh: k, kw: k, stride, pad };
    Case {
        name: name.into(),
        shape: format!("{n}x{cin}x{hw}x{hw} -> {cout}, {k}x{k}/{stride}"),
        build: Box::new(move |ctx| {
            let (x, w, b, o) = (
                zeros(ctx, n * cin * hw * hw),
                zeros(ctx, s.packed_weight_len()),
                zeros(ctx, cout),
                zeros(ctx, s.out_len().expect("shape")),
            );
            let epi = Epilogue { bias: Some(&b.buffer), ..Default::default() };
            let d = conv2d::conv2d(ctx, conv2d::Launch::Auto, &s, &x.buffer, &w.buffer, &epi, &o.buffer)
                .expect("conv2d");
            (d, vec![x, w, b, o])
        }),
    }
}

fn gn_case(name: &str, n: usize, c: usize, hw: usize, groups: usize, silu: bool) -> Case {
    let s = GroupNormShape { n, c, hw: hw * hw, groups, eps: 1e-6, silu };
    Case {
        name: name.into(),
        shape: format!("{n}x{c}x{hw}x{hw}, {groups} groups{}", if silu { " +SiLU" } else { "" }),
        build: Box::new(move |ctx| {
            let (x, g, b, y) =
                (zeros(ctx, n * c * hw * hw), zeros(ctx, c), zeros(ctx, c), zeros(ctx, n * c * hw * hw));
            let d = group_norm::group_norm(ctx, &s, &x.buffer, &g.buffer, &b.buffer, &y.buffer).expect("gn");
            (vec![d], vec![x, g, b, y])
        }),
    }
}

fn attn_case(name: &str, batch: usize, heads: usize, head_dim: usize, tokens: usize) -> Case {
    let s = AttentionShape::self_attention(batch, heads, head_dim, tokens);
    Case {
        name: name.into(),
        shape: format!("{batch} x {tokens} tokens x {heads} heads x {head_dim}"),
        build: Box::new(move |ctx| {
            let t: Vec<Tensor> = (0..4).map(|_| zeros(ctx, s.len())).collect();
            let d = attention::attention(ctx, &s, &t[0].buffer, &t[1].buffer, &t[2].buffer, &t[3].buffer)
                .expect("attn");
            (d, t)
        }),
    }
}

fn matmul_case(name: &str, m: usize, n: usize, k: usize) -> Case {
    let s = MatmulShape {
        batch: 1,
        m,
        n,
        k,
        a: Strides::row_major(m, k),
        b: Strides::row_major(k, n),
        bias: Bias::None,
        silu: false,
    };
    Case {
        name: name.into(),
        shape: format!("{m}x{k} @ {k}x{n}"),
        build: Box::new(move |ctx| {
            let (a, b, c) = (zeros(ctx, m * k), zeros(ctx, k * n), zeros(ctx, m * n));
            let d = matmul::matmul(ctx, matmul::Launch::Auto, &s, &a.buffer, &b.buffer, None, &c.buffer)
                .expect("matmul");
            (d, vec![a, b, c])
        }),
    }
}

/// A conv2d's input gradient in `form`.
fn conv_input_grad_case(
    name: String,
    shape: String,
    s: Conv2dShape,
    form: conv2d_backward::GradForm,
) -> Case {
    Case {
        name,
        shape,
        build: Box::new(move |ctx| {
            let out_len = s.out_len().expect("shape");
            let (dy, w, dx) =
                (zeros(ctx, out_len), zeros(ctx, s.packed_weight_len()), zeros(ctx, s.n * s.cin * s.h * s.w));
            let d =
                conv2d_backward::conv2d_backward_input(ctx, form, &s, &dy.buffer, &w.buffer, 1.0, &dx.buffer)
                    .expect("conv2d dx");
            (d, vec![dy, w, dx])
        }),
    }
}

/// A conv2d's forward, then its backward: its input gradient and its weight + bias gradients (the
/// forward beside them to compare GFLOP/s in one run). Where the input gradient may run in another
/// form, a row of the conv form too, to compare.
#[allow(clippy::too_many_arguments)]
fn conv_backward_cases(
    name: &str,
    n: usize,
    cin: usize,
    hw: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: Padding,
) -> Vec<Case> {
    use conv2d_backward::GradForm;
    let forward = conv_case(&format!("{name}-fwd"), n, cin, hw, cout, k, stride, pad);
    let s = Conv2dShape { n, cin, h: hw, w: hw, cout, kh: k, kw: k, stride, pad };
    let shape = format!("{n}x{cin}x{hw}x{hw} -> {cout}, {k}x{k}/{stride}");
    let mut rows =
        vec![forward, conv_input_grad_case(format!("{name}-dx"), shape.clone(), s, GradForm::Auto)];
    // The forms Auto may pick over the conv form: columns (small maps) and the stride-2 kernel.
    let (ho, wo) = s.out_hw().expect("shape");
    if n * ho * wo <= cout || stride == 2 {
        rows.push(conv_input_grad_case(format!("{name}-dx-conv"), shape.clone(), s, GradForm::Conv));
    }
    rows.push(Case {
        name: format!("{name}-dw"),
        shape,
        build: Box::new(move |ctx| {
            let out_len = s.out_len().expect("shape");
            let (x, dy) = (zeros(ctx, n * cin * hw * hw), zeros(ctx, out_len));
            let (dw, db) = (zeros(ctx, s.packed_weight_len()), zeros(ctx, cout));
            let g = conv2d_backward::ConvParamGrads { dw: &dw.buffer, db: Some(&db.buffer), dchan: None };
            let d = conv2d_backward::conv2d_backward_params(
                ctx,
                Variant::Auto,
                &s,
                &x.buffer,
                &dy.buffer,
                1.0,
                &g,
            )
            .expect("conv2d dw");
            (d, vec![x, dy, dw, db])
        }),
    });
    rows
}

fn gn_backward_case(name: &str, n: usize, c: usize, hw: usize, groups: usize, silu: bool) -> Case {
    let s = GroupNormShape { n, c, hw: hw * hw, groups, eps: 1e-6, silu };
    Case {
        name: name.into(),
        shape: format!("{n}x{c}x{hw}x{hw}, {groups} groups{}", if silu { " +SiLU" } else { "" }),
        build: Box::new(move |ctx| {
            let len = n * c * hw * hw;
            let t: Vec<Tensor> = [len, len, len, c, c, c, c].iter().map(|&l| zeros(ctx, l)).collect();
            let g = group_norm::GroupNormGrads {
                x: &t[0].buffer,
                dy: &t[1].buffer,
                dx: &t[2].buffer,
                gamma: &t[3].buffer,
                beta: &t[4].buffer,
                dgamma: &t[5].buffer,
                dbeta: &t[6].buffer,
            };
            let d = group_norm::group_norm_backward(ctx, &s, &g).expect("gn backward");
            (d, t)
        }),
    }
}

fn attn_backward_case(name: &str, batch: usize, heads: usize, head_dim: usize, tokens: usize) -> Case {
    let s = AttentionShape::self_attention(batch, heads, head_dim, tokens);
    Case {
        name: name.into(),
        shape: format!("{batch} x {tokens} tokens x {heads} heads x {head_dim}"),
        build: Box::new(move |ctx| {
            let t: Vec<Tensor> = (0..7).map(|_| zeros(ctx, s.len())).collect();
            let g = attention::AttentionGrads {
                q: &t[0].buffer,
                k: &t[1].buffer,
                v: &t[2].buffer,
                dout: &t[3].buffer,
                dq: &t[4].buffer,
                dk: &t[5].buffer,
                dv: &t[6].buffer,
            };
            (attention::attention_backward(ctx, &s, &g).expect("attention backward"), t)
        }),
    }
}

fn linear_backward_case(name: &str, rows: usize, fin: usize, fout: usize) -> Case {
    Case {
        name: name.into(),
        shape: format!("{rows}x{fin} -> {fout}"),
        build: Box::new(move |ctx| {
            let t: Vec<Tensor> = [rows * fin, fout * fin, rows * fout, rows * fin, fout * fin, fout]
                .iter()
                .map(|&l| zeros(ctx, l))
                .collect();
            let g = matmul::LinearGrads {
                x: &t[0].buffer,
                weight: &t[1].buffer,
                dy: &t[2].buffer,
                dx: Some(&t[3].buffer),
                dw: Some(&t[4].buffer),
                db: Some(&t[5].buffer),
            };
            (matmul::linear_backward(ctx, rows, fin, fout, &g).expect("linear backward"), t)
        }),
    }
}

/// Every backward kernel at the bundled model's (batch 16) and ddpm-cifar10-32's (batch 1) shapes.
fn backward_cases() -> Vec<Case> {
    let same = Padding::same(1);
    let mut v = vec![];
    v.extend(conv_backward_cases("fashion-bwd-conv2d-32x28", 16, 32, 28, 32, 3, 1, same));
    v.extend(conv_backward_cases("fashion-bwd-conv2d-64x7", 16, 64, 7, 64, 3, 1, same));
    v.extend(conv_backward_cases("fashion-bwd-conv2d-down", 16, 32, 28, 32, 3, 2, same));
    v.extend(conv_backward_cases("cifar-bwd-conv2d-128x32", 1, 128, 32, 128, 3, 1, same));
    v.extend(conv_backward_cases("cifar-bwd-conv2d-256x16", 1, 256, 16, 256, 3, 1, same));
    v.extend(conv_backward_cases("cifar-bwd-conv2d-256x8", 1, 256, 8, 256, 3, 1, same));
    v.extend(conv_backward_cases("cifar-bwd-conv2d-256x4", 1, 256, 4, 256, 3, 1, same));
    v.extend(conv_backward_cases("cifar-bwd-conv2d-down", 1, 128, 32, 128, 3, 2, Padding::right_bottom(1)));
    v.extend(conv_backward_cases("cifar-bwd-conv2d-down16", 1, 256, 16, 256, 3, 2, Padding::right_bottom(1)));
    v.push(gn_backward_case("fashion-bwd-group-norm-32x28", 16, 32, 28, 8, true));
    v.push(gn_backward_case("cifar-bwd-group-norm-128x32", 1, 128, 32, 32, true));
    v.push(attn_backward_case("fashion-bwd-attention-7x7", 16, 2, 32, 49));
    v.push(attn_backward_case("cifar-bwd-attention-16x16", 1, 1, 256, 256));
    v.push(linear_backward_case("fashion-bwd-linear-temb", 16, 32, 128));
    v.push(linear_backward_case("cifar-bwd-linear-temb", 1, 512, 128));
    v
}

fn cases() -> Vec<Case> {
    let same = Padding::same(1);
    let mut v = vec![
        // The performance table's reference shapes.
        matmul_case("ref-matmul-512", 512, 512, 512),
        conv_case("ref-conv2d-b8", 8, 128, 32, 128, 3, 1, same),
        conv_case("ref-conv2d-b1", 1, 128, 32, 128, 3, 1, same),
        gn_case("ref-group-norm-b8", 8, 128, 32, 32, false),
        attn_case("ref-attention-b8", 8, 1, 128, 256),
        // ddpm-cifar10-32, batch 1.
        conv_case("cifar-conv2d-in", 1, 3, 32, 128, 3, 1, same),
        conv_case("cifar-conv2d-256x16", 1, 256, 16, 256, 3, 1, same),
        conv_case("cifar-conv2d-256x8", 1, 256, 8, 256, 3, 1, same),
        conv_case("cifar-conv2d-256x4", 1, 256, 4, 256, 3, 1, same),
        conv_case("cifar-conv2d-down", 1, 128, 32, 128, 3, 2, Padding::right_bottom(1)),
        conv_case("cifar-conv2d-shortcut", 1, 384, 16, 256, 1, 1, Padding::default()),
        conv_case("cifar-conv2d-out", 1, 128, 32, 3, 3, 1, same),
        gn_case("cifar-group-norm-128x32", 1, 128, 32, 32, true),
        gn_case("cifar-group-norm-256x16", 1, 256, 16, 32, true),
        attn_case("cifar-attention-16x16", 1, 1, 256, 256),
        matmul_case("cifar-matmul-temb", 1, 512, 128),
        // The bundled Fashion-MNIST model, batch 16.
        conv_case("fashion-conv2d-32x28", 16, 32, 28, 32, 3, 1, same),
        conv_case("fashion-conv2d-64x14", 16, 64, 14, 64, 3, 1, same),
        conv_case("fashion-conv2d-64x7", 16, 64, 7, 64, 3, 1, same),
        conv_case("fashion-conv2d-out", 16, 32, 28, 1, 3, 1, same),
        gn_case("fashion-group-norm-32x28", 16, 32, 28, 8, true),
        attn_case("fashion-attention-7x7", 16, 2, 32, 49),
    ];
    let n = 16 * 784;
    v.push(Case {
        name: "fashion-silu".into(),
        shape: format!("{n}"),
        build: Box::new(move |ctx| {
            let (x, y) = (zeros(ctx, n), zeros(ctx, n));
            (vec![elementwise::silu(ctx, n, &x.buffer, &y.buffer).expect("silu")], vec![x, y])
        }),
    });
    v.push(Case {
        name: "fashion-upsample".into(),
        shape: "16x64x7x7 -> 14x14".into(),
        build: Box::new(|ctx| {
            let (x, y) = (zeros(ctx, 16 * 64 * 49), zeros(ctx, 16 * 64 * 196));
            (
                vec![elementwise::upsample_nearest2x(ctx, 16 * 64, 7, 7, &x.buffer, &y.buffer).expect("up")],
                vec![x, y],
            )
        }),
    });
    v.push(Case {
        name: "fashion-sampler-step".into(),
        shape: format!("{n}"),
        build: Box::new(move |ctx| {
            let mut t: Vec<Tensor> = (0..3).map(|_| zeros(ctx, n)).collect();
            t.push(zeros(ctx, diff::HISTORY_SLOTS * n));
            let table =
                ctx.upload(bytemuck::cast_slice(&[StepCoeffs::default()]), &[diff::ROW_LEN]).expect("table");
            let counter = ctx.upload_u32(&[0], &[1]).expect("counter");
            let bufs = diff::StepBuffers {
                x: &t[0].buffer,
                model_out: &t[1].buffer,
                noise: &t[2].buffer,
                history: &t[3].buffer,
                table: &table.buffer,
                step_counter: &counter.buffer,
            };
            let d = diff::sampler_step(ctx, n, 1, &bufs).expect("step");
            let mut keep = t;
            keep.extend([table, counter]);
            (vec![d], keep)
        }),
    });
    v.push(Case {
        name: "rng-normal-1m".into(),
        shape: "1048576".into(),
        build: Box::new(|ctx| {
            let out = zeros(ctx, 1 << 20);
            (
                vec![rng::normal(ctx, rng::NoiseKey::default(), 1, 1 << 20, None, &out.buffer).expect("rng")],
                vec![out],
            )
        }),
    });
    v.extend(backward_cases());
    v
}

fn arg(args: &[String], flag: &str) -> Option<String> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let filter = arg(&args, "--filter");
    // "first ms" is a cold first call: a fresh context per case, so no pipeline is reused from an
    // earlier case, and (unless --warm-cache) Mesa's on-disk shader cache pointed at a new empty
    // folder. (MESA_SHADER_CACHE_DISABLE would be simpler, but with it lavapipe 22.3 runs some
    // kernels 100x slower.)
    let warm_cache = args.iter().any(|a| a == "--warm-cache");
    // Each dispatch of a several-dispatch case on its own line (GPU timestamps only).
    let show_dispatches = args.iter().any(|a| a == "--dispatches");
    let cache_root = std::env::temp_dir().join(format!("wgpu-diffusion-bench-{}", std::process::id()));
    let mut fresh_caches = 0;
    let mut new_context = |cold: bool| {
        if cold && !warm_cache {
            fresh_caches += 1;
            let folder = cache_root.join(fresh_caches.to_string());
            std::fs::create_dir_all(&folder).expect("a shader cache folder under the temp dir");
            std::env::set_var("MESA_SHADER_CACHE_DIR", folder);
        }
        match Context::new(&ContextOptions::default()) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        }
    };
    let ctx = new_context(false);
    let profiler = Profiler::new(&ctx);
    let adapter = format!("{} ({:?})", ctx.info.name, ctx.info.backend);
    let timing =
        if profiler.is_some() { "GPU timestamps" } else { "wall time with a sync (no TIMESTAMP_QUERY)" };
    println!("adapter: {adapter}; timing: {timing}");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    let baseline: Option<Value> = arg(&args, "--baseline").map(|name| {
        let path = dir.join("baselines").join(format!("{name}.json"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            eprintln!("error: cannot read baseline {}: {e}", path.display());
            std::process::exit(1)
        });
        serde_json::from_str(&text).expect("a baseline written by --save-baseline")
    });
    println!(
        "{:<28} {:<36} {:>10} {:>10} {:>9} {:>8} {:>9}{}",
        "kernel",
        "shape",
        "median ms",
        "min ms",
        "GFLOP/s",
        "GB/s",
        "first ms",
        if baseline.is_some() { "  vs baseline" } else { "" }
    );
    let mut rows = Vec::new();
    for case in cases() {
        if filter.as_ref().is_some_and(|f| !case.name.contains(f.as_str())) {
            continue;
        }
        // First call: pipeline creation (shader compile), bind groups and one run, wall time.
        let cold = new_context(true);
        let t0 = Instant::now();
        let (first, _first_keep) = (case.build)(&cold);
        cold.run(&first);
        cold.wait().expect("first call");
        let first_ms = t0.elapsed().as_secs_f64() * 1e3;
        drop((first, _first_keep, cold));
        let (d, _keep) = (case.build)(&ctx);
        ctx.run(&d);
        ctx.wait().expect("warm-up");
        // About a second of work, at least 3 runs.
        let t0 = Instant::now();
        ctx.run(&d);
        ctx.wait().expect("probe");
        let reps = ((1.0 / t0.elapsed().as_secs_f64().max(1e-6)) as usize).clamp(3, 50);
        // (label, median ms, min ms) of each dispatch, for --dispatches.
        let mut per_dispatch = Vec::new();
        let mut times: Vec<f64> = match &profiler {
            // One time per run: the sum over the case's dispatches.
            Some(p) => {
                let all = p
                    .time(&ctx, &(0..reps).flat_map(|_| d.iter().cloned()).collect::<Vec<_>>())
                    .expect("timestamps");
                per_dispatch = (0..d.len())
                    .map(|i| {
                        let mut v: Vec<f64> = all.iter().skip(i).step_by(d.len()).copied().collect();
                        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
                        (d[i].label, median(&mut v), min)
                    })
                    .collect();
                all.chunks(d.len()).map(|run| run.iter().sum()).collect()
            }
            None => (0..reps)
                .map(|_| {
                    let t = Instant::now();
                    ctx.run(&d);
                    ctx.wait().expect("sync");
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect(),
        };
        let min = times.iter().cloned().fold(f64::INFINITY, f64::min);
        let med = median(&mut times);
        let gflops = d.iter().map(|x| x.cost.flops).sum::<u64>() as f64 / med / 1e6;
        let gbps = d.iter().map(|x| x.cost.bytes).sum::<u64>() as f64 / med / 1e6;
        let vs = baseline
            .as_ref()
            .and_then(|b| b.as_array())
            .and_then(|rows| rows.iter().find(|r| r["name"] == case.name.as_str()))
            .and_then(|r| r["median_ms"].as_f64())
            .map(|base| format!("  {:.2}x {}", base / med, if base >= med { "faster" } else { "slower" }))
            .unwrap_or_default();
        println!(
            "{:<28} {:<36} {med:>10.3} {min:>10.3} {gflops:>9.2} {gbps:>8.2} {first_ms:>9.1}{vs}",
            case.name, case.shape
        );
        if show_dispatches && d.len() > 1 {
            for (i, (label, med, min)) in per_dispatch.iter().enumerate() {
                println!("  {i:>3} {label:<59} {med:>10.3} {min:>10.3}");
            }
        }
        rows.push(json!({
            "name": case.name, "shape": case.shape, "median_ms": med, "min_ms": min,
            "gflops": gflops, "gbps": gbps, "adapter": adapter, "timing": timing,
            "first_call_ms": first_ms,
        }));
    }
    let _ = std::fs::remove_dir_all(&cache_root);
    std::fs::create_dir_all(dir.join("baselines")).expect("target/bench");
    let text = serde_json::to_string_pretty(&rows).expect("json");
    std::fs::write(dir.join("kernels.json"), &text).expect("write kernels.json");
    println!("wrote {}", dir.join("kernels.json").display());
    if let Some(name) = arg(&args, "--save-baseline") {
        let path = dir.join("baselines").join(format!("{name}.json"));
        std::fs::write(&path, &text).expect("write baseline");
        println!("saved baseline {}", path.display());
    }
}
