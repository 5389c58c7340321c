"""CIFAR-100 data layer, one step per module: archive -> arrays -> split/stats.

`archive` finds, downloads, verifies, extracts and checks the dataset; `unpickle`
opens its pickles without letting them run code; `split` makes the seeded
train/validation indices (the only 80/20); `stats` summarises pixels and classes.
Everything public is re-exported here.
"""

from hpstudy.data.archive import (
    ARCHIVE,
    ARCHIVE_MD5,
    FILE_MD5,
    FOLDER,
    OFFICIAL_URL,
    Cifar100,
    Split,
    default_root,
    download,
    load_cifar100,
    resolve_root,
)
from hpstudy.data.split import indices_sha256, split_indices, train_val_split
from hpstudy.data.stats import channel_stats, class_proportions, dataset_info, split_info

__all__ = [
    "ARCHIVE",
    "ARCHIVE_MD5",
    "FILE_MD5",
    "FOLDER",
    "OFFICIAL_URL",
    "Cifar100",
    "Split",
    "channel_stats",
    "class_proportions",
    "dataset_info",
    "default_root",
    "download",
    "indices_sha256",
    "load_cifar100",
    "resolve_root",
    "split_indices",
    "split_info",
    "train_val_split",
]
