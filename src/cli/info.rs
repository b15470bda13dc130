//! `info`: every adapter wgpu can see, and what the engine would get from the chosen one.

use clap::Args;
use wgpu_diffusion::gpu::{list_adapters, AdapterSummary, Context};
use wgpu_diffusion::model::config::ClassEmbedding;
use wgpu_diffusion::model::vae::Stage;
use wgpu_diffusion::pipeline::text::TextPipeline;
use wgpu_diffusion::pipeline::{classes, Pipeline};
use wgpu_diffusion::Result;

use super::DeviceArgs;

#[derive(Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Also describe this diffusers model folder: parameters, layers, planned activation memory.
    #[arg(long)]
    pub model: Option<std::path::PathBuf>,
    /// Batch size for the model's memory plan.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// A Stable Diffusion folder: the image height for its memory plan [default: the unet's].
    #[arg(long)]
    pub height: Option<usize>,
    /// A Stable Diffusion folder: the image width for its memory plan [default: the unet's].
    #[arg(long)]
    pub width: Option<usize>,
}

/// A Stable Diffusion folder: its parts and the memory a guided run at the size plans, from
/// the configs alone (nothing loaded), against this device's limits.
fn print_text_pipeline(ctx: &Context, dir: &std::path::Path, args: &InfoArgs) -> Result<()> {
    let p = TextPipeline::open(dir)?;
    let size = p.default_size();
    let (h, w) = (args.height.unwrap_or(size), args.width.unwrap_or(size));
    let (u, t, v) = (&p.unet_config, &p.text_config, &p.vae_config);
    println!("model {} (Stable Diffusion pipeline)", dir.display());
    println!(
        "  unet UNet2DConditionModel: blocks {:?}, {} -> {} channels, heads {:?}, cross-attention width {}{}",
        u.block_out_channels,
        u.in_channels,
        u.out_channels,
        u.heads,
        u.cross_attention_dim,
        if u.use_linear_projection { ", Linear projections (SD 2.x)" } else { "" }
    );
    println!(
        "  text_encoder CLIPTextModel: {} layers, width {}, {} heads, {:?}; tokenizer of {} positions, pad id {}",
        t.num_hidden_layers,
        t.hidden_size,
        t.num_attention_heads,
        t.hidden_act,
        p.tokenizer.max_length,
        p.tokenizer.pad
    );
    println!(
        "  vae AutoencoderKL: blocks {:?}, {} latent channels, scaling factor {}",
        v.block_out_channels, v.latent_channels, v.scaling_factor
    );
    if !p.components.skipped.is_empty() {
        println!("  not run: {}", p.components.skipped.join(", "));
    }
    let (rows, decode) = p.memory_plan(ctx, h, w, args.batch, true)?;
    println!(
        "  memory plan of a guided run, batch {} at {w}x{h} (from the configs, nothing loaded):",
        args.batch
    );
    let limit = ctx.max_binding_bytes();
    let mib = |b: u64| b as f64 / MIB as f64;
    for r in &rows {
        let largest = if r.largest_tensor > 0 {
            let fits = if r.largest_tensor <= limit { "fits" } else { "OVER" };
            format!(
                "; largest tensor {:.1} MiB ({fits} this device's {} MiB binding)",
                mib(r.largest_tensor),
                limit >> 20
            )
        } else {
            String::new()
        };
        println!(
            "    {}: {} parameters, {:.1} MiB of weights, {:.1} MiB of activations + {:.1} MiB of attention scratch{largest}",
            r.part,
            thousands(r.parameters as u64),
            mib(r.weight_bytes),
            mib(r.activation_bytes),
            mib(r.scratch_bytes)
        );
    }
    let weights: u64 = rows.iter().map(|r| r.weight_bytes).sum();
    let peak = rows.iter().map(|r| r.activation_bytes + r.scratch_bytes).max().unwrap_or(0);
    println!("    {decode}");
    println!(
        "    in all: {:.1} MiB of weights + {:.1} MiB of activations and scratch at the peak = {:.1} MiB (this device: buffers up to {} MiB)",
        mib(weights),
        mib(peak),
        mib(weights + peak),
        ctx.limits.max_buffer_size >> 20
    );
    if let Some(r) = rows.iter().find(|r| r.largest_tensor > limit) {
        println!(
            "    the {} has a tensor over this device's binding limit: a smaller batch or size runs",
            r.part
        );
    }
    Ok(())
}

/// 1234567 -> "1,234,567"
pub(super) fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn print_model(ctx: &Context, dir: &std::path::Path, batch: usize) -> Result<()> {
    let pipeline = Pipeline::open(dir)?;
    let folder = &pipeline.folder;
    let loaded = pipeline.load(ctx)?;
    let (mut unet, vae) = (loaded.unet, loaded.autoencoder);
    let c = &unet.config.clone();
    println!("model {}", dir.display());
    if let Some(a) = &pipeline.autoencoder {
        let (ic, is) = pipeline.image_shape();
        println!(
            "  a latent pipeline: unet {}, {} {}, scheduler; {ic}x{is}x{is} images from {}x{}x{} latents",
            folder.unet_config.parent().map_or(String::new(), |p| p.display().to_string()),
            a.name,
            a.config.class_name(),
            c.in_channels,
            c.sample_size,
            c.sample_size
        );
    }
    println!(
        "  UNet2DModel {}x{}, {} -> {} channels, blocks {:?}, {} layers per block",
        c.sample_size, c.sample_size, c.in_channels, c.out_channels, c.block_out_channels, c.layers_per_block
    );
    if let Some(kind) = c.class_embedding {
        let table = match kind {
            ClassEmbedding::Table { rows } => format!("a class table of {rows} rows"),
            ClassEmbedding::Timestep => "a \"timestep\" class embedding (any integer label)".into(),
        };
        let null = c.default_null_class().map_or("none recorded".into(), |n| n.to_string());
        println!("  class-conditional: {table}; classes {}; null class {null}", classes::describe(c));
    }
    println!(
        "  {} parameters in {} tensors; {} ops per forward",
        thousands(unet.bank.parameters as u64),
        unet.bank.tensors_used,
        unet.ops
    );
    let (peak, naive) = unet.plan_bytes(ctx, batch)?;
    println!(
        "  batch {batch}: planned activation memory {:.2} MiB (one buffer per tensor would take {:.2} MiB)",
        peak as f64 / MIB as f64,
        naive as f64 / MIB as f64
    );
    println!("  largest batch within this device's buffer limits: {}", unet.max_batch(ctx)?);
    if let (Some(mut vae), Some(a)) = (vae, &pipeline.autoencoder) {
        let v = &vae.config;
        println!(
            "  {} ({}): blocks {:?}, {} layers per block, {} latent channels, scaling factor {}{}",
            a.name,
            v.class_name(),
            v.block_out_channels,
            v.layers_per_block,
            v.latent_channels,
            v.scaling_factor,
            v.shift_factor.map_or(String::new(), |s| format!(", shift {s}"))
        );
        println!(
            "  {} parameters in {} tensors",
            thousands(vae.bank.parameters as u64),
            vae.bank.tensors_used
        );
        let s = c.sample_size;
        for (stage, what) in [(Stage::Encode, "encode (img2img)"), (Stage::DecodeLatents, "decode")] {
            let (peak, _) = vae.plan_bytes(ctx, stage, batch, s, s)?;
            let fits = vae.max_batch(ctx, stage, s, s)?;
            println!(
                "  {what}, batch {batch}: planned activation memory {:.2} MiB; largest batch within this device's buffer limits: {fits}",
                peak as f64 / MIB as f64
            );
        }
    }
    if let Some(s) = &folder.scheduler_config {
        println!("  scheduler config {}", s.display());
    }
    Ok(())
}

const MIB: u64 = 1 << 20;

fn print_adapter(a: &AdapterSummary) {
    let i = &a.info;
    let l = &a.limits;
    println!("adapter {}: {}", a.index, i.name);
    println!(
        "  backend {:?}, type {:?}, vendor {:#06x}, device {:#06x}",
        i.backend, i.device_type, i.vendor, i.device
    );
    println!("  driver {} {}", i.driver, i.driver_info);
    let wanted = [
        (wgpu::Features::TIMESTAMP_QUERY, "TIMESTAMP_QUERY"),
        (wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES, "TIMESTAMP_QUERY_INSIDE_PASSES"),
        (wgpu::Features::SHADER_F16, "SHADER_F16"),
        (wgpu::Features::SUBGROUP, "SUBGROUP"),
    ];
    let have: Vec<_> = wanted.iter().filter(|(f, _)| a.features.contains(*f)).map(|(_, n)| *n).collect();
    let missing: Vec<_> = wanted.iter().filter(|(f, _)| !a.features.contains(*f)).map(|(_, n)| *n).collect();
    println!("  optional features: {}", if have.is_empty() { "none".into() } else { have.join(", ") });
    if !missing.is_empty() {
        println!("  optional features missing: {}", missing.join(", "));
    }
    if a.features.contains(wgpu::Features::SUBGROUP) {
        println!("  subgroup size {}..{}", i.subgroup_min_size, i.subgroup_max_size);
    }
    println!(
        "  max storage binding {} MiB, max buffer {} MiB, max uniform binding {} KiB",
        l.max_storage_buffer_binding_size / MIB,
        l.max_buffer_size / MIB,
        l.max_uniform_buffer_binding_size / 1024
    );
    println!(
        "  workgroup size <= {}x{}x{}, {} invocations, {} KiB shared memory, {} workgroups per dimension",
        l.max_compute_workgroup_size_x,
        l.max_compute_workgroup_size_y,
        l.max_compute_workgroup_size_z,
        l.max_compute_invocations_per_workgroup,
        l.max_compute_workgroup_storage_size / 1024,
        l.max_compute_workgroups_per_dimension
    );
    println!("  storage buffers per stage {}", l.max_storage_buffers_per_shader_stage);
}

pub fn run(args: &InfoArgs) -> Result<()> {
    let options = args.device.options()?;
    let adapters = list_adapters(options.backend);
    if adapters.is_empty() {
        // Context::new says how to install a driver.
        return Context::new(&options).map(|_| ());
    }
    for a in &adapters {
        print_adapter(a);
    }
    let ctx = Context::new(&options)?;
    println!("chosen: {} ({:?}, {:?})", ctx.info.name, ctx.info.backend, ctx.info.device_type);
    if let Some(dir) = &args.model {
        let text = wgpu_diffusion::pipeline::index::read(dir).map(|c| c.is_text()).unwrap_or(false);
        if text {
            print_text_pipeline(&ctx, dir, args)?;
        } else {
            if args.height.is_some() || args.width.is_some() {
                return Err(wgpu_diffusion::Error::Invalid(
                    "--height and --width plan a Stable Diffusion folder's run; this model's size is its sample_size".into(),
                ));
            }
            print_model(&ctx, dir, args.batch)?;
        }
    }
    Ok(())
}
