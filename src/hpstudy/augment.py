"""Batched training augmentation (flip, pad-crop, mixup, CutMix) on tensors, on their device.

Every random draw goes through an explicit generator so a run repeats exactly. A torch.Generator
draws only on its own device: pass `torch.Generator(device=images.device)` for a CUDA batch.
"""

import numpy as np
import torch
import torch.nn.functional as F


def flip_crop(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Per image: flip left-right with p = 0.5, pad `padding` zeros (raw black) per side, crop back.

    `images` is (B, C, H, W) of raw pixels (uint8 or any dtype); normalise afterwards so the padding
    stays black. The whole batch is one gather; the result keeps dtype, shape and memory format.
    """
    b, c, h, w = images.shape
    device = images.device
    flip = torch.rand(b, generator=generator, device=device) < 0.5
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=device)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=device)
    rows = dy[:, None] + torch.arange(h, device=device)
    cols = dx[:, None] + torch.arange(w, device=device)
    # Mirroring a column of the padded image equals padding the flipped image: flip, then crop.
    cols = torch.where(flip[:, None], w + 2 * padding - 1 - cols, cols)
    padded = F.pad(images, (padding, padding, padding, padding))
    out = padded[
        torch.arange(b, device=device)[:, None, None, None],
        torch.arange(c, device=device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]
    # Hand back the caller's layout; the gather itself always yields NCHW-contiguous.
    if images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous():
        return out.contiguous(memory_format=torch.channels_last)
    return out


def crop_padding(height: int, width: int) -> int:
    """Zeros padded per side before the random crop: 4 px at CIFAR's 32, scaled to the image."""
    return max(1, round(4 * min(height, width) / 32))


def normalize(
    images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Raw 0..255 pixels -> (x / 255 - mean) / std per channel; mean and std are [0, 1]-scale (C,).

    Computed in float32 and cast last, so a bfloat16 result is the rounded float32 value.
    """
    mean = mean.to(device=images.device, dtype=torch.float32).view(1, -1, 1, 1)
    std = std.to(device=images.device, dtype=torch.float32).view(1, -1, 1, 1)
    # Elementwise ops and .to() keep the input's memory format (channels_last stays channels_last).
    return ((images.to(torch.float32) / 255 - mean) / std).to(dtype)


def sample_mixup_lambda(alpha: float, rng: np.random.Generator) -> float:
    """One λ ~ Beta(alpha, alpha) per batch; alpha <= 0 means no mixup (λ = 1)."""
    return float(rng.beta(alpha, alpha)) if alpha > 0 else 1.0


def mixup(
    x: torch.Tensor, lam: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each example with a random partner of the same batch: λ·x + (1 − λ)·x[partner].

    Returns (mixed, partner); the caller mixes the loss the same way,
    λ·CE(out, y) + (1 − λ)·CE(out, y[partner]).
    """
    partner = torch.randperm(x.shape[0], generator=generator, device=x.device)
    return lam * x + (1 - lam) * x[partner], partner


def mixup_accuracy(
    logits: torch.Tensor, y: torch.Tensor, y_partner: torch.Tensor, lam: float
) -> torch.Tensor:
    """Σ over the batch of λ·[pred = y] + (1 − λ)·[pred = y_partner], as a 0-dim float tensor.

    A sum, not a mean, and left on the device: the caller accumulates and divides at epoch end.
    """
    pred = logits.argmax(dim=1)
    return (lam * (pred == y).float() + (1 - lam) * (pred == y_partner).float()).sum()


def cutmix_box(lam: float, height: int, width: int, rng: np.random.Generator) -> tuple[int, ...]:
    """timm's box for a CutMix weight λ: sides √(1 − λ) of the image's, centred at a uniform
    pixel, clipped to the image. Returns (top, bottom, left, right), bottom and right exclusive.
    """
    ratio = float(np.sqrt(1 - lam))
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    top, bottom = int(np.clip(cy - cut_h // 2, 0, height)), int(np.clip(cy + cut_h // 2, 0, height))
    left, right = int(np.clip(cx - cut_w // 2, 0, width)), int(np.clip(cx + cut_w // 2, 0, width))
    return top, bottom, left, right


def cutmix(
    x: torch.Tensor, lam: float, generator: torch.Generator, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Paste one box of a random partner of the same batch into every image (timm's CutMix).

    Returns (mixed, partner, λ) with λ corrected to the share of each image left uncovered by
    the clipped box, so the caller mixes the loss as with mixup:
    λ·CE(out, y) + (1 − λ)·CE(out, y[partner]).
    """
    partner = torch.randperm(x.shape[0], generator=generator, device=x.device)
    height, width = x.shape[-2:]
    top, bottom, left, right = cutmix_box(lam, height, width, rng)
    mixed = x.clone()
    mixed[:, :, top:bottom, left:right] = x[partner][:, :, top:bottom, left:right]
    area = (bottom - top) * (right - left)
    return mixed, partner, 1 - area / (height * width)
