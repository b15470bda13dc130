#!/usr/bin/env python3
"""Write the bundled model's parity golden: diffusers' DDIM from a given x_T on weights/fashion-mnist.

    .venv/bin/python tools/make_bundled_golden.py

The folder is loaded as a user would load it (UNet2DModel.from_pretrained, DDIMScheduler.from_pretrained
on the scheduler_config.json there, so the model's own settings apply), run as diffusers pipelines run:
x = x_T * init_noise_sigma; for each t: UNet, step. Written to tests/golden/samplers/chains/bundled-ddim-10.safetensors.
"""

from pathlib import Path

import torch
from diffusers import DDIMScheduler, UNet2DModel
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "weights" / "fashion-mnist"
OUT = ROOT / "tests" / "golden" / "samplers" / "chains" / "bundled-ddim-10.safetensors"


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


if __name__ == "__main__":
    main()
