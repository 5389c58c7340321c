"""How sure a conclusion is: paired comparisons of settings and intervals, on per-image outcomes.

Pure functions on numpy arrays. An outcome array holds one value per validation
(or test) image for one seed: 1.0/0.0 for a right/wrong prediction, or the
image's loss. Settings are paired by seed (same seed, same split, same images),
so a difference is taken image by image before anything is resampled.

- One seed: the interval is a bootstrap over images; the p-value is the exact
  McNemar test on the discordant images (for correctness) or a paired t-test on
  the per-image differences (for losses).
- Several seeds: a two-level bootstrap (resample seeds, then images within each
  resampled seed) gives the interval of the mean difference and the probability
  that the winner beats the setting on a new seed; Welch's t-test on the seed
  means sits beside it.

The bootstrap uses a fixed generator seed and count, so a report repeats. scipy.stats is
imported inside the functions that use it: it costs every process that imports this module
(each `study run`, SLURM job and Ray task) over a second of start-up otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20210301  # fixed: the same outcomes give the same intervals every time
CONFIDENCE = 0.95
# image resamples are drawn in blocks of at most this many indices (memory, not results)
GATHER_BLOCK = 4_000_000
# outcomes with at most this many distinct values are resampled as multinomial counts
FEW_VALUES = 8


@dataclass(frozen=True)
class Difference:
    """Winner minus setting, in the metric's units, over `seeds` paired seeds."""

    difference: float
    ci95: tuple[float, float]
    p_value: float | None
    prob_better: float  # P(the winner beats the setting on a new seed); ties count half
    test: str
    seeds: int


def as_matrix(outcomes: list[np.ndarray]) -> np.ndarray:
    """Seeds × images, float64; every seed must have the same number of images."""
    if not outcomes:
        raise ValueError("no outcomes")
    sizes = {len(o) for o in outcomes}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"seeds have different or empty image counts: {sorted(sizes)}")
    return np.stack([np.asarray(o, dtype=np.float64) for o in outcomes])


def seed_draws(
    values: np.ndarray, rng: np.random.Generator, resamples: int = BOOTSTRAP_RESAMPLES
) -> np.ndarray:
    """Two-level bootstrap of a seeds × images matrix: for each resample, seeds drawn with
    replacement, then images drawn with replacement within each drawn seed. Returns the
    resampled per-seed means, resamples × seeds (column j is the j-th drawn seed)."""
    n_seeds, n_images = values.shape
    picked = rng.integers(0, n_seeds, size=(resamples, n_seeds))
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
    per_seed = seed_draws(w - s, rng, resamples)
    difference = float((w.mean(axis=1) - s.mean(axis=1)).mean())
    single = per_seed[:, 0]  # one drawn seed: the difference a new seed would show
    sign = -1.0 if lower_is_better else 1.0
    prob = float(np.mean(sign * single > 0) + 0.5 * np.mean(single == 0))
    n_seeds = w.shape[0]
    if n_seeds == 1:
        if correctness:
            p_value: float | None = mcnemar(w[0] > 0.5, s[0] > 0.5)
            test = "exact McNemar on the validation images; bootstrap over images"
        else:
            diff = w[0] - s[0]
            p_value = None if np.all(diff == diff[0]) else stats.ttest_1samp(diff, 0).pvalue
            test = "paired t-test on per-image losses; bootstrap over images"
    else:
        a, b = w.mean(axis=1), s.mean(axis=1)
        p_value = None
        if np.ptp(a) > 0 or np.ptp(b) > 0:
            p_value = stats.ttest_ind(a, b, equal_var=False).pvalue
        test = "two-level bootstrap (seeds, then images); Welch's t-test on seed means"
    return Difference(
        difference=difference,
        ci95=percentile_interval(per_seed.mean(axis=1)),
        p_value=finite_or_none(p_value) if p_value is not None else None,
        prob_better=prob,
        test=test,
        seeds=n_seeds,
    )


def wilson(right: int, total: int) -> tuple[float, float]:
    """The Wilson 95 % interval of a proportion (scipy's binomtest)."""
    from scipy import stats

    ci = stats.binomtest(right, total).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return float(ci.low), float(ci.high)


def accuracy_interval(
    correct: list[np.ndarray], *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[tuple[float, float], str]:
    """The 95 % interval of the mean accuracy over seeds, and how it was made: Wilson for
    one run, the two-level bootstrap (seeds, then images) for several."""
    values = as_matrix(correct)
    if values.shape[0] == 1:
        return wilson(int(values[0].sum()), values.shape[1]), "Wilson"
    draws = seed_draws(values, np.random.default_rng(seed), resamples).mean(axis=1)
    return percentile_interval(draws), "two-level bootstrap (seeds, then images)"


def seed_mean_interval(values: list[float]) -> tuple[float, float] | None:
    """The t-interval of the mean over seeds (seed noise only); None below two seeds or
    for values that do not vary (the interval would claim a certainty it has not earned)."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    if x.size < 2 or not np.all(np.isfinite(x)) or np.ptp(x) == 0:
        return None
    ci = stats.ttest_1samp(x, 0).confidence_interval(confidence_level=CONFIDENCE)
    return float(ci.low), float(ci.high)


def reproduction_interval(
    values: list[float], images: int | None = None
) -> tuple[tuple[float, float] | None, str]:
    """The 95 % interval a published number is checked against, and how it was made: the
    t-interval of the mean over seeds; for one seed's accuracy (a proportion of `images`
    validation images), Wilson. None where neither applies (one seed of a loss)."""
    ci = seed_mean_interval(values)
    if ci is None and len(values) == 1 and images is not None:
        return wilson(round(values[0] * images), images), "Wilson over validation images"
    return ci, "t-interval over seeds"


def excludes_zero(ci95: tuple[float, float] | list[float]) -> bool:
    lo, hi = ci95
    return lo > 0 or hi < 0


__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "CONFIDENCE",
    "Difference",
    "accuracy_interval",
    "compare",
    "excludes_zero",
    "mcnemar",
    "reproduction_interval",
    "seed_draws",
    "seed_mean_interval",
    "wilson",
]
