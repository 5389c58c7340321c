"""What a study promises beyond training: validation before any run, retries, identity, folders."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_helpers import assert_one_line_error
from study_fixtures import as_in_a_test, cli
from worker_pids import CountedCompile, who_trained

from hpstudy import cli as hpstudy_cli
from hpstudy.config import RunConfig
from hpstudy.errors import HpstudyError
from hpstudy.executors import DataOptions, Job
from hpstudy.executors.local import LocalExecutor
from hpstudy.run import HookSpec, RunDir
from hpstudy.study import Plan, load_study, run_study

# one batch per epoch: these tests check the rules of a study, not what its runs learn
HEAD = """
name = "rules"
description = "{description}"
seeds = {seeds}
[base]
width = 0.125
batch_size = 64
limit_train = 64
limit_val = 64
device = "cpu"
"""
LR_STAGE = """
[[stages]]
name = "lr"
field = "lr"
values = [0.01, 0.05]
epochs = 1
{published}
"""


def write_study(folder: Path, *, description: str = "first", seeds: str = "[0]",
                published: str = "", extra: str = "") -> Path:  # fmt: skip
    path = folder / "study.toml"
    text = HEAD.format(description=description, seeds=seeds)
    path.write_text(text + LR_STAGE.format(published=published) + extra)
    return path


def mtimes(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("checkpoint.pt")}


@pytest.fixture(scope="module")
def first_study(
    synthetic_root: Path, speed_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The study `write_study` writes, finished: trained once, copied by each test that
    runs an edited study in its folder."""
    folder = tmp_path_factory.mktemp("first")
    out = folder / "out"
    with as_in_a_test(speed_cache):
        state = run_study(write_study(folder), out=out, root=str(synthetic_root), verify=False)
    assert state.status == "finished"
    return out


# ---------------------------------------------------------------- validation before training


def test_warmup_shrinks_with_the_budget_instead_of_failing(tmp_path: Path) -> None:
    path = write_study(tmp_path, extra="")
    text = path.read_text().replace("[base]\n", "[base]\nwarmup_epochs = 3\n")
    path.write_text(text.replace("epochs = 1\n", "epochs = 300\n"))
    study = load_study(path)
    assert Plan(study, "full").config(0, 0.05, {}, 0).warmup_epochs == 3
    for budget in ("short", "smoke"):  # 300 -> 30 and 2 epochs, 3 -> 0 warmup epochs
        Plan(study, budget).validate()
        assert Plan(study, budget).config(0, 0.05, {}, 0).warmup_epochs == 0


def test_a_combination_only_later_winners_make_is_refused_before_any_training(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # stage 1 may pick nesterov = true; stage 2 then offers momentum 0, which nesterov forbids
    extra = """
[[stages]]
name = "nesterov"
field = "nesterov"
values = [false, true]
epochs = 1
[[stages]]
name = "momentum"
field = "momentum"
values = [0.0, 0.9]
epochs = 1
"""
    path = write_study(tmp_path, extra=extra)
    out = tmp_path / "out"
    result = cli(capsys, "study", "run", str(path), "--out", str(out), "--budget", "smoke",
                 "--root", str(synthetic_root), "--no-verify")  # fmt: skip
    line = assert_one_line_error(result, "stage 3 (momentum)", "nesterov")
    assert "budget smoke" in line
    assert not out.exists()  # nothing claimed, nothing trained


def test_what_the_device_decides_is_checked_once_the_device_is_known(tmp_path: Path) -> None:
    path = write_study(tmp_path)
    path.write_text(path.read_text().replace("[base]\n", '[base]\nprecision = "fp16"\n'))
    plan = Plan(load_study(path), "smoke", device_type=None)
    plan.validate()  # fp16 is fine on a GPU: not refused before the device is known
    assert plan.config(0, 0.05, {}, 0).precision == "fp16"
    with pytest.raises(HpstudyError, match="fp16 needs a CUDA device"):
        Plan(load_study(path), "smoke", device_type="cpu").validate()
    on_gpu = Plan(load_study(path), "smoke", device_type="cuda")
    assert on_gpu.config(0, 0.05, {}, 0).precision == "fp16"


def test_missing_data_leaves_no_half_claimed_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_study(tmp_path)
    out, empty = tmp_path / "out", tmp_path / "empty"
    empty.mkdir()
    result = cli(capsys, "study", "run", str(path), "--out", str(out), "--root", str(empty))
    assert_one_line_error(result, "cannot download CIFAR-100")
    assert not out.exists()
    status = cli(capsys, "study", "status", str(out))
    assert "not a study folder" in assert_one_line_error(status)


# ---------------------------------------------------------------- failures are retried


def test_a_failed_run_is_retried_by_the_next_study_run(
    tmp_path: Path, synthetic_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hpstudy import run as run_package  # where the executors' run_job finds train

    real_train = run_package.train

    def flaky(config: RunConfig, run_dir: Path, **kw: Any) -> Any:
        if config.lr == 0.01:
            raise RuntimeError("disk on fire")
        return real_train(config, run_dir, **kw)

    path, out = write_study(tmp_path), tmp_path / "out"
    monkeypatch.setattr(run_package, "train", flaky)
    state = run_study(path, out=out, root=str(synthetic_root), verify=False)
    assert state.status == "incomplete"
    failed = state.failed_runs()
    assert [(s.label, r.error) for _, s, r in failed] == [("0.01", "RuntimeError: disk on fire")]
    assert "disk on fire" in (out / "report.md").read_text()

    monkeypatch.setattr(run_package, "train", real_train)
    state = run_study(path, out=out, root=str(synthetic_root), verify=False)
    assert state.status == "finished" and not state.failed_runs()
    assert [r.status for s in state.stages[0].settings for r in s.runs] == ["finished"] * 2


def test_a_dying_worker_fails_its_own_run_and_no_other(
    tmp_path: Path, synthetic_root: Path
) -> None:
    study = load_study(write_study(tmp_path))
    plan = Plan(study, "full")
    configs = [plan.config(0, lr, {}, 0).model_copy(update={"epochs": 3, "limit_train": 256})
               for lr in (0.01, 0.02, 0.05)]  # fmt: skip
    jobs = [Job(c, tmp_path / "runs" / c.run_hash(), f"lr {c.lr}") for c in configs]
    executor = LocalExecutor(DataOptions(str(synthetic_root), False), workers=["cpu", "cpu"])
    done = threading.Event()
    thread = threading.Thread(target=lambda: (executor.run(jobs), done.set()))
    thread.start()
    deadline = time.time() + 120
    while time.time() < deadline and not any((j.run_dir / "checkpoint.pt").exists() for j in jobs):
        time.sleep(0.02)
    workers = multiprocessing.active_children()  # the executor's worker processes
    assert workers, "no worker process is running"
    os.kill(workers[0].pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert done.is_set()
    outcomes = sorted(
        (str(s.status), s.error or "") for s in (RunDir(j.run_dir).read_summary() for j in jobs)
        if s is not None
    )
    assert len(outcomes) == 3
    assert [o[0] for o in outcomes] == ["failed", "finished", "finished"]
    assert outcomes[0][1].startswith("worker process died (exit code -9)")


def worker_jobs(folder: Path, seeds: list[int], hooks: Any, **change: Any) -> list[Job]:
    """Tiny runs (one epoch of two steps), compiled: a stand-in's compile where they train."""
    configs = [RunConfig(width=0.125, batch_size=64, limit_train=128, limit_val=64, epochs=1,
                         device="cpu", compile=True, seed=seed, **change)
               for seed in seeds]  # fmt: skip
    return [Job(c, folder / f"seed{c.seed}", f"seed {c.seed}", hooks) for c in configs]


def numbers(run_dir: Path) -> list[dict[str, Any]]:
    rows = RunDir(run_dir).read_metrics()
    return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in rows]


def test_two_workers_run_four_jobs_in_two_processes_compiling_once_each(
    tmp_path: Path, synthetic_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker process lives for many runs: it compiles its model once and reuses it for
    the runs of the same shape it is handed, and the results are the sequential ones."""
    options = DataOptions(str(synthetic_root), False)
    jobs = worker_jobs(tmp_path / "workers", [0, 1, 2, 3], (HookSpec("worker_pids:WhoTrains"),))
    pulled: list[int] = []

    def lazily() -> Iterator[Job]:  # each job is pulled only when a worker is free for it
        for job in jobs:
            pulled.append(len([j for j in jobs if (j.run_dir / "summary.json").exists()]))
            yield job

    LocalExecutor(options, workers=["cpu", "cpu"]).run(lazily())
    assert pulled[:2] == [0, 0] and all(n >= 1 for n in pulled[2:])
    seen = [who_trained(job.run_dir) for job in jobs]
    pids = {s["pid"] for s in seen}
    assert len(pids) == 2 and os.getpid() not in pids
    assert [s["compiled"] for s in seen] == [1, 1, 1, 1]  # each process compiled once
    monkeypatch.setattr(torch, "compile", CountedCompile)
    alone = worker_jobs(tmp_path / "alone", [0, 1, 2, 3], ())
    # on a worker's share of the cores, as the workers trained: another thread count sums
    # in another order (here, `pytest -n 0` has them all)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))
    try:
        LocalExecutor(options).run(alone)
    finally:
        torch.set_num_threads(threads)
    for job, sequential in zip(jobs, alone, strict=True):
        assert RunDir(job.run_dir).read_summary().status == "finished"  # type: ignore[union-attr]
        assert numbers(job.run_dir) == numbers(sequential.run_dir), job.label


def test_a_failed_run_retires_its_worker_and_the_next_run_gets_a_fresh_one(
    tmp_path: Path, synthetic_root: Path
) -> None:
    """A run that ends failed may leave its process unusable (a CUDA error poisons the
    context): its worker ends, and the slot's next run starts in a new process."""
    ok, failing = (HookSpec("worker_pids:WhoTrains"),), (HookSpec("worker_pids:WhoTrains",
                                                                   {"fail": True}),)  # fmt: skip
    jobs = [*worker_jobs(tmp_path, [0], ok), *worker_jobs(tmp_path, [1], failing),
            *worker_jobs(tmp_path, [2], ok)]  # fmt: skip
    LocalExecutor(DataOptions(str(synthetic_root), False), workers=["cpu"]).run(jobs)
    statuses = [RunDir(j.run_dir).read_summary().status for j in jobs]  # type: ignore[union-attr]
    assert statuses == ["finished", "failed", "finished"]
    first, failed, last = (who_trained(j.run_dir) for j in jobs)
    assert first["pid"] == failed["pid"] != last["pid"]
    assert (failed["compiled"], last["compiled"]) == (1, 1)  # reused, then a fresh process


# ---------------------------------------------------------------- identity of a study folder


def test_descriptions_and_published_values_do_not_lock_the_folder_and_seeds_add_runs(
    first_study: Path, tmp_path: Path, synthetic_root: Path
) -> None:
    out = Path(shutil.copytree(first_study, tmp_path / "out"))  # keeps the files' mtimes
    first = json.loads((out / "state.json").read_text())
    assert first["status"] == "finished"
    before = mtimes(out)
    assert len(before) == 2
    edited = write_study(
        tmp_path,
        description="a typo fixed",
        seeds="[0, 1]",
        published="published.'0.05' = { val_acc = 0.467 }",
    )
    second = run_study(edited, out=out, root=str(synthetic_root), verify=False)
    assert second.status == "finished" and second.seeds == [0, 1]
    after = mtimes(out)
    assert len(after) == 4  # the two seed-1 runs are new
    assert all(after[p] == t for p, t in before.items())  # the seed-0 runs were not retrained
    record = json.loads((out / "study.json").read_text())
    assert record["study_hash"] == first["study_hash"] == second.study_hash


def test_what_changes_results_is_a_different_study(
    first_study: Path, tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = Path(shutil.copytree(first_study, tmp_path / "out"))
    changed = write_study(tmp_path)
    changed.write_text(changed.read_text().replace("values = [0.01, 0.05]", "values = [0.02]"))
    result = cli(capsys, "study", "run", str(changed), "--out", str(out),
                 "--root", str(synthetic_root), "--no-verify")  # fmt: skip
    assert "holds a different study" in assert_one_line_error(result)


# ---------------------------------------------------------------- help texts


def test_help_names_the_real_default_folders_and_no_document_users_lack(
    capsys: pytest.CaptureFixture[str],
) -> None:
    texts = []
    for argv in (["--help"], ["study", "run", "--help"], ["train", "--help"],
                 ["evaluate", "--help"], ["data", "info", "--help"]):  # fmt: skip
        with pytest.raises(SystemExit):
            hpstudy_cli.main(argv)
        texts.append(capsys.readouterr().out)
    assert "runs/NAME for the full budget, runs/NAME-BUDGET otherwise" in " ".join(texts[1].split())
    for text in texts:
        assert "SPEC" not in text and "§" not in text
