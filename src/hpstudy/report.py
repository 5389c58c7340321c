"""The study's report: tables (CSV + Markdown), figures (PNG), report.md and report.html.

The last step of the data flow: it reads only the study folder (state.json and
the run folders the study wrote) and never the dataset. It must render any
study, finished or not, so every missing value becomes "—" instead of an error.
The content is built once as a list of blocks and rendered twice, to Markdown
and to self-contained HTML.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# The object-oriented API (no pyplot) always renders PNGs with Agg and leaves
# the process's backend alone: safe headless and inside a user's notebook.
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from hpstudy.errors import HpstudyError

METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")
METRIC_TITLES = {
    "train_loss": "train loss",
    "train_acc": "train acc",
    "val_loss": "val loss",
    "val_acc": "val acc",
}
PANELS = ("train_loss", "val_loss", "train_acc", "val_acc")  # the report's 2x2 order
DASH = "—"
DPI = 110
BETA_DRAWS = 100_000
DEFAULT_MIXUP_ALPHA = 0.2  # the report's α when a study has no mixup stage
PUBLISHED_TEST_TOP1 = 0.697
FINAL_CSV_HEADER = ["run_hash", "seed", "test_loss", "test_top1", "test_top5",
                    "published_test_top1"]  # fmt: skip
FINAL_CONFIG_SHOWN = ("lr", "schedule", "weight_decay", "mixup_alpha", "epochs")
RUN_TABLE_HEADER = ["run", "stage: setting", "seed", "status", "epochs done", "wall time",
                    "images/s", "parameters", "MACs/image"]  # fmt: skip


# ---------------------------------------------------------------- blocks of content


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str  # inline **bold**, *italic* and `code` are rendered in both formats
    note: bool = False  # a call-out (quote in Markdown)


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    path: Path
    caption: str


Block = Heading | Para | Table | Image


# ---------------------------------------------------------------- reading the study folder


@dataclass
class Run:
    seed: int
    run_hash: str
    run_dir: Path
    status: str
    error: str | None
    config: dict[str, Any]
    rows: list[dict[str, float]]
    summary: dict[str, Any]
    stages: list[str] = field(default_factory=list)  # "stage: setting" where it appears


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise HpstudyError(f"{path}: cannot read ({err})") from None


def read_state(study_dir: Path) -> dict[str, Any]:
    path = study_dir / "state.json"
    if not path.is_file():
        raise HpstudyError(f"{study_dir}: not a study folder (no state.json)")
    state = read_json(path)
    if not isinstance(state, dict) or not isinstance(state.get("stages"), list):
        raise HpstudyError(f"{path}: not a study state (no 'stages' list)")
    return state


def read_metrics(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []  # a pending run has no metrics yet
    with open(path, newline="", encoding="utf-8") as f:
        rows = []
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                rows.append({k: float(v) for k, v in row.items() if k and v not in (None, "")})
            except ValueError as err:
                raise HpstudyError(f"{path}: line {line}: {err}") from None
    return rows


def run_path(study_dir: Path, entry: dict[str, Any]) -> Path:
    return study_dir / str(entry.get("run_dir") or f"runs/{entry.get('run_hash')}")


def load_run(study_dir: Path, entry: dict[str, Any]) -> Run:
    run_dir = run_path(study_dir, entry)
    summary_path, config_path = run_dir / "summary.json", run_dir / "config.json"
    summary = read_json(summary_path) if summary_path.is_file() else {}
    config = read_json(config_path) if config_path.is_file() else {}
    # summary.json is the run's own record, fresher than a running study's state
    status = summary.get("status") or entry.get("status") or "pending"
    return Run(
        seed=int(entry.get("seed", config.get("seed", 0))),
        run_hash=str(entry.get("run_hash") or run_dir.name),
        run_dir=run_dir,
        status=str(status),
        error=entry.get("error"),
        config=config,
        rows=read_metrics(run_dir / "metrics.csv"),
        summary=summary,
    )


# ---------------------------------------------------------------- numbers


def stats(values: list[float]) -> dict[str, float] | None:
    """Mean, sample std (0 for one value) and n of the finite values; None when there are none."""
    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if finite.size == 0:
        return None
    std = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
    return {"mean": float(finite.mean()), "std": std, "n": int(finite.size)}


def sig3(x: float) -> str:
    """3 significant figures with trailing zeros kept, as the report prints them (0.450, 1.00)."""
    if not math.isfinite(x):
        return str(x)
    text = f"{x:#.3g}"
    return text if "e" in text else text.rstrip(".")


def fmt_stat(s: dict[str, float] | None) -> str:
    """`mean ± std`, the std to the mean's decimals (but never shown as a bare zero)."""
    if s is None:
        return DASH
    mean = sig3(s["mean"])
    if s["n"] < 2:
        return mean
    if "e" in mean:
        return f"{mean} ± {s['std']:.2g}"
    decimals = len(mean.split(".")[1]) if "." in mean else 0
    std = f"{s['std']:.{decimals}f}"
    if float(std) == 0 and s["std"] > 0:
        std = f"{s['std']:.1g}"
    return f"{mean} ± {std}"


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return DASH
    if s < 120:
        return f"{s:.1f} s"
    return f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def num(x: float | None) -> str:
    """A CSV cell: full precision, empty when missing."""
    return "" if x is None else repr(float(x))


def cell(x: Any, fmt: Callable[[Any], str] = sig3) -> str:
    """A Markdown cell: formatted, or a dash when the value is missing."""
    return DASH if x is None else fmt(x)


def plural(n: int | None, word: str) -> str:
    return f"{DASH} {word}s" if n is None else f"{n} {word}" + ("" if n == 1 else "s")


def write_csv(path: Path, rows: list[list[Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def slugify(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "stage"


# ---------------------------------------------------------------- per-setting results


def setting_finals(setting: dict[str, Any], runs: list[Run]) -> dict[str, dict | None]:
    """Final-epoch stats per metric over the finished seeds, from their metrics.csv."""
    rows = [r.rows[-1] for r in runs if r.status == "finished" and r.rows]
    if not rows:
        # run folders gone (copied state only): fall back on the study's own numbers
        return {m: (setting.get("final") or {}).get(m) for m in METRICS}
    return {m: stats([row[m] for row in rows if m in row]) for m in METRICS}


def status_text(runs: list[Run]) -> str:
    counts = Counter(r.status for r in runs)
    return ", ".join(f"{n} {status}" for status, n in counts.items()) or DASH


def curve_runs(runs: list[Run]) -> list[Run]:
    """Finished seeds when there are any (as in the table), else whatever has epochs so far."""
    finished = [r for r in runs if r.status == "finished" and r.rows]
    return finished or [r for r in runs if r.rows]


def mean_curve(runs: list[Run], metric: str) -> tuple[np.ndarray, ...]:
    """Epochs, mean, std and n across seeds, epoch by epoch (NaNs of a diverged run skipped)."""
    by_epoch: dict[int, list[float]] = {}
    for run in runs:
        for row in run.rows:
            if "epoch" in row and metric in row:
                by_epoch.setdefault(int(row["epoch"]), []).append(row[metric])
    points = [(e, stats(v)) for e, v in sorted(by_epoch.items())]
    points = [(e, s) for e, s in points if s is not None]
    epochs = np.array([e for e, _ in points], dtype=float)
    return (
        epochs,
        np.array([s["mean"] for _, s in points]),
        np.array([s["std"] for _, s in points]),
        np.array([s["n"] for _, s in points]),
    )


# ---------------------------------------------------------------- figures


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    fig.clear()  # free the Agg buffers now, not at garbage collection
    return path


def fig_class_proportions(proportions: list[float], path: Path) -> Path:
    p = np.asarray(proportions, dtype=float)
    fig = Figure(figsize=(10, 4), layout="tight")
    ax = fig.add_subplot()
    ax.bar(np.arange(len(p)), p, color="tab:blue", width=0.8)
    ax.axhline(p.mean(), color="red", linewidth=1.5, label=f"mean {p.mean():.3f}")
    ax.set(xlabel="class", ylabel="proportion of the train split", xlim=(-1, len(p)))
    ax.set_title("Figure 1: class proportions of the train split")
    ax.legend(loc="lower right")
    return save(fig, path)


def fig_stage(
    number: int, stage: dict[str, Any], curves: list[tuple[str, list[Run]]], path: Path
) -> Path:
    fig = Figure(figsize=(11, 7.5), layout="tight")
    axes = fig.subplots(2, 2, sharex=True)
    last = 1.0
    for ax, metric in zip(axes.flat, PANELS, strict=True):
        lows, highs = [], []
        for label, runs in curves:
            epochs, mean, std, n = mean_curve(runs, metric)
            if epochs.size == 0:
                continue
            last, lows, highs = max(last, epochs.max()), [*lows, mean.min()], [*highs, mean.max()]
            marker = "o" if epochs.size <= 20 else None  # a 1-2 epoch smoke run is a dot
            (line,) = ax.plot(epochs, mean, marker=marker, markersize=3, label=label)
            if (n > 1).any():
                ax.fill_between(epochs, mean - std, mean + std, where=n > 1,
                                color=line.get_color(), alpha=0.2, linewidth=0)  # fmt: skip
        # a diverging setting (loss 1e4) would flatten the others into one line
        if metric.endswith("loss") and lows and min(lows) > 0 and max(highs) > 100 * min(lows):
            ax.set_yscale("log")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set(xlabel="epoch", xlim=(0, last + 1))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0, 0].legend(title=stage.get("field") or None)
    band = " (band: ±1 std across seeds)" if any(len(r) > 1 for _, r in curves) else ""
    fig.suptitle(f"Figure {number}: {stage.get('name', 'stage')}{band}")
    return save(fig, path)


def fig_cosine_lr(run: Run, path: Path) -> Path:
    epochs = np.array([row["epoch"] for row in run.rows])
    lrs = np.array([row["lr"] for row in run.rows])
    fig = Figure(figsize=(7, 4), layout="tight")
    ax = fig.add_subplot()
    ax.plot(epochs, lrs, marker="o" if epochs.size <= 30 else None, markersize=3,
            label=f"recorded (run {run.run_hash})")  # fmt: skip
    # eq. (2) beside the record: a visible check that the schedule is the report's
    lr_max, total = run.config.get("lr"), run.config.get("epochs")
    if lr_max and total and not run.config.get("warmup_epochs"):
        t = np.linspace(0, total - 1, 200)
        ax.plot(t + 1, 0.5 * lr_max * (1 + np.cos(np.pi * t / total)), "--", color="grey",
                linewidth=1, label="eq. (2), η_min = 0")  # fmt: skip
    ax.set(xlabel="epoch", ylabel="learning rate", xlim=(0, epochs.max() + 1), ylim=(0, None))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Figure 3: learning rate under cosine annealing")
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)


def beta_pdf(x: np.ndarray, a: float, b: float) -> np.ndarray:
    log_norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    return np.exp(log_norm + (a - 1) * np.log(x) + (b - 1) * np.log1p(-x))


def fig_beta(alpha: float, path: Path) -> Path:
    # fixed seed: the figure is the same each time the report is written
    draws = np.random.default_rng(0).beta(alpha, alpha, size=BETA_DRAWS)
    fig = Figure(figsize=(7, 4), layout="tight")
    ax = fig.add_subplot()
    heights, _, _ = ax.hist(draws, bins=50, range=(0, 1), density=True, color="tab:blue",
                            alpha=0.35, label=f"{BETA_DRAWS:,} draws (numpy)")  # fmt: skip
    x = np.linspace(1e-4, 1 - 1e-4, 2000)
    ax.plot(x, beta_pdf(x, alpha, alpha), color="tab:red", label="density")
    ax.set(xlabel="λ", ylabel="density", xlim=(0, 1), ylim=(0, 1.1 * max(heights.max(), 2.0)))
    ax.set_title(f"Figure 6: Beta({alpha:g}, {alpha:g})")
    ax.legend(loc="upper center")
    return save(fig, path)


# ---------------------------------------------------------------- sections


def title_blocks(state: dict[str, Any], runs: dict[Path, Run]) -> list[Block]:
    stages = state["stages"]
    settings = sum(len(s.get("settings", [])) for s in stages)
    seeds = state.get("seeds") or []
    entries = sum(len(st.get("runs", [])) for s in stages for st in s.get("settings", []))
    budget = state.get("budget", "full")
    blocks: list[Block] = [Heading(f"{state.get('name', 'study')} (budget {budget})", 1)]
    finished = state.get("status") == "finished"
    if not finished:
        blocks.append(
            Para(
                f"**This study is not finished** (status: {state.get('status')}): "
                "tables and figures show the runs done so far.",
                note=True,
            )
        )
    so_far = "" if finished else " so far"
    selection = state.get("selection", "val_acc")
    blocks.append(Para(
        f"{len(stages)} stages{so_far}, one hyperparameter at a time, each keeping the winner "
        f"of the one before: {settings} settings × {len(seeds)} seed(s) {seeds} = {entries} "
        f"runs, {len(runs)} distinct ({entries - len(runs)} reused, not trained again). The "
        f"winner of a stage has the highest mean `{selection}` at the final epoch, on the "
        "validation split."
    ))  # fmt: skip
    if budget != "full":
        blocks.append(
            Para(
                f"Budget `{budget}` shortens runs and data: the published values in "
                "brackets are from the full study, a reference rather than a target."
            )
        )
    return blocks


def data_blocks(state: dict[str, Any], runs: dict[Path, Run], figures: Path) -> list[Block]:
    d = state.get("data") or {}
    # budgets train on subsets of the split: say how many images the runs really saw
    limits = sorted({(r.config.get("limit_train"), r.config.get("limit_val"))
                     for r in runs.values() if r.config})  # fmt: skip
    used = "; ".join(f"{cell(t, '{:,}'.format)} / {cell(v, '{:,}'.format)}" for t, v in limits
                     if (t, v) != (None, None))  # fmt: skip

    def vec(key: str) -> str:
        return ", ".join(f"{v:.4f}" for v in d[key]) if d.get(key) else DASH

    sizes = " / ".join(
        cell(d.get(k), "{:,}".format) for k in ("train_size", "val_size", "test_size")
    )
    sha = cell(d.get("val_indices_sha256"), "`{}`".format)
    blocks: list[Block] = [
        Heading("Data"),
        Table(["", "value"], [["train / val / test images", sizes], ["mean (R, G, B)", vec("mean")],
                              ["std (R, G, B)", vec("std")], ["val indices sha256", sha]]),
    ]  # fmt: skip
    if used:
        blocks[1].rows.insert(1, ["train / val images used by the runs (budget)", used])
    path = figures / "fig1_class_proportions.png"
    if d.get("class_proportions"):
        p = d["class_proportions"]
        fig_class_proportions(p, path)
        blocks.append(
            Image(
                path,
                f"Figure 1: proportion of each class in the train split; red "
                f"line: the mean proportion {np.mean(p):.3f}.",
            )
        )
    else:
        path.unlink(missing_ok=True)  # no stale figure from an earlier study state
        blocks.append(Para("Figure 1 skipped: the state has no class proportions."))
    return blocks


def stage_blocks(
    k: int, stage: dict[str, Any], number: int, runs: dict[Path, Run], study_dir: Path
) -> list[Block]:
    name, slug = stage.get("name", f"stage {k}"), slugify(stage.get("name", f"stage {k}"))
    settings, winner = stage.get("settings", []), stage.get("winner")
    header = ["setting", "seeds", "status", *(f"{METRIC_TITLES[m]} (published)" for m in METRICS)]
    csv_header = ["setting", "n", *(f"{m}_{s}" for m in METRICS for s in ("mean", "std")),
                  *(f"published_{m}" for m in METRICS), "winner"]  # fmt: skip
    md_rows, csv_rows, curves = [], [], []
    for i, setting in enumerate(settings):
        label = str(setting.get("label", setting.get("value")))
        setting_runs = [runs[run_path(study_dir, r)] for r in setting.get("runs", [])]
        finals, published = setting_finals(setting, setting_runs), setting.get("published") or {}
        n = max((s["n"] for s in finals.values() if s), default=0)
        cells = []
        for m in METRICS:
            pub = published.get(m)
            cells.append(fmt_stat(finals[m]) + (f" ({sig3(pub)})" if pub is not None else ""))
        row = [label, f"{n}/{len(setting_runs)}", status_text(setting_runs), *cells]
        if i == winner:
            row = [f"**{c}**" for c in row]
        md_rows.append(row)
        means_stds = [num(finals[m] and finals[m][s]) for m in METRICS for s in ("mean", "std")]
        pubs = [num(published.get(m)) for m in METRICS]
        csv_rows.append([label, n, *means_stds, *pubs, int(i == winner)])
        curves.append((label + (" (winner)" if i == winner else ""), curve_runs(setting_runs)))
    write_csv(study_dir / "tables" / f"stage{k}_{slug}.csv", [csv_header, *csv_rows])

    blocks: list[Block] = [
        Heading(f"Stage {k}: {name}"),
        Para(
            f"Varies `{stage.get('field')}` for {plural(stage.get('epochs'), 'epoch')}. "
            "Final-epoch values, mean ± sample std over the finished seeds, published value in "
            "brackets; the winner in bold."
        ),
        Table(header, md_rows),
    ]
    won = settings[winner].get("label") if winner is not None and winner < len(settings) else None
    pub_won = stage.get("published_winner")
    agree = ""
    if pub_won is not None and won is not None:
        agree = " (as published)" if str(won) == str(pub_won) else f" (published: **{pub_won}**)"
    parts = [f"Winner: **{won if won is not None else 'none yet'}**{agree}."]
    if stage.get("margin") is not None:
        spread = stage.get("spread")
        parts.append(
            f"Margin over the runner-up: {sig3(stage['margin'])} val acc; seed spread "
            f"(largest std): {sig3(spread) if spread is not None else DASH}."
        )
    if stage.get("verdict"):
        parts.append(stage["verdict"])
    blocks.append(Para(" ".join(parts)))
    path = study_dir / "figures" / f"fig{number}_{slug}.png"
    if any(r for _, r in curves):
        fig_stage(number, stage, curves, path)
        blocks.append(
            Image(
                path,
                f"Figure {number}: {name}: train and validation loss and "
                "accuracy per epoch, one line per setting.",
            )
        )
    else:
        path.unlink(missing_ok=True)
        blocks.append(Para(f"Figure {number} skipped: no epoch of this stage has finished yet."))
    return blocks


def cosine_blocks(state: dict[str, Any], runs: dict[Path, Run], study_dir: Path) -> list[Block]:
    path = study_dir / "figures" / "fig3_cosine_lr.png"
    for stage in state["stages"]:
        if stage.get("field") != "schedule":
            continue
        for setting in stage.get("settings", []):
            if "cosine" not in (setting.get("value"), setting.get("label")):
                continue
            found = [runs[run_path(study_dir, r)] for r in setting.get("runs", [])]
            found = [r for r in found if r.rows and all("lr" in row for row in r.rows)]
            if found:
                fig_cosine_lr(found[0], path)
                return [
                    Image(
                        path,
                        f"Figure 3: learning rate per epoch as recorded in "
                        f"`{found[0].run_dir.name}/metrics.csv` under cosine "
                        "annealing, beside eq. (2).",
                    )
                ]
    path.unlink(missing_ok=True)  # no stale figure from an earlier study state
    return [Para("Figure 3 skipped: no cosine-schedule run has recorded an epoch.")]


def beta_blocks(state: dict[str, Any], study_dir: Path) -> list[Block]:
    alphas = [
        float(s.get("value") or 0)
        for st in state["stages"]
        if st.get("field") == "mixup_alpha"
        for s in st.get("settings", [])
    ]
    alpha = max(alphas, default=0.0) or DEFAULT_MIXUP_ALPHA
    path = fig_beta(alpha, study_dir / "figures" / "fig6_beta_density.png")
    return [
        Image(
            path,
            f"Figure 6: the Beta({alpha:g}, {alpha:g}) density that mixup draws "
            "λ from, with a histogram of draws; the area between a and b is "
            "P(a < λ < b).",
        )
    ]


def final_blocks(state: dict[str, Any], runs: dict[Path, Run], study_dir: Path) -> list[Block]:
    final = state.get("final")
    blocks: list[Block] = [Heading("Final test result")]
    csv_rows: list[list[Any]] = [FINAL_CSV_HEADER]
    if final is None:
        blocks.append(Para("The test result is **pending**: the study has not reached its final "
                           "evaluation, and the test split has not been touched."))  # fmt: skip
        write_csv(study_dir / "tables" / "final.csv", csv_rows)
        return blocks

    published = final.get("published_test_top1", PUBLISHED_TEST_TOP1)
    tests = [(entry, entry.get("test") or {}) for entry in final.get("runs", [])]
    measured = {k: stats([t[k] for _, t in tests if t.get(k) is not None])
                or final.get(f"test_{k}") for k in ("top1", "top5", "loss")}  # fmt: skip
    blocks.append(Table(["metric", "measured", "published"], [
        ["test top-1", f"**{fmt_stat(measured['top1'])}**", cell(published)],
        ["test top-5", fmt_stat(measured["top5"]), DASH],
        ["test loss (mean cross-entropy per image)", fmt_stat(measured["loss"]),
         "0.0019 (not a mean cross-entropy; not comparable)"],
    ]))  # fmt: skip
    cfg = final.get("config") or {}
    shown = ", ".join(f"`{k}={cfg[k]}`" for k in FINAL_CONFIG_SHOWN if k in cfg)
    blocks.append(Para(f"Final configuration: {shown or DASH}."))

    rows, evaluations = [], []
    for entry, t in tests:
        run = runs.get(run_path(study_dir, entry))
        # train.evaluate logs every test evaluation in summary.json: the honesty check
        count = len(run.summary.get("test_evaluations") or []) if run and run.summary else None
        evaluations.append(count or 0)
        seed, run_hash = entry.get("seed"), entry.get("run_hash")
        scores = [cell(t.get(k)) for k in ("top1", "top5", "loss")]
        rows.append([f"`{run_hash}`", str(seed), *scores, cell(count, str)])
        csv_rows.append([run_hash, seed, *(num(t.get(k)) for k in ("loss", "top1", "top5")),
                         num(published)])  # fmt: skip
    blocks.append(Table(["run", "seed", "test top-1", "test top-5", "test loss",
                         "test evaluations"], rows))  # fmt: skip
    touched = "The test split was evaluated once, on the final configuration only."
    if max(evaluations, default=0) > 1:
        touched = (f"Note: the test split was evaluated up to {max(evaluations)} times on a "
                   "final run (summary.json `test_evaluations`).")  # fmt: skip
    blocks.append(
        Para(
            "Selection used the validation split only, carved out of the official "
            f"training set; the test split played no part in it. {touched}"
        )
    )
    write_csv(study_dir / "tables" / "final.csv", csv_rows)
    return blocks + superclass_blocks([t for _, t in tests])


def superclass_blocks(tests: list[dict[str, Any]]) -> list[Block]:
    per_run = [t.get("superclass_top1") or {} for t in tests]
    names = list(per_run[0]) if per_run else []
    if not names:
        return []
    rows = []
    for name in names:
        values = [acc[name] for acc in per_run if name in acc]
        rows.append([name.replace("_", " "), fmt_stat(stats(values))])
    return [Para("Test top-1 per superclass (coarse label):"), Table(["superclass", "top-1"], rows)]


def environment_blocks(state: dict[str, Any], runs: dict[Path, Run]) -> list[Block]:
    env = dict(state.get("environment") or {})
    precisions = {str(r.summary["precision"]) for r in runs.values() if r.summary.get("precision")}
    env.setdefault("precision", ", ".join(sorted(precisions)) or DASH)
    rows, errors = [], []
    for run in runs.values():
        ips = stats([row["images_per_s"] for row in run.rows if "images_per_s" in row])
        macs = run.summary.get("macs_per_image")
        rows.append([
            f"`{run.run_hash}`", "; ".join(run.stages), str(run.seed), run.status,
            str(run.summary.get("epochs_done", len(run.rows))),
            fmt_seconds(run.summary.get("train_seconds")),
            f"{ips['mean']:,.0f}" if ips else DASH,
            cell(run.summary.get("parameters"), "{:,}".format),
            cell(macs and macs / 1e6, "{:.1f} M".format),
        ])  # fmt: skip
        if run.error:
            errors.append(f"`{run.run_hash}` (seed {run.seed}) {run.status}: {run.error}")
    return [
        Heading("Environment"),
        Table(["", "value"], [[k, str(v)] for k, v in env.items()]),
        Heading("Runs", 3),
        Table(RUN_TABLE_HEADER, rows),
        *(Para(e) for e in errors),
    ]


# ---------------------------------------------------------------- rendering


def md_inline_to_html(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"(?<![\w*])\*([^*]+)\*(?![\w*])", r"<em>\1</em>", text)


def render_md(blocks: list[Block], study_dir: Path) -> str:
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Para):
            out.append(f"> {b.text}" if b.note else b.text)
        elif isinstance(b, Table):
            rows = [b.header, ["---"] * len(b.header), *b.rows]
            out.append(
                "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows)
            )
        else:
            alt = b.caption.split(":")[0]  # "Figure N"; the caption follows in italics
            out.append(f"![{alt}]({b.path.relative_to(study_dir).as_posix()})\n\n*{b.caption}*")
    return "\n\n".join(out) + "\n"


CSS = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;
color:#222;line-height:1.45}table{border-collapse:collapse;margin:1rem 0}
th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}th{background:#f3f3f3}
img{max-width:100%}figure{margin:1rem 0}figcaption{font-style:italic;color:#555}
.note{background:#fff4d6;border-left:4px solid #e0a800;padding:.5rem 1rem}
code{background:#f3f3f3;padding:0 .2rem}"""


def render_html(blocks: list[Block], title: str) -> str:
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{md_inline_to_html(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            cls = ' class="note"' if b.note else ""
            out.append(f"<p{cls}>{md_inline_to_html(b.text)}</p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{md_inline_to_html(c)}</th>" for c in b.header)
            body = "".join(
                "<tr>" + "".join(f"<td>{md_inline_to_html(c)}</td>" for c in r) + "</tr>"
                for r in b.rows
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        else:
            data = base64.b64encode(b.path.read_bytes()).decode()
            alt = html.escape(b.caption)
            out.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">'
                f"<figcaption>{md_inline_to_html(b.caption)}</figcaption></figure>"
            )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(out)
        + "\n</body></html>\n"
    )


# ---------------------------------------------------------------- entry point


def write_report(study_dir: str | Path) -> Path:
    """Write tables/, figures/, report.md and report.html into a study folder; returns report.md."""
    study_dir = Path(study_dir)
    state = read_state(study_dir)
    stages = state["stages"]

    # one Run per run folder: a reused run appears in several stages but is read once
    runs: dict[Path, Run] = {}
    for stage in stages:
        for setting in stage.get("settings", []):
            for entry in setting.get("runs", []):
                run = load_run(study_dir, entry)
                run = runs.setdefault(run.run_dir, run)
                label = setting.get("label", setting.get("value"))
                run.stages.append(f"{stage.get('name')}: {label}")
    (study_dir / "tables").mkdir(parents=True, exist_ok=True)
    (study_dir / "figures").mkdir(parents=True, exist_ok=True)

    blocks = title_blocks(state, runs) + data_blocks(state, runs, study_dir / "figures")
    given = [s["figure"] for s in stages if isinstance(s.get("figure"), int)]
    spare = max([7, *given]) + 1  # stages the report never had get numbers after its Figure 7
    has_schedule = has_mixup = False
    for k, stage in enumerate(stages, start=1):
        number = stage.get("figure")
        if not isinstance(number, int):
            number, spare = spare, spare + 1
        section = stage_blocks(k, stage, number, runs, study_dir)
        # Figures 3 and 6 open the stage they explain, before its table, as in the report
        if stage.get("field") == "schedule" and not has_schedule:
            section[2:2] = cosine_blocks(state, runs, study_dir)
            has_schedule = True
        if stage.get("field") == "mixup_alpha" and not has_mixup:
            section[2:2] = beta_blocks(state, study_dir)
            has_mixup = True
        blocks += section
    if not has_schedule:
        blocks += [Heading("Learning-rate schedule"), *cosine_blocks(state, runs, study_dir)]
    if not has_mixup:
        blocks += [Heading("Mixup"), *beta_blocks(state, study_dir)]
    blocks += final_blocks(state, runs, study_dir) + environment_blocks(state, runs)

    md_path = study_dir / "report.md"
    md_path.write_text(render_md(blocks, study_dir), encoding="utf-8")
    title = f"{state.get('name', 'study')}: hpstudy report"
    (study_dir / "report.html").write_text(render_html(blocks, title), encoding="utf-8")
    return md_path
