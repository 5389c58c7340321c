"""What a study will cost: its runs and epochs from the plan, and seconds from a measured speed.

The arithmetic is the plan's: `Plan.distinct_runs` says which runs a study trains
(whichever settings win, the count is the same), each run's epochs and limits
say how many images it sees, and a `Speed` measured for a few steps of the
study's own model on the device turns images into seconds: the median of several
short timed windows, with their spread and the 1-minute load average beside it.
Speeds are cached per user (`$HPSTUDY_CACHE/speed.json`, else
`~/.cache/hpstudy/speed.json`), per device, model, width, batch and precision, so a
second `study run` on the same machine starts at once; a cached reading taken under a
load above the core count, older than MAX_AGE_DAYS, or by another hpstudy or torch is
measured again, and `study run --remeasure` always measures.

Runs that train at once (`--runs-per-device 2`: the executor's `runs_at_once`) share their
device, so each goes slower than one alone: where there are several slots, each run's
speed while all of them train is measured too, in that many worker processes at the same
moment (`measure_together`), and a stage of n runs is predicted at min(n, slots) at once,
each at the speed measured for that many (linear between one and all: an assumption).
With `compile`, the first steps' extra time is the compile time, added once per model
shape and process where the executor keeps its compiled models, else once per run.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from hpstudy import __version__
from hpstudy.config import RunConfig
from hpstudy.constants import NUM_SUPERCLASSES
from hpstudy.errors import HpstudyError
from hpstudy.files import read_json, write_json
from hpstudy.progress import duration
from hpstudy.run import (
    DeviceData,
    Execution,
    RunDir,
    RunStatus,
    Trainer,
    data_shape,
    device_name,
    model_key,
)
from hpstudy.study.plan import BUDGETS, Plan
from hpstudy.study.state import StudyFolder

# measured steps per window (after warm-up ones) and eval batches: enough to steady a CPU's
# rate in seconds, and a GPU's in well under one
MEASURE = {"cpu": (1, 2, 2), "cuda": (10, 20, 5)}  # warm-up steps, steps, eval batches
WINDOWS = 3  # timed windows of training: the speed is their median, the spread their range
MAX_AGE_DAYS = 30  # a cached speed older than this is measured again


@dataclass(frozen=True)
class Speed:
    """How fast one device trains and evaluates one model at one width, batch and precision."""

    device_name: str
    train_images_per_s: float
    eval_images_per_s: float
    checkpoint_seconds: float  # one epoch's checkpoint write
    measured_now: bool = True  # False: read from the cache
    spread: float = 0.0  # the training windows' range over their median (0.1: within 10 %)
    load: float | None = None  # the 1-minute load average when measured (None: not known)
    measured_at: float = 0.0  # when (seconds since the epoch; 0: not known)
    hpstudy: str = ""  # the hpstudy that measured it
    compile_seconds: float = 0.0  # compiling the training step's graph once (0: not compiled)
    together: int = 1  # how many runs were measured training at once (1: only one alone)
    together_images_per_s: float = 0.0  # each one's training images/s then (0: not measured)

    def train_rate(self, at_once: int) -> float:
        """Training images/s of each of `at_once` runs sharing the device: measured alone
        and with `together` at once, linear between (more than measured: as measured)."""
        if at_once <= 1 or self.together <= 1 or self.together_images_per_s <= 0:
            return self.train_images_per_s
        share = (min(at_once, self.together) - 1) / (self.together - 1)
        alone = self.train_images_per_s
        return alone + (self.together_images_per_s - alone) * share


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
    seconds: float | None  # predicted for what is left, the closing steps included (None: no speed)
    test_images: int = 0  # the test split, evaluated once per seed of the final setting
    test_seconds: float | None = None  # predicted: the final test evaluation
    export_seconds: float | None = None  # predicted: export, its check and timings (None: none)
    no_export: str = "the export extra is not installed"  # why there is none, where none
    at_once: int = 1  # the most runs predicted to train at once (the executor's slots)
    compile_seconds: float = 0.0  # predicted: compiling, within `seconds`

    @property
    def train_seconds(self) -> float | None:
        """The prediction for the epochs left alone (the closing steps left out)."""
        if self.seconds is None:
            return None
        return self.seconds - (self.test_seconds or 0.0) - (self.export_seconds or 0.0)

    def closing_words(self) -> str:
        """The steps after the last epoch, a phrase (with their predicted time)."""
        words = f"test evaluation ({self.test_images:,} images)"
        if self.test_seconds is not None:
            words += f" {duration(self.test_seconds)}"
        if self.export_seconds is not None:
            words += (
                "; export of the final model, its check and latency timings "
                f"{duration(self.export_seconds)} (at least: batch-1 timings run slower)"
            )
        elif self.test_seconds is not None:
            words += f"; no export ({self.no_export})"
        return words


def epoch_images(config: RunConfig, train_size: int, val_size: int) -> tuple[int, int]:
    """Train and validation images one epoch of `config` sees on a split of these sizes."""
    return min(train_size, config.limit_train or train_size), min(
        val_size, config.limit_val or val_size
    )


def epoch_seconds(
    config: RunConfig, speed: Speed, train_size: int, val_size: int, at_once: int = 1
) -> float:
    """One epoch: training and validation of one of `at_once` runs sharing the device
    (validation slowed as training is), and what its checkpoint write takes beyond them:
    the write runs in the background while the next epoch trains (hpstudy.run.checkpoint),
    so it costs only where it is the longer (the last one is waited for: `run_seconds`)."""
    train, val = epoch_images(config, train_size, val_size)
    slower = speed.train_images_per_s / speed.train_rate(at_once)
    epoch = (train / speed.train_images_per_s + val / speed.eval_images_per_s) * slower
    return epoch + max(0.0, speed.checkpoint_seconds * slower - epoch)


def run_seconds(
    config: RunConfig, epochs: int, speed: Speed, sizes: tuple[int, int], at_once: int = 1
) -> float:
    """`epochs` epochs of a run, and the wait for its last checkpoint write."""
    if epochs <= 0:
        return 0.0
    slower = speed.train_images_per_s / speed.train_rate(at_once)
    last_write = speed.checkpoint_seconds * slower
    return epochs * epoch_seconds(config, speed, *sizes, at_once) + last_write


def compile_graphs(config: RunConfig, train_size: int) -> int:
    """Graphs a compiled run compiles: one per static batch shape (a partial last batch is
    a second)."""
    train = min(train_size, config.limit_train or train_size)
    return 1 if train % config.batch_size == 0 or train < config.batch_size else 2


def graph_shape(config: RunConfig) -> tuple[Any, ...]:
    """What decides a run's compiled graphs, as far as a config says (its model's key, the
    data's shape, precision, compile mode and batch): runs alike in these reuse them."""
    return (*model_key(config), config.dataset, config.image_size, config.precision,
            config.compile, config.batch_size)  # fmt: skip


def stage_seconds(
    runs: list[tuple[RunConfig, int]],
    speed: Speed,
    sizes: tuple[int, int],
    slots: int,
    reuses_compiled: bool,
    compiled: set[tuple[Any, ...]],
) -> tuple[float, float]:
    """(training, compiling) seconds of one stage's runs with the epochs each has left:
    min(runs, slots) train at once. A compile is paid per run, or once per model shape and
    batch where the executor keeps compiled models (`compiled`: the shapes already paid)."""
    left = [(run, epochs) for run, epochs in runs if epochs > 0]
    if not left:
        return 0.0, 0.0
    at_once = min(len(left), max(1, slots))
    work = sum(run_seconds(run, epochs, speed, sizes, at_once) for run, epochs in left)
    compiling = 0.0
    if speed.compile_seconds > 0:
        for run, _ in left:
            graphs = compile_graphs(run, sizes[0])
            shape = (*graph_shape(run), graphs)
            if reuses_compiled and shape in compiled:
                continue
            compiled.add(shape)
            # processes compile side by side: where each keeps its models, every slot pays
            # the shape once, at the same time
            compiling += speed.compile_seconds * graphs / (1 if reuses_compiled else at_once)
    return work / at_once, compiling


def study_cost(
    plan: Plan,
    train_size: int,
    val_size: int,
    test_size: int,
    speed: Speed | None = None,
    epochs_done: Callable[[RunConfig], int] | None = None,
    tried: dict[int, list[Any]] | None = None,
    chosen: dict[int, Any] | None = None,
    stopped: Callable[[RunConfig], bool] | None = None,
    export: bool = False,
    slots: int = 1,
    reuses_compiled: bool = True,
) -> StudyCost:
    """The plan's distinct runs, the epochs `epochs_done` says are already trained left out
    of the prediction, then the closing steps: the final test evaluation of each seed and,
    with `export`, the final model's export check and latency timings.

    Stages run one after another; within one, up to `slots` runs train at once, each at
    the speed measured for that many (`Speed.train_rate`), and a compile is paid per run or,
    where the executor `reuses_compiled` models, once per model shape (`stage_seconds`).

    A study resumed in its folder passes what its stages `tried` and `chosen` so far (the
    Optuna trials asked, the winners carried): those runs, not stand-ins, are the plan's;
    `stopped` says which runs will never train (a later seed of a pruned trial)."""
    study = plan.study
    stages = [
        [r for r in stage if not (stopped and stopped(r))]
        for stage in plan.distinct_stage_runs(chosen, tried)
    ]
    runs = [r for stage in stages for r in stage]
    planned = len(study.seeds) * sum(len(stage.stand_ins()) for stage in study.stages)
    done = [min(epochs_done(r), r.epochs) if epochs_done else 0 for r in runs]
    left = {run.run_hash(): run.epochs - d for run, d in zip(runs, done, strict=True)}
    seconds = test_seconds = export_seconds = None
    compile_seconds = 0.0
    if speed is not None:
        seconds, compiled = 0.0, set[tuple[Any, ...]]()
        for stage in stages:
            work, compiling = stage_seconds(
                [(run, left[run.run_hash()]) for run in stage], speed, (train_size, val_size),
                slots, reuses_compiled, compiled,
            )  # fmt: skip
            seconds += work + compiling
            compile_seconds += compiling
        test_seconds = len(study.seeds) * test_size / speed.eval_images_per_s
        if export:
            export_seconds = export_images() / speed.eval_images_per_s
        seconds += test_seconds + (export_seconds or 0.0)
    train, val = epoch_images(runs[0], train_size, val_size)
    return StudyCost(
        budget=plan.budget,
        runs=len(runs),
        epochs=sum(r.epochs for r in runs),
        reused=max(0, planned - len(runs)),
        done_runs=sum(d == r.epochs for r, d in zip(runs, done, strict=True)),
        done_epochs=sum(done),
        train_images=train,
        val_images=val,
        seconds=seconds,
        test_images=len(study.seeds) * test_size,
        test_seconds=test_seconds,
        export_seconds=export_seconds,
        at_once=max(
            [1, *(min(slots, sum(left[r.run_hash()] > 0 for r in stage)) for stage in stages)]
        ),
        compile_seconds=compile_seconds,
    )


def export_images() -> int:
    """Images the export pushes through PyTorch and ONNX Runtime together: its check, its
    batch-256 throughput runs and its batch-1 latency runs (hpstudy.export's counts)."""
    from hpstudy import export

    per_runtime = (
        export.CHECK_IMAGES
        + (export.THROUGHPUT_RUNS + 1) * export.THROUGHPUT_BATCH
        + export.LATENCY_RUNS
        + export.WARMUP_RUNS
    )
    return 2 * per_runtime


def can_export() -> bool:
    """The export extra is installed (the study exports its final model only then)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None
               for m in ("onnx", "onnxruntime", "safetensors"))  # fmt: skip


def resumed_plan(folder: StudyFolder) -> tuple[dict[int, list[Any]], dict[int, Any]]:
    """What each stage of the study in `folder` tried and carried so far (nothing for a new
    folder): a resumed study's cost counts those runs, not the plan's stand-ins."""
    tried: dict[int, list[Any]] = {}
    chosen: dict[int, Any] = {}
    if not folder.state_path.is_file():
        return tried, chosen
    try:
        state = folder.read_state()
    except HpstudyError:  # a state this version cannot read: the plan's stand-ins
        return tried, chosen
    for k, stage in enumerate(state.stages):
        tried[k] = [setting.value for setting in stage.settings]
        carried = stage.carried if stage.carried is not None else stage.winner
        if carried is not None and carried < len(stage.settings):
            chosen[k] = stage.settings[carried].value
    return tried, chosen


def pruned_first_seed(folder: StudyFolder, plan: Plan) -> Callable[[RunConfig], bool]:
    """Whether a run is a later seed of a run the folder holds pruned: an Optuna trial
    whose first seed was pruned trains no other seed."""
    first = plan.study.seeds[0]

    def stopped(config: RunConfig) -> bool:
        if config.seed == first:
            return False
        twin = config.model_copy(update={"seed": first})
        if plan.study.split_follows_seed:
            twin = twin.model_copy(update={"split_seed": first})
        return RunDir(folder.run_dir(twin.run_hash())).status() == RunStatus.PRUNED

    return stopped


def budget_costs(
    plan: Plan,
    train_size: int,
    val_size: int,
    test_size: int,
    speed: Speed | None,
    export: bool = False,
    slots: int = 1,
    reuses_compiled: bool = True,
) -> list[StudyCost]:
    """The cost of every budget cheaper than `plan`'s, from scratch."""
    cheaper = BUDGETS[BUDGETS.index(plan.budget) + 1 :]
    sizes = (train_size, val_size, test_size)
    at_once = {"slots": slots, "reuses_compiled": reuses_compiled}
    return [
        study_cost(Plan(plan.study, b, plan.device_type), *sizes, speed, export=export, **at_once)
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


def compiled_name(mode: str | None) -> str:
    """eager, compile (mode default: the key written before modes existed) or compile MODE."""
    if mode is None:
        return "eager"
    return "compile" if mode == "default" else f"compile {mode}"


def speed_key(config: RunConfig, ex: Execution) -> str:
    return (
        f"{device_name(ex.device)}|{config.model}|width {config.width:g}|batch {config.batch_size}"
        f"|{ex.precision}|{'channels_last' if ex.channels_last else 'nchw'}"
        f"|{compiled_name(ex.compile_mode)}|eval {ex.eval_batch_size}"
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


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):  # a system without one
        return None


def trustworthy(entry: dict[str, object], now: float) -> bool:
    """A cached reading to use again: taken by this hpstudy (torch is in the key), within
    MAX_AGE_DAYS, under a load no higher than the core count."""
    load, at = entry.get("load"), entry.get("measured_at")
    if entry.get("hpstudy") != __version__ or not isinstance(at, int | float):
        return False
    if not 0 <= now - at <= MAX_AGE_DAYS * 86400:
        return False
    return isinstance(load, int | float) and load <= (os.cpu_count() or 1)


def is_duration(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value >= 0


def cached_speed(entry: object, now: float | None = None) -> Speed | None:
    """A cache entry as a Speed, or None where it is not one (an older or foreign file) or
    is not to be trusted any more (`trustworthy`)."""
    rates = ("train_images_per_s", "eval_images_per_s", "checkpoint_seconds")
    if not isinstance(entry, dict) or not isinstance(entry.get("device_name"), str):
        return None
    values = [entry.get(k) for k in rates]
    if not all(isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in values):
        return None
    if not trustworthy(entry, time.time() if now is None else now):
        return None
    spread, compiling = entry.get("spread"), entry.get("compile_seconds")
    return Speed(
        entry["device_name"],
        *map(float, values),  # type: ignore[arg-type]
        measured_now=False,
        spread=float(spread) if isinstance(spread, int | float) else 0.0,
        load=float(entry["load"]),  # type: ignore[arg-type]
        measured_at=float(entry["measured_at"]),  # type: ignore[arg-type]
        hpstudy=__version__,
        compile_seconds=float(compiling) if is_duration(compiling) else 0.0,
    )


def measure_speed(config: RunConfig, device: str | None = None, remeasure: bool = False) -> Speed:
    """The study's model on the device (random images: speed does not depend on them), a few
    windows of steps timed; read from the cache where measured before and still trusted
    (`trustworthy`), unless `remeasure`. Called where runs run. With `compile`, the first
    steps' time beyond the steady rate is the compile time."""
    config, ex = resolved(config, device)
    path, key = cache_path(), speed_key(config, ex)
    if not remeasure and (cached := cached_speed(read_cache(path).get(key))) is not None:
        return cached
    rng = torch.get_rng_state()  # measuring must not move the run's own random stream
    trainer, d, warmup = probe(config, ex)
    head = d.head(train=warmup * config.batch_size)
    first = timed(ex, lambda: trainer.train_epoch(head, 10_000, False))
    load = load_average()
    windows = timed_windows(ex, trainer, d)
    train_seconds = windows[len(windows) // 2]
    train_n = len(d.train_x)
    trainer.evaluate(d.head(val=ex.eval_batch_size))
    eval_seconds = timed(ex, lambda: trainer.evaluate(d))
    with tempfile.TemporaryDirectory(prefix="hpstudy-speed-") as tmp:
        ckpt = timed(ex, lambda: RunDir(tmp).save_checkpoint(trainer.state()))
    torch.set_rng_state(rng)
    after = load_average()
    steady_first = train_seconds * warmup * config.batch_size / train_n
    speed = Speed(
        device_name(ex.device),
        train_n / train_seconds,
        len(d.val_x) / eval_seconds,
        ckpt,
        spread=(windows[-1] - windows[0]) / train_seconds,
        load=max(load, after) if load is not None and after is not None else load,
        measured_at=time.time(),
        hpstudy=__version__,
        compile_seconds=max(0.0, first - steady_first) if ex.compile else 0.0,
    )
    store(path, key, speed)
    return speed


def resolved(config: RunConfig, device: str | None) -> tuple[RunConfig, Execution]:
    """`config` on `device` (None: its own), its precision resolved there, and its Execution."""
    if device is not None:
        config = config.model_copy(update={"device": device})
    ex = Execution.resolve(config)
    return config.for_device(ex.device.type), ex


def timed_windows(ex: Execution, trainer: Trainer, d: DeviceData) -> list[float]:
    """Seconds of WINDOWS passes over `d`, sorted: the median is the speed, the range its
    spread."""
    return sorted(timed(ex, lambda: trainer.train_epoch(d, 0, False)) for _ in range(WINDOWS))


def probe(config: RunConfig, ex: Execution) -> tuple[Trainer, DeviceData, int]:
    """The config's trainer on random images of its data's shape, and its warm-up steps."""
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
    return Trainer.create(config, ex, (classes, image_shape)), d, warmup


MEETING_TIMEOUT = 300.0  # seconds the processes measuring together wait for each other


def measure_together(
    config: RunConfig, meeting: str, count: int, device: str | None = None
) -> float:
    """This process's training images/s while `count` processes run this at once: each
    warms up (compiles), waits in the folder `meeting` until all `count` are ready, then
    times its windows of steps. Called in every worker at once (`Executor.call_at_once`)."""
    config, ex = resolved(config, device)
    rng = torch.get_rng_state()
    trainer, d, warmup = probe(config, ex)
    trainer.train_epoch(d.head(train=warmup * config.batch_size), 10_000, False)
    ex.sync()
    folder = Path(meeting)
    (folder / f"ready-{os.getpid()}").touch()
    waited = time.monotonic()
    while len(list(folder.glob("ready-*"))) < count:
        if time.monotonic() - waited > MEETING_TIMEOUT:
            raise HpstudyError(
                f"speed measurement: {count} runs at once were asked for, but the other "
                f"workers were not ready within {MEETING_TIMEOUT:.0f} s"
            )
        time.sleep(0.01)
    windows = timed_windows(ex, trainer, d)
    torch.set_rng_state(rng)
    return len(d.train_x) / windows[len(windows) // 2]


def speed_together(
    call_at_once: Callable[..., list[float]],
    slots: int,
    config: RunConfig,
    speed: Speed,
    remeasure: bool = False,
) -> Speed:
    """`speed` with each run's training rate while `slots` runs train at once (cached as
    the speed is, under its key and the count), measured through `call_at_once`, an
    executor's; `speed` as it is for one slot."""
    if slots <= 1:
        return speed
    execution = ("precision", "channels_last", "compile", "eval_batch_size", "model_args")
    key = f"{speed.device_name}|together {slots}|" + "|".join(
        str(getattr(config, name))
        for name in ("model", "width", "batch_size", *execution, "model_source", "data_source")
    )
    path = cache_path()
    # a speed measured again now is measured again together too
    if not (remeasure or speed.measured_now):
        held = cached_speed(read_cache(path).get(key))
        if held is not None:
            rate = held.train_images_per_s
            return dataclasses.replace(speed, together=slots, together_images_per_s=rate)
    with tempfile.TemporaryDirectory(prefix="hpstudy-together-") as meeting:
        rates = call_at_once(measure_together, config, meeting, slots)
    rate = sum(rates) / len(rates)
    held = dataclasses.replace(
        speed, train_images_per_s=rate, measured_at=time.time(), load=load_average(),
        hpstudy=__version__,
    )  # fmt: skip
    store(path, key, held)
    return dataclasses.replace(speed, together=slots, together_images_per_s=rate)


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


def speed_note(speed: Speed, now: float | None = None) -> str:
    """How far to trust a speed: when it was measured, how noisy, under what load."""
    if speed.measured_now:
        when = "measured now"
    else:
        age = max(0.0, (time.time() if now is None else now) - speed.measured_at)
        when = f"measured {duration(age)} ago, cached per user in {cache_path()}"
    cores = os.cpu_count() or 1
    load = f", load {speed.load:.1f} on {cores} cores" if speed.load is not None else ""
    return f"{when}; windows within ±{50 * speed.spread:.0f} %{load}"



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
    lines.append(f"  after training: {cost.closing_words()}")
    lines.append(
        f"  predicted on {speed.device_name}: {duration(cost.seconds or 0.0)} "
        f"(train {speed.train_images_per_s:.0f} img/s, eval {speed.eval_images_per_s:.0f} "
        f"img/s, {speed_note(speed)})"
    )
    if cost.at_once > 1:
        lines.append(
            f"  up to {cost.at_once} runs at once: each trains at "
            f"{speed.train_rate(cost.at_once):.0f} img/s then (measured with "
            f"{speed.together} at once); a stage with fewer runs trains fewer at once"
        )
    if cost.compile_seconds > 0:
        lines.append(
            f"  compiling: {duration(cost.compile_seconds)} of it "
            f"({speed.compile_seconds:.0f} s per graph, measured)"
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
    "can_export",
    "cost_block",
    "epoch_images",
    "epoch_seconds",
    "epochs_in",
    "measure_speed",
    "measure_together",
    "pruned_first_seed",
    "resumed_plan",
    "run_seconds",
    "speed_note",
    "speed_together",
    "study_cost",
]
