"""Training images/s: the usual Dataset + DataLoader pipeline against hpstudy's step.

Both sides train the same model on the same images with the same batch and optimiser, in
one process, their repeats interleaved so drift in the machine's load hits both alike.

    python benchmarks/throughput.py --root /tmp/cifar-real --no-verify
    python benchmarks/throughput.py --steps 3 --width 0.25       # synthetic data, quick
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from _common import (
    TRAIN_RSS_LIMIT,
    add_data_options,
    environment,
    given_or_default,
    load_source,
    peak_rss_bytes,
    run_and_print,
    spread,
    sync,
    time_data_part,
    time_epoch,
    train_peak_rss,
    train_split_size,
)
from torch.utils.data import DataLoader, Dataset

from hpstudy.config import RunConfig
from hpstudy.constants import NUM_CLASSES
from hpstudy.errors import HpstudyError
from hpstudy.models import create_model
from hpstudy.run import DeviceData, Execution, Trainer, device_data, resolve_device

# what the issue asks of hpstudy's default step, per device type
TARGET_RATIO = {"cpu": 1.15, "cuda": 5.0}
TARGET_DATA_SHARE = 0.05
DEFAULTS = {"cpu": (10, 3, 2), "cuda": (100, 5, 20)}  # steps, repeats, warmup


# ---------------------------------------------------------------- the usual pipeline


class PerImageDataset(Dataset):
    """One image at a time, augmented with numpy in a DataLoader worker, as tutorials do."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean: list[float], std: list[float]):
        self.images, self.labels = images, labels
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
        self.rng: np.random.Generator | None = None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self.rng is None:  # DataLoader seeds torch differently in each worker
            self.rng = np.random.default_rng(torch.initial_seed())
        img = self.images[i]  # uint8 (3, 32, 32)
        if self.rng.random() < 0.5:
            img = img[:, :, ::-1]
        padded = np.pad(img, ((0, 0), (4, 4), (4, 4)))
        dy, dx = self.rng.integers(0, 9, size=2)
        crop = padded[:, dy : dy + 32, dx : dx + 32]
        x = (crop.astype(np.float32) / 255 - self.mean) / self.std
        return torch.from_numpy(x), int(self.labels[i])


class Baseline:
    """fp32, NCHW, a DataLoader with workers, `.item()` of the loss every step."""

    def __init__(self, d: DeviceData, width: float, batch_size: int, workers: int, lr: float):
        self.device = d.train_x.device
        dataset = PerImageDataset(
            d.train_x.cpu().numpy(), d.train_y.cpu().numpy(), d.mean.tolist(), d.std.tolist()
        )
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=True,
            num_workers=workers,
            persistent_workers=workers > 0,  # steady state: no worker start-up per repeat
            pin_memory=self.device.type == "cuda",
        )
        torch.manual_seed(0)
        self.model = create_model("mobilenet", NUM_CLASSES, width).to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=0.9)

    def run(self, steps: int) -> float:
        sync(self.device)
        t0 = time.perf_counter()
        self.model.train()
        for _, (x, y) in zip(range(steps), self.loader, strict=False):
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            loss = F.cross_entropy(self.model(x), y)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            loss.item()
        sync(self.device)
        return time.perf_counter() - t0


# ---------------------------------------------------------------- hpstudy's side


@dataclass
class Variant:
    name: str
    trainer: Trainer
    seconds: list[float] = field(default_factory=list)
    data_seconds: list[float] = field(default_factory=list)
    peak_device_bytes: int = 0


def variant_configs(
    base: RunConfig, device: torch.device, args: argparse.Namespace
) -> list[RunConfig]:
    """hpstudy's default for the device first, then one option flipped at a time."""
    default = Execution.resolve(base)
    configs = [base, base.model_copy(update={"channels_last": not default.channels_last})]
    if args.variants or device.type == "cuda":  # bf16 on a CPU without native bf16: ~20x slower
        other = "fp32" if default.precision != "fp32" else "bf16"
        configs.append(base.model_copy(update={"precision": other}))
    if args.compile:
        configs.append(base.model_copy(update={"compile": True}))
    return configs


def variant_name(trainer: Trainer, first: bool) -> str:
    ex = trainer.ex
    parts = [ex.precision, "channels_last" if ex.channels_last else "NCHW"]
    parts += ["compile"] if ex.compile else []
    return "hpstudy " + ", ".join(parts) + (" (default)" if first else "")


# ---------------------------------------------------------------- the run


def measure(args: argparse.Namespace) -> dict[str, Any]:
    device = resolve_device(args.device)
    env = environment(device)  # the load average before this run adds to it
    steps, repeats, warmup = given_or_default(
        args, ("steps", "repeats", "warmup"), DEFAULTS[device.type]
    )
    if steps < 1 or repeats < 1 or warmup < 0:
        raise HpstudyError("--steps and --repeats must be >= 1, --warmup >= 0")
    # warm-up runs over the measured images; compile needs one step before the clock starts
    warmup = max(min(warmup, steps), 1 if args.compile else 0)
    images = steps * args.batch_size
    train_rss = None
    if args.rss_of_train:  # first, before this process grows
        if args.root is None:
            raise HpstudyError("--rss-of-train needs --root (the real data)")
        log("measuring the peak RSS of hpstudy train (one short epoch on the real data)")
        train_rss = train_peak_rss(args.root, args.verify, str(device), args.rss_limit_val)

    cifar, source = load_source(args)
    if train_split_size(cifar) < images:
        raise HpstudyError(
            f"{source}: train split of {train_split_size(cifar)} images is smaller than "
            f"--steps x --batch-size = {images}"
        )
    base = RunConfig(
        width=args.width,
        batch_size=args.batch_size,
        mixup_alpha=args.mixup_alpha,
        device=str(device),
        limit_train=images,
        limit_val=1,
    )
    d = device_data(cifar, base, device)
    d_warm = d.head(train=warmup * args.batch_size)

    baseline = Baseline(d, args.width, args.batch_size, args.workers, base.lr)
    variants = [
        Variant(variant_name(t, i == 0), t)
        for i, t in enumerate(Trainer.create(c) for c in variant_configs(base, device, args))
    ]
    if warmup:
        log(f"warm-up: {warmup} steps per side")
        baseline.run(warmup)
        for v in variants:
            time_epoch(v.trainer, d_warm, epoch=10_000)

    base_seconds: list[float] = []
    base_peak = 0
    for r in range(repeats):
        sides: list[Baseline | Variant] = [baseline, *variants]
        for side in sides if r % 2 == 0 else reversed(sides):  # alternate the order too
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            if isinstance(side, Baseline):
                base_seconds.append(side.run(steps))
                base_peak = max(base_peak, peak_device(device))
            else:
                side.seconds.append(time_epoch(side.trainer, d, epoch=r))
                side.peak_device_bytes = max(side.peak_device_bytes, peak_device(device))
                side.data_seconds.append(time_data_part(side.trainer, d, epoch=r))
        log(
            f"repeat {r + 1}/{repeats}: baseline {images / base_seconds[-1]:.1f} img/s, "
            + ", ".join(f"{v.name} {images / v.seconds[-1]:.1f}" for v in variants)
        )

    base_rate = spread([images / s for s in base_seconds])
    results = []
    for v in variants:
        rate = spread([images / s for s in v.seconds])
        share = spread([ds / s for ds, s in zip(v.data_seconds, v.seconds, strict=True)])
        results.append(
            {
                "name": v.name,
                "precision": v.trainer.ex.precision,
                "channels_last": v.trainer.ex.channels_last,
                "compile": v.trainer.ex.compile,
                "images_per_s": rate,
                "ratio": rate["median"] / base_rate["median"],
                "ratio_per_repeat": [b / s for b, s in zip(base_seconds, v.seconds, strict=True)],
                "data_share": share,
                **({"peak_device_bytes": v.peak_device_bytes} if device.type == "cuda" else {}),
            }
        )
    out: dict[str, Any] = {
        **env,
        "data": source,
        "width": args.width,
        "batch_size": args.batch_size,
        "mixup_alpha": args.mixup_alpha,
        "steps": steps,
        "repeats": repeats,
        "warmup": warmup,
        "baseline": {
            "name": f"Dataset + DataLoader ({args.workers} workers), fp32, NCHW",
            "workers": args.workers,
            "images_per_s": base_rate,
            **({"peak_device_bytes": base_peak} if device.type == "cuda" else {}),
        },
        "variants": results,
        "peak_rss_bytes": peak_rss_bytes(),
        "train_rss": train_rss,
    }
    out["targets"] = targets(device.type, results[0], train_rss)
    return out


def peak_device(device: torch.device) -> int:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0


def targets(kind: str, default: dict[str, Any], train_rss: dict[str, Any] | None) -> dict:
    got = {
        "ratio": {"want": f">= {TARGET_RATIO[kind]}", "got": default["ratio"]},
        "data_share": {"want": f"<= {TARGET_DATA_SHARE}", "got": default["data_share"]["median"]},
    }
    got["ratio"]["met"] = default["ratio"] >= TARGET_RATIO[kind]
    got["data_share"]["met"] = default["data_share"]["median"] <= TARGET_DATA_SHARE
    if train_rss is not None:
        want = f"<= {TRAIN_RSS_LIMIT}"
        got["train_rss"] = {
            "want": want,
            "got": train_rss["peak_rss_bytes"],
            "met": train_rss["met"],
        }
    return got


# ---------------------------------------------------------------- output


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB"


def show(r: dict[str, Any]) -> None:
    def rate(x: dict[str, Any]) -> str:
        return f"{x['median']:8.1f} img/s  [{x['min']:.1f} .. {x['max']:.1f}]"

    load = ", ".join(f"{x:.2f}" for x in r["load_average"])
    print(f"device  {r['device_name']}, torch {r['torch']}, load average at start {load}")
    print(
        f"data    {r['data']}; width {r['width']}, batch {r['batch_size']}, mixup "
        f"{r['mixup_alpha']}; {r['steps']} steps x {r['repeats']} repeats after {r['warmup']}"
    )
    b = r["baseline"]
    print(f"{b['name']:52} {rate(b['images_per_s'])}")
    for v in r["variants"]:
        per_repeat = f"[{min(v['ratio_per_repeat']):.2f} .. {max(v['ratio_per_repeat']):.2f}]"
        share = v["data_share"]["median"]
        print(
            f"{v['name']:52} {rate(v['images_per_s'])}  {v['ratio']:.2f}x {per_repeat}, "
            f"data {share:.1%}"
        )
    print(f"peak RSS of this process: {gib(r['peak_rss_bytes'])}")
    if r["train_rss"]:
        t = r["train_rss"]
        print(f"peak RSS of `{t['command']}`: {gib(t['peak_rss_bytes'])}")
    t = r["targets"]
    verdict = {True: "met", False: "NOT met"}
    print(f"target ratio {t['ratio']['want']}: {verdict[t['ratio']['met']]}")
    print(f"target data share {t['data_share']['want']}: {verdict[t['data_share']['met']]}")
    if "train_rss" in t:
        print(f"target train RSS <= {gib(TRAIN_RSS_LIMIT)}: {verdict[t['train_rss']['met']]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--mixup-alpha", type=float, default=0.0, help="mixup in hpstudy's step")
    p.add_argument("--steps", type=int, help="measured steps per repeat (cpu 10, cuda 100)")
    p.add_argument("--repeats", type=int, help="repeats per side (cpu 3, cuda 5)")
    p.add_argument("--warmup", type=int, help="warm-up steps per side (cpu 2, cuda 20)")
    p.add_argument("--workers", type=int, default=2, help="baseline DataLoader workers")
    p.add_argument("--variants", action="store_true", help="also bf16 on CPU (slow)")
    p.add_argument("--compile", action="store_true", help="also torch.compile")
    p.add_argument("--rss-of-train", action="store_true", help="peak RSS of hpstudy train")
    p.add_argument(
        "--rss-limit-val",
        type=int,
        default=512,
        help="--limit-val of that run (1024 or more holds a full eval batch; default 512)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    add_data_options(p)
    return run_and_print(p.parse_args(argv), measure, show)


if __name__ == "__main__":
    raise SystemExit(main())
