#!/usr/bin/env python3
"""img2img (SDEdit) goldens from diffusers: tests/golden/img2img/ (tests/sampling/img2img.rs).

On the fashion-f16 golden UNet, for DDIM (no clipping: see make_sampler_goldens.py), DPM-Solver++
(2M) and Euler at several strengths, the chain as pipeline_stable_diffusion_img2img.py runs it:
set_timesteps(N); init = min(int(N * strength), N); t_start = max(N - init, 0);
timesteps[t_start * order:]; set_begin_index(t_start * order) where the scheduler has it;
x = add_noise(x0, noise, timesteps[:1]) (no init_noise_sigma); per t: scale_model_input, UNet,
step. The same input image for both batch elements, each with its own noise (saved: the engine
is given it). Written: x0, noise, the timesteps run and the result.

    .venv/bin/python tools/make_img2img_goldens.py
"""
import json
import shutil
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, UNet2DModel
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "golden" / "img2img"
CLASSES = {"ddim": DDIMScheduler, "dpm++2m": DPMSolverMultistepScheduler, "euler": EulerDiscreteScheduler}
CASES = [("ddim", 10, 0.5, dict(clip_sample=False)), ("ddim", 10, 0.29, dict(clip_sample=False)),
         ("dpm++2m", 12, 0.5, {}), ("dpm++2m", 12, 1.0, {}), ("euler", 10, 0.5, {}), ("euler", 10, 1.0, {})]


def main():
    torch.set_num_threads(2)
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    unet_dir = ROOT / "tests" / "golden" / "unet" / "fashion-f16"
    unet = UNet2DModel.from_pretrained(unet_dir, torch_dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(3)
    image = torch.rand(1, 1, 28, 28, generator=gen) * 2 - 1
    for sampler, steps, strength, overrides in CASES:
        config = dict(json.loads((unet_dir / "scheduler_config.json").read_text()), **overrides)
        name = f"{sampler}-{steps}-{strength}"
        (OUT / f"{name}.json").write_text(json.dumps(config, indent=1))
        sched = CLASSES[sampler].from_config(config)
        sched.set_timesteps(steps)
        init = min(int(steps * strength), steps)
        t_start = max(steps - init, 0)
        ts = sched.timesteps[t_start * sched.order:]
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(t_start * sched.order)
        x0 = image.repeat(2, 1, 1, 1)
        noise = torch.randn(x0.shape, generator=gen)
        x = sched.add_noise(x0, noise, ts[:1].repeat(2))
        with torch.no_grad():
            for t in ts:
                eps = unet(sched.scale_model_input(x, t), t).sample
                x = sched.step(eps, t, x).prev_sample
        save_file({"image": image.reshape(-1).contiguous(), "noise": noise.contiguous(),
                   "timesteps": ts.float().contiguous(), "sample": x.contiguous()}, OUT / f"{name}.safetensors")
        print(f"{name}: {len(ts)} steps from t = {float(ts[0]):.2f}, sample std {x.std():.3f}")


if __name__ == "__main__":
    main()
