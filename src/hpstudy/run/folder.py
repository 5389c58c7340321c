"""The run folder: the one reader and writer of a run's files, and the run states.

    config.json          the RunConfig (precision resolved); its hash names the folder
    metrics.csv          one row per finished epoch (METRIC_COLUMNS, + EMA_COLUMNS with an EMA)
    checkpoint.pt        weights (and their EMA), optimizer, RNG state and the rows, written
                         atomically each epoch (by a background thread: hpstudy.run.checkpoint)
    summary.json         a Summary: the outcome, final metrics, every test evaluation
    val_predictions.npy  int16: the final epoch's predicted class per validation image, in the
                         order of the run's validation indices (val_losses.npy: float32 losses)
    test_predictions.npy int16: the test evaluation's predicted class per test image
    error.log            the traceback of a failed run
    events.out.tfevents.*  TensorBoard's event files (hpstudy.run.events writes them)
    model.safetensors, model.onnx, export.json   the exported model (hpstudy.export)
"""

from __future__ import annotations

import csv
import io
import math
import stat
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from hpstudy.config import RunConfig
from hpstudy.errors import HpstudyError
from hpstudy.files import (
    TEXT_CAP,
    check_regular,
    read_capped,
    read_json,
    read_model,
    write_atomic,
    write_json,
    write_model,
)

METRIC_COLUMNS = (
    "epoch",
    "lr",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "val_top5",
    "seconds",
    "images_per_s",
)
# With an EMA of the weights, val_* are the EMA's metrics and these the raw weights'.
EMA_COLUMNS = ("raw_val_loss", "raw_val_acc", "raw_val_top5")
MetricRow = dict[str, float]
EXPORT_FILES = ("model.safetensors", "model.onnx", "export.json")
# the most images a split of a built-in dataset holds (CIFAR's train split): a predictions
# file that implies more is not one hpstudy wrote
MAX_SPLIT_IMAGES = 50_000
NPY_HEADER_CAP = 4096  # bytes: a .npy file's header (128 for the arrays hpstudy writes)
EVENTS_PREFIX = "events.out.tfevents."


def metric_columns(ema: bool) -> tuple[str, ...]:
    """metrics.csv's columns: a run with an EMA of its weights has the raw weights' too."""
    return METRIC_COLUMNS + EMA_COLUMNS if ema else METRIC_COLUMNS


class RunStatus(StrEnum):
    PENDING = "pending"  # nothing trained yet
    PARTIAL = "partial"  # some epochs done, resumable from the checkpoint
    FINISHED = "finished"
    DIVERGED = "diverged"  # a non-finite train or validation metric; never wins
    PRUNED = "pruned"  # stopped early by a search's pruner; never retried, never wins
    FAILED = "failed"  # an error stopped it; retried by the next `study run`

    @property
    def done(self) -> bool:
        """Nothing more to train: a finished, diverged or pruned run is kept as it is."""
        return self in (RunStatus.FINISHED, RunStatus.DIVERGED, RunStatus.PRUNED)


class Evaluation(BaseModel):
    """One evaluation of the run's final weights on the test split (the ledger's entry)."""

    model_config = ConfigDict(extra="forbid")
    split: str
    run_hash: str
    loss: float
    top1: float
    top5: float
    superclass_top1: dict[str, float]
    images: int
    at: str


class Summary(BaseModel):
    """summary.json: how a run ended. A failed run has only status, run_hash and error."""

    model_config = ConfigDict(extra="forbid")
    status: RunStatus
    run_hash: str
    error: str | None = None
    epochs_done: int = 0
    final: MetricRow | None = None
    train_seconds: float | None = None
    parameters: int | None = None
    macs_per_image: int | None = None
    device: str | None = None
    device_name: str | None = None
    precision: str | None = None
    channels_last: bool | None = None
    compile: bool | str | None = None  # the mode, or false; true in older summaries
    torch: str | None = None
    hpstudy: str | None = None
    test_evaluations: list[Evaluation] = []


class RunDir:
    """One run's folder. Reading never creates anything; writing is atomic per file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def error_log_path(self) -> Path:
        return self.path / "error.log"

    @property
    def export_path(self) -> Path:
        return self.path / "export.json"

    def read_export(self) -> dict[str, Any] | None:
        """export.json as `hpstudy export` wrote it; None before an export."""
        if not self.export_path.is_file():
            return None
        found = read_json(self.export_path, "export")
        if not isinstance(found, dict):
            raise HpstudyError(f"{self.export_path}: not an hpstudy export (not a JSON object)")
        return found

    @property
    def val_predictions_path(self) -> Path:
        return self.path / "val_predictions.npy"

    @property
    def val_losses_path(self) -> Path:
        return self.path / "val_losses.npy"

    @property
    def test_predictions_path(self) -> Path:
        return self.path / "test_predictions.npy"

    # ------------------------------------------------------------ config

    def read_config(self) -> RunConfig:
        return read_model(self.config_path, RunConfig, "config")

    def check(self, config: RunConfig) -> None:
        """Refuse, writing nothing, a folder that cannot hold this config's run: a file, one
        under a file, another run's, or one holding files but no config.json that are not a
        run's own (those of a run that failed before its config was written)."""
        if problem := not_a_folder(self.path):
            raise HpstudyError(f"{self.path}: {problem}; choose another folder")
        if self.config_path.exists():
            held = self.read_config()
            if held.run_hash() != config.run_hash():
                raise HpstudyError(
                    f"{self.path} holds a different run ({held.run_hash()}, "
                    f"not {config.run_hash()}); choose another folder"
                )
            return
        if foreign := self.foreign_files():
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            raise HpstudyError(
                f"{self.path}: holds files but no config.json ({foreign[0]!r}{more}), so it is "
                "not a run folder; choose another folder, or an empty one"
            )

    def foreign_files(self) -> list[str]:
        """Names in the folder that are not a run's files (nor their temporary copies)."""
        if not self.path.is_dir():
            return []
        own = (self.config_path, self.metrics_path, self.checkpoint_path, self.summary_path,
               self.val_predictions_path, self.val_losses_path, self.test_predictions_path)
        own_names = (*(p.name for p in (*own, self.error_log_path)), *EXPORT_FILES)
        names = {name + tmp for name in own_names for tmp in ("", ".tmp")}
        try:
            return sorted(
                p.name
                for p in self.path.iterdir()
                if p.name not in names and not p.name.startswith(EVENTS_PREFIX)
            )
        except OSError as err:
            raise HpstudyError(f"{self.path}: cannot read ({err.strerror or err})") from None

    def claim(self, config: RunConfig) -> None:
        """Make the folder this config's run (a folder and config.json: cheap, so callers
        claim only once the data is there), or refuse one `check` refuses."""
        self.check(config)
        if self.config_path.exists():
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise HpstudyError(f"{self.path}: cannot create ({err.strerror or err})") from None
        write_json(self.config_path, config.model_dump(), "config")

    # ------------------------------------------------------------ metrics

    def read_metrics(self) -> list[MetricRow]:
        """The rows of metrics.csv; none for a run that has not finished an epoch."""
        if not self.metrics_path.exists():
            return []
        payload = read_capped(self.metrics_path, TEXT_CAP)
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as err:
            raise HpstudyError(f"{self.metrics_path}: cannot read ({err})") from None
        try:
            table = list(csv.reader(io.StringIO(text)))
        except csv.Error as err:
            raise HpstudyError(f"{self.metrics_path}: not a CSV file ({err})") from None
        if not table:
            return []
        columns = tuple(table[0])
        if columns not in (metric_columns(ema=False), metric_columns(ema=True)):
            shown = ",".join(table[0])[:80]
            raise HpstudyError(
                f"{self.metrics_path}: header {shown!r} is not {','.join(METRIC_COLUMNS)}"
            )
        rows = []
        for line, cells in enumerate(table[1:], start=2):
            try:
                if len(cells) != len(columns):
                    raise ValueError
                rows.append(
                    {k: (int(v) if k == "epoch" else float(v))
                     for k, v in zip(columns, cells, strict=True)}
                )  # fmt: skip
            except ValueError:
                raise HpstudyError(
                    f"{self.metrics_path}: line {line} is not {len(columns)} numbers"
                ) from None
        return rows

    def write_metrics(self, rows: list[MetricRow], ema: bool = False) -> None:
        buf = io.StringIO()
        ema = ema or any(EMA_COLUMNS[0] in row for row in rows)
        writer = csv.DictWriter(buf, fieldnames=metric_columns(ema), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
        write_atomic(self.metrics_path, buf.getvalue().encode())

    # ------------------------------------------------------------ checkpoint

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        write_atomic(self.checkpoint_path, buf.getvalue())

    def load_checkpoint(self, device: torch.device) -> dict[str, Any]:
        check_regular(self.checkpoint_path)  # not a link to a device or a FIFO
        try:
            ckpt = torch.load(self.checkpoint_path, map_location=device, weights_only=True)
        except Exception as err:  # a torn or foreign file: say which, without torch's advice
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if "weights_only" in reason or "Weights only load failed" in reason:
                reason = "holds objects other than tensors and plain values"
            raise HpstudyError(
                f"{self.checkpoint_path}: not a readable hpstudy checkpoint ({reason})"
            ) from None
        if not isinstance(ckpt, dict):
            raise HpstudyError(
                f"{self.checkpoint_path}: not an hpstudy checkpoint (holds a "
                f"{type(ckpt).__name__}, not a dict)"
            )
        return ckpt

    # ------------------------------------------------------------ per-image outcomes

    def write_val_predictions(self, predictions: np.ndarray, losses: np.ndarray) -> None:
        """The final epoch's predicted class (int16) and cross-entropy (float32) per
        validation image, in the order of the run's validation indices."""
        write_array(self.val_predictions_path, np.asarray(predictions, dtype=np.int16))
        write_array(self.val_losses_path, np.asarray(losses, dtype=np.float32))

    def read_val_predictions(self, images: int = MAX_SPLIT_IMAGES) -> np.ndarray | None:
        """The validation predictions (at most `images` of them: what the run implies);
        None for a run (or an older folder) without them."""
        return read_array(self.val_predictions_path, np.int16, images)

    def read_val_losses(self, images: int = MAX_SPLIT_IMAGES) -> np.ndarray | None:
        return read_array(self.val_losses_path, np.float32, images)

    def write_test_predictions(self, predictions: np.ndarray) -> None:
        write_array(self.test_predictions_path, np.asarray(predictions, dtype=np.int16))

    def read_test_predictions(self, images: int = MAX_SPLIT_IMAGES) -> np.ndarray | None:
        return read_array(self.test_predictions_path, np.int16, images)

    # ------------------------------------------------------------ outcome

    def read_summary(self) -> Summary | None:
        if not self.summary_path.exists():
            return None
        return read_model(self.summary_path, Summary, "summary")

    def write_summary(self, summary: Summary) -> None:
        write_model(self.summary_path, summary, "summary")

    def status(self) -> RunStatus:
        summary = self.read_summary()
        if summary is not None:
            return summary.status
        return RunStatus.PARTIAL if self.checkpoint_path.exists() else RunStatus.PENDING

    def record_failure(self, run_hash: str, message: str, details: str = "") -> Summary:
        """A failed run: retried by the next `study run`, its error kept for the report."""
        self.path.mkdir(parents=True, exist_ok=True)
        summary = Summary(status=RunStatus.FAILED, run_hash=run_hash, error=message)
        self.write_summary(summary)
        if details:
            write_atomic(self.error_log_path, details.encode())
        return summary


def write_array(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    write_atomic(path, buf.getvalue())


def read_array(
    path: Path, dtype: type[np.generic], items: int = MAX_SPLIT_IMAGES
) -> np.ndarray | None:
    """A 1-D array of `dtype` saved by `write_array`, of at most `items` entries; None when
    there is no file."""
    if not path.exists():
        return None
    payload = read_capped(path, NPY_HEADER_CAP + items * np.dtype(dtype).itemsize)
    try:
        array = np.load(io.BytesIO(payload), allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HpstudyError(f"{path}: not a readable .npy file ({first})") from None
    if array.ndim != 1 or array.dtype != dtype:
        raise HpstudyError(
            f"{path}: holds a {array.dtype} array of shape {array.shape}, not 1-D "
            f"{np.dtype(dtype).name}"
        )
    return array


def not_a_folder(path: Path) -> str | None:
    """Why `path` is not and cannot become a folder (it, or a folder above it, is a file)."""
    for p in (path, *path.parents):
        try:
            mode = p.stat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue  # not there (yet), or under a file that a later p finds
        except OSError as err:
            return f"cannot read {p} ({err.strerror or err})"
        if stat.S_ISDIR(mode):
            return None
        return "is a file, not a folder" if p == path else f"{p} is a file, not a folder"
    return None


def finite_row(row: MetricRow) -> bool:
    return all(math.isfinite(v) for v in row.values())


__all__ = [
    "EMA_COLUMNS",
    "EVENTS_PREFIX",
    "EXPORT_FILES",
    "METRIC_COLUMNS",
    "Evaluation",
    "MetricRow",
    "RunDir",
    "RunStatus",
    "Summary",
    "finite_row",
    "metric_columns",
    "not_a_folder",
]
