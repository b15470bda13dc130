#!/usr/bin/env python3
"""Train the bundled Fashion-MNIST DDPM with diffusers, and export it to weights/fashion-mnist/.

The DDPM recipe (Ho et al. 2020) at a size this repository can afford: epsilon-prediction MSE, AdamW,
linear learning-rate warm-up, grad clip 1.0, an EMA of the weights (the EMA is what gets exported),
linear betas 1e-4..0.02 over T = 1000. Data: Debian's dataset-fashion-mnist package (idx files),
28x28 grayscale scaled to [-1, 1]; nothing is downloaded.

    .venv/bin/python tools/train_fashion_mnist.py --measure          # FLOPs per forward, images/s
    .venv/bin/python tools/train_fashion_mnist.py --steps 12000      # train (resumes if a checkpoint exists)
    .venv/bin/python tools/train_fashion_mnist.py --export-only      # write weights/ from the checkpoint

Everything is reproducible from --seed: the data order, the timesteps and the noise come from seeded
generators, and the checkpoint stores their states, so a resumed run continues the same sequence.
"""

import argparse
import gzip
import json
import math
import os
import struct
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel

ROOT = Path(__file__).resolve().parent.parent
DATA = Path("/usr/share/datasets/fashion-mnist")
CKPT = ROOT / "target" / "train-fashion-mnist" / "checkpoint.pt"
OUT = ROOT / "weights" / "fashion-mnist"

# Sized from measurement (see the model card the export writes): small enough that the default
# `sample` runs in about a minute through lavapipe, big enough to draw recognisable garments.
UNET_CONFIG = dict(
    sample_size=28,
    in_channels=1,
    out_channels=1,
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
    attention_head_dim=32,
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
)
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=1e-4,
    beta_end=0.02,
    beta_schedule="linear",
    prediction_type="epsilon",
    clip_sample=True,
    clip_sample_range=1.0,
    variance_type="fixed_small",
    timestep_spacing="leading",
)


def read_idx_images(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        if magic != 2051:
            raise ValueError(f"{path}: not an idx3 image file (magic {magic})")
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(n, rows, cols)


def load_images(split: str = "train") -> torch.Tensor:
    prefix = "train" if split == "train" else "t10k"
    path = DATA / f"{prefix}-images-idx3-ubyte.gz"
    if not path.exists():
        raise SystemExit(f"{path} is missing: apt-get install dataset-fashion-mnist")
    x = torch.from_numpy(read_idx_images(path).copy()).float()
    return (x / 127.5 - 1.0).unsqueeze(1)  # [N, 1, 28, 28] in [-1, 1]


def forward_flops(model: UNet2DModel) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 1, 28, 28)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, torch.tensor([500])).sample
    return counter.get_total_flops()


def lr_at(step: int, args) -> float:
    return args.lr * min(1.0, (step + 1) / args.warmup)


def export(ema: UNet2DModel, state: dict, args) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    model = ema.to(torch.float16) if args.f16 else ema
    model.save_pretrained(OUT, safe_serialization=True)
    model.float()
    DDPMScheduler(**SCHEDULER_CONFIG).save_pretrained(OUT)
    params = sum(p.numel() for p in ema.parameters())
    card = f"""# Fashion-MNIST DDPM (bundled model)

A diffusers `UNet2DModel` trained from scratch by `tools/train_fashion_mnist.py` (seed {args.seed}) on the
60,000 Fashion-MNIST training images (Debian's `dataset-fashion-mnist`), 28x28 grayscale in [-1, 1].

- Size: {params:,} parameters, {state['flops'] / 1e9:.3f} GFLOP per image per UNet evaluation;
  block_out_channels {list(UNET_CONFIG['block_out_channels'])}, layers_per_block {UNET_CONFIG['layers_per_block']},
  attention (2 heads of 32) at 7x7 and in the mid block, GroupNorm with 8 groups.
- Recipe: epsilon MSE, AdamW (lr {args.lr:g}, weight decay 0, {args.warmup} warm-up steps), batch {args.batch},
  grad clip 1.0, EMA decay {args.ema}, linear betas 1e-4..0.02, T = 1000.
- Trained {state['step']:,} steps ({state['step'] * args.batch / 60000:.1f} epochs) in {state['seconds'] / 60:.0f} minutes
  on 2 CPU cores (PyTorch {torch.__version__}); final loss (mean of the last 200 steps) {state['final_loss']:.4f}.
- Why this size: the default `cargo run --release -- sample` makes 16 images with 20 DPM-Solver++
  steps, i.e. 320 UNet evaluations x {state['flops'] / 1e9:.2f} GFLOP = {320 * state['flops'] / 1e9:.0f} GFLOP; the engine runs this
  model at ~4 GFLOP/s through lavapipe on 2 cores (`bench --arch fashion-mnist --batch 16`), about
  half a minute. Training it costs ~3x the forward FLOPs per image: ~80 images/s on 2 cores.
- Weights: the EMA, stored as {'F16' if args.f16 else 'F32'} safetensors. The engine converts to f32 on load;
  diffusers loads the same file with `UNet2DModel.from_pretrained`.
- Regenerate: `.venv/bin/python tools/train_fashion_mnist.py --steps {state['step']} --seed {args.seed}`.
"""
    (OUT / "README.md").write_text(card)
    print(f"exported to {OUT}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoint-every", type=int, default=500)
    ap.add_argument("--f16", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--measure", action="store_true", help="print FLOPs and training speed, then exit")
    ap.add_argument("--export-only", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = UNet2DModel(**UNET_CONFIG)
    ema = UNet2DModel(**UNET_CONFIG)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    scheduler = DDPMScheduler(**SCHEDULER_CONFIG)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    flops = forward_flops(model)
    params = sum(p.numel() for p in model.parameters())
    print(f"UNet: {params:,} parameters, {flops / 1e9:.3f} GFLOP per image forward")

    gen = torch.Generator().manual_seed(args.seed)
    state = dict(step=0, seconds=0.0, losses=[], flops=flops, final_loss=float("nan"))
    if CKPT.exists() and not args.measure:
        ck = torch.load(CKPT, weights_only=False)
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        gen.set_state(ck["gen"])
        state = ck["state"]
        print(f"resumed from {CKPT} at step {state['step']}")
    if args.export_only:
        export(ema, state, args)
        return

    data = load_images()
    n = data.shape[0]
    perm = torch.randperm(n, generator=gen)
    pos = (state["step"] * args.batch) % n
    steps = 20 if args.measure else args.steps
    t0 = time.time()
    model.train()
    while state["step"] < steps:
        if pos + args.batch > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        x0 = data[perm[pos : pos + args.batch]]
        pos += args.batch
        t = torch.randint(0, 1000, (args.batch,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        xt = scheduler.add_noise(x0, eps, t)
        loss = F.mse_loss(model(xt, t).sample, eps)
        for g in opt.param_groups:
            g["lr"] = lr_at(state["step"], args)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        # EMA with the usual warm-up, so early weights do not dominate a short run.
        decay = min(args.ema, (1 + state["step"]) / (10 + state["step"]))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        state["step"] += 1
        state["losses"].append(loss.item())
        if state["step"] % 100 == 0 or args.measure:
            elapsed = state["seconds"] + time.time() - t0
            recent = state["losses"][-100:]
            print(f"step {state['step']:6d}  loss {sum(recent) / len(recent):.4f}  "
                  f"{elapsed / 60:6.1f} min  lr {lr_at(state['step'], args):.2e}", flush=True)
        if not args.measure and (state["step"] % args.checkpoint_every == 0 or state["step"] == steps):
            state["seconds"] += time.time() - t0
            t0 = time.time()
            state["final_loss"] = float(np.mean(state["losses"][-200:]))
            CKPT.parent.mkdir(parents=True, exist_ok=True)
            tmp = CKPT.with_suffix(".tmp")
            torch.save(dict(model=model.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(),
                            gen=gen.get_state(), state=state), tmp)
            os.replace(tmp, CKPT)
    if args.measure:
        dt = time.time() - t0
        print(f"{steps * args.batch / dt:.1f} images/s training "
              f"({3 * flops * steps * args.batch / dt / 1e9:.1f} GFLOP/s counting backward as 2x forward)")
        return
    export(ema, state, args)


if __name__ == "__main__":
    main()
