"""One training run: RunConfig -> per-epoch metrics, checkpoints, exact resume.

The dataset lives on the device as uint8 tensors; each step gathers a batch,
augments it with a few batched ops and trains. Metrics accumulate on the device
and are read once per epoch, so the host never waits on the GPU mid-epoch.

Randomness that matters for the data order (the epoch permutation, flips,
crops, mixup) comes from generators derived from (seed, epoch), so a run resumed
at epoch e draws exactly what an uninterrupted run draws there.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hpstudy import __version__, augment, data
from hpstudy.config import RunConfig
from hpstudy.errors import HpstudyError
from hpstudy.models import count_macs, count_parameters, create_model
from hpstudy.progress import bar, log

NUM_CLASSES = 100
METRIC_COLUMNS = [
    "epoch",
    "lr",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "val_top5",
    "seconds",
    "images_per_s",
]
DONE_STATES = ("finished", "diverged")


# ---------------------------------------------------------------- execution choices


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise HpstudyError(f"device: unknown device {name!r} (use auto, cpu or cuda[:i])") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise HpstudyError(f"device: {name} asked for, but no CUDA GPU is visible")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise HpstudyError(f"device: {name} does not exist ({torch.cuda.device_count()} GPUs)")
    elif device.type != "cpu":
        raise HpstudyError(f"device: {name!r} is not supported (use auto, cpu or cuda[:i])")
    return device


@dataclass(frozen=True)
class Execution:
    """The resolved `auto` choices for one device."""

    device: torch.device
    dtype: torch.dtype  # autocast dtype; float32 means no autocast
    channels_last: bool
    compile: bool
    eval_batch_size: int

    @classmethod
    def resolve(cls, config: RunConfig) -> Execution:
        device = resolve_device(config.device)
        cuda = device.type == "cuda"
        # bf16 on CUDA: fp16 depthwise convolutions regressed on Hopper in recent
        # PyTorch; on CPUs without native bf16, autocast is ~20x slower, so fp32.
        precision = config.precision if config.precision != "auto" else ("bf16" if cuda else "fp32")
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        if dtype == torch.float16 and not cuda:
            raise HpstudyError("precision: fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
        # channels_last measured ~1.2x on a 2-core CPU and is the fast layout for
        # cuDNN's bf16 convolutions; compile gave nothing on CPU and is unmeasured
        # on GPU here, so it stays opt-in.
        channels_last = True if config.channels_last is None else config.channels_last
        compile_model = False if config.compile is None else config.compile
        # batch 1024 keeps a GPU busy; on a CPU it is no faster than 256 and costs 0.5 GiB
        eval_batch = config.eval_batch_size or (1024 if cuda else 256)
        return cls(device, dtype, channels_last, compile_model, eval_batch)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def precision(self) -> str:
        return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]


def learning_rate(config: RunConfig, epoch: int) -> float:
    """The learning rate of 0-based `epoch`: linear warmup, then constant or cosine (SPEC §1)."""
    warmup = config.warmup_epochs
    if epoch < warmup:
        return config.lr * (epoch + 1) / warmup
    if config.schedule == "constant":
        return config.lr
    t, total = epoch - warmup, config.epochs - warmup
    return 0.5 * config.lr * (1 + math.cos(math.pi * t / total))


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


# ---------------------------------------------------------------- data on the device


@dataclass(frozen=True)
class DeviceData:
    train_x: torch.Tensor  # uint8 (N, 3, 32, 32)
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    val_coarse: torch.Tensor
    mean: torch.Tensor  # (3,) float32, [0, 1] scale
    std: torch.Tensor


_cache: dict[tuple[str, bool], data.Cifar100] = {}


def load_data(root: str | Path | None, verify: bool) -> data.Cifar100:
    """Load once per process: a study runs many configurations on the same archive."""
    key = (str(data.resolve_root(root)), verify)
    if key not in _cache:
        _cache.clear()
        _cache[key] = data.load_cifar100(root, verify=verify)
    return _cache[key]


def split_for(config: RunConfig, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole 80/20 train/val split of SPEC §1 (limits are applied by the caller)."""
    return data.split_indices(n, n - int(0.8 * n), config.split_seed)


def device_data(cifar: data.Cifar100, config: RunConfig, device: torch.device) -> DeviceData:
    images, fine, coarse = cifar.train.images, cifar.train.fine, cifar.train.coarse
    train_all, val_all = split_for(config, len(fine))
    # statistics of the whole train split, as the report computes them, whatever the limit
    mean, std = data.channel_stats(images, train_all)
    train_idx, val_idx = train_all[: config.limit_train], val_all[: config.limit_val]
    return DeviceData(
        train_x=images[train_idx].to(device),
        train_y=fine[train_idx].to(device),
        val_x=images[val_idx].to(device),
        val_y=fine[val_idx].to(device),
        val_coarse=coarse[val_idx].to(device),
        mean=torch.tensor(mean, dtype=torch.float32, device=device),
        std=torch.tensor(std, dtype=torch.float32, device=device),
    )


# ---------------------------------------------------------------- files of a run


def write_atomic(path: Path, payload: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise HpstudyError(f"{path}: cannot read ({err})") from None


def write_metrics(path: Path, rows: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: repr(row[k]) if isinstance(row[k], float) else row[k] for k in row})
    write_atomic(path, buf.getvalue().encode())


def read_metrics(path: Path) -> list[dict[str, float]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [
            {k: (int(v) if k == "epoch" else float(v)) for k, v in r.items()}
            for r in csv.DictReader(f)
        ]


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / "summary.json"
    return read_json(path) if path.exists() else None


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    write_atomic(path, buf.getvalue())


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # a torn or foreign file: say which, don't trace back
        raise HpstudyError(f"{path}: not a readable hpstudy checkpoint ({err})") from None


def prepare_run_dir(config: RunConfig, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "config.json"
    if config_path.exists():
        existing = RunConfig(**read_json(config_path))
        if existing.run_hash() != config.run_hash():
            raise HpstudyError(
                f"{run_dir} holds a different run ({existing.run_hash()}, "
                f"not {config.run_hash()}); choose another --out"
            )
    else:
        write_json(config_path, config.model_dump())


# ---------------------------------------------------------------- the model's side


def build_model(config: RunConfig, ex: Execution) -> nn.Module:
    torch.manual_seed(config.seed)
    model = create_model(config.model, NUM_CLASSES, config.width)
    return model.to(ex.device, memory_format=ex.memory_format)


@torch.no_grad()
def evaluate_arrays(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    coarse: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    ex: Execution,
    batch_size: int,
) -> dict[str, Any]:
    """Mean cross-entropy, top-1, top-5 and per-superclass top-1 of uint8 `images`."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=ex.device)
    top1 = torch.zeros((), dtype=torch.int64, device=ex.device)
    top5 = torch.zeros((), dtype=torch.int64, device=ex.device)
    coarse_hits = torch.zeros(20, dtype=torch.float64, device=ex.device)
    for i in range(0, len(images), batch_size):
        x = augment.normalize(images[i : i + batch_size], mean, std)
        y = labels[i : i + batch_size]
        with ex.autocast():
            logits = model(x.contiguous(memory_format=ex.memory_format)).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        best5 = logits.topk(5, dim=1).indices
        hit1 = best5[:, 0] == y
        top1 += hit1.sum()
        top5 += (best5 == y[:, None]).any(dim=1).sum()
        coarse_hits.index_add_(0, coarse[i : i + batch_size], hit1.double())
    model.train(was_training)
    n = len(images)
    coarse_counts = torch.bincount(coarse, minlength=20).double().clamp_min(1)
    return {
        "loss": loss_sum.item() / n,
        "top1": top1.item() / n,
        "top5": top5.item() / n,
        "superclass_top1": (coarse_hits / coarse_counts).tolist(),
        "images": n,
    }


@dataclass(frozen=True)
class Batch:
    x: torch.Tensor  # augmented, normalised, in the model's memory format
    y: torch.Tensor
    y2: torch.Tensor | None  # mixup partner labels, None without mixup
    lam: float  # mixup weight of y (1.0 without mixup)


def batches(d: DeviceData, config: RunConfig, ex: Execution, epoch: int) -> Iterator[Batch]:
    """The epoch's training batches: a seeded permutation, flip/crop, normalise, mixup."""
    gen = torch.Generator(device=ex.device).manual_seed(epoch_seed(config.seed, epoch))
    lam_rng = np.random.default_rng([config.seed, epoch, 1])
    order = torch.randperm(len(d.train_x), generator=gen, device=ex.device)
    for i in range(0, len(d.train_x), config.batch_size):
        idx = order[i : i + config.batch_size]
        x = augment.flip_crop(d.train_x[idx], gen)
        x = augment.normalize(x, d.mean, d.std).contiguous(memory_format=ex.memory_format)
        y, y2 = d.train_y[idx], None
        lam = augment.sample_mixup_lambda(config.mixup_alpha, lam_rng)
        if config.mixup_alpha > 0:
            x, partner = augment.mixup(x, lam, gen)
            y2 = y[partner]
        yield Batch(x, y, y2, lam)


def build_optimizer(config: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )


def train_epoch(
    model: nn.Module,
    step_model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    d: DeviceData,
    config: RunConfig,
    ex: Execution,
    epoch: int,
    show: bool | None,
) -> tuple[float, float]:
    """One pass over the train split; returns (mean loss, mean accuracy).

    Loss and hits accumulate on the device and are read once, at the end.
    """
    loss_sum = torch.zeros((), dtype=torch.float64, device=ex.device)
    hits = torch.zeros((), dtype=torch.float64, device=ex.device)
    model.train()
    steps = math.ceil(len(d.train_x) / config.batch_size)
    smoothing = config.label_smoothing
    with bar(f"epoch {epoch + 1}/{config.epochs}", steps, show) as advance:
        for step, b in enumerate(batches(d, config, ex, epoch)):
            with ex.autocast():
                logits = step_model(b.x).float()
            loss = F.cross_entropy(logits, b.y, label_smoothing=smoothing)
            if b.y2 is None:
                hits += (logits.detach().argmax(1) == b.y).sum()
            else:
                loss2 = F.cross_entropy(logits, b.y2, label_smoothing=smoothing)
                loss = b.lam * loss + (1 - b.lam) * loss2
                hits += augment.mixup_accuracy(logits.detach(), b.y, b.y2, b.lam)
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            loss_sum += loss.detach().double() * len(b.y)
            # reading the loss syncs with the device: only now and then, for the eye
            advance(1, (lambda loss=loss: f"loss {loss.item():.3f}") if step % 50 == 0 else None)
    return loss_sum.item() / len(d.train_x), hits.item() / len(d.train_x)


# ---------------------------------------------------------------- one run


def train(
    config: RunConfig,
    run_dir: str | Path,
    *,
    root: str | Path | None = None,
    verify: bool = True,
    show_progress: bool | None = None,
) -> dict[str, Any]:
    """Train `config` in `run_dir`, resuming from its checkpoint; returns summary.json's dict."""
    run_dir = Path(run_dir)
    prepare_run_dir(config, run_dir)
    summary = read_summary(run_dir)
    if summary is not None and summary.get("status") in DONE_STATES:
        return summary

    ex = Execution.resolve(config)
    cifar = load_data(root, verify)
    d = device_data(cifar, config, ex.device)
    model = build_model(config, ex)
    step_model: nn.Module = torch.compile(model) if ex.compile else model  # type: ignore[assignment]
    optimizer = build_optimizer(config, model)
    scaler = torch.amp.GradScaler(ex.device.type) if ex.dtype == torch.float16 else None

    ckpt_path = run_dir / "checkpoint.pt"
    rows: list[dict[str, float]] = []
    start_epoch = 0
    if ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, ex.device)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scaler is not None and "scaler" in ckpt:
            scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())
        rows, start_epoch = ckpt["rows"], ckpt["epoch"]
        log(f"[dim]{run_dir.name}: resuming after epoch {start_epoch}/{config.epochs}[/dim]")
    write_metrics(run_dir / "metrics.csv", rows)

    for epoch in range(start_epoch, config.epochs):
        lr = learning_rate(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        t0 = time.perf_counter()
        train_loss, train_acc = train_epoch(
            model, step_model, optimizer, scaler, d, config, ex, epoch, show_progress
        )
        if ex.device.type == "cuda":
            torch.cuda.synchronize(ex.device)
        train_seconds = time.perf_counter() - t0
        if not (math.isfinite(train_loss) and math.isfinite(train_acc)):
            log(f"[red]{run_dir.name}: loss is {train_loss} at epoch {epoch + 1}: diverged[/red]")
            return finish(run_dir, config, ex, model, rows, "diverged", epoch + 1)
        val = evaluate_arrays(
            model, d.val_x, d.val_y, d.val_coarse, d.mean, d.std, ex, ex.eval_batch_size
        )
        row = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_loss": val["loss"],
            "val_acc": val["top1"],
            "val_top5": val["top5"],
            "seconds": time.perf_counter() - t0,
            "images_per_s": len(d.train_x) / train_seconds,
        }
        rows.append(row)
        save_checkpoint(
            ckpt_path,
            {
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                **({"scaler": scaler.state_dict()} if scaler is not None else {}),
                "scheduler": {"epoch": epoch + 1, "next_lr": learning_rate(config, epoch + 1)},
                "rng": {"torch": torch.get_rng_state()},
                "rows": rows,
                "normalization": {"mean": d.mean.tolist(), "std": d.std.tolist()},
                "run_hash": config.run_hash(),
            },
        )
        write_metrics(run_dir / "metrics.csv", rows)
        log(
            f"{run_dir.name} epoch {epoch + 1}/{config.epochs} lr {lr:.4g} "
            f"train {train_loss:.4f}/{train_acc:.3f} val {val['loss']:.4f}/{val['top1']:.3f} "
            f"({row['seconds']:.1f}s, {row['images_per_s']:.0f} img/s)"
        )
    return finish(run_dir, config, ex, model, rows, "finished", config.epochs)


def finish(
    run_dir: Path,
    config: RunConfig,
    ex: Execution,
    model: nn.Module,
    rows: list[dict[str, float]],
    status: str,
    epochs_done: int,
) -> dict[str, Any]:
    summary = {
        "status": status,
        "run_hash": config.run_hash(),
        "epochs_done": epochs_done,
        "final": rows[-1] if rows and status == "finished" else None,
        "train_seconds": sum(r["seconds"] for r in rows),
        "parameters": count_parameters(model),
        "macs_per_image": count_macs(model),
        "device": str(ex.device),
        "device_name": device_name(ex.device),
        "precision": ex.precision,
        "channels_last": ex.channels_last,
        "compile": ex.compile,
        "torch": torch.__version__,
        "hpstudy": __version__,
        "test_evaluations": [],
    }
    write_json(run_dir / "summary.json", summary)
    return summary


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


# ---------------------------------------------------------------- evaluation of a finished run


def evaluate(
    run_dir: str | Path,
    split: str = "val",
    *,
    root: str | Path | None = None,
    verify: bool = True,
    device: str | None = None,
) -> dict[str, Any]:
    """Loss, top-1, top-5, per-superclass top-1 of a run's final weights on val or test.

    The only reader of the test split; every test evaluation is written into
    the run's summary.json, so a report can say how often test was touched.
    """
    run_dir = Path(run_dir)
    if split not in ("val", "test"):
        raise HpstudyError(f"split: must be val or test (got {split!r})")
    config_path, ckpt_path = run_dir / "config.json", run_dir / "checkpoint.pt"
    if not config_path.exists() or not ckpt_path.exists():
        raise HpstudyError(f"{run_dir}: not a trained run (no config.json or checkpoint.pt)")
    summary = read_summary(run_dir)
    if summary is None or summary.get("status") != "finished":
        raise HpstudyError(f"{run_dir}: run has not finished; train it before evaluating")
    config = RunConfig(**read_json(config_path))
    if device is not None:
        config = config.model_copy(update={"device": device})
    ex = Execution.resolve(config)
    ckpt = load_checkpoint(ckpt_path, ex.device)
    model = build_model(config, ex)
    model.load_state_dict(ckpt["model"])
    mean = torch.tensor(ckpt["normalization"]["mean"], device=ex.device)
    std = torch.tensor(ckpt["normalization"]["std"], device=ex.device)
    cifar = load_data(root, verify)
    if split == "test":
        part = cifar.test
        images, fine, coarse = part.images, part.fine, part.coarse
    else:
        _, val_all = split_for(config, len(cifar.train.fine))
        val_idx = val_all[: config.limit_val]
        part = cifar.train
        images, fine, coarse = part.images[val_idx], part.fine[val_idx], part.coarse[val_idx]
    result = evaluate_arrays(
        model,
        images.to(ex.device),
        fine.to(ex.device),
        coarse.to(ex.device),
        mean,
        std,
        ex,
        ex.eval_batch_size,
    )
    result = {
        "split": split,
        "run_hash": config.run_hash(),
        **result,
        "superclass_top1": dict(zip(cifar.coarse_names, result["superclass_top1"], strict=True)),
    }
    if split == "test":
        summary["test_evaluations"].append({**result, "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
        write_json(run_dir / "summary.json", summary)
    return result
