#!/usr/bin/env python3
"""Judge a class-conditional Fashion-MNIST model for data augmentation, as the README reports it.

    .venv/bin/python tools/eval_conditional.py [--bin target/release/wgpu-diffusion]
        [--cond weights/fashion-mnist-cond] [--uncond weights/fashion-mnist] [--per-class 100]
        [--scales 1 2 3] [--default-scale 2] [--work runs/eval] [--json docs/conditional/metrics.json]

1. A Fashion-MNIST classifier (a small CNN: two 3x3 conv layers with max pooling, a 128-wide hidden
   layer) trained with PyTorch on the 60,000 real training images (Debian's dataset-fashion-mnist),
   its accuracy on the 10,000 real test images overall and per class.
2. The engine samples `--per-class` images of every class from the conditional model at each
   guidance scale (`sample --per-class N --guidance-scale S --save-npy`, image k of class k / N),
   and as many from the unconditional model, all with `sample`'s default sampler and steps and
   seed 0. Samples are read as a user gets them: clamped to [-1, 1] and rounded to 8 bits.
3. The share of each scale's samples that the classifier names as their requested class, per
   class and overall.
4. A Fréchet distance on the classifier's 128-wide hidden features between each set of samples
   and the 10,000 real test images (the same reference, the same sample count for every set).
5. The classification accuracy score (Ravuri & Vinyals 2019): the classifier's architecture
   trained only on the default scale's generated images, tested on the real test set, beside the
   same trained on as many real training images (the first N of each class).
Nothing here is needed by CI; the engine runs as a subprocess.
"""

import argparse
import gzip
import json
import subprocess
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
DATA = Path("/usr/share/datasets/fashion-mnist")
NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
         "Ankle boot"]


def idx(path: Path) -> np.ndarray:
    raw = gzip.open(path).read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def real(split: str):
    x = idx(DATA / f"{split}-images-idx3-ubyte.gz").astype(np.float32) / 255 * 2 - 1
    y = idx(DATA / f"{split}-labels-idx1-ubyte.gz").astype(np.int64)
    return torch.from_numpy(x[:, None]), torch.from_numpy(y)


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 32, 3, padding=1)
        self.c2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 7 * 7, 128)
        self.out = nn.Linear(128, 10)

    def features(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        return F.relu(self.fc(x.flatten(1)))

    def forward(self, x):
        return self.out(F.dropout(self.features(x), 0.3, self.training))


def train(x, y, epochs: int, seed: int) -> Classifier:
    torch.manual_seed(seed)
    model = Classifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for b in torch.randperm(len(x), generator=gen).split(128):
            opt.zero_grad()
            F.cross_entropy(model(x[b]), y[b]).backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def predict(model, x):
    return torch.cat([model(b).argmax(1) for b in x.split(1000)])


@torch.no_grad()
def features(model, x):
    return torch.cat([model.features(b) for b in x.split(1000)]).double().numpy()


def per_class(pred, y):
    return [float((pred[y == c] == c).float().mean()) for c in range(10)]


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), with tr (S1 S2)^(1/2) = tr (R S2 R)^(1/2) for
    R = S1^(1/2) (both symmetric: eigenvalues, no scipy)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s1)
    r = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def as_user_sees(v: np.ndarray) -> torch.Tensor:
    """Samples clamped and rounded to 8 bits as the PNGs hold them, back in [-1, 1]."""
    u8 = np.rint((np.clip(v, -1, 1) / 2 + 0.5) * 255)
    return torch.from_numpy((u8 / 255 * 2 - 1).astype(np.float32))


def npy(path: Path) -> torch.Tensor:
    return as_user_sees(np.load(path))


def run(cmd):
    print("$", " ".join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target/release/wgpu-diffusion"))
    ap.add_argument("--cond", default=str(ROOT / "weights/fashion-mnist-cond"))
    ap.add_argument("--uncond", default=str(ROOT / "weights/fashion-mnist"))
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    ap.add_argument("--default-scale", type=float, default=2.0)
    ap.add_argument("--work", default=str(ROOT / "runs/eval"))
    ap.add_argument("--json", default=None)
    ap.add_argument("--classifier-epochs", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(2)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    n = args.per_class

    # 1. The classifier on real data (cached: the same seed gives the same weights).
    xtr, ytr = real("train")
    xte, yte = real("t10k")
    cached = work / "classifier.pt"
    if cached.is_file():
        clf = Classifier()
        clf.load_state_dict(torch.load(cached))
        clf.eval()
    else:
        clf = train(xtr, ytr, args.classifier_epochs, seed=0)
        torch.save(clf.state_dict(), cached)
    pred = predict(clf, xte)
    result = {"classifier": {"test_accuracy": float((pred == yte).float().mean()),
                             "per_class": per_class(pred, yte), "epochs": args.classifier_epochs}}
    real_feats = features(clf, xte)

    # 2. Samples from the engine.
    labels = torch.arange(10).repeat_interleave(n)
    sets = {}
    for s in args.scales:
        out = work / f"cond-{s:g}.npy"
        if not out.is_file():
            run([args.bin, "sample", "--model", args.cond, "--per-class", n, "--guidance-scale", s,
                 "--seed", 0, "--out", work / f"cond-{s:g}.png", "--save-npy", out])
        sets[f"cond-{s:g}"] = npy(out)
    out = work / "uncond.npy"
    if not out.is_file():
        run([args.bin, "sample", "--model", args.uncond, "--batch", 10 * n, "--seed", 0,
             "--out", work / "uncond.png", "--save-npy", out])
    sets["uncond"] = npy(out)

    # 3 and 4. Named as requested; Fréchet distance to the real test images.
    result["samples"] = {}
    for name, x in sets.items():
        entry = {"count": len(x), "frechet_distance": frechet(features(clf, x), real_feats)}
        if name.startswith("cond"):
            p = predict(clf, x)
            entry["named_as_requested"] = float((p == labels).float().mean())
            entry["per_class"] = per_class(p, labels)
        result["samples"][name] = entry

    # 5. Classification accuracy score: trained on generated images only vs on as many real ones.
    epochs = 40
    gen_x = sets[f"cond-{args.default_scale:g}"]
    cas = train(gen_x, labels, epochs, seed=1)
    first = torch.cat([torch.nonzero(ytr == c).flatten()[:n] for c in range(10)])
    base = train(xtr[first], ytr[first], epochs, seed=1)
    result["cas"] = {
        "images": len(gen_x), "epochs": epochs, "guidance_scale": args.default_scale,
        "generated_only": float((predict(cas, xte) == yte).float().mean()),
        "real_only": float((predict(base, xte) == yte).float().mean()),
    }
    result["cas"]["ratio"] = result["cas"]["generated_only"] / result["cas"]["real_only"]

    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    # A table for the README.
    print("\n| class | real test (classifier) | " + " | ".join(f"guidance {s:g}" for s in args.scales) + " |")
    print("|---|---|" + "---|" * len(args.scales))
    for c, name in enumerate(NAMES):
        row = [f"{100 * result['classifier']['per_class'][c]:.0f}%"]
        row += [f"{100 * result['samples'][f'cond-{s:g}']['per_class'][c]:.0f}%" for s in args.scales]
        print(f"| {name} | " + " | ".join(row) + " |")
    row = [f"{100 * result['classifier']['test_accuracy']:.1f}%"]
    row += [f"{100 * result['samples'][f'cond-{s:g}']['named_as_requested']:.1f}%" for s in args.scales]
    print("| **all** | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
