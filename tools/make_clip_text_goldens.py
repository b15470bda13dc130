#!/usr/bin/env python3
"""Write two small random transformers CLIPTextModels shaped like Stable Diffusion's text encoders
and their outputs: the goldens of the engine's CLIP text encoder.

    .venv/bin/python tools/make_clip_text_goldens.py

Writes to tests/golden/clip_text/:

- `sd1/`: SD 1.x's text tower (OpenAI ViT-L/14: `quick_gelu`) at width 32, 3 layers, 4 heads, MLP
  160 (not 4x the width), rewritten in the layout of the published `text_encoder/model.safetensors`
  (saved by transformers 4.x): every name under `text_model.`, plus the int64 buffer
  `text_model.embeddings.position_ids` [1, 77] (saved before transformers 4.31), which a loader skips.
- `sd2/`: SD 2.x's (OpenCLIP ViT-H: `gelu`, erf) at width 32, 2 layers, 4 heads, MLP 128, exactly as
  transformers 5.x's `save_pretrained` writes it: names without `text_model.` (5.x's CLIPTextModel
  has no `text_model` submodule), no position_ids. transformers loads both layouts.
- `sd1-hidden.safetensors`, `sd2-hidden.safetensors`: for 5 prompts of tests/golden/tokenizer/prompts.json
  (that model's ids, as StableDiffusionPipeline.encode_prompt makes them), `input_ids` [5, 77] (as
  float32: exact below 2^24, and the engine's reader takes only floats), `embeddings` (token +
  position embedding), `hidden.0` .. `hidden.L` (transformers' output_hidden_states: hidden.0 is the
  embeddings, hidden.k the residual stream after layer k, before the final LayerNorm) and
  `last_hidden_state` [5, 77, 32] (final_layer_norm(hidden.L): what the UNet gets).

The vocabulary is the real 49408 tokens so the tokenizer goldens' ids work, and width 32 keeps each
model.safetensors near 6.5 MB. Weights: transformers' default init (token and position embeddings
N(0, 0.02)), then every LayerNorm weight and bias and every Linear bias moved by N(0, 0.1) (the
defaults, 1 and 0, would hide a bug), and q_proj/k_proj weights scaled by 3 (with the default init
the attention is nearly uniform, so a wrong mask or scale would barely show). Outputs come from
each folder loaded back by CLIPTextModel.from_pretrained in float32, called as diffusers calls it
(no attention_mask); the script checks SDPA against eager attention and that attention is causal.
"""

import json
import shutil
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "golden" / "clip_text"
PROMPTS = ROOT / "tests" / "golden" / "tokenizer" / "prompts.json"

COMMON = dict(vocab_size=49408, max_position_embeddings=77, layer_norm_eps=1e-5, hidden_size=32,
              num_attention_heads=4, bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
CONFIGS = {
    "sd1": dict(hidden_act="quick_gelu", intermediate_size=160, num_hidden_layers=3, projection_dim=768),
    "sd2": dict(hidden_act="gelu", intermediate_size=128, num_hidden_layers=2, projection_dim=512),
}
# sd1 is rewritten as the published SD checkpoints hold it; sd2 stays as transformers 5.x writes it.
HUB_LAYOUT = {"sd1": True, "sd2": False}

# The five prompts: each predicate must match exactly one case of prompts.json.
PICKS = [
    ("astronaut", lambda c: c["prompt"] == "a photo of an astronaut riding a horse on mars"),
    ("empty", lambda c: c["prompt"] == ""),
    # 102 BPE pieces: truncated to 75 + bos + eos (no padding at all).
    ("truncated", lambda c: c["kind"] == "length" and len(c["pieces"]) == 102),
    ("unicode-emoji", lambda c: c["prompt"] == "\U0001f9d1\u200d\U0001f680 astronaut  \u011f \u015f \u00e7\tni\u00f1o"),
    # 80 '!': in SD 2.x every '!' is the pad token id 0, and the prompt is truncated.
    ("bangs", lambda c: c["prompt"] == "!" * 80),
]
CAUSAL_POSITION = 10


def pick_cases() -> list[dict]:
    cases = json.loads(PROMPTS.read_text())["cases"]
    picked = []
    for name, pred in PICKS:
        found = [c for c in cases if pred(c)]
        assert len(found) == 1, f"{name}: {len(found)} cases match"
        picked.append(found[0])
    assert any(c["truncated"] for c in picked) and any(c["truncated_sd2"] for c in picked)
    return picked


def perturb(model: CLIPTextModel, gen: torch.Generator) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias") or "layer_norm" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
        for layer in model.encoder.layers:
            layer.self_attn.q_proj.weight.mul_(3.0)
            layer.self_attn.k_proj.weight.mul_(3.0)


def to_hub_layout(folder: Path) -> None:
    """The names of the published SD text encoders: `text_model.` prefix and the position_ids buffer."""
    path = folder / "model.safetensors"
    tensors = {"text_model." + k: v for k, v in load_file(path).items()}
    tensors["text_model.embeddings.position_ids"] = torch.arange(77, dtype=torch.int64).unsqueeze(0)
    save_file(tensors, path, metadata={"format": "pt"})


def run(model: CLIPTextModel, ids: torch.Tensor):
    with torch.no_grad():
        return model(ids, output_hidden_states=True)


def main() -> None:
    torch.set_num_threads(2)
    transformers.utils.logging.disable_progress_bar()
    cases = pick_cases()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    for i, (name, extra) in enumerate(CONFIGS.items()):
        torch.manual_seed(5000 + i)
        gen = torch.Generator().manual_seed(6000 + i)
        model = CLIPTextModel(CLIPTextConfig(**COMMON, **extra)).eval()
        emb = model.embeddings
        # The default init the brief relies on: both embedding tables N(0, 0.02).
        for table in (emb.token_embedding.weight, emb.position_embedding.weight):
            assert abs(table.std().item() - 0.02) < 0.002, table.std()
        perturb(model, gen)
        folder = OUT / name
        model.save_pretrained(folder, safe_serialization=True)
        written = set(load_file(folder / "model.safetensors"))
        if HUB_LAYOUT[name]:
            to_hub_layout(folder)

        # The reference: the folder loaded back as a pipeline loads it, every key used or ignored.
        loaded, info = CLIPTextModel.from_pretrained(folder, dtype=torch.float32, output_loading_info=True)
        loaded.eval()
        assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key

        ids = torch.tensor([c[name] for c in cases], dtype=torch.int64)
        out = run(loaded, ids)
        hidden = out.hidden_states
        last = out.last_hidden_state
        with torch.no_grad():
            embeddings = loaded.embeddings(ids)
            assert torch.equal(hidden[0], embeddings)
            assert torch.allclose(loaded.final_layer_norm(hidden[-1]), last, atol=1e-6)
        assert len(hidden) == loaded.config.num_hidden_layers + 1

        # The default (SDPA, is_causal) against eager attention (additive float32-min mask).
        eager = CLIPTextModel.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
        eager_diff = (run(eager, ids).last_hidden_state - last).abs().max().item()
        assert eager_diff < 1e-5, eager_diff

        # Causal: a new token at position 10 leaves rows 0..9 exactly as they were, and moves the rest.
        changed = ids[:1].clone()
        changed[0, CAUSAL_POSITION] = 2368 if changed[0, CAUSAL_POSITION] != 2368 else 1929  # "cat" / "dog"
        moved = (run(loaded, changed).last_hidden_state[0] - last[0]).abs().amax(dim=-1)
        before, after = moved[:CAUSAL_POSITION].max().item(), moved[CAUSAL_POSITION:].min().item()
        assert before == 0.0 and after > 1e-4, (before, after)

        tensors = {"input_ids": ids.float(), "embeddings": embeddings, "last_hidden_state": last}
        tensors.update({f"hidden.{k}": h for k, h in enumerate(hidden)})
        save_file({k: v.contiguous() for k, v in tensors.items()}, OUT / f"{name}-hidden.safetensors")
        has_ids = any("position_ids" in k for k in written)
        prefix = "text_model." if any(k.startswith("text_model.") for k in written) else "none"
        print(f"{name}: {sum(p.numel() for p in loaded.parameters()):,} parameters; save_pretrained wrote "
              f"{len(written)} tensors, position_ids {'written' if has_ids else 'not written'}, prefix {prefix}; "
              f"max |last_hidden_state| {last.abs().max():.3f} (std {last.std():.3f}), max |hidden.{len(hidden) - 1}| "
              f"{hidden[-1].abs().max():.3f}; eager vs sdpa {eager_diff:.2e}; token {CAUSAL_POSITION} changed: rows "
              f"0..{CAUSAL_POSITION - 1} moved {before:.1e}, rows {CAUSAL_POSITION}.. at least {after:.2e}")
    (OUT / "README.md").write_text(
        "Written by `tools/make_clip_text_goldens.py` (transformers " + transformers.__version__ + ", torch " +
        torch.__version__ + "). `sd1/`, `sd2/`: small random\n"
        "CLIPTextModels shaped like SD 1.x's (quick_gelu, 3 layers; published-checkpoint names: `text_model.`\n"
        "prefix and an int64 `position_ids` to skip) and SD 2.x's (gelu, 2 layers; transformers 5.x names, no\n"
        "prefix) text encoders, width 32, the real 49408-token vocabulary. `sd1-hidden.safetensors`,\n"
        "`sd2-hidden.safetensors`: 5 prompts' ids from ../tokenizer/prompts.json (float32), the embeddings,\n"
        "`hidden.0`..`hidden.L` and `last_hidden_state`, no attention mask. Do not edit by hand.\n")


if __name__ == "__main__":
    main()
