"""How sure a conclusion is: paired comparisons of settings and intervals, on per-image outcomes.

Pure functions on numpy arrays. An outcome array holds one value per validation
(or test) image for one seed: 1.0/0.0 for a right/wrong prediction, or the
image's loss. Settings are paired by seed (same seed, same split, same images),
so a difference is taken image by image, and a seed's difference is its mean.

What each interval is about (its estimand):
- Two or more seeds: `ci95` is the paired t-interval on the per-seed differences
  (scipy's `ttest_1samp(d, 0).confidence_interval()`), `p_value` that paired t-test:
  the difference a new seed would average to, on these validation images (with
  `split_follows_seed`, on new images too: each seed draws its own split).
  `images_ci95` beside it is a bootstrap over the validation images only: what new
  images would do to these trained models. `prob_better` is the share of seeds the
  winner wins, with an exact (Clopper-Pearson) interval over seeds.
- One seed: seed noise is not measured. The interval is a bootstrap over these
  validation images for this seed, the p-value the exact McNemar test (a paired
  t-test on per-image losses for a loss); nothing is decided, `prob_better` is None.

The statistics the simulations in tests/test_verdicts.py check are vectorised over any
leading axes (the last axis is seeds), so the suite tries them on many thousands of
simulated studies at once. The bootstrap uses a fixed generator seed and count, so a
report repeats. scipy.stats is imported inside the functions that use it: it costs every
process that imports this module (each `study run`, SLURM job and Ray task) over a second
of start-up otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20210301  # fixed: the same outcomes give the same intervals every time
ALPHA = 0.05  # a stage's error rate (split among its comparisons and looks), two-sided
CONFIDENCE = 1 - ALPHA
# image resamples are drawn in blocks of at most this many indices (memory, not results)
GATHER_BLOCK = 4_000_000
# outcomes with at most this many distinct values are resampled as multinomial counts
FEW_VALUES = 8
ONE_SEED = "these validation images, this seed: seed noise is not measured (--seeds 3 measures it)"


@dataclass(frozen=True)
class Difference:
    """Winner minus setting, in the metric's units, over `seeds` paired seeds."""

    difference: float
    ci95: tuple[float, float] | None  # None: the per-seed differences do not vary
    p_value: float | None
    prob_better: float | None  # share of seeds the winner wins (ties half); None at one seed
    test: str
    seeds: int
    images_ci95: tuple[float, float] | None = None  # new images for these trained models
    prob_better_ci95: tuple[float, float] | None = None  # exact interval over seeds
    per_seed: tuple[float, ...] = ()  # the paired per-seed differences


def as_matrix(outcomes: list[np.ndarray]) -> np.ndarray:
    """Seeds × images, float64; every seed must have the same number of images."""
    if not outcomes:
        raise ValueError("no outcomes")
    sizes = {len(o) for o in outcomes}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"seeds have different or empty image counts: {sorted(sizes)}")
    return np.stack([np.asarray(o, dtype=np.float64) for o in outcomes])


def seed_draws(
    values: np.ndarray,
    rng: np.random.Generator,
    resamples: int = BOOTSTRAP_RESAMPLES,
    resample_seeds: bool = True,
) -> np.ndarray:
    """Bootstrap of a seeds × images matrix: for each resample, seeds drawn with replacement
    (kept as they are with `resample_seeds=False`), then images drawn with replacement within
    each seed. Returns the resampled per-seed means, resamples × seeds."""
    n_seeds, n_images = values.shape
    if resample_seeds:
        picked = rng.integers(0, n_seeds, size=(resamples, n_seeds))
    else:
        picked = np.broadcast_to(np.arange(n_seeds), (resamples, n_seeds))
    levels, codes = np.unique(values, return_inverse=True)
    codes = codes.reshape(values.shape)
    if len(levels) <= FEW_VALUES:
        # resampling N images with replacement is a multinomial draw of how often each
        # value appears: exact, and independent of the number of images
        counts = np.stack([np.bincount(c, minlength=len(levels)) for c in codes])
        probabilities = counts / n_images
        drawn = rng.multinomial(n_images, probabilities[picked])
        return drawn @ levels / n_images
    means = np.empty((resamples, n_seeds))
    flat = values.astype(np.float32).ravel()  # per-image values; the means stay float64
    block = max(1, GATHER_BLOCK // (n_seeds * n_images))
    for start in range(0, resamples, block):
        stop = min(resamples, start + block)
        images = rng.integers(0, n_images, size=(stop - start, n_seeds, n_images), dtype=np.int32)
        images += (picked[start:stop] * n_images).astype(np.int32)[..., None]
        means[start:stop] = np.take(flat, images).mean(axis=2, dtype=np.float64)
    return means


def percentile_interval(draws: np.ndarray) -> tuple[float, float]:
    tail = (1 - CONFIDENCE) / 2 * 100
    lo, hi = np.percentile(draws, [tail, 100 - tail])
    return float(lo), float(hi)


def mcnemar(winner_right: np.ndarray, setting_right: np.ndarray) -> float:
    """Exact McNemar p-value (two-sided): a binomial test on the discordant images."""
    from scipy import stats

    a = np.asarray(winner_right, dtype=bool)
    b = np.asarray(setting_right, dtype=bool)
    only_winner = int(np.count_nonzero(a & ~b))
    only_setting = int(np.count_nonzero(~a & b))
    discordant = only_winner + only_setting
    if discordant == 0:
        return 1.0
    return float(stats.binomtest(only_winner, discordant, 0.5).pvalue)


def finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


# ---------------------------------------------------------------- over seeds (vectorised)


def t_interval(
    d: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The t-interval of the mean of the last axis and its two-sided p-value against 0
    (scipy's ttest_1samp), for every leading index at once. NaN where the values do not
    vary (the interval would claim a certainty it has not earned)."""
    from scipy import stats

    with np.errstate(divide="ignore", invalid="ignore"):
        test = stats.ttest_1samp(np.asarray(d, dtype=np.float64), 0, axis=-1)
        ci = test.confidence_interval(confidence_level=confidence)
    flat = np.ptp(d, axis=-1) == 0
    lo, hi, p = (np.where(flat, np.nan, x) for x in (ci.low, ci.high, test.pvalue))
    return lo, hi, p


def decision_confidence(comparisons: int, alpha: float = ALPHA) -> float:
    """The confidence of the interval a stage is decided on: Bonferroni over the winner's
    k−1 comparisons (each two-sided at α/(k−1)). With the winner picked on the same data,
    "every interval on the winner's side" is then a false decision at most α of the time
    when the settings are equal, whichever of them is picked."""
    return 1 - alpha / max(comparisons, 1)


def on_winner_side(lo: np.ndarray, hi: np.ndarray, lower_is_better: bool) -> np.ndarray:
    """The interval lies wholly where the winner is better (NaN: not)."""
    with np.errstate(invalid="ignore"):
        return np.asarray(hi < 0) if lower_is_better else np.asarray(lo > 0)


def decides(d: np.ndarray, alpha: float = ALPHA, lower_is_better: bool = False) -> np.ndarray:
    """Whether stages are decided: `d` holds, per stage, the winner minus each of the k−1
    other settings per seed (..., k−1, seeds). Never at one seed."""
    if d.shape[-1] < 2:
        return np.zeros(d.shape[:-2], dtype=bool)
    lo, hi, _ = t_interval(d, decision_confidence(d.shape[-2], alpha))
    return np.all(on_winner_side(lo, hi, lower_is_better), axis=-1)


def prediction_interval(
    values: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[np.ndarray, np.ndarray]:
    """Where one new run of the recipe falls (last axis: per-seed values, two or more):
    mean ± t(S−1) · s · √(1 + 1/S)."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    n = x.shape[-1]
    t = stats.t.ppf(1 - (1 - confidence) / 2, n - 1)
    half = t * x.std(axis=-1, ddof=1) * math.sqrt(1 + 1 / n)
    mean = x.mean(axis=-1)
    return mean - half, mean + half


def equivalent(
    values: np.ndarray, published: float | np.ndarray, margin: float, alpha: float = ALPHA
) -> np.ndarray:
    """TOST: a new run of the recipe and the published number differ by less than `margin`
    (both one-sided tests at α, on one new run: s · √(1 + 1/S))."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    n = x.shape[-1]
    half = stats.t.ppf(1 - alpha, n - 1) * x.std(axis=-1, ddof=1) * math.sqrt(1 + 1 / n)
    gap = published - x.mean(axis=-1)
    return (gap - half > -margin) & (gap + half < margin)


def reproduction(
    values: list[float], published: float, margin: float | None, images: int | None = None
) -> tuple[str, tuple[float, float] | None, str]:
    """A published number against per-seed values: (verdict, interval shown, how it was made).
    Two or more seeds: "consistent" (TOST within `margin`; None: no margin for this metric),
    else "inside the prediction interval" or "outside" its 95 % prediction interval for one
    new run. One seed: "cannot tell" (seed noise unmeasured); an accuracy (a proportion of
    `images`) shows that run's Wilson interval over these images."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return "not measured", None, ""
    if x.size == 1:
        if images is None:
            return "cannot tell", None, "one seed: no interval"
        return "cannot tell", wilson(round(float(x[0]) * images), images), (
            "one run, Wilson over these images (seed noise not measured)")  # fmt: skip
    if np.ptp(x) == 0:
        return "cannot tell", None, "the seeds' values do not vary"
    lo, hi = (float(v) for v in prediction_interval(x))
    how = f"95 % prediction interval for one new run ({x.size} seeds)"
    if margin is not None and bool(equivalent(x, published, margin)):
        return "consistent", (lo, hi), how
    return ("inside the prediction interval" if lo <= published <= hi else "outside"), (lo, hi), how


def share_better(d: np.ndarray, lower_is_better: bool = False) -> np.ndarray:
    """The share of seeds (last axis) the winner wins, a tie counting half."""
    signed = -np.asarray(d) if lower_is_better else np.asarray(d)
    return (np.sum(signed > 0, axis=-1) + 0.5 * np.sum(signed == 0, axis=-1)) / signed.shape[-1]


def share_interval(wins: int, decisive: int) -> tuple[float, float] | None:
    """The exact (Clopper-Pearson) 95 % interval of P(the winner wins a new seed) from `wins`
    of `decisive` seeds (ties left out); None without a decisive seed."""
    from scipy import stats

    if decisive == 0:
        return None
    ci = stats.binomtest(wins, decisive).proportion_ci(confidence_level=CONFIDENCE, method="exact")
    return float(ci.low), float(ci.high)


# ---------------------------------------------------------------- one comparison


def compare(
    winner: list[np.ndarray],
    setting: list[np.ndarray],
    *,
    correctness: bool,
    lower_is_better: bool = False,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Difference:
    """Winner minus setting over paired seeds (`winner[j]` and `setting[j]` are the same seed
    on the same images). `correctness`: outcomes are right/wrong (McNemar at one seed);
    else per-image losses. `lower_is_better` (losses) turns "beats" into "is lower"."""
    from scipy import stats

    w, s = as_matrix(winner), as_matrix(setting)
    if w.shape != s.shape:
        raise ValueError(f"winner {w.shape} and setting {s.shape} are not paired")
    rng = np.random.default_rng(seed)
    d = w.mean(axis=1) - s.mean(axis=1)  # per seed
    # new validation images for these trained models: images resampled, seeds kept
    kept = seed_draws(w - s, rng, resamples, resample_seeds=False)
    images = percentile_interval(kept.mean(axis=1))
    n_seeds = w.shape[0]
    if n_seeds == 1:
        if correctness:
            p_value: float | None = mcnemar(w[0] > 0.5, s[0] > 0.5)
            test = f"exact McNemar and a bootstrap over images: {ONE_SEED}"
        else:
            diff = w[0] - s[0]
            p_value = None if np.all(diff == diff[0]) else stats.ttest_1samp(diff, 0).pvalue
            test = f"paired t-test on per-image losses and a bootstrap over images: {ONE_SEED}"
        return Difference(
            difference=float(d[0]), ci95=images,
            p_value=finite_or_none(p_value) if p_value is not None else None,
            prob_better=None, test=test, seeds=1, images_ci95=images, per_seed=(float(d[0]),),
        )  # fmt: skip
    lo, hi, p = t_interval(d)
    signed = -d if lower_is_better else d
    wins, ties = int(np.sum(signed > 0)), int(np.sum(signed == 0))
    test = "paired t over seeds (new seeds, these images); bootstrap over images beside it"
    ci95: tuple[float, float] | None = (float(lo), float(hi))
    if not math.isfinite(lo):
        # the per-seed differences do not vary: identical runs (all 0) are not told apart;
        # a constant non-zero difference gives a t-interval no width to claim
        ci95 = (0.0, 0.0) if d[0] == 0 else None
        test = ("none: " if ci95 is None else "") + (
            f"paired t over seeds: the per-seed differences are all {d[0]:+.4f}, so no "
            "interval is claimed")  # fmt: skip
    return Difference(
        difference=float(d.mean()),
        ci95=ci95,
        p_value=finite_or_none(float(p)),
        prob_better=float(share_better(d, lower_is_better)),
        test=test,
        seeds=n_seeds,
        images_ci95=images,
        prob_better_ci95=share_interval(wins, n_seeds - ties),
        per_seed=tuple(float(x) for x in d),
    )


def wilson(right: int, total: int) -> tuple[float, float]:
    """The Wilson 95 % interval of a proportion (scipy's binomtest)."""
    from scipy import stats

    ci = stats.binomtest(right, total).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return float(ci.low), float(ci.high)


def accuracy_interval(correct: list[np.ndarray]) -> tuple[tuple[float, float] | None, str]:
    """The 95 % interval of the mean accuracy, and how it was made: Wilson over the images
    for one run (these images, this seed); the t-interval over the runs' accuracies for
    several (new seeds, these images); None where the runs' accuracies do not vary."""
    values = as_matrix(correct)
    if values.shape[0] == 1:
        return wilson(int(values[0].sum()), values.shape[1]), "Wilson over these images, one run"
    ci = seed_mean_interval(list(values.mean(axis=1)))
    if ci is None:
        return None, "none: the runs' accuracies do not vary"
    return ci, "t-interval over runs"


def seed_mean_interval(values: list[float]) -> tuple[float, float] | None:
    """The t-interval of the mean over seeds (seed noise only); None below two seeds or
    for values that do not vary (the interval would claim a certainty it has not earned)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2 or not np.all(np.isfinite(x)) or np.ptp(x) == 0:
        return None
    lo, hi, _ = t_interval(x)
    return float(lo), float(hi)


def excludes_zero(ci95: tuple[float, float] | list[float]) -> bool:
    lo, hi = ci95
    return lo > 0 or hi < 0


__all__ = [
    "ALPHA",
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "CONFIDENCE",
    "ONE_SEED",
    "Difference",
    "accuracy_interval",
    "compare",
    "decides",
    "decision_confidence",
    "equivalent",
    "excludes_zero",
    "mcnemar",
    "on_winner_side",
    "prediction_interval",
    "reproduction",
    "seed_draws",
    "seed_mean_interval",
    "share_better",
    "share_interval",
    "t_interval",
    "wilson",
]
