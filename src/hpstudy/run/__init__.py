"""One training run: its folder on disk, its device, its data there, its loop, its evaluation.

The names below are the public API; the benchmarks and executors use nothing else.
"""

from hpstudy.run.device import Execution, build_model, device_name, resolve_device
from hpstudy.run.device_data import DeviceData, device_data, load_data, split_of
from hpstudy.run.evaluate import evaluate, evaluate_arrays, image_outcomes
from hpstudy.run.folder import METRIC_COLUMNS, Evaluation, MetricRow, RunDir, RunStatus, Summary
from hpstudy.run.loop import Batch, Trainer, batches, epoch_seed, learning_rate, train

__all__ = [
    "METRIC_COLUMNS",
    "Batch",
    "DeviceData",
    "Evaluation",
    "Execution",
    "MetricRow",
    "RunDir",
    "RunStatus",
    "Summary",
    "Trainer",
    "batches",
    "build_model",
    "device_data",
    "device_name",
    "epoch_seed",
    "evaluate",
    "evaluate_arrays",
    "image_outcomes",
    "learning_rate",
    "load_data",
    "resolve_device",
    "split_of",
    "train",
]
