"""Epoch time with a synchronous checkpoint against one written in the background.

Each "epoch" is hpstudy's own Trainer.train_epoch over the first `--steps` batches, followed
by the trainer's checkpoint: written on the spot by RunDir.save_checkpoint (serialise, fsync,
rename: what `train` did before issue 24), or handed to a CheckpointWriter (a CPU copy now,
the write in a background thread while the next epoch trains: what `train` does). The two
sides run one after the other in the same process, `--epochs` each (a background write
would otherwise overlap the other side's epoch); the last background write's wait is
reported apart, as `train` pays it once per run.

    python benchmarks/checkpoint_overlap.py --steps 5 --width 0.5 --synthetic 5000   # quick
    python benchmarks/checkpoint_overlap.py --device cuda --steps 100 --out /scratch/x
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from typing import Any

from _common import add_data_options, environment, load_source, run_and_print, time_epoch

from hpstudy.config import RunConfig
from hpstudy.errors import HpstudyError
from hpstudy.run import CheckpointWriter, RunDir, Trainer, device_data, resolve_device

DEFAULT_STEPS = {"cpu": 10, "cuda": 200}  # batches per epoch


def measure(args: argparse.Namespace) -> dict[str, Any]:
    if args.epochs < 2 or (args.steps is not None and args.steps < 1):
        raise HpstudyError("--epochs: at least 2; --steps: at least 1")
    device = resolve_device(args.device)
    env = environment(device)
    steps = args.steps or DEFAULT_STEPS.get(device.type, DEFAULT_STEPS["cuda"])
    config = RunConfig(width=args.width, batch_size=args.batch_size, device=str(device))
    cifar, source = load_source(args)
    d = device_data(cifar, config, device).head(train=steps * config.batch_size)
    trainer = Trainer.create(config)
    time_epoch(trainer, d.head(train=config.batch_size), epoch=10_000)  # warm-up
    cycles: dict[str, list[float]] = {"synchronous": [], "background": []}
    with tempfile.TemporaryDirectory(prefix="hpstudy-ckpt-", dir=args.out) as tmp:
        run = RunDir(tmp)
        writer = CheckpointWriter(run)
        for side, save in (("synchronous", run.save_checkpoint), ("background", writer.submit)):
            for epoch in range(args.epochs):
                t0 = time.perf_counter()
                time_epoch(trainer, d, epoch)
                save(trainer.state())  # submit waits for the previous write, as train does
                cycles[side].append(time.perf_counter() - t0)
                print(f"{side} epoch {epoch + 1}: {cycles[side][-1]:.3f} s",
                      file=sys.stderr, flush=True)  # fmt: skip
        t0 = time.perf_counter()
        writer.wait()
        last_wait = time.perf_counter() - t0
        t0 = time.perf_counter()
        run.save_checkpoint(trainer.state())
        write_alone = time.perf_counter() - t0
        size = run.checkpoint_path.stat().st_size
    medians = {side: statistics.median(times[1:]) for side, times in cycles.items()}
    return {
        **env,
        "data": source,
        "width": config.width,
        "batch_size": config.batch_size,
        "steps_per_epoch": steps,
        "epochs": args.epochs,
        "checkpoint_bytes": size,
        "checkpoint_write_seconds": write_alone,
        "last_background_wait_seconds": last_wait,
        "epoch_seconds": cycles,
        "median_epoch_seconds": medians,  # the first epoch of each side left out
        "background_over_synchronous": medians["background"] / medians["synchronous"],
    }


def show(r: dict[str, Any]) -> None:
    print(f"{r['device_name']}, {r['data']}, width {r['width']}, batch {r['batch_size']}, "
          f"{r['steps_per_epoch']} steps an epoch, {r['epochs']} epochs a side")  # fmt: skip
    print(f"checkpoint: {r['checkpoint_bytes'] / 2**20:.1f} MB, "
          f"{r['checkpoint_write_seconds']:.3f} s to write alone; the last background "
          f"write waited for {r['last_background_wait_seconds']:.3f} s")  # fmt: skip
    for side, seconds in r["median_epoch_seconds"].items():
        print(f"{side:>12}: {seconds:.3f} s an epoch (median)")
    print(f"background / synchronous: {r['background_over_synchronous']:.3f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    p.add_argument("--width", type=float, default=1.0, help="MobileNet width (1.0: 27 MB)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, help="batches an epoch (cpu 10, cuda 200)")
    p.add_argument("--epochs", type=int, default=5, help="epochs a side (the first not counted)")
    p.add_argument("--out", help="folder the checkpoints go under (default: the temp folder)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    add_data_options(p)
    return run_and_print(p.parse_args(argv), measure, show)


if __name__ == "__main__":
    raise SystemExit(main())
