"""CIFAR-100 (and CIFAR-10) data layer, one step per module: archive -> arrays -> split/stats.

`archive` finds, downloads, verifies, extracts and checks the dataset; `unpickle`
opens its pickles without letting them run code; `user` reads the user's own data (an
.npz, an image folder, a registered loader) into the same arrays; `split` makes the seeded
train/validation indices (the only 80/20); `stats` summarises pixels and classes.
Everything public is re-exported here.
"""

from hpstudy.data.archive import (
    ARCHIVE,
    ARCHIVE_MD5,
    CIFAR10,
    CIFAR100,
    FILE_MD5,
    FOLDER,
    LAYOUTS,
    OFFICIAL_URL,
    Cifar100,
    CifarData,
    Layout,
    Split,
    default_root,
    download,
    layout_of,
    load_cifar10,
    load_cifar100,
    load_dataset,
    resolve_root,
)
from hpstudy.data.split import indices_sha256, split_indices, train_val_split
from hpstudy.data.stats import channel_stats, class_proportions, dataset_info, split_info
from hpstudy.data.user import load_user_dataset, read_npz

__all__ = [
    "ARCHIVE",
    "ARCHIVE_MD5",
    "CIFAR10",
    "CIFAR100",
    "FILE_MD5",
    "FOLDER",
    "LAYOUTS",
    "OFFICIAL_URL",
    "Cifar100",
    "CifarData",
    "Layout",
    "Split",
    "channel_stats",
    "class_proportions",
    "dataset_info",
    "default_root",
    "download",
    "indices_sha256",
    "layout_of",
    "load_cifar10",
    "load_cifar100",
    "load_dataset",
    "load_user_dataset",
    "read_npz",
    "resolve_root",
    "split_indices",
    "split_info",
    "train_val_split",
]
