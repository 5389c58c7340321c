"""The study's analysis apart from its rendering: its numbers come from the runs and the state,
`study status --json` prints it, report sections compute nothing, and a new section is one file.

The study folders are test_report's hand-built ones (typed state, run folders written
through RunDir), so nothing trains here.
"""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from test_report import Built, custom_study, read_csv, report_md, seed_report_study, stage

from hpstudy.cli import main
from hpstudy.report import sections, write_report
from hpstudy.report.blocks import FigureNumbers, Heading, NamedTable, Para, Rendered, Section, Table
from hpstudy.report.text import code
from hpstudy.study import Analysis, analyse
from hpstudy.study.analysis import explained_stages
from hpstudy.study.state import METRICS, StudyFolder, StudyState

REPORT = Path(__file__).resolve().parents[1] / "src" / "hpstudy" / "report"
# what a report module may not use: the analysis computes, the report renders
COMPUTING = ("numpy", "scipy", "statistics", "hpstudy.study.compare", "hpstudy.study.select")


@pytest.fixture(scope="module")
def seed_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Built, StudyState, Analysis]:
    built, state = seed_report_study(tmp_path_factory.mktemp("analysis"))
    return built, state, analyse(built.folder)


# ---------------------------------------------------------------- the numbers


def test_setting_stats_come_from_the_runs_final_epochs(seed_report):
    built, state, analysis = seed_report
    for stage_state, result in zip(state.stages, analysis.stages, strict=True):
        for setting in result.settings:
            finals = [rows[-1] for rows in built.rows(stage_state.name, setting.label)]
            assert setting.n == len(finals) > 0
            for m in METRICS:
                values = np.array([f[m] for f in finals])
                stat = setting.final[m]
                assert stat is not None and stat.n == len(values)
                assert stat.mean == pytest.approx(values.mean())
                assert stat.std == pytest.approx(values.std(ddof=1) if len(values) > 1 else 0.0)
    lr = analysis.stages[0].settings[0]  # 0.01: seed 1 diverged, left out of the stats
    assert [(s.status, s.count) for s in lr.statuses] == [("finished", 1), ("diverged", 1)]
    assert lr.n == 1 and lr.curve.seeds == 1


def test_curves_are_the_seeds_mean_per_epoch(seed_report):
    built, _, analysis = seed_report
    cosine = analysis.stages[1].settings[1]
    seeds = built.rows("schedule", "cosine")
    points = cosine.curve.metrics["val_acc"]
    assert cosine.curve.seeds == len(seeds) == 2
    assert points.epochs == [1, 2, 3] and points.n == [2, 2, 2]
    for k, epoch in enumerate(points.epochs):
        values = [rows[epoch - 1]["val_acc"] for rows in seeds]
        assert points.mean[k] == pytest.approx(np.mean(values))
        assert points.std[k] == pytest.approx(np.std(values, ddof=1))


def prediction(values: list[float]) -> tuple[float, float]:
    """The 95 % prediction interval for one new run, by hand from scipy's t quantile."""
    n = len(values)
    half = stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) * math.sqrt(1 + 1 / n)
    return float(np.mean(values) - half), float(np.mean(values) + half)


def test_reproduction_rows_carry_interval_and_verdict(seed_report):
    built, state, analysis = seed_report
    rows = {r.what: r for r in analysis.reproduction}
    # two seeds: the prediction interval for one new run, the verdict from it (the two
    # seeds differ by more than the one-point margin, so never "consistent")
    row = rows["learning rate: 0.05 val_acc"]
    values = [runs[-1]["val_acc"] for runs in built.rows("learning rate", "0.05")]
    lo, hi = prediction(values)
    assert row.ci95 == pytest.approx([lo, hi]) and row.measured == pytest.approx(np.mean(values))
    assert row.interval == "95 % prediction interval for one new run (2 seeds)"
    assert row.verdict == ("inside the prediction interval" if lo <= 0.467 <= hi else "outside")
    # one seed's accuracy: cannot tell; that run's Wilson interval over its 512 images shown
    row = rows["learning rate: 0.01 val_acc"]
    (value,) = [runs[-1]["val_acc"] for runs in built.rows("learning rate", "0.01")]
    wilson = stats.binomtest(round(value * 512), 512).proportion_ci(0.95, method="wilson")
    assert row.ci95 == pytest.approx([wilson.low, wilson.high])
    assert row.verdict == "cannot tell" and row.interval.startswith("one run, Wilson")
    # one seed's loss has no interval: the verdict says so rather than guessing
    assert rows["learning rate: 0.01 val_loss"].verdict == "cannot tell"
    assert rows["learning rate: 0.01 val_loss"].ci95 is None
    # the test top-1 of two final runs: judged by the same rule, on their test top-1
    tops = [r.test.top1 for r in state.final.runs]  # type: ignore[union-attr]
    lo, hi = prediction(tops)
    assert rows["test top-1"].ci95 == pytest.approx([lo, hi])
    assert rows["test top-1"].verdict == (
        "inside the prediction interval" if lo <= 0.697 <= hi else "outside")  # fmt: skip
    assert analysis.final.published_verdict == rows["test top-1"].verdict  # type: ignore[union-attr]


def test_explaining_figures_are_data_for_the_stage_they_explain(seed_report):
    built, state, analysis = seed_report
    lr, schedule, mixup = analysis.stages
    assert lr.explains is None
    assert schedule.explains is not None and schedule.explains.kind == "lr_schedule"
    run = schedule.explains
    rows = built.rows("schedule", "cosine")[0]  # the first finished cosine seed
    assert run.lrs == [row["lr"] for row in rows] and run.lr_max == 0.05
    assert mixup.explains is not None and mixup.explains.kind == "mixup_beta"
    assert mixup.explains.alpha == 0.2 and mixup.explains.odd == []
    # a search stage's settings are dicts: only a values stage has an explaining figure
    searched = [s.model_copy(update={"kind": "grid"}) for s in state.stages]
    assert explained_stages(searched) == {}
    # a schedule stage without a cosine setting has nothing to show under cosine annealing
    constant = state.stages[1].model_copy(update={"settings": state.stages[1].settings[:1]})
    assert list(explained_stages([state.stages[0], constant, state.stages[2]])) == [2]


def test_final_result_and_counts(seed_report):
    _, state, analysis = seed_report
    final = analysis.final
    assert final is not None and state.final is not None
    # the fields off RunConfig's defaults (lr 0.05 is the default), as TOML and a command
    assert final.shown_config == {"epochs": 3, "schedule": "cosine", "mixup_alpha": 0.2}
    assert final.base_toml == '[base]\nepochs = 3\nschedule = "cosine"\nmixup_alpha = 0.2'
    assert final.train_command == (
        "hpstudy train --epochs 3 --schedule cosine --mixup-alpha 0.2 --seed 0 "
        "--out seed-report-final-seed0"
    )
    assert final.most_test_evaluations == 1 and final.published_top1 == 0.697
    fish = final.superclass["fish"]
    assert fish is not None and (fish.mean, fish.n) == (0.6, 2)
    counts = analysis.counts
    assert (counts.settings, counts.entries, counts.distinct, counts.reused) == (6, 12, 8, 4)
    assert analysis.environment["precision"] == "fp32"  # from the runs: the state names none
    assert [(u.train, u.val) for u in analysis.data.images_used] == [(2048, 512)]


# ---------------------------------------------------------------- study status --json


def test_status_json_prints_the_analysis(seed_report, capsys):
    built, _, analysis = seed_report
    assert main(["study", "status", str(built.folder), "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # one JSON object, one line
    printed = json.loads(out)
    # the analysis, stamped with the output's schema version, and nothing left to run
    assert (printed.pop("schema_version"), printed.pop("progress")) == (1, None)
    assert printed == json.loads(analysis.model_dump_json())
    assert [s["name"] for s in printed["stages"]] == ["learning rate", "schedule", "mixup"]
    assert printed["stages"][0]["settings"][1]["final"]["val_acc"]["mean"] == pytest.approx(
        analysis.stages[0].settings[1].final["val_acc"].mean  # type: ignore[union-attr]
    )
    assert printed["final"]["test_top1"]["mean"] == 0.695


def test_status_json_writes_non_finite_numbers_as_null(tmp_path, capsys):
    built, state = custom_study(tmp_path, final=None, status="running")
    odd = stage("mixup", "mixup_alpha", [
        built.setting("mixup", "inf", math.inf, {"width": 1.0, "mixup_alpha": 1.0}, 0.3),
    ], winner=0, runner_up=None, margin=None)  # fmt: skip
    StudyFolder(built.folder).write_state(state.model_copy(update={"stages": [odd]}))
    raw = json.loads((built.folder / "state.json").read_text())
    raw["stages"][0]["settings"][0]["value"] = math.inf  # as a hand-edited state could hold
    (built.folder / "state.json").write_text(json.dumps(raw))
    assert main(["study", "status", str(built.folder), "--json"]) == 0
    out = capsys.readouterr().out
    printed = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert printed["stages"][0]["settings"][0]["value"] is None
    assert printed["stages"][0]["explains"] == {"kind": "mixup_beta", "alpha": None,
                                                "odd": ["inf"]}  # fmt: skip


def test_status_json_errors_are_one_line(tmp_path, capsys):
    assert main(["study", "status", str(tmp_path), "--json"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no state.json" in err and err.count("\n") == 1
    assert main(["study", "status", str(tmp_path), "--json", "--watch", "2"]) == 1
    assert "--watch" in capsys.readouterr().err


# ---------------------------------------------------------------- sections


def report_modules() -> list[Path]:
    return sorted(p for p in REPORT.rglob("*.py") if p.name != "figures.py")


def test_report_sections_compute_nothing():
    """Every module of the report but the figures' drawing imports no statistics: the numbers
    and verdicts it shows are the analysis'. The figures draw the analysis' data."""
    assert len(report_modules()) >= 12  # the sections package is there
    offenders = []
    for path in [*report_modules(), REPORT / "figures.py"]:
        banned = COMPUTING if path.name != "figures.py" else COMPUTING[-2:]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            offenders += [f"{path.name}: {n}" for n in names
                          if any(n == b or n.startswith(b + ".") for b in banned)]  # fmt: skip
    assert offenders == []


def seeds_section(analysis: Analysis, numbers: FigureNumbers) -> Rendered:
    """A toy section: each seed's distinct runs and how they ended, from the analysis alone."""
    header = ["seed", "run", "status"]
    rows = [[str(seed), run.run_hash, str(run.status)]
            for seed in analysis.seeds for run in analysis.runs if run.seed == seed]  # fmt: skip
    shown = [[seed, code(run), status] for seed, run, status in rows]
    blocks = [Heading("Seeds"), Para(f"Seeds of {code(analysis.name)}:"), Table(header, shown)]
    return Rendered(blocks, [NamedTable("seeds", header, shown, header, rows)])


def test_a_new_section_is_one_registration(tmp_path, monkeypatch):
    monkeypatch.setattr(sections, "SECTIONS", list(sections.SECTIONS))
    sections.register(Section("seeds", seeds_section), before="environment")
    with pytest.raises(ValueError, match="registered already"):
        sections.register(Section("seeds", seeds_section))
    built, _ = custom_study(tmp_path)
    failing = built.setting("width", "2", 2.0, {"width": 2.0}, 0.1, outcome={1: "failed"})
    state = StudyFolder(built.folder).read_state()
    state.stages[0].settings.append(failing)
    StudyFolder(built.folder).write_state(state)
    write_report(built.folder)
    md = report_md(built.folder)
    assert md.index("## Final test result") < md.index("## Seeds") < md.index("## Environment")
    table = read_csv(built.folder / "tables" / "seeds.csv")
    assert sorted((r["seed"], r["run"]) for r in table) == sorted(
        (str(e.seed), e.run_hash) for e in built.entries.values()
    )
    failed = [r for r in table if r["status"] == "failed"]
    assert [r["seed"] for r in failed] == ["1"] and len(table) == 8
    assert f"| 1 | `{failed[0]['run']}` | failed |" in md
    assert (built.folder / "tables" / "seeds.md").is_file()
