"""Live logs: each finished epoch's metrics as TensorBoard event files in the run folder.

The run hook "tensorboard" (a default of every run). `tensorboard --logdir STUDY_DIR`
then shows every run of a study while it trains. TensorBoard is an optional extra
(`pip install 'hpstudy[tensorboard]'`); without it, the process says once that logging
is off and training goes on.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpstudy.run.folder import MetricRow
from hpstudy.run.hooks import RunHook

if TYPE_CHECKING:
    from hpstudy.config import RunConfig
    from hpstudy.run.folder import Summary

logger = logging.getLogger(__name__)

# metrics.csv column -> TensorBoard tag; val/* are the selected weights' (the EMA's when on)
TAGS = {
    "train_loss": "train/loss",
    "train_acc": "train/acc",
    "val_loss": "val/loss",
    "val_acc": "val/acc",
    "val_top5": "val/top5",
    "raw_val_loss": "val_raw/loss",
    "raw_val_acc": "val_raw/acc",
    "raw_val_top5": "val_raw/top5",
    "lr": "lr",
    "images_per_s": "images_per_s",
}
MISSING = "TensorBoard logging is off: pip install 'hpstudy[tensorboard]' to turn it on"
_said_missing = False


def summary_writer_class() -> Any:
    """torch's SummaryWriter, or None (said once per process) without the tensorboard extra."""
    global _said_missing
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if not _said_missing:
            _said_missing = True
            logger.warning(MISSING)
        return None
    return SummaryWriter


class EventLog:
    """One run's event files; epochs are steps 1, 2, ... as in metrics.csv."""

    def __init__(self, run_path: Path, epochs_done: int) -> None:
        writer_class = summary_writer_class()
        # A resumed run purges what an interrupted process logged after its last checkpoint,
        # so TensorBoard shows each epoch once.
        purge = epochs_done + 1 if epochs_done > 0 else None
        self.writer = None
        if writer_class is not None:
            self.writer = writer_class(log_dir=str(run_path), purge_step=purge)

    def write(self, row: MetricRow) -> None:
        if self.writer is None:
            return
        step = int(row["epoch"])
        for column, tag in TAGS.items():
            if column in row:
                self.writer.add_scalar(tag, row[column], step)
        self.writer.flush()  # visible now, not when the run ends

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class TensorBoardHook(RunHook):
    """"tensorboard": the run's epochs as event files in its folder. A resumed run purges
    what an interrupted process logged after its last checkpoint; the checkpoint's epoch,
    told again on resume, is not written twice."""

    def __init__(self) -> None:
        self.events: EventLog | None = None
        self.start_epoch = 0

    def on_start(self, config: RunConfig, run_dir: Path, start_epoch: int) -> None:
        self.events = EventLog(Path(run_dir), start_epoch)
        self.start_epoch = start_epoch

    def on_epoch(self, epoch: int, row: MetricRow) -> bool:
        if self.events is not None and epoch > self.start_epoch:
            self.events.write(row)
        return False

    def on_end(self, summary: Summary | None) -> None:
        if self.events is not None:
            self.events.close()
            self.events = None


__all__ = ["MISSING", "TAGS", "EventLog", "TensorBoardHook", "summary_writer_class"]
