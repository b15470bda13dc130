#!/usr/bin/env python3
"""Stable Diffusion 1.5 at its real size, random weights (no hub here), beside this engine, in one run.

    .venv/bin/python tools/sd15_real_size.py [--folder runs/sd15-random] [--steps 20] [--size 512]
        [--threads 2] [--bin target/release/wgpu-diffusion] [--json docs/sd15-real-size.json]

1. Makes (once) a StableDiffusionPipeline folder from SD 1.5's published configs
   (tests/data/sd15-configs) with diffusers' and transformers' default random initialisation
   (torch seed 0) and CLIP's real tokenizer (tests/golden/tokenizer): an 860M-parameter UNet, the
   123M text encoder, the 84M VAE, saved as save_pretrained writes them (f32 safetensors, ~4.3 GB).
2. PyTorch CPU (f32, --threads threads): StableDiffusionPipeline, one SIZE x SIZE image of a prompt,
   --steps PNDM steps, guidance 7.5, from fixed latents (written as .npy); the wall time of every UNet
   evaluation (a hook), of the text encoder and of the decode, and the process's peak resident memory
   after loading and after the run.
3. This engine: `txt2img` on the same folder with the same latents (--init-noise), timed by its own
   report; its planned memory from `info --model --height --width`; the two decoded images compared.

Both run on the same machine one after the other; on 2 cores the run takes about an hour.
"""

import argparse
import gzip
import json
import re
import resource
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "tests/data/sd15-configs"
TOKENIZER = ROOT / "tests/golden/tokenizer"
PROMPT = "a photograph of an astronaut riding a horse"


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make(folder: Path) -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if (folder / "model_index.json").is_file():
        return
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(json.loads((CONFIGS / "unet/config.json").read_text()))
    unet.save_pretrained(tmp / "unet", safe_serialization=True)
    del unet
    text = CLIPTextModel(CLIPTextConfig.from_json_file(CONFIGS / "text_encoder/config.json"))
    text.save_pretrained(tmp / "text_encoder", safe_serialization=True)
    del text
    vae = AutoencoderKL.from_config(json.loads((CONFIGS / "vae/config.json").read_text()))
    vae.save_pretrained(tmp / "vae", safe_serialization=True)
    del vae
    tok = tmp / "tokenizer"
    tok.mkdir()
    for name in ("vocab.json", "merges.txt"):
        (tok / name).write_bytes(gzip.decompress((TOKENIZER / (name + ".gz")).read_bytes()))
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZER / "sd1" / name, tok / name)
    (tmp / "scheduler").mkdir()
    shutil.copy(CONFIGS / "scheduler/scheduler_config.json", tmp / "scheduler/scheduler_config.json")
    index = json.loads((CONFIGS / "model_index.json").read_text())
    for part in ("safety_checker", "feature_extractor"):  # not run by either engine
        index[part] = [None, None]
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    tmp.rename(folder)


def run_torch(folder: Path, args, latents_npy: Path, out_npy: Path) -> dict:
    from diffusers import StableDiffusionPipeline

    torch.set_num_threads(args.threads)
    before = peak_mib()
    t0 = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32, safety_checker=None,
                                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    load_s = time.perf_counter() - t0
    loaded = peak_mib()
    unet_ms, marks = [], {}
    pipe.unet.register_forward_pre_hook(lambda *_: marks.__setitem__("u", time.perf_counter()))
    pipe.unet.register_forward_hook(lambda *_: unet_ms.append(1e3 * (time.perf_counter() - marks["u"])))
    pipe.text_encoder.register_forward_pre_hook(lambda *_: marks.__setitem__("t", time.perf_counter()))
    text_ms = []
    pipe.text_encoder.register_forward_hook(lambda *_: text_ms.append(1e3 * (time.perf_counter() - marks["t"])))
    n = args.size // 8
    latents = torch.randn(1, 4, n, n, generator=torch.Generator().manual_seed(args.seed))
    np.save(latents_npy, latents.numpy())
    t0 = time.perf_counter()
    with torch.no_grad():
        final = pipe(PROMPT, height=args.size, width=args.size, num_inference_steps=args.steps, guidance_scale=7.5,
                     latents=latents.clone(), output_type="latent").images
        chain_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        decoded = pipe.vae.decode(final / pipe.vae.config.scaling_factor).sample
        decode_s = time.perf_counter() - t1
    np.save(out_npy, decoded.numpy())
    np.save(out_npy.with_name(out_npy.stem + "_latents.npy"), final.numpy())
    # The decode in the tiles this engine takes where a whole 512x512 decode is past a 128 MiB
    # binding (32x32 latents, diffusers' overlap and blend): GroupNorm's statistics are a tile's,
    # so a tiled decode differs from the whole one by design.
    if args.size // 8 > 32:
        vae = pipe.vae
        vae.enable_tiling()
        vae.tile_latent_min_size, vae.tile_sample_min_size = 32, 256
        with torch.no_grad():
            tiled = vae.decode(final / vae.config.scaling_factor).sample
        np.save(out_npy.with_name(out_npy.stem + "_tiled.npy"), tiled.numpy())
        vae.disable_tiling()
    after = peak_mib()
    return {
        "threads": args.threads, "load_s": load_s, "unet_evaluations": len(unet_ms),
        "unet_step_ms_median": float(np.median(unet_ms)), "unet_step_ms": unet_ms,
        "text_encoder_ms": text_ms, "chain_s": chain_s, "decode_s": decode_s,
        "total_s": chain_s + decode_s, "peak_rss_mib_before_load": before, "peak_rss_mib_loaded": loaded,
        "peak_rss_mib_after_run": after, "run_peak_above_loaded_mib": after - loaded,
        "torch": torch.__version__,
    }


def run_engine(folder: Path, args, latents_npy: Path, out_npy: Path, png: Path) -> dict:
    info = subprocess.run([args.bin, "info", "--model", str(folder), "--height", str(args.size), "--width",
                           str(args.size)], capture_output=True, text=True, check=True).stdout
    t0 = time.perf_counter()
    proc = subprocess.run([args.bin, "txt2img", "--model", str(folder), "--prompt", PROMPT, "--steps",
                           str(args.steps), "--height", str(args.size), "--width", str(args.size), "--init-noise",
                           str(latents_npy), "--save-npy", str(out_npy), "--out", str(png), "--save-latents",
                           str(out_npy.with_name(out_npy.stem + "_latents.npy"))],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"the engine failed:\n{proc.stderr}")
    lines = [l for l in proc.stderr.splitlines() if "XDG_RUNTIME_DIR" not in l]
    # The largest child's peak resident memory: on a CPU driver the device's buffers live in it too.
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    timing = {}
    for line in lines:
        m = re.search(r"wrote .*: ([\d.]+) s, .*\(([\d.]+) s to the last step.*, ([\d.]+) s a step; ([\d.]+) s after it", line)
        if m:
            timing = {"total_s": float(m[1]), "chain_s": float(m[2]), "unet_step_s": float(m[3]),
                      "after_chain_s": float(m[4])}
    return {"wall_s_with_load": wall, "peak_rss_mib": peak, **timing, "report": lines, "info": info.splitlines()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", type=Path, default=ROOT / "runs/sd15-random")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bin", default=str(ROOT / "target/release/wgpu-diffusion"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=None, help="where the run's arrays go (default FOLDER/runs)")
    ap.add_argument("--skip-torch", action="store_true", help="reuse the PyTorch result already in the folder")
    args = ap.parse_args()
    make(args.folder)
    work = args.work or args.folder / "runs"
    work.mkdir(exist_ok=True)
    latents, torch_npy, ours_npy = work / "latents.npy", work / "torch.npy", work / "ours.npy"
    torch_json = work / "torch.json"
    if args.skip_torch and torch_json.is_file():
        pt = json.loads(torch_json.read_text())
    else:
        pt = run_torch(args.folder, args, latents, torch_npy)
        torch_json.write_text(json.dumps(pt, indent=1))
    print(f"PyTorch CPU: UNet step median {pt['unet_step_ms_median'] / 1e3:.2f} s over {pt['unet_evaluations']} "
          f"evaluations, chain {pt['chain_s']:.1f} s, decode {pt['decode_s']:.1f} s, "
          f"run peak above loaded {pt['run_peak_above_loaded_mib']:.0f} MiB, loaded peak {pt['peak_rss_mib_loaded']:.0f} MiB",
          flush=True)
    ours = run_engine(args.folder, args, latents, ours_npy, work / "ours.png")
    print("\n".join(ours["report"]))
    print("\n".join(ours["info"]))
    a, b = np.load(ours_npy), np.load(torch_npy)
    diff = float(np.abs(a - b).max())
    print(f"decoded images: max |ours - torch| {diff:.3e} (values within {float(np.abs(b).max()):.2f})")
    lat_ours, lat_torch = (np.load(p.with_name(p.stem + "_latents.npy")) for p in (ours_npy, torch_npy))
    lat_diff = float(np.abs(lat_ours - lat_torch).max())
    print(f"final latents: max |ours - torch| {lat_diff:.3e} (values within {float(np.abs(lat_torch).max()):.2f})")
    tiled = torch_npy.with_name(torch_npy.stem + "_tiled.npy")
    tiles = {}
    if tiled.is_file():
        t = np.load(tiled)
        tiles = {"max_abs_diff_decoded_vs_torch_tiled": float(np.abs(a - t).max()),
                 "max_abs_diff_torch_tiled_vs_whole": float(np.abs(t - b).max())}
        print(f"decoded images: max |ours - torch's decode in the same 32x32-latent tiles| "
              f"{tiles['max_abs_diff_decoded_vs_torch_tiled']:.3e}; torch's tiled vs its whole decode "
              f"{tiles['max_abs_diff_torch_tiled_vs_whole']:.3e}")
    if "unet_step_s" in ours:
        print(f"UNet step (guided: 2 rows): ours {ours['unet_step_s']:.2f} s, PyTorch {pt['unet_step_ms_median'] / 1e3:.2f} s "
              f"({ours['unet_step_s'] / (pt['unet_step_ms_median'] / 1e3):.2f}x); end to end ours {ours['total_s']:.0f} s, "
              f"PyTorch {pt['total_s']:.0f} s; peak resident ours {ours['peak_rss_mib']:.0f} MiB, PyTorch "
              f"{pt['peak_rss_mib_after_run']:.0f} MiB")
    result = {"size": args.size, "steps": args.steps, "prompt": PROMPT, "torch": pt, "engine": ours,
              "max_abs_diff_decoded": diff, "max_abs_diff_latents": lat_diff, **tiles}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
