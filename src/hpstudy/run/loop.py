"""The training loop: RunConfig -> per-epoch metrics, checkpoints, exact resume.

Each step gathers a batch from the on-device split, augments it with a few
batched ops and trains. Loss and accuracy accumulate on the device and are read
once per epoch, so the host never waits on the GPU mid-epoch.

Randomness that matters for the data order (the epoch permutation, flips,
crops, mixup, CutMix) comes from generators derived from (seed, epoch), so a run
resumed at epoch e draws exactly what an uninterrupted run draws there.

With `ema_decay`, an exponential moving average of the weights (WeightEma: torch's
AveragedModel arithmetic without its per-step read of a device counter) follows every
step; it is the run's selected model: its
validation metrics fill the val_* columns, the raw weights' sit beside them
(raw_val_*), and evaluation and export use it.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hpstudy import __version__, augment
from hpstudy.config import RunConfig
from hpstudy.errors import HpstudyError
from hpstudy.models import count_macs, count_parameters
from hpstudy.progress import bar, style
from hpstudy.run.checkpoint import CheckpointWriter
from hpstudy.run.compiled import claim, compile_key, compile_model
from hpstudy.run.device import Execution, build_model, device_name
from hpstudy.run.device_data import DeviceData, data_shape, device_data, load_data
from hpstudy.run.evaluate import evaluate_arrays
from hpstudy.run.folder import MetricRow, RunDir, RunStatus, Summary, metric_columns
from hpstudy.run.hooks import HookSpec, RunHook, default_hooks, resolve_hooks

logger = logging.getLogger(__name__)


def learning_rate(config: RunConfig, epoch: int, step: int = 0, steps: int = 1) -> float:
    """The learning rate of 0-based `epoch` (SPEC §1), or of its `step` of `steps` (lr_per_step):
    linear warmup to `lr` at the last warmup epoch (or step), then constant or cosine, the
    cosine taken at the fractional epoch `epoch + step / steps`."""
    warmup = config.warmup_epochs
    at = epoch + step / steps
    if at < warmup:
        return config.lr * (epoch * steps + step + 1) / (warmup * steps)
    if config.schedule == "constant":
        return config.lr
    t, total = at - warmup, config.epochs - warmup
    return 0.5 * config.lr * (1 + math.cos(math.pi * t / total))


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


@dataclass(frozen=True)
class Batch:
    x: torch.Tensor  # augmented, normalised, in the model's memory format
    y: torch.Tensor
    y2: torch.Tensor | None  # mixup or CutMix partner labels, None without either
    lam: float  # weight of y in the loss (1.0 without mixing)


def batches(d: DeviceData, config: RunConfig, ex: Execution, epoch: int) -> Iterator[Batch]:
    """The epoch's training batches: a seeded permutation, flip/crop, normalise, mixup or
    CutMix (with both on, CutMix for a `mix_switch_prob` share of batches: timm's rule)."""
    gen = torch.Generator(device=ex.device).manual_seed(epoch_seed(config.seed, epoch))
    lam_rng = np.random.default_rng([config.seed, epoch, 1])
    order = torch.randperm(len(d.train_x), generator=gen, device=ex.device)
    padding = augment.crop_padding(*d.train_x.shape[-2:])
    for i in range(0, len(d.train_x), config.batch_size):
        idx = order[i : i + config.batch_size]
        x = augment.flip_crop(d.train_x[idx], gen, padding)
        x = augment.normalize(x, d.mean, d.std).contiguous(memory_format=ex.memory_format)
        y, y2 = d.train_y[idx], None
        if config.cutmix_alpha > 0 and (
            config.mixup_alpha == 0 or lam_rng.random() < config.mix_switch_prob
        ):
            lam = float(lam_rng.beta(config.cutmix_alpha, config.cutmix_alpha))
            x, partner, lam = augment.cutmix(x, lam, gen, lam_rng)
            yield Batch(x, y, y[partner], lam)
            continue
        lam = augment.sample_mixup_lambda(config.mixup_alpha, lam_rng)
        if config.mixup_alpha > 0:
            x, partner = augment.mixup(x, lam, gen)
            y2 = y[partner]
        yield Batch(x, y, y2, lam)


def make_optimizer(
    config: RunConfig, model: nn.Module, fused: bool = False
) -> torch.optim.Optimizer:
    """SGD (the report's), or AdamW with decoupled weight decay and `momentum` as its beta1.

    `fused`: one fused kernel per step, which takes the grad scaler's inf check as a device
    tensor and skips the update on the device. fp16 uses it: with the default (foreach)
    kernels, GradScaler.step reads `found_inf` on the host every step, a blocking sync on a
    GPU. Its arithmetic differs from foreach's in the last bits, so fp32 and bf16 (whose
    runs exist, the report's among them) keep foreach."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW(
            model.parameters(),
            lr=config.lr,
            betas=(config.momentum, 0.999),
            weight_decay=config.weight_decay,
            fused=fused or None,
        )
    return torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
        fused=fused or None,
    )


class WeightEma:
    """The weights' exponential moving average, buffers (BN statistics) included: copied at
    the first update, then decay·ema + (1 − decay)·weights after every step.

    torch's AveragedModel(multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True),
    computed the same way (one torch._foreach_lerp_ over the floating-point tensors, the
    same expression for the integer ones: BN's batch counters), so the numbers are equal to
    the last bit; but the update count is a Python int, where AveragedModel keeps it in a
    device tensor that it compares with 0 every step: a blocking device-to-host read per
    step on a GPU. Its state_dict is AveragedModel's (`n_averaged`, `module.*`), so runs
    checkpointed before resume, and export reads it unchanged.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model)
        self.decay = decay
        self.updates = 0
        # the tensors are updated in place for the whole run: paired once, not per step
        mine = [*self.module.parameters(), *self.module.buffers()]
        theirs = [*model.parameters(), *model.buffers()]
        self.pairs = list(zip(mine, theirs, strict=True))
        floating = [a.is_floating_point() or a.is_complex() for a, _ in self.pairs]
        self.floats = [pair for pair, f in zip(self.pairs, floating, strict=True) if f]
        self.others = [pair for pair, f in zip(self.pairs, floating, strict=True) if not f]

    @torch.no_grad()
    def update(self) -> None:
        if self.updates == 0:
            for mine, theirs in self.pairs:
                mine.detach().copy_(theirs.detach())
        else:
            if self.floats:
                torch._foreach_lerp_(
                    [a.detach() for a, _ in self.floats],
                    [b.detach() for _, b in self.floats],
                    1 - self.decay,
                )
            for mine, theirs in self.others:
                mine.copy_(mine * self.decay + theirs.detach() * (1 - self.decay))
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        device = next(iter(self.module.parameters())).device
        return {
            "n_averaged": torch.tensor(self.updates, dtype=torch.long, device=device),
            **{f"module.{k}": v for k, v in self.module.state_dict().items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        prefix = "module."
        unknown = [k for k in state if k != "n_averaged" and not k.startswith(prefix)]
        if unknown:
            raise RuntimeError(f"unexpected EMA keys {unknown[:3]}")
        weights = {k[len(prefix) :]: v for k, v in state.items() if k != "n_averaged"}
        self.module.load_state_dict(weights)
        self.updates = int(state["n_averaged"])


def make_ema(config: RunConfig, model: nn.Module) -> WeightEma | None:
    """The weights' exponential moving average (WeightEma); None if off."""
    if config.ema_decay == 0:
        return None
    return WeightEma(model, config.ema_decay)


@dataclass
class Trainer:
    """A config's model, optimizer and grad scaler on its device, and one epoch of training."""

    config: RunConfig
    ex: Execution
    model: nn.Module
    step_model: nn.Module  # the compiled model where compile is on, else `model`
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    ema: WeightEma | None = None

    @classmethod
    def create(
        cls,
        config: RunConfig,
        ex: Execution | None = None,
        shape: tuple[int, tuple[int, ...]] | None = None,
    ) -> Trainer:
        """`shape`: (classes, image shape) of the data (default: the config's dataset's)."""
        ex = ex or Execution.resolve(config)
        classes, image_shape = data_shape(config) if shape is None else shape
        model = build_model(config, ex, (classes, image_shape))
        step_model, compiled = model, None
        if ex.compile_mode is not None:  # a kept compiled model of this shape, or a new one
            key = compile_key(config, ex, classes, image_shape)
            compiled = compile_model(model, key, ex.compile_mode)
            model, step_model = compiled.module, compiled.step_model
        # the optimizer and the EMA follow the parameters that the compiled step trains
        optimizer = make_optimizer(config, model, fused=ex.precision == "fp16")
        scaler = torch.amp.GradScaler(ex.device.type) if ex.precision == "fp16" else None
        trainer = cls(config, ex, model, step_model, optimizer, scaler, make_ema(config, model))
        if compiled is not None:
            claim(compiled, trainer)
        return trainer

    @property
    def selected_model(self) -> nn.Module:
        """The weights the run is judged, tested and exported by: the EMA's when on."""
        return self.model if self.ema is None else self.ema.module

    def set_lr(self, epoch: int, step: int = 0, steps: int = 1) -> float:
        lr = learning_rate(self.config, epoch, step, steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def train_epoch(
        self, d: DeviceData, epoch: int, show: bool | None = None
    ) -> tuple[float, float]:
        """One pass over the train split; returns (mean loss, mean accuracy)."""
        config, ex = self.config, self.ex
        loss_sum = torch.zeros((), dtype=torch.float64, device=ex.device)
        hits = torch.zeros((), dtype=torch.float64, device=ex.device)
        self.model.train()
        steps = math.ceil(len(d.train_x) / config.batch_size)
        smoothing = config.label_smoothing
        seen = 0

        def running_loss() -> str:  # read (a sync on a GPU) only when the bar is drawn
            return f"loss {loss_sum.item() / max(seen, 1):.3f}"

        with bar(f"epoch {epoch + 1}/{config.epochs}", steps, show) as advance:
            for step, b in enumerate(batches(d, config, ex, epoch)):
                if config.lr_per_step:
                    self.set_lr(epoch, step, steps)
                if ex.cuda_graphs:  # the last step's graph outputs may be overwritten now
                    torch.compiler.cudagraph_mark_step_begin()
                with ex.autocast():
                    logits = self.step_model(b.x).float()
                loss = F.cross_entropy(logits, b.y, label_smoothing=smoothing)
                if b.y2 is None:
                    hits += (logits.detach().argmax(1) == b.y).sum()
                else:
                    loss2 = F.cross_entropy(logits, b.y2, label_smoothing=smoothing)
                    loss = b.lam * loss + (1 - b.lam) * loss2
                    hits += augment.mixup_accuracy(logits.detach(), b.y, b.y2, b.lam)
                self.optimizer.zero_grad(set_to_none=True)
                if self.scaler is None:
                    loss.backward()
                    self.optimizer.step()
                else:
                    self.scaler.scale(loss).backward()
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                if self.ema is not None:
                    self.ema.update()
                loss_sum += loss.detach().double() * len(b.y)
                seen += len(b.y)
                advance(1, running_loss)
        return loss_sum.item() / len(d.train_x), hits.item() / len(d.train_x)

    def evaluate(self, d: DeviceData, model: nn.Module | None = None) -> dict[str, Any]:
        """Validation metrics of `model` (default: the selected weights)."""
        model = self.selected_model if model is None else model
        return evaluate_arrays(model, d.val_x, d.val_y, d.val_coarse, d.mean, d.std, self.ex)

    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
            "optimizer": self.optimizer.state_dict(),
            **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {}),
            "rng": {"torch": torch.get_rng_state()},
        }

    def load_state(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        if self.ema is not None:
            self.ema.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and "scaler" in ckpt:
            self.scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())


def resume(run: RunDir, trainer: Trainer, config: RunConfig) -> tuple[list[MetricRow], int]:
    """Rows and epochs done from the run's checkpoint (none: a fresh start)."""
    if not run.checkpoint_path.exists():
        return [], 0
    ckpt = run.load_checkpoint(trainer.ex.device)
    try:
        trainer.load_state(ckpt)
        rows, start = list(ckpt["rows"]), int(ckpt["epoch"])
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HpstudyError(f"{run.checkpoint_path}: does not fit this run ({first})") from None
    columns = metric_columns(ema=trainer.ema is not None)
    if not all(isinstance(r, dict) and tuple(r) == columns for r in rows):
        raise HpstudyError(f"{run.checkpoint_path}: its metric rows are not hpstudy's")
    if not 0 <= start <= config.epochs or len(rows) != start:
        raise HpstudyError(
            f"{run.checkpoint_path}: records epoch {start} of a {config.epochs}-epoch run"
        )
    logger.info(f"{run.name}: resuming after epoch {start}/{config.epochs}", **style("dim"))
    return rows, start


def train(
    config: RunConfig,
    run_dir: str | Path,
    *,
    root: str | Path | None = None,
    verify: bool = True,
    show_progress: bool | None = None,
    hooks: Sequence[RunHook | HookSpec] | None = None,
    label: str | None = None,
) -> Summary:
    """Train `config` in `run_dir`, resuming from its checkpoint; returns its Summary.

    `hooks` (hpstudy.run.hooks) hear of the run's start, each epoch and its end, in order;
    None: the defaults, TensorBoard event files and one line per epoch. Their `on_epoch`
    runs after every epoch, before its checkpoint (and again for the checkpoint's epoch on
    resume, so a kill between the two loses no decision); when one returns True before the
    last epoch the run stops, recorded as pruned. `label` names the run in its lines (a
    study's `stage 2 schedule=cosine seed 0`); without one, the run folder's name does."""
    ex = Execution.resolve(config)
    config = config.for_device(ex.device.type)
    run = RunDir(run_dir)
    run.check(config)  # a folder this run cannot use (another run's) is refused before the data
    summary = run.read_summary()
    if summary is not None and summary.status.done:
        return summary

    label = label or run.name
    # before the data: a hook that cannot be built fails the run before anything is written
    listeners = resolve_hooks(default_hooks(label) if hooks is None else hooks)
    loaded = load_data(root, verify, config.dataset, config.image_size)
    d = device_data(loaded, config, ex.device)
    trainer = Trainer.create(config, ex, (loaded.num_classes, loaded.image_shape))
    run.claim(config)  # only once data and model are there: a failed start leaves no folder
    rows, start_epoch = resume(run, trainer, config)
    run.write_metrics(rows, ema=trainer.ema is not None)
    summary = None
    try:
        # leaving this block, by a return or an exception, waits for the checkpoint in flight
        with CheckpointWriter(run) as checkpoints:
            for hook in listeners:
                hook.on_start(config, run.path, start_epoch)
            if 0 < start_epoch < config.epochs and told_to_stop(listeners, start_epoch, rows[-1]):
                summary = pruned(run, checkpoints, trainer, rows, start_epoch)
            else:
                summary = train_epochs(
                    run, trainer, d, rows, start_epoch, show_progress, listeners, label,
                    checkpoints=checkpoints,
                )  # fmt: skip
        return summary
    finally:
        for hook in listeners:
            hook.on_end(summary)


def told_to_stop(hooks: Sequence[RunHook], epoch: int, row: MetricRow) -> bool:
    """Every hook hears of the epoch (none is skipped because an earlier one said stop)."""
    return any([hook.on_epoch(epoch, row) for hook in hooks])


def train_epochs(
    run: RunDir,
    trainer: Trainer,
    d: DeviceData,
    rows: list[MetricRow],
    start_epoch: int,
    show_progress: bool | None,
    hooks: Sequence[RunHook] = (),
    label: str = "",
    *,
    checkpoints: CheckpointWriter,
) -> Summary:
    """The epochs from `start_epoch` on: train, validate, checkpoint, log; the run's Summary.

    Each epoch's checkpoint is written in the background (`checkpoints`) while the next
    epoch trains; metrics.csv is written just after it is submitted, so it may hold one epoch
    more than checkpoint.pt on disk (a kill then trains that epoch again, identically)."""
    config, ex = trainer.config, trainer.ex
    val: dict[str, Any] | None = None
    for epoch in range(start_epoch, config.epochs):
        lr = trainer.set_lr(epoch)
        t0 = time.perf_counter()
        train_loss, train_acc = trainer.train_epoch(d, epoch, show_progress)
        ex.sync()
        train_seconds = time.perf_counter() - t0
        if not (math.isfinite(train_loss) and math.isfinite(train_acc)):
            logger.error(f"{label}: loss is {train_loss} at epoch {epoch + 1}: diverged")
            return finish(run, checkpoints, trainer, rows, RunStatus.DIVERGED, epoch + 1)
        val = trainer.evaluate(d)
        if not (math.isfinite(val["loss"]) and math.isfinite(val["top1"])):
            logger.error(f"{label}: val loss is {val['loss']} at epoch {epoch + 1}: diverged")
            return finish(run, checkpoints, trainer, rows, RunStatus.DIVERGED, epoch + 1)
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
        if trainer.ema is not None:
            raw = trainer.evaluate(d, trainer.model)
            row |= {"raw_val_loss": raw["loss"], "raw_val_acc": raw["top1"]}
            row |= {"raw_val_top5": raw["top5"]}
            row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        stop = told_to_stop(hooks, epoch + 1, row) and epoch + 1 < config.epochs
        checkpoints.submit(
            {
                **trainer.state(),
                "epoch": epoch + 1,
                "scheduler": {"epoch": epoch + 1, "next_lr": learning_rate(config, epoch + 1)},
                "rows": rows,
                "normalization": {"mean": d.mean.tolist(), "std": d.std.tolist()},
                "run_hash": config.run_hash(),
            }
        )
        run.write_metrics(rows)
        if stop:
            return pruned(run, checkpoints, trainer, rows, epoch + 1)
    if val is None:  # resumed after its final epoch: the same weights give the same outcomes
        val = trainer.evaluate(d)
    run.write_val_predictions(val["predictions"], val["losses"])
    return finish(run, checkpoints, trainer, rows, RunStatus.FINISHED, config.epochs)


def pruned(
    run: RunDir, checkpoints: CheckpointWriter, trainer: Trainer, rows: list[MetricRow], epoch: int
) -> Summary:
    logger.info(f"{run.name}: pruned after epoch {epoch}/{trainer.config.epochs}")
    return finish(run, checkpoints, trainer, rows, RunStatus.PRUNED, epoch)


def finish(
    run: RunDir,
    checkpoints: CheckpointWriter,
    trainer: Trainer,
    rows: list[MetricRow],
    status: RunStatus,
    epochs_done: int,
) -> Summary:
    """summary.json, once the last checkpoint is on disk: a finished run's summary tells test
    evaluation and export that they may read it."""
    checkpoints.wait()
    ex = trainer.ex
    summary = Summary(
        status=status,
        run_hash=trainer.config.run_hash(),
        epochs_done=epochs_done,
        final=rows[-1] if rows and status == RunStatus.FINISHED else None,
        train_seconds=sum(r["seconds"] for r in rows),
        parameters=count_parameters(trainer.model),
        macs_per_image=count_macs(trainer.model),
        device=str(ex.device),
        device_name=device_name(ex.device),
        precision=ex.precision,
        channels_last=ex.channels_last,
        compile=ex.compile_mode or False,
        torch=torch.__version__,
        hpstudy=__version__,
    )
    run.write_summary(summary)
    return summary
