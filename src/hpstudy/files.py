"""Bytes on disk: the one rule for every file hpstudy reads or writes in a study or run folder,
and JSON read back into typed records through one schema table.

Reads (`read_capped`) take regular files only (a link is followed to its file; a
folder, a device such as /dev/zero, a FIFO or a socket is refused before a byte is
read) and stop at a size cap per kind of file (JSON: JSON_CAP), so a tampered folder
cannot make hpstudy read without end. Writes (`write_atomic`, `write_with`) go
through a temporary file created anew (never an existing file or link of that name)
and an atomic replace, so a kill mid-write leaves the old file or the new one, never
a torn one; a target that exists and is not a regular file (a link, a folder) is
refused, so nothing is written through a link. Which files exist and what they hold
is owned by `run.folder` (a run's files) and `study.state` (a study's).

Every JSON object hpstudy writes (files and `--json` output) carries `schema_version`:
the version of its kind's layout (SCHEMA_VERSIONS). Reading a file upgrades it first:
a file without the key (every folder written before it existed) is version 0, and the
MIGRATIONS of its kind bring it, one version at a time, to today's layout; a file
written by a newer hpstudy is refused in one line. `schema_version` is never part of
the record itself (a RunConfig's hash is computed without it).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from hpstudy.errors import HpstudyError

Model = TypeVar("Model", bound=BaseModel)
SCHEMA_KEY = "schema_version"
Raw = dict[str, Any]

# file kind -> the layout this hpstudy writes (and reads, with the migrations below)
SCHEMA_VERSIONS = {
    "config": 1,  # a run's config.json (RunConfig)
    "summary": 1,  # a run's summary.json (Summary)
    "export": 1,  # a run's export.json
    "study": 1,  # a study's study.json (StudyRecord)
    "state": 2,  # a study's state.json (StudyState)
    "speed": 1,  # the speed cache, speed.json
    "auto_defaults": 1,  # the `auto` table, auto_defaults.json (benchmarks/gpu_check.py)
    "gpu_check": 1,  # benchmarks/gpu_check.py's gpu_check.json
    "output": 1,  # the object a `--json` command prints
}


def state_0_to_1(raw: Raw) -> Raw:
    """state.json before schema versions: keys added since it was first written."""
    data = raw.get("data")
    if isinstance(data, dict):
        data.setdefault("dataset", "cifar100")  # written before CIFAR-10
    for stage in raw.get("stages") or []:
        if isinstance(stage, dict):
            stage.setdefault("kind", "values")  # written before stage kinds
    raw.setdefault("follow", "own")  # written before --follow
    raw.setdefault("until_decided", None)  # written before --until-decided
    return raw


def state_1_to_2(raw: Raw) -> Raw:
    """state.json before verdicts had to be right at any number of seeds (issue 20): a stage
    was "decided" when every interval excluded 0 on either side, at one seed too, and one
    seed had a P(better). Today one seed decides nothing and says no P(better), and a
    decision needs every interval on the winner's side: an old "decided" that fails either
    is withdrawn (the rest keep their old, bootstrap intervals until the stage is judged
    again by the next `study run` that trains in it)."""
    lower = raw.get("selection") == "val_loss"
    for stage in raw.get("stages") or []:
        if not isinstance(stage, dict):
            continue
        comparisons = [c for c in stage.get("comparisons") or [] if isinstance(c, dict)]
        for c in comparisons:
            if (c.get("seeds") or 0) <= 1:
                c["prob_better"] = None

        def winner_side(c: Raw) -> bool:
            ci = c.get("ci95")
            if not (isinstance(ci, list) and len(ci) == 2 and (c.get("seeds") or 0) >= 2):
                return False
            lo, hi = ci
            return isinstance(lo, int | float) and isinstance(hi, int | float) and (
                hi < 0 if lower else lo > 0)  # fmt: skip

        if stage.get("decided"):
            stage["decided"] = bool(comparisons) and all(winner_side(c) for c in comparisons)
    return raw


# kind -> {version: the function that upgrades a dict of that version to the next};
# a version without an entry changed nothing that reading needs (only the key was added)
MIGRATIONS: dict[str, dict[int, Callable[[Raw], Raw]]] = {
    "state": {0: state_0_to_1, 1: state_1_to_2},
}


def stamped(obj: Raw, kind: str) -> Raw:
    """`obj` with its kind's schema_version, as hpstudy writes it."""
    return {**obj, SCHEMA_KEY: SCHEMA_VERSIONS[kind]}


def upgrade(raw: Any, kind: str, where: str) -> Any:
    """`raw` (a file's JSON) at today's layout, its schema_version taken out; a JSON value
    that is not an object is returned as it is, for its reader to refuse."""
    if not isinstance(raw, dict):
        return raw
    raw = dict(raw)
    found = raw.pop(SCHEMA_KEY, 0)
    current = SCHEMA_VERSIONS[kind]
    if type(found) is not int or found < 0:
        shown = repr(found) if len(repr(found)) <= 40 else repr(found)[:37] + "..."
        raise HpstudyError(f"{where}: {SCHEMA_KEY}: expected a whole number >= 0 (got {shown})")
    if found > current:
        raise HpstudyError(
            f"{where}: written by a newer hpstudy (schema {found}; this hpstudy reads up to "
            f"{current}): upgrade hpstudy"
        )
    steps = MIGRATIONS.get(kind, {})
    for version in range(found, current):
        if version in steps:
            raw = steps[version](raw)
    return raw


JSON_CAP = 64 * 2**20  # bytes: a JSON file hpstudy reads (its largest, state.json, is ~100 kB)
TEXT_CAP = 64 * 2**20  # bytes: metrics.csv, test_ledger.jsonl


def file_type(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a link"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):  # fmt: skip
        if test(mode):
            return name
    return "not a regular file"


def size_text(n: int) -> str:
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n:,} bytes"


def read_capped(path: Path, cap: int) -> bytes:
    """The bytes of the regular file at `path` (a link is followed), at most `cap` of them:
    anything else, or more, is one HpstudyError and nothing more is read."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        raise HpstudyError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise HpstudyError(f"{path}: is {file_type(mode)}, not a regular file hpstudy wrote")
        chunks, got = [], 0
        while got <= cap:
            chunk = os.read(fd, min(1 << 20, cap + 1 - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        if got > cap:
            raise HpstudyError(
                f"{path}: larger than the {size_text(cap)} such a file may hold; "
                "not a file hpstudy wrote"
            )
        return b"".join(chunks)
    except OSError as err:
        raise HpstudyError(f"{path}: cannot read ({err.strerror or err})") from None
    finally:
        os.close(fd)


def check_regular(path: Path) -> None:
    """Refuse a `path` that is there but is not a regular file (followed through a link)."""
    try:
        mode = path.stat().st_mode
    except OSError as err:
        raise HpstudyError(f"{path}: cannot read ({err.strerror or err})") from None
    if not stat.S_ISREG(mode):
        raise HpstudyError(f"{path}: is {file_type(mode)}, not a regular file hpstudy wrote")


def check_writable(path: Path) -> None:
    """Refuse, writing nothing, a target that exists and is not a regular file of its own
    (a link, even to a regular file, a folder, a device): hpstudy never writes through it."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    except OSError as err:
        raise HpstudyError(f"{path}: cannot write ({err.strerror or err})") from None
    if not stat.S_ISREG(mode):
        raise HpstudyError(
            f"{path}: is {file_type(mode)}; hpstudy writes only its own regular files, "
            "never through a link: remove it or use another folder"
        )


def write_with(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` writes the file's content to a fresh temporary path, which then replaces
    `path` atomically. A `path` that is a link or not a regular file is refused first."""
    check_writable(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.unlink(missing_ok=True)  # a stale copy, or a link planted there: never written through
        write(tmp)
        check_writable(tmp)  # made by `write` itself, not by someone else meanwhile
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise HpstudyError(f"{path}: cannot write ({err.strerror or err})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_new(tmp: Path, payload: bytes) -> None:
    """`payload` into a file made here (O_EXCL: never an existing file or link)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())


def write_atomic(path: Path, payload: bytes) -> None:
    write_with(path, lambda tmp: write_bytes_new(tmp, payload))


def write_json(path: Path, obj: Raw, kind: str) -> None:
    """`obj` as `kind`'s JSON file, schema_version added."""
    payload = json.dumps(stamped(obj, kind), indent=2, sort_keys=True) + "\n"
    write_atomic(path, payload.encode())


def read_json(path: Path, kind: str) -> Any:
    """`kind`'s JSON file, upgraded to today's layout (see `upgrade`)."""
    payload = read_capped(path, JSON_CAP)
    try:
        raw = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        # JSONDecodeError is a ValueError; so is a number too long to convert, and
        # nesting too deep for the parser is a RecursionError
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HpstudyError(f"{path}: not valid JSON ({first})") from None
    return upgrade(raw, kind, str(path))


def validation_message(err: ValidationError, model: type[BaseModel] | None = None) -> str:
    """Every bad field of a pydantic error on one line: `lr: must be > 0 (got -1); ...`,
    each followed by the field's description where `model` gives it one (one source for
    `--help`, the README and these errors)."""
    return errors_message(err.errors(), model)


def errors_message(errors: list[Any], model: type[BaseModel] | None = None) -> str:
    """`validation_message` of a pydantic error's `errors()`, perhaps with locations edited."""
    fields = model.model_fields if model is not None else {}
    parts = []
    for e in errors:
        loc = ".".join(str(p) for p in e["loc"]) or "value"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "value_error":  # our own validators' words, without pydantic's tag
            msg = msg.removeprefix("Value error, ")
        elif "input" in e and e["type"] != "missing":
            shown = repr(e["input"])
            msg = f"{msg} (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
        field = fields.get(str(e["loc"][0])) if e["loc"] else None
        if field is not None and field.description:
            msg = f"{msg} — {field.description}"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def parse_model(model: type[Model], raw: Any, where: str) -> Model:
    """`raw` (a dict) as a `model`, or one HpstudyError naming `where` and every bad field."""
    if not isinstance(raw, dict):
        raise HpstudyError(f"{where}: expected a table of keys, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise HpstudyError(f"{where}: {validation_message(err, model)}") from None


def read_model(path: Path, model: type[Model], kind: str) -> Model:
    """`kind`'s JSON file as a `model`, upgraded to today's layout first."""
    return parse_model(model, read_json(path, kind), str(path))


def write_model(path: Path, record: BaseModel, kind: str) -> None:
    write_json(path, record.model_dump(mode="json"), kind)
