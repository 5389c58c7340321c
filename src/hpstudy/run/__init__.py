"""One training run: its folder on disk, its device, its data there, its loop, its hooks, its
evaluation.

The names below are the public API; the benchmarks and executors use nothing else. They
are imported on first use (PEP 562), so that the executors (and the command line's parser,
which asks them for their options) import `hpstudy.run.hooks` without importing torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

# public name -> the module that defines it
_WHERE = {
    "Execution": "device",
    "build_model": "device",
    "device_name": "device",
    "resolve_device": "device",
    "DeviceData": "device_data",
    "device_data": "device_data",
    "load_data": "device_data",
    "data_shape": "device_data",
    "split_of": "device_data",
    "model_key": "compiled",
    "CheckpointWriter": "checkpoint",
    "cpu_copy": "checkpoint",
    "evaluate": "evaluate",
    "evaluate_arrays": "evaluate",
    "image_outcomes": "evaluate",
    "METRIC_COLUMNS": "folder",
    "Evaluation": "folder",
    "MetricRow": "folder",
    "RunDir": "folder",
    "RunStatus": "folder",
    "Summary": "folder",
    "HookSpec": "hooks",
    "RunHook": "hooks",
    "default_hooks": "hooks",
    "register_hook": "hooks",
    "resolve_hooks": "hooks",
    "Batch": "loop",
    "Trainer": "loop",
    "batches": "loop",
    "epoch_seed": "loop",
    "learning_rate": "loop",
    "train": "loop",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'hpstudy.run' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"hpstudy.run.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


class RunPackage(types.ModuleType):
    """Importing submodule `evaluate` (or `device_data`) binds it on this package under the
    name of the function it defines; the public name stays the function, as it was when
    this package imported everything eagerly."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _WHERE.get(name) == name:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = RunPackage


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = sorted(_WHERE)
