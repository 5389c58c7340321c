"""Predict the wall time of a study (default: seed-report at the full budget) on this device.

Measures hpstudy's train step (train_epoch) and evaluation (evaluate_arrays at the eval
batch) for a few batches, then adds up every distinct run of the study:
epochs x (train images / train rate + val images / eval rate + checkpoint write),
plus the final test evaluation of each seed.

    python benchmarks/study_cost.py --root /tmp/cifar-real --no-verify
    python benchmarks/study_cost.py --steps 3 --eval-batches 1     # synthetic data, quick
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    ARCHIVE_TEST_IMAGES,
    ARCHIVE_TRAIN_IMAGES,
    Step,
    add_data_options,
    build_step,
    environment,
    given_or_default,
    head,
    load_source,
    run_and_print,
    sync,
    time_epoch,
    train_split_size,
    val_head,
)

from hpstudy.config import RunConfig
from hpstudy.errors import HpstudyError
from hpstudy.study import StudyConfig, load_study, stage_config
from hpstudy.train import (
    DeviceData,
    Execution,
    device_data,
    evaluate_arrays,
    resolve_device,
    save_checkpoint,
)

DEFAULTS = {"cpu": (50, 2, 3), "cuda": (300, 30, 10)}  # train steps, warm-up steps, eval batches
TARGET_HOURS_GPU = 1.5


# ---------------------------------------------------------------- the study's runs


def distinct_runs(study: StudyConfig, budget: str) -> list[RunConfig]:
    """Every run the study trains, once each (a reused configuration is not trained again).

    Winners are the published ones where the study names them, else each stage's first
    value; which setting wins does not change how many epochs the study trains.
    """
    runs: dict[str, RunConfig] = {}
    for seed in study.seeds:
        winners: dict[str, Any] = {}
        for stage in study.stages:
            for value in stage.values:
                config = stage_config(study, stage, value, winners, seed, budget)
                runs.setdefault(config.run_hash(), config)
            labels = [stage.label(i) for i in range(len(stage.values))]
            pick = labels.index(stage.published_winner) if stage.published_winner in labels else 0
            winners[stage.field] = stage.values[pick]
    return list(runs.values())


def split_sizes(config: RunConfig) -> tuple[int, int]:
    """Train and val images of one epoch of `config` on the real archive."""
    train = int(0.8 * ARCHIVE_TRAIN_IMAGES)
    val = ARCHIVE_TRAIN_IMAGES - train
    return min(train, config.limit_train or train), min(val, config.limit_val or val)


# ---------------------------------------------------------------- measurements


def eval_seconds(s: Step, d: DeviceData) -> float:
    sync(s.ex.device)
    t0 = time.perf_counter()
    evaluate_arrays(
        s.model, d.val_x, d.val_y, d.val_coarse, d.mean, d.std, s.ex, s.ex.eval_batch_size
    )
    sync(s.ex.device)
    return time.perf_counter() - t0


def checkpoint_seconds(s: Step, repeats: int = 3) -> float:
    """One epoch's checkpoint.pt write (model + optimizer state, fsync'd), as train writes it."""
    state = {"model": s.model.state_dict(), "optimizer": s.optimizer.state_dict()}
    times = []
    with tempfile.TemporaryDirectory(prefix="hpstudy-ckpt-") as tmp:
        for _ in range(repeats):
            t0 = time.perf_counter()
            save_checkpoint(Path(tmp) / "checkpoint.pt", state)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def predict(args: argparse.Namespace) -> dict[str, Any]:
    device = resolve_device(args.device)
    env = environment(device)  # the load average before this run adds to it
    study = load_study(args.study)
    steps, warmup, eval_batches = given_or_default(
        args, ("steps", "warmup", "eval_batches"), DEFAULTS[device.type]
    )
    if steps < 1 or eval_batches < 1 or warmup < 0:
        raise HpstudyError("--steps and --eval-batches must be >= 1, --warmup >= 0")
    base = RunConfig(**study.base)
    train_n = max(steps, warmup) * base.batch_size
    eval_batch = Execution.resolve(base.model_copy(update={"device": str(device)})).eval_batch_size
    val_n = eval_batches * eval_batch
    cifar, source = load_source(args)
    if train_split_size(cifar) < train_n or len(cifar.train.fine) - train_split_size(cifar) < val_n:
        raise HpstudyError(
            f"{source}: too few images for {train_n} train and {val_n} val images; "
            "lower --steps or --eval-batches"
        )
    config = base.model_copy(
        update={"device": str(device), "limit_train": train_n, "limit_val": val_n}
    )
    d = device_data(cifar, config, device)
    s = build_step(config)

    log(f"train: {warmup} warm-up + {steps} measured steps of batch {base.batch_size}")
    if warmup:
        time_epoch(s, head(d, warmup * base.batch_size), epoch=10_000)
    train_rate = steps * base.batch_size / time_epoch(s, head(d, steps * base.batch_size), epoch=0)
    log(f"eval: 1 warm-up + {eval_batches} measured batches of {s.ex.eval_batch_size}")
    eval_seconds(s, val_head(d, s.ex.eval_batch_size))
    eval_rate = val_n / eval_seconds(s, d)
    ckpt = checkpoint_seconds(s)

    runs = []
    for run in distinct_runs(study, args.budget):
        train_images, val_images = split_sizes(run)
        epoch = train_images / train_rate + val_images / eval_rate + ckpt
        runs.append(
            {
                "run_hash": run.run_hash(),
                "seed": run.seed,
                "epochs": run.epochs,
                "seconds": run.epochs * epoch,
            }
        )
    test_seconds = len(study.seeds) * ARCHIVE_TEST_IMAGES / eval_rate
    total = sum(r["seconds"] for r in runs) + test_seconds
    return {
        **env,
        "data": source,
        "study": study.name,
        "budget": args.budget,
        "precision": s.ex.precision,
        "channels_last": s.ex.channels_last,
        "compile": s.ex.compile,
        "width": base.width,
        "batch_size": base.batch_size,
        "eval_batch_size": s.ex.eval_batch_size,
        "train_images_per_s": train_rate,
        "eval_images_per_s": eval_rate,
        "checkpoint_seconds": ckpt,
        "measured": {"train_steps": steps, "warmup_steps": warmup, "eval_batches": eval_batches},
        "runs": runs,
        "epochs": sum(r["epochs"] for r in runs),
        "test_seconds": test_seconds,
        "predicted_seconds": total,
        "predicted_hours": total / 3600,
    }


# ---------------------------------------------------------------- output


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def show(r: dict[str, Any]) -> None:
    load = ", ".join(f"{x:.2f}" for x in r["load_average"])
    print(f"device  {r['device_name']}, torch {r['torch']}, load average at start {load}")
    print(
        f"step    {r['precision']}, {'channels_last' if r['channels_last'] else 'NCHW'}"
        f"{', compile' if r['compile'] else ''}; width {r['width']}; data {r['data']}"
    )
    m = r["measured"]
    print(
        f"train   {r['train_images_per_s']:.1f} img/s at batch {r['batch_size']} "
        f"({m['train_steps']} steps after {m['warmup_steps']})"
    )
    print(
        f"eval    {r['eval_images_per_s']:.1f} img/s at batch {r['eval_batch_size']} "
        f"({m['eval_batches']} batches)"
    )
    print(f"ckpt    {r['checkpoint_seconds']:.3f} s per epoch")
    print(
        f"study   {r['study']} ({r['budget']}): {len(r['runs'])} distinct runs, "
        f"{r['epochs']} epochs, test evaluation {r['test_seconds']:.0f} s"
    )
    print(f"predicted wall time: {r['predicted_hours']:.2f} h")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--study", default="seed-report", help="a TOML file or a built-in name")
    p.add_argument("--budget", choices=("full", "short", "smoke"), default="full")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    p.add_argument("--steps", type=int, help="measured train steps (cpu 50, cuda 300)")
    p.add_argument("--warmup", type=int, help="warm-up train steps (cpu 2, cuda 30)")
    p.add_argument("--eval-batches", type=int, help="measured eval batches (cpu 3, cuda 10)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    add_data_options(p)
    return run_and_print(p.parse_args(argv), predict, show)


if __name__ == "__main__":
    raise SystemExit(main())
