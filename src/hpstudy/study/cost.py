"""What a study will cost: its runs and epochs from the plan, and seconds from a measured speed.

The arithmetic is the plan's: `Plan.distinct_runs` says which runs a study trains
(whichever settings win, the count is the same), each run's epochs and limits
say how many images it sees, and a `Speed` measured for a few steps of the
study's own model on the device turns images into seconds. Speeds are cached per
device, model, width, batch and precision in a small JSON file
(`$HPSTUDY_CACHE/speed.json`, else `~/.cache/hpstudy/speed.json`), so a second
`study run` on the same machine starts at once.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from hpstudy.config import RunConfig
from hpstudy.constants import NUM_SUPERCLASSES
from hpstudy.errors import HpstudyError
from hpstudy.files import read_json, write_json
from hpstudy.progress import duration
from hpstudy.run import DeviceData, Execution, RunDir, Trainer, data_shape, device_name
from hpstudy.study.plan import BUDGETS, Plan
from hpstudy.study.state import StudyFolder

# measured steps (after warm-up ones) and eval batches: enough to steady a CPU's rate in
# seconds, and a GPU's in well under one
MEASURE = {"cpu": (1, 4, 2), "cuda": (10, 40, 5)}  # warm-up steps, steps, eval batches


@dataclass(frozen=True)
class Speed:
    """How fast one device trains and evaluates one model at one width, batch and precision."""

    device_name: str
    train_images_per_s: float
    eval_images_per_s: float
    checkpoint_seconds: float  # one epoch's checkpoint write
    measured_now: bool = True  # False: read from the cache


@dataclass(frozen=True)
class StudyCost:
    """A study at a budget: what it trains, and (with a speed) how long that takes."""

    budget: str
    runs: int  # distinct runs it trains
    epochs: int  # epochs of those runs
    reused: int  # runs a later stage meets again: reused, not trained twice
    done_runs: int  # of `runs`, already finished in the study folder
    done_epochs: int  # of `epochs`, already in the study folder
    train_images: int  # per epoch, of the base configuration
    val_images: int
    seconds: float | None  # predicted for what is left (None: no speed)


def epoch_images(config: RunConfig, train_size: int, val_size: int) -> tuple[int, int]:
    """Train and validation images one epoch of `config` sees on a split of these sizes."""
    return min(train_size, config.limit_train or train_size), min(
        val_size, config.limit_val or val_size
    )


def epoch_seconds(config: RunConfig, speed: Speed, train_size: int, val_size: int) -> float:
    """One epoch: training, validation and the checkpoint write."""
    train, val = epoch_images(config, train_size, val_size)
    return train / speed.train_images_per_s + val / speed.eval_images_per_s + (
        speed.checkpoint_seconds
    )


def study_cost(
    plan: Plan,
    train_size: int,
    val_size: int,
    test_size: int,
    speed: Speed | None = None,
    epochs_done: Callable[[RunConfig], int] | None = None,
) -> StudyCost:
    """The plan's distinct runs, the epochs `epochs_done` says are already trained left out
    of the prediction (with the final test evaluation of each seed)."""
    study = plan.study
    runs = plan.distinct_runs()
    planned = len(study.seeds) * sum(len(stage.stand_ins()) for stage in study.stages)
    done = [min(epochs_done(r), r.epochs) if epochs_done else 0 for r in runs]
    seconds = None
    if speed is not None:
        seconds = sum(
            (run.epochs - d) * epoch_seconds(run, speed, train_size, val_size)
            for run, d in zip(runs, done, strict=True)
        )
        seconds += len(study.seeds) * test_size / speed.eval_images_per_s
    train, val = epoch_images(runs[0], train_size, val_size)
    return StudyCost(
        budget=plan.budget,
        runs=len(runs),
        epochs=sum(r.epochs for r in runs),
        reused=planned - len(runs),
        done_runs=sum(d == r.epochs for r, d in zip(runs, done, strict=True)),
        done_epochs=sum(done),
        train_images=train,
        val_images=val,
        seconds=seconds,
    )


def budget_costs(
    plan: Plan, train_size: int, val_size: int, test_size: int, speed: Speed | None
) -> list[StudyCost]:
    """The cost of `plan`'s budget and of every cheaper one, from scratch."""
    cheaper = BUDGETS[BUDGETS.index(plan.budget) + 1 :]
    return [
        study_cost(Plan(plan.study, b, plan.device_type), train_size, val_size, test_size, speed)
        for b in cheaper
    ]


# ---------------------------------------------------------------- the speed, measured or cached


def cache_path() -> Path:
    """`$HPSTUDY_CACHE/speed.json`, else the per-user cache's."""
    folder = os.environ.get("HPSTUDY_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "hpstudy",
    )
    return Path(folder) / "speed.json"


def speed_key(config: RunConfig, ex: Execution) -> str:
    return (
        f"{device_name(ex.device)}|{config.model}|width {config.width:g}|batch {config.batch_size}"
        f"|{ex.precision}|{'channels_last' if ex.channels_last else 'nchw'}"
        f"|{'compile' if ex.compile else 'eager'}|eval {ex.eval_batch_size}"
        f"|torch {torch.__version__}"
    ) + "".join(  # the user's model or data: its own speed (CIFAR's keys stay as they were)
        f"|{part}"
        for part in (config.model_source, config.data_source, config.image_size)
        if part is not None
    ) + (f"|args {sorted(config.model_args.items())}" if config.model_args else "")


def read_cache(path: Path) -> dict[str, dict[str, float]]:
    """The cache, or nothing where it is missing or unreadable: a cache is never an error."""
    try:
        cached = read_json(path, "speed") if path.is_file() else {}
    except (HpstudyError, OSError):
        return {}
    return cached if isinstance(cached, dict) else {}


def cached_speed(entry: object) -> Speed | None:
    """A cache entry as a Speed, or None where it is not one (an older or foreign file)."""
    rates = ("train_images_per_s", "eval_images_per_s", "checkpoint_seconds")
    if not isinstance(entry, dict) or not isinstance(entry.get("device_name"), str):
        return None
    values = [entry.get(k) for k in rates]
    if not all(isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in values):
        return None
    return Speed(entry["device_name"], *map(float, values), measured_now=False)  # type: ignore[arg-type]


def measure_speed(config: RunConfig, device: str | None = None) -> Speed:
    """The study's model on the device (random images: speed does not depend on them), a few
    steps timed; read from the cache where measured before. Called where runs run."""
    if device is not None:
        config = config.model_copy(update={"device": device})
    ex = Execution.resolve(config)
    config = config.for_device(ex.device.type)
    path, key = cache_path(), speed_key(config, ex)
    if (cached := cached_speed(read_cache(path).get(key))) is not None:
        return cached
    warmup, steps, eval_batches = MEASURE.get(ex.device.type, MEASURE["cuda"])
    gen = torch.Generator().manual_seed(0)
    train_n, val_n = steps * config.batch_size, eval_batches * ex.eval_batch_size

    classes, image_shape = data_shape(config)

    def images(n: int) -> torch.Tensor:
        return torch.randint(0, 256, (n, *image_shape), dtype=torch.uint8, generator=gen)

    def labels(n: int, k: int) -> torch.Tensor:
        return torch.randint(0, k, (n,), generator=gen)

    d = DeviceData(
        train_x=images(train_n).to(ex.device),
        train_y=labels(train_n, classes).to(ex.device),
        val_x=images(val_n).to(ex.device),
        val_y=labels(val_n, classes).to(ex.device),
        val_coarse=labels(val_n, NUM_SUPERCLASSES).to(ex.device),
        mean=torch.full((image_shape[0],), 0.5, device=ex.device),
        std=torch.full((image_shape[0],), 0.25, device=ex.device),
    )
    rng = torch.get_rng_state()  # measuring must not move the run's own random stream
    trainer = Trainer.create(config, ex, (classes, image_shape))
    trainer.train_epoch(d.head(train=warmup * config.batch_size), 10_000, False)
    train_seconds = timed(ex, lambda: trainer.train_epoch(d, 0, False))
    trainer.evaluate(d.head(val=ex.eval_batch_size))
    eval_seconds = timed(ex, lambda: trainer.evaluate(d))
    with tempfile.TemporaryDirectory(prefix="hpstudy-speed-") as tmp:
        ckpt = timed(ex, lambda: RunDir(tmp).save_checkpoint(trainer.state()))
    torch.set_rng_state(rng)
    speed = Speed(device_name(ex.device), train_n / train_seconds, val_n / eval_seconds, ckpt)
    store(path, key, speed)
    return speed


def timed(ex: Execution, fn: Callable[[], object]) -> float:
    ex.sync()
    t0 = time.perf_counter()
    fn()
    ex.sync()
    return max(time.perf_counter() - t0, 1e-9)


def store(path: Path, key: str, speed: Speed) -> None:
    """Add `speed` to the cache; a cache that cannot be written is skipped, never an error."""
    entry = {k: v for k, v in asdict(speed).items() if k != "measured_now"}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {**read_cache(path), key: entry}, "speed")
    except (HpstudyError, OSError):
        pass


# ---------------------------------------------------------------- a study folder


def epochs_in(folder: StudyFolder, config: RunConfig) -> int:
    """Epochs of `config` trained in `folder` (a diverged run counts as done)."""
    run = RunDir(folder.run_dir(config.run_hash()))
    status = run.status()
    if status.done:
        return config.epochs
    return min(config.epochs, len(run.read_metrics()))


# ---------------------------------------------------------------- words


def cost_block(name: str, cost: StudyCost, cheaper: list[StudyCost], speed: Speed) -> list[str]:
    """The lines `study run` prints before anything trains."""
    to_train = cost.epochs - cost.done_epochs
    reused = f" ({cost.reused} met again in a later stage: reused)" if cost.reused else ""
    lines = [f"{name} ({cost.budget}): {cost.runs} runs to train, {cost.epochs:,} epochs{reused}"]
    if cost.done_epochs:
        lines.append(
            f"  already done: {cost.done_runs} runs, {cost.done_epochs:,} epochs; "
            f"{to_train:,} epochs left to train"
        )
    lines.append(f"  images per epoch: {cost.train_images:,} train, {cost.val_images:,} val")
    how = "measured now" if speed.measured_now else "measured before, cached"
    lines.append(
        f"  predicted on {speed.device_name}: {duration(cost.seconds or 0.0)} "
        f"(train {speed.train_images_per_s:.0f} img/s, eval {speed.eval_images_per_s:.0f} "
        f"img/s, {how})"
    )
    if cheaper:
        lines.append(
            "  cheaper: "
            + ", ".join(f"--budget {c.budget} {duration(c.seconds or 0.0)}" for c in cheaper)
        )
    lines.append("  Ctrl-C stops it at any time; the same command resumes where it stopped")
    return lines


__all__ = [
    "Speed",
    "StudyCost",
    "budget_costs",
    "cost_block",
    "epoch_images",
    "epoch_seconds",
    "epochs_in",
    "measure_speed",
    "study_cost",
]
