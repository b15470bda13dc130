#!/usr/bin/env python3
"""Proves that diffusers loads what `train` writes (tests/model/checkpoint.rs): trains the tiny
model of tests/data/tiny_unet_config.json for 6 steps with this engine's CLI into
tests/golden/checkpoint/model, loads it with UNet2DModel.from_pretrained (no missing, unexpected
or mismatched keys) and DDPMScheduler.from_pretrained, and writes diffusers' forward on a fixed
input beside it (forward.safetensors), which the engine must reproduce from the same folder.

    cargo build --release && .venv/bin/python tools/make_checkpoint_golden.py
"""
import shutil
import subprocess
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DModel
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    out = ROOT / "tests" / "golden" / "checkpoint"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    data = out / "data.npy"
    np.save(data, rng.integers(0, 256, size=(20, 1, 8, 8), dtype=np.uint8))
    model = out / "model"
    subprocess.run([str(ROOT / "target" / "release" / "wgpu-diffusion"), "train", "--data", str(data),
                    "--out", str(model), "--config", str(ROOT / "tests" / "data" / "tiny_unet_config.json"),
                    "--steps", "6", "--batch", "4", "--lr", "1e-3", "--warmup", "2", "--sample-every", "0"],
                   check=True)
    data.unlink()
    unet, info = UNet2DModel.from_pretrained(model, output_loading_info=True)
    for k, v in info.items():
        assert not v, f"{k}: {v}"
    sched = DDPMScheduler.from_pretrained(model)
    assert sched.config.prediction_type == "epsilon" and sched.config.num_train_timesteps == 1000
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 1, 8, 8, generator=gen)
    t = torch.tensor([0, 417, 999])
    with torch.no_grad():
        y = unet(x, t).sample
    save_file({"sample": x, "timesteps": t.float(), "output": y.contiguous()}, out / "forward.safetensors")
    # The resume state is not needed to prove loading: keep the golden small.
    (model / "training_state.safetensors").unlink()
    print("diffusers loaded", sum(p.numel() for p in unet.parameters()), "parameters; output std", y.std().item())


if __name__ == "__main__":
    main()
