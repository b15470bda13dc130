#!/usr/bin/env python3
"""Write small random diffusers UNet2DConditionModels shaped like Stable Diffusion's UNets and their
outputs: the goldens of the engine's text-conditioned UNet.

    .venv/bin/python tools/make_unet_cond_goldens.py

Writes to tests/golden/unet_cond/:

- `sd1/`, `sd2/`, `sd1-inpaint/`: `config.json` + `diffusion_pytorch_model.safetensors` (F32), as
  `save_pretrained` writes a pipeline's `unet/` folder. All three have SD's block structure
  (CrossAttnDownBlock2D x3, DownBlock2D; UNetMidBlock2DCrossAttn; UpBlock2D, CrossAttnUpBlock2D x3),
  block_out_channels (16, 32, 32, 32), norm_num_groups 8, cross_attention_dim 32 (the width of the
  tiny text encoders in ../clip_text), sample_size 8, flip_sin_to_cos true, freq_shift 0, norm_eps 1e-5:
  - `sd1`: like SD 1.5: layers_per_block 2, attention_head_dim 4 (an int), use_linear_projection false
    (proj_in/proj_out are 1x1 convs [C, C, 1, 1]), upcast_attention false, in_channels 4.
  - `sd2`: like SD 2.1: layers_per_block 2, attention_head_dim [2, 4, 4, 4], use_linear_projection true
    (proj_in/proj_out are Linear [C, C]), upcast_attention true, in_channels 4.
  - `sd1-inpaint`: sd1 with in_channels 9 (conv_in.weight [16, 9, 3, 3]) and layers_per_block 1.
  The widths are half of (32, 64, 64, 64): at that width `sd1` alone is 12.9 MB, here it is 3.3 MB.
- `<model>-forward.safetensors` (8x8 latents), `sd1-forward-16.safetensors` (16x16),
  `sd2-forward-8x16.safetensors` (H 8, W 16): `sample` [3, C, H, W], `timestep` [3] (float32:
  999, 500, 1), `encoder_hidden_states` [3, 77, 32] (N(0, 1)), `out` = unet(...).sample [3, 4, H, W],
  and, to localise an error, forward-hook outputs (a tuple's first element):
  `hook.time_embedding` [3, 64], `hook.down_blocks.0.attentions.0` (the first Transformer2DModel,
  [3, 16, H, W]), `hook.down_blocks.0` (the block's returned hidden state, after its downsampler:
  [3, 16, H/2, W/2]) and `hook.mid_block` [3, 32, H/8, W/8].

Tensors of one transformer (`down_blocks.0.attentions.0.`, C = 16; transformer_blocks.0 only, one
per Transformer2DModel): norm.{weight,bias} [C]; proj_in.weight [C, C, 1, 1] (sd1) / [C, C] (sd2),
proj_in.bias [C]; transformer_blocks.0.: norm1/norm2/norm3.{weight,bias} [C]; attn1.to_q/to_k/to_v.weight
[C, C]; attn2.to_q.weight [C, C], attn2.to_k/to_v.weight [C, 32]; attn1/attn2.to_out.0.weight [C, C],
.bias [C]; ff.net.0.proj.weight [8C, C], .bias [8C]; ff.net.2.weight [C, 4C], .bias [C]; proj_out
mirrors proj_in. sd1 and sd2: 684 tensors, 827,476 parameters; sd1-inpaint: 440, 549,780.
max |out|: sd1 0.9172, sd1-16 1.4126, sd2 1.1465, sd2-8x16 1.3200, sd1-inpaint 1.3262.

What diffusers 0.42.1 builds (read in its source, checked below where it can be):
- heads and head dim: `num_attention_heads = num_attention_heads or attention_head_dim` (the config key
  is the head COUNT), an int is repeated per down block; down block i: heads[i], head_dim
  block_out[i] // heads[i]; mid: heads[-1] on block_out[-1]; up block i: reversed(heads)[i] on
  reversed(block_out)[i]. heads x head_dim, sd1: down 4x4, 4x8, 4x8; mid 4x8; up 4x8, 4x8, 4x4.
  sd2: down 2x8, 4x8, 4x8; mid 4x8; up 4x8, 4x8, 2x8 (head dim 8 everywhere, as SD 2.x keeps 64).
  Attention scale 1/sqrt(head_dim) (SDPA's default; AttnProcessor2_0 passes no scale).
- Transformer2DModel: GroupNorm(norm_num_groups, the UNet's, here 8: the blocks pass resnet_groups;
  eps 1e-6 fixed, not norm_eps), BasicTransformerBlock LayerNorms norm1/2/3 eps 1e-5 (its own norm_eps
  default, not the UNet's), elementwise_affine true. ResnetBlock2D GroupNorms and conv_norm_out: eps
  norm_eps (1e-5), norm_num_groups groups.
- attn1/attn2 to_q/to_k/to_v: no bias (attention_bias false); to_out.0: bias. attn2's to_k/to_v take
  the 32-wide text states. ff.net.0 is GEGLU: proj -> chunk(2, -1) -> first half * gelu(second half),
  exact erf gelu (the gate is the SECOND half); ff.net.2 Linear(4C, C).
- upcast_attention only acts in Attention.get_attention_scores (the classic AttnProcessor), where it
  does query.float()/key.float(): a no-op in f32; the default AttnProcessor2_0 never reads it. Checked:
  sd2 with upcast_attention off gives the same output bit for bit, and AttnProcessor agrees with SDPA.
- Latent H or W not divisible by 2^num_upsamplers (3 upsamplers here and in SD: 8): forward sets
  forward_upsample_size, and then every non-final up block gets upsample_size = the spatial size of
  the last skip left after popping its own (the skip the next block starts with), and Upsample2D does
  F.interpolate(size=upsample_size, mode="nearest") (src = floor(dst * in / out)) instead of x2; the
  down side is conv 3x3 s2 p1, out = ceil(n / 2). 12x12: down 12 -> 6 -> 3 -> 2, up 2 -> 3 -> 6 -> 12
  (2 -> 3 takes rows 0, 0, 1). When both are divisible, upsample_size stays None: plain x2.
  With 8x8 latents the mid block runs at 1x1 (one token: self-attention is just V); the 16x16 and
  8x16 cases run it at 2x2 and 1x2.

Weights: diffusers' default init (PyTorch's; diffusers zero-initialises nothing in this model: the
script checks that no weight is all zero, so conv_out and proj_out are random), then every GroupNorm
and LayerNorm weight and bias and every other bias moved by N(0, 0.1) (the defaults 1 and 0 would
hide a bug). The script checks the attention paths are visible in `out`: zeroing attn1's or attn2's
to_out, or doubling the attention logits, moves `out` by over 1%. Outputs come from each folder loaded
back by UNet2DConditionModel.from_pretrained in float32, under no_grad.
"""

import copy
import json
import shutil
from pathlib import Path

import diffusers
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor
from safetensors.torch import load_file, save_file

OUT = Path(__file__).resolve().parent.parent / "tests" / "golden" / "unet_cond"

COMMON = dict(
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(16, 32, 32, 32), norm_num_groups=8, cross_attention_dim=32, sample_size=8,
    out_channels=4, flip_sin_to_cos=True, freq_shift=0)
# Each model: its config and its cases (file suffix, H, W).
CONFIGS = {
    "sd1": dict(unet=dict(in_channels=4, layers_per_block=2, attention_head_dim=4, use_linear_projection=False,
                          upcast_attention=False),
                cases=[("", 8, 8), ("-16", 16, 16), ("-12", 12, 12)]),
    "sd2": dict(unet=dict(in_channels=4, layers_per_block=2, attention_head_dim=[2, 4, 4, 4],
                          use_linear_projection=True, upcast_attention=True),
                cases=[("", 8, 8), ("-8x16", 8, 16), ("-10x14", 10, 14)]),
    "sd1-inpaint": dict(unet=dict(in_channels=9, layers_per_block=1, attention_head_dim=4, use_linear_projection=False,
                                  upcast_attention=False),
                        cases=[("", 8, 8)]),
}
TIMESTEPS = [999.0, 500.0, 1.0]
HOOKS = ["time_embedding", "down_blocks.0.attentions.0", "down_blocks.0", "mid_block"]
# One transformer's tensors, listed in the report.
TRANSFORMER = "down_blocks.0.attentions.0."


def perturb(model: torch.nn.Module, gen: torch.Generator) -> None:
    norms = set()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
                for p in (m.weight, m.bias):
                    p.add_(0.1 * torch.randn(p.shape, generator=gen))
                    norms.add(id(p))
        for name, p in model.named_parameters():
            if name.endswith(".bias") and id(p) not in norms:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))


def unzero(model: torch.nn.Module) -> list[str]:
    """Weights that came out all zero, re-initialised: a zero proj_out or conv_out would hide a path."""
    fixed = []
    for name, m in model.named_modules():
        w = getattr(m, "weight", None)
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and w is not None and not w.any():
            m.reset_parameters()
            fixed.append(name)
    return fixed


def forward(model, sample, timestep, text, hooks=()):
    seen = {}
    handles = []
    for name in hooks:
        def grab(_m, _i, out, name=name):
            seen[f"hook.{name}"] = (out[0] if isinstance(out, tuple) else out).detach().clone()
        handles.append(model.get_submodule(name).register_forward_hook(grab))
    with torch.no_grad():
        out = model(sample, timestep, encoder_hidden_states=text).sample
    for h in handles:
        h.remove()
    return out, seen


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def check_attention_visible(model, inputs, out) -> str:
    """Zeroing attn1's or attn2's output, or doubling the logits (q x 2), must move `out` by > 1%."""
    notes = []
    for which in ("attn1", "attn2"):
        for change in ("zero", "q x2"):
            m2 = copy.deepcopy(model)
            with torch.no_grad():
                for name, m in m2.named_modules():
                    if name.endswith(which):
                        if change == "zero":
                            m.to_out[0].weight.zero_()
                            m.to_out[0].bias.zero_()
                        else:
                            m.to_q.weight.mul_(2.0)
            moved = rel(forward(m2, *inputs)[0], out)
            assert moved > 0.01, (which, change, moved)
            notes.append(f"{which} {change} moves out by {moved:.3f}")
    return ", ".join(notes)


def main() -> None:
    torch.set_num_threads(2)
    diffusers.utils.logging.disable_progress_bar()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    for i, (name, spec) in enumerate(CONFIGS.items()):
        torch.manual_seed(7000 + i)
        gen = torch.Generator().manual_seed(8000 + i)
        model = UNet2DConditionModel(**COMMON, **spec["unet"]).eval()
        fixed = unzero(model)
        perturb(model, gen)
        folder = OUT / name
        model.save_pretrained(folder, safe_serialization=True)

        # The reference: the folder loaded back as a pipeline loads it, every key used.
        loaded, info = UNet2DConditionModel.from_pretrained(folder, torch_dtype=torch.float32,
                                                            output_loading_info=True, low_cpu_mem_usage=False)
        loaded.eval()
        assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
        tensors = load_file(folder / "diffusion_pytorch_model.safetensors")
        assert all(v.dtype == torch.float32 for v in tensors.values())

        for suffix, h, w in spec["cases"]:
            c = spec["unet"]["in_channels"]
            sample = torch.randn(3, c, h, w, generator=gen)
            timestep = torch.tensor(TIMESTEPS, dtype=torch.float32)
            text = torch.randn(3, 77, 32, generator=gen)
            inputs = (sample, timestep, text)
            out, seen = forward(loaded, *inputs, hooks=HOOKS)
            assert out.shape == (3, 4, h, w)
            notes = check_attention_visible(loaded, inputs, out) if suffix == "" else ""
            if spec["unet"]["upcast_attention"]:
                # upcast_attention off, and the classic processor (the only one that reads it): same output.
                plain = copy.deepcopy(loaded)
                for m in plain.modules():
                    if isinstance(m, Attention):
                        m.upcast_attention = False
                assert torch.equal(forward(plain, *inputs)[0], out)
                classic = copy.deepcopy(loaded)
                classic.set_attn_processor(AttnProcessor())
                diff = (forward(classic, *inputs)[0] - out).abs().max().item()
                assert diff < 1e-5, diff
                notes += f"{'; ' if notes else ''}upcast off: identical, AttnProcessor vs SDPA {diff:.1e}"
            golden = {"sample": sample, "timestep": timestep, "encoder_hidden_states": text, "out": out, **seen}
            save_file({k: v.contiguous() for k, v in golden.items()}, OUT / f"{name}-forward{suffix}.safetensors")
            print(f"{name}{suffix} {h}x{w}: max |out| {out.abs().max():.4f} (std {out.std():.4f}); hooks "
                  + ", ".join(f"{k[5:]} {list(v.shape)}" for k, v in seen.items())
                  + (f"; {notes}" if notes else ""))

        cfg = json.loads((folder / "config.json").read_text())
        keys = ["in_channels", "block_out_channels", "layers_per_block", "attention_head_dim", "num_attention_heads",
                "use_linear_projection", "upcast_attention", "cross_attention_dim", "norm_num_groups", "norm_eps"]
        size = (folder / "diffusion_pytorch_model.safetensors").stat().st_size
        print(f"{name}: {sum(p.numel() for p in loaded.parameters()):,} parameters, {len(tensors)} tensors, "
              f"{size / 1e6:.2f} MB; re-initialised zero weights: {fixed or 'none'}; config "
              + json.dumps({k: cfg[k] for k in keys}))
        heads = []
        for part in ("down_blocks", "mid_block", "up_blocks"):
            for mname, m in loaded.named_modules():
                if mname.startswith(part) and mname.endswith("attentions.0.transformer_blocks.0.attn1"):
                    heads.append(f"{mname.split('.attentions')[0]} {m.heads}x{m.inner_dim // m.heads}")
        print("    heads x head_dim: " + ", ".join(heads))
        for key, v in tensors.items():
            if name != "sd1-inpaint" and key.startswith(TRANSFORMER) and ("transformer_blocks.0." in key or ".transformer_blocks." not in key):
                print(f"    {key[len(TRANSFORMER):]} {list(v.shape)}")
    (OUT / "README.md").write_text(
        "Written by `tools/make_unet_cond_goldens.py` (diffusers " + diffusers.__version__ + ", torch " +
        torch.__version__ + "). `sd1/`, `sd2/`, `sd1-inpaint/`:\n"
        "small random UNet2DConditionModels (F32 `unet/` folders) with SD 1.5's and SD 2.1's block structure\n"
        "(conv vs linear proj_in, int vs per-block head counts, upcast_attention) and a 9-channel inpainting one,\n"
        "block_out_channels (16, 32, 32, 32), cross_attention_dim 32 (the ../clip_text encoders' width).\n"
        "`*-forward*.safetensors`: sample, timestep (float32), encoder_hidden_states, diffusers' `out` and\n"
        "`hook.<module>` intermediate outputs. Do not edit by hand.\n")


if __name__ == "__main__":
    main()
