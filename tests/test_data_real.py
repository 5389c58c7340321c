"""The data layer on the real CIFAR-100, rebuilt from ../shared/data (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hpstudy.data import Cifar100, channel_stats, dataset_info, load_cifar100, split_indices

pytestmark = pytest.mark.real_data

# the rebuilt pickles carry placeholder file names, so their md5s are not the official ones
VERIFY = False


@pytest.fixture(scope="module")
def cifar(real_root: Path) -> Cifar100:
    return load_cifar100(real_root, verify=VERIFY)


def test_sizes_and_class_balance(cifar: Cifar100) -> None:
    assert cifar.train.images.shape == (50000, 3, 32, 32)
    assert cifar.test.images.shape == (10000, 3, 32, 32)
    assert torch.bincount(cifar.train.fine, minlength=100).tolist() == [500] * 100
    assert torch.bincount(cifar.test.fine, minlength=100).tolist() == [100] * 100
    assert torch.bincount(cifar.train.coarse, minlength=20).tolist() == [2500] * 20
    assert cifar.fine_names[:3] == ["apple", "aquarium_fish", "baby"]
    assert cifar.coarse_names[0] == "aquatic_mammals"


def test_official_order_and_pixels(cifar: Cifar100) -> None:
    # first labels and pixels of the official train file (shared/data/README.md)
    assert cifar.train.fine[:5].tolist() == [19, 29, 0, 11, 1]
    assert cifar.train.coarse[:5].tolist() == [11, 15, 4, 14, 1]
    # a row starts with the R plane's first pixels and ends with the B plane's last ones
    assert cifar.train.images[1, 0, 0, :3].tolist() == [255, 253, 253]
    assert cifar.train.images[2, 0, 0, :3].tolist() == [250, 248, 247]
    assert cifar.train.images[0, 2, 31, -3:].tolist() == [10, 59, 79]
    assert cifar.train.images[2, 2, 31, -3:].tolist() == [194, 207, 228]


def test_seed0_train_split_stats(cifar: Cifar100) -> None:
    train_idx, val_idx = split_indices(50000, 10000, seed=0)
    assert (len(train_idx), len(val_idx)) == (40000, 10000)
    mean, std = channel_stats(cifar.train.images[train_idx])
    print(f"seed-0 train split: mean {mean} std {std}")
    assert [round(m, 4) for m in mean] == [0.5068, 0.4861, 0.4403]
    # the 40k split's std, close to (not equal to) the published full-set values
    assert std == pytest.approx([0.2673, 0.2564, 0.2762], abs=0.002)


def test_dataset_info(real_root: Path) -> None:
    info = dataset_info(real_root, seed=0, verify=VERIFY)
    assert (info["train_size"], info["val_size"], info["test_size"]) == (40000, 10000, 10000)
    assert [round(m, 4) for m in info["mean"]] == [0.5068, 0.4861, 0.4403]
    assert info["class_proportion_mean"] == pytest.approx(0.01)
