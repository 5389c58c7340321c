"""The Ray executor: same study results as the local one, a killed worker is retried and
resumes, and without Ray `--executor ray` fails with one line.

Ray tests start one local Ray of 1 CPU (about 15 s on 2 cores, and as much again for a
second): the first test lets the executor start it, and asks that it shut down when the
study is done; that shutdown waits for the module's last test (`one_ray`), and the later
tests join the same Ray. Every run uses one torch thread, here and in Ray tasks, so CPU
results agree bit for bit. The test whose task kills its worker comes last: a Ray
worker, once started, keeps its imports (torch) for the tasks after it.
"""

from __future__ import annotations

import functools
import json
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from cluster_fixtures import SEARCH_STAGES, plain_study, signal_after_first_checkpoint

from hpstudy import cli
from hpstudy.errors import HpstudyError
from hpstudy.executors import DataOptions, Job, make_executor
from hpstudy.executors.ray import Task  # importing it does not import Ray
from hpstudy.run import Summary
from hpstudy.study import Plan, StudyFolder, load_study, run_study
from hpstudy.study.status import folder_progress

STUDY = (
    """
name = "ray-tiny"
seeds = [0]

[base]
width = 0.125
limit_train = 256
limit_val = 64
device = "cpu"

[[stages]]
name = "lr"
field = "lr"
values = [0.05, 0.5]
epochs = 2

[[stages]]
name = "wd"
field = "weight_decay"
values = [0.0, 5e-4]  # 0.0 is stage 1's winner again: reused, not retrained
epochs = 2

# a stage of every other kind (one run each, on fewer images): a study mixing them finishes
# on Ray, whose runs train outside the driver (the driver counts their progress from
# study.json after every stage, with each stage's own kind)
[[stages]]
name = "grid"
kind = "grid"
epochs = 1
overrides = { limit_train = 128 }
grid = { label_smoothing = [0.05], mixup_alpha = [0.0] }
"""
    + SEARCH_STAGES
)


def outcome(out: Path) -> dict[str, Any]:
    """What must not depend on the executor: runs, winners, final metrics, test result."""
    state = json.loads((out / "state.json").read_text())
    stages = [
        {
            "winner": s["winner"],
            "settings": [
                {
                    "label": x["label"],
                    "runs": [(r["run_hash"], r["status"], r["reused"]) for r in x["runs"]],
                    "final": {m: v["mean"] for m, v in x["final"].items()},
                }
                for x in s["settings"]
            ],
        }
        for s in state["stages"]
    ]
    return {"status": state["status"], "stages": stages, "test": state["final"]["test_top1"]}


def assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["status"] == b["status"] == "finished"
    ta, tb = a["test"], b["test"]
    assert set(ta) == set(tb)
    for key, value in ta.items():  # approx() takes flat values: the interval key by key
        if isinstance(value, str):
            assert value == tb[key]
        else:
            assert value == pytest.approx(tb[key], abs=1e-6), key
    for sa, sb in zip(a["stages"], b["stages"], strict=True):
        assert sa["winner"] == sb["winner"]
        for xa, xb in zip(sa["settings"], sb["settings"], strict=True):
            assert (xa["label"], xa["runs"]) == (xb["label"], xb["runs"])
            assert xa["final"] == pytest.approx(xb["final"], abs=1e-6)


@pytest.fixture(scope="module")
def study_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ray-study") / "tiny.toml"
    path.write_text(STUDY)
    return path


@pytest.fixture(scope="module")
def local_outcome(
    study_file: Path,
    synthetic_root: Path,
    speed_cache: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """The reference: the local executor, in this process, on one thread like the Ray tasks."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("local") / "study"
        with plain_study(speed_cache):  # no export, no figures: outcome() reads neither
            run_study(study_file, out=out, root=str(synthetic_root), verify=False)
    finally:
        torch.set_num_threads(threads)
    return outcome(out)


@pytest.fixture(scope="module")
def ray_module() -> Any:
    return pytest.importorskip("ray", reason="the optional Ray extra is not installed")


@pytest.fixture(scope="module")
def one_ray(ray_module: Any) -> Iterator[Any]:
    """The module's one local Ray, started by the first test that needs one and shut down
    after the last."""
    yield ray_module
    if ray_module.is_initialized():
        ray_module.shutdown()


@pytest.fixture
def shared_ray(one_ray: Any) -> Any:
    """The local Ray of 1 CPU, joined by the executors of the tests that use it; started
    here unless a test before started it."""
    if not one_ray.is_initialized():
        one_ray.init(address="local", num_cpus=1, include_dashboard=False)
    return one_ray


def kill_once(marker: Path) -> Task:
    """A task that SIGKILLs its worker right after the first checkpoint any run writes."""
    return signal_after_first_checkpoint(marker, signal.SIGKILL)


def die_at_once() -> Task:
    def task(job: Job, options: DataOptions, device: str | None) -> Summary:
        import os
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")

    return task


# ---------------------------------------------------------------- Ray started by the executor


@pytest.mark.ray
def test_killed_worker_is_retried_and_the_run_resumes_from_its_checkpoint(
    one_ray: Any,
    study_file: Path,
    synthetic_root: Path,
    local_outcome: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hpstudy.executors import ray as ray_executor

    assert not one_ray.is_initialized(), "this test must run before shared_ray starts"
    marker = tmp_path / "killed"

    class KillingRay(ray_executor.RayExecutor):  # what `--executor ray` builds, here
        def __init__(self, options: DataOptions, address: str | None = None, **kw: Any) -> None:
            # 1 CPU per run: each run trains on one thread
            super().__init__(options, address, cpus_per_run=1, task=kill_once(marker), **kw)

    monkeypatch.setattr(ray_executor, "RayExecutor", KillingRay)
    # the local Ray the executor starts is the module's one: of 1 CPU, as shared_ray's, and
    # the shutdown it asks for is recorded here and done by one_ray after the last test
    out = tmp_path / "study"
    shutdowns: list[bool] = []  # whether the study was done (reported) at each
    monkeypatch.setattr(one_ray, "init", functools.partial(one_ray.init, num_cpus=1))
    monkeypatch.setattr(one_ray, "shutdown", lambda: shutdowns.append((out / "report.md").exists()))
    run_study(  # no export: its task would run in a Ray worker, where no test patch reaches
        study_file, out=out, root=str(synthetic_root), verify=False, executor="ray", export=False
    )

    killed_run, epoch = marker.read_text().split()
    assert epoch == "1"  # killed after epoch 1 of 2, so the retry resumed mid-run
    summary = json.loads((out / "runs" / killed_run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_done"] == 2
    metrics = (out / "runs" / killed_run / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 1 + 2  # header + one row per epoch: epoch 1 not trained twice
    assert_same(outcome(out), local_outcome)  # the resumed run computed what an unbroken one did
    # the executor shut down the local Ray it started once the study was done with it
    assert shutdowns == [True]


# ---------------------------------------------------------------- Ray held by this process


@pytest.mark.ray
def test_ray_study_through_the_cli_matches_the_local_executor(
    shared_ray: Any,
    study_file: Path,
    synthetic_root: Path,
    local_outcome: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def driver_must_not(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the driver touched the data: that is the workers' job")

    # the driver may have neither the data nor a GPU: its summary and the final test
    # evaluation run as Ray tasks (fresh worker processes, where these patches do not reach)
    monkeypatch.setattr("hpstudy.data.load_cifar100", driver_must_not)
    monkeypatch.setattr("hpstudy.study.remote.evaluate", driver_must_not)
    out = tmp_path / "study"
    argv = ["study", "run", str(study_file), "--out", str(out), "--executor", "ray"]
    # --no-export: the closing task (in a Ray worker, where no test patch reaches) exports
    # nothing, and the study says so before it closes
    assert cli.main([*argv, "--root", str(synthetic_root), "--no-verify", "--no-export"]) == 0
    assert "; no export (--no-export)" in capsys.readouterr().err
    assert not list(out.glob("runs/*/export.json")) and not list(out.glob("runs/*/model.onnx"))
    assert_same(outcome(out), local_outcome)
    assert len(list((out / "runs").iterdir())) == 6  # 7 settings, one reused
    assert shared_ray.is_initialized()  # a Ray it did not start is left running
    state = json.loads((out / "state.json").read_text())
    assert [s["kind"] for s in state["stages"]] == ["values", "values", "grid", "random", "optuna"]
    # what the driver counts after each stage: study.json read back with every stage's kind
    folder = StudyFolder(out)
    progress = folder_progress(folder, folder.read_state())
    assert (progress.runs_done, progress.runs) == (6, 6)
    # status and --watch read the finished mixed study
    assert cli.main(["study", "status", str(out)]) == 0
    assert cli.main(["study", "status", str(out), "--watch", "1"]) == 0
    shown = capsys.readouterr().out
    assert shown.count("ray-tiny (full): finished") == 2 and "trial 0" in shown


@pytest.mark.ray
def test_a_task_that_raises_is_recorded_as_failed_and_not_retried(
    shared_ray: Any, tmp_path: Path
) -> None:
    from hpstudy.executors.ray import RayExecutor

    marker = tmp_path / "calls"

    def raise_once_per_call(job: Job, options: DataOptions, device: str | None) -> Any:
        with open(marker, "a") as f:
            f.write("call\n")
        raise RuntimeError("boom\nsecond line")

    study = load_study_text(tmp_path)
    config = Plan(study, "full").config(0, 0.05, {}, 0)
    job = Job(config, tmp_path / "run")
    RayExecutor(DataOptions(root=None, verify=True), task=raise_once_per_call).run([job])
    summary = json.loads((job.run_dir / "summary.json").read_text())
    assert summary["error"] == "ray task raised RuntimeError: boom"
    assert marker.read_text() == "call\n"  # retry_exceptions=False: a raise is not retried


@pytest.mark.ray
def test_a_task_whose_retries_run_out_is_recorded_as_failed(
    shared_ray: Any, synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hpstudy.executors.ray import RayExecutor

    monkeypatch.chdir(tmp_path)  # a relative run dir must reach the worker as absolute
    study = load_study_text(tmp_path)
    config = Plan(study, "full").config(0, 0.05, {}, 0)
    job = Job(config, Path("runs") / config.run_hash(), "lr / 0.05 / seed 0")
    options = DataOptions(root=str(synthetic_root), verify=False)
    RayExecutor(options, max_retries=0, task=die_at_once()).run([job])
    summary = json.loads((tmp_path / job.run_dir / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"].startswith("ray task failed after 0 retries:")
    assert "\n" not in summary["error"]


def load_study_text(folder: Path) -> Any:
    path = folder / "s.toml"
    path.write_text(STUDY)
    return load_study(path)


# ---------------------------------------------------------------- no cluster needed


@pytest.mark.ray
def test_resources_one_gpu_per_run_where_the_cluster_has_gpus(
    ray_module: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hpstudy.executors.ray import RayExecutor

    nodes = [
        {"Alive": True, "Resources": {"CPU": 0.0}},  # a head kept free of runs
        {"Alive": True, "Resources": {"CPU": 16.0}},
        {"Alive": True, "Resources": {"CPU": 8.0}},
        {"Alive": False, "Resources": {"CPU": 2.0}},
    ]
    monkeypatch.setattr(ray_module, "nodes", lambda: nodes)
    executor = RayExecutor(DataOptions(root=None, verify=True))
    monkeypatch.setattr(ray_module, "cluster_resources", lambda: {"CPU": 24.0, "GPU": 4.0})
    assert executor.resources() == {"num_gpus": 1, "num_cpus": 1}
    monkeypatch.setattr(ray_module, "cluster_resources", lambda: {"CPU": 24.0})
    assert executor.resources() == {"num_cpus": 8}  # the smallest live node that has CPUs
    executor.cpus_per_run = 2
    assert executor.resources() == {"num_cpus": 2}


@pytest.mark.ray
def test_data_root_is_shipped_absolute_and_none_stays_per_worker(
    ray_module: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hpstudy.executors.ray import RayExecutor

    monkeypatch.chdir(tmp_path)
    assert RayExecutor(DataOptions(root="data", verify=False)).options.root == str(
        tmp_path / "data"
    )
    assert RayExecutor(DataOptions(root=None, verify=True)).options.root is None


@pytest.mark.ray
def test_an_unreachable_cluster_is_one_line(
    ray_module: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hpstudy.executors.ray import RayExecutor

    def refuse(**kwargs: Any) -> None:
        raise ConnectionError("Could not find any running Ray instance.\nmore detail")

    monkeypatch.setattr(ray_module, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_module, "init", refuse)
    study = load_study_text(tmp_path)
    config = Plan(study, "full").config(0, 0.05, {}, 0)
    executor = RayExecutor(DataOptions(root=None, verify=True), address="auto")
    with pytest.raises(HpstudyError, match=r"^--address auto: cannot join Ray \(Connection"):
        executor.run([Job(config, tmp_path / "run")])


def test_without_ray_the_cli_says_how_to_install_it_in_one_line(
    study_file: Path,
    synthetic_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    monkeypatch.delitem(sys.modules, "hpstudy.executors.ray", raising=False)
    with pytest.raises(HpstudyError, match=r"pip install 'hpstudy\[ray\]'"):
        make_executor("ray", DataOptions(root=None, verify=True))
    argv = ["study", "run", str(study_file), "--out", str(tmp_path / "out"), "--executor", "ray"]
    assert cli.main([*argv, "--root", str(synthetic_root), "--no-verify"]) == 1
    err = capsys.readouterr().err
    assert err == "error: the ray executor needs Ray: pip install 'hpstudy[ray]'\n"
