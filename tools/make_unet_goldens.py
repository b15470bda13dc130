#!/usr/bin/env python3
"""Write small random diffusers UNet2DModels and their outputs, the goldens of tests/unet_golden.rs.

    .venv/bin/python tools/make_unet_goldens.py

For each configuration below: build a UNet2DModel with random weights (GroupNorm affine parameters
perturbed away from (1, 0), so defaults cannot hide a bug), save it as diffusers does (flat folder or
pipeline layout; F32, F16 or BF16; optionally with the legacy attention names), load the saved folder
back with diffusers in float32, and write its output for fixed inputs and timesteps to io.safetensors
(sample, timesteps, output). The engine must match these outputs; nothing here comes from the engine.
"""

import json
import shutil
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel
from safetensors.torch import load_file, save_file

OUT = Path(__file__).resolve().parent.parent / "tests" / "golden" / "unet"

CONFIGS = {
    # ddpm-cifar10-32's block structure at 1/8 of its width, legacy attention names.
    "cifar10-structure": dict(
        unet=dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(16, 32, 32, 32),
                  layers_per_block=2, down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8,
                  norm_eps=1e-6, flip_sin_to_cos=False, freq_shift=1, attention_head_dim=None, downsample_padding=0),
        dtype=torch.float32, layout="flat", legacy_names=True, timesteps=[999, 10]),
    # The bundled model's shape: 28x28, one channel, multi-head attention at 7x7, F16 file.
    "fashion-f16": dict(
        unet=dict(sample_size=28, in_channels=1, out_channels=1, block_out_channels=(16, 32, 32), layers_per_block=1,
                  down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                  up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), norm_num_groups=8, attention_head_dim=8,
                  flip_sin_to_cos=True, freq_shift=0, downsample_padding=1),
        dtype=torch.float16, layout="flat", legacy_names=False, timesteps=[0, 500, 999]),
    # 20x20 -> 10 -> 5, 3 channels in and 1 out, centred input, custom time embedding width, no mid
    # attention, mid scale factor, BF16 weights in a pipeline folder.
    "odd-bf16-pipeline": dict(
        unet=dict(sample_size=20, in_channels=3, out_channels=1, block_out_channels=(8, 16, 24), layers_per_block=1,
                  down_block_types=("AttnDownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                  up_block_types=("AttnUpBlock2D", "UpBlock2D", "AttnUpBlock2D"), norm_num_groups=4, norm_eps=1e-5,
                  attention_head_dim=4, center_input_sample=True, time_embedding_dim=40, add_attention=False,
                  mid_block_scale_factor=1.41421356, flip_sin_to_cos=True, freq_shift=1),
        dtype=torch.bfloat16, layout="pipeline", legacy_names=False, timesteps=[37]),
    # Attention everywhere with tiny heads, its own attention group count, padding-0 downsampling.
    "all-attention": dict(
        unet=dict(sample_size=12, in_channels=2, out_channels=2, block_out_channels=(8, 16), layers_per_block=2,
                  down_block_types=("AttnDownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "AttnUpBlock2D"),
                  norm_num_groups=4, attn_norm_num_groups=2, attention_head_dim=2, downsample_padding=0,
                  mid_block_scale_factor=0.5, flip_sin_to_cos=False, freq_shift=0),
        dtype=torch.float32, layout="flat", legacy_names=False, timesteps=[1, 998]),
    # No mid block at all.
    "no-mid-block": dict(
        unet=dict(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                  down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                  mid_block_type=None, norm_num_groups=8, flip_sin_to_cos=True, freq_shift=1),
        dtype=torch.float16, layout="pipeline", legacy_names=False, timesteps=[250, 750]),
}

LEGACY = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}


def perturb_norms(model: torch.nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=gen))


def main() -> None:
    torch.set_num_threads(2)
    for i, (name, spec) in enumerate(CONFIGS.items()):
        torch.manual_seed(1000 + i)
        gen = torch.Generator().manual_seed(2000 + i)
        model = UNet2DModel(**spec["unet"]).eval()
        perturb_norms(model, gen)
        folder = OUT / name
        shutil.rmtree(folder, ignore_errors=True)
        unet_dir = folder / "unet" if spec["layout"] == "pipeline" else folder
        model.to(spec["dtype"]).save_pretrained(unet_dir, safe_serialization=True)
        sched_dir = folder / "scheduler" if spec["layout"] == "pipeline" else folder
        DDPMScheduler(num_train_timesteps=1000).save_pretrained(sched_dir)

        # The reference: diffusers loading the saved folder, in float32.
        loaded = UNet2DModel.from_pretrained(unet_dir, torch_dtype=torch.float32).eval()
        if spec["legacy_names"]:
            path = unet_dir / "diffusion_pytorch_model.safetensors"
            tensors = load_file(path)
            renamed = {}
            for key, value in tensors.items():
                for new, old in LEGACY.items():
                    key = key.replace(new, old)
                renamed[key] = value
            save_file(renamed, path, metadata={"format": "pt"})
        cfg = spec["unet"]
        batch = len(spec["timesteps"])
        sample = torch.randn(batch, cfg["in_channels"], cfg["sample_size"], cfg["sample_size"], generator=gen)
        timesteps = torch.tensor(spec["timesteps"], dtype=torch.long)
        with torch.no_grad():
            output = loaded(sample, timesteps).sample
        save_file({"sample": sample.contiguous(), "timesteps": timesteps.float(), "output": output.contiguous()},
                  folder / "io.safetensors")
        params = sum(p.numel() for p in loaded.parameters())
        print(f"{name}: {params:,} parameters, output std {output.std():.3f}")
    (OUT / "README.md").write_text(
        "Written by `tools/make_unet_goldens.py` (diffusers " + __import__("diffusers").__version__ +
        ", torch " + torch.__version__ + "). Each folder is a diffusers UNet2DModel (flat or pipeline\n"
        "layout) with random weights and `io.safetensors`: inputs and diffusers' output. Do not edit by hand.\n")


if __name__ == "__main__":
    main()
