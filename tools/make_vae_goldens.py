#!/usr/bin/env python3
"""Write small random diffusers autoencoders and their encodes and decodes: tests/golden/vae/.

    .venv/bin/python tools/make_vae_goldens.py

Two configurations shaped like the autoencoders latent diffusion runs (../shared/LATENT.md):
- "kl-sd": AutoencoderKL with Stable Diffusion's VAE structure (four levels, two resnets a level,
  4 latent channels, mid-block attention, downsampling by 8) at 1/16 of its widths, F16 weights,
  the legacy attention names (query, key, value, proj_attn) many published VAE files use;
- "vq-ldm": VQModel shaped like CompVis/ldm-celebahq-256's vqvae (three levels, 3 latent
  channels, a codebook) at 1/16 of its widths and a 64-entry codebook, BF16 weights.
Random weights (GroupNorm affine parameters perturbed; the codebook spread so the nearest code
is rarely a near-tie), saved as diffusers saves them and loaded back by diffusers in float32.

For batches 1, 3 and 9 of random images, `b{B}.safetensors` holds:
- `image` [B, 3, S, S] and, KL: `mean`, `logvar` (the posterior's, logvar clamped to [-30, 20]),
  `eps` (standard normal) and `sample` = mean + exp(logvar / 2) eps; VQ: `latents` (encode's:
  quant_conv's output, not quantized) and `indices` (the nearest codes, [B, H, W] as float);
- `z` (a given latent) and `decoded` = decode(z).sample (VQ: quantized first, as decode does).
"kl-sd/tiled.safetensors": `z` [2, 4, 10, 7] (larger than the 4x4-latent tiles its sample_size 32
gives) and `decoded`, decode(z) with `enable_tiling()`: diffusers' overlapping tiles (a stride of
3 latents, edge tiles of 1), each decoded alone, blended linearly over 8 pixels, cropped to 24.
"kl-sd/tiled-encode.safetensors": `image` [2, 3, 56, 40] (larger than its 32-pixel tiles) and the
posterior's `mean` and `logvar` from encode(image) with `enable_tiling()` (tiles of 32 pixels at a
stride of 24, each encoded alone, the moments blended over 1 latent and cropped to 3).
Nothing here comes from the engine.
"""

import shutil
from pathlib import Path

import torch
from diffusers import AutoencoderKL, VQModel
from golden_utils import perturb_norms, spread_codebook
from safetensors.torch import load_file, save_file

OUT = Path(__file__).resolve().parent.parent / "tests" / "golden" / "vae"
BATCHES = [1, 3, 9]
LEGACY = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}

CONFIGS = {
    "kl-sd": dict(
        cls=AutoencoderKL, dtype=torch.float16, legacy=True,
        config=dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                    up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 16, 32, 32),
                    layers_per_block=2, latent_channels=4, norm_num_groups=4, sample_size=32)),
    "vq-ldm": dict(
        cls=VQModel, dtype=torch.bfloat16, legacy=False,
        config=dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                    up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 16, 32),
                    layers_per_block=2, latent_channels=3, num_vq_embeddings=64, vq_embed_dim=3,
                    norm_num_groups=4, sample_size=32)),
}


def perturb(model, gen):
    perturb_norms(model, gen)
    if isinstance(model, VQModel):
        spread_codebook(model, gen)


def main():
    torch.set_num_threads(2)
    shutil.rmtree(OUT, ignore_errors=True)
    for i, (name, spec) in enumerate(CONFIGS.items()):
        torch.manual_seed(5000 + i)
        gen = torch.Generator().manual_seed(6000 + i)
        model = spec["cls"](**spec["config"]).eval()
        perturb(model, gen)
        folder = OUT / name
        model.to(spec["dtype"]).save_pretrained(folder, safe_serialization=True)
        if spec["legacy"]:
            path = folder / "diffusion_pytorch_model.safetensors"
            renamed = {}
            for key, value in load_file(path).items():
                if ".mid_block.attentions." in key:
                    for new, old in LEGACY.items():
                        key = key.replace(new, old)
                renamed[key] = value
            save_file(renamed, path, metadata={"format": "pt"})
        loaded = spec["cls"].from_pretrained(folder, torch_dtype=torch.float32).eval()
        cfg = spec["config"]
        s = cfg["sample_size"]
        down = 2 ** (len(cfg["block_out_channels"]) - 1)
        for b in BATCHES:
            image = torch.rand(b, 3, s, s, generator=gen) * 2 - 1
            z = torch.randn(b, cfg["latent_channels"], s // down, s // down, generator=gen)
            out = {"image": image, "z": z}
            with torch.no_grad():
                if spec["cls"] is AutoencoderKL:
                    dist = loaded.encode(image).latent_dist
                    eps = torch.randn(dist.mean.shape, generator=gen)
                    out.update(mean=dist.mean, logvar=dist.logvar, eps=eps, sample=dist.mean + dist.std * eps)
                else:
                    latents = loaded.encode(image).latents
                    _, _, (_, _, idx) = loaded.quantize(latents)
                    out.update(latents=latents, indices=idx.reshape(b, s // down, s // down).float())
                out["decoded"] = loaded.decode(z).sample
            save_file({k: v.contiguous() for k, v in out.items()}, folder / f"b{b}.safetensors")
        if spec["cls"] is AutoencoderKL:
            z = torch.randn(2, cfg["latent_channels"], 10, 7, generator=gen)
            loaded.enable_tiling()
            with torch.no_grad():
                decoded = loaded.decode(z).sample
            loaded.disable_tiling()
            save_file({"z": z.contiguous(), "decoded": decoded.contiguous()}, folder / "tiled.safetensors")
            image = torch.rand(2, 3, 56, 40, generator=gen) * 2 - 1
            loaded.enable_tiling()
            with torch.no_grad():
                dist = loaded.encode(image).latent_dist
            loaded.disable_tiling()
            save_file({"image": image.contiguous(), "mean": dist.mean.contiguous(), "logvar": dist.logvar.contiguous()},
                      folder / "tiled-encode.safetensors")
        params = sum(p.numel() for p in loaded.parameters())
        print(f"{name}: {params:,} parameters")
    (OUT / "README.md").write_text(
        "Written by `tools/make_vae_goldens.py` (diffusers " + __import__("diffusers").__version__ + ", torch " +
        torch.__version__ + "). Each folder is a diffusers autoencoder with random weights and, per batch,\n"
        "`b{B}.safetensors`: images, their encodes, latents and their decodes. Do not edit by hand.\n")


if __name__ == "__main__":
    main()
