"""The background checkpoint writer: the file holds the state at submit time, one write at a
time, errors reach the caller in one line, an exception in training still lands the write.

Slow writes are made deterministic by a gate (an Event) in front of the real write, never by
a sleep; tiny models (width 0.125) on a few random images."""

from __future__ import annotations

import errno
import logging
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from unit_fixtures import run_here

from hpstudy import files
from hpstudy.config import RunConfig
from hpstudy.errors import HpstudyError
from hpstudy.run import CheckpointWriter, RunDir, Trainer, cpu_copy

TINY = {"width": 0.125, "batch_size": 64, "device": "cpu"}
HANG_GUARD = 120  # seconds: only a broken writer waits this long


def stepped_trainer(**options: Any) -> Trainer:
    """A tiny trainer after one SGD step, so that its optimizer holds momentum buffers."""
    trainer = Trainer.create(RunConfig(**TINY, **options), shape=(10, (3, 32, 32)))
    step(trainer)
    return trainer


def step(trainer: Trainer) -> None:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, 32, 32, generator=gen), torch.randint(0, 10, (8,), generator=gen)
    trainer.model.train()
    trainer.optimizer.zero_grad()
    F.cross_entropy(trainer.model(x), y).backward()
    trainer.optimizer.step()
    if trainer.ema is not None:
        trainer.ema.update()


def tensors(state: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a nested state, by its path."""
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    if not isinstance(state, dict | list | tuple):
        return {}
    items = state.items() if isinstance(state, dict) else enumerate(state)
    return {k: v for key, value in items for k, v in tensors(value, f"{prefix}/{key}").items()}


class GatedWrites:
    """RunDir.save_checkpoint held at a gate: `started` is set when a write begins (before a
    byte is serialised), which waits for `gate`; `most_at_once` counts writes in flight."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.started, self.gate = threading.Event(), threading.Event()
        self.epochs: list[int] = []
        self.in_flight = self.most_at_once = 0
        self.lock = threading.Lock()
        save = RunDir.save_checkpoint

        def gated(run: RunDir, state: dict[str, Any]) -> None:
            with self.lock:
                self.in_flight += 1
                self.most_at_once = max(self.most_at_once, self.in_flight)
                self.epochs.append(state["epoch"])
            self.started.set()
            assert self.gate.wait(HANG_GUARD)
            save(run, state)
            with self.lock:
                self.in_flight -= 1

        monkeypatch.setattr(RunDir, "save_checkpoint", gated)


def test_the_file_holds_the_state_at_submit_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = stepped_trainer(ema_decay=0.9)
    rows = [{"epoch": 1, "val_acc": 0.5}]
    expected = {k: v.clone() for k, v in tensors(trainer.state()).items()}
    writes = GatedWrites(monkeypatch)
    writer = CheckpointWriter(RunDir(tmp_path))
    writer.submit({**trainer.state(), "epoch": 1, "rows": rows})
    assert writes.started.wait(HANG_GUARD)
    # the next step changes weights, momentum and EMA in place while the write waits
    step(trainer)
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(1.0)
    rows.append({"epoch": 2, "val_acc": 0.6})
    live = tensors(trainer.state())
    weights = [f"/model/{name}" for name, _ in trainer.model.named_parameters()]
    momenta = [k for k in expected if k.startswith("/optimizer/state/")]
    assert weights and momenta and "/ema/n_averaged" in expected
    assert all(not torch.equal(live[k], expected[k]) for k in [*weights, "/ema/n_averaged"])
    assert any(not torch.equal(live[k], expected[k]) for k in momenta)
    writes.gate.set()
    writer.wait()
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert saved["rows"] == [{"epoch": 1, "val_acc": 0.5}] and saved["epoch"] == 1
    found = tensors({k: v for k, v in saved.items() if k not in ("rows", "epoch")})
    assert found.keys() == expected.keys()
    assert all(torch.equal(found[k], expected[k]) for k in expected)
    assert not (tmp_path / "checkpoint.pt.tmp").exists()


def test_the_copy_is_the_state_itself_apart(tmp_path: Path) -> None:
    """cpu_copy: equal tensors in storage of their own, new containers, a state_dict's
    _metadata kept; the writer's file loads into a trainer as a synchronous save's does."""
    trainer = stepped_trainer()
    state = trainer.state()
    copied = cpu_copy(state)
    assert copied["model"]._metadata == state["model"]._metadata
    assert type(copied["model"]) is type(state["model"])
    ours, theirs = tensors(copied), tensors(state)
    assert ours.keys() == theirs.keys()
    for k, v in theirs.items():
        assert torch.equal(ours[k], v) and ours[k].data_ptr() != v.data_ptr(), k
    assert copied["optimizer"]["param_groups"] is not state["optimizer"]["param_groups"]
    assert copied["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]

    with CheckpointWriter(RunDir(tmp_path / "background")) as writer:
        (tmp_path / "background").mkdir()
        writer.submit(state)
    (tmp_path / "sync").mkdir()
    RunDir(tmp_path / "sync").save_checkpoint(state)
    a = torch.load(tmp_path / "background" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "sync" / "checkpoint.pt", weights_only=True)
    assert a["model"]._metadata == b["model"]._metadata
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    assert all(torch.equal(tensors(a)[k], v) for k, v in tensors(b).items())
    fresh = Trainer.create(RunConfig(**TINY), shape=(10, (3, 32, 32)))
    fresh.load_state(a)
    loaded, original = fresh.model.state_dict(), trainer.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in original.items())


def test_a_second_submit_waits_for_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = GatedWrites(monkeypatch)
    writer = CheckpointWriter(RunDir(tmp_path))
    writer.submit({"epoch": 1, "w": torch.zeros(3)})
    assert writes.started.wait(HANG_GUARD)
    second = threading.Thread(target=writer.submit, args=({"epoch": 2, "w": torch.ones(3)},))
    second.start()
    second.join(timeout=0.5)  # a correct writer is still waiting, however long this is
    assert second.is_alive() and writes.epochs == [1]
    writes.gate.set()
    second.join(HANG_GUARD)
    writer.wait()
    assert writes.epochs == [1, 2] and writes.most_at_once == 1
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 2


def no_space(tmp: Path, payload: bytes) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_write_error_reaches_the_caller_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = RunDir(tmp_path)
    writer = CheckpointWriter(run)
    writer.submit({"epoch": 1, "w": torch.zeros(3)})
    writer.wait()
    with monkeypatch.context() as m:
        m.setattr(files, "write_bytes_new", no_space)  # the disk fills in the writer thread
        writer.submit({"epoch": 2, "w": torch.ones(3)})
        with pytest.raises(HpstudyError) as raised:
            writer.wait()
    assert str(raised.value) == f"{run.checkpoint_path}: cannot write (No space left on device)"
    # the previous checkpoint is whole, no temporary file is left, and the error is not
    # raised twice
    assert torch.load(run.checkpoint_path, weights_only=True)["epoch"] == 1
    assert not (tmp_path / "checkpoint.pt.tmp").exists()
    writer.wait()

    def torn(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("cannot pickle this\nsecond line of detail")

    with monkeypatch.context() as m:
        m.setattr(torch, "save", torn)  # an error of the serialiser itself
        writer.submit({"epoch": 3, "w": torch.ones(3)})
        with pytest.raises(HpstudyError) as raised:
            writer.submit({"epoch": 4, "w": torch.ones(3)})  # the next submit raises it
    assert str(raised.value) == f"{run.checkpoint_path}: cannot write (cannot pickle this)"
    assert isinstance(raised.value.__cause__, RuntimeError)  # kept for error.log's traceback


def test_leaving_on_an_exception_waits_for_the_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    writes = GatedWrites(monkeypatch)

    class Stop(Exception):
        pass

    with pytest.raises(Stop), CheckpointWriter(RunDir(tmp_path)) as writer:
        writer.submit({"epoch": 1, "w": torch.zeros(3)})
        assert writes.started.wait(HANG_GUARD)
        threading.Timer(0.2, writes.gate.set).start()  # released only after we leave
        raise Stop
    assert writes.gate.is_set()  # leaving waited for the write, however slow
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 1

    # a write that fails as training stops: training's exception is raised, the write's logged
    monkeypatch.setattr(files, "write_bytes_new", no_space)
    with caplog.at_level(logging.ERROR), pytest.raises(Stop), \
            CheckpointWriter(RunDir(tmp_path)) as writer:  # fmt: skip
        writer.submit({"epoch": 2, "w": torch.zeros(3)})
        raise Stop
    assert "checkpoint.pt: cannot write (No space left on device)" in caplog.text
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 1


def test_train_reports_a_failed_background_write_in_one_line(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """The last epoch's write fails in the thread: `hpstudy train` says so in one line and
    writes no summary.json, which would send evaluation and export to a missing file."""
    real = files.write_bytes_new

    def full_for_checkpoints(tmp: Path, payload: bytes) -> None:
        if tmp.name == "checkpoint.pt.tmp":
            no_space(tmp, payload)
        real(tmp, payload)

    monkeypatch.setattr(files, "write_bytes_new", full_for_checkpoints)
    out = tmp_path / "run"
    result = run_here(
        capsys, "train", "--root", str(synthetic_root), "--no-verify", "--width", "0.125",
        "--epochs", "1", "--limit-train", "64", "--limit-val", "32", "--device", "cpu",
        "--out", str(out),
    )  # fmt: skip
    # the epoch's own line, then the error: one line, the last, no traceback
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]]
    assert lines[-1] == f"error: {out / 'checkpoint.pt'}: cannot write (No space left on device)"
    assert not (out / "summary.json").exists() and not (out / "checkpoint.pt").exists()
    assert not (out / "checkpoint.pt.tmp").exists()
