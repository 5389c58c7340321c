"""Writes small CIFAR-100 archives in the official "python version" layout.

Structure for structure like the real files: protocol-2 pickles written the way
Python 2 wrote them (keys and byte strings as py2 ``str``), ``data`` a uint8
numpy array (N, 3072) reconstructed through ``numpy.core.multiarray``.
Images are learnable: each class has its own colour, plus noise.
"""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np


class _Py2StrPickler(pickle._Pickler):  # type: ignore[name-defined]
    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def py2_pickle_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    _Py2StrPickler(buf, protocol=2).dump(obj)
    # numpy 2 names its module numpy._core; the official files say numpy.core
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def class_images(labels: np.ndarray, rng: np.random.Generator, noise: int = 40) -> np.ndarray:
    """uint8 (N, 3, 32, 32): a per-class colour (fixed palette) plus uniform noise."""
    palette = np.random.default_rng(1234).integers(30, 226, size=(100, 3))
    base = palette[labels][:, :, None, None]
    jitter = rng.integers(-noise, noise + 1, size=(len(labels), 3, 32, 32))
    return np.clip(base + jitter, 0, 255).astype(np.uint8)


def write_cifar100(
    root: Path,
    n_train: int = 500,
    n_test: int = 100,
    classes: int = 100,
    seed: int = 0,
    noise: int = 40,
) -> Path:
    """Write ROOT/cifar-100-python/{train,test,meta}; labels cycle over `classes` classes."""
    out = Path(root) / "cifar-100-python"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, n in (("train", n_train), ("test", n_test)):
        fine = rng.permutation(np.arange(n) % classes)
        data = class_images(fine, rng, noise).reshape(n, 3072)
        batch = {
            b"filenames": [b"synthetic_%s_%05d.png" % (name.encode(), i) for i in range(n)],
            b"batch_label": b"synthetic batch 1 of 1",
            b"fine_labels": [int(v) for v in fine],
            b"coarse_labels": [int(v) // 5 for v in fine],
            b"data": data,
        }
        (out / name).write_bytes(py2_pickle_bytes(batch))
    meta = {
        b"fine_label_names": [b"class_%02d" % i for i in range(100)],
        b"coarse_label_names": [b"super_%02d" % i for i in range(20)],
    }
    (out / "meta").write_bytes(py2_pickle_bytes(meta))
    return out


def write_archive(root: Path, tar_path: Path) -> Path:
    """Pack ROOT/cifar-100-python into a .tar.gz as the official archive is packed."""
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(Path(root) / "cifar-100-python", arcname="cifar-100-python")
    return tar_path


def write_cifar10(root: Path, per_batch: int = 60, n_test: int = 50, seed: int = 0) -> Path:
    """Write ROOT/cifar-10-batches-py/ as the official CIFAR-10 archive holds it: data_batch_1..5
    (`per_batch` images each), test_batch and batches.meta, keys `data` and `labels`."""
    out = Path(root) / "cifar-10-batches-py"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        n = n_test if name == "test_batch" else per_batch
        labels = rng.permutation(np.arange(n) % 10)
        batch = {
            b"batch_label": b"synthetic batch %d of 5" % (k + 1),
            b"labels": [int(v) for v in labels],
            b"data": class_images(labels, rng).reshape(n, 3072),
            b"filenames": [b"synthetic_%05d.png" % i for i in range(n)],
        }
        (out / name).write_bytes(py2_pickle_bytes(batch))
    meta = {
        b"num_cases_per_batch": per_batch,
        b"label_names": [b"label_%d" % i for i in range(10)],
        b"num_vis": 3072,
    }
    (out / "batches.meta").write_bytes(py2_pickle_bytes(meta))
    return out


def write_cifar10_archive(root: Path, tar_path: Path) -> Path:
    """Pack ROOT/cifar-10-batches-py into a .tar.gz as the official archive is packed."""
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(Path(root) / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return tar_path
