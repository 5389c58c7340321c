"""The report's figures as matplotlib Figures: class proportions, stage curves, lr, Beta density,
Optuna's own plots of a search stage, and each stage's differences to its winner with
their intervals.

Each function takes the figure's number (its title says "Figure N") and plain
data, and returns an unsaved Figure; `save` writes one as a PNG. The
object-oriented API (no pyplot) always renders with Agg and leaves the
process's backend alone: safe headless and inside a user's notebook.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy.stats import beta as beta_distribution

from hpstudy.files import write_atomic
from hpstudy.study.analysis import Curve as CurveData

PANELS = ("train_loss", "val_loss", "train_acc", "val_acc")  # the report's 2x2 order
DPI = 110
BETA_DRAWS = 100_000

# one line of a stage figure: its label and the analysis' per-epoch mean, std and n
Curve = tuple[str, CurveData]


def save(fig: Figure, path: Path) -> Path:
    """`fig` as a PNG at `path`, written atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buf.getvalue())
    fig.clear()  # free the Agg buffers now, not at garbage collection
    return path


def class_proportions(number: int, proportions: list[float]) -> Figure:
    p = np.asarray(proportions, dtype=float)
    fig = Figure(figsize=(10, 4), layout="tight")
    ax = fig.add_subplot()
    ax.bar(np.arange(len(p)), p, color="tab:blue", width=0.8)
    ax.axhline(p.mean(), color="red", linewidth=1.5, label=f"mean {p.mean():.3f}")
    ax.set(xlabel="class", ylabel="proportion of the train split", xlim=(-1, len(p)))
    ax.set_title(f"Figure {number}: class proportions of the train split")
    ax.legend(loc="lower right")
    return fig


def stage_curves(number: int, name: str, field: str, curves: list[Curve]) -> Figure:
    """train/val loss and accuracy per epoch, one line per setting, a ±1 std band over seeds."""
    fig = Figure(figsize=(11, 7.5), layout="tight")
    axes = fig.subplots(2, 2, sharex=True)
    last = 1.0
    for ax, metric in zip(axes.flat, PANELS, strict=True):
        lows, highs = [], []
        for label, curve in curves:
            points = curve.metrics[metric]
            epochs = np.array(points.epochs, dtype=float)
            mean, std, n = np.array(points.mean), np.array(points.std), np.array(points.n)
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
    axes[0, 0].legend(title=field or None)
    band = " (band: ±1 std across seeds)" if any(c.seeds > 1 for _, c in curves) else ""
    fig.suptitle(f"Figure {number}: {name}{band}")
    return fig


def lr_schedule(
    number: int,
    epochs: list[float],
    lrs: list[float],
    run_hash: str,
    lr_max: float | None = None,
    run_epochs: int | None = None,
    warmup_epochs: int = 0,
) -> Figure:
    """The learning rate a cosine run recorded per epoch, beside eq. (2) when it applies."""
    x = np.array(epochs, dtype=float)
    lr = np.array(lrs, dtype=float)
    fig = Figure(figsize=(7, 4), layout="tight")
    ax = fig.add_subplot()
    ax.plot(x, lr, marker="o" if x.size <= 30 else None, markersize=3,
            label=f"recorded (run {run_hash})")  # fmt: skip
    # eq. (2) beside the record: a visible check that the schedule is the report's
    if lr_max and run_epochs and not warmup_epochs:
        t = np.linspace(0, run_epochs - 1, 200)
        ax.plot(t + 1, 0.5 * lr_max * (1 + np.cos(np.pi * t / run_epochs)), "--", color="grey",
                linewidth=1, label="eq. (2), η_min = 0")  # fmt: skip
    ax.set(xlabel="epoch", ylabel="learning rate", xlim=(0, x.max() + 1), ylim=(0, None))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Figure {number}: learning rate under cosine annealing")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def beta_density(number: int, alpha: float) -> Figure:
    """The Beta(α, α) density mixup draws λ from (scipy), over a histogram of draws."""
    # fixed seed: the figure is the same each time the report is written
    draws = np.random.default_rng(0).beta(alpha, alpha, size=BETA_DRAWS)
    fig = Figure(figsize=(7, 4), layout="tight")
    ax = fig.add_subplot()
    heights, _, _ = ax.hist(draws, bins=50, range=(0, 1), density=True, color="tab:blue",
                            alpha=0.35, label=f"{BETA_DRAWS:,} draws (numpy)")  # fmt: skip
    x = np.linspace(1e-4, 1 - 1e-4, 2000)
    ax.plot(x, beta_distribution.pdf(x, alpha, alpha), color="tab:red", label="density (scipy)")
    ax.set(xlabel="λ", ylabel="density", xlim=(0, 1), ylim=(0, 1.1 * max(heights.max(), 2.0)))
    ax.set_title(f"Figure {number}: Beta({alpha:g}, {alpha:g})")
    ax.legend(loc="upper center")
    return fig


# Optuna's matplotlib plots of a search stage: (function, title, complete trials it needs)
OPTUNA_PLOTS = {
    "history": ("plot_optimization_history", "optimisation history", 1),
    "parallel": ("plot_parallel_coordinate", "parallel coordinates of the trials", 1),
    "importances": ("plot_param_importances", "parameter importances", 2),
}


class FigureSkipped(Exception):
    """Why a figure cannot be drawn (said in the report instead of the figure)."""


def optuna_plot(number: int, what: str, study: Any, name: str) -> Figure:
    """Optuna's matplotlib-backend plot `what` of `study`; FigureSkipped when it cannot."""
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as optuna_matplotlib

    function, title, needed = OPTUNA_PLOTS[what]
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if complete < needed:
        raise FigureSkipped(f"it needs {needed} complete trial(s), the stage has {complete}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna's experimental-API warnings
            ax = getattr(optuna_matplotlib, function)(study)
    except Exception as err:  # Optuna refuses some histories (e.g. no varying parameter)
        raise FigureSkipped(f"Optuna could not draw it ({type(err).__name__}: {err})") from None
    fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
    plt.close(fig)  # Optuna draws through pyplot: keep the figure out of its registry
    fig.set_size_inches(9, 5.5)
    fig.suptitle(f"Figure {number}: {name}: {title}")
    fig.tight_layout()  # Optuna leaves long parameter names cut at the left edge
    return fig


# one row of a differences figure: setting, winner minus setting, its 95 % interval
DifferenceRow = tuple[str, float, tuple[float, float]]


def stage_differences(
    number: int | str, name: str, winner: str, metric: str, rows: list[DifferenceRow]
) -> Figure:
    """Winner minus each other setting in `metric`, a dot with its 95 % interval as a bar;
    an interval that crosses the zero line means the two are not distinguishable."""
    fig = Figure(figsize=(7, 1.4 + 0.5 * len(rows)), layout="tight")
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    diff = np.array([d for _, d, _ in rows])
    lo = np.array([ci[0] for _, _, ci in rows])
    hi = np.array([ci[1] for _, _, ci in rows])
    clear = (lo > 0) | (hi < 0)
    for keep, colour, label in ((clear, "tab:blue", "interval excludes 0"),
                                (~clear, "tab:orange", "interval contains 0")):  # fmt: skip
        if keep.any():
            ax.errorbar(diff[keep], y[keep], xerr=[diff[keep] - lo[keep], hi[keep] - diff[keep]],
                        fmt="o", color=colour, capsize=4, label=label)  # fmt: skip
    ax.axvline(0, color="grey", linewidth=1)
    ax.set_yticks(y, [label for label, _, _ in rows])
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set(xlabel=f"{winner} minus setting, {metric} (95 % interval)")
    ax.set_title(f"Figure {number}: {name}: the winner ({winner}) against each setting")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(loc="best", fontsize="small")
    return fig
