"""What a reader acts on: the final configuration as a copyable [base] block and train command,
a search stage's table with a column per parameter, chance beside every accuracy, pruning in
words, and figures in one house style whose text all lies inside the figure.

Study folders are built by hand as tests/test_report.py builds them (no training).
"""

from __future__ import annotations

import csv
import math
import shlex
import tomllib
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from test_report import (
    BASE,
    SEEDS,
    Built,
    data_summary,
    final_of,
    report_md,
    section,
    seed_report_study,
    stage,
    study_state,
)

from hpstudy.cli import build_parser
from hpstudy.config import RunConfig
from hpstudy.report import figures, write_report
from hpstudy.report.sections import build
from hpstudy.run import RunDir, RunStatus, Summary
from hpstudy.study import state as study_state_models
from hpstudy.study.analysis import (
    Curve,
    CurvePoints,
    analyse,
    base_toml,
    changed_config,
    train_command,
)
from hpstudy.study.spec import ReportSpec
from hpstudy.study.state import SettingState, Stat

optuna = pytest.importorskip("optuna")

# a search stage's trials: (trial number, lr, label_smoothing, base accuracy); trial 1 pruned
TRIALS = [(0, 0.4587093112, 0.0724332417, 0.30), (1, 0.01234567891, 0.15, 0.20),
          (2, 0.1226471293, 0.0, 0.35)]  # fmt: skip


def search_study(tmp_path: Path, chance_level: bool = False) -> Built:
    """A grid stage and an Optuna stage (with its journal; trial 1 pruned at epoch 1, its
    second seed never run), two seeds; `chance_level`: the Optuna runs end at val acc 0.01
    and 0.023 and the test interval holds 0.01."""
    b = Built(tmp_path / "search")
    grid = stage("lr x wd", "lr, weight_decay", [
        b.setting("lr x wd", f"lr={lr}, weight_decay={wd}", {"lr": lr, "weight_decay": wd},
                  {"lr": lr, "weight_decay": wd}, 0.2 + lr)
        for lr in (0.02, 0.1) for wd in (1e-4, 5e-4)
    ], kind="grid", winner=3, runner_up=2)  # fmt: skip
    tpe_settings = []
    for number, lr, smoothing, base in TRIALS:
        value = {"lr": lr, "label_smoothing": smoothing}
        fields = {"lr": lr, "label_smoothing": smoothing, "weight_decay": 5e-4}
        outcome = {1: "missing"} if number == 1 else None
        setting = b.setting("tpe", f"trial {number}", value, fields,
                            -0.14 if chance_level else base, outcome=outcome)  # fmt: skip
        tpe_settings.append(setting.model_copy(update={"trial": number}))
    pruned = tpe_settings[1].runs[0]
    RunDir(b.folder / pruned.run_dir).write_summary(Summary(
        status=RunStatus.PRUNED, run_hash=pruned.run_hash, epochs_done=1, final=None,
        train_seconds=1.0, parameters=1, macs_per_image=1, precision="fp32"))  # fmt: skip
    tpe_settings[1] = tpe_settings[1].model_copy(update={"runs": [
        tpe_settings[1].runs[0].model_copy(update={"status": RunStatus.PRUNED}),
        tpe_settings[1].runs[1]]})  # fmt: skip
    journal = b.folder / "optuna" / "tpe.journal"
    journal.parent.mkdir(parents=True, exist_ok=True)
    from hpstudy.study.search import open_storage

    study = optuna.create_study(study_name="tpe", storage=open_storage(journal),
                                direction="maximize")  # fmt: skip
    space = {"lr": optuna.distributions.FloatDistribution(0.01, 0.5, log=True),
             "label_smoothing": optuna.distributions.FloatDistribution(0.0, 0.2)}  # fmt: skip
    for number, lr, smoothing, base in TRIALS:
        state = optuna.trial.TrialState.PRUNED if number == 1 else optuna.trial.TrialState.COMPLETE
        study.add_trial(optuna.trial.create_trial(
            params={"lr": lr, "label_smoothing": smoothing}, distributions=space,
            value=None if number == 1 else base + 0.1, state=state,
            intermediate_values={1: base + 0.05}))  # fmt: skip
    tpe = stage("tpe", "lr, label_smoothing", tpe_settings, kind="optuna", winner=2,
                runner_up=0, journal="optuna/tpe.journal", optuna_study="tpe")  # fmt: skip
    final = final_of(tpe_settings[2])
    config = RunConfig(**{**BASE, "lr": TRIALS[2][1], "label_smoothing": 0.0,
                          "weight_decay": 5e-4}).for_device("cpu")  # fmt: skip
    final = final.model_copy(update={"config": config.model_dump(exclude={"seed"})})
    if chance_level:
        final = final.model_copy(update={"test_top1": study_state_models.TestTop1(
            mean=0.0105, std=0.001, n=2, ci95=[0.0085, 0.0125], interval="Wilson")})  # fmt: skip
    study_state(b, [grid, tpe], name="search", report=ReportSpec(), final=final)
    return b


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The search study, its report written once (blank PNGs: the layout test draws them)."""
    built = search_study(tmp_path_factory.mktemp("reader"))
    with _quick():
        write_report(built.folder)
    return built


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- the final configuration


def test_the_final_configuration_rebuilds_the_run_from_toml_and_from_the_command() -> None:
    config = RunConfig(model="mobilenet", width=0.125, epochs=3, lr=0.12264712930147,
                       label_smoothing=0.0724332417, weight_decay=5e-4, limit_train=1024,
                       nesterov=True, schedule="cosine", seed=1,
                       device="cpu").for_device("cpu")  # fmt: skip
    dumped = config.model_dump(exclude={"seed"})
    shown = changed_config(dumped)
    # every field off its default, model and dataset always; no seed, no execution field
    assert shown == {"dataset": "cifar100", "model": "mobilenet", "width": 0.125, "epochs": 3,
                     "lr": 0.12264712930147, "nesterov": True, "weight_decay": 5e-4,
                     "schedule": "cosine", "label_smoothing": 0.0724332417,
                     "limit_train": 1024, "precision": "fp32"}  # fmt: skip
    base = tomllib.loads(base_toml(shown))["base"]
    assert RunConfig(**base, seed=1).run_hash() == config.run_hash()
    words = shlex.split(train_command(shown, 1, "my run"))
    assert words[:2] == ["hpstudy", "train"] and words[-2:] == ["--out", "my run"]
    args = build_parser(words[1:]).parse_args(words[1:])
    # the filled-in source fields (model_source, data_source) have no option
    values = {k: getattr(args, k) for k in RunConfig.model_fields
              if getattr(args, k, None) is not None}  # fmt: skip
    assert RunConfig(**values).for_device("cpu").run_hash() == config.run_hash()


def test_the_report_shows_the_final_configuration_as_base_and_command(searched: Built) -> None:
    final = section(report_md(searched.folder), "Final test result")
    block = final[final.index("```toml\n") + 8 :]
    base = tomllib.loads(block[: block.index("```")])["base"]
    assert base["lr"] == TRIALS[2][1] and "label_smoothing" not in base  # at its default
    assert base["weight_decay"] == 5e-4 and base["limit_train"] == 2048
    assert base["model"] == "mobilenet" and base["dataset"] == "cifar100"
    assert "```sh\nhpstudy train --dataset cifar100 --model mobilenet" in final
    assert "--seed 0 --out search-final-seed0\n```" in final
    analysis = analyse(searched.folder)
    assert analysis.final is not None and analysis.final.train_command.startswith("hpstudy train")


# ---------------------------------------------------------------- search tables


def test_a_search_table_has_a_column_per_parameter_at_full_precision(searched: Built) -> None:
    md = (searched.folder / "tables" / "stage2_tpe.md").read_text().splitlines()
    # a column per parameter, in the study file's order (the stage's `field`)
    assert md[0].startswith("| trial | lr | label_smoothing | seeds | status |")
    winner = md[2]
    assert winner.startswith("| **2** | **0.1226471293** | **0.0** |")
    rows = read_csv(searched.folder / "tables" / "stage2_tpe.csv")
    assert [r["trial"] for r in rows] == ["2", "0", "1"]  # best first, the pruned one last
    assert float(rows[1]["lr"]) == TRIALS[0][1] and rows[1]["lr"] == repr(TRIALS[0][1])
    assert rows[2]["val_acc_mean"] == rows[2]["val_acc_std"] == ""  # pruned: no final epoch
    grid = read_csv(searched.folder / "tables" / "stage1_lr_x_wd.csv")
    assert set(grid[0]) >= {"setting", "lr", "weight_decay"} and grid[0]["setting"] == "4"


def test_the_report_says_how_many_trials_were_pruned_and_when(searched: Built) -> None:
    analysis = analyse(searched.folder)
    assert analysis.stages[1].pruned == [1] and analysis.stages[0].pruned == []
    tpe = section(report_md(searched.folder), "Stage 2: tpe")
    assert f"Pruned: 1 of {len(TRIALS) * len(SEEDS)} runs, at epoch 1 of 3." in tpe


# ---------------------------------------------------------------- chance


def test_chance_is_stated_and_a_result_at_chance_is_flagged(
    searched: Built, tmp_path: Path
) -> None:
    good = analyse(searched.folder)
    assert good.chance.top1 == 0.01 and good.chance.top5 == 0.05
    assert not any(s.at_chance for st in good.stages for s in st.settings)
    assert good.final is not None and not good.final.at_chance
    bad_folder = search_study(tmp_path / "bad", chance_level=True).folder
    bad = analyse(bad_folder)
    tpe = bad.stages[1]
    finished = [s for s in tpe.settings if s.n]
    # two seeds' final val acc (0.01, 0.023): their t-interval holds chance
    assert finished and all(s.at_chance for s in finished)
    assert all(s.val_acc_ci95[0] < 0.01 < s.val_acc_ci95[1] for s in finished)  # type: ignore[index]
    assert bad.final is not None and bad.final.at_chance
    with _quick():
        write_report(bad_folder)
    md = report_md(bad_folder)
    assert "Chance (a uniform guess among 100 classes): accuracy 0.0100." in md
    assert "**At chance:**" in section(md, "Stage 2: tpe")
    assert "(at chance)" in (bad_folder / "tables" / "stage2_tpe.md").read_text()
    final = section(md, "Final test result")
    assert "top-1 0.0100, top-5 0.0500" in final and "**At chance:**" in final
    assert read_csv(bad_folder / "tables" / "stage2_tpe.csv")[0]["val_acc_at_chance"] == "1"


# ---------------------------------------------------------------- figures


def outside_text(fig: Figure) -> list[str]:
    """Text the figure's own layout puts outside it, or a legend over an axes' data area."""
    fig.set_dpi(40)  # the layout is in inches and points: fewer pixels, the same answer
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    width, height = fig.get_size_inches()
    tight = fig.get_tightbbox(renderer)  # every drawn artist: matplotlib's own layout box
    found = []
    if tight.x0 < -0.01 or tight.y0 < -0.01 or tight.x1 > width + 0.01 or tight.y1 > height + 0.01:
        found.append(f"tight box {tight.bounds} outside {width}x{height}")
    texts = [*fig.texts, *(t for legend in fig.legends for t in legend.get_texts())]
    for ax in fig.axes:
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label]
    for t in texts:
        if not t.get_visible() or not t.get_text().strip():
            continue
        box = t.get_window_extent(renderer)
        if box.x0 < -1 or box.y0 < -1 or box.x1 > fig.bbox.x1 + 1 or box.y1 > fig.bbox.y1 + 1:
            found.append(repr(t.get_text()))
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    for legend in legends:
        box = legend.get_window_extent(renderer)
        found += [f"legend over {ax.get_title()!r}" for ax in fig.axes
                  if ax.get_navigate() and box.overlaps(ax.bbox)]  # fmt: skip
    return found


@pytest.mark.report_figures
def test_every_figure_of_a_seed_report_and_a_search_study_keeps_its_text_inside(
    searched: Built, tmp_path: Path
) -> None:
    style = mpl.rcParams["axes.facecolor"]
    seed_report, _ = seed_report_study(tmp_path / "seed")
    for folder, expected in ((seed_report.folder, 6), (searched.folder, 6)):
        images = build(analyse(folder)).images
        assert len(images) >= expected, [i.path for i in images]
        for image in images:
            assert outside_text(image.figure) == [], image.path
            assert image.figure.get_facecolor()[:3] == (1.0, 1.0, 1.0), image.path
    # Optuna's ggplot style stays in its own figures, restyled: nothing leaks to the process
    assert mpl.rcParams["axes.facecolor"] == style


def curve(values: list[float]) -> CurvePoints:
    return CurvePoints(epochs=list(range(1, len(values) + 1)), mean=values,
                       std=[0.0] * len(values), n=[1] * len(values))  # fmt: skip


def line(loss: list[float], acc: list[float]) -> Curve:
    return Curve(seeds=1, metrics={"train_loss": curve(loss), "val_loss": curve(loss),
                                   "train_acc": curve(acc), "val_acc": curve(acc)})  # fmt: skip


def test_stage_curves_tell_every_line_apart_and_scale_a_spike_in_log() -> None:
    curves = [
        ("0.05", line([4.0, 3.5, 3.0], [0.1, 0.2, 0.3]), {"val_acc": 0.467}),
        ("0.5", line([4.0, 3.5, 3.0], [0.1, 0.2, 0.3]), {}),  # the same numbers: on top
        ("diverged", line([124.0, 387.0, 18.6], [0.01, 0.01, 0.02]), {}),
    ]
    with mpl.rc_context({"axes.facecolor": "#e5e5e5", "lines.linestyle": ":"}):  # a user's rc
        fig = figures.stage_curves(2, "learning rate", "lr", curves, 0.01, 3)
    train_loss, val_loss, _, val_acc = fig.axes[:4]
    assert train_loss.get_yscale() == val_loss.get_yscale() == "log"
    assert val_acc.get_yscale() == "linear"
    settings = ("0.05", "0.5", "diverged")
    looks = [(ln.get_color(), ln.get_marker(), ln.get_linestyle())
             for ln in val_acc.get_lines() if ln.get_label() in settings]  # fmt: skip
    assert len(looks) == 3 and len(set(looks)) == 3
    assert len({m for _, m, _ in looks}) == 3 and len({s for _, _, s in looks}) == 3
    stars = [ln for ln in val_acc.get_lines() if ln.get_marker() == "*"]
    assert len(stars) == 1 and list(stars[0].get_ydata()) == [0.467]
    chance = [ln for ln in val_acc.get_lines() if ln.get_label() == "chance"]
    assert chance and set(chance[0].get_ydata()) == {0.01}
    assert val_acc.get_facecolor()[:3] == (1.0, 1.0, 1.0)  # the house style, not the rc
    assert outside_text(fig) == []


def test_importances_say_how_many_trials_they_rest_on() -> None:
    title = " ".join(figures.optuna_title(9, "importances", "tpe", 4).split())
    assert "from 4 trials" in title and "rough guide" in title
    assert "rough guide" not in figures.optuna_title(9, "importances", "tpe", 40)


def test_the_data_table_names_the_limits_not_a_budget(searched: Built) -> None:
    data = section(report_md(searched.folder), "Data")
    assert "(limit_train / limit_val)" in data and "(budget)" not in data
    # a state from before the opening recorded the used images: the split's, and a caveat
    assert "the runs trained on its first 2,048 of 40,000 images" in data


def test_figure_1_shows_the_images_the_runs_trained_on(tmp_path: Path) -> None:
    b = Built(tmp_path / "used")
    only = b.setting("width", "1", 1.0, {"width": 1.0}, 0.3)
    used = [0.0] * 98 + [0.5, 0.5]  # unlike the split's: the figure must draw these
    data = data_summary().model_copy(update={"used_train": 2048,
                                             "used_class_proportions": used})  # fmt: skip
    study_state(b, [stage("width", "width", [only], winner=0, runner_up=None, margin=None,
                          verdict=None)], name="used", report=ReportSpec(), data=data)  # fmt: skip
    image = build(analyse(b.folder)).images[0]
    assert "the first 2,048 of the train split's 40,000 images" in image.caption
    bars = [patch.get_height() for patch in image.figure.axes[0].patches]
    assert bars == used


def test_one_stat_over_one_seed_is_the_same_missing_std_in_csv_and_markdown(
    tmp_path: Path,
) -> None:
    b = Built(tmp_path / "one")
    only = b.setting("width", "1", 1.0, {"width": 1.0}, 0.3)
    one_seed = SettingState(**{**only.model_dump(), "runs": only.runs[:1]})
    top1 = study_state_models.TestTop1(mean=0.6, std=0.0, n=1)
    final = final_of(one_seed).model_copy(update={"test_top1": top1})
    final = final.model_copy(update={"runs": final.runs[:1]})
    study_state(b, [stage("width", "width", [one_seed], winner=0, runner_up=None,
                          margin=None, verdict=None)],
                name="one", report=ReportSpec(), final=final, seeds=[0])  # fmt: skip
    with _quick():
        write_report(b.folder)
    row = read_csv(b.folder / "tables" / "stage1_width.csv")[0]
    assert row["n"] == "1" and row["val_acc_std"] == ""
    assert math.isfinite(float(row["val_acc_mean"]))
    superclass = read_csv(b.folder / "tables" / "superclass.csv")
    assert superclass and all(r["top1_std"] == "" for r in superclass)


def _quick() -> Any:
    from unit_fixtures import quick_studies

    return quick_studies()


def test_stat_helpers_agree() -> None:
    # fmt_stat shows no std below two seeds; the CSV leaves it empty (stages.csv_stat)
    from hpstudy.report.sections.stages import csv_stat
    from hpstudy.report.text import fmt_stat

    one = Stat(mean=0.5, std=0.0, n=1)
    assert fmt_stat(one) == "0.500" and csv_stat(one) == [repr(0.5), ""]
    two = Stat(mean=0.5, std=0.1, n=2)
    assert "±" in fmt_stat(two) and csv_stat(two) == [repr(0.5), repr(0.1)]
    assert np.isclose(float(csv_stat(two)[1]), 0.1)
