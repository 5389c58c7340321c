"""Where a run's model and data come from, by name, and the fingerprint its identity keeps.

A model is a built-in or registered name, an entry point of `hpstudy.models`, or a
"module:callable" reference; a dataset is cifar100, cifar10, "npz:PATH", "folder:PATH", a name
given to `register_dataset`, or an entry point of `hpstudy.datasets`. Naming a module imports
it (and so runs its code, as installing a package does); a name is never a file path to import.

A run that uses the user's code or files keeps, in its identity, a fingerprint of them: the
sha256 of the model's (or loader's) source file and, for an entry point, its distribution's
name and version; the sha256 of an .npz file; the sha256 of an image folder's listing and
sizes. A changed model or data file is then a new run, never a silent reuse of an old one.

A leaf (the standard library and hpstudy.plugins): `RunConfig` checks its names here without
importing torch for the built-in ones.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpstudy.errors import HpstudyError
from hpstudy.plugins import first_line, is_reference, load_entry_point, load_object

BUILTIN_DATASETS = ("cifar100", "cifar10")
FILE_KINDS = ("npz", "folder")  # "npz:PATH", "folder:PATH"
DATASET_GROUP = "hpstudy.datasets"
MODEL_GROUP = "hpstudy.models"
# a dotted module path and a dotted attribute: never a file path
REFERENCE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
NAME = re.compile(r"[A-Za-z_][\w.-]{0,63}")
MAX_PATH = 4096
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

DatasetLoader = Callable[[], Any]  # () -> a mapping with x_train, y_train, x_test, y_test, ...
_DATASETS: dict[str, DatasetLoader] = {}
_hashes: dict[tuple[str, int, int], str] = {}  # (file, size, mtime_ns) -> sha256
_folders: dict[tuple[str, tuple[int, ...]], str] = {}  # (folder, its folders' mtimes) -> sha256


def register_dataset(name: str, loader: DatasetLoader) -> DatasetLoader:
    """Register `loader() -> {"x_train": (N, H, W, C) uint8, "y_train": (N,) ints, "x_test",
    "y_test", optional "class_names"}` (numpy arrays, checked like an .npz) under `name`."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or name in BUILTIN_DATASETS:
        raise HpstudyError(f"register_dataset: {name!r} is not a free dataset name")
    if not callable(loader):
        raise HpstudyError(f"register_dataset: the loader of {name!r} is not callable")
    if name in _DATASETS and _DATASETS[name] is not loader:
        raise HpstudyError(f"register_dataset: dataset {name!r} is registered twice")
    _DATASETS[name] = loader
    return loader


# --- names --------------------------------------------------------------------------------


def split_file_source(dataset: str) -> tuple[str, Path] | None:
    """("npz" | "folder", PATH) of a file source, None for a name."""
    kind, sep, path = dataset.partition(":")
    if not sep or kind not in FILE_KINDS:
        return None
    if not path or len(path) > MAX_PATH or "\0" in path:
        raise HpstudyError(f"dataset: {dataset[:80]!r}: {kind}: needs a path ({kind}:PATH)")
    return kind, Path(path).expanduser()


def check_model_name(model: str) -> None:
    """A model name that can be looked up: a reference is a module path, never a file's."""
    if is_reference(model):
        if not REFERENCE.fullmatch(model):
            raise HpstudyError(
                f"model: {model[:80]!r} is not 'module.path:callable' (a module path, "
                "never a file path: no '/', '\\' or '.py')"
            )
    elif not NAME.fullmatch(model):
        raise HpstudyError(f"model: {model[:80]!r} is not a model name or 'module:callable'")


def check_dataset_name(dataset: str) -> None:
    if dataset in BUILTIN_DATASETS or split_file_source(dataset) is not None:
        return
    if not NAME.fullmatch(dataset):
        raise HpstudyError(
            f"dataset: {dataset[:80]!r}: use cifar100, cifar10, npz:PATH, folder:PATH or a "
            "registered dataset name"
        )


# --- fingerprints ---------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read once per (file, size, modification time) in a process."""
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _hashes:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
            _hashes[key] = digest.hexdigest()
    except OSError as err:
        raise HpstudyError(f"{path}: cannot read ({err.strerror or err})") from None
    return _hashes[key]


def code_fingerprint(obj: Any) -> str:
    """`module sha256:...` of the file that defines `obj` (its module's source)."""
    module = getattr(obj, "__module__", None) or type(obj).__module__
    try:
        source = inspect.getsourcefile(sys.modules[module])
    except (KeyError, TypeError):
        source = None
    if source is None or not os.path.isfile(source):
        return f"{module} (no source file)"
    return f"{module} sha256:{file_sha256(Path(source))[:16]}"


def entry_point_fingerprint(group: str, name: str, obj: Any) -> str:
    """`(distribution==version) module sha256:...` of entry point `name` of `group`."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=group, name=name):
        dist = f"{ep.dist.name}=={ep.dist.version}" if ep.dist is not None else "unknown"
        return f"({dist}) {code_fingerprint(obj)}"
    return code_fingerprint(obj)


def folder_listing(folder: Path) -> dict[str, dict[str, list[Path]]]:
    """{"train": {class: [files]}, "test": ...} of PATH/<split>/<class>/<file>, sorted. Only
    plain folders and files: a link is refused (it may lead out of PATH), and so is anything
    off that layout."""
    listing: dict[str, dict[str, list[Path]]] = {}
    for split in ("train", "test"):
        top = folder / split
        if top.is_symlink() or not top.is_dir():
            raise HpstudyError(f"{folder}: no {split}/ folder of class folders (folder:PATH)")
        listing[split] = {}
        for class_dir in sorted(top.iterdir()):
            if class_dir.is_symlink():
                raise HpstudyError(f"{class_dir}: a link; folder datasets hold plain files only")
            if not class_dir.is_dir():
                raise HpstudyError(f"{class_dir}: not a class folder ({split}/<class>/<image>)")
            files = sorted(class_dir.iterdir())
            for path in files:
                if path.is_symlink():
                    raise HpstudyError(f"{path}: a link; folder datasets hold plain files only")
                if not path.is_file():
                    raise HpstudyError(f"{path}: not an image file ({split}/<class>/<image>)")
            listing[split][class_dir.name] = files
    return listing


def folder_fingerprint(folder: Path) -> str:
    """sha256 of the folder's file list and sizes (what its decoded cache is keyed by); read
    again in a process only when one of its folders changed."""
    try:
        dirs = [folder, *(folder / s for s in ("train", "test"))]
        dirs += [d for s in dirs[1:] if s.is_dir() for d in sorted(s.iterdir()) if d.is_dir()]
        key = (str(folder.resolve()), tuple(os.stat(d).st_mtime_ns for d in dirs))
        if key not in _folders:
            digest = hashlib.sha256()
            for split, classes in folder_listing(folder).items():
                for name, files in classes.items():
                    for path in files:
                        entry = f"{split}/{name}/{path.name}\0{path.stat().st_size}\n"
                        digest.update(entry.encode())
            _folders[key] = digest.hexdigest()
    except OSError as err:
        raise HpstudyError(f"{folder}: cannot read ({err.strerror or err})") from None
    return _folders[key]


def dataset_fingerprint(dataset: str) -> str | None:
    """What the identity keeps of `dataset`'s contents; None for CIFAR (its md5s are fixed)."""
    if dataset in BUILTIN_DATASETS:
        return None
    source = split_file_source(dataset)
    if source is not None:
        kind, path = source
        if kind == "npz":
            if not path.is_file():
                raise HpstudyError(f"dataset: {path}: no such .npz file")
            return f"sha256:{file_sha256(path)}"
        if not path.is_dir():
            raise HpstudyError(f"dataset: {path}: no such folder")
        return f"listing-sha256:{folder_fingerprint(path)}"
    loader = dataset_loader(dataset)
    if dataset in _DATASETS:
        return code_fingerprint(loader)
    return entry_point_fingerprint(DATASET_GROUP, dataset, loader)


def dataset_loader(name: str) -> DatasetLoader:
    """The loader registered as `name`, or the entry point of `hpstudy.datasets` named so."""
    if name in _DATASETS:
        return _DATASETS[name]
    found = load_entry_point(DATASET_GROUP, name)
    if found is None:
        known = ", ".join([*BUILTIN_DATASETS, "npz:PATH", "folder:PATH", *sorted(_DATASETS)])
        raise HpstudyError(f"dataset: unknown dataset {name!r} (use {known})")
    if not callable(found):
        raise HpstudyError(f"dataset {name!r}: its entry point is not a callable loader")
    return found


def model_fingerprint(model: str, builtin: bool, registered: Any | None) -> str | None:
    """What the identity keeps of a model's code; None for a built-in model (its code is
    hpstudy's). `registered`: the function registered under `model` in this process."""
    if builtin:
        return None
    if registered is not None:
        return f"{model} {code_fingerprint(registered)}"
    if is_reference(model):
        return f"{model} {code_fingerprint(load_callable(model))}"
    found = load_entry_point(MODEL_GROUP, model)
    if found is None:
        return None  # unknown: the registry says so, naming the known ones
    return f"{model} {entry_point_fingerprint(MODEL_GROUP, model, found)}"


def load_callable(reference: str) -> Callable[..., Any]:
    """The callable a "module:attr" model reference names, imported now."""
    check_model_name(reference)
    try:
        found = load_object(reference, "model")
    except HpstudyError:
        raise
    except Exception as err:  # a module that fails while importing: its own first line
        raise HpstudyError(f"model: cannot load {reference!r} ({first_line(err)})") from None
    if not callable(found):
        raise HpstudyError(f"model: {reference!r} is a {type(found).__name__}, not a callable")
    return found


__all__ = [
    "BUILTIN_DATASETS",
    "DatasetLoader",
    "check_dataset_name",
    "check_model_name",
    "dataset_fingerprint",
    "dataset_loader",
    "file_sha256",
    "folder_fingerprint",
    "folder_listing",
    "load_callable",
    "model_fingerprint",
    "register_dataset",
    "split_file_source",
]
