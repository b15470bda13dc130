"""Goldens for the optimizer kernels (src/kernels/optim.rs): five steps of PyTorch's AdamW (CPU,
single-tensor) with gradient clipping by global norm, diffusers' cosine schedule with warm-up
(`get_scheduler`) and diffusers' EMAModel with its warm-up, on four tensors of odd sizes with
fixed random gradients. Written per step: the gradients, the clipping coefficient PyTorch applied,
the learning rate and EMA decay used, and the weights, moments and EMA shadow after the step.

    .venv/bin/python tools/make_optim_goldens.py   # writes tests/golden/optim/adamw.safetensors
"""
import pathlib

import torch
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from safetensors.torch import save_file

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "golden" / "optim"
STEPS, LR, BETAS, EPS, WD, MAX_NORM = 5, 1e-3, (0.95, 0.999), 1e-8, 1e-2, 1.0


def main():
    torch.manual_seed(0)
    shapes = [(3, 5), (17,), (4, 4, 3, 3), (1,)]
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    opt = torch.optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    sched = get_scheduler("cosine", optimizer=opt, num_warmup_steps=2, num_training_steps=STEPS)
    ema = EMAModel(params, decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)
    out = {f"init.{i}": p.detach().clone() for i, p in enumerate(params)}
    for step in range(1, STEPS + 1):
        # Gradients large enough that clipping acts on some steps, not on others.
        scale = 0.05 if step % 2 else 1.0
        for i, p in enumerate(params):
            p.grad = torch.randn(p.shape) * scale
            out[f"step{step}.grad.{i}"] = p.grad.clone()
        total = torch.nn.utils.clip_grad_norm_(params, MAX_NORM)
        coef = torch.clamp(MAX_NORM / (total + 1e-6), max=1.0)
        out[f"step{step}.clip"] = coef.reshape(1)
        out[f"step{step}.lr"] = torch.tensor([opt.param_groups[0]["lr"]], dtype=torch.float64)
        opt.step()
        sched.step()
        decay = ema.get_decay(ema.optimization_step + 1)
        ema.step(params)
        out[f"step{step}.ema_decay"] = torch.tensor([decay], dtype=torch.float64)
        for i, p in enumerate(params):
            state = opt.state[p]
            out[f"step{step}.param.{i}"] = p.detach().clone()
            out[f"step{step}.m.{i}"] = state["exp_avg"].clone()
            out[f"step{step}.v.{i}"] = state["exp_avg_sq"].clone()
            out[f"step{step}.ema.{i}"] = ema.shadow_params[i].clone()
    OUT.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, OUT / "adamw.safetensors")
    print(f"wrote {OUT / 'adamw.safetensors'}: {len(out)} tensors")


if __name__ == "__main__":
    main()
