#!/usr/bin/env python3
"""Write image-to-image and inpainting runs of diffusers' Stable Diffusion pipelines: the goldens of the
engine's img2img and inpaint.

    .venv/bin/python tools/make_sd_edit_goldens.py

Run tools/make_sd_pipeline_goldens.py first (it writes the VAE and the pipeline JSON, and it empties
tests/golden/sd_pipeline/, so run this again after it). The pipeline folders are put together by its
`assemble`; the 9-channel one is sd1's with unet/ replaced by ../unet_cond/sd1-inpaint. Writes to
tests/golden/sd_pipeline/:

- `input-64.png`: a 64x64 RGB image of a few flat coloured shapes (PIL ImageDraw, no antialiasing).
- `mask-64.png`: a 64x64 grayscale ("L") mask, white = repaint: a 255 rectangle (rows 24..47, columns
  16..47) in a ring of 127/128 pixels, and a few single grey pixels (127, 128, 64, 200) on the 8-pixel grid
  that the latent mask samples, to test the >= 0.5 binarisation (128/255 -> 1, 127/255 -> 0).
- `sd1-img2img.safetensors`, `sd2-img2img.safetensors` (prefix `img2img.`): StableDiffusionImg2ImgPipeline,
  strength 0.6, 10 steps, guidance 7.5, from the PNG. `image_in` [1, 3, 64, 64] (the preprocessed image in
  [-1, 1]), `init_latents` (scaling_factor * the posterior's mode), `noise` [1, 4, 8, 8] (given, injected for
  prepare_latents' randn_tensor), `start_latents` (= add_noise(init_latents, noise, timesteps[0])),
  `timesteps` (float32, those the loop ran), `final_latents` (output_type "latent"), `decoded`
  (vae.decode(final_latents / scaling_factor).sample, before the clamp).
- `sd1-inpaint.safetensors`: StableDiffusionInpaintPipeline, strength 1.0, 6 steps, guidance 7.5, from the
  two PNGs, sd1's PNDM. Prefix `inpaint4.`: sd1's 4-channel UNet (the pipeline blends latents):
  `noise`, `mask` [1, 1, 64, 64] (the binarised mask), `mask_latent` [1, 1, 8, 8] (the mask the loop
  blends with), `image_latents` (scaling_factor * mode of the image's posterior), `start_latents`,
  `timesteps`, `final_latents`, `decoded`. Prefix `inpaint9.`: the 9-channel UNet: `noise`, `mask`,
  `masked_image` [1, 3, 64, 64] (image * (mask < 0.5)), `mask_latent`, `masked_image_latents` (scaling *
  mode of the masked image's posterior), `start_latents`, `timesteps`, `final_latents`, `decoded`.
- `edit_cases.json`: each run's settings, file and prefix.

Deterministic as the engine runs it: the pipeline modules' `retrieve_latents` is patched to take the
posterior's mode ("argmax") and their `randn_tensor` to return the given noise. Each run is replayed
by hand from the pipeline's own components (no pipeline code) and must match it exactly; the
`output_type="np"` result is compared with (decoded * 0.5 + 0.5).clamp(0, 1).
"""

import contextlib
import json
import shutil
import tempfile
from pathlib import Path

import diffusers
import numpy as np
import torch
import transformers
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline
from diffusers.pipelines.stable_diffusion import pipeline_stable_diffusion_img2img as img2img_module
from diffusers.pipelines.stable_diffusion import pipeline_stable_diffusion_inpaint as inpaint_module
from make_sd_pipeline_goldens import GOLDEN, OUT, SCHEDULERS, Recorder, assemble
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file

IMAGE = OUT / "input-64.png"
MASK = OUT / "mask-64.png"
IMG2IMG = dict(prompt="a red fox in the snow", negative_prompt="blurry", strength=0.6, num_inference_steps=10,
               guidance_scale=7.5)
INPAINT = dict(prompt="a red fox", negative_prompt="blurry", strength=1.0, num_inference_steps=6, guidance_scale=7.5)
README_MARK = "Written by `tools/make_sd_edit_goldens.py`"


def make_pngs() -> None:
    img = Image.new("RGB", (64, 64), (70, 130, 180))
    d = ImageDraw.Draw(img)
    d.rectangle([0, 44, 63, 63], fill=(235, 235, 245))
    d.ellipse([10, 20, 38, 46], fill=(200, 60, 30))
    d.polygon([(34, 22), (46, 14), (44, 30)], fill=(220, 90, 20))
    d.rectangle([48, 6, 58, 16], fill=(250, 220, 60))
    d.line([(0, 40), (63, 36)], fill=(40, 40, 40), width=2)
    d.rectangle([2, 2, 9, 9], fill=(20, 160, 60))
    img.save(IMAGE, optimize=True)

    m = np.zeros((64, 64), np.uint8)
    m[23, 15:49] = 128  # ring: top and left 128 (-> 1), bottom and right 127 (-> 0)
    m[23:49, 15] = 128
    m[48, 15:49] = 127
    m[23:49, 48] = 127
    m[24:48, 16:48] = 255
    # single pixels where F.interpolate(nearest) samples the latent mask: (8i, 8j)
    m[16, 24] = 128  # latent (2, 3) -> 1
    m[56, 32] = 127  # latent (7, 4) -> 0
    m[8, 8] = 200  # latent (1, 1) -> 1
    m[32, 56] = 64  # latent (4, 7) -> 0
    m[40, 40] = 127  # inside the rectangle: latent (5, 5) -> 0, a hole
    Image.fromarray(m).save(MASK, optimize=True)


@contextlib.contextmanager
def deterministic(module, noise: torch.Tensor, events: list):
    """The module's posteriors give their mode, its one randn_tensor call gives `noise`; log the order."""
    retrieve, randn = module.retrieve_latents, module.randn_tensor

    def mode(encoder_output, generator=None, sample_mode="sample"):
        events.append("posterior")
        return retrieve(encoder_output, generator, sample_mode="argmax")

    def given(shape, generator=None, device=None, dtype=None, layout=None):
        events.append("noise")
        assert tuple(shape) == tuple(noise.shape), (shape, noise.shape)
        return noise.clone().to(device=device, dtype=dtype)

    module.retrieve_latents, module.randn_tensor = mode, given
    try:
        yield
    finally:
        module.retrieve_latents, module.randn_tensor = retrieve, randn


def load(cls, variant: str, unet: str | None = None):
    with tempfile.TemporaryDirectory() as scratch:
        folder = assemble(variant, Path(scratch) / variant)
        if unet is not None:  # sd1 with another UNet (the 9-channel inpainting one)
            shutil.rmtree(folder / "unet")
            shutil.copytree(GOLDEN / "unet_cond" / unet, folder / "unet")
        pipe = cls.from_pretrained(folder, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    for name in ("vae", "text_encoder", "unet"):
        assert getattr(pipe, name).dtype == torch.float32, name
    sched_cls, _ = SCHEDULERS[variant]
    assert type(pipe.scheduler) is sched_cls and pipe.scheduler.init_noise_sigma == 1.0
    written = json.loads((OUT / variant / "scheduler" / "scheduler_config.json").read_text())
    assert all(pipe.scheduler.config[k] == v for k, v in written.items() if not k.startswith("_")), "config rewritten"
    return pipe


def hook_inputs(pipe):
    """Every UNet input sample, and what the image processors returned."""
    seen = {"unet_in": [], "image": [], "mask": []}
    pipe.unet.register_forward_pre_hook(lambda _m, args: seen["unet_in"].append(args[0].clone()))
    for name, key in (("image_processor", "image"), ("mask_processor", "mask")):
        proc = getattr(pipe, name, None)
        if proc is None:
            continue
        pre = proc.preprocess

        def recorded(*a, _pre=pre, _key=key, **k):
            out = _pre(*a, **k)
            seen[_key].append(out.clone())
            return out

        proc.preprocess = recorded
    return seen


def fresh_scheduler(pipe, steps):
    sched = type(pipe.scheduler).from_config(pipe.scheduler.config)
    sched.set_timesteps(steps)
    return sched


def guided(pipe, x, t, embeds, g):
    e = pipe.unet(x, t, encoder_hidden_states=embeds).sample
    u, c = e.chunk(2)
    return u + g * (c - u)


def finish(pipe, run_args, module, noise, final, label):
    """decoded, and the output_type="np" result against it."""
    scale = pipe.vae.config.scaling_factor
    with torch.no_grad():
        decoded = pipe.vae.decode(final / scale).sample
        with deterministic(module, noise, []):
            image = pipe(**run_args, output_type="np").images
    np_diff = (torch.from_numpy(image) - (decoded * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)).abs().max().item()
    print(f"{label}: max |decoded| {decoded.abs().max():.4f} std {decoded.std():.4f} mean {decoded.mean():.4f}; "
          f"max |final_latents| {final.abs().max():.4f}; np vs (decoded*0.5+0.5).clamp(0,1) max diff {np_diff:.2e}")
    return decoded, np_diff


def img2img(variant: str, gen: torch.Generator) -> dict:
    pipe = load(StableDiffusionImg2ImgPipeline, variant)
    rec, seen = Recorder(pipe), hook_inputs(pipe)
    noise = torch.randn(1, 4, 8, 8, generator=gen)
    run_args = dict(IMG2IMG, image=Image.open(IMAGE))
    events = []
    with torch.no_grad(), deterministic(img2img_module, noise, events):
        final = pipe(**run_args, output_type="latent").images
    assert events == ["posterior", "noise"], events
    scale = pipe.vae.config.scaling_factor
    image_in = seen["image"][0]
    assert image_in.shape == (1, 3, 64, 64) and image_in.dtype == torch.float32
    png = torch.from_numpy(np.asarray(Image.open(IMAGE).convert("RGB"), np.float32) / 255.0).permute(2, 0, 1)[None]
    assert torch.equal(image_in, 2.0 * png - 1.0), "preprocess is not x/255*2-1"
    timesteps = torch.stack([torch.as_tensor(t) for _, t in rec.steps])

    # By hand: strength slicing, mode * scale, add_noise at timesteps[0], then the txt2img loop.
    n = IMG2IMG["num_inference_steps"]
    sched = fresh_scheduler(pipe, n)
    t_start = n - min(int(n * IMG2IMG["strength"]), n)
    ts = sched.timesteps[t_start * sched.order:]
    assert torch.equal(ts, timesteps), (ts, timesteps)
    pos, neg = rec.embeds[0], rec.embeds[1]
    embeds = torch.cat([neg, pos])
    with torch.no_grad():
        init = scale * pipe.vae.encode(image_in).latent_dist.mode()
        lat = sched.add_noise(init, noise, ts[:1])
        start = lat.clone()
        assert torch.equal(seen["unet_in"][0], torch.cat([start, start])), "first UNet input"
        for t in ts:
            e = guided(pipe, sched.scale_model_input(torch.cat([lat, lat]), t), t, embeds, IMG2IMG["guidance_scale"])
            lat = sched.step(e, t, lat).prev_sample
    assert torch.equal(lat, final), (lat - final).abs().max()
    decoded, np_diff = finish(pipe, run_args, img2img_module, noise, final, f"{variant} img2img")
    with torch.no_grad():
        roundtrip = pipe.vae.decode(init / scale).sample
    print(f"  timesteps {timesteps.tolist()} (scheduler had {sched.timesteps.tolist()}, t_start {t_start}); "
          f"decoded vs image_in max diff {(decoded - image_in).abs().max():.4f}, vs VAE round trip of the input "
          f"{(decoded - roundtrip).abs().max():.4f}")
    golden = {"noise": noise, "image_in": image_in, "init_latents": init, "start_latents": start,
              "timesteps": timesteps.float(), "final_latents": final, "decoded": decoded}
    golden = {f"img2img.{k}": v.contiguous() for k, v in golden.items()}
    file = OUT / f"{variant}-img2img.safetensors"
    save_file(golden, file)
    assert all(torch.equal(v, golden[k]) for k, v in load_file(file).items())
    sched_cls, _ = SCHEDULERS[variant]
    return {"variant": variant, "pipeline": "StableDiffusionImg2ImgPipeline", "unet": f"unet_cond/{variant}",
            "image": IMAGE.name, "prompt": IMG2IMG["prompt"], "negative_prompt": IMG2IMG["negative_prompt"],
            "strength": IMG2IMG["strength"], "num_inference_steps": n, "guidance_scale": IMG2IMG["guidance_scale"],
            "scheduler": sched_cls.__name__, "prediction_type": pipe.scheduler.config.prediction_type,
            "posterior": "mode", "timesteps": timesteps.tolist(), "np_vs_decoded_max_diff": np_diff,
            "file": file.name, "prefix": "img2img.", "keys": sorted(k.split(".", 1)[1] for k in golden)}


def inpaint(unet: str, prefix: str, gen: torch.Generator) -> tuple[dict, dict]:
    pipe = load(StableDiffusionInpaintPipeline, "sd1", None if unet == "sd1" else unet)
    channels = pipe.unet.config.in_channels
    rec, seen = Recorder(pipe), hook_inputs(pipe)
    mask_lat = []
    prep = pipe.prepare_mask_latents
    pipe.prepare_mask_latents = lambda *a, **k: mask_lat.append(prep(*a, **k)) or mask_lat[-1]
    noise = torch.randn(1, 4, 8, 8, generator=gen)
    run_args = dict(INPAINT, image=Image.open(IMAGE), mask_image=Image.open(MASK))
    events = []
    with torch.no_grad(), deterministic(inpaint_module, noise, events):
        final = pipe(**run_args, output_type="latent").images
    expected = ["posterior", "noise", "posterior"] if channels == 4 else ["noise", "posterior"]
    assert events == expected, events
    scale = pipe.vae.config.scaling_factor
    image_in, mask = seen["image"][0], seen["mask"][0]
    assert mask.shape == (1, 1, 64, 64)
    raw = torch.from_numpy(np.asarray(Image.open(MASK), np.float32) / 255.0)[None, None]
    assert torch.equal(mask, (raw >= 0.5).float()), "mask is not (png/255 >= 0.5)"
    masked_image = image_in * (mask < 0.5)
    (mask2, masked2), = mask_lat
    m = mask2[:1]
    assert torch.equal(mask2, torch.cat([m, m])), "CFG doubles the mask"
    assert torch.equal(m, mask[:, :, ::8, ::8]), "latent mask = pixel (8i, 8j)"
    timesteps = torch.stack([torch.as_tensor(t) for _, t in rec.steps])

    n = INPAINT["num_inference_steps"]
    sched = fresh_scheduler(pipe, n)
    assert torch.equal(sched.timesteps, timesteps), "strength 1.0 runs the whole schedule"
    pos, neg = rec.embeds[0], rec.embeds[1]
    embeds = torch.cat([neg, pos])
    g = INPAINT["guidance_scale"]
    with torch.no_grad():
        # .contiguous(): the pipeline's image_latents.repeat(1, 1, 1, 1) copies them out of the channels-last
        # layout that the encoder's output inherits from the HWC->CHW image; the UNet's convs round differently.
        image_latents = (scale * pipe.vae.encode(image_in).latent_dist.mode()).contiguous()
        masked_latents = scale * pipe.vae.encode(masked_image).latent_dist.mode()
        assert torch.equal(masked2, torch.cat([masked_latents, masked_latents]))
        lat = noise * sched.init_noise_sigma  # strength 1.0: pure noise
        start = lat.clone()
        for i, t in enumerate(timesteps):
            x = sched.scale_model_input(torch.cat([lat, lat]), t)
            if channels == 9:
                x = torch.cat([x, torch.cat([m, m]), torch.cat([masked_latents, masked_latents])], 1)
            assert torch.equal(x, seen["unet_in"][i]), f"UNet input {i}"
            lat = sched.step(guided(pipe, x, t, embeds, g), t, lat).prev_sample
            if channels == 4:
                proper = image_latents
                if i < len(timesteps) - 1:
                    proper = sched.add_noise(image_latents, noise, timesteps[i + 1:i + 2])
                lat = (1 - m) * proper + m * lat
    assert torch.equal(lat, final), (lat - final).abs().max()
    decoded, np_diff = finish(pipe, run_args, inpaint_module, noise, final, f"sd1 {prefix[:-1]} ({channels}-channel UNet)")
    outside = (1 - m).bool().expand_as(final)
    keep = (final - image_latents)[outside].abs().max().item()
    pix_out = (1 - mask).bool().expand_as(decoded)
    print(f"  timesteps {timesteps.tolist()}; latent mask ones {int(m.sum())}/64, pixel mask ones {int(mask.sum())}/4096; "
          f"final - image_latents outside the latent mask max {keep:.2e} ({'blended' if channels == 4 else 'not enforced'}); decoded vs image_in outside the pixel "
          f"mask max {(decoded - image_in)[pix_out].abs().max():.4f}, inside {(decoded - image_in)[~pix_out].abs().max():.4f}")
    golden = {"noise": noise, "mask": mask, "mask_latent": m, "start_latents": start,
              "timesteps": timesteps.float(), "final_latents": final, "decoded": decoded}
    if channels == 4:
        golden["image_latents"] = image_latents
    else:
        golden.update(masked_image=masked_image, masked_image_latents=masked_latents)
    golden = {f"{prefix}{k}": v.contiguous() for k, v in golden.items()}
    case = {"variant": "sd1", "pipeline": "StableDiffusionInpaintPipeline", "unet": f"unet_cond/{unet}",
            "unet_in_channels": channels, "image": IMAGE.name, "mask": MASK.name, "prompt": INPAINT["prompt"],
            "negative_prompt": INPAINT["negative_prompt"], "strength": INPAINT["strength"], "num_inference_steps": n,
            "guidance_scale": g, "scheduler": type(pipe.scheduler).__name__,
            "prediction_type": pipe.scheduler.config.prediction_type, "posterior": "mode",
            "timesteps": timesteps.tolist(), "np_vs_decoded_max_diff": np_diff, "file": "sd1-inpaint.safetensors",
            "prefix": prefix, "keys": sorted(k[len(prefix):] for k in golden)}
    return golden, case


def main() -> None:
    torch.set_num_threads(2)
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    assert (OUT / "vae").is_dir(), "run tools/make_sd_pipeline_goldens.py first"
    torch.manual_seed(9300)
    gen = torch.Generator().manual_seed(9400)
    make_pngs()
    cases = [img2img("sd1", gen), img2img("sd2", gen)]
    golden = {}
    for unet, prefix in (("sd1", "inpaint4."), ("sd1-inpaint", "inpaint9.")):
        part, case = inpaint(unet, prefix, gen)
        golden.update(part)
        cases.append(case)
    file = OUT / "sd1-inpaint.safetensors"
    save_file(golden, file)
    assert all(torch.equal(v, golden[k]) for k, v in load_file(file).items())
    doc = {"diffusers": diffusers.__version__, "transformers": transformers.__version__, "torch": torch.__version__,
           "cases": cases}
    (OUT / "edit_cases.json").write_text(json.dumps(doc, indent=1) + "\n")
    for f in (IMAGE, MASK, OUT / "sd1-img2img.safetensors", OUT / "sd2-img2img.safetensors", file,
              OUT / "edit_cases.json"):
        print(f"{f.relative_to(OUT)}: {f.stat().st_size:,} bytes")
    readme = (OUT / "README.md").read_text()
    readme = readme[:readme.index(README_MARK)] if README_MARK in readme else readme
    (OUT / "README.md").write_text(readme + "\n" + README_MARK + " (run it after make_sd_pipeline_goldens.py, "
        "which empties this folder): `input-64.png`, `mask-64.png` (white = repaint, grey pixels test the >= 0.5\n"
        "threshold); `sd{1,2}-img2img.safetensors` (keys `img2img.<tensor>`): StableDiffusionImg2ImgPipeline at strength\n"
        "0.6; `sd1-inpaint.safetensors` (keys `inpaint4.<tensor>` for sd1's 4-channel UNet, `inpaint9.<tensor>` for\n"
        "../unet_cond/sd1-inpaint): StableDiffusionInpaintPipeline at strength 1.0. Posteriors at their mode, noise\n"
        "given; settings in `edit_cases.json`. Do not edit by hand.\n")


if __name__ == "__main__":
    main()
