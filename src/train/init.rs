//! A new model's initial weights as PyTorch initialises UNet2DModel's layers by default
//! (diffusers adds no init of its own there): conv and Linear weights and biases uniform in
//! +-1/sqrt(fan_in) (kaiming_uniform with a = sqrt(5)), GroupNorm scales 1 and shifts 0, a class
//! table (nn.Embedding) standard normal. Drawn
//! from Philox keyed by (seed, tensor, element) over the names in sorted order, so a seed gives
//! the same model everywhere.

use std::collections::HashMap;

use crate::gpu::Context;
use crate::kernels::rng::philox4x32_10;
use crate::model::weights::WeightLayout;
use crate::model::{unet, HostTensor, UNetConfig, WeightBank};
use crate::Result;

/// The 4th Philox counter word of weight init (the trainer uses 0 to 3).
const INIT: u32 = 4;

/// Every file tensor of `config`'s UNet2DModel, initialised.
pub fn pytorch_default(ctx: &Context, config: &UNetConfig, seed: u64) -> Result<HashMap<String, HostTensor>> {
    // The architecture's tensors (names and shapes), from a model built with made-up weights.
    let mut bank = WeightBank::synthetic(seed);
    unet::build(ctx, config, &mut bank, 1)?;
    let mut shapes: Vec<(String, Vec<usize>)> = bank
        .layouts
        .iter()
        .filter_map(|l| match l {
            WeightLayout::Plain { name, shape } | WeightLayout::Packed { name, shape, .. } => {
                Some((name.clone(), shape.clone()))
            }
            WeightLayout::Constant | WeightLayout::Rows { .. } => None,
        })
        .collect();
    shapes.sort();
    let by_name: HashMap<&str, &[usize]> = shapes.iter().map(|(n, s)| (n.as_str(), s.as_slice())).collect();
    let key = [seed as u32, (seed >> 32) as u32];
    let mut out = HashMap::new();
    for (t, (name, shape)) in shapes.iter().enumerate() {
        let n: usize = shape.iter().product();
        // The layer's weight decides the bound of its bias too.
        let weight_shape = match name.strip_suffix(".bias") {
            Some(layer) => by_name.get(format!("{layer}.weight").as_str()).copied().unwrap_or(&[]),
            None => shape.as_slice(),
        };
        let data = if name == "class_embedding.weight" {
            // nn.Embedding: N(0, 1), Box-Muller on two Philox words.
            (0..n)
                .map(|e| {
                    let bits = philox4x32_10([e as u32, t as u32, 0, INIT], key);
                    let (u1, u2) = (
                        ((bits[0] >> 8) as f64 + 0.5) / 16_777_216.0,
                        ((bits[1] >> 8) as f64 + 0.5) / 16_777_216.0,
                    );
                    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
                })
                .collect()
        } else if weight_shape.len() < 2 {
            // A GroupNorm's scale and shift.
            vec![if name.ends_with(".weight") { 1.0 } else { 0.0 }; n]
        } else {
            let fan_in: usize = weight_shape[1..].iter().product();
            let bound = 1.0 / (fan_in as f64).sqrt();
            (0..n)
                .map(|e| {
                    let bits = philox4x32_10([e as u32, t as u32, 0, INIT], key)[0];
                    let u = ((bits >> 8) as f64 + 0.5) / 16_777_216.0;
                    ((2.0 * u - 1.0) * bound) as f32
                })
                .collect()
        };
        out.insert(name.clone(), HostTensor { shape: shape.clone(), data });
    }
    Ok(out)
}
