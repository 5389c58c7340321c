"""Run hooks: who hears of a run as it trains (its start, each epoch, its end), and may stop it.

A hook is a `RunHook`: `on_start(config, run_dir, start_epoch)` once the run's folder,
data and model are there; `on_epoch(epoch, row) -> bool` after every epoch, before its
checkpoint (and again for the checkpoint's epoch when a run resumes, so a kill between
the two loses no decision), True to stop the run there (recorded as pruned, unless it
was the last epoch); `on_end(summary)` once the run's summary is written (None: an
exception stopped the run, and whoever called `train` records it).

Runs travel to worker processes, Ray tasks and SLURM jobs, hooks as `HookSpec(name,
args)`: plain data, pickled with the job and resolved in the worker by `resolve_hooks`.
A name is one registered here (`register_hook`; the built-ins below), an entry point of
the group `hpstudy.hooks`, or a "module:attr" reference imported in the worker. The
factory is called with the spec's args as keywords and returns the hook.

Built-ins: "tensorboard" (hpstudy.run.events: event files in the run folder) and
"progress" (each epoch's labelled line, and the study's live display where the command
line shows one). A search's trial reporter (Optuna) is a hook of the study's, named by
its "module:attr" reference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpstudy import plugins, progress
from hpstudy.errors import HpstudyError

if TYPE_CHECKING:
    from hpstudy.config import RunConfig
    from hpstudy.run.folder import MetricRow, Summary

HOOK_GROUP = "hpstudy.hooks"


class RunHook:
    """A no-op hook: subclass it and override what you need."""

    def on_start(self, config: RunConfig, run_dir: Path, start_epoch: int) -> None:
        """The run starts (`start_epoch` epochs already done: a resumed run)."""

    def on_epoch(self, epoch: int, row: MetricRow) -> bool:
        """Epoch `epoch` (1-based) ended with metrics `row`; True stops the run as pruned."""
        return False

    def on_end(self, summary: Summary | None) -> None:
        """The run ended with `summary` written (None: an exception stopped it)."""


HookFactory = Callable[..., RunHook]


@dataclass(frozen=True)
class HookSpec:
    """A hook as plain data, to travel with a job: the factory's name and its keyword args
    (picklable values: strings, numbers, paths)."""

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)


# name -> factory, or the "module:attr" of one (imported only when a run asks for it)
_HOOKS: dict[str, HookFactory | str] = {
    "tensorboard": "hpstudy.run.events:TensorBoardHook",
    "progress": "hpstudy.run.hooks:ProgressHook",
}


def register_hook(name: str, factory: HookFactory | str) -> None:
    """Make `HookSpec(name, args)` build `factory(**args)`; `factory` may be a "module:attr"
    reference, imported in the worker when a run first asks for it. A hook registered in
    the driver only is unknown to worker processes: give those a reference or an entry
    point."""
    if not name or plugins.is_reference(name):
        raise HpstudyError(f"hook name {name!r}: a plain name (no ':')")
    _HOOKS[name] = factory


def hook_names() -> list[str]:
    return sorted(set(_HOOKS) | set(plugins.entry_point_names(HOOK_GROUP)))


def hook_factory(name: str) -> HookFactory:
    """The factory a spec's name stands for: registered, an entry point, or a reference."""
    found: Any = _HOOKS.get(name)
    if found is None and plugins.is_reference(name):
        found = name
    if found is None:
        found = plugins.load_entry_point(HOOK_GROUP, name)
    if found is None:
        raise HpstudyError(f"unknown run hook {name!r}; known hooks: {', '.join(hook_names())}")
    if isinstance(found, str):
        found = plugins.load_object(found, f"run hook {name!r}")
    if not callable(found):
        raise HpstudyError(f"run hook {name!r}: {found!r} is not callable")
    return found


def resolve_hooks(hooks: Iterable[RunHook | HookSpec]) -> list[RunHook]:
    """Hooks ready to call: each spec built by its factory, each hook kept as it is."""
    resolved = []
    for hook in hooks:
        if isinstance(hook, HookSpec):
            hook = hook_factory(hook.name)(**dict(hook.args))
        resolved.append(hook)
    return resolved


def default_hooks(label: str | None = None) -> tuple[HookSpec, ...]:
    """What a run has unless told otherwise: TensorBoard event files and its epoch lines
    (labelled `label`, else by its folder's name)."""
    return (HookSpec("tensorboard"), HookSpec("progress", {"label": label}))


def epoch_line(label: str, row: MetricRow, epochs: int) -> str:
    """`stage 2 schedule=cosine seed 0 · epoch 3/30 · train loss 2.41 acc 0.38 · val loss 2.50
    acc 0.36 · 412 img/s`: what an epoch leaves behind, every number labelled."""
    return (
        f"{label} · epoch {int(row['epoch'])}/{epochs} · lr {row['lr']:.4g} · "
        f"train loss {row['train_loss']:.3f} acc {row['train_acc']:.3f} · "
        f"val loss {row['val_loss']:.3f} acc {row['val_acc']:.3f} · "
        f"{row['images_per_s']:.0f} img/s · {row['seconds']:.1f} s"
    )


class ProgressHook(RunHook):
    """"progress": one labelled line per epoch trained (hpstudy.progress's logger), and the
    study's live display moved on where one is open in this process."""

    def __init__(self, label: str | None = None) -> None:
        self.label = label
        self.epochs = 0
        self.start_epoch = 0

    def on_start(self, config: RunConfig, run_dir: Path, start_epoch: int) -> None:
        self.label = self.label or Path(run_dir).name
        self.epochs, self.start_epoch = config.epochs, start_epoch
        progress.run_started(self.label)

    def on_epoch(self, epoch: int, row: MetricRow) -> bool:
        if epoch > self.start_epoch:  # the checkpoint's epoch, told again on resume, was shown
            progress.epoch_finished(epoch_line(self.label or "", row, self.epochs), row["seconds"])
        return False

    def on_end(self, summary: Summary | None) -> None:
        if summary is not None:
            progress.run_finished()


__all__ = [
    "HOOK_GROUP",
    "HookSpec",
    "ProgressHook",
    "RunHook",
    "default_hooks",
    "epoch_line",
    "hook_factory",
    "hook_names",
    "register_hook",
    "resolve_hooks",
]
