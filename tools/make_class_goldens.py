#!/usr/bin/env python3
"""Write small random class-conditional diffusers UNet2DModels and their outputs: the goldens of
tests/model/class_golden.rs.

    .venv/bin/python tools/make_class_goldens.py

Three configurations, both kinds of class embedding UNet2DModel has (../shared/CONDITIONING.md):
- "class-table": `num_class_embeds` (nn.Embedding added to the time embedding after its MLP),
  the bundled model's shape at half width, with the class names and null class the engine's
  `train` writes into config.json (extra keys diffusers ignores with a warning);
- "class-small": a class table on a 12x12 model, small enough that tools/make_train_goldens.py
  records five training steps of it;
- "class-timestep": `class_embed_type: "timestep"` (the label through the sinusoidal projection
  and its own MLP), 3 channels, attention at both levels, a custom time embedding width; its
  labels include large integers, which that embedding takes.

Each model has random weights (GroupNorm affine parameters and the class embedding perturbed so
defaults cannot hide a bug), is saved as diffusers saves it, loaded back by diffusers in float32
and run on a batch of 33 (sample, timesteps, class labels): io.safetensors holds inputs and
diffusers' output. Nothing here comes from the engine.
"""

import json
import shutil
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel
from golden_utils import perturb_norms
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "tests" / "golden" / "class"
BATCH = 33

FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                 "Bag", "Ankle boot"]

CONFIGS = {
    "class-table": dict(
        unet=dict(sample_size=28, in_channels=1, out_channels=1, block_out_channels=(16, 32, 32), layers_per_block=1,
                  down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                  up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), norm_num_groups=8, attention_head_dim=8,
                  flip_sin_to_cos=True, freq_shift=0, downsample_padding=1, num_class_embeds=11),
        extra={"id2label": {str(i): n for i, n in enumerate(FASHION_NAMES)}, "null_class_id": 10},
        labels=lambda gen: torch.randint(0, 11, (BATCH,), generator=gen)),
    # Small enough for tools/make_train_goldens.py to record five training steps' weights.
    "class-small": dict(
        unet=dict(sample_size=12, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                  down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                  norm_num_groups=4, attention_head_dim=4, num_class_embeds=11),
        extra={"id2label": {str(i): str(i) for i in range(10)}, "null_class_id": 10},
        labels=lambda gen: torch.randint(0, 11, (BATCH,), generator=gen)),
    "class-timestep": dict(
        unet=dict(sample_size=12, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                  down_block_types=("AttnDownBlock2D", "AttnDownBlock2D"),
                  up_block_types=("AttnUpBlock2D", "AttnUpBlock2D"), norm_num_groups=4, attention_head_dim=4,
                  time_embedding_dim=48, flip_sin_to_cos=False, freq_shift=1, class_embed_type="timestep"),
        extra={},
        labels=lambda gen: torch.cat([torch.tensor([0, 1, 7, 999, 4321]),
                                      torch.randint(0, 100, (BATCH - 5,), generator=gen)])),
}


def perturb(model: torch.nn.Module, gen: torch.Generator) -> None:
    perturb_norms(model, gen)
    with torch.no_grad():
        # The class embedding should move the output as much as the time embedding does.
        for p in model.class_embedding.parameters():
            p.mul_(2.0)


def main() -> None:
    torch.set_num_threads(2)
    for i, (name, spec) in enumerate(CONFIGS.items()):
        torch.manual_seed(3000 + i)
        gen = torch.Generator().manual_seed(4000 + i)
        model = UNet2DModel(**spec["unet"]).eval()
        perturb(model, gen)
        folder = OUT / name
        shutil.rmtree(folder, ignore_errors=True)
        model.save_pretrained(folder, safe_serialization=True)
        DDPMScheduler(num_train_timesteps=1000).save_pretrained(folder)
        if spec["extra"]:
            config = json.loads((folder / "config.json").read_text())
            config.update(spec["extra"])
            (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

        # The reference: diffusers loading the saved folder (extra keys and all), in float32.
        loaded = UNet2DModel.from_pretrained(folder, torch_dtype=torch.float32).eval()
        cfg = spec["unet"]
        sample = torch.randn(BATCH, cfg["in_channels"], cfg["sample_size"], cfg["sample_size"], generator=gen)
        timesteps = torch.randint(0, 1000, (BATCH,), generator=gen)
        labels = spec["labels"](gen)
        with torch.no_grad():
            output = loaded(sample, timesteps, class_labels=labels).sample
            # The labels matter: another label changes the output.
            other = loaded(sample, timesteps, class_labels=(labels + 1) % 11).sample
        assert (output - other).abs().max() > 1e-2, "the class embedding should change the output"
        save_file({"sample": sample.contiguous(), "timesteps": timesteps.float(), "class_labels": labels.float(),
                   "output": output.contiguous()}, folder / "io.safetensors")
        params = sum(p.numel() for p in loaded.parameters())
        print(f"{name}: {params:,} parameters, output std {output.std():.3f}")
    (OUT / "README.md").write_text(
        "Written by `tools/make_class_goldens.py` (diffusers " + __import__("diffusers").__version__ +
        ", torch " + torch.__version__ + "). Each folder is a class-conditional diffusers UNet2DModel\n"
        "with random weights and `io.safetensors`: a batch of 33 inputs (with class labels) and diffusers'\n"
        "output. Do not edit by hand.\n")


if __name__ == "__main__":
    main()
