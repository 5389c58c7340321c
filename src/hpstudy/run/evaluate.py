"""Evaluation: loss and accuracies of weights on images; the only reader of the test split.

Every test evaluation is appended to the run's summary.json (its ledger), so a
report can say how often, and on which run, the test split was touched.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hpstudy import augment
from hpstudy.config import RunConfig
from hpstudy.constants import NUM_SUPERCLASSES
from hpstudy.errors import HpstudyError
from hpstudy.run.device import Execution, build_model, resolve_device
from hpstudy.run.device_data import load_data, split_of
from hpstudy.run.folder import Evaluation, RunDir, RunStatus

Split = Literal["val", "test"]


@torch.no_grad()
def evaluate_arrays(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    coarse: torch.Tensor | None,
    mean: torch.Tensor,
    std: torch.Tensor,
    ex: Execution,
) -> dict[str, Any]:
    """Mean cross-entropy, top-1, top-5 and per-superclass top-1 of uint8 `images`, and per
    image the predicted class (`predictions`, int16) and cross-entropy (`losses`, float32)
    as numpy arrays in the order of `images`.

    `coarse` None (a dataset without superclasses): `superclass_top1` is empty.
    """
    if len(images) == 0:
        raise HpstudyError("nothing to evaluate: the split has no images")
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=ex.device)
    top1 = torch.zeros((), dtype=torch.int64, device=ex.device)
    top5 = torch.zeros((), dtype=torch.int64, device=ex.device)
    superclasses = 0 if coarse is None else NUM_SUPERCLASSES
    coarse_hits = torch.zeros(superclasses, dtype=torch.float64, device=ex.device)
    predictions, losses = [], []
    batch = ex.eval_batch_size
    for i in range(0, len(images), batch):
        x = augment.normalize(images[i : i + batch], mean, std)
        y = labels[i : i + batch]
        with ex.autocast():
            logits = model(x.contiguous(memory_format=ex.memory_format)).float()
        image_losses = F.cross_entropy(logits, y, reduction="none")
        loss_sum += image_losses.sum()
        best5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hit1 = best5[:, 0] == y
        predictions.append(best5[:, 0].to(torch.int16))
        losses.append(image_losses)
        top1 += hit1.sum()
        top5 += (best5 == y[:, None]).any(dim=1).sum()
        if coarse is not None:
            coarse_hits.index_add_(0, coarse[i : i + batch], hit1.double())
    model.train(was_training)
    n = len(images)
    coarse_counts = (
        torch.zeros(0, dtype=torch.float64, device=ex.device)
        if coarse is None
        else torch.bincount(coarse, minlength=superclasses).double().clamp_min(1)
    )
    return {
        "loss": loss_sum.item() / n,
        "top1": top1.item() / n,
        "top5": top5.item() / n,
        "superclass_top1": (coarse_hits / coarse_counts).tolist(),
        "images": n,
        "predictions": torch.cat(predictions).cpu().numpy(),
        "losses": torch.cat(losses).float().cpu().numpy(),
    }


@dataclass(frozen=True)
class Trained:
    """A finished run's selected weights, loaded: what evaluation and export start from."""

    config: RunConfig
    ex: Execution
    model: nn.Module  # in eval mode
    mean: torch.Tensor  # (3,) [0, 1]-scale normalisation of the run's train split
    std: torch.Tensor
    weights: str  # "ema" or "raw": which weights were selected (EMA when the run kept one)


def selected_weights(ckpt: dict[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """The run's selected weights in a checkpoint: the EMA's when the run kept one, else the
    raw model's (see `Trainer.selected_model`)."""
    if "ema" in ckpt:
        prefix = "module."
        ema = ckpt["ema"]
        return {k[len(prefix) :]: v for k, v in ema.items() if k.startswith(prefix)}, "ema"
    return ckpt["model"], "raw"


def on_this_device(config: RunConfig) -> RunConfig:
    """The config to execute a trained run with: one trained in fp16 (CUDA only) is evaluated
    and exported in fp32 where its device is not a GPU (autocast is how fast, not what the
    weights are: they are float32 either way). The run's own config, and hash, are kept."""
    if config.precision == "fp16" and resolve_device(config.device).type != "cuda":
        return config.model_copy(update={"precision": "fp32"})
    return config


def load_trained(run_dir: str | Path, device: str | None = None) -> Trained:
    """A finished run's config and selected weights on `device` (default: the config's)."""
    run = RunDir(run_dir)
    if not run.config_path.is_file() or not run.checkpoint_path.is_file():
        raise HpstudyError(f"{run.path}: not a trained run (no config.json or checkpoint.pt)")
    summary = run.read_summary()
    if summary is None or summary.status != RunStatus.FINISHED:
        raise HpstudyError(f"{run.path}: run has not finished; train it first")
    config = run.read_config()
    if device is not None:
        config = config.model_copy(update={"device": device})
    ex = Execution.resolve(on_this_device(config))
    ckpt = run.load_checkpoint(ex.device)
    model = build_model(config, ex)
    try:
        state, weights = selected_weights(ckpt)
        # fp32 on load: a run's weights are float32 under autocast, but a half-precision
        # copy (or a checkpoint written otherwise) must not make a CPU model half
        model.load_state_dict({k: v.float() if v.is_floating_point() else v
                               for k, v in state.items()})
        mean = torch.tensor(ckpt["normalization"]["mean"], device=ex.device)
        std = torch.tensor(ckpt["normalization"]["std"], device=ex.device)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HpstudyError(f"{run.checkpoint_path}: does not fit this run ({first})") from None
    return Trained(config, ex, model.eval(), mean, std, weights)


def evaluate(
    run_dir: str | Path,
    split: Split = "val",
    *,
    root: str | Path | None = None,
    verify: bool = True,
    device: str | None = None,
) -> dict[str, Any]:
    """Loss, top-1, top-5, per-superclass top-1 of a finished run's selected weights. A test
    evaluation also keeps its per-image predictions (test_predictions.npy) for intervals."""
    run = RunDir(run_dir)
    if split not in ("val", "test"):
        raise HpstudyError(f"split: must be val or test (got {split!r})")
    trained = load_trained(run_dir, device)
    config, ex, model = trained.config, trained.ex, trained.model
    summary = run.read_summary()
    assert summary is not None  # load_trained refuses a run without one
    cifar = load_data(root, verify, config.dataset, config.image_size)
    if split == "test":
        part = cifar.test
        images, fine, coarse = part.images, part.fine, part.coarse
    else:
        _, val_idx = split_of(config, cifar)
        part = cifar.train
        images, fine = part.images[val_idx], part.fine[val_idx]
        coarse = None if part.coarse is None else part.coarse[val_idx]
    to = ex.device
    scores = evaluate_arrays(
        model,
        images.to(to),
        fine.to(to),
        None if coarse is None else coarse.to(to),
        trained.mean,
        trained.std,
        ex,
    )
    predictions = scores.pop("predictions")
    scores.pop("losses")
    result = {
        "split": split,
        "run_hash": config.run_hash(),
        **scores,
        "superclass_top1": dict(zip(cifar.coarse_names, scores["superclass_top1"], strict=True)),
    }
    if split == "test":
        run.write_test_predictions(predictions)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        ledger = [*summary.test_evaluations, Evaluation(**result, at=stamp)]
        run.write_summary(summary.model_copy(update={"test_evaluations": ledger}))
    return result


def image_outcomes(
    run_dir: str | Path, split: Split, *, root: str | Path | None = None, verify: bool = True
) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Per image of the run's `split` (val: its validation indices; test: the test split),
    whether the kept prediction is right (bool) and, for val, its loss; None when the run
    keeps no predictions of that split (a folder older than them, a test never evaluated)."""
    run = RunDir(run_dir)
    kept = run.val_predictions_path if split == "val" else run.test_predictions_path
    if not kept.exists():
        return None
    config = run.read_config()
    cifar = load_data(root, verify, config.dataset, config.image_size)
    if split == "test":
        labels = cifar.test.fine
    else:
        _, val_idx = split_of(config, cifar)
        labels = cifar.train.fine[val_idx]
    # read at most the images the run implies: a larger file is not one hpstudy wrote
    images = len(labels)
    if split == "val":
        predicted = run.read_val_predictions(images)
    else:
        predicted = run.read_test_predictions(images)
    if predicted is None:
        return None
    if len(labels) != len(predicted):
        raise HpstudyError(
            f"{run.path}: keeps {len(predicted)} {split} predictions for {len(labels)} images"
        )
    losses = run.read_val_losses(images) if split == "val" else None
    if losses is not None and len(losses) != len(predicted):
        raise HpstudyError(f"{run.val_losses_path}: {len(losses)} losses, not {len(predicted)}")
    return predicted == labels.numpy(), losses
