#!/usr/bin/env python3
"""Write classifier-free guided chains from diffusers: tests/golden/guided/.

    .venv/bin/python tools/make_guided_goldens.py   (after tools/make_class_goldens.py)

diffusers has no class-conditional UNet2DModel pipeline, so the reference is DiT's loop
(`pipelines/dit/pipeline_dit.py`) on the class-table golden UNet2DModel: per step the batch is
evaluated once on [null labels; labels] (unconditional rows first), the output split in two and
combined as uncond + s (cond - uncond), and that goes to the scheduler's step as the model output.
From a given x_T (scaled by init_noise_sigma), for three deterministic samplers, one of them on a
v-prediction scheduler config (the combination applies to whatever the model predicts). Each
run's scheduler config is written beside it.
"""

import json
import shutil
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, UNet2DModel
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
UNET = ROOT / "tests" / "golden" / "class" / "class-table"
OUT = ROOT / "tests" / "golden" / "guided"
CLASSES = {"ddim": DDIMScheduler, "dpm++2m": DPMSolverMultistepScheduler, "euler": EulerDiscreteScheduler}
LABELS = [3, 7, 0]
NULL = 10
SCALE = 3.0

# DDIM without clip_sample: with clipping this random model's chain is chaotic (see
# make_sampler_goldens.py).
CASES = [("ddim", 10, dict(clip_sample=False)), ("dpm++2m", 12, {}),
         ("euler", 10, dict(prediction_type="v_prediction"))]


def chain(unet, sampler, steps, overrides):
    config = dict(json.loads((UNET / "scheduler_config.json").read_text()), **overrides)
    name = f"{sampler}-{steps}"
    (OUT / f"{name}.json").write_text(json.dumps(config, indent=1))
    sched = CLASSES[sampler].from_config(config)
    sched.set_timesteps(steps)
    gen = torch.Generator().manual_seed(17)
    x_t = torch.randn(len(LABELS), 1, 28, 28, generator=gen)
    labels = torch.tensor(LABELS)
    rows = torch.cat([torch.full_like(labels, NULL), labels])
    x = x_t * sched.init_noise_sigma
    with torch.no_grad():
        for t in sched.timesteps:
            both = sched.scale_model_input(torch.cat([x, x]), t)
            out = unet(both, t, class_labels=rows).sample
            uncond, cond = out.chunk(2)
            x = sched.step(uncond + SCALE * (cond - uncond), t, x).prev_sample
    save_file({"x_T": x_t.contiguous(), "labels": labels.float(), "sample": x.contiguous(),
               "scale_null": torch.tensor([SCALE, float(NULL)])}, OUT / f"{name}.safetensors")
    print(f"guided {name}: sample std {x.std():.3f}")


def main():
    torch.set_num_threads(2)
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    unet = UNet2DModel.from_pretrained(UNET, torch_dtype=torch.float32).eval()
    for case in CASES:
        chain(unet, *case)


if __name__ == "__main__":
    main()
