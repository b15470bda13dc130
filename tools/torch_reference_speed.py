"""PyTorch + diffusers reference speed for the performance section: the same UNets as
`wgpu-diffusion bench` (ddpm-cifar10-32 with random weights, the bundled Fashion-MNIST model),
one forward, f32 (TF32 off), median of repeated runs after a warm-up. With --kernels, the shapes of
the `ref-*` rows of `cargo bench --bench kernels` instead (the issue's reference table), and of
its conv `*-bwd-*` rows (forward, input gradient, weight + bias gradient). With --train, one
training step's gradients as `bench --train` times them (MSE on the epsilon target, forward +
backward, no optimizer) beside a no-grad forward of the same batch, and a whole training step as
`train` runs it (noise, t, forward, loss, backward, clipping, AdamW, EMA: training images/s). With
--vae SIZE, Stable Diffusion's VAE decoder (AutoencoderKL, 128/256/512/512, random weights) decoding
one SIZE x SIZE image, as `bench --vae-arch sd --vae-size SIZE` times it. Run it beside the bench to
compare in one period of a shared machine.

    python3 tools/torch_reference_speed.py [--device cuda|cpu] [--threads N] [--kernels | --train | --vae SIZE]
"""
import argparse
import json
import pathlib
import statistics
import time

import torch
from diffusers import AutoencoderKL, UNet2DModel

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
    return median_ms(lambda: model(x, t), device, reps)[0]


def median_ms(fn, device, reps, grad=False):
    times = []
    with torch.set_grad_enabled(grad):
        for i in range(reps + 3):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            if i >= 3:
                times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times)


def time_kernels(device, name):
    """The `ref-*` rows of benches/kernels.rs, same shapes and names."""
    r = lambda *s: torch.randn(*s, device=device)
    a, b = r(512, 512), r(512, 512)
    w, bias = r(128, 128, 3, 3), r(128)
    x8, x1 = r(8, 128, 32, 32), r(1, 128, 32, 32)
    gn = torch.nn.GroupNorm(32, 128).to(device)
    q, k, v = r(8, 1, 256, 128), r(8, 1, 256, 128), r(8, 1, 256, 128)
    conv = torch.nn.functional.conv2d
    rows = [
        ("ref-matmul-512", 2 * 512**3, lambda: a @ b),
        ("ref-conv2d-b8", 2 * 8 * 128 * 1024 * 128 * 9, lambda: conv(x8, w, bias, padding=1)),
        ("ref-conv2d-b1", 2 * 128 * 1024 * 128 * 9, lambda: conv(x1, w, bias, padding=1)),
        ("ref-group-norm-b8", 0, lambda: gn(x8)),
        ("ref-attention-b8", 4 * 8 * 256 * 256 * 128,
         lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v)),
    ]
    rows += conv_backward_rows(device)
    for label, flops, fn in rows:
        med, low = median_ms(fn, device, reps=50)
        print(json.dumps({"name": label, "median_ms": round(med, 3), "min_ms": round(low, 3),
                          "gflops": round(flops / med / 1e6, 1), "device": name, "torch": torch.__version__}))


def conv_backward_rows(device):
    """The conv rows of benches/kernels.rs's backward_cases: forward, dx, dW + db."""
    rows = []
    for name, n, c, hw, stride, pad in [
        ("fashion-bwd-conv2d-32x28", 16, 32, 28, 1, (1, 1, 1, 1)),
        ("fashion-bwd-conv2d-64x7", 16, 64, 7, 1, (1, 1, 1, 1)),
        ("fashion-bwd-conv2d-down", 16, 32, 28, 2, (1, 1, 1, 1)),
        ("cifar-bwd-conv2d-128x32", 1, 128, 32, 1, (1, 1, 1, 1)),
        ("cifar-bwd-conv2d-256x16", 1, 256, 16, 1, (1, 1, 1, 1)),
        ("cifar-bwd-conv2d-256x8", 1, 256, 8, 1, (1, 1, 1, 1)),
        ("cifar-bwd-conv2d-256x4", 1, 256, 4, 1, (1, 1, 1, 1)),
        ("cifar-bwd-conv2d-down", 1, 128, 32, 2, (0, 1, 0, 1)),
        ("cifar-bwd-conv2d-down16", 1, 256, 16, 2, (0, 1, 0, 1)),
    ]:
        x = torch.nn.functional.pad(torch.randn(n, c, hw, hw, device=device), pad)
        w, b = torch.randn(c, c, 3, 3, device=device), torch.randn(c, device=device)
        y = torch.nn.functional.conv2d(x, w, b, stride=stride)
        dy = torch.randn_like(y)
        flops = 2 * y.numel() * c * 9
        back = torch.ops.aten.convolution_backward

        def grads(mask, x=x, w=w, dy=dy, stride=stride):
            return back(dy, x, w, [c], [stride, stride], [0, 0], [1, 1], False, [0, 0], 1, mask)

        rows += [
            (f"{name}-fwd", flops, lambda x=x, w=w, b=b, stride=stride: torch.nn.functional.conv2d(x, w, b, stride=stride)),
            (f"{name}-dx", flops, lambda grads=grads: grads([True, False, False])),
            (f"{name}-dw", flops, lambda grads=grads: grads([False, True, True])),
        ]
    return rows


def time_train(model, batch, size, channels, device, reps):
    """(forward ms under no_grad, forward + MSE + backward ms)."""
    x = torch.randn(batch, channels, size, size, device=device)
    eps = torch.randn_like(x)
    t = torch.randint(0, 1000, (batch,), device=device)
    forward = median_ms(lambda: model(x, t), device, reps)[0]

    def step():
        model.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x, t).sample, eps)
        loss.backward()

    return forward, median_ms(step, device, reps, grad=True)[0]


def time_full_step(model, batch, size, channels, device, reps):
    """A whole train_unconditional step (`train`'s): randn noise, randint t, add_noise, forward,
    MSE, backward, clip_grad_norm_(1.0), AdamW, EMAModel: ms per step."""
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel
    sched = DDPMScheduler(num_train_timesteps=1000)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.95, 0.999), eps=1e-8, weight_decay=1e-6)
    ema = EMAModel(model.parameters(), decay=0.9999, use_ema_warmup=True, power=3 / 4)
    x0 = torch.rand(batch, channels, size, size, device=device) * 2 - 1

    def step():
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (batch,), device=device)
        loss = torch.nn.functional.mse_loss(model(sched.add_noise(x0, noise, t), t).sample, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.step(model.parameters())

    return median_ms(step, device, reps, grad=True)[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--kernels", action="store_true", help="the kernel harness's ref-* shapes, not UNets")
    ap.add_argument("--train", action="store_true", help="a training step's gradients beside a forward")
    ap.add_argument("--vae", type=int, default=0, help="time Stable Diffusion's VAE decoder at this image side")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    if args.kernels:
        time_kernels(args.device, name)
        return
    if args.vae:
        # The same config as src/model/vae/config.rs's STABLE_DIFFUSION_VAE.
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            norm_num_groups=32, sample_size=512).to(args.device).eval()
        z = torch.randn(1, 4, args.vae // 8, args.vae // 8, device=args.device)
        times = []
        with torch.no_grad():
            vae.decode(z)
            for _ in range(args.reps):
                if args.device == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                vae.decode(z)
                if args.device == "cuda":
                    torch.cuda.synchronize()
                times.append((time.perf_counter() - start) * 1e3)
        print(json.dumps({"model": "stable diffusion vae decoder", "size": args.vae,
                          "params": sum(p.numel() for p in vae.parameters()), "decode_ms": round(statistics.median(times), 1),
                          "min_ms": round(min(times), 1), "device": name, "torch": torch.__version__}))
        return
    cifar = UNet2DModel(**CIFAR).to(args.device).eval()
    fashion = UNet2DModel.from_pretrained(ROOT / "weights" / "fashion-mnist").to(args.device).eval()
    if args.train:
        for label, model, size, ch, batch in [("fashion-mnist (bundled)", fashion, 28, 1, 16),
                                              ("ddpm-cifar10-32", cifar, 32, 3, 1)]:
            model.train()
            fwd, step = time_train(model, batch, size, ch, args.device, reps=10)
            full = time_full_step(model, batch, size, ch, args.device, reps=10)
            print(json.dumps({"model": label, "batch": batch, "forward_ms": round(fwd, 2),
                              "step_ms": round(step, 2), "ratio": round(step / fwd, 2),
                              "full_step_ms": round(full, 2), "train_images_per_s": round(batch / full * 1e3, 1),
                              "device": name, "torch": torch.__version__}))
        return
    rows = []
    for label, model, size, ch, batch in [("ddpm-cifar10-32", cifar, 32, 3, 1), ("ddpm-cifar10-32", cifar, 32, 3, 16),
                                          ("fashion-mnist (bundled)", fashion, 28, 1, 16)]:
        ms = time_forward(model, batch, size, ch, args.device, reps=20)
        rows.append({"model": label, "batch": batch, "forward_ms": round(ms, 3), "device": name,
                     "torch": torch.__version__})
        print(json.dumps(rows[-1]))


if __name__ == "__main__":
    main()
