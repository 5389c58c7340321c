"""Predict the wall time of a study (default: seed-report at the full budget) on this device.

Measures hpstudy's train step (Trainer.train_epoch) and evaluation (Trainer.evaluate at the
eval batch) for more batches than `study run` does, then adds up every distinct run of the
study with the package's own arithmetic (hpstudy.study.study_cost: Plan.distinct_runs, each
epoch = train images / train rate + val images / eval rate + checkpoint write, plus the final
test evaluation of each seed): the numbers `study run` prints, measured more carefully.
A grid or random stage counts its settings; an optuna stage counts `n_trials` runs at its
full horizon (an upper bound: pruned trials stop early).

    python benchmarks/study_cost.py --root /tmp/cifar-real --no-verify
    python benchmarks/study_cost.py --steps 3 --eval-batches 1     # synthetic data, quick
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from typing import Any

from _common import (
    ARCHIVE_TEST_IMAGES,
    ARCHIVE_TRAIN_IMAGES,
    add_data_options,
    environment,
    given_or_default,
    load_source,
    run_and_print,
    time_epoch,
    train_split_size,
)

from hpstudy.constants import val_size
from hpstudy.errors import HpstudyError
from hpstudy.run import DeviceData, Execution, RunDir, Trainer, device_data, resolve_device
from hpstudy.study import BUDGETS, Plan, Speed, load_study, run_seconds, study_cost

DEFAULTS = {"cpu": (50, 2, 3), "cuda": (300, 30, 10)}  # train steps, warm-up steps, eval batches
TARGET_HOURS_GPU = 1.5


# ---------------------------------------------------------------- measurements


def eval_seconds(trainer: Trainer, d: DeviceData) -> float:
    """Seconds of Trainer.evaluate (evaluate_arrays at the eval batch) over d's val images."""
    trainer.ex.sync()
    t0 = time.perf_counter()
    trainer.evaluate(d)
    trainer.ex.sync()
    return time.perf_counter() - t0


def checkpoint_seconds(trainer: Trainer, repeats: int = 3) -> float:
    """One epoch's checkpoint.pt write (the trainer's state: model, optimizer, scaler, RNG;
    atomic and fsync'd), as train writes it through RunDir.save_checkpoint."""
    state = trainer.state()
    times = []
    with tempfile.TemporaryDirectory(prefix="hpstudy-ckpt-") as tmp:
        run = RunDir(tmp)
        for _ in range(repeats):
            t0 = time.perf_counter()
            run.save_checkpoint(state)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def predict(args: argparse.Namespace) -> dict[str, Any]:
    device = resolve_device(args.device)
    env = environment(device)  # the load average before this run adds to it
    plan = Plan(load_study(args.study), args.budget, device.type)
    study = plan.study
    steps, warmup, eval_batches = given_or_default(
        args, ("steps", "warmup", "eval_batches"), DEFAULTS[device.type]
    )
    if steps < 1 or eval_batches < 1 or warmup < 0:
        raise HpstudyError("--steps and --eval-batches must be >= 1, --warmup >= 0")
    base = plan.config_for_base()
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
    trainer = Trainer.create(config)

    log(f"train: {warmup} warm-up + {steps} measured steps of batch {base.batch_size}")
    if warmup:
        time_epoch(trainer, d.head(train=warmup * base.batch_size), epoch=10_000)
    measured = steps * base.batch_size
    train_rate = measured / time_epoch(trainer, d.head(train=measured), epoch=0)
    log(f"eval: 1 warm-up + {eval_batches} measured batches of {trainer.ex.eval_batch_size}")
    eval_seconds(trainer, d.head(val=trainer.ex.eval_batch_size))
    eval_rate = val_n / eval_seconds(trainer, d)
    ckpt = checkpoint_seconds(trainer)

    speed = Speed(env["device_name"], train_rate, eval_rate, ckpt)
    val = val_size(ARCHIVE_TRAIN_IMAGES)
    sizes = (ARCHIVE_TRAIN_IMAGES - val, val, ARCHIVE_TEST_IMAGES)
    runs = [
        {
            "run_hash": run.run_hash(),
            "seed": run.seed,
            "epochs": run.epochs,
            "seconds": run_seconds(run, run.epochs, speed, sizes[:2]),
        }
        for run in plan.distinct_runs()
    ]
    test_seconds = len(study.seeds) * ARCHIVE_TEST_IMAGES / eval_rate
    total = study_cost(plan, *sizes, speed).seconds or 0.0
    return {
        **env,
        "data": source,
        "study": study.name,
        "budget": args.budget,
        "precision": trainer.ex.precision,
        "channels_last": trainer.ex.channels_last,
        "compile": trainer.ex.compile,
        "width": base.width,
        "batch_size": base.batch_size,
        "eval_batch_size": trainer.ex.eval_batch_size,
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
    print(f"ckpt    {r['checkpoint_seconds']:.3f} s per write (background)")
    print(
        f"study   {r['study']} ({r['budget']}): {len(r['runs'])} distinct runs, "
        f"{r['epochs']} epochs, test evaluation {r['test_seconds']:.0f} s"
    )
    print(f"predicted wall time: {r['predicted_hours']:.2f} h")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--study", default="seed-report", help="a TOML file or a built-in name")
    p.add_argument("--budget", choices=BUDGETS, default="full")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    p.add_argument("--steps", type=int, help="measured train steps (cpu 50, cuda 300)")
    p.add_argument("--warmup", type=int, help="warm-up train steps (cpu 2, cuda 30)")
    p.add_argument("--eval-batches", type=int, help="measured eval batches (cpu 3, cuda 10)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    add_data_options(p)
    return run_and_print(p.parse_args(argv), predict, show)


if __name__ == "__main__":
    raise SystemExit(main())
