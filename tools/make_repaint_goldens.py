#!/usr/bin/env python3
"""RePaint goldens from diffusers' RePaintScheduler and RePaintPipeline: tests/golden/repaint/
(tests/sampling/repaint.rs).

1. timesteps.json: set_timesteps(N, jump_length, jump_n_sample) for several cases and T.
2. steps.safetensors: scheduler.step and undo_step on given x, model output, original, mask
   (1 keeps, 0 fills) and noise (injected where diffusers draws it), with eta 0 and 0.5, at
   several timesteps including t = 0.
3. chain-*.safetensors: whole RePaintPipeline runs on the fashion-f16 golden UNet, with
   num_train_timesteps overridden to 100 (so each undo draws 10 noises, not 100), N = 10,
   jump_length 3, jump_n_sample 2: every randn the pipeline draws comes, in order, from a noise
   tape that is saved, and the engine is given the same tape.

    .venv/bin/python tools/make_repaint_goldens.py
"""
import json
import shutil
from pathlib import Path

import torch
from diffusers import RePaintPipeline, RePaintScheduler, UNet2DModel
from diffusers.schedulers import scheduling_repaint
from diffusers.pipelines.deprecated.repaint import pipeline_repaint
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "golden" / "repaint"


class Tape:
    """Stands in for randn_tensor: hands out given noise in order, or draws and records it."""

    def __init__(self, gen):
        self.gen, self.drawn, self.given = gen, [], []

    def __call__(self, shape, generator=None, device=None, dtype=None, layout=None):
        z = self.given.pop(0) if self.given else torch.randn(shape, generator=self.gen)
        self.drawn.append(z)
        return z.to(dtype or torch.float32)


def main():
    torch.set_num_threads(2)
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    gen = torch.Generator().manual_seed(5)
    tape = Tape(gen)
    scheduling_repaint.randn_tensor = tape
    pipeline_repaint.randn_tensor = tape

    cases = [(1000, 10, 3, 2), (1000, 250, 10, 10), (1000, 5, 1, 1), (1000, 50, 10, 10), (1000, 25, 5, 3),
             (100, 10, 3, 2), (1000, 300, 10, 10), (1000, 7, 2, 3)]
    lists = []
    for t, n, jl, r in cases:
        s = RePaintScheduler(num_train_timesteps=t)
        s.set_timesteps(n, jump_length=jl, jump_n_sample=r)
        lists.append(dict(train=t, steps=n, jump_length=jl, jump_n_sample=r, timesteps=s.timesteps.tolist()))
    (OUT / "timesteps.json").write_text(json.dumps(lists))

    # Steps: 2 images of [1, 6, 5].
    out = {}
    shape = (2, 1, 6, 5)
    for eta in [0.0, 0.5]:
        s = RePaintScheduler()
        s.set_timesteps(10, jump_length=3, jump_n_sample=2)
        s.eta = eta
        for t in [900, 400, 100, 0]:
            x, eps, orig = (torch.randn(shape, generator=gen) for _ in range(3))
            mask = (torch.rand(shape, generator=gen) < 0.5).float()
            z = torch.randn(shape, generator=gen)
            tape.given = [z]
            y = s.step(eps, t, x, orig, mask, gen).prev_sample
            key = f"step.eta{eta}.t{t}"
            out.update({f"{key}.x": x, f"{key}.eps": eps, f"{key}.orig": orig, f"{key}.mask": mask,
                        f"{key}.z": z, f"{key}.out": y})
    s = RePaintScheduler()
    s.set_timesteps(10, jump_length=3, jump_n_sample=2)
    for t_last in [600, 200]:
        x = torch.randn(shape, generator=gen)
        zs = [torch.randn(shape, generator=gen) for _ in range(100)]
        tape.given = list(zs)
        y = s.undo_step(x, t_last, gen)
        key = f"undo.t{t_last}"
        out.update({f"{key}.x": x, f"{key}.z": torch.stack(zs), f"{key}.out": y})
    save_file({k: v.contiguous() for k, v in out.items()}, OUT / "steps.safetensors")

    # Whole chains.
    unet_dir = ROOT / "tests" / "golden" / "unet" / "fashion-f16"
    unet = UNet2DModel.from_pretrained(unet_dir, torch_dtype=torch.float32).eval()
    config = dict(json.loads((unet_dir / "scheduler_config.json").read_text()), num_train_timesteps=100)
    (OUT / "chain-config.json").write_text(json.dumps(config, indent=1))
    image = torch.rand(1, 1, 28, 28, generator=gen) * 2 - 1
    mask = torch.ones(1, 28, 28)
    mask[:, 8:20, 6:22] = 0.0  # a hole in the middle
    for eta in [0.0, 1.0]:
        sched = RePaintScheduler.from_config(config)
        pipe = RePaintPipeline(unet=unet, scheduler=sched)
        tape.drawn, tape.given = [], []
        with torch.no_grad():
            res = pipe(image, mask, num_inference_steps=10, eta=eta, jump_length=3, jump_n_sample=2,
                       generator=gen, output_type="np").images
        save_file({"image": image.reshape(-1).contiguous(), "mask": mask.reshape(-1).contiguous(),
                   "tape": torch.stack(tape.drawn).contiguous(),
                   "sample": torch.from_numpy(res).permute(0, 3, 1, 2).contiguous()},
                  OUT / f"chain-eta{eta}.safetensors")
        print(f"chain eta {eta}: {len(tape.drawn)} draws")


if __name__ == "__main__":
    main()
