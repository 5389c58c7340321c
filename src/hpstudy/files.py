"""Bytes on disk: atomic writes and JSON read back into typed records, failing in one line.

Every file hpstudy writes goes through `write_atomic`, so a kill mid-write leaves
the old file or the new one, never a torn one. Which files exist and what they
hold is owned by `run.folder` (a run's files) and `study.state` (a study's).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from hpstudy.errors import HpstudyError

Model = TypeVar("Model", bound=BaseModel)


def write_atomic(path: Path, payload: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise HpstudyError(f"{path}: cannot write ({err.strerror or err})") from None


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except OSError as err:
        raise HpstudyError(f"{path}: cannot read ({err.strerror or err})") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        # JSONDecodeError is a ValueError; so is a number too long to convert, and
        # nesting too deep for the parser is a RecursionError
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HpstudyError(f"{path}: not valid JSON ({first})") from None


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


def read_model(path: Path, model: type[Model]) -> Model:
    return parse_model(model, read_json(path), str(path))


def write_model(path: Path, record: BaseModel) -> None:
    write_json(path, record.model_dump(mode="json"))
