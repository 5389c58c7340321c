"""hpstudy.report on hand-built study folders: files, PNGs, numbers, wording, HTML, bad states.

The folders are valid for the typed state: built with the StudyState models and
written with StudyFolder.write_state; run folders with RunDir's own methods.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from markdown_it import MarkdownIt
from matplotlib.image import imread
from scipy.stats import beta as beta_distribution
from unit_fixtures import quick_studies

from hpstudy.config import RunConfig
from hpstudy.errors import HpstudyError
from hpstudy.report import write_report
from hpstudy.report.blocks import FigureNumbers
from hpstudy.report.figures import beta_density
from hpstudy.report.text import fmt_stat, sig3
from hpstudy.run import RunDir, RunStatus, Summary
from hpstudy.study.spec import Published, ReportFigures, ReportSpec
from hpstudy.study.state import (
    DataSummary,
    FinalResult,
    FinalRun,
    RunEntry,
    SettingState,
    SplitScores,
    StageState,
    Stat,
    StudyFolder,
    StudyState,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EPOCHS = 3
SEEDS = (0, 1)
BASE = {"epochs": EPOCHS, "limit_train": 2048, "limit_val": 512}
PUBLISHED = {
    "0.01": Published(train_loss=2.01, train_acc=0.450, val_loss=2.36, val_acc=0.395),
    "0.05": Published(train_loss=1.68, train_acc=0.524, val_loss=1.99, val_acc=0.467),
    "α = 0.2": Published(train_loss=0.835, train_acc=0.862, val_loss=1.21, val_acc=0.698),
}
ERROR = "CUDA out of memory | tried 2 GiB"
SEED_REPORT_SPEC = ReportSpec(
    title="Effects of Hyperparameters Used in MobileNet on CIFAR-100",
    published_test_top1=0.697,
    published_test_loss="0.0019 (not a mean cross-entropy; not comparable)",
    notes=["The published study ran *one* seed per setting."],
    figures=ReportFigures(class_proportions=1, lr_schedule=3, mixup_beta=6),
)


def metric_rows(base: float, seed: int, config: RunConfig) -> list[dict[str, float]]:
    """Distinct, seed-dependent curves so means and stds are not trivially equal."""
    rows = []
    for e in range(1, EPOCHS + 1):
        acc = base + 0.05 * e + 0.013 * seed
        rate = config.lr
        if config.schedule == "cosine":
            rate = 0.5 * config.lr * (1 + math.cos(math.pi * (e - 1) / EPOCHS))
        rows.append({
            "epoch": e, "lr": rate, "train_loss": 4.0 - acc * 3, "train_acc": acc + 0.02,
            "val_loss": 4.2 - acc * 3, "val_acc": acc, "val_top5": acc + 0.2,
            "seconds": 10.0 + seed, "images_per_s": 400.0 + 10 * e,
        })  # fmt: skip
    return rows


@dataclass
class Built:
    """A study folder being built: its runs, and the finished rows of each run."""

    folder: Path
    entries: dict[str, RunEntry] = field(default_factory=dict)  # by run hash
    finished: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # by run hash
    settings: dict[tuple[str, str], SettingState] = field(default_factory=dict)

    def setting(
        self,
        stage: str,
        label: str,
        value: Any,
        values: dict[str, Any],
        base: float,
        published: Published | None = None,
        outcome: dict[int, str] | None = None,  # seed -> diverged | failed | missing
    ) -> SettingState:
        runs = []
        for seed in SEEDS:
            config = RunConfig(**{**BASE, **values, "seed": seed}).for_device("cpu")
            run_hash = config.run_hash()
            if run_hash in self.entries:  # a configuration met before: reused
                runs.append(self.entries[run_hash].model_copy(update={"reused": True}))
                continue
            kind = (outcome or {}).get(seed, "finished")
            entry = RunEntry(seed=seed, run_hash=run_hash, run_dir=f"runs/{run_hash}",
                             reused=False, status=RunStatus.FINISHED)  # fmt: skip
            run = RunDir(self.folder / entry.run_dir)
            if kind == "missing":
                entry = entry.model_copy(update={"status": RunStatus.PENDING})
            elif kind == "failed":
                run.claim(config)
                run.record_failure(run_hash, ERROR)
                entry = entry.model_copy(update={"status": RunStatus.FAILED, "error": ERROR})
            else:
                rows = metric_rows(base, seed, config)
                if kind == "diverged":
                    rows[-1]["val_loss"] = rows[-1]["train_loss"] = math.nan
                else:
                    self.finished[run_hash] = rows
                status = RunStatus.DIVERGED if kind == "diverged" else RunStatus.FINISHED
                run.claim(config)
                run.write_metrics(rows)
                run.write_summary(Summary(
                    status=status, run_hash=run_hash, epochs_done=len(rows),
                    final=rows[-1] if kind == "finished" else None,
                    train_seconds=sum(r["seconds"] for r in rows), parameters=3_309_476,
                    macs_per_image=46_446_592, precision="fp32",
                ))  # fmt: skip
                entry = entry.model_copy(update={"status": status})
            self.entries[run_hash] = entry
            runs.append(entry)
        setting = SettingState(value=value, label=label, runs=runs, published=published)
        self.settings[(stage, label)] = setting
        return setting

    def rows(self, stage: str, label: str) -> list[list[dict[str, float]]]:
        """The metric rows of the setting's finished seeds."""
        runs = self.settings[(stage, label)].runs
        return [self.finished[r.run_hash] for r in runs if r.run_hash in self.finished]


def stage(name: str, field_: str, settings: list[SettingState], **kw: Any) -> StageState:
    defaults: dict[str, Any] = {
        "figure": None, "epochs": EPOCHS, "published_winner": None, "winner": 1,
        "runner_up": 0, "margin": 0.05, "spread": 0.009,
        "verdict": "The margin exceeds the seed spread.",
    }  # fmt: skip
    return StageState(name=name, field=field_, settings=settings, **{**defaults, **kw})


def final_of(setting: SettingState, evaluations: int = 1) -> FinalResult:
    superclass = {"aquatic_mammals": 0.5, "fish": 0.6}
    runs = [
        FinalRun(seed=r.seed, run_hash=r.run_hash, run_dir=r.run_dir, test_evaluations=evaluations,
                 test=SplitScores(loss=1.2 + 0.1 * r.seed, top1=0.69 + 0.01 * r.seed, top5=0.9,
                                  superclass_top1=superclass))
        for r in setting.runs
    ]  # fmt: skip
    return FinalResult(
        config={"lr": 0.05, "schedule": "cosine", "mixup_alpha": 0.2, "epochs": EPOCHS},
        runs=runs,
        test_top1=Stat(mean=0.695, std=0.00707, n=2),
        test_top5=Stat(mean=0.9, std=0.0, n=2),
        test_loss=Stat(mean=1.25, std=0.0707, n=2),
        device="cpu",
    )


def data_summary() -> DataSummary:
    proportions = np.random.default_rng(0).dirichlet(np.full(100, 400.0)).tolist()
    return DataSummary(
        root="/data", split_seed=0, train_size=40000, val_size=10000, test_size=10000,
        num_classes=100, mean=[0.5068, 0.4861, 0.4403], std=[0.2671, 0.2563, 0.2759],
        val_indices_sha256="ab" * 32, class_proportion_min=min(proportions),
        class_proportion_max=max(proportions), class_proportion_mean=0.01,
        class_proportions=proportions,
    )  # fmt: skip


def study_state(built: Built, stages: list[StageState], **kw: Any) -> StudyState:
    fields: dict[str, Any] = {
        "name": "seed-report", "budget": "smoke", "study_hash": "0123456789ab",
        "seeds": list(SEEDS), "selection": "val_acc", "status": "finished",
        "report": SEED_REPORT_SPEC, "data": data_summary(), "stages": stages, "final": None,
        "environment": {"hpstudy": "0.1.0", "torch": "2.13.0+cpu", "python": "3.11.7",
                        "platform": "Linux", "device": "cpu (2 cores)"},
    }  # fmt: skip
    state = StudyState(**{**fields, **kw})
    StudyFolder(built.folder).write_state(state)
    return state


def seed_report_study(tmp_path: Path) -> tuple[Built, StudyState]:
    """The seed report's shape: lr (0.01 seed 1 diverged), schedule (constant reuses lr 0.05),
    mixup (none reuses cosine); published values and figure numbers as the report's."""
    b = Built(tmp_path / "study")
    lr = stage("learning rate", "lr", [
        b.setting("learning rate", "0.01", 0.01, {"lr": 0.01}, 0.2, PUBLISHED["0.01"],
                  outcome={1: "diverged"}),
        b.setting("learning rate", "0.05", 0.05, {"lr": 0.05}, 0.3, PUBLISHED["0.05"]),
    ], figure=2, published_winner="0.05", margin=0.1)  # fmt: skip
    cosine = {"lr": 0.05, "schedule": "cosine"}
    schedule = stage("schedule", "schedule", [
        b.setting("schedule", "constant", "constant", {"lr": 0.05}, 0.3),
        b.setting("schedule", "cosine", "cosine", cosine, 0.35),
    ], figure=4, published_winner="cosine")  # fmt: skip
    mixup = stage("mixup", "mixup_alpha", [
        b.setting("mixup", "none", 0.0, cosine, 0.35),
        b.setting("mixup", "α = 0.2", 0.2, {**cosine, "mixup_alpha": 0.2}, 0.37,
                  PUBLISHED["α = 0.2"]),
    ], figure=7, published_winner="α = 0.2", margin=0.02)  # fmt: skip
    final = final_of(mixup.settings[1])
    return b, study_state(b, [lr, schedule, mixup], final=final)


def custom_study(tmp_path: Path, **kw: Any) -> tuple[Built, StudyState]:
    """A new study: no published values, no figure numbers, no schedule or mixup stage."""
    b = Built(tmp_path / "custom")
    width = stage("width", "width", [
        b.setting("width", "0.5", 0.5, {"width": 0.5}, 0.2),
        b.setting("width", "1", 1.0, {"width": 1.0}, 0.3),
    ])  # fmt: skip
    wd = stage("weight decay", "weight_decay", [
        b.setting("weight decay", "0", 0.0, {"width": 1.0}, 0.3),
        b.setting("weight decay", "0.0005", 5e-4, {"width": 1.0, "weight_decay": 5e-4}, 0.32),
    ])  # fmt: skip
    fields = {"name": "widths", "report": ReportSpec(), "final": final_of(wd.settings[1]), **kw}
    return b, study_state(b, [width, wd], **fields)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def report_md(folder: Path) -> str:
    return (folder / "report.md").read_text(encoding="utf-8")


def section(md: str, heading: str) -> str:
    """The text of a `## heading` section up to the next heading of level 2."""
    start = md.index(f"## {heading}\n")
    end = md.find("\n## ", start + 1)
    return md[start : end if end >= 0 else len(md)]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Built, StudyState]:
    """One seed-report-like report written once for the tests that only read it."""
    built, state = seed_report_study(tmp_path_factory.mktemp("written"))
    assert write_report(built.folder) == built.folder / "report.md"
    return built, state


@pytest.fixture(scope="module")
def custom(tmp_path_factory: pytest.TempPathFactory) -> tuple[Built, StudyState]:
    built, state = custom_study(tmp_path_factory.mktemp("custom"))
    with quick_studies():  # its tests read which figures exist, not their pixels (`written` does)
        write_report(built.folder)
    return built, state


# ---------------------------------------------------------------- files


def test_writes_every_file(written):
    folder = written[0].folder
    expected = ["report.md", "report.html", "tables/stage1_learning_rate.csv",
                "tables/stage2_schedule.csv", "tables/stage3_mixup.csv", "tables/final.csv",
                "figures/fig1_class_proportions.png", "figures/fig2_learning_rate.png",
                "figures/fig3_cosine_lr.png", "figures/fig4_schedule.png",
                "figures/fig6_beta_density.png", "figures/fig7_mixup.png"]  # fmt: skip
    assert not [p for p in expected if not (folder / p).is_file()]


def test_every_csv_has_its_markdown_table(written):
    tables = written[0].folder / "tables"
    csvs = sorted(tables.glob("*.csv"))
    assert len(csvs) >= 4
    for path in csvs:
        md = path.with_suffix(".md")
        assert md.is_file(), md
        lines = md.read_text(encoding="utf-8").splitlines()
        assert lines[1].startswith("| --- |")
        assert len(lines) == len(read_csv(path)) + 2, md  # header, rule, one line per row
    assert sorted(tables.glob("*.md")) == [p.with_suffix(".md") for p in csvs]


def test_figures_are_real_pngs(written):
    pngs = sorted((written[0].folder / "figures").glob("*.png"))
    assert len(pngs) == 6
    for png in pngs:
        assert png.read_bytes().startswith(PNG_MAGIC), png
        image = imread(png)
        assert image.shape[0] > 100 and image.shape[1] > 100, png
        assert image.std() > 0, f"{png} is blank"


# ---------------------------------------------------------------- numbers


def test_stage_table_means_and_stds_come_from_the_metrics(written):
    built = written[0]
    rows = read_csv(built.folder / "tables" / "stage1_learning_rate.csv")
    assert [r["setting"] for r in rows] == ["0.01", "0.05"]
    for row in rows:
        finals = [runs[-1] for runs in built.rows("learning rate", row["setting"])]
        assert int(row["n"]) == len(finals)
        for m in ("train_loss", "train_acc", "val_loss", "val_acc"):
            values = np.array([f[m] for f in finals])
            assert float(row[f"{m}_mean"]) == pytest.approx(values.mean())
            if len(values) > 1:
                assert float(row[f"{m}_std"]) == pytest.approx(values.std(ddof=1))
            else:  # no std of one seed: empty, as the Markdown shows none
                assert row[f"{m}_std"] == ""
            assert float(row[f"published_{m}"]) == getattr(PUBLISHED[row["setting"]], m)
    # the diverged seed is left out, not counted as zero
    assert rows[0]["n"] == "1" and rows[0]["val_acc_std"] == ""


def test_reused_runs_are_read_once_and_counted(written):
    md = report_md(written[0].folder)
    # 3 stages x 2 settings x 2 seeds = 12 entries; constant = lr 0.05, none = cosine
    assert "12 runs, 8 distinct (4 reused, not trained again)" in md
    runs = read_csv(written[0].folder / "tables" / "runs.csv")
    assert len(runs) == 8
    reused = [r for r in runs if r["stages"].count(";") == 1]
    assert len(reused) == 4


def test_winner_is_marked(written):
    folder = written[0].folder
    assert [r["winner"] for r in read_csv(folder / "tables" / "stage1_learning_rate.csv")] == [
        "0",
        "1",
    ]
    md = report_md(folder)
    assert re.search(r"^\| \*\*0\.05\*\* \| \*\*2/2\*\*", md, re.M)
    assert re.search(r"^\| 0\.01 \| 1/2 \| 1 finished, 1 diverged \|", md, re.M)
    assert "Winner: **0.05** (as published)." in md


def test_published_values_sit_beside_measured(written):
    built = written[0]
    md = report_md(built.folder)
    row = next(line for line in md.splitlines() if line.startswith("| **0.05**"))
    values = np.array([runs[-1]["val_acc"] for runs in built.rows("learning rate", "0.05")])
    measured = f"{values.mean():#.3g} ± {values.std(ddof=1):.3f}"
    assert f"{measured} (0.467)" in row
    assert "(1.68)" in row and "(0.524)" in row and "(1.99)" in row
    # a stage with published values for some settings: brackets only where there is one
    mixup = section(md, "Stage 3: mixup")
    assert "val acc (published)" in mixup
    none_row = next(line for line in mixup.splitlines() if line.startswith("| none |"))
    assert "(" not in none_row
    # a stage without published values: no "(published)" columns
    assert "(published)" not in section(md, "Stage 2: schedule")
    assert "published_val_acc" not in (built.folder / "tables" / "stage2_schedule.csv").read_text()


def test_final_result_beside_published(written):
    built, state = written
    md = report_md(built.folder)
    final = section(md, "Final test result")
    assert "| metric | measured | published |" in final
    assert "0.695 ± 0.007" in final and "| 0.697 |" in final
    assert "0.0019 (not a mean cross-entropy; not comparable)" in final
    assert state.final is not None
    for run in state.final.runs:  # the runs it came from, with their seeds and evaluations
        assert f"| `{run.run_hash}` | {run.seed} | " in final
        assert re.search(rf"^\| `{run.run_hash}` \|.* \| 1 \|$", final, re.M)
    assert "validation split only" in final and "evaluated once" in final
    rows = read_csv(built.folder / "tables" / "final.csv")
    assert [float(r["test_top1"]) for r in rows] == [0.69, 0.70]
    assert [r["published_test_top1"] for r in rows] == ["0.697", "0.697"]


def test_title_and_notes_come_from_the_study(written):
    md = report_md(written[0].folder)
    assert md.startswith(
        "# Effects of Hyperparameters Used in MobileNet on CIFAR-100 (budget smoke)"
    )
    assert "The published study ran *one* seed per setting." in md
    assert "the highest mean `val_acc`" in md
    assert "published values in brackets are from the full study" in md  # smoke, has published


def test_extra_figures_open_the_stage_they_explain(written):
    md = report_md(written[0].folder)
    assert "figures/fig3_cosine_lr.png" in section(md, "Stage 2: schedule")
    assert "figures/fig6_beta_density.png" in section(md, "Stage 3: mixup")
    assert "Beta(0.2, 0.2)" in section(md, "Stage 3: mixup")
    assert "## Learning-rate schedule" not in md and "## Mixup" not in md
    numbers = [int(n) for n in re.findall(r"!\[Figure (\d+)\]", md)]
    assert numbers == [1, 2, 3, 4, 6, 7]  # the study file's numbers, in reading order


def test_html_is_self_contained_and_rendered_by_markdown_it(written):
    folder = written[0].folder
    page = (folder / "report.html").read_text(encoding="utf-8")
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)
    assert len(sources) == 6
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'\s(src|href)="(?!data:)', page)  # nothing fetched from elsewhere
    assert "<table>" in page and "<strong>0.05</strong>" in page
    assert "**" not in page  # Markdown emphasis converted, not leaked
    # the body is markdown-it's rendering of report.md, images aside
    expected = MarkdownIt("commonmark").enable("table").render(report_md(folder))
    assert re.sub(r'src="[^"]*"', "", expected) in re.sub(r'src="[^"]*"', "", page)


# ---------------------------------------------------------------- behaviour of new studies


def test_study_without_published_values_has_none(custom):
    folder = custom[0].folder
    md = report_md(folder)
    assert "(published)" not in md and "published" not in section(md, "Final test result")
    for stage_name in ("Stage 1: width", "Stage 2: weight decay"):
        for line in section(md, stage_name).splitlines():
            if line.startswith("| ") and "---" not in line:
                assert not re.search(r"\(\d", line), line  # no bracketed published value
    assert "brackets" not in md  # no budget paragraph about published values
    for path in (folder / "tables").iterdir():
        assert "published" not in path.read_text(encoding="utf-8"), path
    assert "| metric | measured |" in md


def test_study_without_figure_numbers_counts_from_one(custom):
    folder = custom[0].folder
    md = report_md(folder)
    pngs = sorted((folder / "figures").glob("*.png"))
    numbers = {int(n) for n in re.findall(r"Figure (\d+)", md)}
    assert numbers == set(range(1, len(pngs) + 1)) == {1, 2, 3}
    assert not [p for p in pngs if "cosine" in p.name or "beta" in p.name]
    assert "Learning-rate" not in md and "Mixup" not in md and "Beta" not in md


def test_figure_numbers_fill_the_gaps_left_by_explicit_ones():
    numbers = FigureNumbers([2, 5])
    assert [numbers.take(None), numbers.take(None), numbers.take(5), numbers.take(None),
            numbers.take(None)] == [1, 3, 5, 4, 6]  # fmt: skip


def test_val_loss_selection_wording(tmp_path):
    built, _ = custom_study(tmp_path, selection="val_loss")
    md = report_md(write_report(built.folder).parent)
    assert "the lowest mean `val_loss`" in md and "highest mean" not in md
    assert "Margin over the runner-up: 0.0500 val_loss;" in md
    assert "val acc;" not in md


def test_tie_is_reported_as_a_tie(tmp_path):
    built, state = custom_study(tmp_path)
    state.stages[0] = state.stages[0].model_copy(
        update={"tie": True, "margin": 0.0, "tie_break": "the lower mean val_loss"}
    )
    StudyFolder(built.folder).write_state(state)
    write_report(built.folder)
    width = section(report_md(built.folder), "Stage 1: width")
    value = np.mean([rows[-1]["val_acc"] for rows in built.rows("width", "1")])
    assert (
        f"tie on val_acc ({sig3(value)} each) between 1 and 0.5; broken by the lower mean "
        "val_loss" in width
    )
    assert "Margin over the runner-up" not in width and "wins by" not in width


def test_failed_runs_are_listed(tmp_path):
    built, state = custom_study(tmp_path)
    failing = built.setting("width", "2", 2.0, {"width": 2.0}, 0.1, outcome={1: "failed"})
    stages = list(state.stages)
    stages[0] = stages[0].model_copy(update={"settings": [*stages[0].settings, failing]})
    state = state.model_copy(update={"stages": stages, "status": "incomplete", "final": None})
    StudyFolder(built.folder).write_state(state)
    write_report(built.folder)
    md = report_md(built.folder)
    assert "**This study is incomplete**" in md and "`hpstudy study run` again" in md
    failed = section(md, "Failed runs")
    assert md.index("## Failed runs") < md.index("## Data")  # right after the title
    entry = failing.runs[1]
    assert f"| width | 2 | 1 | `{entry.run_hash}` | CUDA out of memory \\| tried 2 GiB |" in failed
    page = (built.folder / "report.html").read_text(encoding="utf-8")
    assert "<td>CUDA out of memory | tried 2 GiB</td>" in page

    # a study still running lists them with the runs instead
    StudyFolder(built.folder).write_state(state.model_copy(update={"status": "running"}))
    write_report(built.folder)
    md = report_md(built.folder)
    assert "### Failed runs" in md and md.index("### Runs") < md.index("### Failed runs")
    assert "incomplete" not in md


def test_infinite_alpha_skips_the_beta_figure_with_a_reason(tmp_path):
    built, state = custom_study(tmp_path, final=None, status="running")
    mixup = stage("mixup", "mixup_alpha", [
        built.setting("mixup", "none", 0.0, {"width": 1.0, "weight_decay": 5e-4}, 0.32),
        built.setting("mixup", "inf", math.inf, {"width": 1.0, "weight_decay": 5e-4,
                                                 "mixup_alpha": 1.0}, 0.3,
                      outcome={0: "missing", 1: "missing"}),
    ], winner=0, runner_up=None, margin=None)  # fmt: skip
    StudyFolder(built.folder).write_state(
        state.model_copy(update={"stages": [*state.stages, mixup]})
    )
    # JSON has no infinity; pydantic writes null for it: put the value back as Python reads it
    raw = json.loads((built.folder / "state.json").read_text())
    raw["stages"][2]["settings"][1]["value"] = math.inf
    (built.folder / "state.json").write_text(json.dumps(raw))
    write_report(built.folder)
    md = report_md(built.folder)
    stage3 = section(md, "Stage 3: mixup")
    assert re.search(r"Figure \d+ skipped: no density for α = inf \(", stage3)
    assert not list((built.folder / "figures").glob("*beta*"))
    assert "| inf | 0/2 | 2 pending |" in stage3  # run folders missing: no rows, state's status


# ---------------------------------------------------------------- unfinished and bad states


def test_unfinished_study_renders_with_pending_test(tmp_path):
    built, state = seed_report_study(tmp_path)
    cosine = state.stages[1].settings[1]
    pending = cosine.runs[1]
    # the run folder is gone: a run with no rows, its status from the state
    for path in (built.folder / pending.run_dir).iterdir():
        path.unlink()
    (built.folder / pending.run_dir).rmdir()

    def mark(s: SettingState) -> SettingState:
        runs = [r.model_copy(update={"status": RunStatus.PENDING})
                if r.run_hash == pending.run_hash else r for r in s.runs]  # fmt: skip
        return s.model_copy(update={"runs": runs})

    stages = [st.model_copy(update={"settings": [mark(s) for s in st.settings]})
              for st in state.stages]  # fmt: skip
    state = state.model_copy(update={"status": "running", "final": None, "stages": stages})
    StudyFolder(built.folder).write_state(state)
    write_report(built.folder)
    md = report_md(built.folder)
    assert "not finished" in md
    assert "test result is **pending**" in md
    assert re.search(r"^\| \*\*cosine\*\* \| \*\*1/2\*\*", md, re.M)
    assert "| pending | 0 | — | — |" in md  # the pending run in the run table
    assert len(read_csv(built.folder / "tables" / "final.csv")) == 0


def test_test_evaluations_come_from_the_state(tmp_path):
    built, state = custom_study(tmp_path)
    assert state.final is not None
    runs = [r.model_copy(update={"test_evaluations": 3}) for r in state.final.runs]
    final = state.final.model_copy(update={"runs": runs})
    StudyFolder(built.folder).write_state(state.model_copy(update={"final": final}))
    write_report(built.folder)
    md = report_md(built.folder)
    assert "evaluated up to 3 times" in md and "evaluated once" not in md
    assert [r["test_evaluations"] for r in read_csv(built.folder / "tables" / "final.csv")] == [
        "3",
        "3",
    ]


def test_missing_state_is_a_user_error(tmp_path):
    with pytest.raises(HpstudyError, match=r"not a study folder \(no state\.json\)"):
        write_report(tmp_path)


def test_missing_key_in_state_is_named(tmp_path):
    built, _ = custom_study(tmp_path)
    raw = json.loads((built.folder / "state.json").read_text())
    del raw["stages"][0]["epochs"]
    (built.folder / "state.json").write_text(json.dumps(raw))
    with pytest.raises(HpstudyError, match=r"state\.json: .*stages\.0\.epochs") as err:
        write_report(built.folder)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- formats and figures


def test_number_formats_follow_the_report():
    assert sig3(0.45) == "0.450" and sig3(1.0) == "1.00" and sig3(0.00686) == "0.00686"
    assert fmt_stat(Stat(mean=0.4671, std=0.0042, n=2)) == "0.467 ± 0.004"
    assert fmt_stat(Stat(mean=0.4671, std=0.0001, n=2)) == "0.467 ± 0.0001"
    assert fmt_stat(Stat(mean=0.4671, std=0.0, n=1)) == "0.467"
    assert fmt_stat(None) == "—"


def test_beta_figure_draws_scipys_density_under_its_number():
    fig = beta_density(9, 2.0)
    ax = fig.axes[0]
    assert ax.get_title() == "Figure 9: Beta(2, 2)"
    x, y = ax.lines[0].get_xdata(), ax.lines[0].get_ydata()
    assert np.allclose(y, beta_distribution.pdf(x, 2.0, 2.0))
    assert np.trapezoid(y, x) == pytest.approx(1.0, abs=1e-3)
