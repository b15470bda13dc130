//! Argument parsing and dispatch to the subcommands.

mod bench;
mod check;
mod info;
mod inpaint;
mod noise;
mod output;
mod sample;
mod train;
mod txt2img;

use clap::{Args, Parser, Subcommand};
use wgpu_diffusion::gpu::{BackendChoice, ContextOptions};
use wgpu_diffusion::Result;

#[derive(Parser, Debug)]
#[command(name = "wgpu-diffusion", version, about = "Denoising diffusion models on any GPU, through wgpu")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Turn noise into images with the whole reverse chain on the GPU.
    Sample(Box<sample::SampleArgs>),
    /// Fill the black part of a mask so that it fits the rest of the image (RePaint).
    Inpaint(Box<inpaint::InpaintArgs>),
    /// Redraw an image (SDEdit): noise it part of the way and run the reverse chain from there.
    Img2img(Box<sample::Img2ImgArgs>),
    /// Draw the forward (noising) process of one image as a strip, noised on the GPU.
    Noise(noise::NoiseArgs),
    /// List adapters with their backend, type, driver, features and limits.
    Info(info::InfoArgs),
    /// Train a UNet2DModel on a dataset, all on the GPU, into a diffusers model folder.
    Train(Box<train::TrainArgs>),
    /// Time a whole UNet forward (per op, from GPU timestamps) and a sampling chain.
    Bench(bench::BenchArgs),
    /// Draw a prompt with a Stable Diffusion 1.x or 2.x pipeline folder.
    Txt2img(Box<txt2img::Txt2ImgArgs>),
}

/// Adapter choice, shared by every subcommand that uses the GPU.
#[derive(Args, Debug, Clone, Default)]
pub struct DeviceArgs {
    /// Only use adapters of this backend: vulkan, metal, dx12 or gl.
    #[arg(long)]
    pub backend: Option<String>,
    /// Use adapter N of the list that `info` prints (default: the best one).
    #[arg(long)]
    pub adapter: Option<usize>,
}

impl DeviceArgs {
    pub fn options(&self) -> Result<ContextOptions> {
        Ok(ContextOptions {
            backend: self.backend.as_deref().map(BackendChoice::parse).transpose()?,
            adapter: self.adapter,
            local_rank: 0,
        })
    }
}

/// The class of a class-conditional model's images and the guidance, shared by sample, img2img
/// and inpaint.
#[derive(Args, Debug, Clone, Default)]
pub struct ClassArgs {
    /// The class of every image: an index or one of the model's class names (default: image k
    /// of class k mod the number of classes, so a grid shows every class).
    #[arg(long)]
    pub class: Option<String>,
    /// Classifier-free guidance: uncond + S (cond - uncond) on every step's model output; 1 runs
    /// the conditional model alone [default: 2 on a class-conditional model].
    #[arg(long, allow_hyphen_values = true)]
    pub guidance_scale: Option<f64>,
    /// The unconditional label guidance uses (default: the folder's null class, else the class
    /// table's last row).
    #[arg(long)]
    pub null_class: Option<String>,
}

impl ClassArgs {
    pub fn request(&self) -> wgpu_diffusion::pipeline::classes::ClassRequest<'_> {
        wgpu_diffusion::pipeline::classes::ClassRequest {
            class: self.class.as_deref(),
            guidance_scale: self.guidance_scale,
            null_class: self.null_class.as_deref(),
            per_class: None,
        }
    }

    /// The flags as given, for the PNG text that regenerates an image.
    pub fn flags(&self) -> String {
        let mut out = String::new();
        if let Some(c) = &self.class {
            out += &format!(" --class \"{c}\"");
        }
        if let Some(s) = self.guidance_scale {
            out += &format!(" --guidance-scale {s}");
        }
        if let Some(n) = &self.null_class {
            out += &format!(" --null-class \"{n}\"");
        }
        out
    }
}

/// A progress bar of `len` steps drawn with `template` (indicatif's syntax; its default bar if the
/// template does not parse).
fn progress_bar(len: u64, template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Sample(args) => sample::run(&args),
        Command::Img2img(args) => sample::run_img2img(&args),
        Command::Inpaint(args) => inpaint::run(&args),
        Command::Noise(args) => noise::run(&args),
        Command::Info(args) => info::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Train(args) => train::run(&args),
        Command::Txt2img(args) => txt2img::run(&args),
    }
}
