"""Shared by the benchmarks: where the images come from, hpstudy's own step, timing, memory.

Every timed piece of hpstudy is hpstudy's own code, reached through its public API only
(hpstudy.run: Execution, Trainer, DeviceData, device_data, batches, RunDir; hpstudy.study.Plan).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hpstudy import constants, data
from hpstudy.errors import HpstudyError
from hpstudy.run import DeviceData, Trainer, batches, device_name, load_data

GIB = 1 << 30
ARCHIVE_TRAIN_IMAGES = 50_000  # CIFAR-100's train file; split as data.train_val_split does
ARCHIVE_TEST_IMAGES = 10_000
TRAIN_RSS_LIMIT = 2 * GIB


# ---------------------------------------------------------------- where the images come from


def add_data_options(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group()
    source.add_argument("--root", help="folder holding cifar-100-python/ (the real data)")
    source.add_argument(
        "--synthetic",
        type=int,
        metavar="N",
        help=f"N random uint8 images in memory (default without --root: {ARCHIVE_TRAIN_IMAGES})",
    )
    p.add_argument(
        "--no-verify", dest="verify", action="store_false", help="skip the md5 check of --root"
    )


def load_source(args: argparse.Namespace) -> tuple[data.Cifar100, str]:
    """The real archive under --root (hpstudy's loader), else random images of the same shape."""
    if args.root is not None:
        return load_data(args.root, args.verify), f"{data.resolve_root(args.root)}"
    n = args.synthetic or ARCHIVE_TRAIN_IMAGES
    if n < 10:
        raise HpstudyError(f"--synthetic: need at least 10 images (got {n})")
    return synthetic_cifar(n), f"synthetic ({n} random images)"


def synthetic_cifar(n: int, seed: int = 0) -> data.Cifar100:
    gen = torch.Generator().manual_seed(seed)

    def split(k: int) -> data.Split:
        shape = (k, *constants.IMAGE_SHAPE)
        images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen)
        fine = torch.randint(0, constants.NUM_CLASSES, (k,), generator=gen)
        per_superclass = constants.NUM_CLASSES // constants.NUM_SUPERCLASSES
        return data.Split(images=images, fine=fine, coarse=fine // per_superclass)

    return data.Cifar100(
        train=split(n),
        test=split(max(1, n * ARCHIVE_TEST_IMAGES // ARCHIVE_TRAIN_IMAGES)),  # the archive's ratio
        fine_names=[f"class {i}" for i in range(constants.NUM_CLASSES)],
        coarse_names=[f"superclass {i}" for i in range(constants.NUM_SUPERCLASSES)],
    )


def train_split_size(cifar: data.Cifar100) -> int:
    """Images in the train side of `cifar`'s train/val split (hpstudy's own val_size)."""
    n = len(cifar.train.fine)
    return n - constants.val_size(n)


# ---------------------------------------------------------------- hpstudy's step


def time_epoch(trainer: Trainer, d: DeviceData, epoch: int) -> float:
    """Seconds of hpstudy's own Trainer.train_epoch over all of d's train images."""
    trainer.ex.sync()
    t0 = time.perf_counter()
    trainer.train_epoch(d, epoch, False)
    trainer.ex.sync()
    return time.perf_counter() - t0


def time_data_part(trainer: Trainer, d: DeviceData, epoch: int) -> float:
    """Seconds of train_epoch's data part alone (gather, flip_crop, normalize, mixup):
    the same `batches` generator it trains on, so the same draws."""
    trainer.ex.sync()
    t0 = time.perf_counter()
    for _ in batches(d, trainer.config, trainer.ex, epoch):
        pass
    trainer.ex.sync()
    return time.perf_counter() - t0


# ---------------------------------------------------------------- timing and memory


def sync(device: torch.device) -> None:
    """Wait for `device` (the baseline's side; hpstudy's side uses Execution.sync)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def spread(values: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "values": values,
    }


def peak_rss_bytes(who: int = resource.RUSAGE_SELF) -> int:
    kib = resource.getrusage(who).ru_maxrss
    return kib if sys.platform == "darwin" else kib * 1024  # macOS says bytes, Linux KiB


def environment(device: torch.device) -> dict[str, Any]:
    return {
        "device": str(device),
        "device_name": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_average": list(os.getloadavg()),
    }


def train_peak_rss(root: str, verify: bool, device: str, limit_val: int = 512) -> dict[str, Any]:
    """Peak RSS of `hpstudy train` on the real data: one short epoch, the whole split loaded.

    Evaluation holds one eval batch (1,024) of activations: a `limit_val` below it
    measures a smaller batch than a real run evaluates.
    """
    with tempfile.TemporaryDirectory(prefix="hpstudy-rss-") as tmp:
        args = ["train", "--root", root, *([] if verify else ["--no-verify"])]
        args += ["--epochs", "1", "--limit-train", "2048", "--limit-val", str(limit_val)]
        args += ["--device", device, "--out", str(Path(tmp) / "run")]
        with open(Path(tmp) / "stderr", "w+") as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, "-m", "hpstudy", *args], stdout=subprocess.DEVNULL, stderr=err
            )
            # wait4 gives this child's own rusage, whatever else this process has run
            _, status, usage = os.wait4(proc.pid, 0)
            seconds = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                err.seek(0)
                tail = err.read().strip().splitlines()[-1:] or ["(no output)"]
                raise HpstudyError(f"hpstudy train failed ({proc.returncode}): {tail[0]}")
    kib = usage.ru_maxrss
    rss = kib if sys.platform == "darwin" else kib * 1024
    return {
        "command": "hpstudy " + " ".join([*args[:-1], "TMP"]),
        "peak_rss_bytes": rss,
        "seconds": seconds,
        "limit_bytes": TRAIN_RSS_LIMIT,
        "met": rss <= TRAIN_RSS_LIMIT,
    }


def run_and_print(
    args: argparse.Namespace,
    compute: Callable[[argparse.Namespace], dict[str, Any]],
    show: Callable[[dict[str, Any]], None],
) -> int:
    """A benchmark's main: one JSON object with --json, a table otherwise, one-line errors."""
    try:
        result = compute(args)
    except HpstudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        show(result)
    return 0


def given_or_default(
    args: argparse.Namespace, names: tuple[str, ...], defaults: tuple[int, ...]
) -> tuple[int, ...]:
    """Each option as the user gave it, else the device's default."""
    return tuple(
        d if getattr(args, n) is None else getattr(args, n)
        for n, d in zip(names, defaults, strict=True)
    )
