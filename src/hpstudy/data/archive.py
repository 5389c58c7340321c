"""Where CIFAR-100 (or CIFAR-10) lives and how it becomes arrays: find, download, verify, check.

The two datasets differ only in their `Layout` (file names, md5s, label keys);
everything else is one code path. The official "python version" archives hold
Python 2 pickles; `hpstudy.data.unpickle` opens them without letting them run code,
and this module checks what they hold (uint8 images, integer labels, names) before
any of it becomes a tensor.
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

from hpstudy.constants import DATASET_CLASSES, DATASET_SUPERCLASSES, IMAGE_SHAPE
from hpstudy.data.unpickle import read_pickle
from hpstudy.errors import HpstudyError

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
ARCHIVE_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
FILE_MD5 = {"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc"}

FOLDER = "cifar-100-python"
ARCHIVE = "cifar-100-python.tar.gz"
TIMEOUT_S = 30.0
CHUNK = 1 << 20
# what extraction will write at most: the official archive unpacks to about 180 MB in 5 members
MAX_EXTRACT_BYTES = 1 << 30
MAX_MEMBERS = 100
MAX_HEADER_BYTES = 1 << 20  # a long name or pax header, which tarfile reads into memory
MAX_NAME = 200  # characters in a class name (the official ones have at most 30)
_ROW = math.prod(IMAGE_SHAPE)  # 3072 bytes: one image's R, G and B planes


@dataclass(frozen=True)
class Layout:
    """One dataset's official archive: where it comes from, what it holds, under which keys."""

    name: str  # the RunConfig's `dataset`
    title: str
    url: str
    url_env: str  # an environment variable that replaces the official address (tests, mirrors)
    archive: str
    archive_md5: str
    folder: str
    train_files: tuple[str, ...]  # concatenated in this order
    test_file: str
    meta_file: str
    file_md5: dict[str, str]
    label_key: str
    names_key: str
    coarse_key: str | None  # no superclasses: None
    coarse_names_key: str | None

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train_files, self.test_file, self.meta_file)

    @property
    def num_classes(self) -> int:
        return DATASET_CLASSES[self.name]

    @property
    def num_superclasses(self) -> int:
        return DATASET_SUPERCLASSES[self.name]


CIFAR100 = Layout(
    name="cifar100",
    title="CIFAR-100",
    url=OFFICIAL_URL,
    url_env="HPSTUDY_CIFAR100_URL",
    archive=ARCHIVE,
    archive_md5=ARCHIVE_MD5,
    folder=FOLDER,
    train_files=("train",),
    test_file="test",
    meta_file="meta",
    file_md5=FILE_MD5,
    label_key="fine_labels",
    names_key="fine_label_names",
    coarse_key="coarse_labels",
    coarse_names_key="coarse_label_names",
)
CIFAR10 = Layout(
    name="cifar10",
    title="CIFAR-10",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    url_env="HPSTUDY_CIFAR10_URL",
    archive="cifar-10-python.tar.gz",
    archive_md5="c58f30108f718f92721af3b95e74349a",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_file="test_batch",
    meta_file="batches.meta",
    file_md5={
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    },
    label_key="labels",
    names_key="label_names",
    coarse_key=None,
    coarse_names_key=None,
)
LAYOUTS = {layout.name: layout for layout in (CIFAR100, CIFAR10)}


def layout_of(dataset: str) -> Layout:
    if dataset not in LAYOUTS:
        raise HpstudyError(f"dataset: unknown dataset {dataset!r} (use {', '.join(LAYOUTS)})")
    return LAYOUTS[dataset]


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W), contiguous, CPU: (N, *IMAGE_SHAPE) for CIFAR
    fine: torch.Tensor  # int64 (N,): the class labels (CIFAR-10's `labels`)
    coarse: torch.Tensor | None  # int64 (N,) superclasses; None where the dataset has none


@dataclass(frozen=True)
class Cifar100:
    """A loaded dataset: CIFAR-100, or CIFAR-10 (`name`), whose coarse parts are empty."""

    train: Split
    test: Split
    fine_names: list[str]
    coarse_names: list[str]
    name: str = "cifar100"

    @property
    def num_classes(self) -> int:
        return len(self.fine_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image: (3, 32, 32) for CIFAR."""
        c, h, w = self.train.images.shape[1:]
        return int(c), int(h), int(w)


CifarData = Cifar100  # the name that says it may hold either dataset


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


def where_to_point(layout: Layout | None = None, no_verify: bool = True) -> str:
    """Every way to tell hpstudy where the data is, for errors about missing or wrong data;
    `no_verify` False where the error has named --no-verify already."""
    folder = FOLDER if layout is None else layout.folder
    try:
        cache: object = default_cache()
    except HpstudyError:
        cache = "~/.cache/hpstudy/data"
    return (
        f"point at a folder holding {folder}/ with --root DIR or $HPSTUDY_DATA, or put it in "
        f"the default folder {cache}"
        + ("; a copy built by hand in the official layout also needs --no-verify" if no_verify
           else "")
    )


def resolve_root(root: str | Path | None) -> Path:
    """The data root: the folder that holds cifar-100-python/ (or cifar-10-batches-py/). A
    root that IS such a folder, complete, means its parent (--root .../cifar-100-python)."""
    path = default_root() if root is None else _expand(root, "data root")
    for layout in LAYOUTS.values():
        if path.name == layout.folder and not _complete(path / layout.folder, layout) and (
            _complete(path, layout)
        ):
            return path.parent
    return path


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a folder on the way that cannot be searched: not usable either
        return False


def _complete(folder: Path, layout: Layout = CIFAR100) -> bool:
    return all(_is_file(folder / name) for name in layout.files)


def _check_places(root: Path, layout: Layout) -> None:
    """The root, the dataset folder and its files are what they must be, or say which is not."""
    folder = root / layout.folder
    for path, want in (
        (root, "folder"),
        (folder, "folder"),
        *((folder / n, "file") for n in layout.files),
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


def download(
    root: str | Path | None = None, verify: bool = True, dataset: str = "cifar100"
) -> Path:
    """Make sure ROOT/cifar-100-python/{train,test,meta} (or CIFAR-10's files) exist; fetch the
    archive if not."""
    layout = layout_of(dataset)
    root = resolve_root(root)
    folder = root / layout.folder
    if _complete(folder, layout):
        return folder
    _check_places(root, layout)
    made = _missing_folders(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HpstudyError(f"cannot create data folder {root}: {e.strerror or e}") from None
    try:
        _fill(root, verify, layout)
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


def _fill(root: Path, verify: bool, layout: Layout) -> None:
    """Fetch (unless already there) and extract the archive into an existing root."""
    archive = root / layout.archive
    fetched = not _is_file(archive)
    if fetched:
        _fetch(os.environ.get(layout.url_env) or layout.url, root, archive, verify, layout)
    elif verify and (got := _md5(archive)) != layout.archive_md5:
        # a user-placed (or earlier) archive is reused rather than fetched again
        raise HpstudyError(
            f"{archive}: md5 {got} != expected {layout.archive_md5} "
            f"(delete it to download again, or use --no-verify for a copy built by hand); "
            f"{where_to_point(layout, no_verify=False)}"
        )
    try:
        _extract(archive, root, layout)
    except HpstudyError:
        if fetched:  # a bad download must not be picked up as "already there" next time
            archive.unlink(missing_ok=True)
        raise


def _fetch(url: str, root: Path, archive: Path, verify: bool, layout: Layout) -> None:
    """Download into a temp file in ROOT; only a complete, verified file gets the real name."""
    try:
        fd, tmp_name = tempfile.mkstemp(dir=root, prefix=f".{layout.folder}-", suffix=".part")
    except OSError as e:
        raise HpstudyError(f"cannot write in data folder {root}: {e.strerror or e}") from None
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            received = 0
            with _progress() as progress:
                task = progress.add_task(layout.title, total=total)
                while block := resp.read(CHUNK):
                    out.write(block)
                    digest.update(block)
                    received += len(block)
                    progress.update(task, advance=len(block))
        if total is not None and received != total:
            raise HpstudyError(f"download from {url} stopped at {received} of {total} bytes")
        if verify and (got := digest.hexdigest()) != layout.archive_md5:
            raise HpstudyError(
                f"{url}: md5 {got} != expected {layout.archive_md5}; {where_to_point(layout)}"
            )
        tmp.chmod(0o644)  # mkstemp's 0600 would lock others out of a shared data folder
        os.replace(tmp, archive)
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
        # URLError wraps the useful part ("Connection refused") in .reason; HTTPError says it all
        plain_url_error = type(e) is urllib.error.URLError
        reason = e.reason if plain_url_error else e
        raise HpstudyError(
            f"cannot download {layout.title} from {url}: {_one_line(reason)}; "
            f"no {layout.folder}/ under {root} to fall back on: {where_to_point(layout)}"
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


def _extract(archive: Path, root: Path, layout: Layout) -> None:
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
        unpacked = scratch / layout.folder
        if not _complete(unpacked, layout):
            raise HpstudyError(
                f"{archive}: has no {layout.folder}/{{{','.join(layout.files)}}}"
            )
        try:
            (root / layout.folder).mkdir(exist_ok=True)
            for name in layout.files:
                os.replace(unpacked / name, root / layout.folder / name)
        except OSError as e:
            raise HpstudyError(
                f"cannot put the dataset in {root / layout.folder}: {e.strerror or e}"
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
                        "(the official ones have 5 and 9)"
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


def _read_dict(path: Path, title: str = "CIFAR-100") -> dict:
    obj = read_pickle(path)
    if not isinstance(obj, dict):
        raise HpstudyError(f"{path}: not a {title} pickle (holds {type(obj).__name__}, not dict)")
    return obj


def _field(path: Path, obj: dict, name: str, title: str = "CIFAR-100"):
    """obj[b'name'] as the official (Python 2) files have it, or obj['name'] from Python 3."""
    for key in (name.encode(), name):
        if key in obj:
            return obj[key]
    raise HpstudyError(f"{path}: not a {title} pickle (no {name!r} key)")


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


def _labels(
    path: Path, obj: dict, name: str, n: int, num_classes: int, title: str = "CIFAR-100"
) -> torch.Tensor:
    """Integer labels, one per image, in 0..num_classes-1: refused, never rounded, otherwise."""
    labels = _field(path, obj, name, title)
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


def _read_split(path: Path, layout: Layout = CIFAR100) -> Split:
    title = layout.title
    obj = _read_dict(path, title)
    data = _field(path, obj, "data", title)
    expected = f"a uint8 (N, {_ROW}) array"
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2):
        raise HpstudyError(f"{path}: 'data' is not {expected} (it is {_shown(data)})")
    if data.shape[1] != _ROW:
        raise HpstudyError(f"{path}: 'data' has shape {data.shape}, expected (N, {_ROW})")
    n = data.shape[0]
    if n == 0:
        raise HpstudyError(f"{path}: 'data' holds no images (shape {data.shape})")
    fine = _labels(path, obj, layout.label_key, n, layout.num_classes, title)
    coarse = None
    if layout.coarse_key is not None:
        coarse = _labels(path, obj, layout.coarse_key, n, layout.num_superclasses, title)
    if not (data.flags.c_contiguous and data.flags.writeable):
        data = np.array(data, order="C")  # e.g. Fortran order, or read-only protocol-5 bytes
    # each row is the R plane, then G, then B, each 32x32 row-major: a view, no copy
    images = torch.from_numpy(data).view(n, *IMAGE_SHAPE)
    return Split(images=images, fine=fine, coarse=coarse)


def _read_names(
    path: Path, obj: dict, name: str, count: int, title: str = "CIFAR-100"
) -> list[str]:
    names = _field(path, obj, name, title)
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


def _concat(splits: list[Split]) -> Split:
    """The training batches as one split (CIFAR-10's five files), in file order."""
    if len(splits) == 1:
        return splits[0]
    coarse = [s.coarse for s in splits]
    return Split(
        images=torch.cat([s.images for s in splits]),
        fine=torch.cat([s.fine for s in splits]),
        coarse=None if any(c is None for c in coarse) else torch.cat(coarse),  # type: ignore[misc]
    )


def load_dataset(
    dataset: str = "cifar100", root: str | Path | None = None, verify: bool = True
) -> Cifar100:
    """Load `dataset` (cifar100 or cifar10) from ROOT/<its folder>, downloading it if missing."""
    layout = layout_of(dataset)
    folder = resolve_root(root) / layout.folder
    if not _complete(folder, layout):
        download(root, verify, dataset)
    if verify:
        for name, want in layout.file_md5.items():
            if (got := _md5(folder / name)) != want:
                raise HpstudyError(
                    f"{folder / name}: md5 {got} != expected {want} "
                    "(use --no-verify for a dataset you built yourself); "
                    f"{where_to_point(layout, no_verify=False)}"
                )
    meta_path = folder / layout.meta_file
    meta = _read_dict(meta_path, layout.title)
    title = layout.title
    coarse_names = []
    if layout.coarse_names_key is not None:
        coarse_names = _read_names(
            meta_path, meta, layout.coarse_names_key, layout.num_superclasses, title
        )
    return Cifar100(
        train=_concat([_read_split(folder / name, layout) for name in layout.train_files]),
        test=_read_split(folder / layout.test_file, layout),
        fine_names=_read_names(meta_path, meta, layout.names_key, layout.num_classes, title),
        coarse_names=coarse_names,
        name=layout.name,
    )


def load_cifar100(root: str | Path | None = None, verify: bool = True) -> Cifar100:
    """Load train/test/meta from ROOT/cifar-100-python, downloading it if missing."""
    return load_dataset("cifar100", root, verify)


def load_cifar10(root: str | Path | None = None, verify: bool = True) -> Cifar100:
    """Load CIFAR-10 from ROOT/cifar-10-batches-py, downloading it if missing."""
    return load_dataset("cifar10", root, verify)
