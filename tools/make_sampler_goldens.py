#!/usr/bin/env python3
"""Write sampler goldens from diffusers' schedulers: tests/golden/samplers/.

    .venv/bin/python tools/make_sampler_goldens.py

1. steps/: for each case (sampler x configuration x step count), a scheduler made the way the engine
   makes it (`Class.from_config(scheduler_config)`), its timesteps and init_noise_sigma, and every step
   of `scheduler.step` fed with given random x, model output and noise (noise is injected where
   diffusers draws it), with the model input that `scale_model_input` makes. Multistep state carries
   over from step to step as in a real run.
2. chains/: whole runs (DDIM, DPM-Solver++ 2M, Euler, PNDM) from a given x_T on the fashion-f16 golden UNet,
   written as diffusers pipelines run them: x = x_T * init_noise_sigma; per t: model input, UNet, step.
   Each run's scheduler config is written beside it. DDIM runs without clip_sample here: with clipping,
   this random model's chain is chaotic (diffusers' own output moves by 2e-4 relative when the UNet
   output is perturbed by 1e-7), so no f32 engine could be held to 1e-4 on it; clipping is covered by
   the step goldens and by the trained model's DDIM golden.
"""

import json
import shutil
from pathlib import Path

import torch
from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, PNDMScheduler, UNet2DModel)
from diffusers.schedulers import scheduling_ddpm, scheduling_euler_ancestral_discrete
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "golden" / "samplers"
CLASSES = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpm++2m": DPMSolverMultistepScheduler,
           "euler": EulerDiscreteScheduler, "euler-a": EulerAncestralDiscreteScheduler, "pndm": PNDMScheduler}

# A DDPM scheduler_config.json as a model folder holds it (through JSON: an in-memory config also
# lists `_use_default_values`, which from_config would drop), then variations.
BASE = json.loads(DDPMScheduler().to_json_string())
CONFIGS = {
    "linear-eps": {},
    "linear-eps-trailing": dict(timestep_spacing="trailing"),
    "linear-eps-linspace": dict(timestep_spacing="linspace"),
    "linear-eps-offset1": dict(steps_offset=1),
    "scaled-v-noclip": dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                            prediction_type="v_prediction", clip_sample=False),
    "cosine-sample-clip2": dict(beta_schedule="squaredcos_cap_v2", prediction_type="sample", clip_sample_range=2.0),
    "linear-eps-fixed-large": dict(variance_type="fixed_large"),
}
# (sampler, config, steps, extra): the cases written.
CASES = []
for cfg in CONFIGS:
    for sampler in [s for s in CLASSES if s != "pndm"]:
        if sampler == "euler-a" and "sample" in cfg:
            continue  # diffusers does not implement it
        if cfg == "linear-eps-fixed-large" and sampler != "ddpm":
            continue
        CASES.append((sampler, cfg, 10, {}))
CASES += [
    ("ddim", "linear-eps", 7, dict(eta=1.0)),
    ("ddim", "scaled-v-noclip", 9, dict(eta=0.5)),
    ("ddpm", "linear-eps", 25, {}),
    ("dpm++2m", "linear-eps", 20, {}),                       # 15 or more steps
    ("dpm++2m", "linear-eps-trailing", 5, dict(solver_type="heun")),
    ("dpm++2m", "linear-eps", 8, dict(solver_order=1)),
    ("dpm++2m", "linear-eps", 6, dict(final_sigmas_type="sigma_min", lower_order_final=False)),
    ("euler", "linear-eps", 13, dict(final_sigmas_type="sigma_min")),
    ("euler-a", "linear-eps-trailing", 4, {}),
    ("ddim", "linear-eps", 1, {}),
    ("dpm++2m", "linear-eps", 1, {}),
]
# PNDM as Stable Diffusion runs it (PLMS: skip_prk_steps), after the others so their seeds stand:
# every spacing, SD's schedule with steps_offset 1 (epsilon and v), 1, 2, 3, 4 and 50 steps.
PLMS = dict(skip_prk_steps=True)
SD = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, steps_offset=1)
CASES += [("pndm", cfg, 10, PLMS) for cfg in ["linear-eps", "linear-eps-trailing", "linear-eps-linspace",
                                                "linear-eps-offset1"]]
CASES += [
    ("pndm", "linear-eps", 20, dict(PLMS, **SD)),
    ("pndm", "linear-eps", 12, dict(PLMS, **SD, prediction_type="v_prediction")),
    ("pndm", "linear-eps", 9, dict(PLMS, set_alpha_to_one=True)),
    ("pndm", "linear-eps", 1, PLMS),
    ("pndm", "linear-eps", 2, PLMS),
    ("pndm", "linear-eps", 3, PLMS),
    ("pndm", "linear-eps", 4, PLMS),
    ("pndm", "linear-eps", 50, dict(PLMS, **SD)),
]

SHAPE = (2, 1, 4, 4)


class InjectedNoise:
    """Stands in for diffusers' randn_tensor inside a scheduler module, returning the given noise."""

    def __init__(self, module):
        self.module, self.noise = module, None

    def __enter__(self):
        self.saved = self.module.randn_tensor
        self.module.randn_tensor = lambda *a, **k: self.noise.clone()
        return self

    def __exit__(self, *exc):
        self.module.randn_tensor = self.saved


def make_scheduler(sampler, cfg_name, extra):
    config = dict(BASE, **CONFIGS[cfg_name])
    config.update({k: v for k, v in extra.items() if k != "eta"})
    return CLASSES[sampler].from_config(config), config


def step_case(index, sampler, cfg_name, steps, extra):
    sched, config = make_scheduler(sampler, cfg_name, extra)
    sched.set_timesteps(steps)
    gen = torch.Generator().manual_seed(index)
    n = len(sched.timesteps)
    xs, ms, zs = (torch.randn((n,) + SHAPE, generator=gen) for _ in range(3))
    ins, ys = [], []
    module = {"ddpm": scheduling_ddpm, "euler-a": scheduling_euler_ancestral_discrete}.get(sampler)
    with InjectedNoise(module) if module else torch.no_grad() as inj:
        for i, t in enumerate(sched.timesteps):
            ins.append(sched.scale_model_input(xs[i], t))
            if module:
                inj.noise = zs[i]
            kwargs = dict(eta=extra.get("eta", 0.0), variance_noise=zs[i]) if sampler == "ddim" else {}
            ys.append(sched.step(ms[i], t, xs[i], **kwargs).prev_sample)
    name = f"{index:02d}-{sampler}-{cfg_name}-{steps}"
    save_file({
        "timesteps": sched.timesteps.float().contiguous(),
        "init_noise_sigma": torch.tensor([float(sched.init_noise_sigma)]),
        "x": xs.reshape(n, -1).contiguous(), "model_out": ms.reshape(n, -1).contiguous(),
        "noise": zs.reshape(n, -1).contiguous(), "model_in": torch.stack(ins).reshape(n, -1).contiguous(),
        "prev_sample": torch.stack(ys).reshape(n, -1).contiguous(),
    }, OUT / "steps" / f"{name}.safetensors")
    return dict(name=name, sampler=sampler, steps=steps, eta=extra.get("eta", 0.0),
                config={k: v for k, v in config.items() if not k.startswith("_")})


def chain_case(sampler, steps, overrides):
    unet_dir = ROOT / "tests" / "golden" / "unet" / "fashion-f16"
    unet = UNet2DModel.from_pretrained(unet_dir, torch_dtype=torch.float32).eval()
    config = dict(json.loads((unet_dir / "scheduler_config.json").read_text()), **overrides)
    (OUT / "chains" / f"{sampler}-{steps}.json").write_text(json.dumps(config, indent=1))
    sched = CLASSES[sampler].from_config(config)
    sched.set_timesteps(steps)
    gen = torch.Generator().manual_seed(7)
    x_t = torch.randn(2, 1, 28, 28, generator=gen)
    x = x_t * sched.init_noise_sigma
    with torch.no_grad():
        for t in sched.timesteps:
            eps = unet(sched.scale_model_input(x, t), t).sample
            x = sched.step(eps, t, x).prev_sample
    save_file({"x_T": x_t.contiguous(), "sample": x.contiguous()}, OUT / "chains" / f"{sampler}-{steps}.safetensors")
    print(f"chain {sampler} {steps}: sample std {x.std():.3f}")


def main():
    torch.set_num_threads(2)
    # chains/ also holds make_bundled_golden.py's files: only steps/ is written afresh.
    shutil.rmtree(OUT / "steps", ignore_errors=True)
    (OUT / "steps").mkdir(parents=True)
    (OUT / "chains").mkdir(parents=True, exist_ok=True)
    index = [step_case(i, *case) for i, case in enumerate(CASES)]
    (OUT / "steps" / "cases.json").write_text(json.dumps(index, indent=1, default=str))
    print(f"{len(index)} step cases")
    for sampler, steps, overrides in [("ddim", 10, dict(clip_sample=False)), ("dpm++2m", 12, {}), ("euler", 10, {}),
                                      ("pndm", 10, dict(skip_prk_steps=True))]:
        chain_case(sampler, steps, overrides)


if __name__ == "__main__":
    main()
