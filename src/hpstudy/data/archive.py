"""Where CIFAR-100 lives and how it becomes arrays: find, download, verify, extract, check.

The official "python version" archive holds Python 2 pickles; `hpstudy.data.unpickle`
opens them without letting them run code, and this module checks what they hold
(uint8 images, integer labels, names) before any of it becomes a tensor.
Everything a user can get wrong (a missing, truncated, tampered, oversized or
foreign file or archive, a root that is not a folder, no network) becomes a
one-line HpstudyError.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import math
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from hpstudy.constants import IMAGE_SHAPE, NUM_CLASSES, NUM_SUPERCLASSES
from hpstudy.data.unpickle import read_pickle
from hpstudy.errors import HpstudyError

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
ARCHIVE_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
FILE_MD5 = {"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc"}

FOLDER = "cifar-100-python"
ARCHIVE = "cifar-100-python.tar.gz"
FILES = ("train", "test", "meta")
TIMEOUT_S = 30.0
CHUNK = 1 << 20
# what extraction will write at most: the official archive unpacks to about 180 MB in 5 members
MAX_EXTRACT_BYTES = 1 << 30
MAX_MEMBERS = 100
MAX_HEADER_BYTES = 1 << 20  # a long name or pax header, which tarfile reads into memory
MAX_NAME = 200  # characters in a class name (the official ones have at most 30)
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


def _one_line(error: object) -> str:
    return " ".join(str(error).split())[:300]


# --- where the data lives -------------------------------------------------------------------


def _expand(path: str | Path, what: str) -> Path:
    """PATH with ~ expanded, made absolute: one line if ~user is unknown or links loop."""
    try:
        return Path(path).expanduser().resolve()
    except RuntimeError as e:  # Path.expanduser: unknown user or no home; resolve: a link loop
        text = str(path)
        if text.startswith("~") and "home directory" in str(e):
            user = text.split("/", 1)[0]
            raise HpstudyError(
                f"{what} {text!r}: cannot expand {user!r} (no such user, or no home folder)"
            ) from None
        raise HpstudyError(f"{what} {text!r}: {_one_line(e)}") from None
    except (OSError, ValueError) as e:
        raise HpstudyError(f"{what} {str(path)!r}: {_one_line(e)}") from None


def default_root() -> Path:
    """$HPSTUDY_DATA, else the per-user cache, so every command finds one shared copy."""
    if env := os.environ.get("HPSTUDY_DATA"):
        return _expand(env, "HPSTUDY_DATA")
    return default_cache()


def default_cache() -> Path:
    """The per-user cache folder of the data (without $HPSTUDY_DATA)."""
    if cache := os.environ.get("XDG_CACHE_HOME"):
        return _expand(Path(cache) / "hpstudy" / "data", "XDG_CACHE_HOME")
    try:
        home = Path.home()
    except (RuntimeError, KeyError):
        raise HpstudyError(
            "no home folder for the data cache: set HPSTUDY_DATA or pass --root"
        ) from None
    return _expand(home / ".cache" / "hpstudy" / "data", "data cache")


def where_to_point() -> str:
    """Every way to tell hpstudy where the data is, for errors about missing or wrong data."""
    try:
        cache: object = default_cache()
    except HpstudyError:
        cache = "~/.cache/hpstudy/data"
    return (
        f"point at a folder holding {FOLDER}/ with --root DIR or $HPSTUDY_DATA, or put it in "
        f"the default folder {cache}; a copy built by hand in the official layout also needs "
        "--no-verify"
    )


def resolve_root(root: str | Path | None) -> Path:
    return default_root() if root is None else _expand(root, "data root")


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a folder on the way that cannot be searched: not usable either
        return False


def _complete(folder: Path) -> bool:
    return all(_is_file(folder / name) for name in FILES)


def _check_places(root: Path) -> None:
    """The root, the dataset folder and its files are what they must be, or say which is not."""
    folder = root / FOLDER
    for path, want in (
        (root, "folder"),
        (folder, "folder"),
        *((folder / n, "file") for n in FILES),
    ):
        try:
            if not path.exists():
                continue
            ok = path.is_dir() if want == "folder" else path.is_file()
        except OSError as e:
            raise HpstudyError(f"{path}: cannot read: {e.strerror or e}") from None
        if not ok:
            raise HpstudyError(
                f"{path}: is not a {want}" + (" (the data root)" if path == root else "")
            )


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
    _check_places(root)
    made = _missing_folders(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HpstudyError(f"cannot create data folder {root}: {e.strerror or e}") from None
    try:
        _fill(root, verify)
    except BaseException:
        # a mistyped --root must not leave folders behind when nothing could be fetched
        for path in made:
            with contextlib.suppress(OSError):
                path.rmdir()  # only if empty: never what a user or a download put there
        raise
    return folder


def _missing_folders(root: Path) -> list[Path]:
    """The folders `root.mkdir(parents=True)` would create, deepest first."""
    missing = []
    for path in (root, *root.parents):
        try:
            if path.exists():
                break
        except OSError:  # a folder on the way we may not search: not ours to remove
            break
        missing.append(path)
    return missing


def _fill(root: Path, verify: bool) -> None:
    """Fetch (unless already there) and extract the archive into an existing root."""
    archive = root / ARCHIVE
    fetched = not _is_file(archive)
    if fetched:
        _fetch(os.environ.get("HPSTUDY_CIFAR100_URL") or OFFICIAL_URL, root, archive, verify)
    elif verify and (got := _md5(archive)) != ARCHIVE_MD5:
        # a user-placed (or earlier) archive is reused rather than fetched again
        raise HpstudyError(
            f"{archive}: md5 {got} != expected {ARCHIVE_MD5} "
            f"(delete it to download again, or use --no-verify for a copy built by hand); "
            f"{where_to_point()}"
        )
    try:
        _extract(archive, root)
    except HpstudyError:
        if fetched:  # a bad download must not be picked up as "already there" next time
            archive.unlink(missing_ok=True)
        raise


def _fetch(url: str, root: Path, archive: Path, verify: bool) -> None:
    """Download into a temp file in ROOT; only a complete, verified file gets the real name."""
    try:
        fd, tmp_name = tempfile.mkstemp(dir=root, prefix=".cifar-100-", suffix=".part")
    except OSError as e:
        raise HpstudyError(f"cannot write in data folder {root}: {e.strerror or e}") from None
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
            raise HpstudyError(
                f"{url}: md5 {got} != expected {ARCHIVE_MD5}; {where_to_point()}"
            )
        tmp.chmod(0o644)  # mkstemp's 0600 would lock others out of a shared data folder
        os.replace(tmp, archive)
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
        # URLError wraps the useful part ("Connection refused") in .reason; HTTPError says it all
        plain_url_error = type(e) is urllib.error.URLError
        reason = e.reason if plain_url_error else e
        raise HpstudyError(
            f"cannot download CIFAR-100 from {url}: {_one_line(reason)}; "
            f"no {FOLDER}/ under {root} to fall back on: {where_to_point()}"
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


class _Refused(Exception):
    """A reason to refuse the archive; _extract puts the archive's name in front of it."""


_HEADER_TYPES = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)


class _CappedTarInfo(tarfile.TarInfo):
    """A tar header whose claimed size is checked before tarfile reads or skips that many bytes."""

    def _proc_member(self, tar):  # tarfile's hook: runs before it reads the member's data
        limit = MAX_HEADER_BYTES if self.type in _HEADER_TYPES else MAX_EXTRACT_BYTES
        if not 0 <= self.size <= limit:
            raise _Refused(
                f"refusing member {self.name!r}: it claims {self.size:,} bytes, more than "
                f"the {limit:,} allowed (the dataset unpacks to about 180 MB)"
            )
        return super()._proc_member(tar)


def _extract(archive: Path, root: Path) -> None:
    """Unpack into a scratch folder, then move the three files into place one by one.

    Each move is atomic, so an interrupted extraction never leaves a half-written
    file under the name a later load would trust. Sizes and member counts are
    checked from the headers before anything is written.
    """
    try:
        scratch = Path(tempfile.mkdtemp(dir=root, prefix=".extract-"))
    except OSError as e:
        raise HpstudyError(f"cannot write in data folder {root}: {e.strerror or e}") from None
    try:
        _unpack(archive, scratch)
        unpacked = scratch / FOLDER
        if not _complete(unpacked):
            raise HpstudyError(f"{archive}: has no {FOLDER}/{{train,test,meta}}")
        try:
            (root / FOLDER).mkdir(exist_ok=True)
            for name in FILES:
                os.replace(unpacked / name, root / FOLDER / name)
        except OSError as e:
            raise HpstudyError(
                f"cannot put the dataset in {root / FOLDER}: {e.strerror or e}"
            ) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _unpack(archive: Path, scratch: Path) -> None:
    written = 0
    try:
        with tarfile.open(archive, "r:*", tarinfo=_CappedTarInfo) as tar:
            for count, member in enumerate(tar, 1):
                if count > MAX_MEMBERS:
                    raise _Refused(
                        f"refusing an archive of more than {MAX_MEMBERS} members "
                        "(the official one has 5)"
                    )
                _check_member(scratch, member)
                if member.isfile():
                    written += member.size
                    if written > MAX_EXTRACT_BYTES:
                        raise _Refused(
                            f"refusing member {member.name!r}: it brings what the archive "
                            f"unpacks to {written:,} bytes, more than the {MAX_EXTRACT_BYTES:,} "
                            "allowed (the dataset unpacks to about 180 MB)"
                        )
                if hasattr(tarfile, "data_filter"):
                    tar.extract(member, scratch, filter="data")
                else:  # pragma: no cover - Python without PEP 706 filters
                    tar.extract(member, scratch)
    except _Refused as e:
        raise HpstudyError(f"{archive}: {e}") from None
    except OSError as e:
        if e.errno is not None:  # writing failed: disk full, no rights (a bad gzip has no errno)
            raise HpstudyError(
                f"{archive}: cannot extract into {scratch.parent}: {e.strerror or e}"
            ) from None
        raise HpstudyError(
            f"{archive}: cannot extract, not a complete tar.gz ({_one_line(e)})"
        ) from None
    except Exception as e:  # tarfile, gzip, bz2, lzma and zlib errors on a damaged archive
        raise HpstudyError(
            f"{archive}: cannot extract, not a complete tar.gz ({type(e).__name__}: {_one_line(e)})"
        ) from None


def _check_member(dest: Path, member: tarfile.TarInfo) -> None:
    if not (member.isfile() or member.isdir()) or member.issparse():
        raise _Refused(f"refusing member {member.name!r} (a link, device or sparse file)")
    target = (dest / member.name).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise _Refused(f"refusing member {member.name!r} (outside the data folder)")


# --- from pickles to arrays ------------------------------------------------------------------


def _read_dict(path: Path) -> dict:
    obj = read_pickle(path)
    if not isinstance(obj, dict):
        raise HpstudyError(f"{path}: not a CIFAR-100 pickle (holds {type(obj).__name__}, not dict)")
    return obj


def _field(path: Path, obj: dict, name: str):
    """obj[b'name'] as the official (Python 2) files have it, or obj['name'] from Python 3."""
    for key in (name.encode(), name):
        if key in obj:
            return obj[key]
    raise HpstudyError(f"{path}: not a CIFAR-100 pickle (no {name!r} key)")


def _shown(value: object) -> str:
    """A short rendering of a value a file supplied: never the whole of a big one."""
    if value is None or isinstance(value, (bool, float)):
        return repr(value)
    if type(value) is int:
        return repr(value) if abs(value) < 10**12 else "a huge int"
    if isinstance(value, (str, bytes)):
        return repr(value[:20]) + ("..." if len(value) > 20 else "")
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    return f"a {type(value).__name__}"


def _labels(path: Path, obj: dict, name: str, n: int, num_classes: int) -> torch.Tensor:
    """Integer labels, one per image, in 0..num_classes-1: refused, never rounded, otherwise."""
    labels = _field(path, obj, name)
    if isinstance(labels, np.ndarray):
        # the unpickler admits only uint8/int32/int64 arrays; anything else is refused there
        if labels.dtype.kind not in "iu":
            raise HpstudyError(
                f"{path}: {name!r} is not a list of integers (it is {_shown(labels)})"
            )
        if labels.shape != (n,):
            raise HpstudyError(f"{path}: {name!r} has shape {labels.shape}, expected ({n},)")
        values = labels.astype(np.int64)
        low, high = (int(values.min()), int(values.max())) if n else (0, 0)
    elif isinstance(labels, list):
        if len(labels) != n:  # before looking at any item: a list can be long and shared
            raise HpstudyError(f"{path}: {name!r} has shape ({len(labels)},), expected ({n},)")
        # a Python int, nothing else: 1.5 or True are not labels (numpy ints arrive as ints)
        bad = next((i for i, v in enumerate(labels) if type(v) is not int), None)
        if bad is not None:
            raise HpstudyError(
                f"{path}: {name!r} is not a list of integers (item {bad} is {_shown(labels[bad])})"
            )
        low, high = (min(labels), max(labels)) if n else (0, 0)
        values = None
    else:
        raise HpstudyError(f"{path}: {name!r} is not a list of integers (it is {_shown(labels)})")
    if low < 0 or high >= num_classes:
        shown_low = low if abs(low) < 10**12 else "-huge"
        shown_high = high if abs(high) < 10**12 else "huge"
        raise HpstudyError(
            f"{path}: {name!r} has values in {shown_low}..{shown_high}, "
            f"expected 0..{num_classes - 1}"
        )
    if values is None:
        values = np.array(labels, dtype=np.int64)
    return torch.from_numpy(values)


def _read_split(path: Path) -> Split:
    obj = _read_dict(path)
    data = _field(path, obj, "data")
    expected = f"a uint8 (N, {_ROW}) array"
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2):
        raise HpstudyError(f"{path}: 'data' is not {expected} (it is {_shown(data)})")
    if data.shape[1] != _ROW:
        raise HpstudyError(f"{path}: 'data' has shape {data.shape}, expected (N, {_ROW})")
    n = data.shape[0]
    if n == 0:
        raise HpstudyError(f"{path}: 'data' holds no images (shape {data.shape})")
    fine = _labels(path, obj, "fine_labels", n, NUM_CLASSES)
    coarse = _labels(path, obj, "coarse_labels", n, NUM_SUPERCLASSES)
    if not (data.flags.c_contiguous and data.flags.writeable):
        data = np.array(data, order="C")  # e.g. Fortran order, or read-only protocol-5 bytes
    # each row is the R plane, then G, then B, each 32x32 row-major: a view, no copy
    images = torch.from_numpy(data).view(n, *IMAGE_SHAPE)
    return Split(images=images, fine=fine, coarse=coarse)


def _read_names(path: Path, obj: dict, name: str, count: int) -> list[str]:
    names = _field(path, obj, name)
    what = f"{path}: {name!r} is not a list of {count} names"
    if not isinstance(names, list):
        raise HpstudyError(f"{what} (it is {_shown(names)})")
    if len(names) != count:
        raise HpstudyError(f"{what} (it has {len(names)})")
    for i, s in enumerate(names):
        if not isinstance(s, (bytes, str)):
            raise HpstudyError(f"{what} (item {i} is {_shown(s)}, not a string)")
        if len(s) > MAX_NAME:  # before decoding: one long name shared 100 times is cheap to write
            raise HpstudyError(f"{what} (item {i} is {len(s):,} long, more than {MAX_NAME})")
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
                    "(use --no-verify for a dataset you built yourself); "
                    f"{where_to_point()}"
                )
    meta = _read_dict(folder / "meta")
    return Cifar100(
        train=_read_split(folder / "train"),
        test=_read_split(folder / "test"),
        fine_names=_read_names(folder / "meta", meta, "fine_label_names", NUM_CLASSES),
        coarse_names=_read_names(folder / "meta", meta, "coarse_label_names", NUM_SUPERCLASSES),
    )
