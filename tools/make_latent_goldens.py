#!/usr/bin/env python3
"""Write two tiny latent diffusion pipelines and their whole chains: tests/golden/latent/.

    .venv/bin/python tools/make_latent_goldens.py

- "ldm-vq": an LDMPipeline as diffusers' save_pretrained writes it (model_index.json naming
  `vqvae` VQModel, `unet` UNet2DModel, `scheduler` DDIMScheduler, a folder each): 3 latent
  channels at 8x8, images 32x32.
- "ldm-kl": the same with an AutoencoderKL as `vae` (model_index.json written here: diffusers has
  no unconditional KL pipeline class, so the folder names the components and the engine goes by
  them): 4 latent channels at 8x8, images 64x64, scaling_factor 0.13 (not the default).
Random weights (GroupNorm affine parameters perturbed), saved as F16; the reference loads them in
float32.

For each, three samplers from a given x_T (standard normal latents [2, C, 8, 8]): the reference is
LDMPipeline's own loop (latents = x_T * init_noise_sigma; per t scale_model_input, UNet, step),
then the decode as LDMPipeline does it, `decode(latents / scaling_factor)` (the VQModel quantizes
there). `<sampler>-<steps>.safetensors` holds x_T, the final latents and the decoded images (the
decoder's output, before the 8-bit conversion); `<sampler>-<steps>.json` the scheduler config.

"ldm-kl/img2img-ddim-10-0.6.safetensors": img2img as diffusers' img2img pipelines run it in latent
space: an image [3, 64, 64] encoded, the posterior's mode times the scaling factor (retrieve_latents
"argmax"), noised by `add_noise` with given noise at the first of the int(10 x 0.6) = 6 last DDIM
timesteps, the chain from there, decoded: `image`, `noise` [2, 4, 8, 8], `decoded`.
"""

import json
import shutil
from pathlib import Path

import torch
from diffusers import (AutoencoderKL, DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
                       LDMPipeline, UNet2DModel, VQModel)
from golden_utils import perturb_norms, spread_codebook
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "tests" / "golden" / "latent"
CLASSES = {"ddim": DDIMScheduler, "dpm++2m": DPMSolverMultistepScheduler, "euler": EulerDiscreteScheduler}
CASES = [("ddim", 10, dict(clip_sample=False)), ("dpm++2m", 12, {}), ("euler", 10, {})]


def perturb(model, gen):
    perturb_norms(model, gen)
    if isinstance(model, VQModel):
        spread_codebook(model, gen)


def unet(channels):
    return UNet2DModel(sample_size=8, in_channels=channels, out_channels=channels, block_out_channels=(16, 32),
                       layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8, attention_head_dim=8)


def make(name, gen):
    folder = OUT / name
    if name == "ldm-vq":
        vae = VQModel(block_out_channels=(8, 16, 32), down_block_types=("DownEncoderBlock2D",) * 3,
                      up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=1, latent_channels=3,
                      num_vq_embeddings=32, norm_num_groups=4, sample_size=32)
        model = unet(3)
        perturb(vae, gen)
        perturb(model, gen)
        LDMPipeline(vqvae=vae, unet=model, scheduler=DDIMScheduler()).to(torch.float16).save_pretrained(folder)
    else:
        vae = AutoencoderKL(block_out_channels=(8, 16, 16, 32), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=4,
                            norm_num_groups=4, sample_size=64, scaling_factor=0.13)
        model = unet(4)
        perturb(vae, gen)
        perturb(model, gen)
        vae.half().save_pretrained(folder / "vae")
        model.half().save_pretrained(folder / "unet")
        DDIMScheduler().save_pretrained(folder / "scheduler")
        index = {"_class_name": "LDMPipeline", "_diffusers_version": __import__("diffusers").__version__,
                 "scheduler": ["diffusers", "DDIMScheduler"], "unet": ["diffusers", "UNet2DModel"],
                 "vae": ["diffusers", "AutoencoderKL"]}
        (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


def chains(name, gen):
    folder = OUT / name
    key = "vqvae" if name == "ldm-vq" else "vae"
    vae_cls = VQModel if name == "ldm-vq" else AutoencoderKL
    vae = vae_cls.from_pretrained(folder / key, torch_dtype=torch.float32).eval()
    model = UNet2DModel.from_pretrained(folder / "unet", torch_dtype=torch.float32).eval()
    base = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    for sampler, steps, overrides in CASES:
        config = dict(base, **overrides)
        (folder / f"{sampler}-{steps}.json").write_text(json.dumps(config, indent=1))
        sched = CLASSES[sampler].from_config(config)
        sched.set_timesteps(steps)
        c = model.config.in_channels
        x_t = torch.randn(2, c, 8, 8, generator=gen)
        latents = x_t * sched.init_noise_sigma
        with torch.no_grad():
            for t in sched.timesteps:
                eps = model(sched.scale_model_input(latents, t), t).sample
                latents = sched.step(eps, t, latents).prev_sample
            image = vae.decode(latents / vae.config.scaling_factor).sample
        save_file({"x_T": x_t.contiguous(), "latents": latents.contiguous(), "image": image.contiguous()},
                  folder / f"{sampler}-{steps}.safetensors")
        print(f"{name} {sampler} {steps}: image {tuple(image.shape)} std {image.std():.3f}")


def img2img(gen):
    folder = OUT / "ldm-kl"
    vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=torch.float32).eval()
    model = UNet2DModel.from_pretrained(folder / "unet", torch_dtype=torch.float32).eval()
    sched = DDIMScheduler.from_config(dict(json.loads((folder / "ddim-10.json").read_text())))
    sched.set_timesteps(10)
    timesteps = sched.timesteps[10 - int(10 * 0.6):]
    image = torch.rand(1, 3, 64, 64, generator=gen) * 2 - 1
    noise = torch.randn(2, 4, 8, 8, generator=gen)
    with torch.no_grad():
        init = vae.encode(image).latent_dist.mode() * vae.config.scaling_factor
        latents = sched.add_noise(torch.cat([init, init]), noise, timesteps[:1].repeat(2))
        for t in timesteps:
            latents = sched.step(model(sched.scale_model_input(latents, t), t).sample, t, latents).prev_sample
        decoded = vae.decode(latents / vae.config.scaling_factor).sample
    save_file({"image": image[0].contiguous(), "noise": noise.contiguous(), "decoded": decoded.contiguous()},
              folder / "img2img-ddim-10-0.6.safetensors")
    print(f"ldm-kl img2img: decoded std {decoded.std():.3f}")


def main():
    torch.set_num_threads(2)
    shutil.rmtree(OUT, ignore_errors=True)
    for i, name in enumerate(["ldm-vq", "ldm-kl"]):
        torch.manual_seed(7000 + i)
        gen = torch.Generator().manual_seed(8000 + i)
        make(name, gen)
        chains(name, gen)
        if name == "ldm-kl":
            img2img(gen)
    (OUT / "README.md").write_text(
        "Written by `tools/make_latent_goldens.py` (diffusers " + __import__("diffusers").__version__ +
        ", torch " + torch.__version__ + "): two tiny latent pipelines (VQ and KL) and whole chains\n"
        "from given latents, decoded as LDMPipeline decodes. Do not edit by hand.\n")


if __name__ == "__main__":
    main()
