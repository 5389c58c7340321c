"""Statistics over seeds, the choice of a stage's winner and its verdict, on validation only.

The winner has the best mean of the selection metric over the finished seeds.
An exact tie is broken by the other validation metric, then by the order of the
study file, and is recorded as a tie: the report says so and how it was broken.
`judge` then compares the winner with every other usable setting on per-image
outcomes (`hpstudy.study.compare`) and words the verdict on those comparisons:
a stage is decided only when every 95 % interval of the difference excludes 0.
"""

from __future__ import annotations

import math

import numpy as np

from hpstudy.run import RunStatus
from hpstudy.study.compare import compare, excludes_zero
from hpstudy.study.state import Comparison, StageState, Stat

BETTER = {"val_acc": "highest", "val_loss": "lowest"}
# one setting's per-image validation outcomes by seed: right or wrong per image, and the
# per-image losses (None where the run keeps none); a seed absent keeps no predictions
SeedOutcomes = dict[int, tuple[np.ndarray, np.ndarray | None]]


def summarise(values: list[float]) -> Stat | None:
    """Mean, sample std (0 for one value) and n of the finite values; None when there are none."""
    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if finite.size == 0:
        return None
    std = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
    return Stat(mean=float(finite.mean()), std=std, n=int(finite.size))


def select(stage: StageState, selection: str) -> StageState:
    """The stage with winner, runner-up, margin, spread and tie filled in; its comparisons
    cleared (the winner may have changed) until `judge` makes them again."""
    other = "val_loss" if selection == "val_acc" else "val_acc"
    sign = 1 if selection == "val_acc" else -1  # larger `sign * value` is better

    def score(i: int, metric: str) -> float:
        final = stage.settings[i].final
        stat = final.get(metric) if final else None
        return stat.mean if stat is not None else math.nan

    usable = [i for i in range(len(stage.settings)) if math.isfinite(score(i, selection))]
    if not usable:
        return stage.model_copy(
            update={"winner": None, "runner_up": None, "margin": None, "spread": None,
                    "tie": False, "tie_break": None, "verdict": "no usable run",
                    "comparisons": [], "decided": False}
        )  # fmt: skip
    other_sign = 1 if other == "val_acc" else -1

    def key(i: int) -> tuple[float, float, int]:
        tie_breaker = score(i, other)
        return (
            -sign * score(i, selection),
            -other_sign * tie_breaker if math.isfinite(tie_breaker) else math.inf,
            i,
        )

    ranked = sorted(usable, key=key)
    winner = ranked[0]
    runner_up = ranked[1] if len(ranked) > 1 else None
    stds = [
        s.std
        for i in usable
        if (final := stage.settings[i].final) and (s := final[selection]) and s.n > 1
    ]
    spread = max(stds) if stds else None
    margin = tie = tie_break = None
    if runner_up is not None:
        margin = sign * (score(winner, selection) - score(runner_up, selection))
        tie = margin == 0
        if tie:
            same_other = score(winner, other) == score(runner_up, other)
            tie_break = (
                "the order of the study file" if same_other else f"the {BETTER[other]} mean {other}"
            )
    chosen = stage.model_copy(
        update={"winner": winner, "runner_up": runner_up, "margin": margin, "spread": spread,
                "tie": bool(tie), "tie_break": tie_break, "comparisons": [], "decided": False}
    )  # fmt: skip
    return chosen.model_copy(update={"verdict": verdict(chosen, selection)})


def judge(stage: StageState, outcomes: list[SeedOutcomes], selection: str) -> StageState:
    """The stage with `comparisons`, `decided` and a verdict built on them: the winner
    against every other setting with a finished run, paired on the seeds both finished.
    `outcomes[i]` are setting i's per-image outcomes by seed."""
    if stage.winner is None:
        return stage
    losses = selection == "val_loss"
    mine = outcomes[stage.winner]
    won = finished_seeds(stage, stage.winner)
    comparisons = []
    for i, setting in enumerate(stage.settings):
        if i == stage.winner or not (setting.final and setting.final.get(selection)):
            continue
        theirs = outcomes[i]
        seeds = [seed for seed in won if seed in finished_seeds(stage, i)]
        missing = sorted(
            seed for seed in seeds
            if seed not in mine or seed not in theirs
            or (losses and (mine[seed][1] is None or theirs[seed][1] is None))
        )  # fmt: skip
        if not seeds or missing:
            why = (
                "no seed finished for both settings" if not seeds else
                f"seed(s) {missing} keep no per-image validation outcomes (val_predictions.npy, "
                "val_losses.npy): trained before hpstudy kept them; delete those run folders "
                "and run the study again to retrain them"
            )  # fmt: skip
            comparisons.append(Comparison(setting=setting.label, difference=None, ci95=None,
                                          p_value=None, prob_better=None, test=f"none: {why}"))
            continue
        pick = 1 if losses else 0
        result = compare(
            [as_values(mine[seed][pick]) for seed in seeds],
            [as_values(theirs[seed][pick]) for seed in seeds],
            correctness=not losses,
            lower_is_better=losses,
        )
        comparisons.append(Comparison(
            setting=setting.label, difference=result.difference, ci95=list(result.ci95),
            p_value=result.p_value, prob_better=result.prob_better, test=result.test,
            seeds=result.seeds,
        ))  # fmt: skip
    decided = all(c.ci95 is not None and excludes_zero(c.ci95) for c in comparisons)
    judged = stage.model_copy(update={"comparisons": comparisons, "decided": decided})
    return judged.model_copy(update={"verdict": verdict(judged, selection)})


def finished_seeds(stage: StageState, i: int) -> list[int]:
    return [r.seed for r in stage.settings[i].runs if r.status == RunStatus.FINISHED]


def as_values(array: np.ndarray | None) -> np.ndarray:
    assert array is not None  # judge checked that every paired seed has it
    return np.asarray(array, dtype=np.float64)


def verdict(stage: StageState, selection: str) -> str:
    """What won and how sure that is, from the comparisons where there are any."""
    if stage.winner is None:
        return "no usable run"
    label = stage.settings[stage.winner].label
    usable = [s for s in stage.settings if s.final and s.final.get(selection)]
    if len(usable) == 1:
        return f"{label} is the only usable setting."
    parts = []
    if stage.tie and stage.runner_up is not None:
        rival = stage.settings[stage.runner_up].label
        final = stage.settings[stage.winner].final or {}
        parts.append(
            f"{label} and {rival} tie on {selection} ({final[selection].mean:.4f} each); "
            f"{label} is carried forward, chosen by {stage.tie_break}."
        )
    else:
        parts.append(f"{label} has the {BETTER[selection]} mean {selection}.")
    if not stage.comparisons:
        parts.append("It is not compared yet on per-image outcomes, so how sure it is is unknown.")
        return " ".join(parts)
    for c in stage.comparisons:
        if c.ci95 is None or c.difference is None:
            why = c.test.removeprefix("none: ")
            parts.append(f"Against {c.setting}: cannot be judged ({why}).")
        elif not excludes_zero(c.ci95):
            parts.append(
                f"{label} and {c.setting} are not distinguishable at {plural_seeds(c.seeds)} "
                f"(difference {c.difference:+.4f}, 95 % interval {interval(c.ci95)} contains 0)."
            )
        else:
            parts.append(
                f"Against {c.setting}: {c.difference:+.4f} {selection}, 95 % interval "
                f"{interval(c.ci95)} excludes 0 ({plural_seeds(c.seeds)}; P(better on a new "
                f"seed) {c.prob_better:.2f})."
            )
    if stage.decided:
        parts.append(f"Decided: {label} beats every other setting beyond the 95 % intervals.")
    else:
        parts.append(f"Not decided: {label} is carried forward as the best guess.")
    return " ".join(parts)


def interval(ci95: list[float]) -> str:
    return f"[{ci95[0]:+.4f}, {ci95[1]:+.4f}]"


def plural_seeds(n: int) -> str:
    return f"{n} seed" + ("" if n == 1 else "s")
