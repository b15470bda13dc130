#!/usr/bin/env python3
"""Write the bundled models' parity goldens: diffusers' DDIM from a given x_T on weights/fashion-mnist,
and, guided, on weights/fashion-mnist-cond.

    .venv/bin/python tools/make_bundled_golden.py

The folder is loaded as a user would load it (UNet2DModel.from_pretrained, DDIMScheduler.from_pretrained
on the scheduler_config.json there, so the model's own settings apply), run as diffusers pipelines run:
x = x_T * init_noise_sigma; for each t: UNet, step. Written to tests/golden/samplers/chains/bundled-ddim-10.safetensors.
The conditional model runs DiT's guidance loop (one evaluation of [null; class] rows, uncond +
s (cond - uncond)) for one image of each of its ten classes at the engine's default guidance
scale, with its config's null class: tests/golden/samplers/chains/bundled-cond-ddim-10.safetensors.
"""
import json

from pathlib import Path

import torch
from diffusers import DDIMScheduler, UNet2DModel
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "weights" / "fashion-mnist"
OUT = ROOT / "tests" / "golden" / "samplers" / "chains" / "bundled-ddim-10.safetensors"
COND = ROOT / "weights" / "fashion-mnist-cond"
COND_OUT = OUT.with_name("bundled-cond-ddim-10.safetensors")
SCALE = 2.0  # pipeline::DEFAULT_GUIDANCE_SCALE


def conditional():
    unet = UNet2DModel.from_pretrained(COND, torch_dtype=torch.float32).eval()
    null = json.loads((COND / "config.json").read_text())["null_class_id"]
    sched = DDIMScheduler.from_pretrained(COND)
    sched.set_timesteps(10)
    labels = torch.arange(10)
    rows = torch.cat([torch.full_like(labels, null), labels])
    x_t = torch.randn(10, 1, 28, 28, generator=torch.Generator().manual_seed(12))
    x = x_t * sched.init_noise_sigma
    with torch.no_grad():
        for t in sched.timesteps:
            out = unet(sched.scale_model_input(torch.cat([x, x]), t), t, class_labels=rows).sample
            uncond, cond = out.chunk(2)
            x = sched.step(uncond + SCALE * (cond - uncond), t, x).prev_sample
    save_file({"x_T": x_t.contiguous(), "labels": labels.float(), "sample": x.contiguous(),
               "scale_null": torch.tensor([SCALE, float(null)])}, COND_OUT)
    print(f"wrote {COND_OUT}: sample range [{x.min():.3f}, {x.max():.3f}]")


def main():
    torch.set_num_threads(2)
    unet = UNet2DModel.from_pretrained(MODEL, torch_dtype=torch.float32).eval()
    sched = DDIMScheduler.from_pretrained(MODEL)
    sched.set_timesteps(10)
    x_t = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(11))
    x = x_t * sched.init_noise_sigma
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(sched.scale_model_input(x, t), t).sample, t, x).prev_sample
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file({"x_T": x_t.contiguous(), "sample": x.contiguous()}, OUT)
    print(f"wrote {OUT}: sample range [{x.min():.3f}, {x.max():.3f}]")
    if COND.is_dir():
        conditional()


if __name__ == "__main__":
    main()
