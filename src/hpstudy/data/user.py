"""The user's own images as a dataset: an .npz file, an image folder, or a registered loader.

Each source ends in the arrays the CIFAR archives give (`CifarData`: uint8 NCHW images,
int64 labels, class names, no superclasses), so the split, statistics, augmentation,
evaluation and export treat them alike. Everything is checked before it becomes a tensor:
an .npz is read with allow_pickle=False, its headers capped and its shapes, dtypes and labels
checked; a folder (PATH/train/<class>/*.png|jpg, PATH/test/<class>/...) holds plain files
only (no links out), the same classes on both sides, none empty, and images Pillow decodes
with its decompression-bomb guard on. A folder is decoded once, into a cache keyed by its
listing and sizes. Whatever is wrong is one HpstudyError naming the file and the problem.
"""

from __future__ import annotations

import logging
import os
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpstudy.data.archive import CifarData, Split
from hpstudy.errors import HpstudyError
from hpstudy.plugins import first_line
from hpstudy.sources import (
    IMAGE_SUFFIXES,
    dataset_fingerprint,
    dataset_loader,
    folder_listing,
    split_file_source,
)

logger = logging.getLogger(__name__)

MAX_IMAGES = 5_000_000  # per split
MAX_SIDE = 1024  # pixels per image side
MAX_BYTES = 16 << 30  # uint8 pixels of one array
MAX_CLASSES = 100_000
MAX_NAME = 200  # characters of a class name
MAX_MEMBERS = 16  # arrays in an .npz
MAX_HEADER = 10_000  # bytes of one .npy header (numpy's own default cap)
CHANNELS = (1, 3)
REQUIRED = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL = ("class_names",)


def load_user_dataset(dataset: str, image_size: int | None = None) -> CifarData:
    """`dataset` ("npz:PATH", "folder:PATH" or a registered / entry-point name) as arrays."""
    source = split_file_source(dataset)
    if source is None:
        loader = dataset_loader(dataset)
        where = f"dataset {dataset!r}"
        try:
            arrays = loader()
        except HpstudyError:
            raise
        except Exception as err:  # the user's loader: its own error, in one line
            raise HpstudyError(f"{where}: its loader failed ({first_line(err)})") from None
        if not isinstance(arrays, Mapping):
            raise HpstudyError(f"{where}: its loader returned a {type(arrays).__name__}, "
                               "not a mapping of arrays")  # fmt: skip
    elif source[0] == "npz":
        where, arrays = str(source[1]), read_npz(source[1])
    else:
        where, arrays = str(source[1]), read_folder(source[1], image_size)
    data = to_data(arrays, dataset, where)
    side = tuple(data.train.images.shape[2:])
    if image_size is not None and side != (image_size, image_size):
        raise HpstudyError(
            f"{where}: images are {side[0]}x{side[1]}, not image_size {image_size} "
            "(image_size resizes folder: images only)"
        )
    return data


# --- .npz -----------------------------------------------------------------------------------


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz, every header read and checked before any array is."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_MEMBERS:
                raise HpstudyError(f"{path}: {len(infos)} members (at most {MAX_MEMBERS})")
            for info in infos:
                name = info.filename.removesuffix(".npy")
                if name not in (*REQUIRED, *OPTIONAL):
                    raise HpstudyError(f"{path}: unexpected array {info.filename[:60]!r} "
                                       f"(use {', '.join((*REQUIRED, *OPTIONAL))})")  # fmt: skip
                if info.file_size > MAX_BYTES + MAX_HEADER:
                    raise HpstudyError(f"{path}: {name} is over {MAX_BYTES >> 30} GiB")
                with archive.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    shape, _, dtype = read_header(f, version)
                if dtype.hasobject:
                    raise HpstudyError(f"{path}: {name} holds Python objects (refused)")
                if np.prod(shape, dtype=np.float64) * dtype.itemsize > MAX_BYTES:
                    raise HpstudyError(f"{path}: {name} of shape {shape} is too large")
        with np.load(path, allow_pickle=False, max_header_size=MAX_HEADER) as npz:
            return {key: npz[key] for key in npz.files}
    except HpstudyError:
        raise
    except FileNotFoundError:
        raise HpstudyError(f"dataset: {path}: no such .npz file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError) as err:
        raise HpstudyError(f"{path}: not a readable .npz ({first_line(err)})") from None


def read_header(f: Any, version: tuple[int, int]) -> tuple[tuple[int, ...], bool, np.dtype]:
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f, max_header_size=MAX_HEADER)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f, max_header_size=MAX_HEADER)
    raise ValueError(f"unsupported .npy version {version}")


# --- an image folder ------------------------------------------------------------------------


def cache_folder() -> Path:
    """Where decoded folders are kept: $HPSTUDY_CACHE/folders, else the per-user cache's."""
    root = os.environ.get("HPSTUDY_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "hpstudy",
    )
    return Path(root) / "folders"


def read_folder(path: Path, image_size: int | None) -> dict[str, np.ndarray]:
    """PATH/train/<class>/* and PATH/test/<class>/* as arrays, decoded once and cached."""
    listing = folder_listing(path)
    fingerprint = dataset_fingerprint(f"folder:{path}")
    key = (fingerprint or "").rpartition(":")[2][:32]
    cached = cache_folder() / f"{key}-{image_size or 'own'}.npz"
    if cached.is_file():
        try:
            return read_npz(cached)
        except HpstudyError:
            logger.warning("%s: unreadable cache, decoding %s again", cached, path)
    classes = sorted(listing["train"])
    if sorted(listing["test"]) != classes:
        only = sorted(set(listing["train"]) ^ set(listing["test"]))
        raise HpstudyError(f"{path}: train/ and test/ differ in classes ({', '.join(only[:5])})")
    if len(classes) > MAX_CLASSES:
        raise HpstudyError(f"{path}: {len(classes)} classes (at most {MAX_CLASSES})")
    total = sum(len(files) for split in listing.values() for files in split.values())
    logger.info("%s: decoding %d images once (cached in %s)", path, total, cached.parent)
    arrays: dict[str, np.ndarray] = {"class_names": np.array(classes, dtype=str)}
    for split in ("train", "test"):
        images, labels = [], []
        for label, name in enumerate(classes):
            files = listing[split][name]
            if not files:
                raise HpstudyError(f"{path / split / name}: an empty class (no images)")
            images += [decode(file, image_size) for file in files]
            labels += [label] * len(files)
        sizes = {im.shape for im in images}
        if len(sizes) > 1:
            shown = " and ".join(f"{h}x{w}" for h, w, _ in sorted(sizes)[:2])
            raise HpstudyError(
                f"{path}: images differ in size ({shown}): set image_size to resize them"
            )
        arrays[f"x_{split}"] = np.stack(images)
        arrays[f"y_{split}"] = np.array(labels, dtype=np.int64)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(cached.name + ".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, cached)
    except OSError as err:  # a cache that cannot be written is skipped, never an error
        logger.warning("%s: cannot cache the decoded images (%s)", cached, err.strerror or err)
    return arrays


def decode(file: Path, image_size: int | None) -> np.ndarray:
    """One image file as uint8 (H, W, 3); a bomb, a non-image or a broken file is one line."""
    from PIL import Image, UnidentifiedImageError

    if file.suffix.lower() not in IMAGE_SUFFIXES:
        raise HpstudyError(f"{file}: not a .png or .jpg image")
    try:
        with warnings.catch_warnings():
            # over Image.MAX_IMAGE_PIXELS: refused, not only warned about
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as im:
                w, h = im.size
                if max(w, h) > 4 * MAX_SIDE:
                    raise HpstudyError(f"{file}: {w}x{h} pixels (at most {4 * MAX_SIDE} a side)")
                rgb = im.convert("RGB")
                if image_size is not None and rgb.size != (image_size, image_size):
                    rgb = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR)
                return np.asarray(rgb, dtype=np.uint8)
    except HpstudyError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise HpstudyError(f"{file}: refused as a decompression bomb ({first_line(err)})") from None
    except UnidentifiedImageError:
        raise HpstudyError(f"{file}: not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise HpstudyError(f"{file}: cannot decode ({first_line(err)})") from None


# --- arrays -> the dataset -------------------------------------------------------------------


def to_data(arrays: Mapping[str, Any], dataset: str, where: str) -> CifarData:
    """Checked arrays as a `CifarData` (images NCHW, labels int64, no superclasses)."""
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise HpstudyError(f"{where}: no {', '.join(missing)} (needs {', '.join(REQUIRED)})")
    x_train, x_test = (images(arrays[k], k, where) for k in ("x_train", "x_test"))
    if x_train.shape[1:] != x_test.shape[1:]:
        raise HpstudyError(f"{where}: x_train images are {list(x_train.shape[1:])}, x_test's "
                           f"{list(x_test.shape[1:])}")  # fmt: skip
    y_train = labels(arrays["y_train"], "y_train", len(x_train), where)
    y_test = labels(arrays["y_test"], "y_test", len(x_test), where)
    top = int(max(y_train.max(), y_test.max()))
    names = class_names(arrays.get("class_names"), top + 1, where)
    if len(x_train) < 2:
        raise HpstudyError(f"{where}: x_train holds {len(x_train)} images (a split needs 2)")
    return CifarData(
        train=Split(nchw(x_train), torch.from_numpy(y_train), None),
        test=Split(nchw(x_test), torch.from_numpy(y_test), None),
        fine_names=names,
        coarse_names=[],
        name=dataset,
    )


def images(x: Any, key: str, where: str) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8:
        shown = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
        raise HpstudyError(f"{where}: {key} must be a uint8 array (got {shown})")
    if x.ndim == 3:  # (N, H, W): one channel
        x = x[..., None]
    if x.ndim != 4 or x.shape[3] not in CHANNELS:
        raise HpstudyError(f"{where}: {key} must be (N, H, W, C) with C 1 or 3 (got "
                           f"{list(x.shape)})")  # fmt: skip
    n, h, w, _ = x.shape
    if not 1 <= n <= MAX_IMAGES or not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise HpstudyError(f"{where}: {key} of shape {list(x.shape)}: 1..{MAX_IMAGES:,} images "
                           f"of at most {MAX_SIDE}x{MAX_SIDE}")  # fmt: skip
    return x


def labels(y: Any, key: str, n: int, where: str) -> np.ndarray:
    if not isinstance(y, np.ndarray) or y.dtype.kind not in "iu" or y.ndim != 1:
        shown = f"{y.dtype} {list(y.shape)}" if isinstance(y, np.ndarray) else type(y).__name__
        raise HpstudyError(f"{where}: {key} must be a 1-D integer array (got {shown})")
    if len(y) != n:
        raise HpstudyError(f"{where}: {key} holds {len(y)} labels for {n} images")
    if y.min() < 0 or y.max() >= MAX_CLASSES:
        raise HpstudyError(f"{where}: {key} labels must be in 0..{MAX_CLASSES - 1}")
    return y.astype(np.int64)


def class_names(names: Any, needed: int, where: str) -> list[str]:
    if names is None:
        return [str(i) for i in range(needed)]
    if not isinstance(names, np.ndarray) or names.dtype.kind != "U" or names.ndim != 1:
        raise HpstudyError(f"{where}: class_names must be a 1-D array of strings")
    if len(names) < needed:
        raise HpstudyError(f"{where}: a label is {needed - 1}, but class_names names "
                           f"{len(names)} classes")  # fmt: skip
    if len(names) > MAX_CLASSES or any(len(str(s)) > MAX_NAME for s in names):
        raise HpstudyError(f"{where}: class_names: too many, or a name over {MAX_NAME} characters")
    return [str(s) for s in names]


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


__all__ = ["load_user_dataset", "read_folder", "read_npz", "to_data"]
