//! `bench`: a whole UNet forward, a training step (`--train`) and a sampling chain, timed. Per-op
//! GPU times come from timestamp
//! queries (which ops take the time); the chain is timed by the wall clock.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use rand::{Rng, SeedableRng};
use wgpu_diffusion::diffusion::{self, ChainInput, SamplerKind, SamplerPlan};
use wgpu_diffusion::gpu::{median, Context, Dispatch, Profiler};
use wgpu_diffusion::io::dataset::Dataset;
use wgpu_diffusion::io::npy::Values;
use wgpu_diffusion::model::vae::config::STABLE_DIFFUSION_VAE;
use wgpu_diffusion::model::vae::{Autoencoder, AutoencoderConfig, Stage};
use wgpu_diffusion::model::{arch, UNet};
use wgpu_diffusion::train::recipe::default_grad_shares;
use wgpu_diffusion::train::{Recipe, StepOptions, TrainStep, Trainer};
use wgpu_diffusion::{Error, Result};

use super::DeviceArgs;
use wgpu_diffusion::pipeline::{index, Pipeline};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A diffusers model folder (default: the bundled model, unless --arch is given).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// A named architecture with random weights instead of a model folder: ddpm-cifar10-32, fashion-mnist.
    #[arg(long, conflicts_with = "model")]
    pub arch: Option<String>,
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Steps of the timed sampling chain (0 skips it).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    #[arg(long, default_value = "ddim")]
    pub scheduler: String,
    /// Timed forwards (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Time a decoder alone instead, with random weights: `sd` (Stable Diffusion's VAE,
    /// 128/256/512/512) at --vae-size pixels.
    #[arg(long, conflicts_with_all = ["model", "arch"])]
    pub vae_arch: Option<String>,
    /// The decoded image's side for --vae-arch (default 512: 64x64 latents).
    #[arg(long, default_value_t = 512)]
    pub vae_size: usize,
    /// Also time one training step (noising, forward, loss, backward: every weight's gradient) at
    /// --batch, beside a forward, with its per-op GPU times and planned memory.
    #[arg(long)]
    pub train: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.batch == 0 || args.repeats == 0 {
        return Err(Error::Invalid("--batch and --repeats must be at least 1".into()));
    }
    let ctx = Context::new(&args.device.options()?)?;
    if let Some(name) = &args.vae_arch {
        let text = match name.as_str() {
            "sd" => STABLE_DIFFUSION_VAE,
            other => return Err(Error::Invalid(format!("unknown --vae-arch '{other}' (known: sd)"))),
        };
        let config = AutoencoderConfig::parse(text, None, "--vae-arch sd")?;
        let d = config.downscale();
        if args.vae_size == 0 || !args.vae_size.is_multiple_of(d) {
            return Err(Error::Invalid(format!("--vae-size {}: a positive multiple of {d}", args.vae_size)));
        }
        let mut vae = Autoencoder::random(&ctx, config, 0)?;
        let l = args.vae_size / d;
        return bench_decode(&ctx, &mut vae, &format!("--vae-arch {name} (random weights)"), args, l);
    }
    if let Some(dir) = &args.model {
        if dir.join(index::INDEX_FILE).is_file() && index::read(dir)?.is_text() {
            return bench_text(&ctx, dir, args);
        }
    }
    let kind = SamplerKind::parse(&args.scheduler)?;
    let mut latent_vae = None;
    let (mut unet, name, sched) = match &args.arch {
        Some(a) => {
            let unet = UNet::random(&ctx, arch::config(a)?, 0)?;
            (unet, format!("{a} (random weights)"), diffusion::SchedulerConfig::resolve(kind, None, a)?)
        }
        None => {
            let pipeline = Pipeline::open_or_bundled(args.model.as_deref())?;
            let sched = pipeline.scheduler(kind)?;
            let loaded = pipeline.load(&ctx)?;
            latent_vae = loaded.autoencoder.map(|v| (v, pipeline.unet_config.sample_size));
            (loaded.unet, pipeline.folder.root.display().to_string(), sched)
        }
    };
    let net = unet.executable(&ctx, args.batch)?;
    let flops: u64 = net.exe.dispatches.iter().map(|d| d.cost.flops).sum();
    println!(
        "{name}: batch {}, {} ops, {:.2} GFLOP per forward, on {}",
        args.batch,
        net.exe.dispatches.len(),
        flops as f64 / 1e9,
        ctx.info.name
    );
    println!(
        "planned activation memory {:.2} MiB (one buffer per tensor: {:.2} MiB), weights {:.2} MiB",
        net.exe.plan.peak_bytes as f64 / (1 << 20) as f64,
        net.exe.plan.naive_bytes as f64 / (1 << 20) as f64,
        unet.bank.parameters as f64 * 4.0 / (1 << 20) as f64
    );
    // Warm-up: pipelines compiled, caches warm.
    ctx.run(&net.exe.dispatches);
    println!(
        "texel staging textures {:.2} MiB (operands copied for texel reads, shared by all dispatches)",
        ctx.texels.bytes() as f64 / (1 << 20) as f64
    );
    if ctx.scratch_bytes() > 0 {
        println!(
            "split-K scratch {:.2} MiB (partial sums of small-grid convs and matmuls on GPUs, shared)",
            ctx.scratch_bytes() as f64 / (1 << 20) as f64
        );
    }
    ctx.wait()?;

    // Wall time of whole forwards, recorded into one pass each.
    let forward_ms = wall_ms(&ctx, &net.exe.dispatches, args.repeats)?;
    println!(
        "UNet forward: {forward_ms:.2} ms wall ({:.2} ms per image, {:.2} GFLOP/s)",
        forward_ms / args.batch as f64,
        flops as f64 / forward_ms / 1e6
    );

    print_op_times(&ctx, &net.exe.dispatches, args.repeats)?;

    if let Some((mut vae, l)) = latent_vae {
        let what = format!("{name}'s {}", vae.config.class_name());
        bench_decode(&ctx, &mut vae, &what, args, l)?;
    }

    if args.train {
        bench_train(&ctx, &mut unet, &sched, args, &net.exe.dispatches)?;
    }

    if args.steps > 0 {
        let plan = SamplerPlan::new(&sched, args.steps, 0.0)?;
        let t0 = Instant::now();
        let input = ChainInput::all(0, args.batch, None);
        diffusion::sample(&ctx, &mut unet, &plan, &input, &mut |_, _| {})?;
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "sampling chain ({}, {} steps, batch {}): {:.2} s, {:.2} steps/s, {:.3} images/s",
            args.scheduler,
            args.steps,
            args.batch,
            secs,
            args.steps as f64 / secs,
            args.batch as f64 / secs
        );
    }
    Ok(())
}

/// A Stable Diffusion folder: one UNet evaluation of a step at the pipeline's size (--batch
/// images, two rows each: guidance's unconditional and prompt rows), per-op GPU times, then its
/// VAE's decode. The chain is timed by `txt2img` itself.
fn bench_text(ctx: &Context, dir: &std::path::Path, args: &BenchArgs) -> Result<()> {
    use wgpu_diffusion::model::unet_condition::{CondShape, UNetCondition};
    let pipeline = wgpu_diffusion::pipeline::text::TextPipeline::open(dir)?;
    let unet_dir = &pipeline.components.unet.as_ref().expect("checked by open").dir; // ok: open requires it
    let mut unet = UNetCondition::load(ctx, unet_dir)?;
    let side = pipeline.default_size();
    let l = side / pipeline.downscale();
    let shape =
        CondShape { batch: 2 * args.batch, height: l, width: l, text_tokens: pipeline.tokenizer.max_length };
    let (_, exe) = unet.executable(ctx, shape)?;
    let flops: u64 = exe.dispatches.iter().map(|d| d.cost.flops).sum();
    println!(
        "{}: UNet2DConditionModel, {} parameters, one guided step of {} image(s) of {side}x{side} ({} rows of {l}x{l} latents, {} text tokens): {} ops, {:.2} GFLOP, on {}",
        dir.display(),
        super::info::thousands(unet.bank.parameters as u64),
        args.batch,
        shape.batch,
        shape.text_tokens,
        exe.dispatches.len(),
        flops as f64 / 1e9,
        ctx.info.name
    );
    println!(
        "planned activation memory {:.2} MiB, weights {:.2} MiB",
        exe.plan.peak_bytes as f64 / (1 << 20) as f64,
        unet.bank.weight_bytes() as f64 / (1 << 20) as f64
    );
    ctx.run(&exe.dispatches);
    ctx.wait()?;
    println!(
        "after a step: texel staging textures {:.2} MiB, shared scratch {:.2} MiB (attention by head groups, split-K), \
         kernels' own buffers {:.2} MiB",
        ctx.texels.bytes() as f64 / (1 << 20) as f64,
        ctx.scratch_bytes() as f64 / (1 << 20) as f64,
        ctx.owned_bytes() as f64 / (1 << 20) as f64
    );
    let ms = wall_ms(ctx, &exe.dispatches, args.repeats)?;
    println!(
        "UNet step: {ms:.1} ms wall ({:.2} GFLOP/s; median of {})",
        flops as f64 / ms / 1e6,
        args.repeats
    );
    print_op_times(ctx, &exe.dispatches, args.repeats)?;
    drop(exe);
    drop(unet);
    let vae_dir = pipeline.components.autoencoder.as_ref().expect("checked by open"); // ok: open requires it
    let mut vae = Autoencoder::load(ctx, &vae_dir.dir, Some(&vae_dir.class))?;
    bench_decode(ctx, &mut vae, &format!("{}'s AutoencoderKL", dir.display()), args, l)
}

/// A latent pipeline's decode of --batch images of `l` x `l` latents, apart from the UNet: wall
/// time, GFLOP/s, planned memory and per-op GPU times.
fn bench_decode(ctx: &Context, vae: &mut Autoencoder, name: &str, args: &BenchArgs, l: usize) -> Result<()> {
    use wgpu_diffusion::pipeline::latent::{plan_decode, DecodePlan, Tiling};
    // Where the whole decode has a tensor past the device's binding, time it as the pipelines
    // run it: in tiles.
    if let DecodePlan::Tiled { plan, batch, reason } =
        plan_decode(ctx, vae, (l, l), args.batch, Tiling::Auto, None)?
    {
        let tiled = wgpu_diffusion::model::vae::tiling::TiledDecoder::new(
            ctx,
            vae,
            plan,
            Stage::DecodeLatents,
            batch.min(args.batch).max(1),
            l,
            l,
        )?;
        let side = l * vae.config.downscale();
        let flops = tiled.flops_per_image() * args.batch as u64;
        println!(
            "{name} decode: {} image(s) of {side}x{side} from {l}x{l} latents in {} tiles each ({reason}), {:.2} GFLOP, {} parameters, on {}",
            args.batch,
            tiled.tiles(),
            flops as f64 / 1e9,
            super::info::thousands(vae.bank.parameters as u64),
            ctx.info.name
        );
        let latents = ctx.upload(
            &vec![0.1f32; args.batch * vae.config.latent_width() * l * l],
            &[args.batch * vae.config.latent_width() * l * l],
        )?;
        tiled.decode(ctx, &latents.buffer, args.batch)?;
        let mut wall = vec![];
        for _ in 0..args.repeats {
            let t0 = Instant::now();
            tiled.decode(ctx, &latents.buffer, args.batch)?;
            wall.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        let ms = median(&mut wall);
        println!(
            "decode: {ms:.1} ms wall, tiles read back and blended on the host ({:.1} ms per image, {:.2} GFLOP/s; median of {})",
            ms / args.batch as f64,
            flops as f64 / ms / 1e6,
            args.repeats
        );
        return Ok(());
    }
    let e = vae.executable(ctx, Stage::DecodeLatents, args.batch, l, l)?;
    let flops: u64 = e.exe.dispatches.iter().map(|d| d.cost.flops).sum();
    let side = l * vae.config.downscale();
    println!(
        "{name} decode: {} image(s) of {side}x{side} from {l}x{l} latents, {} dispatches, {:.2} GFLOP, planned activation memory {:.2} MiB, {} parameters, on {}",
        args.batch,
        e.exe.dispatches.len(),
        flops as f64 / 1e9,
        e.exe.plan.peak_bytes as f64 / (1 << 20) as f64,
        super::info::thousands(vae.bank.parameters as u64),
        ctx.info.name
    );
    ctx.run(&e.exe.dispatches);
    ctx.wait()?;
    let ms = wall_ms(ctx, &e.exe.dispatches, args.repeats)?;
    println!(
        "decode: {ms:.1} ms wall ({:.1} ms per image, {:.2} GFLOP/s; median of {})",
        ms / args.batch as f64,
        flops as f64 / ms / 1e6,
        args.repeats
    );
    print_op_times(ctx, &e.exe.dispatches, args.repeats)
}

/// Wall time of `dispatches` run alone, median of `repeats`, in ms.
fn wall_ms(ctx: &Context, dispatches: &[Dispatch], repeats: usize) -> Result<f64> {
    let mut wall = Vec::new();
    for _ in 0..repeats {
        let t0 = Instant::now();
        ctx.run(dispatches);
        ctx.wait()?;
        wall.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(&mut wall))
}

/// One training step's gradients at the forward's batch: its wall time beside the forward's, the
/// two timed alternately (a shared machine's speed changes from second to second, and a ratio of
/// times taken at different moments measures that), and its per-op GPU times.
fn bench_train(
    ctx: &Context,
    unet: &mut UNet,
    sched: &diffusion::SchedulerConfig,
    args: &BenchArgs,
    forward: &[Dispatch],
) -> Result<()> {
    let ac: Vec<f64> = sched.alphas_cumprod()?.iter().map(|&a| a as f64).collect();
    let step = TrainStep::new(ctx, unet, &ac, args.batch, &StepOptions::default())?;
    let per_image: usize = step.graph.graph.shape(step.graph.sample)[1..].iter().product();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let x0: Vec<f32> = (0..args.batch * per_image).map(|_| rng.random_range(-1.0..1.0)).collect();
    let eps: Vec<f32> = (0..x0.len()).map(|_| rng.random_range(-1.0..1.0)).collect();
    let t: Vec<u32> = (0..args.batch).map(|_| rng.random_range(0..ac.len() as u32)).collect();
    step.upload(ctx, &x0, &t, &eps)?;
    let flops: u64 = step.dispatches.iter().map(|d| d.cost.flops).sum();
    println!(
        "training step (noising, forward, MSE loss, backward to {} weight gradients): {} dispatches, {:.2} GFLOP, \
         micro-batch {} of {}",
        step.gradients.len(),
        step.dispatches.len(),
        flops as f64 / 1e9,
        step.micro,
        step.batch
    );
    println!(
        "planned peak {:.2} MiB (activation slots {:.2} MiB, one buffer per tensor: {:.2} MiB)",
        step.peak_bytes as f64 / (1 << 20) as f64,
        step.exe.plan.peak_bytes as f64 / (1 << 20) as f64,
        step.exe.plan.naive_bytes as f64 / (1 << 20) as f64
    );
    ctx.run(&step.dispatches);
    ctx.wait()?;
    // Rounds of (forward, step), each round's ratio taken from two runs a moment apart.
    let (mut forwards, mut steps, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.repeats.max(3) {
        let f = wall_ms(ctx, forward, 1)?;
        let s = wall_ms(ctx, &step.dispatches, 1)?;
        forwards.push(f);
        steps.push(s);
        ratios.push(s / f);
    }
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let (lo, hi) = (min(&ratios), max(&ratios));
    let (step_ms, forward_ms, ratio) = (median(&mut steps), median(&mut forwards), median(&mut ratios));
    println!(
        "training step: {step_ms:.2} ms wall ({:.2} images/s, {:.2} GFLOP/s), {ratio:.2}x the forward's {forward_ms:.2} ms \
         (medians of {} alternating rounds, each round's ratio of step to forward: {lo:.2}-{hi:.2}); loss {:.5}",
        args.batch as f64 / step_ms * 1e3,
        flops as f64 / step_ms / 1e6,
        steps.len(),
        step.loss(ctx)?
    );
    print_op_times(ctx, &step.dispatches, args.repeats)?;
    bench_whole_step(ctx, unet, &ac, args, forward_ms)
}

/// Whole training steps as `train` runs them (the batch made on the device, gradients, clipping,
/// AdamW, EMA; many steps a submission), on random 8-bit images: steps/s and training images/s,
/// with the batch's gradient in one share and in `train`'s default shares, alternating; then the
/// step MPI ranks take (shares read back, exchanged, summed on the device) and the bytes a rank
/// sends. Trains the bench's weights in place.
fn bench_whole_step(
    ctx: &Context,
    unet: &mut UNet,
    ac: &[f64],
    args: &BenchArgs,
    forward_ms: f64,
) -> Result<()> {
    const RING: usize = 4;
    let c = &unet.config;
    let (ch, s) = (c.in_channels, c.sample_size);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let count = 64;
    let bytes = (0..count * ch * s * s).map(|_| rng.random_range(0..=255u8)).collect();
    let data = Dataset {
        source: "random".into(),
        count,
        channels: ch,
        size: s,
        values: Values::U8(bytes),
        labels: None,
    };
    let shares = default_grad_shares(args.batch);
    let recipe = |k| Recipe {
        steps: (RING * (args.repeats + 1)) as u64,
        batch: args.batch,
        grad_shares: k,
        ..Recipe::default()
    };
    // ms a step, by shares (every divisor of the default), in alternating rounds: ratios of
    // neighbours, not of moments apart.
    let kinds: Vec<usize> = (1..=shares).filter(|k| shares.is_multiple_of(*k)).collect();
    let mut times = vec![Vec::new(); kinds.len()];
    for _ in 0..args.repeats.max(3) {
        for (k, t) in kinds.iter().zip(&mut times) {
            let mut trainer = Trainer::new(ctx, unet, ac, &data, &recipe(*k), 4 << 30, RING, None)?;
            trainer.submit(ctx, &data, RING)?;
            trainer.finish(ctx)?;
            let t0 = Instant::now();
            trainer.submit(ctx, &data, RING)?;
            trainer.finish(ctx)?;
            t.push(t0.elapsed().as_secs_f64() * 1e3 / RING as f64);
        }
    }
    let step_ms = median(&mut times[0]);
    println!(
        "whole training step as `train` runs it (device batch, gradients, clip, AdamW, EMA; {RING} a submission): \
         {step_ms:.2} ms ({:.2} steps/s, {:.2} training images/s), {:.2}x the forward",
        1e3 / step_ms,
        args.batch as f64 / step_ms * 1e3,
        step_ms / forward_ms
    );
    for (k, t) in kinds.iter().zip(&mut times).skip(1) {
        let ms = median(t);
        println!(
            "  in {k} gradient shares{}: {ms:.2} ms, {:.3}x one share (medians of {} alternating rounds)",
            if *k == shares { format!(" (train's default at batch {})", args.batch) } else { String::new() },
            ms / step_ms,
            t.len()
        );
    }
    if shares > 1 {
        let ms = median(&mut times[kinds.len() - 1]);
        bench_exchange(ctx, unet, ac, &data, &recipe(shares), ms)?;
    }
    let trainer = Trainer::new(ctx, unet, ac, &data, &recipe(shares), 4 << 30, RING, None)?;
    println!("the optimizer's share ({} dispatches):", trainer.optimizer.dispatches.len());
    print_op_times(ctx, &trainer.optimizer.dispatches, args.repeats)
}

/// The step MPI ranks take, timed on one process holding every share: the shares' gradients
/// read back (what a rank sends), then written and summed on the device (what it does with
/// every rank's); the network's time is not in it. And what a rank sends and receives a step.
fn bench_exchange(
    ctx: &Context,
    unet: &mut UNet,
    ac: &[f64],
    data: &Dataset,
    recipe: &Recipe,
    in_process_ms: f64,
) -> Result<()> {
    let k = recipe.grad_shares;
    let mut trainer = Trainer::sharing(ctx, unet, ac, data, recipe, 4 << 30, 1, None, Some(0..k))?;
    let (mut compute, mut apply) = (Vec::new(), Vec::new());
    let mut floats = 0;
    for _ in 0..4 {
        let t0 = Instant::now();
        let part = trainer.compute_shares(ctx, data)?;
        let t1 = Instant::now();
        trainer.apply_shares(ctx, &part)?;
        compute.push((t1 - t0).as_secs_f64() * 1e3);
        apply.push(t1.elapsed().as_secs_f64() * 1e3);
        floats = part.gradients.len() + part.losses.len();
    }
    let (c, a) = (median(&mut compute[1..]), median(&mut apply[1..]));
    let share_mib = floats as f64 * 4.0 / k as f64 / (1 << 20) as f64;
    println!(
        "the ranks' step on one process: {c:.2} ms to compute and read back {k} shares, {a:.2} ms to write them \
         back and finish the step; {:.2}x the in-process step. A share is {share_mib:.2} MiB; over MPI's \
         all-gather each of N ranks sends its K/N shares and receives the others':",
        (c + a) / in_process_ms
    );
    for n in (2..=k).filter(|n| k.is_multiple_of(*n)) {
        println!(
            "  {n} ranks: {:.2} MiB sent and {:.2} MiB received by each rank a step",
            share_mib * (k / n) as f64,
            share_mib * (k - k / n) as f64
        );
    }
    Ok(())
}

/// GPU time per op kind from timestamp queries (median of `repeats`), with GFLOP/s and GB/s.
fn print_op_times(ctx: &Context, dispatches: &[Dispatch], repeats: usize) -> Result<()> {
    let Some(profiler) = Profiler::new(ctx) else {
        println!("(no TIMESTAMP_QUERY on this adapter: per-op GPU times are not available)");
        return Ok(());
    };
    let mut per_dispatch = vec![Vec::new(); dispatches.len()];
    for _ in 0..repeats {
        for (i, t) in profiler.time(ctx, dispatches)?.into_iter().enumerate() {
            per_dispatch[i].push(t);
        }
    }
    // Per op kind: (count, ms, flops, bytes)
    let mut ops: BTreeMap<&str, (usize, f64, u64, u64)> = BTreeMap::new();
    for (d, times) in dispatches.iter().zip(per_dispatch.iter_mut()) {
        let e = ops.entry(d.label).or_default();
        e.0 += 1;
        e.1 += median(times);
        e.2 += d.cost.flops;
        e.3 += d.cost.bytes;
    }
    let total: f64 = ops.values().map(|o| o.1).sum();
    let mut rows: Vec<_> = ops.into_iter().collect();
    rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
    println!("GPU time per op (timestamp queries, median of {repeats}), {total:.2} ms in all:");
    println!("  {:<26} {:>5} {:>10} {:>6} {:>9} {:>8}", "op", "count", "ms", "share", "GFLOP/s", "GB/s");
    for (op, (count, ms, f, b)) in rows {
        println!(
            "  {op:<26} {count:>5} {ms:>10.3} {:>5.1}% {:>9.2} {:>8.2}",
            100.0 * ms / total,
            f as f64 / ms / 1e6,
            b as f64 / ms / 1e6
        );
    }
    Ok(())
}
