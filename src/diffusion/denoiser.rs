//! What a sampling chain runs each step: a model that maps (sample, timestep, condition) to its
//! output. UNet2DModel is one (conditioned on nothing or a class); the text-conditioned
//! UNet2DConditionModel at a latent size is another (`TextDenoiser`).

use crate::gpu::Context;
use crate::model::unet_condition::{CondShape, UNetCondition};
use crate::model::{UNet, UNetExecutable};
use crate::{Error, Result};

pub trait Denoiser {
    /// [C, H, W] of one sample.
    fn sample_dims(&self) -> [usize; 3];
    /// Channels of the model's output (sampling needs the sample's).
    fn out_channels(&self) -> usize;
    /// The largest batch one executable may take on this device.
    fn max_batch(&mut self, ctx: &Context) -> Result<usize>;
    /// The model's graph for `batch` rows, planned and lowered.
    fn executable(&mut self, ctx: &Context, batch: usize) -> Result<UNetExecutable>;
    /// Checks class labels against the model (exactly for a class-conditional model).
    fn check_labels(&self, labels: Option<&[f32]>, batch: usize) -> Result<()>;
    /// Floats of one row of text states the model reads (0: it reads none).
    fn text_row_len(&self) -> usize {
        0
    }
    /// Input channels past the sample's (an inpainting UNet's mask and masked-image latents).
    fn extra_channels(&self) -> usize {
        0
    }
}

impl Denoiser for UNet {
    fn sample_dims(&self) -> [usize; 3] {
        let c = &self.config;
        [c.in_channels, c.sample_size, c.sample_size]
    }
    fn out_channels(&self) -> usize {
        self.config.out_channels
    }
    fn max_batch(&mut self, ctx: &Context) -> Result<usize> {
        UNet::max_batch(self, ctx)
    }
    fn executable(&mut self, ctx: &Context, batch: usize) -> Result<UNetExecutable> {
        UNet::executable(self, ctx, batch)
    }
    fn check_labels(&self, labels: Option<&[f32]>, batch: usize) -> Result<()> {
        UNet::check_labels(self, labels, batch)
    }
}

/// A UNet2DConditionModel sampling latents of `height` x `width`, reading `text_tokens` text
/// states a row.
pub struct TextDenoiser<'a> {
    pub unet: &'a mut UNetCondition,
    pub height: usize,
    pub width: usize,
    pub text_tokens: usize,
}

impl TextDenoiser<'_> {
    fn latent_channels(&self) -> usize {
        let c = &self.unet.config;
        c.in_channels.min(c.out_channels)
    }

    fn shape(&self, batch: usize) -> CondShape {
        CondShape { batch, height: self.height, width: self.width, text_tokens: self.text_tokens }
    }
}

impl Denoiser for TextDenoiser<'_> {
    fn sample_dims(&self) -> [usize; 3] {
        [self.latent_channels(), self.height, self.width]
    }
    fn out_channels(&self) -> usize {
        self.unet.config.out_channels
    }
    fn max_batch(&mut self, ctx: &Context) -> Result<usize> {
        self.unet.max_batch(ctx, self.shape(1))
    }
    fn executable(&mut self, ctx: &Context, batch: usize) -> Result<UNetExecutable> {
        let (g, exe) = self.unet.executable(ctx, self.shape(batch))?;
        Ok(UNetExecutable {
            exe,
            graph: g.graph,
            batch,
            sample: g.sample,
            timesteps: g.timesteps,
            class_labels: None,
            text: Some(g.text),
            extra: g.extra,
            output: g.output,
        })
    }
    fn check_labels(&self, labels: Option<&[f32]>, _batch: usize) -> Result<()> {
        match labels {
            Some(_) => Err(Error::Invalid("class labels were given to a text-conditioned UNet".into())),
            None => Ok(()),
        }
    }
    fn text_row_len(&self) -> usize {
        self.unet.config.cross_attention_dim * self.text_tokens
    }
    fn extra_channels(&self) -> usize {
        self.unet.config.in_channels - self.latent_channels()
    }
}
