#!/usr/bin/env python3
"""Write a tiny Stable Diffusion VAE, the JSON of two tiny SD pipeline folders, and whole
text-to-image runs of diffusers' StableDiffusionPipeline: the goldens of the engine's txt2img.

    .venv/bin/python tools/make_sd_pipeline_goldens.py

Run tools/make_tokenizer_goldens.py, make_clip_text_goldens.py and make_unet_cond_goldens.py first:
the pipelines are made of their committed tiny components, not copies. Writes to
tests/golden/sd_pipeline/:

- `vae/`: a random AutoencoderKL with SD's VAE structure (4 DownEncoderBlock2D / UpDecoderBlock2D,
  so the downscale is 8; latent_channels 4, scaling_factor 0.18215, layers_per_block 1) at
  block_out_channels (8, 16, 16, 16), norm_num_groups 8 (F32, ~0.3 MB).
- `sd1/`, `sd2/`: `model_index.json` and `scheduler/scheduler_config.json` exactly as
  StableDiffusionPipeline.save_pretrained writes them (safety_checker and feature_extractor None,
  requires_safety_checker false). sd1's scheduler is SD 1.5's PNDMScheduler, sd2's SD 2.1's
  (768-v) DDIMScheduler with prediction_type v_prediction.
  A full folder is these two files plus copies (see `assemble`): tokenizer/ (../tokenizer's
  gunzipped vocab.json and merges.txt and its sd1/ or sd2/ json files), text_encoder/
  (../clip_text/<variant>), unet/ (../unet_cond/<variant>), vae/ (here). The goldens come from such
  a folder loaded by StableDiffusionPipeline.from_pretrained(folder, safety_checker=None) in float32.
- `sd1-txt2img.safetensors`, `sd2-txt2img.safetensors`: per run (key prefix `<run>.`), from given
  standard-normal `latents_in` [2, 4, H/8, W/8] (the pipeline multiplies them by init_noise_sigma,
  1 for both schedulers): `prompt_ids` [2, 77] and `negative_ids` (guided runs only: the ids
  encode_prompt fed the text encoder, as float32), `prompt_embeds` [2, 77, 32] and
  `negative_embeds` (encode_prompt's output), `timesteps` (float32: every t the loop ran, PNDM
  repeats one), `first_eps` [2, 4, H/8, W/8] (the model output after guidance at the first step, the
  tensor handed to scheduler.step: epsilon for sd1, v for sd2), `final_latents` (output_type
  "latent") and `decoded` = vae.decode(final_latents / scaling_factor).sample (float32, before the
  clamp and the 8-bit conversion).
- `cases.json`: each run's variant, prompts, negative prompt, guidance scale, steps, size,
  scheduler class, file and key prefix.

Weights are the committed components'; the VAE: diffusers' default init, then every GroupNorm weight
and bias and every other bias moved by N(0, 0.1) (make_unet_cond_goldens' perturb).
"""

import copy
import gzip
import json
import shutil
import tempfile
from pathlib import Path

import diffusers
import torch
import transformers
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.schedulers import DDIMScheduler, PNDMScheduler
from make_unet_cond_goldens import perturb, unzero
from safetensors.torch import load_file, save_file
from transformers import CLIPTextModel, CLIPTokenizer

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden"
OUT = GOLDEN / "sd_pipeline"

VAE = dict(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
           block_out_channels=(8, 16, 16, 16), layers_per_block=1, latent_channels=4, norm_num_groups=8,
           sample_size=64, scaling_factor=0.18215)

# The published scheduler_config.json files (runwayml/stable-diffusion-v1-5, stabilityai/stable-diffusion-2-1),
# keys they carry that the class does not take (PNDM's clip_sample, DDIM's skip_prk_steps) included.
SCHEDULERS = {
    "sd1": (PNDMScheduler, dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                num_train_timesteps=1000, set_alpha_to_one=False, skip_prk_steps=True,
                                steps_offset=1, trained_betas=None, clip_sample=False)),
    "sd2": (DDIMScheduler, dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                num_train_timesteps=1000, clip_sample=False, prediction_type="v_prediction",
                                set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1, trained_betas=None)),
}

PROMPTS = ["a photo of an astronaut riding a horse on mars", "a red fox in the snow, national geographic"]
NEGATIVE = ["blurry", "blurry"]  # encode_prompt wants the prompt's type: a list for a list
# (run, guidance_scale, negative_prompt, steps, height, width); guidance 1.0 turns classifier-free guidance off.
RUNS = {
    "sd1": [("guided", 7.5, NEGATIVE, 5, 64, 64), ("unguided", 1.0, None, 4, 64, 64),
            # 8x12 latents: 12 is not divisible by 8, so the UNet's up path resizes to the skips' sizes.
            ("guided-64x96", 7.5, NEGATIVE, 5, 64, 96)],
    "sd2": [("guided", 7.5, NEGATIVE, 5, 64, 64), ("unguided", 1.0, None, 4, 64, 64)],
}


def assemble(variant: str, folder: Path) -> Path:
    """A whole pipeline folder from the committed pieces: the copies the Rust test makes."""
    tok = folder / "tokenizer"
    tok.mkdir(parents=True)
    for name in ("vocab.json", "merges.txt"):
        (tok / name).write_bytes(gzip.decompress((GOLDEN / "tokenizer" / (name + ".gz")).read_bytes()))
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        shutil.copy(GOLDEN / "tokenizer" / variant / name, tok / name)
    shutil.copytree(GOLDEN / "clip_text" / variant, folder / "text_encoder")
    shutil.copytree(GOLDEN / "unet_cond" / variant, folder / "unet")
    shutil.copytree(OUT / "vae", folder / "vae")
    shutil.copy(OUT / variant / "model_index.json", folder / "model_index.json")
    (folder / "scheduler").mkdir()
    shutil.copy(OUT / variant / "scheduler" / "scheduler_config.json", folder / "scheduler" / "scheduler_config.json")
    return folder


def make_vae(gen: torch.Generator) -> None:
    vae = AutoencoderKL(**VAE).eval()
    fixed = unzero(vae)
    perturb(vae, gen)
    vae.save_pretrained(OUT / "vae", safe_serialization=True)
    loaded, info = AutoencoderKL.from_pretrained(OUT / "vae", torch_dtype=torch.float32, output_loading_info=True,
                                                 low_cpu_mem_usage=False)
    loaded.eval()
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    for key, value in vae.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    # It builds and runs both ways (64x96: W/8 = 12), and the mid attention shows in the decoder's output.
    with torch.no_grad():
        image = torch.rand(1, 3, 64, 96, generator=gen) * 2 - 1
        z = loaded.encode(image).latent_dist.mode()
        out = loaded.decode(z).sample
        assert z.shape == (1, 4, 8, 12) and out.shape == image.shape
        plain = copy.deepcopy(loaded)
        plain.decoder.mid_block.attentions[0].to_out[0].weight.zero_()
        plain.decoder.mid_block.attentions[0].to_out[0].bias.zero_()
        moved = ((plain.decode(z).sample - out).norm() / out.norm()).item()
    assert moved > 0.01, moved
    size = (OUT / "vae" / "diffusion_pytorch_model.safetensors").stat().st_size
    print(f"vae: {sum(p.numel() for p in loaded.parameters()):,} parameters, {len(loaded.state_dict())} tensors, "
          f"{size / 1e6:.3f} MB; re-initialised zero weights: {fixed or 'none'}; encode {list(z.shape)}, "
          f"decode {list(out.shape)} std {out.std():.3f}; zeroing the decoder's mid attention moves it by {moved:.3f}")


def write_pipeline_json(variant: str) -> None:
    """model_index.json and scheduler_config.json as StableDiffusionPipeline.save_pretrained writes them."""
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        tok = scratch / "tokenizer"
        tok.mkdir()
        for name in ("vocab.json", "merges.txt"):
            (tok / name).write_bytes(gzip.decompress((GOLDEN / "tokenizer" / (name + ".gz")).read_bytes()))
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            shutil.copy(GOLDEN / "tokenizer" / variant / name, tok / name)
        cls, config = SCHEDULERS[variant]
        pipe = StableDiffusionPipeline(
            vae=AutoencoderKL.from_pretrained(OUT / "vae", low_cpu_mem_usage=False),
            text_encoder=CLIPTextModel.from_pretrained(GOLDEN / "clip_text" / variant),
            tokenizer=CLIPTokenizer.from_pretrained(tok),
            unet=UNet2DConditionModel.from_pretrained(GOLDEN / "unet_cond" / variant, low_cpu_mem_usage=False),
            scheduler=cls.from_config(config),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.save_pretrained(scratch / "saved")
        (OUT / variant / "scheduler").mkdir(parents=True)
        shutil.copy(scratch / "saved" / "model_index.json", OUT / variant / "model_index.json")
        shutil.copy(scratch / "saved" / "scheduler" / "scheduler_config.json",
                    OUT / variant / "scheduler" / "scheduler_config.json")


class Recorder:
    """What the pipeline fed its text encoder and its scheduler, and what the UNet returned."""

    def __init__(self, pipe: StableDiffusionPipeline):
        self.ids, self.embeds, self.steps, self.unet_out = [], [], [], []
        pipe.text_encoder.register_forward_pre_hook(lambda _m, args: self.ids.append(args[0].clone()))
        pipe.text_encoder.register_forward_hook(lambda _m, _a, out: self.embeds.append(out[0].detach().clone()))
        pipe.unet.register_forward_hook(lambda _m, _a, out: self.unet_out.append(out[0].detach().clone()))
        step = pipe.scheduler.step

        def recorded_step(model_output, timestep, sample, *args, **kwargs):
            self.steps.append((model_output.clone(), timestep))
            return step(model_output, timestep, sample, *args, **kwargs)

        pipe.scheduler.step = recorded_step  # an instance attribute: only this pipeline's scheduler

    def clear(self):
        for seen in (self.ids, self.embeds, self.steps, self.unet_out):
            seen.clear()


def txt2img(variant: str, gen: torch.Generator) -> list[dict]:
    with tempfile.TemporaryDirectory() as scratch:
        pipe = StableDiffusionPipeline.from_pretrained(assemble(variant, Path(scratch) / variant), safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    for name in ("vae", "text_encoder", "unet"):
        assert getattr(pipe, name).dtype == torch.float32, name
    cls, _ = SCHEDULERS[variant]
    assert type(pipe.scheduler) is cls and pipe.scheduler.init_noise_sigma == 1.0
    # __init__ rewrites steps_offset != 1 and clip_sample True; these configs need neither.
    written = json.loads((OUT / variant / "scheduler" / "scheduler_config.json").read_text())
    assert all(pipe.scheduler.config[k] == v for k, v in written.items() if not k.startswith("_")), "config rewritten"
    rec = Recorder(pipe)
    scale = pipe.vae.config.scaling_factor
    golden, cases = {}, []
    for run, guidance, negative, steps, h, w in RUNS[variant]:
        latents_in = torch.randn(2, 4, h // 8, w // 8, generator=gen)
        args = dict(prompt=PROMPTS, negative_prompt=negative, height=h, width=w, num_inference_steps=steps,
                    guidance_scale=guidance, latents=latents_in.clone())
        rec.clear()
        with torch.no_grad():
            final = pipe(**args, output_type="latent").images
        cfg = pipe.do_classifier_free_guidance
        assert cfg == (guidance > 1.0)
        # encode_prompt: the prompt, then (with guidance) the negative prompt, one text-encoder call each.
        assert len(rec.ids) == len(rec.embeds) == (2 if cfg else 1)
        with torch.no_grad():
            pos, neg = pipe.encode_prompt(PROMPTS, "cpu", 1, cfg, negative)
        assert torch.equal(pos, rec.embeds[0]) and (not cfg or torch.equal(neg, rec.embeds[1]))
        timesteps = torch.stack([torch.as_tensor(t) for _, t in rec.steps])
        assert torch.equal(timesteps, pipe.scheduler.timesteps)
        first_eps = rec.steps[0][0]
        unet0 = rec.unet_out[0]
        if cfg:  # the recorded model output is the guided one: uncond + g (text - uncond)
            u, c = unet0.chunk(2)
            assert torch.equal(first_eps, u + guidance * (c - u))
        else:
            assert torch.equal(first_eps, unet0)
        with torch.no_grad():
            decoded = pipe.vae.decode(final / scale).sample
            image = pipe(**args, output_type="np").images
        np_diff = (torch.from_numpy(image) - (decoded * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)).abs().max().item()
        entry = {"latents_in": latents_in, "prompt_ids": rec.ids[0].float(), "prompt_embeds": rec.embeds[0],
                 "timesteps": timesteps.float(), "first_eps": first_eps, "final_latents": final, "decoded": decoded}
        if cfg:
            entry.update(negative_ids=rec.ids[1].float(), negative_embeds=rec.embeds[1])
        golden.update({f"{run}.{k}": v.contiguous() for k, v in entry.items()})

        note = ""
        if cfg:  # the same latents and steps without guidance: how much guidance changed the result
            with torch.no_grad():
                plain = pipe(**dict(args, guidance_scale=1.0), output_type="latent").images
                plain_decoded = pipe.vae.decode(plain / scale).sample
            note = (f"; guidance vs scale 1 (same latents, {steps} steps): final latents max diff "
                    f"{(final - plain).abs().max():.4f}, decoded max diff {(decoded - plain_decoded).abs().max():.4f}")
        tokens = [len(pipe.tokenizer(p).input_ids) for p in PROMPTS]
        print(f"{variant} {run} {h}x{w}: timesteps {timesteps.tolist()}; max |decoded| {decoded.abs().max():.4f} "
              f"std {decoded.std():.4f}; max |final_latents| {final.abs().max():.4f}; np vs decoded*0.5+0.5 "
              f"clamped {np_diff:.2e}; tokens with bos/eos {tokens}, pad id {pipe.tokenizer.pad_token_id}{note}")
        cases.append({"variant": variant, "run": run, "prompts": PROMPTS, "negative_prompt": negative,
                      "guidance_scale": guidance, "num_inference_steps": steps, "height": h, "width": w,
                      "scheduler": cls.__name__, "prediction_type": pipe.scheduler.config.prediction_type,
                      "timesteps": timesteps.tolist(), "file": f"{variant}-txt2img.safetensors", "prefix": f"{run}.",
                      "keys": sorted(entry)})
    save_file(golden, OUT / f"{variant}-txt2img.safetensors")
    assert all(torch.equal(v, golden[k]) for k, v in load_file(OUT / f"{variant}-txt2img.safetensors").items())
    return cases


def main() -> None:
    torch.set_num_threads(2)
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    torch.manual_seed(9000)
    gen = torch.Generator().manual_seed(9100)
    make_vae(gen)
    cases = []
    for variant in ("sd1", "sd2"):
        write_pipeline_json(variant)
        cases += txt2img(variant, gen)
    doc = {"diffusers": diffusers.__version__, "transformers": transformers.__version__, "torch": torch.__version__,
           "cases": cases}
    (OUT / "cases.json").write_text(json.dumps(doc, indent=1) + "\n")
    for variant in ("sd1", "sd2"):
        for f in ("model_index.json", "scheduler/scheduler_config.json"):
            print(f"{variant}/{f}:\n{(OUT / variant / f).read_text()}")
    for f in sorted(OUT.rglob("*")):
        if f.is_file():
            print(f"{f.relative_to(OUT)}: {f.stat().st_size:,} bytes")
    (OUT / "README.md").write_text(
        "Written by `tools/make_sd_pipeline_goldens.py` (diffusers " + diffusers.__version__ + ", transformers "
        + transformers.__version__ + ", torch " + torch.__version__ + ").\n"
        "`vae/`: a tiny AutoencoderKL shaped like SD's VAE. `sd1/`, `sd2/`: model_index.json and scheduler config of\n"
        "a StableDiffusionPipeline; the rest of each folder is copied from ../tokenizer, ../clip_text/<variant>,\n"
        "../unet_cond/<variant> and vae/. `*-txt2img.safetensors`: StableDiffusionPipeline runs from given latents,\n"
        "keys `<run>.<tensor>`, runs listed in `cases.json`. Do not edit by hand.\n")


if __name__ == "__main__":
    main()
