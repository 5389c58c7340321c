"""The run's data on its device: the split's uint8 images and labels, and the normalisation.

The whole split lives on the device as uint8 tensors (airbench's habit), so the
training loop gathers and augments batches there with no DataLoader.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from hpstudy import data
from hpstudy.config import RunConfig
from hpstudy.constants import DATASET_CLASSES, IMAGE_SHAPE
from hpstudy.sources import BUILTIN_DATASETS, dataset_fingerprint


@dataclass(frozen=True)
class DeviceData:
    train_x: torch.Tensor  # uint8 (N, C, H, W): (N, 3, 32, 32) for CIFAR
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    val_coarse: torch.Tensor | None  # None where the dataset has no superclasses (CIFAR-10)
    mean: torch.Tensor  # (3,) float32, [0, 1] scale
    std: torch.Tensor

    def head(self, train: int | None = None, val: int | None = None) -> DeviceData:
        """The first `train` / `val` images: a shorter epoch over the same kind of data."""
        return replace(
            self,
            train_x=self.train_x[:train],
            train_y=self.train_y[:train],
            val_x=self.val_x[:val],
            val_y=self.val_y[:val],
            val_coarse=None if self.val_coarse is None else self.val_coarse[:val],
        )


_loaded: dict[tuple[str, bool, str, int | None], data.Cifar100] = {}


def load_data(
    root: str | Path | None, verify: bool, dataset: str = "cifar100", image_size: int | None = None
) -> data.Cifar100:
    """Load once per process: a study runs many configurations on the same archive. The
    user's data (not under ROOT) is loaded again when its file or folder changed."""
    if dataset in BUILTIN_DATASETS:
        key = (str(data.resolve_root(root)), verify, dataset, None)
    else:
        key = (dataset_fingerprint(dataset) or "", True, dataset, image_size)
    if key not in _loaded:
        _loaded.clear()
        if dataset in BUILTIN_DATASETS:
            _loaded[key] = data.load_dataset(dataset, root, verify=verify)
        else:
            _loaded[key] = data.load_user_dataset(dataset, image_size)
    return _loaded[key]


def data_shape(config: RunConfig) -> tuple[int, tuple[int, int, int]]:
    """(classes, (C, H, W) of one image) of the config's dataset: CIFAR's are fixed, the
    user's are read from the data (loaded once per process)."""
    if config.dataset in BUILTIN_DATASETS:
        return DATASET_CLASSES[config.dataset], IMAGE_SHAPE
    loaded = load_data(None, True, config.dataset, config.image_size)
    return loaded.num_classes, loaded.image_shape


def split_of(config: RunConfig, cifar: data.Cifar100) -> tuple[torch.Tensor, torch.Tensor]:
    """The config's train and val indices: the whole split cut to its limits."""
    train_all, val_all = data.train_val_split(len(cifar.train.fine), config.split_seed)
    return train_all[: config.limit_train], val_all[: config.limit_val]


def device_data(cifar: data.Cifar100, config: RunConfig, device: torch.device) -> DeviceData:
    images, fine, coarse = cifar.train.images, cifar.train.fine, cifar.train.coarse
    train_all, _ = data.train_val_split(len(fine), config.split_seed)
    # statistics of the whole train split, as the report computes them, whatever the limit
    mean, std = data.channel_stats(images, train_all)
    train_idx, val_idx = split_of(config, cifar)
    return DeviceData(
        train_x=images[train_idx].to(device),
        train_y=fine[train_idx].to(device),
        val_x=images[val_idx].to(device),
        val_y=fine[val_idx].to(device),
        val_coarse=None if coarse is None else coarse[val_idx].to(device),
        mean=torch.tensor(mean, dtype=torch.float32, device=device),
        std=torch.tensor(std, dtype=torch.float32, device=device),
    )
