"""Stage kinds are plugins and a study runs from Python: a toy kind defined in this file alone
runs through `hpstudy.run_study`, `study status` and the report; study.json keeps the study,
so status and progress rebuild every kind's plan (values, grid, random and optuna on CPU
workers); the registry finds, lists and refuses kinds; the API takes a dict or a
StudyConfig and an Executor object, and returns a typed result."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
from pydantic import Field, field_validator, model_validator
from study_fixtures import as_in_a_test, lean_command, stage_finals

import hpstudy
import hpstudy.study.kinds as kinds_module
import hpstudy.study.session as session
from hpstudy import cli
from hpstudy.errors import HpstudyError
from hpstudy.executors import DataOptions
from hpstudy.executors.local import LocalExecutor, running
from hpstudy.study import StudyConfig, StudyFolder, StudyResult, describe, load_study, status_text
from hpstudy.study.kinds import StageKind, find_kind, kinds, known_field, register_kind
from hpstudy.study.spec import validate_study
from hpstudy.study.state import StudyRecord


@register_kind
class LadderStage(StageKind):
    """kind "ladder": one field climbed from `start`, times `factor` at each of `steps` rungs."""

    kind: Literal["ladder"]
    field: str
    start: float = Field(gt=0)
    factor: float = Field(gt=1)
    steps: int = Field(ge=1, le=10)

    words: ClassVar[str] = "Climbs a ladder of"

    @field_validator("field")
    @classmethod
    def _known(cls, v: str) -> str:
        return known_field(v)

    @model_validator(mode="after")
    def _overrides(self) -> LadderStage:
        self.check_overrides()
        return self

    def varied(self) -> list[str]:
        return [self.field]

    def assignment(self, value: Any) -> dict[str, Any]:
        return {self.field: value}

    def settings(self) -> list[tuple[str, Any]]:
        return [(f"rung {i}", self.start * self.factor**i) for i in range(self.steps)]

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "field": self.field, "start": self.start,
                "factor": self.factor, "steps": self.steps, "epochs": self.epochs,
                "overrides": self.overrides}  # fmt: skip

    def describe(self) -> str:
        return f"{self.field} from {self.start:g}, x{self.factor:g} per rung, {self.steps} rungs"


class RungsStage(LadderStage):
    """The same ladder, offered by an (imagined) installed package's entry point."""

    kind: Literal["rungs"]  # type: ignore[assignment]


BASE = {
    "width": 0.125,
    "batch_size": 64,
    "limit_train": 128,
    "limit_val": 64,
    "device": "cpu",
}


def ladder_study(name: str = "ladder") -> dict[str, Any]:
    return {
        "name": name,
        "base": BASE,
        "stages": [
            {"name": "lr ladder", "kind": "ladder", "field": "lr", "start": 0.02,
             "factor": 2.5, "steps": 2, "epochs": 1},
        ],
    }  # fmt: skip


# ---------------------------------------------------------------- a toy kind, end to end


def test_a_kind_defined_in_a_test_runs_through_the_api_status_and_report(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "study"
    data = DataOptions(root=str(synthetic_root), verify=False)
    result = hpstudy.run_study(
        ladder_study(), out=out, budget="full", executor=LocalExecutor(data), data=data
    )
    assert isinstance(result, StudyResult) and result.status == "finished"
    assert result.folder == out and result.report == out / "report.md"
    assert result.report.is_file()
    assert capsys.readouterr() == ("", "")  # a library prints nothing: logging is not set up
    # the typed analysis the report renders: the kind's words and the runs' numbers
    analysed = result.analysis.stages[0]
    assert (analysed.kind, analysed.words, analysed.one_field) == ("ladder", "Climbs a ladder of",
                                                                   False)  # fmt: skip
    assert [s.label for s in analysed.settings] == ["rung 0", "rung 1"]
    assert analysed.winner == result.state.stages[0].winner
    stage = result.state.stages[0]
    assert stage.kind == "ladder" and stage.field == "lr"
    assert [s.label for s in stage.settings] == ["rung 0", "rung 1"]
    lrs = sorted(json.loads((run / "config.json").read_text())["lr"]
                 for run in (out / "runs").iterdir())  # fmt: skip
    assert lrs == pytest.approx([0.02, 0.05])
    assert "test top-1" in result.summary()

    # study.json keeps the study: the same parser reads it back, with the toy kind
    assert isinstance(StudyFolder(out).read_study().stages[0], LadderStage)
    # the report asks the kind for its words
    report = result.report.read_text()
    assert "Climbs a ladder of `lr` for 1 epoch." in report

    assert cli.main(["study", "status", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "ladder (full): finished" in shown and "rung 1" in shown

    # a study stopped halfway: status plans what is left from the recorded study
    state = json.loads((out / "state.json").read_text())
    state["status"] = "running"
    (out / "state.json").write_text(json.dumps(state))
    loser = next(s for i, s in enumerate(stage.settings) if i != stage.winner)
    (out / loser.runs[0].run_dir / "summary.json").unlink()
    (out / loser.runs[0].run_dir / "metrics.csv").unlink()
    assert "done: 1/2 runs, 1/2 epochs" in status_text(out)

    # the same study as a StudyConfig, finished: its result again, and nothing trains
    state["status"] = "finished"
    (out / "state.json").write_text(json.dumps(state))
    config = StudyConfig.model_validate(ladder_study())
    again = hpstudy.run_study(config, out=out, executor=LocalExecutor(data), data=data)
    assert again.status == "finished" and again.state.stages == result.state.stages
    assert not (out / loser.runs[0].run_dir / "summary.json").exists()


def test_a_toy_kind_is_described_validated_and_located_like_the_built_in_ones(
    tmp_path: Path,
) -> None:
    study = validate_study(ladder_study(), "toy")
    assert "stage 1 lr ladder: lr from 0.02, x2.5 per rung, 2 rungs" in describe(study)
    bad = ladder_study()
    bad["stages"][0] |= {"factor": 0.5, "colour": "red"}
    with pytest.raises(HpstudyError) as err:
        validate_study(bad, "toy")
    message = str(err.value)
    assert "stages.0.factor: Input should be greater than 1" in message
    assert "stages.0.colour: unknown key" in message and "\n" not in message
    # an unknown kind lists the kinds there are, the toy one among them
    bad["stages"][0] = {"name": "x", "kind": "nope", "epochs": 1}
    with pytest.raises(HpstudyError, match=r"stages\.0: kind must be one of values, grid, "
                                           r"random, optuna, .*ladder"):  # fmt: skip
        validate_study(bad, "toy")


# ---------------------------------------------------------------- every kind on CPU workers

MIXED = """
name = "mixed"
seeds = [0]
[base]
width = 0.125
batch_size = 64
limit_train = 128
limit_val = 64
device = "cpu"
[[stages]]
name = "lr"
field = "lr"
values = [0.02, 0.05]
epochs = 1
[[stages]]
name = "grid"
kind = "grid"
epochs = 1
grid = { weight_decay = [1e-4], label_smoothing = [0.05] }
[[stages]]
name = "random"
kind = "random"
epochs = 1
n = 1
space.label_smoothing = { uniform = [0.0, 0.1] }
[[stages]]
name = "tpe"
kind = "optuna"
epochs = 1
n_trials = 1
space.momentum = { uniform = [0.8, 0.9] }
"""


# --no-export: the closing call runs in a worker, where no test patch reaches
MIXED_ARGS = ["--no-verify", "--runs-per-device", "2", "--device", "cpu", "--no-export"]


@pytest.fixture(scope="module")
def mixed(
    synthetic_root: Path, speed_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, list[str]]:
    """MIXED on two CPU workers, in this process, `study status` taken before every round of
    runs: the study file, the finished folder and what status said each time."""
    pytest.importorskip("optuna")
    path = tmp_path_factory.mktemp("mixed") / "mixed.toml"
    path.write_text(MIXED)
    out = path.parent / "out"
    seen: list[str] = []
    run = LocalExecutor.run

    def look_then_run(self: LocalExecutor, jobs: Any) -> None:
        seen.append(status_text(out))  # `study status` while the study runs
        run(self, jobs)

    block = session.cost_block

    def keep_cost_block(*args: Any) -> list[str]:  # what the study printed it would cost
        lines = block(*args)
        (path.parent / "cost.txt").write_text("\n".join(lines))
        return lines

    with as_in_a_test(speed_cache), pytest.MonkeyPatch.context() as patch:
        patch.setattr(LocalExecutor, "run", look_then_run)
        patch.setattr(session, "cost_block", keep_cost_block)
        argv = ["study", "run", str(path), "--out", str(out), "--root", str(synthetic_root)]
        assert cli.main([*argv, *MIXED_ARGS]) == 0
    return path, out, seen


def test_every_built_in_kind_runs_on_cpu_workers_and_status_works_while_it_runs(
    mixed: tuple[Path, Path, list[str]],
    speed_cache: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Worker processes train outside the driver, so after every stage the driver counts
    their progress from study.json: the kinds must come back as written (this once failed
    with "Input should be 'values'" after the first grid stage)."""
    _, finished, seen = mixed
    out = tmp_path / "out"
    shutil.copytree(finished, out)  # this test rewrites its files below
    state = json.loads((out / "state.json").read_text())
    assert state["status"] == "finished"
    assert [s["kind"] for s in state["stages"]] == ["values", "grid", "random", "optuna"]
    assert len(state["stages"][3]["settings"]) == 1  # its trial, trained by a worker
    # one look per fixed stage and per round of the search, each with what is left
    assert len(seen) == 5 and all("mixed (full): running" in s for s in seen)
    progress = [line for s in seen for line in s.splitlines() if line.startswith("done: ")]
    assert len(progress) == len(seen) and not any("not known" in p for p in progress)
    # 2 + 1 + 1 runs and a trial; the search's last round starts once its trial is done
    done = [p.split(",")[0] for p in progress]
    assert done == [f"done: {n}/5 runs" for n in (0, 2, 3, 4, 5)]

    assert cli.main(["study", "status", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "mixed (full): finished" in shown and "trial 0" in shown
    # two runs at once were timed in both workers together (else the study stops waiting)
    # before the cost block predicted the stages with them
    # (other studies on two workers in this test process may have left readings of theirs)
    cache = json.loads((speed_cache / "speed.json").read_text())
    together = [v for k, v in cache.items() if "|together 2|" in k and k.startswith("cpu (")]
    rates = {round(v["train_images_per_s"]) for v in together if v["train_images_per_s"] > 0}
    cost = (finished.parent / "cost.txt").read_text()
    said = re.search(r"up to 2 runs at once: each trains at (\d+) img/s then", cost)
    assert said is not None and int(said.group(1)) in rates, cost

    # a folder from before study.json kept the study: its identity rebuilds the plan
    record = json.loads((out / "study.json").read_text())
    del record["study"]
    (out / "study.json").write_text(json.dumps(record))
    state["status"] = "running"
    (out / "state.json").write_text(json.dumps(state))
    assert "done: 5/5 runs, 5/5 epochs" in status_text(out)
    # ...and a study.json that cannot say leaves the runs shown and says why
    (out / "study.json").write_text("{")
    text = status_text(out)
    assert "trial 0" in text and "done: not known (" in text and "study.json" in text


# the killed driver's fork server also preloads tests/pausing_workers.py: each worker pauses
# after its first step and says so, and then the driver is killed
PAUSING_WORKERS = """
import hpstudy.executors.local as local
local.WORKER_PRELOAD = [*local.WORKER_PRELOAD, "pausing_workers"]
"""


def test_a_mixed_study_on_two_workers_killed_mid_stage_leaves_no_orphan_and_resumes_the_same(
    mixed: tuple[Path, Path, list[str]],
    synthetic_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """SIGKILL reaches the driver alone; its worker processes (children of its fork server)
    must stop too, or the rerun would resume runs that they still write."""
    path, finished, _ = mixed
    out, paused = tmp_path / "killed", tmp_path / "paused"
    paused.mkdir()
    tests = str(Path(__file__).parent)
    env = {**os.environ, "HPSTUDY_TEST_PAUSED": str(paused),
           "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    argv = ["study", "run", str(path), "--out", str(out), "--root", str(synthetic_root)]
    proc = subprocess.Popen(lean_command(*argv, *MIXED_ARGS, prelude=PAUSING_WORKERS), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300  # a hang guard, not a measurement
    while len(list(paused.iterdir())) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    workers = [int(p.name) for p in paused.iterdir()]
    assert len(workers) == 2, "the two workers never reached their first step"
    assert proc.returncode == -signal.SIGKILL and not (out / "report.md").exists()
    deadline = time.monotonic() + 30  # a paused worker left alone would sleep for 600 s
    while any(running(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [w for w in workers if running(w)], "workers outlived their killed driver"
    # the rerun resumes what the killed one left, on two workers again
    assert cli.main([*argv, *MIXED_ARGS]) == 0
    capsys.readouterr()
    assert stage_finals(out) == stage_finals(finished)
    for run in (finished / "runs").iterdir():
        rows = (out / "runs" / run.name / "metrics.csv").read_text().splitlines()
        assert len(rows) == len((run / "metrics.csv").read_text().splitlines()), run.name


# ---------------------------------------------------------------- study.json keeps the study


@pytest.mark.parametrize("name", ["seed-report", "beat-published"])
def test_study_json_keeps_the_study_and_reads_back_to_the_same_identity(name: str) -> None:
    study = load_study(name)
    record = StudyRecord.of(study, "smoke")
    text = json.dumps(record.model_dump(mode="json"))  # what study.json holds
    again = validate_study(json.loads(text)["study"], "study.json")
    assert again.identity_hash("smoke") == record.study_hash == study.identity_hash("smoke")
    assert again.model_dump() == study.model_dump()  # every field, each stage its own
    assert [type(s) for s in again.stages] == [type(s) for s in study.stages]


# ---------------------------------------------------------------- the registry


def test_a_kind_is_found_through_its_entry_point_and_a_broken_one_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kinds_module, "REGISTRY", dict(kinds_module.REGISTRY))
    offered = [
        EntryPoint("rungs", f"{__name__}:RungsStage", kinds_module.ENTRY_POINT_GROUP),
        EntryPoint("broken", "no_such_package.kinds:Stage", kinds_module.ENTRY_POINT_GROUP),
    ]

    def entry_points(group: str, name: str | None = None) -> list[EntryPoint]:
        assert group == "hpstudy.stage_kinds"
        return [p for p in offered if name is None or p.name == name]

    monkeypatch.setattr(kinds_module, "entry_points", entry_points)
    assert {"values", "grid", "random", "optuna", "rungs", "broken"} <= set(kinds())
    raw = ladder_study("plugged")
    raw["stages"][0]["kind"] = "rungs"
    study = validate_study(raw, "plugged")
    assert type(study.stages[0]) is RungsStage and find_kind("rungs") is RungsStage
    raw["stages"][0]["kind"] = "broken"
    with pytest.raises(HpstudyError) as err:
        validate_study(raw, "plugged")
    message = str(err.value)
    assert "\n" not in message and "stage kind 'broken'" in message
    assert "no_such_package" in message


def test_a_kind_name_cannot_be_taken_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kinds_module, "REGISTRY", dict(kinds_module.REGISTRY))

    class Impostor(LadderStage):
        kind: Literal["grid"]  # type: ignore[assignment]

    assert find_kind("grid") is not None
    with pytest.raises(HpstudyError, match="'grid' is already registered"):
        register_kind(Impostor)
    register_kind(LadderStage)  # the same class again is no conflict


# ---------------------------------------------------------------- the API's arguments


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"executor": object()}, "executor: a name (local, ray, slurm) or an Executor"),
        ({"executor": "local", "seeds": 0}, "a count must be 1.."),
        ({"executor": "local", "seeds": "3"}, "seeds: a count or a list"),
        ({"data": 3}, "data: a data folder or DataOptions"),
        ({"data": "/x", "root": "/y"}, "data: give data= or root=, not both"),
        ({"data": DataOptions(root=None, verify=True), "verify": False}, "not both"),
        ({"executor": "nope"}, "executor: must be one of local, ray, slurm"),
    ],
)
def test_bad_api_arguments_are_one_line(
    tmp_path: Path, options: dict[str, Any], needle: str
) -> None:
    with pytest.raises(HpstudyError) as err:
        hpstudy.run_study(ladder_study(), out=tmp_path / "out", **options)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_an_executor_object_takes_no_executor_options(tmp_path: Path) -> None:
    executor = LocalExecutor(DataOptions(root=None, verify=True))
    with pytest.raises(HpstudyError, match="runs_per_device configure a named executor"):
        hpstudy.run_study(ladder_study(), out=tmp_path / "o", executor=executor,
                          runs_per_device=2)  # fmt: skip
    with pytest.raises(HpstudyError, match=r"study: a StudyConfig, a dict"):
        hpstudy.run_study(3.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------- caps that hold before work


def test_validation_grows_with_the_draws_not_their_product(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two random stages of 1,000 draws: a million pairs, checked as some 2,000 configurations
    (each draw with the first winners, each earlier winner with the first draw)."""
    from hpstudy.study.plan import Plan

    def stage(k: int, field: str) -> dict[str, Any]:
        return {"name": f"r{k}", "kind": "random", "epochs": 1, "n": 1000,
                "space": {field: {"uniform": [0.0, 0.1]}}}  # fmt: skip

    study = validate_study({"name": "wide", "base": {"width": 0.125},
                            "stages": [stage(1, "label_smoothing"), stage(2, "weight_decay")]},
                           "wide")  # fmt: skip
    checked = []
    config = Plan.config
    monkeypatch.setattr(Plan, "config", lambda self, *a: checked.append(a) or config(self, *a))
    Plan(study, "full").validate()
    draws = [len(s.candidates()) for s in study.stages]
    assert len(checked) == 2 * draws[0] + draws[1] <= 3 * 1010  # not 1,000,000
    winners = {tuple(sorted(w.items())) for _, _, w, _ in checked}
    assert len(winners) == draws[0] + 1  # every earlier winner was met, and none at first


def test_caps_name_themselves_before_anything_is_listed() -> None:
    fields = ("lr", "weight_decay", "momentum", "label_smoothing", "mixup_alpha", "ema_decay")
    twenty = [0.01 * (i + 1) for i in range(20)]
    huge = {"name": "g", "kind": "grid", "epochs": 1, "grid": dict.fromkeys(fields, twenty)}
    with pytest.raises(HpstudyError, match=r"20 x 20 x 20 x 20 x 20 x 20 = 64,000,000 .*10,000"):
        validate_study({"name": "x", "stages": [huge]}, "toy")
    values = {"name": "v", "field": "lr", "epochs": 1, "values": twenty[:10]}
    with pytest.raises(HpstudyError, match=r"implies 30,000 runs .* at most 20,000"):
        validate_study({"name": "x", "seeds": list(range(3000)), "stages": [values]}, "toy")
    span = {"name": "r", "kind": "random", "epochs": 1, "n": 2,
            "space": {"label_smoothing": {"uniform": [-1.7e308, 1.7e308]}}}  # fmt: skip
    with pytest.raises(HpstudyError, match="wider than a float"):
        validate_study({"name": "x", "stages": [span]}, "toy")
