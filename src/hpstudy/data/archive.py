"""Where CIFAR-100 lives and how it becomes arrays: download, verify, extract, safely unpickle.

The official "python version" archive holds Python 2 pickles. Pickles can run
arbitrary code, so they are read through an unpickler that only knows numpy's
array reconstruction; everything a user can get wrong (missing, truncated,
tampered or foreign files, no network) becomes one-line HpstudyError.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib
import math
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from hpstudy.constants import IMAGE_SHAPE, NUM_CLASSES, NUM_SUPERCLASSES
from hpstudy.errors import HpstudyError

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
ARCHIVE_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
FILE_MD5 = {"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc"}

FOLDER = "cifar-100-python"
ARCHIVE = "cifar-100-python.tar.gz"
FILES = ("train", "test", "meta")
TIMEOUT_S = 30.0
CHUNK = 1 << 20
_ROW = math.prod(IMAGE_SHAPE)  # 3072 bytes: one image's R, G and B planes


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8 (N, *IMAGE_SHAPE), contiguous, CPU
    fine: torch.Tensor  # int64 (N,)
    coarse: torch.Tensor  # int64 (N,)


@dataclass(frozen=True)
class Cifar100:
    train: Split
    test: Split
    fine_names: list[str]
    coarse_names: list[str]


# --- where the data lives -------------------------------------------------------------------


def default_root() -> Path:
    """$HPSTUDY_DATA, else the per-user cache, so every command finds one shared copy."""
    if env := os.environ.get("HPSTUDY_DATA"):
        return Path(env).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return (Path(cache) / "hpstudy" / "data").expanduser().resolve()


def resolve_root(root: str | Path | None) -> Path:
    return default_root() if root is None else Path(root).expanduser().resolve()


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in FILES)


def _md5(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "md5").hexdigest()
    except OSError as e:
        raise HpstudyError(f"{path}: cannot read: {e.strerror or e}") from None


# --- download and extract -------------------------------------------------------------------


def download(root: str | Path | None = None, verify: bool = True) -> Path:
    """Make sure ROOT/cifar-100-python/{train,test,meta} exist; fetch the archive if not."""
    root = resolve_root(root)
    folder = root / FOLDER
    if _complete(folder):
        return folder
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HpstudyError(f"cannot create data folder {root}: {e.strerror or e}") from None

    archive = root / ARCHIVE
    fetched = not archive.is_file()
    if fetched:
        _fetch(os.environ.get("HPSTUDY_CIFAR100_URL") or OFFICIAL_URL, root, archive, verify)
    elif verify and (got := _md5(archive)) != ARCHIVE_MD5:
        # a user-placed (or earlier) archive is reused rather than fetched again
        raise HpstudyError(
            f"{archive}: md5 {got} != expected {ARCHIVE_MD5} "
            "(delete it to download again, or use --no-verify)"
        )
    try:
        _extract(archive, root)
    except HpstudyError:
        if fetched:  # a bad download must not be picked up as "already there" next time
            archive.unlink(missing_ok=True)
        raise
    return folder


def _fetch(url: str, root: Path, archive: Path, verify: bool) -> None:
    """Download into a temp file in ROOT; only a complete, verified file gets the real name."""
    fd, tmp_name = tempfile.mkstemp(dir=root, prefix=".cifar-100-", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            received = 0
            with _progress() as progress:
                task = progress.add_task("CIFAR-100", total=total)
                while block := resp.read(CHUNK):
                    out.write(block)
                    digest.update(block)
                    received += len(block)
                    progress.update(task, advance=len(block))
        if total is not None and received != total:
            raise HpstudyError(f"download from {url} stopped at {received} of {total} bytes")
        if verify and (got := digest.hexdigest()) != ARCHIVE_MD5:
            raise HpstudyError(f"{url}: md5 {got} != expected {ARCHIVE_MD5}")
        tmp.chmod(0o644)  # mkstemp's 0600 would lock others out of a shared data folder
        os.replace(tmp, archive)
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
        # URLError wraps the useful part ("Connection refused") in .reason; HTTPError says it all
        plain_url_error = type(e) is urllib.error.URLError
        reason = e.reason if plain_url_error else e
        raise HpstudyError(
            f"cannot download CIFAR-100 from {url}: {reason}; "
            f"put {FOLDER}/ under {root} or check the network"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


def _progress() -> Progress:
    console = Console(stderr=True)
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        # a bar drawn into a log file is noise; CI logs stay one line per event
        disable=not console.is_terminal,
    )


def _extract(archive: Path, root: Path) -> None:
    """Unpack into a scratch folder, then move the three files into place one by one.

    Each move is atomic, so an interrupted extraction never leaves a half-written
    file under the name a later load would trust.
    """
    scratch = Path(tempfile.mkdtemp(dir=root, prefix=".extract-"))
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                _check_member(archive, scratch, member)
                if hasattr(tarfile, "data_filter"):
                    tar.extract(member, scratch, filter="data")
                else:  # pragma: no cover - Python without PEP 706 filters
                    tar.extract(member, scratch)
        unpacked = scratch / FOLDER
        if not _complete(unpacked):
            raise HpstudyError(f"{archive}: has no {FOLDER}/{{train,test,meta}}")
        (root / FOLDER).mkdir(exist_ok=True)
        for name in FILES:
            os.replace(unpacked / name, root / FOLDER / name)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise HpstudyError(f"{archive}: cannot extract, not a complete tar.gz ({e})") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _check_member(archive: Path, dest: Path, member: tarfile.TarInfo) -> None:
    if not (member.isfile() or member.isdir()):
        raise HpstudyError(
            f"{archive}: refusing member {member.name!r} (a link or device, not a file)"
        )
    target = (dest / member.name).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise HpstudyError(f"{archive}: refusing member {member.name!r} (outside the data folder)")


# --- safe unpickling ------------------------------------------------------------------------


def _numpy_multiarray():
    # numpy 2 moved numpy.core to numpy._core; the official files name the old module
    try:
        return importlib.import_module("numpy._core.multiarray")
    except ImportError:  # pragma: no cover - numpy 1.x
        return importlib.import_module("numpy.core.multiarray")


_MULTIARRAY = _numpy_multiarray()
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _MULTIARRAY._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _MULTIARRAY._reconstruct,
    ("numpy.core.multiarray", "scalar"): _MULTIARRAY.scalar,
    ("numpy._core.multiarray", "scalar"): _MULTIARRAY.scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise HpstudyError(
                f"{self.path}: refusing to unpickle {module}.{name} "
                "(pickles can run code; this is not a CIFAR-100 file)"
            ) from None


def _read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _ArrayOnlyUnpickler(f, path).load()
    except HpstudyError:
        raise
    except OSError as e:
        raise HpstudyError(f"{path}: cannot read: {e.strerror or e}") from None
    except Exception as e:
        # garbage bytes can fail in many ways (EOF, bad opcode, bad memo, bad reduce args)
        raise HpstudyError(
            f"{path}: truncated or not a CIFAR-100 pickle ({type(e).__name__}: {e})"
        ) from None
    if not isinstance(obj, dict):
        raise HpstudyError(f"{path}: not a CIFAR-100 pickle (holds {type(obj).__name__}, not dict)")
    return obj


def _field(path: Path, obj: dict, key: bytes):
    if key not in obj:
        raise HpstudyError(f"{path}: not a CIFAR-100 pickle (no {key.decode()!r} key)")
    return obj[key]


def _labels(path: Path, obj: dict, key: bytes, n: int, num_classes: int) -> torch.Tensor:
    try:
        labels = np.asarray(_field(path, obj, key), dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise HpstudyError(f"{path}: {key.decode()!r} is not a list of integers") from None
    if labels.shape != (n,):
        raise HpstudyError(f"{path}: {key.decode()!r} has shape {labels.shape}, expected ({n},)")
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise HpstudyError(
            f"{path}: {key.decode()!r} has values in {labels.min()}..{labels.max()}, "
            f"expected 0..{num_classes - 1}"
        )
    return torch.from_numpy(labels)


def _read_split(path: Path) -> Split:
    obj = _read_pickle(path)
    data = _field(path, obj, b"data")
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2):
        raise HpstudyError(f"{path}: 'data' is not a uint8 (N, {_ROW}) array")
    if data.shape[1] != _ROW:
        raise HpstudyError(f"{path}: 'data' has shape {data.shape}, expected (N, {_ROW})")
    n = data.shape[0]
    fine = _labels(path, obj, b"fine_labels", n, NUM_CLASSES)
    coarse = _labels(path, obj, b"coarse_labels", n, NUM_SUPERCLASSES)
    # each row is the R plane, then G, then B, each 32x32 row-major: a view, no copy
    images = torch.from_numpy(np.ascontiguousarray(data)).view(n, *IMAGE_SHAPE)
    return Split(images=images, fine=fine, coarse=coarse)


def _read_names(path: Path, obj: dict, key: bytes, count: int) -> list[str]:
    names = _field(path, obj, key)
    if not (
        isinstance(names, list)
        and len(names) == count
        and all(isinstance(s, (bytes, str)) for s in names)
    ):
        raise HpstudyError(f"{path}: {key.decode()!r} is not a list of {count} names")
    return [s.decode("utf-8", "replace") if isinstance(s, bytes) else s for s in names]


def load_cifar100(root: str | Path | None = None, verify: bool = True) -> Cifar100:
    """Load train/test/meta from ROOT/cifar-100-python, downloading it if missing."""
    folder = resolve_root(root) / FOLDER
    if not _complete(folder):
        download(root, verify)
    if verify:
        for name, want in FILE_MD5.items():
            if (got := _md5(folder / name)) != want:
                raise HpstudyError(
                    f"{folder / name}: md5 {got} != expected {want} "
                    "(use --no-verify for a dataset you built yourself)"
                )
    meta = _read_pickle(folder / "meta")
    return Cifar100(
        train=_read_split(folder / "train"),
        test=_read_split(folder / "test"),
        fine_names=_read_names(folder / "meta", meta, b"fine_label_names", NUM_CLASSES),
        coarse_names=_read_names(folder / "meta", meta, b"coarse_label_names", NUM_SUPERCLASSES),
    )
