"""Verdicts right at any number of seeds: the study's statistics tried on simulated studies.

Each test simulates many thousands of studies of the kind hpstudy runs at once (numpy,
no training) and checks a verdict's error rate with the tool's own functions
(`hpstudy.study.compare`, the stage's `judge`, the session's look plan). The model:
10,000 validation images, accuracy about 0.70, per-image correlation 0.4 between two
settings (so the paired image noise of a difference is about 0.5 point), a seed-to-seed
std of each setting's accuracy of 0.3 or 1.0 point. Crossed: every seed sees the same
validation images (the default), so the image noise is the same on every seed and the
intervals are about these images; nested (`split_follows_seed`): each seed draws its own.

Every rate is estimated on REPLICATES studies from a fixed generator seed, so a run
repeats, and its margin is several binomial standard errors wide (≈ 0.0015 at 0.95), so a
correct method cannot fail by luck. `python tests/test_verdicts.py` prints the figures the
README quotes.
"""

from __future__ import annotations

import numpy as np
import pytest

from hpstudy.run import RunStatus
from hpstudy.study.compare import (
    ALPHA,
    compare,
    decides,
    prediction_interval,
    reproduction,
    t_interval,
)
from hpstudy.study.select import judge, select
from hpstudy.study.session import planned_looks
from hpstudy.study.state import RunEntry, SettingState, StageState, Stat

IMAGES = 10_000
ACCURACY = 0.70
IMAGE_CORRELATION = 0.4
REPLICATES = 20_000
IMAGE_STD = np.sqrt(ACCURACY * (1 - ACCURACY) / IMAGES)  # one accuracy's, ≈ 0.46 point


def accuracies(
    rng: np.random.Generator,
    *,
    settings: int,
    seeds: int,
    seed_std: float,
    nested: bool,
    replicates: int = REPLICATES,
    effects: tuple[float, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-seed validation accuracies, replicates × settings × seeds, and each setting's
    truth on the images the seeds saw (replicates × settings; crossed: these images, so
    its image noise is in it; nested: the population's, new images every seed)."""
    truth = np.full((replicates, settings), ACCURACY) + np.asarray(effects or [0.0] * settings)
    image_shape = (replicates, settings, seeds if nested else 1)
    shared = rng.standard_normal((replicates, 1, image_shape[2]))
    own = rng.standard_normal(image_shape)
    rho = IMAGE_CORRELATION
    images = IMAGE_STD * (np.sqrt(rho) * shared + np.sqrt(1 - rho) * own)
    seed_noise = seed_std * rng.standard_normal((replicates, settings, seeds))
    values = truth[..., None] + images + seed_noise
    if not nested:
        truth = truth + images[..., 0]  # the estimand: the difference on these images
    return values, truth


def winner_against_the_rest(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The winner (best mean over seeds, as `select` ranks) and its per-seed differences
    with every other setting: replicates × (k−1) × seeds."""
    winner = values.mean(axis=-1).argmax(axis=-1)
    rows = np.arange(values.shape[0])
    others = np.array([[j for j in range(values.shape[1]) if j != w] for w in winner])
    d = values[rows, winner][:, None, :] - values[rows[:, None], others]
    return winner, d


# ---------------------------------------------------------------- the measurements


def coverage(seeds: int, seed_std: float, nested: bool, rng: np.random.Generator) -> float:
    """How often the per-comparison 95 % interval (paired t over seeds) holds the truth."""
    values, truth = accuracies(rng, settings=2, seeds=seeds, seed_std=seed_std, nested=nested,
                               effects=(0.005, 0.0))  # fmt: skip
    lo, hi, _ = t_interval(values[:, 0] - values[:, 1])
    gap = truth[:, 0] - truth[:, 1]
    return float(np.mean((lo <= gap) & (gap <= hi)))


def false_decided(settings: int, seeds: int, seed_std: float, nested: bool,
                  rng: np.random.Generator, these_images: bool = True) -> float:  # fmt: skip
    """How often a stage of truly equal settings is decided (winner picked on the same data).
    Crossed: equal on these images (the estimand), so only seed noise tells them apart;
    `these_images=False`: equal on the population only (what the crossed design's intervals
    are not about: these images favour one setting or another)."""
    values, truth = accuracies(rng, settings=settings, seeds=seeds, seed_std=seed_std,
                               nested=nested)  # fmt: skip
    if not nested and these_images:
        values = values - (truth - ACCURACY)[..., None]  # the same truth on these images
    _, d = winner_against_the_rest(values)
    return float(np.mean(decides(d)))


def false_until_decided(
    seed_std: float, nested: bool, rng: np.random.Generator, start: int = 1, most: int = 5
) -> float:
    """Two equal settings grown a seed at a time from `start` to `most` seeds, judged after
    each seed as the session does (never before 2 seeds; each look at α / planned looks):
    how often some look decides."""
    values, truth = accuracies(rng, settings=2, seeds=most, seed_std=seed_std, nested=nested)
    if not nested:
        values = values - (truth - ACCURACY)[..., None]
    alpha = ALPHA / planned_looks(start, most)
    decided = np.zeros(values.shape[0], dtype=bool)
    for seeds in range(start, most + 1):
        looked = values[..., :seeds]
        # the winner at this look, as select picks it; the other's differences per seed
        _, d = winner_against_the_rest(looked)
        decided |= decides(d, alpha=alpha)
    return float(np.mean(decided))


def reproduction_outside(seeds: int, seed_std: float, rng: np.random.Generator) -> float:
    """A perfect reproduction: the published number is one more seed of the same recipe (on
    the same images). How often it falls outside the 95 % prediction interval."""
    values, _ = accuracies(rng, settings=1, seeds=seeds + 1, seed_std=seed_std, nested=False)
    runs, published = values[:, 0, :seeds], values[:, 0, seeds]
    lo, hi = prediction_interval(runs)
    return float(np.mean((published < lo) | (published > hi)))


def selection_bias(settings: int, seeds: int, seed_std: float, rng: np.random.Generator) -> float:
    """With every setting equal (crossed, on these images), the mean of winner minus
    runner-up: what picking the winner on the same data adds to its margin (points)."""
    values, truth = accuracies(rng, settings=settings, seeds=seeds, seed_std=seed_std,
                               nested=False)  # fmt: skip
    means = np.sort((values - (truth - ACCURACY)[..., None]).mean(axis=-1), axis=-1)
    return float(np.mean(means[:, -1] - means[:, -2]) * 100)


# ---------------------------------------------------------------- the claims


@pytest.mark.parametrize("nested", [False, True], ids=["crossed", "nested"])
@pytest.mark.parametrize("seed_std", [0.003, 0.010])
@pytest.mark.parametrize("seeds", [3, 10])
def test_the_comparison_interval_covers_95_percent(seeds: int, seed_std: float, nested: bool):
    rng = np.random.default_rng(seeds * 1000 + int(seed_std * 1e4) + nested)
    assert 0.93 <= coverage(seeds, seed_std, nested, rng) <= 0.97


@pytest.mark.parametrize("nested", [False, True], ids=["crossed", "nested"])
@pytest.mark.parametrize("settings", [3, 4])
def test_equal_settings_are_decided_at_most_5_percent_of_the_time(settings: int, nested: bool):
    rng = np.random.default_rng(100 + settings + 10 * nested)
    for seed_std in (0.003, 0.010):
        assert false_decided(settings, 3, seed_std, nested, rng) <= 0.05


@pytest.mark.parametrize("nested", [False, True], ids=["crossed", "nested"])
def test_until_decided_keeps_its_error_under_the_null(nested: bool):
    rng = np.random.default_rng(7 + nested)
    for seed_std in (0.003, 0.010):
        assert false_until_decided(seed_std, nested, rng) <= 0.05
    assert planned_looks(1, 5) == 4 and planned_looks(3, 5) == 3 and planned_looks(3, None) == 1


@pytest.mark.parametrize("seeds", [3, 10])
def test_a_perfect_reproduction_is_outside_at_most_6_percent_of_the_time(seeds: int):
    rng = np.random.default_rng(300 + seeds)
    for seed_std in (0.003, 0.010):
        assert reproduction_outside(seeds, seed_std, rng) <= 0.06


def test_the_paired_t_interval_is_scipys_on_the_per_seed_differences():
    """compare() at several seeds: the t-interval and t-test of the per-seed differences."""
    from scipy import stats

    rng = np.random.default_rng(5)
    w = [rng.random(400) < p for p in (0.62, 0.70, 0.66)]
    s = [rng.random(400) < p for p in (0.60, 0.61, 0.64)]
    got = compare([x.astype(float) for x in w], [x.astype(float) for x in s], correctness=True)
    d = np.array([a.mean() - b.mean() for a, b in zip(w, s, strict=True)])
    test = stats.ttest_1samp(d, 0)
    ci = test.confidence_interval(0.95)
    assert got.ci95 == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert got.p_value == pytest.approx(test.pvalue, abs=1e-12)
    assert got.test.startswith("paired t") and got.images_ci95 is not None
    assert got.prob_better == pytest.approx(np.mean(d > 0) + 0.5 * np.mean(d == 0))


def test_reproduction_verdicts_follow_the_rule():
    # one seed: cannot tell, with that run's image interval for an accuracy
    verdict, ci, how = reproduction([0.70], 0.71, 0.01, images=10_000)
    assert verdict == "cannot tell" and ci is not None and "one run" in how
    # tight seeds around the published number: equivalent within one point
    assert reproduction([0.700, 0.701, 0.699, 0.700], 0.7, 0.01)[0] == "consistent"
    # noisy seeds: inside the prediction interval, but not shown equivalent
    assert reproduction([0.68, 0.72, 0.70], 0.7, 0.01)[0] == "inside the prediction interval"
    assert reproduction([0.700, 0.701, 0.699], 0.75, 0.01)[0] == "outside"
    assert reproduction([0.7, 0.7, 0.7], 0.7, 0.01)[0] == "cannot tell"  # no spread to judge
    assert reproduction([], 0.7, 0.01)[0] == "not measured"


# ---------------------------------------------------------------- the stage's own judge


def stage_of(per_seed: dict[str, list[float | None]]) -> StageState:
    """A stage of settings with the given validation accuracy per seed (None: diverged)."""
    settings = []
    for label, accs in per_seed.items():
        runs = [RunEntry(seed=j, run_hash=f"{label}{j}", run_dir=f"runs/{label}{j}", reused=False,
                         status=RunStatus.FINISHED if a is not None else RunStatus.DIVERGED)
                for j, a in enumerate(accs)]  # fmt: skip
        done = [a for a in accs if a is not None]
        final = {"val_acc": Stat(mean=float(np.mean(done)), std=0.0, n=len(done))}
        settings.append(SettingState(value=label, label=label, runs=runs, published=None,
                                     final=final))  # fmt: skip
    return StageState(name="s", field="lr", figure=None, epochs=1, settings=settings,
                      published_winner=None)  # fmt: skip


def outcomes_of(per_seed: dict[str, list[float | None]], images: int = 1000) -> list[dict]:
    """Right/wrong per image with exactly the given accuracy on each seed."""
    out = []
    for accs in per_seed.values():
        mine = {}
        for j, a in enumerate(accs):
            if a is not None:
                right = np.zeros(images, dtype=bool)
                right[: round(a * images)] = True
                mine[j] = (right, None)
        out.append(mine)
    return out


def scores_of(per_seed: dict[str, list[float | None]]) -> list[dict[int, float]]:
    return [{j: a for j, a in enumerate(accs) if a is not None} for accs in per_seed.values()]


def test_a_setting_better_than_the_winner_is_never_decided():
    """The wrong side: a winner ranked on all its seeds but compared on the common ones."""
    accs = {"a": [0.600, 0.602, 0.700], "b": [0.620, 0.621, None]}  # b diverged on seed 2
    stage = stage_of(accs)
    # ranked on each setting's own seeds (the old rule), a wins; b is better on every
    # seed both finished: that is not a decision for a
    forced = select(stage, "val_acc")
    assert forced.settings[forced.winner].label == "a"  # type: ignore[index]
    judged = judge(forced, outcomes_of(accs), "val_acc")
    (c,) = judged.comparisons
    assert c.ci95 is not None and c.ci95[1] < 0 and not judged.decided
    assert "favours b, not a" in (judged.verdict or "")
    # ranked on the seeds every setting finished, b wins; it diverged on seed 2, a loss
    ranked = select(stage, "val_acc", scores_of(accs))
    assert ranked.settings[ranked.winner].label == "b" and ranked.ranked_on == [0, 1]  # type: ignore[index]
    judged = judge(ranked, outcomes_of(accs), "val_acc")
    (c,) = judged.comparisons
    assert (c.winner_lost, c.setting_lost) == (1, 0) and not judged.decided
    assert c.prob_better == pytest.approx(2 / 3)  # two wins, one seed lost to divergence
    assert "b diverged or failed on 1 seed" in (judged.verdict or "")


def test_one_seed_is_never_decided():
    accs = {"a": [0.95], "b": [0.05], "c": [0.10]}  # as far apart as accuracies go
    stage = select(stage_of(accs), "val_acc", scores_of(accs))
    judged = judge(stage, outcomes_of(accs), "val_acc")
    assert not judged.decided
    assert all(c.prob_better is None and c.p_value is not None for c in judged.comparisons)
    assert all("these validation images, this seed" in c.test for c in judged.comparisons)
    assert "seed-to-seed noise is not measured (`--seeds 3` measures it)" in judged.verdict  # type: ignore[operator]
    assert not decides(np.ones((5, 2, 1))).any()


def test_a_clear_winner_at_several_seeds_is_decided_on_its_side():
    accs = {"a": [0.70, 0.71, 0.705, 0.702], "b": [0.60, 0.61, 0.602, 0.607]}
    stage = select(stage_of(accs), "val_acc", scores_of(accs))
    judged = judge(stage, outcomes_of(accs), "val_acc")
    (c,) = judged.comparisons
    assert judged.decided and c.decision_ci is not None and c.decision_ci[0] > 0
    assert c.prob_better == 1.0 and c.prob_better_ci95 is not None
    # four wins of four: the exact interval's lower bound (0.40) is no claim past 0.5
    assert c.prob_better_ci95[0] < 0.5 and "too few to say" in (judged.verdict or "")
    # the same stage at the α of one of 20 looks needs more: the interval is wider
    strict = judge(stage, outcomes_of(accs), "val_acc", alpha=ALPHA / 20)
    wide = strict.comparisons[0].decision_ci
    assert wide is not None and wide[0] < c.decision_ci[0]


def test_an_old_states_decided_is_withdrawn_where_one_seed_or_the_wrong_side_made_it():
    from hpstudy import files

    def old(seeds: int, ci95: list[float], selection: str = "val_acc") -> dict:
        comparison = {"setting": "b", "difference": 0.01, "ci95": ci95, "p_value": 0.01,
                      "prob_better": 0.9, "test": "x", "seeds": seeds}  # fmt: skip
        return {"schema_version": 1, "selection": selection,
                "stages": [{"decided": True, "comparisons": [comparison]}]}  # fmt: skip

    def upgraded(raw: dict) -> dict:
        return files.upgrade(raw, "state", "state.json")["stages"][0]

    one = upgraded(old(1, [0.01, 0.02]))
    assert one["decided"] is False and one["comparisons"][0]["prob_better"] is None
    assert upgraded(old(3, [-0.02, -0.01]))["decided"] is False  # the wrong side
    assert upgraded(old(3, [0.01, 0.02]))["decided"] is True  # the winner's side: kept
    assert upgraded(old(3, [-0.02, -0.01], "val_loss"))["decided"] is True


# ---------------------------------------------------------------- the figures the README quotes


def figures() -> list[str]:
    rng = np.random.default_rng(2021)
    lines = ["coverage of the per-comparison 95 % interval (paired t over seeds):"]
    for nested in (False, True):
        for seeds in (2, 3, 5, 10):
            cells = [f"{coverage(seeds, std, nested, rng):.3f}" for std in (0.003, 0.006, 0.010)]
            lines.append(f"  {'nested ' if nested else 'crossed'} {seeds:2d} seeds, seed std "
                         f"0.3/0.6/1.0 pt: {' / '.join(cells)}")  # fmt: skip
    lines.append("false 'decided', truly equal settings, 3 seeds (seed std 0.3 / 1.0 pt):")
    for nested in (False, True):
        for k in (2, 3, 4):
            cells = [f"{false_decided(k, 3, std, nested, rng):.3f}" for std in (0.003, 0.010)]
            lines.append(f"  {'nested ' if nested else 'crossed'} k={k}: {' / '.join(cells)}")
    lines.append("crossed, equal on the population but not on these images, 3 seeds "
                 "(0.3 / 1.0 pt):")
    for k in (2, 3):
        cells = [f"{false_decided(k, 3, std, False, rng, these_images=False):.3f}"
                 for std in (0.003, 0.010)]  # fmt: skip
        lines.append(f"  k={k}: {' / '.join(cells)}")
    lines.append("--until-decided 5 from 1 seed, two equal settings (0.3 / 0.6 / 1.0 pt):")
    for nested in (False, True):
        cells = [f"{false_until_decided(std, nested, rng):.3f}" for std in (0.003, 0.006, 0.010)]
        lines.append(f"  {'nested ' if nested else 'crossed'}: {' / '.join(cells)}")
    lines.append("perfect reproduction marked 'outside' (seed std 0.3 / 1.0 pt):")
    for seeds in (2, 3, 10):
        cells = [f"{reproduction_outside(seeds, std, rng):.3f}" for std in (0.003, 0.010)]
        lines.append(f"  {seeds:2d} seeds: {' / '.join(cells)}")
    lines.append("winner minus runner-up with every setting equal, points (0.3 / 1.0 pt):")
    for k in (2, 3, 4):
        cells = [f"{selection_bias(k, 3, std, rng):.2f}" for std in (0.003, 0.010)]
        lines.append(f"  k={k}, 3 seeds: {' / '.join(cells)}")
    return lines


if __name__ == "__main__":
    print("\n".join(figures()))
