"""The recipe options: CutMix, EMA of the weights, AdamW, per-step learning rate, CIFAR-10, and
TensorBoard's event files. Tiny models (width 0.125) on a few hundred synthetic images."""

from __future__ import annotations

import builtins
import itertools
import json
import math
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from cifar_archive import write_cifar10, write_cifar10_archive

from hpstudy import augment, cli, data
from hpstudy.config import RunConfig, make_run_config
from hpstudy.defaults import COMPILE_MODES
from hpstudy.errors import HpstudyError
from hpstudy.run import (
    CheckpointWriter,
    RunDir,
    Trainer,
    device_data,
    evaluate,
    learning_rate,
    load_data,
    train,
)
from hpstudy.run import events as run_events
from hpstudy.run.compiled import forget_compiled
from hpstudy.run.device import Execution

TINY = dict(width=0.125, batch_size=64, device="cpu", limit_train=192, limit_val=64)


@pytest.fixture(autouse=True)
def _offline_cifar10(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPSTUDY_CIFAR10_URL", "http://127.0.0.1:9/cifar-10-python.tar.gz")


# ------------------------------------------------------------------ config and hashes


def test_new_fields_at_their_defaults_keep_every_run_hash() -> None:
    # computed in this worktree before any recipe field existed (commit 68e85ee)
    assert RunConfig().for_device("cpu").run_hash() == "b0dbc2c30fe7"
    old = RunConfig(lr=0.5, schedule="cosine", weight_decay=5e-4, mixup_alpha=0.2, epochs=300,
                    nesterov=True, warmup_epochs=3, label_smoothing=0.1, width=0.5, seed=3,
                    limit_train=2048)  # fmt: skip
    assert old.for_device("cpu").run_hash() == "0a30d8b3746d"
    explicit = RunConfig(optimizer="sgd", dataset="cifar100", ema_decay=0.0, cutmix_alpha=0.0,
                         mix_switch_prob=0.5, lr_per_step=False)  # fmt: skip
    assert explicit.for_device("cpu").run_hash() == "b0dbc2c30fe7"
    changes = ({"optimizer": "adamw"}, {"dataset": "cifar10"}, {"ema_decay": 0.99},
               {"cutmix_alpha": 1.0}, {"lr_per_step": True}, {"mix_switch_prob": 0.2})  # fmt: skip
    for change in changes:
        assert RunConfig(**change).for_device("cpu").run_hash() != "b0dbc2c30fe7", change


@pytest.mark.parametrize(
    "values, needle",
    [
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"ema_decay": -0.1}, "ema_decay"),
        ({"ema_decay": float("nan")}, "ema_decay"),
        ({"cutmix_alpha": -1}, "cutmix_alpha"),
        ({"cutmix_alpha": float("inf")}, "cutmix_alpha"),
        ({"mix_switch_prob": 1.5}, "mix_switch_prob"),
        ({"optimizer": "adam"}, "optimizer"),
        ({"dataset": "mnist"}, "dataset"),
        ({"dataset": 10}, "dataset"),
        ({"lr_per_step": "often"}, "lr_per_step"),
        ({"optimizer": "adamw", "nesterov": True}, "nesterov"),
    ],
)
def test_bad_recipe_values_are_one_line(values: dict, needle: str) -> None:
    with pytest.raises(HpstudyError) as err:
        make_run_config(values)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_train_has_a_flag_per_new_field_and_refuses_bad_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["train", "--out", "r", "--optimizer", "adamw", "--lr-per-step",
                              "--cutmix-alpha", "1", "--mix-switch-prob", "0.3",
                              "--ema-decay", "0.99", "--dataset", "cifar10"])  # fmt: skip
    assert (args.optimizer, args.lr_per_step, args.cutmix_alpha, args.mix_switch_prob,
            args.ema_decay, args.dataset) == ("adamw", True, 1.0, 0.3, 0.99, "cifar10")  # fmt: skip
    # in this process: the same main() as the command, without a second start-up
    out = str(tmp_path / "r")
    assert cli.main(["train", "--optimizer", "adamw", "--nesterov", "--out", out]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "nesterov" in err[0]
    # any name may be a registered dataset: an unknown one is one line naming it
    assert cli.main(["train", "--dataset", "svhn", "--out", out]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: dataset: unknown dataset 'svhn'")
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------ per-step learning rate


def test_per_step_learning_rate_warms_up_then_follows_the_cosine_at_fractional_epochs() -> None:
    c = RunConfig(lr=0.1, epochs=4, warmup_epochs=1, schedule="cosine", lr_per_step=True)
    steps = 4
    warm = [learning_rate(c, 0, s, steps) for s in range(steps)]
    assert warm == pytest.approx([0.025, 0.05, 0.075, 0.1])
    # epoch 2 step 2 is 1.5 epochs into a 3-epoch cosine
    assert learning_rate(c, 2, 2, steps) == pytest.approx(0.05 * (1 + math.cos(math.pi * 0.5)))
    # after warmup, the per-epoch values are the per-step ones at step 0 (and those of SPEC §1)
    for epoch in range(1, 4):
        assert learning_rate(c, epoch) == pytest.approx(learning_rate(c, epoch, 0, steps))
    values = [learning_rate(c, e, s, steps) for e in range(1, 4) for s in range(steps)]
    assert all(a > b for a, b in itertools.pairwise(values))


def test_per_step_lr_is_what_the_optimizer_uses(synthetic_root: Path) -> None:
    config = RunConfig(**TINY, epochs=2, schedule="cosine", lr=0.1, lr_per_step=True)
    trainer = Trainer.create(config)
    d = device_data(load_data(synthetic_root, False), config, trainer.ex.device)
    seen = []
    step = trainer.optimizer.step

    def record(*args, **kwargs):
        seen.append(trainer.optimizer.param_groups[0]["lr"])
        return step(*args, **kwargs)

    trainer.optimizer.step = record  # type: ignore[method-assign]
    trainer.train_epoch(d, 1, show=False)
    assert seen == pytest.approx([learning_rate(config, 1, s, 3) for s in range(3)])
    assert seen[0] > seen[1] > seen[2]


# ------------------------------------------------------------------ CutMix


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.64, 0.99, 1.0])
def test_cutmix_box_is_timms_and_clipped(lam: float) -> None:
    rng = np.random.default_rng(5)
    for _ in range(50):
        top, bottom, left, right = augment.cutmix_box(lam, 32, 32, rng)
        assert 0 <= top <= bottom <= 32 and 0 <= left <= right <= 32
        side = int(32 * math.sqrt(1 - lam))
        # unclipped, the box has sides of 2·(side // 2); clipping only shrinks it
        assert bottom - top <= 2 * (side // 2) and right - left <= 2 * (side // 2)


def test_cutmix_pastes_one_partner_box_and_weights_labels_by_its_area() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 3, 32, 32).contiguous()
    rng = np.random.default_rng(1)
    box = augment.cutmix_box(0.6, 32, 32, np.random.default_rng(1))
    mixed, partner, lam = augment.cutmix(x, 0.6, gen, rng)
    top, bottom, left, right = box
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[top:bottom, left:right] = True
    for i in range(6):
        assert torch.equal(mixed[i][:, inside], x[partner[i]][:, inside])
        assert torch.equal(mixed[i][:, ~inside], x[i][:, ~inside])
        # the share of image i's own pixels is the label weight
        own = (mixed[i, 0] == i).float().mean().item() if partner[i] != i else None
        if own is not None:
            assert own == pytest.approx(lam)
    assert lam == pytest.approx(1 - inside.float().mean().item())
    assert 0.0 < lam < 1.0
    assert sorted(partner.tolist()) == list(range(6))


def test_cutmix_and_mixup_switch_per_batch(synthetic_root: Path) -> None:
    from hpstudy.run import batches

    base = RunConfig(**{**TINY, "batch_size": 8}, mixup_alpha=0.2, cutmix_alpha=1.0)
    trainer = Trainer.create(base)
    d = device_data(load_data(synthetic_root, False), base, trainer.ex.device)

    def cutmix_share(prob: float) -> float:
        config = base.model_copy(update={"mix_switch_prob": prob})
        lams = [b.lam for b in batches(d, config, trainer.ex, 0)]
        assert len(lams) == 24 and all(0 <= lam <= 1 for lam in lams)
        # a CutMix λ is 1 − (box pixels)/1024; a mixup λ ~ Beta(0.2, 0.2) is never on that grid
        return float(np.mean([abs(lam * 1024 - round(lam * 1024)) < 1e-9 for lam in lams]))

    assert cutmix_share(1.0) == 1.0
    assert cutmix_share(0.0) == 0.0
    assert 0.0 < cutmix_share(0.5) < 1.0


# ------------------------------------------------------------------ EMA and AdamW


def test_ema_equals_a_hand_computed_average_after_a_few_steps(synthetic_root: Path) -> None:
    decay = 0.8
    config = RunConfig(**TINY, epochs=1, ema_decay=decay, optimizer="adamw", lr=1e-3)
    trainer = Trainer.create(config)
    d = device_data(load_data(synthetic_root, False), config, trainer.ex.device)
    snapshots = []
    step = trainer.optimizer.step

    def record(*args, **kwargs):
        out = step(*args, **kwargs)
        snapshots.append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})
        return out

    trainer.optimizer.step = record  # type: ignore[method-assign]
    trainer.train_epoch(d, 0, show=False)
    assert len(snapshots) == 3
    expected = {k: v.double() for k, v in snapshots[0].items()}  # the first update copies
    for snap in snapshots[1:]:
        for k, v in snap.items():
            if v.is_floating_point():
                expected[k] = decay * expected[k] + (1 - decay) * v.double()
    ema = trainer.ema.module.state_dict()  # type: ignore[union-attr]
    for k, v in expected.items():
        if ema[k].is_floating_point():
            assert torch.allclose(ema[k].double(), v, atol=1e-6, rtol=1e-5), k
    raw = trainer.model.state_dict()
    assert any(not torch.equal(raw[k], ema[k]) for k in raw if raw[k].is_floating_point())


def test_ema_equals_torchs_averaged_model_to_the_last_bit_and_shares_its_checkpoint(
    synthetic_root: Path,
) -> None:
    """WeightEma reads no device counter per step, and computes what AveragedModel did
    (runs trained before it resume through its state_dict, and give equal numbers)."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    config = RunConfig(**TINY, epochs=1, ema_decay=0.7, lr=0.05)
    trainer = Trainer.create(config)
    averaged = AveragedModel(
        trainer.model, multi_avg_fn=get_ema_multi_avg_fn(0.7), use_buffers=True
    )
    d = device_data(load_data(synthetic_root, False), config, trainer.ex.device)
    step = trainer.optimizer.step

    def step_and_average(*args, **kwargs):
        out = step(*args, **kwargs)
        averaged.update_parameters(trainer.model)  # where train_epoch updates its own
        return out

    trainer.optimizer.step = step_and_average  # type: ignore[method-assign]
    trainer.train_epoch(d, 0, show=False)
    ours, theirs = trainer.ema.state_dict(), averaged.state_dict()  # type: ignore[union-attr]
    assert list(ours) == list(theirs) and int(ours["n_averaged"]) == 3
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs), "EMA differs from torch's"
    assert any(ours[k].dtype == torch.long for k in ours if k != "n_averaged")  # BN counters
    fresh = Trainer.create(config)
    fresh.ema.load_state_dict(theirs)  # type: ignore[union-attr]
    assert fresh.ema.updates == 3  # type: ignore[union-attr]
    loaded = fresh.ema.state_dict()  # type: ignore[union-attr]
    assert all(torch.equal(loaded[k], theirs[k]) for k in theirs)
    with pytest.raises(RuntimeError):
        fresh.ema.load_state_dict({**theirs, "other.weight": theirs["n_averaged"]})  # type: ignore[union-attr]


def test_fp16_steps_read_nothing_on_the_host_and_skip_an_overflow_as_the_syncing_path_does(
    synthetic_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fp16's optimizer is fused, so GradScaler hands it the inf check as a tensor instead of
    reading it per step (`.item()`: a blocking sync on a GPU). On the CPU (fp16 autocast runs
    there, though runs refuse it) against the foreach optimizer that reads it: the same skipped
    steps (the second one's gradients made inf), the same scale, the same weights up to the
    fused kernel's last bits."""
    from hpstudy.run import loop
    from hpstudy.run.device import Execution

    config = RunConfig(**TINY, epochs=1, precision="fp16", weight_decay=5e-4)
    ex = Execution(torch.device("cpu"), "fp16", False, False, 256)
    d = device_data(load_data(synthetic_root, False), config, ex.device)
    reads = 0
    item = torch.Tensor.item

    def counted(self: torch.Tensor):
        nonlocal reads
        reads += 1
        return item(self)

    def small_net() -> torch.nn.Module:  # fp16 convolutions are slow on a CPU: a small model
        torch.manual_seed(0)
        layers = [torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU()]
        pool = [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 100)]
        return torch.nn.Sequential(*layers, *pool)

    results = {}
    for fused in (True, False):
        model, scaler = small_net(), torch.amp.GradScaler("cpu")
        optimizer = loop.make_optimizer(config, model, fused=fused)
        trainer = Trainer(config, ex, model, model, optimizer, scaler)
        scale, calls = scaler.scale, itertools.count()

        def overflow_second(loss, scale=scale, calls=calls):  # its gradients are all inf
            return scale(loss) * (float("inf") if next(calls) == 1 else 1.0)

        scaler.scale = overflow_second  # type: ignore[method-assign]
        reads = 0
        with monkeypatch.context() as patch:
            patch.setattr(torch.Tensor, "item", counted)
            trainer.train_epoch(d, 0, show=False)
        results[fused] = (reads, scaler.get_scale(), model.state_dict())
    (fused_reads, fused_scale, fused_w), (sync_reads, sync_scale, sync_w) = results.values()
    steps = math.ceil(192 / 64)
    assert fused_reads == 2  # the epoch's loss and accuracy, read once at its end
    assert sync_reads == 2 + steps  # plus found_inf, every step
    assert fused_scale == sync_scale <= 2.0**15  # halved at least by the overflowing step
    for key, value in sync_w.items():
        assert torch.allclose(fused_w[key].double(), value.double(), rtol=1e-5, atol=1e-6), key
    start = small_net().state_dict()
    assert any(not torch.equal(start[k], fused_w[k]) for k in start)  # the other steps ran


def test_compile_asks_for_static_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    """dynamic=False: the partial last batch compiles a graph of its own once, rather than
    recompiling the model for dynamic shapes (slower kernels for every full batch)."""
    asked: list[dict] = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: asked.append(kw) or model)
    trainer = Trainer.create(RunConfig(**TINY, compile=True))
    assert asked == [{"dynamic": False, "mode": "default"}]
    assert trainer.step_model is trainer.model


COMPILE_VALUES = [True, False, None, *COMPILE_MODES]


def test_compile_values_are_one_field_with_one_run_hash(
    capsys: pytest.CaptureFixture[str],
) -> None:
    hashes = {make_run_config({**TINY, "compile": v}).run_hash() for v in COMPILE_VALUES}
    assert hashes == {RunConfig(**TINY).run_hash()}
    modes = [Execution.resolve(RunConfig(**TINY, compile=v)).compile_mode for v in COMPILE_VALUES]
    assert modes == ["default", None, None, *COMPILE_MODES]  # auto: the cpu row, eager
    parser = cli.build_parser()
    given = {"--compile": True, "--no-compile": False,
             "--compile reduce-overhead": "reduce-overhead",
             "--compile max-autotune-no-cudagraphs": "max-autotune-no-cudagraphs"}  # fmt: skip
    for options, value in given.items():
        assert parser.parse_args(["train", "--out", "x", *options.split()]).compile == value
    for bad in ("fast", "true", 1, 0.5, ["default"]):
        with pytest.raises(HpstudyError) as err:
            make_run_config({"compile": bad})
        line = str(err.value)
        assert "\n" not in line and "compile: must be true, false or one of" in line
        assert all(mode in line for mode in COMPILE_MODES)
    refused = {"--compile fast": "reduce-overhead", "--no-compile default": "takes no value"}
    for options, needle in refused.items():
        with pytest.raises(SystemExit) as exited:  # argparse's refusal, as the command gives it
            cli.main(["train", "--out", "x", *options.split()])
        assert exited.value.code != 0
        err_lines = capsys.readouterr().err.strip().splitlines()
        assert len(err_lines) == 1 and err_lines[0].startswith("error: ") and needle in err_lines[0]
    train_help = next(a for a in parser._actions if a.dest == "command").choices["train"]
    assert "--compile [MODE], --no-compile\n" in train_help.format_help()


def test_an_old_summary_with_compile_as_a_bool_still_reads(tmp_path: Path) -> None:
    for old in (True, False):
        (tmp_path / "summary.json").write_text(json.dumps(
            {"status": "finished", "run_hash": "abc", "compile": old}))  # fmt: skip
        summary = RunDir(tmp_path).read_summary()
        assert summary is not None and summary.compile is old


class Counted(torch.nn.Module):
    """torch.compile's stand-in: runs the module it wraps, counted where it is made."""

    made: ClassVar[list[dict]] = []

    def __init__(self, model: torch.nn.Module, **options: object) -> None:
        super().__init__()
        self.inner = model
        Counted.made.append(options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


@pytest.fixture
def counted_compile(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    monkeypatch.setattr(Counted, "made", [])
    monkeypatch.setattr(torch, "compile", Counted)
    return Counted.made


@pytest.mark.parametrize("mode", [*COMPILE_MODES, False])
def test_cuda_graph_modes_mark_each_step(
    mode: str | bool, synthetic_root: Path, counted_compile: list[dict],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A CUDA graph's outputs are overwritten by its next replay: reduce-overhead and
    max-autotune (both replay graphs) mark each compiled step's start, the others do not."""
    marks: list[int] = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    config = RunConfig(**{**TINY, "limit_train": 128}, compile=mode)
    trainer = Trainer.create(config)
    d = device_data(load_data(synthetic_root, False), config, trainer.ex.device)
    trainer.train_epoch(d, 0, show=False)
    assert counted_compile == ([{"dynamic": False, "mode": mode}] if mode else [])
    assert len(marks) == (2 if mode in ("reduce-overhead", "max-autotune") else 0)


def test_a_compiled_model_is_reused_by_the_next_run_of_its_shape(
    synthetic_root: Path, tmp_path: Path, counted_compile: list[dict]
) -> None:
    """Runs of one shape in one process compile once; a run that takes the kept compiled model
    over computes what it computes alone, bit for bit (its weights, optimizer and EMA)."""

    def run(name: str, **change: object) -> tuple[list[dict], dict]:
        config = RunConfig(**{**TINY, "limit_train": 128, "epochs": 1, "lr": 0.05,
                              "compile": True, "ema_decay": 0.5, **change})  # fmt: skip
        train(config, tmp_path / name, root=synthetic_root, verify=False, show_progress=False)
        rows = [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")}
                for row in RunDir(tmp_path / name).read_metrics()]  # fmt: skip
        return rows, torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)

    run("first", seed=0)
    after_first, ckpt = run("second", seed=1, batch_size=32)  # a new batch: the same model
    assert len(counted_compile) == 1
    forget_compiled()
    alone, alone_ckpt = run("alone", seed=1, batch_size=32)
    assert len(counted_compile) == 2
    assert after_first == alone and len(alone) == 1
    for part in ("model", "ema"):
        assert ckpt[part].keys() == alone_ckpt[part].keys()
        assert all(torch.equal(ckpt[part][k], alone_ckpt[part][k]) for k in ckpt[part]), part
    for k, state in alone_ckpt["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(ckpt["optimizer"]["state"][k][name], value), (k, name)
    run("wider", seed=1, width=0.25)  # another shape: compiled again
    assert len(counted_compile) == 3


def test_a_compiled_model_in_use_is_not_taken_over(counted_compile: list[dict]) -> None:
    config = RunConfig(**TINY, compile=True)
    first = Trainer.create(config)
    second = Trainer.create(config)  # the first still trains its model: a compile of its own
    assert len(counted_compile) == 2 and second.model is not first.model
    del first, second
    third = Trainer.create(config)
    assert len(counted_compile) == 2 and third.step_model.inner is third.model


class Stop(Exception):
    """Raised after an epoch's checkpoint, as a kill would stop the process."""


def stop_after(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    """Stop the run once `epoch`'s checkpoint is submitted: leaving train waits for the
    background write, as it does for any exception."""
    submit = CheckpointWriter.submit

    def submit_then_stop(self, state):
        submit(self, state)
        if state["epoch"] == epoch:
            raise Stop

    monkeypatch.setattr(CheckpointWriter, "submit", submit_then_stop)


@pytest.mark.parametrize("options", [{"ema_decay": 0.9, "cutmix_alpha": 1.0},
                                     {"optimizer": "adamw", "lr_per_step": True,
                                      "schedule": "cosine", "mixup_alpha": 0.2}])  # fmt: skip
def test_resume_equals_an_uninterrupted_run_bit_for_bit(
    synthetic_root: Path, tmp_path: Path, options: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    # two epochs of two steps: stopped after the first, resumed for the second
    config = RunConfig(**{**TINY, "limit_train": 128}, epochs=2, lr=0.01, **options)
    whole = train(config, tmp_path / "whole", root=synthetic_root, verify=False,
                  show_progress=False)  # fmt: skip
    with monkeypatch.context() as m:
        stop_after(m, 1)
        with pytest.raises(Stop):
            train(config, tmp_path / "cut", root=synthetic_root, verify=False, show_progress=False)
    resumed = train(config, tmp_path / "cut", root=synthetic_root, verify=False,
                    show_progress=False)  # fmt: skip
    assert resumed.final is not None and whole.final is not None
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert ("ema" in a) == ("ema_decay" in options) == ("ema" in b)
    for part in ("model", "ema") if "ema" in a else ("model",):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for k, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            other = b["optimizer"]["state"][k][name]
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(other)), (k, name)
    keep = [k for k in whole.final if k not in ("seconds", "images_per_s")]
    assert {k: whole.final[k] for k in keep} == {k: resumed.final[k] for k in keep}
    if options.get("optimizer") == "adamw":
        assert isinstance(Trainer.create(config).optimizer, torch.optim.AdamW)


def test_an_ema_run_selects_its_ema_weights(synthetic_root: Path, tmp_path: Path) -> None:
    config = RunConfig(**TINY, epochs=2, ema_decay=0.5, lr=0.05)
    summary = train(config, tmp_path / "r", root=synthetic_root, verify=False, show_progress=False)
    rows = RunDir(tmp_path / "r").read_metrics()
    assert set(rows[-1]) >= {"raw_val_loss", "raw_val_acc", "raw_val_top5"}
    assert rows[-1]["val_loss"] != rows[-1]["raw_val_loss"]
    val = evaluate(tmp_path / "r", "val", root=synthetic_root, verify=False, device="cpu")
    assert val["loss"] == pytest.approx(summary.final["val_loss"], rel=1e-5)  # type: ignore[index]


# ------------------------------------------------------------------ CIFAR-10


def test_cifar10_loads_from_its_official_layout_through_the_archive(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_cifar10(src, per_batch=40, n_test=30)
    root = tmp_path / "root"
    root.mkdir()
    write_cifar10_archive(src, root / "cifar-10-python.tar.gz")
    cifar = data.load_dataset("cifar10", root, verify=False)  # extracts the archive
    assert (root / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert cifar.name == "cifar10" and cifar.num_classes == 10 and cifar.coarse_names == []
    assert cifar.train.images.shape == (200, 3, 32, 32) and cifar.train.coarse is None
    assert cifar.test.images.shape == (30, 3, 32, 32)
    # the five batches in file order
    from cifar_archive import write_cifar10 as again

    again(tmp_path / "same", per_batch=40, n_test=30)
    first = data.load_dataset("cifar10", tmp_path / "same", verify=False)
    assert torch.equal(first.train.images, cifar.train.images)
    info = data.split_info(cifar, 0)
    assert (info["dataset"], info["num_classes"], info["train_size"], info["val_size"]) == (
        "cifar10", 10, 160, 40)  # fmt: skip
    with pytest.raises(HpstudyError, match="md5"):
        data.load_dataset("cifar10", root, verify=True)


def test_cifar10_refuses_bad_labels_and_a_missing_archive_in_one_line(tmp_path: Path) -> None:
    from cifar_archive import py2_pickle_bytes

    root = tmp_path / "r"
    folder = write_cifar10(root, per_batch=20, n_test=10)
    with pytest.raises(HpstudyError, match=r"cannot download CIFAR-10 .*cifar-10-batches-py/"):
        data.load_dataset("cifar10", tmp_path / "empty", verify=False)
    batch = {b"data": np.zeros((20, 3072), np.uint8), b"labels": [10] * 20}
    (folder / "data_batch_3").write_bytes(py2_pickle_bytes(batch))
    with pytest.raises(HpstudyError, match=r"'labels' has values in 10..10, expected 0..9"):
        data.load_dataset("cifar10", root, verify=False)
    (folder / "data_batch_3").write_bytes(py2_pickle_bytes([b"data", 1]))
    with pytest.raises(HpstudyError, match="not a CIFAR-10 pickle"):
        data.load_dataset("cifar10", root, verify=False)


def test_a_cifar10_run_trains_and_evaluates_without_superclasses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data"
    write_cifar10(root, per_batch=40, n_test=30)
    config = RunConfig(**{**TINY, "limit_train": None, "limit_val": None}, epochs=1,
                       dataset="cifar10")  # fmt: skip
    summary = train(config, tmp_path / "run", root=root, verify=False, show_progress=False)
    assert summary.status == "finished"
    result = evaluate(tmp_path / "run", "test", root=root, verify=False, device="cpu")
    assert result["images"] == 30 and result["superclass_top1"] == {}
    assert cli.main(["data", "info", "--dataset", "cifar10", "--root", str(root), "--no-verify",
                     "--json"]) == 0  # fmt: skip
    info = json.loads(capsys.readouterr().out)
    assert (info["dataset"], info["num_classes"], info["test_size"]) == ("cifar10", 10, 30)


# ------------------------------------------------------------------ TensorBoard


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_runs_write_event_files_that_tensorboard_reads_once_per_epoch(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tensorboard")
    config = RunConfig(**TINY, epochs=2, ema_decay=0.9)
    run = tmp_path / "r"
    with monkeypatch.context() as m:
        stop_after(m, 1)
        with pytest.raises(Stop):
            train(config, run, root=synthetic_root, verify=False, show_progress=False)
    train(config, run, root=synthetic_root, verify=False, show_progress=False)
    assert len(list(run.glob("events.out.tfevents.*"))) == 2  # one per process
    found = scalars(run)
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "lr", "images_per_s",
            "val_raw/loss", "val_raw/acc"} <= set(found)  # fmt: skip
    assert [step for step, _ in found["val/loss"]] == [1, 2]  # resumed: no epoch twice
    rows = RunDir(run).read_metrics()
    for tag, column in (("val/acc", "val_acc"), ("train/loss", "train_loss"),
                        ("val_raw/loss", "raw_val_loss")):  # fmt: skip
        assert [v for _, v in found[tag]] == pytest.approx([r[column] for r in rows], rel=1e-6)


def test_without_tensorboard_a_run_says_so_once_and_trains(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith(("torch.utils.tensorboard", "tensorboard")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    monkeypatch.setattr(run_events, "_said_missing", False)
    config = RunConfig(**TINY, epochs=1)
    for name in ("a", "b"):
        summary = train(config, tmp_path / name, root=synthetic_root, verify=False,
                        show_progress=False)  # fmt: skip
        assert summary.status == "finished"
        assert not list((tmp_path / name).glob("events.out.tfevents.*"))
    said = [r.getMessage() for r in caplog.records if r.name.startswith("hpstudy")]
    assert sum("TensorBoard logging is off" in m for m in said) == 1
    assert "pip install 'hpstudy[tensorboard]'" in caplog.text
