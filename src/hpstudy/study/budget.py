"""Budgets: one rule per budget that shrinks any study's epochs and images, never its shape.

A leaf module (no torch): the command line lists the budgets without importing a study.
"""

from __future__ import annotations

import math

# from the most to the least epochs; each budget is one rule for any study
BUDGETS = ("full", "short", "quick", "smoke")
EPOCH_DIVISORS = {"full": 1, "short": 10, "smoke": 150}
# quick keeps a stage's epochs growing with the study's, but barely (15 -> 3, 300 -> 4):
# measured on a 2-core CPU (README), a 15-epoch stage at lr 0.01 needs about 40,000
# training images to end at 5x chance, and the long stages, at their winners' rate, no
# more; more epochs there would only cost time
BUDGET_LIMITS = {
    "quick": {"limit_train": 15_000, "limit_val": 5_000},
    "smoke": {"limit_train": 2048, "limit_val": 512},
}
SMOKE_LIMITS = BUDGET_LIMITS["smoke"]


def budget_epochs(epochs: int, budget: str) -> int:
    """full: as written; short: /10; smoke: /150 (15 -> 1, 300 -> 2); rounding half up;
    quick: ceil(log10(epochs)) + 1, at most epochs (15 -> 3, 300 -> 4)."""
    if budget == "quick":
        return min(epochs, len(str(epochs - 1)) + 1) if epochs > 1 else 1
    return max(1, math.floor(epochs / EPOCH_DIVISORS[budget] + 0.5))


def budget_warmup(warmup: int, epochs: int, budget: str) -> int:
    """Warmup shrinks with the stage's `epochs` (rounding half up, possibly to none): by the
    budget's divisor, or for quick by the ratio of its epochs; and stays shorter than them."""
    shrunk = budget_epochs(epochs, budget)
    if budget == "quick":
        scaled = math.floor(warmup * shrunk / epochs + 0.5)
    else:
        scaled = math.floor(warmup / EPOCH_DIVISORS[budget] + 0.5)
    return max(0, min(scaled, shrunk - 1))


__all__ = [
    "BUDGETS",
    "BUDGET_LIMITS",
    "EPOCH_DIVISORS",
    "SMOKE_LIMITS",
    "budget_epochs",
    "budget_warmup",
]
