"""Several runs per device and the SLURM executor: two CPU workers really overlap and give
the sequential results; submitit's local cluster gives the local executor's results, a
run preempted on it resumes to the same result; jobs are pulled only as slots free; the
`auto` table decides without changing run hashes; every bad option is one line.

Cost: one sequential reference study (two on a machine of 4 cores or more: on a worker's
share of the threads, and on one thread), one with two worker processes, one through
submitit's local cluster (five jobs, each a process, one of them preempted and
requeued), three worker processes that fail at once, one job that fails at once. The
reference and the SLURM study skip the final export and render no figures: no test here
reads them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from cluster_fixtures import (
    SEARCH_STAGES,
    plain_study,
    quick_slurm_polls,
    signal_after_first_checkpoint,
)
from test_ray import assert_same, outcome

from hpstudy import cli
from hpstudy.config import RunConfig
from hpstudy.errors import HpstudyError
from hpstudy.executors import DataOptions, Job, make_executor
from hpstudy.executors.local import LocalExecutor
from hpstudy.executors.slurm import SlurmOptions
from hpstudy.run import Execution, RunDir
from hpstudy.study import StudyFolder, run_study, status_text
from hpstudy.study.status import folder_progress

STUDY = (
    """
name = "cluster-tiny"
seeds = [0]

[base]
width = 0.125
limit_train = 384
limit_val = 64
device = "cpu"

# a grid stage, not a values one: runs that train outside the driver (workers, SLURM jobs)
# make it count their progress from study.json after the stage, with the stage's own kind
# (a second parser once read every stage back as a values stage and failed here)
[[stages]]
name = "lr"
kind = "grid"
grid = { lr = [0.05, 0.5] }
epochs = 2

# a stage of every other kind, one run each on fewer images (the values stage's one setting
# is stage 1's winner again: reused, not trained): a study mixing them finishes here too
[[stages]]
name = "wd"
field = "weight_decay"
values = [0.0]
epochs = 2
"""
    + SEARCH_STAGES
)
WORKER_THREADS = max(1, (os.cpu_count() or 1) // 2)  # what each of two CPU workers gets


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_with_threads(threads: int, **kwargs: Any) -> None:
    with torch_threads(threads):
        run_study(**kwargs)


@pytest.fixture(scope="module")
def study_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cluster-study") / "tiny.toml"
    path.write_text(STUDY)
    return path


@pytest.fixture(scope="module")
def reference(
    study_file: Path,
    synthetic_root: Path,
    speed_cache: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[int], dict[str, Any]]:
    """The reference: in this process, one run after the other, on `threads` torch threads;
    its outcome and the folder (run once per thread count the tests ask for)."""
    done: dict[int, dict[str, Any]] = {}

    def on(threads: int) -> dict[str, Any]:
        if threads not in done:
            out = tmp_path_factory.mktemp(f"sequential-{threads}") / "study"
            with plain_study(speed_cache):
                run_with_threads(
                    threads, spec=study_file, out=out, root=str(synthetic_root), verify=False
                )
            done[threads] = {**outcome(out), "folder": out}
        return done[threads]

    return on


@pytest.fixture(scope="module")
def sequential(reference: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
    """The reference on a worker's threads (what each of two CPU workers gets)."""
    return reference(WORKER_THREADS)


def run_interval(run_dir: Path) -> tuple[float, float]:
    """From the run's claim (config.json, written once data and model are there) to its
    summary.json: when the run was training."""
    return (run_dir / "config.json").stat().st_mtime, (run_dir / "summary.json").stat().st_mtime


def test_two_cpu_workers_train_at_once_and_match_the_sequential_run(
    study_file: Path,
    synthetic_root: Path,
    tmp_path: Path,
    sequential: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "study"
    # --no-export: the closing call runs in a worker, where no test patch reaches
    argv = ["study", "run", str(study_file), "--out", str(out), "--devices", "0,0", "--no-export"]
    # the driver's own evaluations (the final test's) on a worker's threads too, as the
    # reference's were
    with torch_threads(WORKER_THREADS):
        assert cli.main([*argv, "--root", str(synthetic_root), "--no-verify"]) == 0
    if not torch.cuda.is_available():
        assert "--devices starts 2 CPU worker processes" in capsys.readouterr().err
    assert_same(sequential, outcome(out))
    first = json.loads((out / "state.json").read_text())["stages"][0]  # its two runs
    dirs = [out / r["run_dir"] for setting in first["settings"] for r in setting["runs"]]
    (a_start, a_end), (b_start, b_end) = (run_interval(p) for p in dirs)
    assert a_start < b_end and b_start < a_end, "the two runs did not overlap"


def where(device: str) -> tuple[int, str, int]:
    return os.getpid(), device, torch.get_num_threads()


def refuse(device: str) -> None:
    raise HpstudyError(f"no data on {device}")


def test_a_call_with_workers_runs_in_a_worker_on_its_share_and_its_error_is_one_line() -> None:
    """The opening (speed), the per-image outcomes and the closing (test) run where the runs
    do, so that a driver with workers never holds a device."""
    executor = LocalExecutor(DataOptions(root=None, verify=False), workers=["cpu", "cpu"])
    pid, device, threads = executor.call(where)
    assert pid != os.getpid() and device == "cpu" and threads == WORKER_THREADS
    with pytest.raises(HpstudyError, match=r"^no data on cpu$"):
        executor.call(refuse)


def test_the_local_executor_pulls_a_job_only_when_a_worker_is_free(tmp_path: Path) -> None:
    """A search proposes its next trial from the results so far: job 3 is asked for only
    once job 1 or 2 has ended (here: failed at once, no data where they look)."""
    config = RunConfig(device="cpu")
    jobs = [Job(config, tmp_path / f"run{i}", f"job {i}") for i in range(3)]
    ended_before_pull: list[int] = []

    def lazily() -> Iterator[Job]:
        for i, job in enumerate(jobs):
            ended_before_pull.append(sum((j.run_dir / "summary.json").exists() for j in jobs[:i]))
            yield job

    no_data = DataOptions(root=str(tmp_path / "empty"), verify=False)
    LocalExecutor(no_data, workers=["cpu", "cpu"]).run(lazily())
    assert ended_before_pull[:2] == [0, 0]
    assert ended_before_pull[2] >= 1
    for job in jobs:
        summary = json.loads((job.run_dir / "summary.json").read_text())
        assert summary["status"] == "failed" and "CIFAR-100" in summary["error"]


def test_a_worker_starts_in_the_drivers_folder_and_environment_as_they_are_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Job processes fork from a server started once, elsewhere and earlier: a relative run
    folder and the data folder named by $HPSTUDY_DATA must still be the driver's now."""
    first = LocalExecutor(DataOptions(root=str(tmp_path / "empty"), verify=False), ["cpu"])
    first.run([Job(RunConfig(device="cpu"), tmp_path / "first", "first")])  # the server runs
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HPSTUDY_DATA", str(tmp_path / "said-now"))
    monkeypatch.setenv("HPSTUDY_CIFAR100_URL", "http://127.0.0.1:9/none.tar.gz")
    LocalExecutor(DataOptions(root=None, verify=False), ["cpu"]).run(
        [Job(RunConfig(device="cpu"), Path("relative") / "run", "relative")]
    )
    summary = json.loads((tmp_path / "relative" / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and str(tmp_path / "said-now") in summary["error"]


def preempt_once(marker: Path) -> Callable[..., Any]:
    """`run_job`, but the first run to write a checkpoint (its epoch 1 of 2) is sent SIGUSR2,
    SLURM's preemption and time-limit warning, right after it: submitit's handler in the
    job checkpoints it and the local cluster requeues it (not signalled again then)."""
    return signal_after_first_checkpoint(marker, signal.SIGUSR2)


@pytest.fixture(scope="module")
def slurm_study(
    study_file: Path,
    synthetic_root: Path,
    speed_cache: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """The study through submitit's local cluster (every job a process of its own, on one
    thread), one of its runs preempted mid-run; read by the tests below."""
    pytest.importorskip("submitit", reason="the optional slurm extra is not installed")
    from hpstudy.executors import slurm as slurm_executor

    out = tmp_path_factory.mktemp("slurm") / "study"
    marker = out.parent / "preempted"
    slurm = SlurmOptions(cluster="local", cpus_per_job=1, max_parallel=2)
    with plain_study(speed_cache), quick_slurm_polls(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            slurm_executor, "SlurmRun",
            lambda cpus_per_job: slurm_executor.SlurmCall(preempt_once(marker), cpus_per_job),
        )  # fmt: skip
        run_study(  # no export: the closing job is a process where no test patch reaches
            study_file, out=out, root=str(synthetic_root), verify=False, executor="slurm",
            slurm=slurm, export=False,
        )  # fmt: skip
    return out


def test_slurm_through_submitits_local_cluster_matches_the_local_executor(
    slurm_study: Path, reference: Callable[[int], dict[str, Any]]
) -> None:
    assert_same(reference(1), outcome(slurm_study))
    logs = list((slurm_study / "slurm").glob("*_log.err"))
    # the opening (data summary, speed); the grid's two runs, the random and optuna stages'
    # one each (the values stage's is reused); the per-image comparison of the one stage
    # with two settings (the others have nothing to compare); the closing (test, its
    # outcomes, environment): seven jobs, the preempted run's requeued under its own id
    assert len(logs) == 1 + 4 + 1 + 1
    state = json.loads((slurm_study / "state.json").read_text())
    assert [s["kind"] for s in state["stages"]] == ["grid", "values", "random", "optuna"]
    status = status_text(slurm_study)
    assert "cluster-tiny (full): finished" in status and "lr=0.05" in status
    # what the driver counts after each stage: study.json read back with every stage's kind
    folder = StudyFolder(slurm_study)
    progress = folder_progress(folder, folder.read_state())
    assert (progress.runs_done, progress.runs) == (4, 4)


def test_slurm_pulls_jobs_as_slots_free_and_records_a_failed_job(tmp_path: Path) -> None:
    """submitit's debug cluster runs each job in this process when its result is read."""
    pytest.importorskip("submitit", reason="the optional slurm extra is not installed")
    config = RunConfig(model="no-such-model", device="cpu")
    jobs = [Job(config, tmp_path / f"run{i}", f"job {i}") for i in range(3)]
    pulled_with_summaries: list[int] = []

    def lazily() -> Iterator[Job]:
        for i, job in enumerate(jobs):
            pulled_with_summaries.append(
                sum((j.run_dir / "summary.json").exists() for j in jobs[:i])
            )
            yield job

    options = SlurmOptions(cluster="debug", max_parallel=1, folder=tmp_path / "slurm")
    no_data = DataOptions(root=str(tmp_path / "empty"), verify=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)  # not what a job asks for (its CPUs): must be left as it is
    try:
        make_executor("slurm", no_data, slurm=options).run(lazily())
        # jobs called in this process leave its thread count (and so its results) alone
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)
    assert pulled_with_summaries == [0, 1, 2]
    for job in jobs:
        assert json.loads((job.run_dir / "summary.json").read_text())["status"] == "failed"


def test_a_preempted_job_requeues_the_same_run() -> None:
    """submitit calls `checkpoint` on preemption or timeout and submits what it returns:
    the same callable on the same job, which resumes from the run folder's checkpoint."""
    pytest.importorskip("submitit", reason="the optional slurm extra is not installed")
    from submitit.helpers import DelayedSubmission

    from hpstudy.executors.slurm import SlurmRun

    task = SlurmRun(cpus_per_job=1)
    job = Job(RunConfig(device="cpu"), Path("/shared/runs/x"), "x")
    args = (job, DataOptions(root="/shared/data", verify=True), "cpu")
    again = task.checkpoint(*args)
    assert isinstance(again, DelayedSubmission)
    assert again.function is task and again.args == args


def test_a_job_preempted_mid_run_is_requeued_and_resumes_to_the_same_result(
    slurm_study: Path, reference: Callable[[int], dict[str, Any]]
) -> None:
    """SIGUSR2 is SLURM's preemption and time-limit warning: submitit checkpoints, the job
    is requeued (submitit's local cluster restarts it), and the run resumes from its last
    epoch, ending bit for bit where an uninterrupted run on one thread ends."""
    run_name, epoch = (slurm_study.parent / "preempted").read_text().split()
    assert epoch == "1"  # preempted after epoch 1 of 2: the requeued job resumed mid-run
    logs = [p.read_text() for p in (slurm_study / "slurm").glob("*_log.err")]
    preempted = [log for log in logs if "preempted" in log]
    assert len(preempted) == 1 and f"{run_name}: resuming after epoch 1/2" in preempted[0]
    run = RunDir(slurm_study / "runs" / run_name)
    resumed = run.read_summary()
    assert resumed is not None and resumed.status == "finished" and resumed.epochs_done == 2
    assert len(run.read_metrics()) == 2  # epoch 1 not trained twice
    whole = RunDir(reference(1)["folder"] / "runs" / run_name).read_summary()
    assert resumed.final is not None and whole is not None and whole.final is not None
    same = ("train_loss", "train_acc", "val_loss", "val_acc", "val_top5")
    assert {k: resumed.final[k] for k in same} == {k: whole.final[k] for k in same}


def test_a_jobs_own_one_line_error_comes_back_as_that_line(
    study_file: Path, tmp_path: Path
) -> None:
    """The first job (the data summary) fails in its own process on the missing data; the
    driver says so in the job's words, not submitit's traceback."""
    pytest.importorskip("submitit", reason="the optional slurm extra is not installed")
    slurm = SlurmOptions(cluster="local", cpus_per_job=1)
    with quick_slurm_polls(), pytest.raises(HpstudyError) as caught:
        run_study(
            study_file, out=tmp_path / "s", root=str(tmp_path / "no-data"), executor="slurm",
            slurm=slurm,
        )  # fmt: skip
    message = str(caught.value)
    assert message.startswith("cannot download CIFAR-100") and "\n" not in message, message


def test_slurm_on_a_machine_without_slurm_is_one_line_and_leaves_a_usable_folder(
    study_file: Path,
    synthetic_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("submitit", reason="the optional slurm extra is not installed")
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # no sbatch, whatever the host has
    out = tmp_path / "study"
    argv = ["study", "run", str(study_file), "--out", str(out), "--executor", "slurm"]
    assert cli.main([*argv, "--root", str(synthetic_root), "--no-verify"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "slurm" in err[0]
    assert not (out / "study.json").exists()
    # the job logs folder is the executor's own: the folder is still this study's to use
    from hpstudy.study import StudyFolder

    assert StudyFolder(out).foreign_files() == []


def test_without_submitit_the_cli_says_how_to_install_it_in_one_line(
    study_file: Path,
    synthetic_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` now raises
    out = tmp_path / "out"
    argv = ["study", "run", str(study_file), "--out", str(out), "--executor", "slurm"]
    assert cli.main([*argv, "--root", str(synthetic_root), "--no-verify"]) == 1
    err = capsys.readouterr().err
    assert err == "error: the slurm executor needs submitit: pip install 'hpstudy[slurm]'\n"
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--runs-per-device", "0"], "--runs-per-device: must be 1..256"),
        (["--runs-per-device", "-3"], "--runs-per-device: must be 1..256"),
        (["--runs-per-device", str(10**30)], "--runs-per-device: must be 1..256"),
        (["--devices", "-1"], "--devices: GPU indices are >= 0"),
        (["--devices", "0,,1"], "--devices: expected GPU indices"),
        (["--devices", "zero"], "--devices: expected GPU indices"),
        (["--devices", ",".join(["0"] * 300)], "at most 256"),
        (["--devices", "0", "--device", "mps"], "--devices with --device mps"),
        (["--devices", "0,1", "--executor", "ray"], "of --executor local"),
        (["--runs-per-device", "2", "--executor", "slurm"], "of --executor local"),
        (["--slurm-time", "30"], "--slurm-time is an option of --executor slurm"),
        (["--slurm-cluster", "local"], "of --executor slurm"),
        (["--executor", "slurm", "--slurm-time", "0"], "--slurm-time: must be 1.."),
        (["--executor", "slurm", "--slurm-time", str(10**12)], "--slurm-time: must be 1.."),
        (["--executor", "slurm", "--slurm-max-parallel", "0"], "--slurm-max-parallel: must"),
        (["--executor", "slurm", "--slurm-gpus-per-job", "-1"], "--slurm-gpus-per-job: must"),
        (["--executor", "slurm", "--slurm-cpus-per-job", "0"], "--slurm-cpus-per-job: must"),
        (["--executor", "slurm", "--slurm-partition", "gpu; rm -rf /"], "not a partition name"),
        (["--executor", "slurm", "--slurm-partition", ""], "not a partition name"),
        (["--executor", "slurm", "--device", "cuda:1"], "use cpu or cuda"),
        (
            ["--executor", "slurm", "--device", "cuda", "--slurm-gpus-per-job", "0"],
            "give the jobs a GPU",
        ),
    ],
)
def test_bad_cluster_options_are_one_line_and_start_nothing(
    flags: list[str],
    needle: str,
    study_file: Path,
    synthetic_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if "slurm" in flags:
        pytest.importorskip("submitit", reason="the optional slurm extra is not installed")
    out = tmp_path / "out"
    argv = ["study", "run", str(study_file), "--out", str(out), *flags]
    assert cli.main([*argv, "--root", str(synthetic_root), "--no-verify"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert not out.exists()


# ---------------------------------------------------------------- the `auto` table


def test_auto_resolves_from_the_table_and_keeps_todays_run_hashes() -> None:
    auto = RunConfig(device="cpu")
    assert auto.for_device("cpu").run_hash() == RunConfig(precision="fp32").run_hash()
    # a GPU run's identity also holds its draw_device (no GPU run existed before it did)
    bf16 = RunConfig(precision="bf16")
    assert auto.for_device("cuda").run_hash() == bf16.for_device("cuda").run_hash()
    ex = Execution.resolve(auto)
    assert (ex.precision, ex.channels_last, ex.compile, ex.eval_batch_size) == (
        "fp32",
        True,
        False,
        256,
    )
    # without a GPU, no worker processes: today's sequential run in this process
    assert make_executor("local", DataOptions(None, False), device="cpu").workers is None


def write_table(path: Path, **cuda: Any) -> Path:
    shipped = json.loads(
        (Path(__file__).parents[1] / "src/hpstudy/auto_defaults.json").read_text()
    )
    shipped["rows"]["cpu"].update(cuda.pop("cpu", {}))
    shipped["rows"]["cuda"].update(cuda)
    path.write_text(json.dumps(shipped))
    return path


def test_a_measured_table_changes_what_auto_means(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = write_table(
        tmp_path / "measured.json",
        precision="fp16",
        measured_on="a GPU",
        cpu={"eval_batch_size": 128, "runs_per_device": 2},
    )
    monkeypatch.setenv("HPSTUDY_AUTO_DEFAULTS", str(table))
    assert RunConfig().for_device("cuda").precision == "fp16"
    assert Execution.resolve(RunConfig(device="cpu")).eval_batch_size == 128
    executor = make_executor("local", DataOptions(None, False), device="cpu")
    assert executor.workers == ["cpu", "cpu"]  # the table's runs per device


def test_cudnn_benchmark_is_an_auto_table_choice_for_cuda_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hpstudy.defaults import auto_row

    assert auto_row("cuda").cudnn_benchmark is True  # the shipped table's
    assert Execution.resolve(RunConfig(device="cpu")).cudnn_benchmark is False
    table = write_table(tmp_path / "t.json", cudnn_benchmark=False, cpu={"cudnn_benchmark": True})
    monkeypatch.setenv("HPSTUDY_AUTO_DEFAULTS", str(table))
    assert auto_row("cuda").cudnn_benchmark is False
    assert Execution.resolve(RunConfig(device="cpu")).cudnn_benchmark is False  # no cuDNN
    old = json.loads(table.read_text())  # a table written before the field existed
    for row in old["rows"].values():
        del row["cudnn_benchmark"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    monkeypatch.setenv("HPSTUDY_AUTO_DEFAULTS", str(tmp_path / "old.json"))
    assert auto_row("cuda").cudnn_benchmark is False


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "not valid JSON"),
        ('{"rows": {"cpu": {}}}', "rows.cpu.precision"),
        ("[]", "expected a table of keys"),
    ],
)
def test_a_broken_table_is_one_line(
    content: str, needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / f"{abs(hash(content))}.json"
    path.write_text(content)
    monkeypatch.setenv("HPSTUDY_AUTO_DEFAULTS", str(path))
    with pytest.raises(HpstudyError, match=needle):
        RunConfig().for_device("cpu")


@pytest.mark.parametrize(
    "change",
    [{"precision": "fp8"}, {"eval_batch_size": 0}, {"runs_per_device": 10**9}, {"compile": "x"}],
)
def test_a_table_with_bad_values_is_refused(
    change: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPSTUDY_AUTO_DEFAULTS", str(write_table(tmp_path / "t.json", **change)))
    with pytest.raises(HpstudyError, match=r"t\.json: rows\.cuda\."):
        RunConfig().for_device("cuda")
