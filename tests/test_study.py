"""Studies: seed-report end to end, chaining and reuse, resume after SIGKILL, bad study files."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from cifar_archive import write_cifar100
from cli_helpers import assert_one_line_error
from study_fixtures import as_in_a_test, cli, isolated_env, run_lean, stage_finals

from hpstudy.errors import HpstudyError
from hpstudy.executors import DataOptions
from hpstudy.executors.local import LocalExecutor
from hpstudy.study import Plan, budget_epochs, load_study, run_study, status_text

# seed-report's shape (4 stages, stage 4 "none" = stage 3's winner) at a tiny width, one
# batch per epoch: the tests compare runs with each other, not with what they learn
TINY_STUDY = """
name = "tiny"
seeds = [0, 1]
[base]
width = 0.125
batch_size = 64
limit_train = 64
limit_val = 64
device = "cpu"
[[stages]]
name = "learning rate"
field = "lr"
values = [0.01, 0.05]
epochs = 1
[[stages]]
name = "schedule"
field = "schedule"
values = ["constant", "cosine"]
epochs = 2
[[stages]]
name = "mixup"
field = "mixup_alpha"
values = [0.0, 0.2]
labels = ["none", "alpha 0.2"]
epochs = 2
"""

ONE_STAGE = '[[stages]]\nname="a"\nfield="lr"\nvalues=[0.1]\nepochs=1'
# the smoke study's cost block is printed from a speed given here, not measured: at width
# 1.0 on a CPU the measurement (3 timed windows of a 128-image step) takes longer than the
# whole smoke study trains, and no test here reads the cost block (test_contact measures)
GIVEN_SPEED = """
import hpstudy.study.remote
from hpstudy.study.cost import Speed
hpstudy.study.remote.measure_speed = lambda *args, **kwargs: Speed("cpu", 100.0, 400.0, 0.01)
"""


def seed_report_args(root: Path, budget: str, out: Path) -> list[str]:
    return [
        "study",
        "run",
        "seed-report",
        "--budget",
        budget,
        "--root",
        str(root),
        "--no-verify",
        "--out",
        str(out),
    ]


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke study's data: 16 train, 4 val, 10 test images. Its tests check the study's
    shape, files and bookkeeping, not what it learns, and each of its 13 epochs at width
    1.0 costs in proportion to the images (the smoke budget caps them at 2048 and 512)."""
    root = tmp_path_factory.mktemp("smoke-data")
    write_cifar100(root, n_train=20, n_test=10, classes=10)
    return root


@pytest.fixture(scope="module")
def smoke_study(smoke_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in seed-report at the smoke budget, through the CLI in a process of its
    own, as a user runs it (the README's command). Left out: the final model's export
    (test_export's study tests check that step, and at width 1.0 its latency benchmark costs
    more than the whole smoke study's training), rasterising the figures (test_reader renders
    every figure of a seed-report and checks its layout) and the speed measurement
    (GIVEN_SPEED)."""
    out = tmp_path_factory.mktemp("smoke") / "study"
    result = run_lean(
        *seed_report_args(smoke_root, "smoke", out),
        "--device",
        "cpu",
        prelude=GIVEN_SPEED,
        # conftest's _offline is not on yet; a cache of its own keeps the one-step speed
        env={**os.environ, **isolated_env(tmp_path_factory.mktemp("smoke-cache"))},
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "tiny.toml"
    path.write_text(TINY_STUDY)
    return path


@pytest.fixture(scope="module")
def tiny_study(
    tiny_file: Path,
    synthetic_root: Path,
    speed_cache: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    out = tmp_path_factory.mktemp("tiny-run") / "study"
    with as_in_a_test(speed_cache):
        run_study(tiny_file, out=out, root=str(synthetic_root), verify=False)
    return out


def test_smoke_study_writes_a_complete_report(smoke_study: Path) -> None:
    for name in ("report.md", "report.html", "state.json", "study.json"):
        assert (smoke_study / name).is_file(), name
    pngs = sorted((smoke_study / "figures").glob("*.png"))
    assert len(pngs) >= 7  # figures 1-7
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tables = sorted((smoke_study / "tables").glob("stage*.csv"))
    assert len(tables) == 4
    rows = [list(csv.DictReader(t.read_text().splitlines())) for t in tables]
    assert [len(r) for r in rows] == [3, 2, 2, 2]
    report = (smoke_study / "report.md").read_text()
    assert "0.697" in report  # the published test accuracy beside the measured one


def test_seed_report_has_eight_distinct_runs_and_reuses_stage_four_none(smoke_study: Path) -> None:
    state = json.loads((smoke_study / "state.json").read_text())
    hashes = {r["run_hash"] for s in state["stages"] for x in s["settings"] for r in x["runs"]}
    assert len(hashes) == 8
    assert len(list((smoke_study / "runs").iterdir())) == 8
    wd, mixup = state["stages"][2], state["stages"][3]
    none = mixup["settings"][0]
    assert none["label"] == "none" and none["runs"][0]["reused"]
    assert none["runs"][0]["run_hash"] == wd["settings"][wd["winner"]]["runs"][0]["run_hash"]
    # smoke budget: 1 epoch for the 15-epoch stage, 2 for the 300-epoch ones
    assert [s["epochs"] for s in state["stages"]] == [1, 2, 2, 2]
    # each stage starts from the winners before it
    lr = state["stages"][0]["settings"][state["stages"][0]["winner"]]["value"]
    config = json.loads(
        (smoke_study / wd["settings"][0]["runs"][0]["run_dir"] / "config.json").read_text()
    )
    assert config["lr"] == lr and config["limit_train"] == 2048


def test_final_test_evaluation_happens_once_on_the_winner(smoke_study: Path) -> None:
    state = json.loads((smoke_study / "state.json").read_text())
    final = state["final"]
    last = state["stages"][-1]
    assert final["runs"][0]["run_hash"] == last["settings"][last["winner"]]["runs"][0]["run_hash"]
    tested = [
        d
        for d in (smoke_study / "runs").iterdir()
        if json.loads((d / "summary.json").read_text())["test_evaluations"]
    ]
    assert [d.name for d in tested] == [final["runs"][0]["run_hash"]]
    assert final["runs"][0]["test_evaluations"] == 1
    assert state["report"]["published_test_top1"] == 0.697


def test_rerunning_a_finished_study_does_nothing(
    smoke_study: Path, smoke_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {p: p.stat().st_mtime_ns for p in smoke_study.rglob("*") if p.is_file()}
    result = cli(capsys, *seed_report_args(smoke_root, "smoke", smoke_study))
    assert result.returncode == 0 and "already finished" in result.stderr
    assert {p: p.stat().st_mtime_ns for p in smoke_study.rglob("*") if p.is_file()} == before


def test_status_lists_every_run(smoke_study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = cli(capsys, "study", "status", str(smoke_study))
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert sum(" finished " in line for line in lines) == 9  # 8 runs, one listed twice
    assert "(reused)" in result.stdout and "final test top-1" in result.stdout


def test_folder_holding_another_study_is_refused(
    smoke_study: Path, smoke_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = cli(capsys, *seed_report_args(smoke_root, "short", smoke_study))
    assert "holds a different study" in assert_one_line_error(result)


def test_tiny_study_picks_on_mean_over_seeds(tiny_study: Path) -> None:
    state = json.loads((tiny_study / "state.json").read_text())
    for stage in state["stages"]:
        means = [s["final"]["val_acc"]["mean"] for s in stage["settings"]]
        assert means[stage["winner"]] == max(means)
        for setting in stage["settings"]:
            assert setting["final"]["val_acc"]["n"] == 2
        assert stage["spread"] is not None
        # a tie is reported as one, with how it was broken; else the margin meets seed noise
        if stage["tie"]:
            assert "tie on val_acc" in stage["verdict"] and stage["tie_break"] in stage["verdict"]
        else:
            assert "seed" in stage["verdict"] and stage["margin"] > 0
    assert state["final"]["test_top1"]["n"] == 2


def test_worker_processes_give_the_same_results(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    study = tmp_path / "s.toml"
    # one seed: one run per worker (each worker is a process that imports torch)
    head = TINY_STUDY.split("[[stages]]")[0].replace("seeds = [0, 1]", "seeds = [0]")
    study.write_text(head + ONE_STAGE.replace("[0.1]", "[0.01, 0.05]"))
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))  # what each of two CPU workers gets
    try:
        run_study(study, out=tmp_path / "here", root=str(synthetic_root), verify=False)
    finally:
        torch.set_num_threads(threads)
    pool = LocalExecutor(
        DataOptions(root=str(synthetic_root), verify=False), workers=["cpu", "cpu"]
    )
    run_study(  # the closing call runs in a worker, where no test patch reaches: no export
        study, out=tmp_path / "pool", root=str(synthetic_root), verify=False, executor=pool,
        export=False,
    )
    assert stage_finals(tmp_path / "pool") == stage_finals(tmp_path / "here")


def test_failing_run_is_recorded_and_the_study_goes_on(
    synthetic_root: Path, tmp_path: Path
) -> None:
    study = tmp_path / "s.toml"
    study.write_text(
        TINY_STUDY.split("[[stages]]")[0]
        + """
[[stages]]
name = "model"
field = "model"
values = ["mobilenet", "no-such-model"]
epochs = 1
"""
    )
    state = run_study(study, out=tmp_path / "out", root=str(synthetic_root), verify=False)
    runs = state.stages[0].settings[1].runs
    assert [r.status for r in runs] == ["failed", "failed"]
    assert runs[0].error is not None and "no-such-model" in runs[0].error
    # a study with failed runs is not "finished", and its report says which and why
    assert state.stages[0].winner == 0 and state.status == "incomplete"
    report = (tmp_path / "out" / "report.md").read_text()
    assert "no-such-model" in report and "Failed runs" in report


def test_stage_without_usable_run_stops_with_a_clear_message(
    synthetic_root: Path, tmp_path: Path
) -> None:
    study = tmp_path / "s.toml"
    study.write_text(
        TINY_STUDY.split("[[stages]]")[0].replace("seeds = [0, 1]", "seeds = [0]")
        + '[[stages]]\nname = "huge"\nfield = "lr"\nvalues = [1e6, 1e7]\nepochs = 2\n'
    )
    with pytest.raises(HpstudyError, match=r"stage 'huge' has no usable run.*diverged"):
        run_study(study, out=tmp_path / "out", root=str(synthetic_root), verify=False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('name = "x"\nstages = []', "stages"),
        ('name = "x"\nbogus = 1\n' + ONE_STAGE, "bogus: unknown key"),
        ('name = "x"\n[base]\nlr = -1\n' + ONE_STAGE, "lr"),
        ('name = "x"\n[[stages]]\nname="a"\nfield="colour"\nvalues=[1]\nepochs=1', "colour"),
        ('name = "x"\n[[stages]]\nname="a"\nfield="lr"\nvalues=[0.1]\nepochs="ten"', "epochs"),
        (
            'name = "x"\n[[stages]]\nname="a"\nfield="lr"\nvalues=[-0.1]\nepochs=1',
            "stage 1 (a), lr = -0.1",
        ),
        ('name = "x"\n[[stages]]\nname="a"\nfield="seed"\nvalues=[1, 2]\nepochs=1', "seed"),
        ('name = "x"\n[[stages]]\nname="a"\nfield="lr"\nvalues=[0.1, 0.1]\nepochs=1', "repeat"),
        ("name = [unclosed", "not valid TOML"),
    ],
)
def test_malformed_study_files_are_named(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(HpstudyError) as err:
        Plan(load_study(path), "full").validate()
    message = str(err.value)
    assert str(path) in message and expected in message and "\n" not in message


def test_malformed_study_through_the_cli_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        'name = "x"\n[base]\nlr = -1\n[[stages]]\nname="a"\nfield="lr"\nvalues=[0.1]\nepochs=1'
    )
    assert "lr" in assert_one_line_error(
        cli(capsys, "study", "run", str(path), "--out", str(tmp_path / "o"))
    )
    assert "no-such-study" in assert_one_line_error(cli(capsys, "study", "show", "no-such-study"))


def test_show_prints_the_built_in_study(capsys: pytest.CaptureFixture[str]) -> None:
    result = cli(capsys, "study", "show", "seed-report")
    assert result.returncode == 0
    assert (
        "lr in [0.01, 0.05, 0.5]" in result.stdout
        and "mixup_alpha in [none, α = 0.2]" in result.stdout
    )


def test_budgets_shrink_epochs_not_shape() -> None:
    assert [budget_epochs(e, "full") for e in (15, 300)] == [15, 300]
    assert [budget_epochs(e, "short") for e in (15, 300)] == [2, 30]
    assert [budget_epochs(e, "smoke") for e in (15, 300)] == [1, 2]


def test_status_of_a_folder_that_is_not_a_study(tmp_path: Path) -> None:
    with pytest.raises(HpstudyError, match="not a study folder"):
        status_text(tmp_path)
