"""PyTorch + diffusers reference speed for the performance section: the same UNets as
`wgpu-diffusion bench` (ddpm-cifar10-32 with random weights, the bundled Fashion-MNIST model),
one forward, f32 (TF32 off), median of repeated runs after a warm-up.

    python3 tools/torch_reference_speed.py [--device cuda|cpu] [--threads N]
"""
import argparse
import json
import pathlib
import statistics
import time

import torch
from diffusers import UNet2DModel

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The same config as src/model/arch.rs's DDPM_CIFAR10_32.
CIFAR = {
    "sample_size": 32, "in_channels": 3, "out_channels": 3,
    "block_out_channels": [128, 256, 256, 256], "layers_per_block": 2,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "norm_num_groups": 32, "norm_eps": 1e-6, "act_fn": "silu", "attention_head_dim": None,
    "flip_sin_to_cos": False, "freq_shift": 1, "downsample_padding": 0,
}


def time_forward(model, batch, size, channels, device, reps):
    x = torch.randn(batch, channels, size, size, device=device)
    t = torch.full((batch,), 500, device=device, dtype=torch.long)
    times = []
    with torch.no_grad():
        for i in range(reps + 3):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(x, t)
            if device == "cuda":
                torch.cuda.synchronize()
            if i >= 3:
                times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    cifar = UNet2DModel(**CIFAR).to(args.device).eval()
    fashion = UNet2DModel.from_pretrained(ROOT / "weights" / "fashion-mnist").to(args.device).eval()
    rows = []
    for label, model, size, ch, batch in [("ddpm-cifar10-32", cifar, 32, 3, 1), ("ddpm-cifar10-32", cifar, 32, 3, 16),
                                          ("fashion-mnist (bundled)", fashion, 28, 1, 16)]:
        ms = time_forward(model, batch, size, ch, args.device, reps=20)
        rows.append({"model": label, "batch": batch, "forward_ms": round(ms, 3), "device": name,
                     "torch": torch.__version__})
        print(json.dumps(rows[-1]))


if __name__ == "__main__":
    main()
