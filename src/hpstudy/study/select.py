"""Statistics over seeds, the choice of a stage's winner and its verdict, on validation only.

The winner has the best mean of the selection metric over the seeds every usable setting
finished (so every setting is ranked on the same seeds; a diverged or failed run is a loss
of its setting on that seed, counted in the comparisons, never missing data). An exact tie
is broken by the other validation metric, then by the order of the study file, and is
recorded as a tie: the report says so and how it was broken. `judge` then compares the
winner with every other usable setting on per-image outcomes (`hpstudy.study.compare`) and
words the verdict on those comparisons: a stage is decided only at two seeds or more, when
every comparison's interval lies wholly on the winner's side at a confidence that accounts
for the k−1 comparisons with the best (Bonferroni) and for the looks of --until-decided.
"""

from __future__ import annotations

import math

import numpy as np

from hpstudy.run import RunStatus
from hpstudy.study.compare import (
    ALPHA,
    compare,
    decision_confidence,
    excludes_zero,
    on_winner_side,
    share_interval,
    t_interval,
)
from hpstudy.study.state import Comparison, StageState, Stat

BETTER = {"val_acc": "highest", "val_loss": "lowest"}
# one setting's per-image validation outcomes by seed: right or wrong per image, and the
# per-image losses (None where the run keeps none); a seed absent keeps no predictions
SeedOutcomes = dict[int, tuple[np.ndarray, np.ndarray | None]]
# one setting's selection metric by finished seed (its runs' final epochs)
SeedScores = dict[int, float]
# a run that ended without a usable result: a loss of its setting on that seed
LOST = (RunStatus.DIVERGED, RunStatus.FAILED)


def summarise(values: list[float]) -> Stat | None:
    """Mean, sample std (0 for one value) and n of the finite values; None when there are none."""
    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if finite.size == 0:
        return None
    std = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
    return Stat(mean=float(finite.mean()), std=std, n=int(finite.size))


def common_seeds(per_seed: list[SeedScores] | None, usable: list[int]) -> list[int]:
    """The seeds every usable setting finished with a finite score (none: no per-seed scores)."""
    if not per_seed or not usable:
        return []
    shared = set.intersection(*({k for k, v in per_seed[i].items() if math.isfinite(v)}
                                for i in usable))  # fmt: skip
    return sorted(shared)


def select(
    stage: StageState, selection: str, per_seed: list[SeedScores] | None = None
) -> StageState:
    """The stage with winner, runner-up, margin, spread and tie filled in; its comparisons
    cleared (the winner may have changed) until `judge` makes them again. With `per_seed`
    (setting i's selection metric by finished seed), settings are ranked on the seeds every
    usable setting finished; without (or with no such seed), on each one's finished seeds."""
    other = "val_loss" if selection == "val_acc" else "val_acc"
    sign = 1 if selection == "val_acc" else -1  # larger `sign * value` is better

    def mean_of(i: int, metric: str) -> float:
        final = stage.settings[i].final
        stat = final.get(metric) if final else None
        return stat.mean if stat is not None else math.nan

    usable = [i for i in range(len(stage.settings)) if math.isfinite(mean_of(i, selection))]
    common = common_seeds(per_seed, usable)

    def score(i: int, metric: str) -> float:
        if metric == selection and common and per_seed is not None:
            return float(np.mean([per_seed[i][seed] for seed in common]))
        return mean_of(i, metric)

    if not usable:
        return stage.model_copy(
            update={"winner": None, "runner_up": None, "margin": None, "spread": None,
                    "tie": False, "tie_break": None, "verdict": "no usable run",
                    "comparisons": [], "decided": False, "ranked_on": None}
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
                "tie": bool(tie), "tie_break": tie_break, "comparisons": [], "decided": False,
                "ranked_on": common or None}
    )  # fmt: skip
    return chosen.model_copy(update={"verdict": verdict(chosen, selection)})


def judge(
    stage: StageState, outcomes: list[SeedOutcomes], selection: str, alpha: float = ALPHA
) -> StageState:
    """The stage with `comparisons`, `decided` and a verdict built on them: the winner
    against every other setting with a finished run, paired on the seeds both finished.
    `outcomes[i]` are setting i's per-image outcomes by seed; `alpha` the error rate this
    look may spend (ALPHA, or less for one of several looks of --until-decided)."""
    if stage.winner is None:
        return stage
    losses = selection == "val_loss"
    mine = outcomes[stage.winner]
    won = finished_seeds(stage, stage.winner)
    others = [i for i, setting in enumerate(stage.settings)
              if i != stage.winner and setting.final and setting.final.get(selection)]  # fmt: skip
    confidence = decision_confidence(len(others), alpha)
    comparisons = []
    for i in others:
        setting = stage.settings[i]
        theirs = outcomes[i]
        seeds = [seed for seed in won if seed in finished_seeds(stage, i)]
        setting_lost = len(set(won) & set(lost_seeds(stage, i)))
        winner_lost = len(set(finished_seeds(stage, i)) & set(lost_seeds(stage, stage.winner)))
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
                                          p_value=None, prob_better=None, test=f"none: {why}",
                                          setting_lost=setting_lost,
                                          winner_lost=winner_lost))  # fmt: skip
            continue
        pick = 1 if losses else 0
        result = compare(
            [as_values(mine[seed][pick]) for seed in seeds],
            [as_values(theirs[seed][pick]) for seed in seeds],
            correctness=not losses,
            lower_is_better=losses,
        )
        prob = prob_ci = decision = None
        if result.seeds >= 2:
            d = np.asarray(result.per_seed)
            signed = -d if losses else d
            wins, ties = int(np.sum(signed > 0)) + setting_lost, int(np.sum(signed == 0))
            played = result.seeds + setting_lost + winner_lost
            prob = (wins + 0.5 * ties) / played
            prob_ci = share_interval(wins, played - ties)
            lo, hi, _ = t_interval(d, confidence)
            decision = [float(lo), float(hi)] if math.isfinite(lo) else None
        comparisons.append(Comparison(
            setting=setting.label, difference=result.difference,
            ci95=list(result.ci95) if result.ci95 is not None else None,
            p_value=result.p_value, prob_better=prob, test=result.test, seeds=result.seeds,
            images_ci95=list(result.images_ci95) if result.images_ci95 is not None else None,
            prob_better_ci95=list(prob_ci) if prob_ci is not None else None,
            decision_ci=decision, setting_lost=setting_lost, winner_lost=winner_lost,
        ))  # fmt: skip
    decided = bool(comparisons) and all(
        c.seeds >= 2 and c.winner_lost == 0 and c.decision_ci is not None
        and bool(on_winner_side(np.float64(c.decision_ci[0]), np.float64(c.decision_ci[1]),
                                losses))
        for c in comparisons
    )  # fmt: skip
    judged = stage.model_copy(update={"comparisons": comparisons, "decided": decided})
    return judged.model_copy(update={"verdict": verdict(judged, selection, confidence)})


def finished_seeds(stage: StageState, i: int) -> list[int]:
    return [r.seed for r in stage.settings[i].runs if r.status == RunStatus.FINISHED]


def lost_seeds(stage: StageState, i: int) -> list[int]:
    """The seeds setting i diverged or failed on: a loss of the setting on each."""
    return [r.seed for r in stage.settings[i].runs if r.status in LOST]


def as_values(array: np.ndarray | None) -> np.ndarray:
    assert array is not None  # judge checked that every paired seed has it
    return np.asarray(array, dtype=np.float64)


def verdict(stage: StageState, selection: str, confidence: float | None = None) -> str:
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
    if stage.ranked_on is not None and any(
        set(finished_seeds(stage, i)) - set(stage.ranked_on) for i in range(len(stage.settings))
    ):
        parts.append(f"Ranked on seed(s) {stage.ranked_on}, the ones every setting finished.")
    if not stage.comparisons:
        parts.append("It is not compared yet on per-image outcomes, so how sure it is is unknown.")
        return " ".join(parts)
    losses = selection == "val_loss"
    one_seed = all(c.seeds <= 1 for c in stage.comparisons if c.ci95 is not None)
    for c in stage.comparisons:
        parts.append(comparison_words(c, label, selection, losses))
    if stage.decided:
        level = f"{confidence:.4g}" if confidence is not None else "the decision"
        parts.append(
            f"Decided: {label} beats every other setting (every interval at confidence "
            f"{level}, Bonferroni over {len(stage.comparisons)} comparison(s), lies on its side)."
        )
    elif one_seed:
        parts.append(
            f"Not decided: at one seed the comparison is about these validation images and this "
            f"seed only; seed-to-seed noise is not measured (`--seeds 3` measures it). {label} "
            "is carried forward as the best guess."
        )
    else:
        parts.append(f"Not decided: {label} is carried forward as the best guess.")
    return " ".join(parts)


def comparison_words(c: Comparison, label: str, selection: str, losses: bool) -> str:
    lost = ""
    if c.setting_lost:
        lost += f" {c.setting} diverged or failed on {plural_seeds(c.setting_lost)} (a loss each)."
    if c.winner_lost:
        lost += (f" {label} diverged or failed on {plural_seeds(c.winner_lost)} "
                 f"{c.setting} finished.")  # fmt: skip
    if c.ci95 is None or c.difference is None:
        why = c.test.removeprefix("none: ")
        return f"Against {c.setting}: cannot be judged ({why}).{lost}"
    where = "these validation images, this seed" if c.seeds == 1 else plural_seeds(c.seeds)
    if not excludes_zero(c.ci95):
        return (
            f"{label} and {c.setting} are not distinguishable at {plural_seeds(c.seeds)} "
            f"(difference {c.difference:+.4f}, 95 % interval {interval(c.ci95)} contains 0).{lost}"
        )
    side = c.ci95[1] < 0 if not losses else c.ci95[0] > 0
    words = (f"Against {c.setting}: {c.difference:+.4f} {selection}, 95 % interval "
             f"{interval(c.ci95)} ({where})")  # fmt: skip
    if side:  # the interval lies on the other setting's side
        return f"{words} favours {c.setting}, not {label}.{lost}"
    if c.prob_better is not None and c.prob_better_ci95 is not None:
        lo, hi = c.prob_better_ci95
        if lo > 0.5:
            words += f"; {label} wins a new seed with probability ≥ {lo:.2f} (95 %)"
        else:
            words += (f"; {label} won {c.prob_better:.0%} of the seeds, too few to say it wins "
                      f"a new seed (interval [{lo:.2f}, {hi:.2f}])")  # fmt: skip
    return words + "." + lost


def interval(ci95: list[float]) -> str:
    return f"[{ci95[0]:+.4f}, {ci95[1]:+.4f}]"


def plural_seeds(n: int) -> str:
    return f"{n} seed" + ("" if n == 1 else "s")
