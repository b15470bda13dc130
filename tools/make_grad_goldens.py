#!/usr/bin/env python3
"""Write small random diffusers UNet2DModels with PyTorch autograd's gradients of one training loss:
the goldens for the engine's backward pass (tests/model/grad_golden.rs).

    .venv/bin/python tools/make_grad_goldens.py

For each configuration below: a UNet2DModel with random weights (GroupNorm affine parameters
perturbed away from (1, 0)), saved as diffusers does (F32, flat folder, DDPM scheduler config; one
with the legacy attention names in its file); then, as diffusers' train_unconditional.py computes a
step: x0 and eps standard normal, t uniform in [0, 1000), x_t = scheduler.add_noise(x0, eps, t),
loss = F.mse_loss(model(x_t, t).sample, eps), and loss.backward(). grads.safetensors holds x0, t
(as f32), eps, x_t, the loss [1] and `grad.<name>` for every parameter, under diffusers' current
names (to_q, to_k, to_v, to_out.0, whatever the file says). Nothing here comes from the engine.
"""

import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from safetensors.torch import load_file, save_file

from make_unet_goldens import LEGACY, perturb_norms  # the same conventions as the forward goldens

OUT = Path(__file__).resolve().parent.parent / "tests" / "golden" / "grad"

CONFIGS = {
    # 28x28 grayscale like the bundled model, multi-head attention at 7x7.
    "fashion-multihead": dict(
        unet=dict(sample_size=28, in_channels=1, out_channels=1, block_out_channels=(8, 16, 16), layers_per_block=1,
                  down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                  up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=4,
                  flip_sin_to_cos=True, freq_shift=0),
        batch=2, legacy_names=False),
    # ddpm-cifar10-32's conventions: padding-0 downsampling, one head, legacy attention names.
    "cifar-legacy-pad0": dict(
        unet=dict(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=2,
                  down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                  norm_num_groups=4, norm_eps=1e-6, attention_head_dim=None, downsample_padding=0,
                  flip_sin_to_cos=False, freq_shift=1),
        batch=2, legacy_names=True),
    # Batch 12 (past one workgroup of 8), no attention in the blocks.
    "batch12": dict(
        unet=dict(sample_size=8, in_channels=2, out_channels=2, block_out_channels=(8, 8), layers_per_block=1,
                  down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                  norm_num_groups=4, attention_head_dim=4, flip_sin_to_cos=True, freq_shift=1),
        batch=12, legacy_names=False),
    # Attention everywhere, two heads, its own attention group count.
    "all-attention": dict(
        unet=dict(sample_size=12, in_channels=2, out_channels=2, block_out_channels=(8, 16), layers_per_block=1,
                  down_block_types=("AttnDownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "AttnUpBlock2D"),
                  norm_num_groups=4, attn_norm_num_groups=2, attention_head_dim=4, mid_block_scale_factor=0.5,
                  flip_sin_to_cos=False, freq_shift=0),
        batch=3, legacy_names=False),
}

def main() -> None:
    torch.set_num_threads(2)
    for i, (name, spec) in enumerate(CONFIGS.items()):
        torch.manual_seed(3000 + i)
        gen = torch.Generator().manual_seed(4000 + i)
        model = UNet2DModel(**spec["unet"])
        perturb_norms(model, gen)
        folder = OUT / name
        shutil.rmtree(folder, ignore_errors=True)
        model.save_pretrained(folder, safe_serialization=True)
        scheduler = DDPMScheduler(num_train_timesteps=1000)
        scheduler.save_pretrained(folder)
        if spec["legacy_names"]:
            path = folder / "diffusion_pytorch_model.safetensors"
            renamed = {}
            for key, value in load_file(path).items():
                for new, old in LEGACY.items():
                    key = key.replace(new, old)
                renamed[key] = value
            save_file(renamed, path, metadata={"format": "pt"})

        cfg = spec["unet"]
        shape = (spec["batch"], cfg["in_channels"], cfg["sample_size"], cfg["sample_size"])
        x0 = torch.randn(shape, generator=gen)
        eps = torch.randn(shape, generator=gen)
        t = torch.randint(0, 1000, (spec["batch"],), generator=gen)
        x_t = scheduler.add_noise(x0, eps, t)
        model.train()  # dropout is 0: train and eval compute the same
        loss = F.mse_loss(model(x_t, t).sample.float(), eps)
        loss.backward()
        out = {"x0": x0, "timesteps": t.float(), "eps": eps, "x_t": x_t.contiguous(), "loss": loss.detach().reshape(1)}
        for pname, p in model.named_parameters():
            out[f"grad.{pname}"] = p.grad.detach().contiguous()
        save_file(out, folder / "grads.safetensors")
        params = sum(p.numel() for p in model.parameters())
        print(f"{name}: {params:,} parameters, batch {spec['batch']}, loss {loss.item():.6f}")
    (OUT / "README.md").write_text(
        "Written by `tools/make_grad_goldens.py` (diffusers " + __import__("diffusers").__version__ +
        ", torch " + torch.__version__ + "). Each folder is a diffusers UNet2DModel with random weights and\n"
        "`grads.safetensors`: one epsilon-MSE training loss and PyTorch autograd's gradient of every parameter\n"
        "(`grad.<name>`, current diffusers names). Do not edit by hand.\n")


if __name__ == "__main__":
    main()
