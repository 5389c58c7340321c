"""Compiled models kept for the life of the process, so that a second run of the same shape
reuses the first one's compile (Inductor takes a minute or more) instead of paying it again.

A compiled model is the pair (module, torch.compile(module)). The graphs that dynamo traced
belong to that module object and its parameters, so a later run of equal shape (same model,
arguments, width, classes, image shape, device, memory format, precision and compile mode)
takes the pair over: its freshly built model's weights and buffers are copied into the kept
module (its gradients cleared), and the run trains that module through the kept wrapper; its
optimizer and EMA are built on the kept module's parameters. The fresh model was built from
the run's seed exactly as without the cache, so the run computes the same numbers. The batch
size is not part of the key: dynamo keeps a graph per static input shape.

Long-lived worker processes (hpstudy.executors.local) and the sequential in-process executor
both run many runs in one process; this is where they stop compiling for each.
"""

from __future__ import annotations

import gc
import logging
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hpstudy.config import RunConfig
from hpstudy.run.device import Execution

logger = logging.getLogger(__name__)
MAX_KEPT = 4  # compiled models kept per process: each holds its weights on the device
CompileKey = tuple[Any, ...]


@dataclass
class Compiled:
    module: nn.Module  # the module the compiled wrapper runs: the run trains its parameters
    step_model: nn.Module  # torch.compile(module)
    user: weakref.ref[Any] | None = None  # what uses it now (a Trainer); dead or None: free

    def in_use(self) -> bool:
        return self.user is not None and self.user() is not None


KEPT: OrderedDict[CompileKey, Compiled] = OrderedDict()
reused_before = False  # the first reuse in a process is logged at info, later ones at debug


def model_key(config: RunConfig) -> tuple[Any, ...]:
    """What of a config decides its model's graph: the model, its source, its arguments and
    its width (the data's shape and the execution decide the rest: `compile_key`)."""
    return (config.model, config.model_source, tuple(sorted(config.model_args.items())),
            config.width)  # fmt: skip


def compile_key(
    config: RunConfig, ex: Execution, classes: int, image_shape: tuple[int, ...]
) -> CompileKey:
    """Everything that decides the compiled graphs (the batch size does not: a graph per
    static shape is kept beside the others)."""
    return (
        *model_key(config),
        classes,
        tuple(image_shape),
        str(ex.device),
        ex.channels_last,
        ex.precision,
        ex.compile_mode,
    )


def compile_model(model: nn.Module, key: CompileKey, mode: str) -> Compiled:
    """`model` compiled in `mode`, or a kept compiled model of the same key that holds
    `model`'s weights now (nothing compiled again). The caller claims the result (`claim`)."""
    global reused_before
    kept = KEPT.get(key)
    if kept is not None and kept.in_use():
        gc.collect()  # a finished run's trainer may only be held by a reference cycle
    if kept is not None and not kept.in_use():
        with torch.no_grad():
            kept.module.load_state_dict(model.state_dict())
        for param in kept.module.parameters():
            param.grad = None
        KEPT.move_to_end(key)
        log = logger.debug if reused_before else logger.info
        log(f"reusing a compiled {key[0]} (mode {mode}): no new compile")
        reused_before = True
        return kept
    # static shapes: the partial last batch gets a graph of its own, once, instead of a
    # recompile to dynamic shapes whose kernels are slower for every full batch
    step_model = torch.compile(model, dynamic=False, mode=mode)
    fresh = Compiled(model, step_model)  # type: ignore[arg-type]
    KEPT[key] = fresh  # one in use under this key (two trainers alive at once) is let go
    KEPT.move_to_end(key)
    free = [k for k, c in KEPT.items() if k != key and not c.in_use()]  # oldest first
    for old in free[: max(0, len(KEPT) - MAX_KEPT)]:
        del KEPT[old]
    return fresh


def claim(compiled: Compiled, user: object) -> None:
    """`user` (a Trainer) trains `compiled` now: no other run takes it over while it lives."""
    compiled.user = weakref.ref(user)


def forget_compiled() -> None:
    """Drop every kept compiled model (tests; a process that wants its memory back)."""
    KEPT.clear()
