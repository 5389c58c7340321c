"""Statistics over seeds and the choice of a stage's winner, on the validation split only.

The winner has the best mean of the selection metric over the finished seeds.
An exact tie is broken by the other validation metric, then by the order of the
study file, and is recorded as a tie: the report says so and how it was broken.
"""

from __future__ import annotations

import math

import numpy as np

from hpstudy.study.state import StageState, Stat

BETTER = {"val_acc": "highest", "val_loss": "lowest"}


def summarise(values: list[float]) -> Stat | None:
    """Mean, sample std (0 for one value) and n of the finite values; None when there are none."""
    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if finite.size == 0:
        return None
    std = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
    return Stat(mean=float(finite.mean()), std=std, n=int(finite.size))


def select(stage: StageState, selection: str) -> StageState:
    """The stage with winner, runner-up, margin, spread, tie and verdict filled in."""
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
                    "tie": False, "tie_break": None, "verdict": "no usable run"}
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
    label = stage.settings[winner].label
    stds = [
        s.std
        for i in usable
        if (final := stage.settings[i].final) and (s := final[selection]) and s.n > 1
    ]
    spread = max(stds) if stds else None
    margin = tie = tie_break = None
    if runner_up is None:
        verdict = f"{label} is the only usable setting."
    else:
        margin = sign * (score(winner, selection) - score(runner_up, selection))
        tie = margin == 0
        rival = stage.settings[runner_up].label
        if tie:
            same_other = score(winner, other) == score(runner_up, other)
            tie_break = (
                "the order of the study file" if same_other else f"the {BETTER[other]} mean {other}"
            )
            verdict = (
                f"{label} and {rival} tie on {selection} ({score(winner, selection):.4f} each); "
                f"{label} is carried forward, chosen by {tie_break}."
            )
        elif spread is None:
            verdict = (
                f"{label} has the {BETTER[selection]} mean {selection}, {margin:.4f} better than "
                f"{rival}; with one seed per setting this margin cannot be compared with seed "
                "noise (add seeds to tell)."
            )
        elif margin > 2 * spread:
            verdict = (
                f"{label} beats {rival} by {margin:.4f} {selection}, more than twice the largest "
                f"seed std ({spread:.4f}): the choice is clear."
            )
        else:
            verdict = (
                f"{label} beats {rival} by {margin:.4f} {selection}, within seed noise (largest "
                f"seed std {spread:.4f}): the settings are not distinguishable at these seeds."
            )
    return stage.model_copy(
        update={"winner": winner, "runner_up": runner_up, "margin": margin, "spread": spread,
                "tie": bool(tie), "tie_break": tie_break, "verdict": verdict}
    )  # fmt: skip
