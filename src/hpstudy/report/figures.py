"""The report's figures as matplotlib Figures: class proportions, stage curves, lr, Beta density,
Optuna's own plots of a search stage, and each stage's differences to its winner with
their intervals.

Each function takes the figure's number (its title says "Figure N") and plain
data, and returns an unsaved Figure; `save` writes one as a PNG. The
object-oriented API (no pyplot) always renders with Agg and leaves the
process's backend alone: safe headless and inside a user's notebook.

One house style: every figure is made (and saved) inside `house_style()`, matplotlib's
defaults plus a few settings, so neither a user's rc state nor a style another library
set (Optuna draws in ggplot) leaks in. Every figure uses the constrained layout engine
and keeps its legend outside the axes, so no text is clipped and no legend hides data;
each line of a figure has its own colour, marker and line style, so none hides another.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import textwrap
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import matplotlib as mpl
import matplotlib.style
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy.stats import beta as beta_distribution

from hpstudy.files import write_atomic
from hpstudy.study.analysis import Curve as CurveData

PANELS = ("train_loss", "val_loss", "train_acc", "val_acc")  # the report's 2x2 order
DPI = 110
BETA_DRAWS = 100_000
LOG_SPAN = 10.0  # a panel whose positive values span more than this factor is drawn in log
TITLE_WIDTH = 70  # characters of a title line before it wraps (a 7-inch figure holds ~80)
LABEL_WIDTH = 38  # characters of a legend or tick label line before it wraps
HOUSE = {
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.titlesize": "medium",
    "figure.titlesize": "large",
    "legend.fontsize": "small",
    "legend.frameon": False,
}
COLOURS = mpl.colormaps["tab10"].colors
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h", "p")
LINESTYLES = ("-", "--", "-.", ":")

P = ParamSpec("P")
R = TypeVar("R")

# one line of a stage figure: its label, the analysis' per-epoch mean, std and n, and the
# published final values by metric (empty where the paper printed none)
Curve = tuple[str, CurveData, dict[str, float | None]]


@contextlib.contextmanager
def house_style() -> Iterator[None]:
    """matplotlib's defaults and the house settings, for this block only."""
    with matplotlib.style.context("default"), mpl.rc_context(HOUSE):
        yield


def styled(make: Callable[P, R]) -> Callable[P, R]:
    """A figure function made inside the house style."""

    @functools.wraps(make)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with house_style():
            return make(*args, **kwargs)

    return wrapper


def wrap(text: str, width: int = TITLE_WIDTH) -> str:
    return "\n".join(textwrap.wrap(text, width, break_long_words=False)) or text


def look(i: int) -> dict[str, Any]:
    """The i-th line's colour, marker and line style: no two of the first 12 alike."""
    return {"color": COLOURS[i % len(COLOURS)], "marker": MARKERS[i % len(MARKERS)],
            "linestyle": LINESTYLES[i % len(LINESTYLES)]}  # fmt: skip


def spans(values: list[float]) -> bool:
    """Positive values that span more than LOG_SPAN: a linear axis would flatten the small."""
    finite = [v for v in values if math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) > LOG_SPAN * min(finite)


def save(fig: Figure, path: Path) -> Path:
    """`fig` as a PNG at `path`, written atomically."""
    buf = io.BytesIO()
    with house_style():
        fig.savefig(buf, format="png", dpi=DPI)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buf.getvalue())
    fig.clear()  # free the Agg buffers now, not at garbage collection
    return path


@styled
def class_proportions(
    number: int, proportions: list[float], what: str = "the train split"
) -> Figure:
    """Each class's share of `what` (the train split, or the images the runs trained on)."""
    p = np.asarray(proportions, dtype=float)
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(np.arange(len(p)), p, color=COLOURS[0], width=0.8)
    ax.axhline(p.mean(), color=COLOURS[3], linewidth=1.5, label=f"mean {p.mean():.3f}")
    ax.set(xlabel="class", ylabel="proportion of the images", xlim=(-1, len(p)))
    ax.grid(axis="x", visible=False)
    ax.set_title(wrap(f"Figure {number}: class proportions of {what}", 110))
    fig.legend(loc="outside right upper")
    return fig


@styled
def stage_curves(
    number: int,
    name: str,
    field: str,
    curves: list[Curve],
    chance: float | None = None,
    published_epoch: int | None = None,
) -> Figure:
    """train/val loss and accuracy per epoch, one line per setting, a ±1 std band over seeds;
    a setting's published final values as a star of its colour at `published_epoch`; the
    accuracy of chance as a dotted line; a loss panel spanning over 10x in log scale."""
    fig = Figure(figsize=(12, 7.5), layout="constrained")
    axes = fig.subplots(2, 2, sharex=True)
    last = 1.0
    starred = False
    for ax, metric in zip(axes.flat, PANELS, strict=True):
        shown: list[float] = []
        for i, (label, curve, published) in enumerate(curves):
            points = curve.metrics[metric]
            epochs = np.array(points.epochs, dtype=float)
            mean, std, n = np.array(points.mean), np.array(points.std), np.array(points.n)
            if epochs.size == 0:
                continue
            last, shown = max(last, epochs.max()), [*shown, *mean.tolist()]
            every = max(1, epochs.size // 15)  # markers on a long curve: 15 or so, not 300
            ax.plot(epochs, mean, markersize=5, markevery=every, label=label,
                    alpha=0.9, **look(i))  # fmt: skip
            if (n > 1).any():
                ax.fill_between(epochs, mean - std, mean + std, where=n > 1,
                                color=look(i)["color"], alpha=0.15, linewidth=0)  # fmt: skip
            value = published.get(metric)
            if value is not None and published_epoch is not None:
                ax.plot([published_epoch], [value], linestyle="none", marker="*", markersize=13,
                        markeredgecolor="black", color=look(i)["color"],
                        label=None if starred else "published (its own epochs)")  # fmt: skip
                starred, shown = True, [*shown, value]
        if metric.endswith("acc") and chance is not None:
            ax.axhline(chance, color="grey", linestyle=":", linewidth=1.2,
                       label="chance" if metric == "val_acc" else None)  # fmt: skip
        # a diverging setting (a loss of 387 beside 4) would flatten the others into one line
        if metric.endswith("loss") and spans(shown):
            ax.set_yscale("log")
        ax.set_title(metric + (" (log scale)" if ax.get_yscale() == "log" else ""))
    right = max(last, published_epoch or 0)
    for ax in axes[1]:
        ax.set(xlabel="epoch", xlim=(0, right + 1))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = [], []
    for ax in axes.flat:  # each label once, in the order drawn (chance and published last)
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, [wrap(lab, LABEL_WIDTH) for lab in labels], loc="outside right upper",
               title=wrap(field, LABEL_WIDTH) or None)  # fmt: skip
    band = " (band: ±1 std across seeds)" if any(c.seeds > 1 for _, c, _ in curves) else ""
    fig.suptitle(wrap(f"Figure {number}: {name}{band}", 100))
    return fig


@styled
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
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(x, lr, markersize=4, markevery=max(1, x.size // 15),
            label=f"recorded (run {run_hash})", **look(0))  # fmt: skip
    # eq. (2) beside the record: a visible check that the schedule is the report's
    if lr_max and run_epochs and not warmup_epochs:
        t = np.linspace(0, run_epochs - 1, 200)
        ax.plot(t + 1, 0.5 * lr_max * (1 + np.cos(np.pi * t / run_epochs)), "--", color="grey",
                linewidth=1, label="eq. (2), η_min = 0")  # fmt: skip
    ax.set(xlabel="epoch", ylabel="learning rate", xlim=(0, x.max() + 1), ylim=(0, None))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(wrap(f"Figure {number}: learning rate under cosine annealing"))
    fig.legend(loc="outside right upper")
    return fig


@styled
def beta_density(number: int, alpha: float) -> Figure:
    """The Beta(α, α) density mixup draws λ from (scipy), over a histogram of draws."""
    # fixed seed: the figure is the same each time the report is written
    draws = np.random.default_rng(0).beta(alpha, alpha, size=BETA_DRAWS)
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.add_subplot()
    heights, _, _ = ax.hist(draws, bins=50, range=(0, 1), density=True, color=COLOURS[0],
                            alpha=0.35, label=f"{BETA_DRAWS:,} draws (numpy)")  # fmt: skip
    x = np.linspace(1e-4, 1 - 1e-4, 2000)
    ax.plot(x, beta_distribution.pdf(x, alpha, alpha), color=COLOURS[3], label="density (scipy)")
    ax.set(xlabel="λ", ylabel="density", xlim=(0, 1), ylim=(0, 1.1 * max(heights.max(), 2.0)))
    ax.set_title(wrap(f"Figure {number}: Beta({alpha:g}, {alpha:g})"))
    fig.legend(loc="outside right upper")
    return fig


# Optuna's matplotlib plots of a search stage: (function, title, complete trials it needs)
OPTUNA_PLOTS = {
    "history": ("plot_optimization_history", "optimisation history", 1),
    "parallel": ("plot_parallel_coordinate", "parallel coordinates of the trials", 1),
    "importances": ("plot_param_importances", "parameter importances", 2),
}
# below this many complete trials, importances say little (a caveat in the title, not a skip)
FEW_TRIALS = 20


class FigureSkipped(Exception):
    """Why a figure cannot be drawn (said in the report instead of the figure)."""


def complete_trials(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def optuna_title(number: int, what: str, name: str, complete: int) -> str:
    title = OPTUNA_PLOTS[what][1]
    if what == "importances":
        title += f" from {complete} trial" + ("" if complete == 1 else "s")
        if complete < FEW_TRIALS:
            title += " (few: a rough guide, not a ranking)"
    return wrap(f"Figure {number}: {name}: {title}")


def optuna_plot(number: int, what: str, study: Any, name: str) -> Figure:
    """Optuna's matplotlib-backend plot `what` of `study`, restyled to the house style;
    FigureSkipped when it cannot."""
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_matplotlib

    function, _, needed = OPTUNA_PLOTS[what]
    complete = complete_trials(study)
    if complete < needed:
        raise FigureSkipped(f"it needs {needed} complete trial(s), the stage has {complete}")
    # Optuna calls plt.style.use("ggplot"): inside this block, so the style does not outlive it
    with house_style():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna's experimental-API warnings
                ax = getattr(optuna_matplotlib, function)(study)
        except Exception as err:  # Optuna refuses some histories (e.g. no varying parameter)
            raise FigureSkipped(
                f"Optuna could not draw it ({type(err).__name__}: {err})"
            ) from None
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        plt.close(fig)  # Optuna draws through pyplot: keep the figure out of its registry
        restyle(fig)
        fig.set_size_inches(10, 5.5)
        # the tight engine, run at each draw: the constrained one fails on Optuna's own
        # colour bar and twin axes (parallel coordinates)
        fig.set_layout_engine("tight")
        fig.suptitle(optuna_title(number, what, name, complete))
    return fig


def restyle(fig: Figure) -> None:
    """Optuna's ggplot look (grey panels, white grid) in the house style; its axes titles
    dropped (the figure's own title says what it is) and its legends moved outside."""
    fig.set_facecolor("white")
    # Optuna colours trials on "Blues", whose low end is white: on a white panel the worst
    # trial's line would vanish; viridis has no white end
    for mappable in fig.findobj(lambda a: isinstance(a, ScalarMappable)):
        if mappable.get_cmap().name.startswith("Blues"):
            mappable.set_cmap("viridis")
    for ax in fig.axes:
        ax.set_facecolor("white")
        ax.grid(True, color="#b0b0b0", alpha=0.3)
        for loc in ("left", "center", "right"):
            ax.set_title("", loc=loc)
        for spine in ax.spines.values():
            spine.set_visible(True)
            spine.set_color("black")
        ax.tick_params(colors="black")
        ax.xaxis.label.set_color("black")
        ax.yaxis.label.set_color("black")
        legend = ax.get_legend()
        if legend is not None:  # beside the axes, not over the trials' points
            handles, labels = ax.get_legend_handles_labels()
            legend.remove()
            ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0))


# one row of a differences figure: setting, winner minus setting, its 95 % interval
DifferenceRow = tuple[str, float, tuple[float, float]]


@styled
def stage_differences(
    number: int | str, name: str, winner: str, metric: str, rows: list[DifferenceRow]
) -> Figure:
    """Winner minus each other setting in `metric`, a dot with its 95 % interval as a bar;
    an interval that crosses the zero line means the two are not distinguishable."""
    labels = [wrap(label, LABEL_WIDTH) for label, _, _ in rows]
    lines = sum(label.count("\n") + 1 for label in labels)
    fig = Figure(figsize=(9, 2.2 + 0.35 * lines + len(rows) / 5), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    diff = np.array([d for _, d, _ in rows])
    lo = np.array([ci[0] for _, _, ci in rows])
    hi = np.array([ci[1] for _, _, ci in rows])
    clear = (lo > 0) | (hi < 0)
    kinds = ((clear, COLOURS[0], "o", "interval excludes 0"),
             (~clear, COLOURS[1], "s", "interval contains 0"))  # fmt: skip
    for keep, colour, marker, label in kinds:
        if keep.any():
            ax.errorbar(diff[keep], y[keep], xerr=[diff[keep] - lo[keep], hi[keep] - diff[keep]],
                        fmt=marker, color=colour, capsize=4, label=label)  # fmt: skip
    ax.axvline(0, color="grey", linewidth=1)
    ax.set_yticks(y, labels)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel(wrap(f"{winner} minus setting, {metric} (95 % interval)"))
    ax.set_title(wrap(f"Figure {number}: {name}: the winner ({winner}) against each setting"))
    fig.legend(loc="outside lower center", ncols=2)
    return fig
