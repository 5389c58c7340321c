"""What the data looks like: per-channel pixel statistics, class balance, the split's summary."""

from __future__ import annotations

from pathlib import Path

import torch

from hpstudy.constants import NUM_CLASSES
from hpstudy.data.archive import Cifar100, load_dataset, resolve_root
from hpstudy.data.split import indices_sha256, train_val_split


def channel_stats(
    images: torch.Tensor, indices: torch.Tensor | None = None, chunk: int = 4096
) -> tuple[list[float], list[float]]:
    """Per-channel mean and population std of uint8 pixels scaled to [0, 1].

    Over `images[indices]` when indices are given, gathered a chunk at a time.
    Counts each of the 256 pixel values per channel: the sums are then exact
    integers, and no float copy of the split is ever made.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 (N, C, H, W) images, got {images.dtype} {images.shape}")
    n_images = images.shape[0] if indices is None else indices.numel()
    if n_images == 0:
        raise ValueError("no images to compute statistics of")
    channels = images.shape[1]
    counts = torch.zeros(channels, 256, dtype=torch.int64)
    for start in range(0, n_images, chunk):
        if indices is None:
            block = images[start : start + chunk]
        else:
            block = images[indices[start : start + chunk]]
        for c in range(channels):
            counts[c] += torch.bincount(block[:, c].reshape(-1), minlength=256)
    values = torch.arange(256, dtype=torch.int64)
    means, stds = [], []
    for c in range(channels):
        n = int(counts[c].sum())
        s1 = int((counts[c] * values).sum())
        s2 = int((counts[c] * values * values).sum())
        means.append(s1 / n / 255)
        # n*s2 - s1^2 in Python ints: exact, no cancellation
        stds.append(((n * s2 - s1 * s1) ** 0.5) / n / 255)
    return means, stds


def class_proportions(labels: torch.Tensor, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """Share of each class in `labels`, float64 of length num_classes."""
    counts = torch.bincount(labels, minlength=num_classes)
    if counts.numel() > num_classes:
        raise ValueError(f"label {counts.numel() - 1} is out of range for {num_classes} classes")
    return counts.double() / labels.numel()


def split_info(data: Cifar100, seed: int = 0, limit_train: int | None = None) -> dict:
    """Sizes, normalisation stats, class balance and fingerprint of the 80/20 train/val split;
    with `limit_train` below its size, the class balance of the first that many train images
    too (what runs limited to them train on)."""
    train_idx, val_idx = train_val_split(data.train.fine.numel(), seed)
    mean, std = channel_stats(data.train.images, train_idx)
    props = class_proportions(data.train.fine[train_idx], data.num_classes)
    used: dict = {}
    if limit_train is not None and limit_train < train_idx.numel():
        first = class_proportions(data.train.fine[train_idx[:limit_train]], data.num_classes)
        used = {"used_train": limit_train, "used_class_proportions": first.tolist()}
    return {
        "dataset": data.name,
        "split_seed": seed,
        "train_size": train_idx.numel(),
        "val_size": val_idx.numel(),
        "test_size": data.test.fine.numel(),
        "num_classes": data.num_classes,
        "image_shape": list(data.image_shape),
        "mean": mean,
        "std": std,
        "val_indices_sha256": indices_sha256(val_idx),
        "class_proportion_min": props.min().item(),
        "class_proportion_max": props.max().item(),
        "class_proportion_mean": props.mean().item(),
        "class_proportions": props.tolist(),
        **used,
    }


def dataset_info(
    root: str | Path | None = None, seed: int = 0, verify: bool = True, dataset: str = "cifar100"
) -> dict:
    """`split_info` of the dataset under `root`: what `hpstudy data info` prints."""
    root = resolve_root(root)
    loaded = load_dataset(dataset, root, verify)
    return {"root": str(root), **split_info(loaded, seed), "verified": verify}
