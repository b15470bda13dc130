#!/usr/bin/env python3
"""Five training steps as diffusers' train_unconditional.py takes them, for the engine's trainer
(tests/model/train_golden.rs): on two of tools/make_grad_goldens.py's models (their folders under
tests/golden/grad/ are the initial weights), per step x0, eps standard normal and t uniform in
[0, 1000) (saved), x_t = add_noise, loss = F.mse_loss(model(x_t, t).sample, eps), backward,
clip_grad_norm_(1.0), AdamW (beta1 0.95, weight decay 1e-2: train_unconditional's 1e-6 is a
no-op in f32), get_scheduler("cosine", 2 warm-up steps of 5), EMAModel (decay 0.9999, warm-up
power 3/4). Written: each step's inputs and loss, and the weights and EMA after each step
(`step{k}.weight.<name>`, `step{k}.ema.<name>`, under the file's names).

"class-small" does the same for a class-conditional model (tests/golden/class/class-small, batch
12): each step's class labels drawn from its 10 classes, then swapped for the null class (10)
where a dropout mask drawn with probability 0.25 says so, as classifier-free guidance training
does; `step{k}.labels` are the labels after the dropout (what the model saw) and
`step{k}.dropped` the mask.

    .venv/bin/python tools/make_train_goldens.py [NAME ...]   # writes tests/golden/train/<name>.safetensors
"""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
STEPS = 5


def main() -> None:
    torch.set_num_threads(2)
    out_dir = ROOT / "tests" / "golden" / "train"
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = [("batch12", "grad"), ("all-attention", "grad"), ("class-small", "class")]
    only = sys.argv[1:]
    for seed, (name, kind) in enumerate(cases):
        if only and name not in only:
            continue
        folder = ROOT / "tests" / "golden" / kind / name
        model = UNet2DModel.from_pretrained(folder)
        sched = DDPMScheduler.from_pretrained(folder)
        conditional = model.config.num_class_embeds is not None
        batch = 12 if conditional else load_file(folder / "grads.safetensors")["timesteps"].numel()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.95, 0.999), eps=1e-8, weight_decay=1e-2)
        lr = get_scheduler("cosine", optimizer=opt, num_warmup_steps=2, num_training_steps=STEPS)
        ema = EMAModel(model.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)
        gen = torch.Generator().manual_seed(100 + seed)
        cfg = model.config
        out = {}
        for step in range(1, STEPS + 1):
            x0 = torch.randn(batch, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=gen)
            eps = torch.randn(x0.shape, generator=gen)
            t = torch.randint(0, 1000, (batch,), generator=gen)
            kwargs = {}
            if conditional:
                labels = torch.randint(0, 10, (batch,), generator=gen)
                dropped = torch.rand(batch, generator=gen) < 0.25
                labels = torch.where(dropped, torch.full_like(labels, 10), labels)
                kwargs = dict(class_labels=labels)
                out.update({f"step{step}.labels": labels.float(), f"step{step}.dropped": dropped.float()})
            loss = F.mse_loss(model(sched.add_noise(x0, eps, t), t, **kwargs).sample, eps)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            lr.step()
            opt.zero_grad()
            ema.step(model.parameters())
            out.update({f"step{step}.x0": x0, f"step{step}.eps": eps, f"step{step}.timesteps": t.float(),
                        f"step{step}.loss": loss.detach().reshape(1)})
            names = [n for n, _ in model.named_parameters()]
            for n, p, s in zip(names, model.parameters(), ema.shadow_params):
                out[f"step{step}.weight.{n}"] = p.detach().clone()
                out[f"step{step}.ema.{n}"] = s.detach().clone()
        save_file({k: v.contiguous() for k, v in out.items()}, out_dir / f"{name}.safetensors")
        print(f"{name}: losses", [round(out[f'step{k}.loss'].item(), 6) for k in range(1, STEPS + 1)])


if __name__ == "__main__":
    main()
