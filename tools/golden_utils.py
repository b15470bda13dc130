"""What the golden scripts share."""

import torch


def perturb_norms(model: torch.nn.Module, gen: torch.Generator) -> None:
    """GroupNorm affine parameters moved away from (1, 0), so that defaults cannot hide a bug."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=gen))


def spread_codebook(model: torch.nn.Module, gen: torch.Generator) -> None:
    """A VQModel's codebook spread out (standard normal), so the nearest code is rarely a near-tie."""
    with torch.no_grad():
        e = model.quantize.embedding.weight
        e.copy_(torch.randn(e.shape, generator=gen))
