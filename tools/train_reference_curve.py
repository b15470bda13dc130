#!/usr/bin/env python3
"""The PyTorch twin of a short `train` run, for the README's loss curves: the same recipe as

    wgpu-diffusion train --data /usr/share/datasets/fashion-mnist --arch fashion-mnist \
        --steps 300 --batch 16 --lr 5e-4 --warmup 30 --seed 0

trained as diffusers' train_unconditional.py steps (randn noise, randint t, add_noise, MSE on
epsilon, backward, clip_grad_norm_(1.0), AdamW(beta1 .95, beta2 .999, wd 1e-6, eps 1e-8),
get_scheduler("cosine"), EMAModel with warm-up power 3/4) on the same Fashion-MNIST images, its
own shuffle (the same data order is not required). Writes one JSON line a step
(step, loss, lr, grad_norm, seconds), as `train` writes train_log.jsonl.

    .venv/bin/python tools/train_reference_curve.py --out docs/curves/pytorch-fashion-300.jsonl
"""
import argparse
import gzip
import json
import struct
import time
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_fashion_mnist import UNET_CONFIG  # noqa: E402  (the bundled architecture)

DATA = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    raw = gzip.open(DATA).read()
    n, h, w = struct.unpack(">III", raw[4:16])
    images = torch.from_numpy(np.frombuffer(raw[16:], dtype=np.uint8).reshape(n, 1, h, w).copy())
    images = (images.float() / 255.0 - 0.5) / 0.5
    model = UNet2DModel(**UNET_CONFIG)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.95, 0.999), eps=1e-8, weight_decay=1e-6)
    lr = get_scheduler("cosine", optimizer=opt, num_warmup_steps=args.warmup, num_training_steps=args.steps)
    ema = EMAModel(model.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)
    order = torch.randperm(n)
    t0 = time.time()
    with open(args.out, "w") as log:
        for step in range(1, args.steps + 1):
            idx = order[((step - 1) * args.batch + torch.arange(args.batch)) % n]
            x0 = images[idx]
            noise = torch.randn(x0.shape)
            t = torch.randint(0, 1000, (args.batch,))
            loss = F.mse_loss(model(sched.add_noise(x0, noise, t), t).sample, noise)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            step_lr = opt.param_groups[0]["lr"]
            opt.step()
            lr.step()
            opt.zero_grad()
            ema.step(model.parameters())
            log.write(json.dumps({"step": step, "loss": loss.item(), "lr": step_lr, "grad_norm": norm.item(),
                                  "seconds": time.time() - t0}) + "\n")
    print(f"{args.steps} steps in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
