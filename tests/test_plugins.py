"""Plugins as a user writes them: a toy executor in this one file runs a study end to end,
run hooks come by name, by reference or by entry point, and a broken plugin is one line."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import BLANK_PNG

from hpstudy import cli, executors
from hpstudy.config import RunConfig
from hpstudy.errors import HpstudyError
from hpstudy.executors import DataOptions, ExecutorBase, Job, make_executor, run_job
from hpstudy.files import SCHEMA_KEY
from hpstudy.run import RunStatus, train
from hpstudy.run.hooks import HookSpec, ProgressHook, RunHook, hook_factory, resolve_hooks
from hpstudy.study import run_study

STUDY = """
name = "toy"
seeds = [0]
[base]
width = 0.125
batch_size = 64
limit_train = 192
limit_val = 64
device = "cpu"
[[stages]]
name = "lr"
field = "lr"
values = [0.01, 0.05, 0.1]
epochs = 1
"""


# ---------------------------------------------------------------- the toy executor


class ReverseExecutor(ExecutorBase):
    """A toy: trains each batch of jobs in this process, last first, and notes every call."""

    summary = "a toy: each stage's runs in this process, last first"
    in_process = True
    made: ClassVar[list[ReverseExecutor]] = []

    def __init__(
        self, options: DataOptions, *, device: str | None = None, order_log: str | None = None
    ) -> None:
        super().__init__(options, device=device)
        self.order_log = order_log
        self.trained: list[str] = []
        self.calls: list[str] = []
        ReverseExecutor.made.append(self)

    @classmethod
    def add_options(cls, group: Any) -> None:
        group.add_argument("--order-log", default=None, metavar="FILE", help="runs, as trained")

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        self.calls.append(getattr(fn, "__name__", repr(fn)))
        return fn(*args, self.device)

    def run(self, jobs: Iterable[Job]) -> None:
        for job in reversed(list(jobs)):
            run_job(job, self.options, self.device)
            self.trained.append(job.label)
            if self.order_log is not None:
                with open(self.order_log, "a", encoding="utf-8") as f:
                    f.write(job.label + "\n")


@dataclass
class ToyStudy:
    study_file: Path
    out: Path
    root: Path
    executor: ReverseExecutor
    printed: str


def blank_figure(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(BLANK_PNG)
    fig.clear()
    return path


@pytest.fixture(scope="module")
def toy(
    tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path, speed_cache: Path
) -> Iterator[ToyStudy]:
    """The study run through the toy, as a Python program runs it: no logging configured."""
    tmp = tmp_path_factory.mktemp("toy")
    study_file = tmp / "toy.toml"
    study_file.write_text(STUDY)
    with pytest.MonkeyPatch.context() as m:
        m.setitem(executors._EXECUTORS, "reverse", ReverseExecutor)
        # what conftest's function fixtures do for a test: no download, no export, blank figures
        m.setenv("HPSTUDY_CACHE", str(speed_cache))
        m.setenv("HPSTUDY_CIFAR100_URL", "http://127.0.0.1:9/none.tar.gz")
        m.setattr("hpstudy.study.remote.export_final", lambda *args: None)
        m.setattr("hpstudy.report.save", blank_figure)
        executor = make_executor(
            "reverse", DataOptions(str(synthetic_root), False), device="cpu",
            order_log=str(tmp / "order.log"),
        )  # fmt: skip
        printed = io.StringIO()
        with redirect_stderr(printed), redirect_stdout(printed):
            run_study(study_file, out=tmp / "out", root=str(synthetic_root), verify=False,
                      executor=executor)  # fmt: skip
        yield ToyStudy(study_file, tmp / "out", synthetic_root, executor, printed.getvalue())


def test_a_toy_executor_in_one_file_runs_a_study_end_to_end(toy: ToyStudy) -> None:
    state = json.loads((toy.out / "state.json").read_text())
    assert state["status"] == "finished"
    labels = [f"stage 1 lr={lr} seed 0" for lr in ("0.01", "0.05", "0.1")]
    assert toy.executor.trained == labels[::-1]  # its own order, and every run trained by it
    assert (toy.out.parent / "order.log").read_text().splitlines() == labels[::-1]
    # the study's other work went through its `call`, the device appended
    assert set(toy.executor.calls) == {"opening", "validation_outcomes", "closing"}
    assert toy.printed == ""  # a library: nothing printed without logging configured


def test_every_json_file_a_study_writes_has_a_schema_version(toy: ToyStudy) -> None:
    files = sorted(toy.out.rglob("*.json"))
    names = {p.name for p in files}
    assert {"state.json", "study.json", "config.json", "summary.json"} <= names
    assert all(type(json.loads(p.read_text())[SCHEMA_KEY]) is int for p in files), files


def test_the_command_line_builds_the_toy_from_its_own_options(
    toy: ToyStudy, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(executors._EXECUTORS, "reverse", ReverseExecutor)
    argv = ["study", "run", str(toy.study_file), "--out", str(toy.out), "--root", str(toy.root),
            "--no-verify", "--device", "cpu"]  # fmt: skip
    log = str(toy.out.parent / "cli-order.log")
    capsys.readouterr()
    assert cli.main([*argv, "--executor", "reverse", "--order-log", log, "--json"]) == 0
    out, err = capsys.readouterr()
    assert ReverseExecutor.made[-1].order_log == log  # its option, by its dest
    shown = json.loads(out)  # one object on stdout; the lines for people on stderr
    assert shown[SCHEMA_KEY] == 1 and shown["state"]["status"] == "finished"
    assert "already finished; nothing to do" in err
    # its option with another executor: one line, naming whose option it is
    assert cli.main([*argv, "--order-log", log]) == 1
    assert capsys.readouterr().err == (
        "error: --order-log is an option of --executor reverse (not of local)\n"
    )
    with pytest.raises(SystemExit):
        cli.main(["study", "run", "--help"])
    assert "--executor reverse:" in capsys.readouterr().out


# ---------------------------------------------------------------- run hooks


class StopAfter(RunHook):
    """Stops a run once `epochs` epochs are done (named by reference in the tests)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_epoch(self, epoch: int, row: dict[str, float]) -> bool:
        return epoch >= self.epochs


class Recorder(RunHook):
    def __init__(self) -> None:
        self.heard: list[tuple[Any, ...]] = []

    def on_start(self, config: RunConfig, run_dir: Path, start_epoch: int) -> None:
        self.heard.append(("start", run_dir.name, start_epoch))

    def on_epoch(self, epoch: int, row: dict[str, float]) -> bool:
        self.heard.append(("epoch", epoch, row["epoch"]))
        return False

    def on_end(self, summary: Any) -> None:
        self.heard.append(("end", None if summary is None else str(summary.status)))


def test_hooks_come_by_name_by_reference_and_by_registration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hpstudy.run import hooks

    assert isinstance(resolve_hooks([HookSpec("progress", {"label": "x"})])[0], ProgressHook)
    by_reference = resolve_hooks([HookSpec("test_plugins:StopAfter", {"epochs": 2})])[0]
    assert isinstance(by_reference, StopAfter) and by_reference.epochs == 2
    monkeypatch.setitem(hooks._HOOKS, "stopper", "test_plugins:StopAfter")
    assert hook_factory("stopper") is StopAfter
    recorder = Recorder()
    assert resolve_hooks([recorder]) == [recorder]  # a hook itself is used as it is
    with pytest.raises(HpstudyError, match=r"unknown run hook 'nope'; known hooks: .*progress"):
        hook_factory("nope")
    with pytest.raises(HpstudyError, match=r"run hook 'no_such_module:X': cannot load"):
        hook_factory("no_such_module:X")


def test_a_hook_hears_the_run_and_stops_it(synthetic_root: Path, tmp_path: Path) -> None:
    config = RunConfig(width=0.125, batch_size=64, limit_train=128, limit_val=64, epochs=3,
                       device="cpu")  # fmt: skip
    recorder = Recorder()
    stop = HookSpec("test_plugins:StopAfter", {"epochs": 1})
    summary = train(config, tmp_path / "r", root=synthetic_root, verify=False,
                    hooks=[recorder, stop])  # fmt: skip
    assert summary.status == RunStatus.PRUNED and summary.epochs_done == 1
    assert recorder.heard == [("start", "r", 0), ("epoch", 1, 1), ("end", "pruned")]
    # hooks given replace the defaults: no TensorBoard files
    assert not list((tmp_path / "r").glob("events.out.tfevents.*"))


# ---------------------------------------------------------------- entry points


PLUGIN = '''
from hpstudy.executors import ExecutorBase
from hpstudy.run.hooks import RunHook


class Elsewhere(ExecutorBase):
    summary = "a plugin's"

    def run(self, jobs):
        raise NotImplementedError

    def call(self, fn, *args):
        raise NotImplementedError


class Quiet(RunHook):
    pass
'''


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A distribution `toyplug` on sys.path declaring two executors (one broken) and a hook."""
    (tmp_path / "toyplug_mod.py").write_text(PLUGIN)
    info = tmp_path / "toyplug-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toyplug\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[hpstudy.executors]\nelsewhere = toyplug_mod:Elsewhere\n"
        "broken = toyplug_missing:Nope\n\n[hpstudy.hooks]\nquiet = toyplug_mod:Quiet\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_entry_points_add_executors_and_hooks(installed_plugin: Path) -> None:
    from hpstudy.executors import executor_class, executor_names

    assert executor_names()[:3] == ["local", "ray", "slurm"]
    assert {"elsewhere", "broken"} <= set(executor_names())
    assert executor_class("elsewhere").summary == "a plugin's"
    assert hook_factory("quiet").__name__ == "Quiet"


def test_a_plugin_that_cannot_be_imported_is_one_line_when_chosen(
    installed_plugin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = tmp_path / "s.toml"
    study.write_text(STUDY)
    with pytest.raises(SystemExit):  # the others still list, and the broken one says so
        cli.main(["study", "run", "--help"])
    assert "broken: (cannot be loaded)" in " ".join(capsys.readouterr().out.split())
    assert cli.main(["study", "run", str(study), "--executor", "broken"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: plugin 'broken' (entry point 'toyplug_missing:Nope' in group "
                          "hpstudy.executors of toyplug): cannot be loaded (")  # fmt: skip
    assert len(err.splitlines()) == 1


def test_every_reporting_command_prints_one_json_object(
    toy: ToyStudy, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--root", str(toy.root), "--no-verify"]
    run = next((toy.out / "runs").iterdir())
    config = json.loads((run / "config.json").read_text())
    flags = []  # the run's own config as `train` options: it is found finished, not trained
    for key, value in config.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        elif value is not None and key != SCHEMA_KEY:
            flags += [flag, str(value)]
    commands = {
        "status": ["study", "status", str(toy.out)],
        "report": ["report", str(toy.out)],
        "train": ["train", *flags, "--out", str(run), *data],
        "download": ["data", "download", *data],
    }
    shown = {}
    for name, argv in commands.items():
        capsys.readouterr()
        assert cli.main([*argv, "--json"]) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        assert out.count("\n") == 1, (name, out)
        shown[name] = json.loads(out)
        assert shown[name][SCHEMA_KEY] == 1
    assert shown["status"]["status"] == "finished" and shown["status"]["progress"] is None
    assert [r["status"] for r in shown["status"]["runs"]] == ["finished"] * 3
    assert shown["status"]["stages"][0]["winner"] in (0, 1, 2)
    assert shown["report"]["report"] == str(toy.out / "report.md")
    assert shown["train"]["status"] == "finished" and shown["train"]["run_hash"] == run.name
    assert shown["download"]["folder"].endswith("cifar-100-python")
