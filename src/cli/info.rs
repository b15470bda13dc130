//! `info`: every adapter wgpu can see, and what the engine would get from the chosen one.

use clap::Args;
use wgpu_diffusion::gpu::{list_adapters, AdapterSummary, Context};
use wgpu_diffusion::model::config::ClassEmbedding;
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
}

/// 1234567 -> "1,234,567"
pub fn thousands(n: u64) -> String {
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
    let mut unet = pipeline.load(ctx)?.unet;
    let c = &unet.config;
    println!("model {}", dir.display());
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
        print_model(&ctx, dir, args.batch)?;
    }
    Ok(())
}
