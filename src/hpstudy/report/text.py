"""The report's words for values: numbers as the published report prints them, Markdown-safe text.

Formatting only: every value comes from the analysis; a missing one is a dash.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from hpstudy.study.state import Stat

DASH = "—"


def sig3(x: float) -> str:
    """3 significant figures with trailing zeros kept, as the report prints them (0.450, 1.00)."""
    if not math.isfinite(x):
        return str(x)
    text = f"{x:#.3g}"
    return text if "e" in text else text.rstrip(".")


def fmt_stat(s: Stat | None) -> str:
    """`mean ± std`, the std to the mean's decimals (but never shown as a bare zero)."""
    if s is None:
        return DASH
    mean = sig3(s.mean)
    if s.n < 2:
        return mean
    if "e" in mean:
        return f"{mean} ± {s.std:.2g}"
    decimals = len(mean.split(".")[1]) if "." in mean else 0
    std = f"{s.std:.{decimals}f}"
    if float(std) == 0 and s.std > 0:
        std = f"{s.std:.1g}"
    return f"{mean} ± {std}"


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return DASH
    if s < 120:
        return f"{s:.1f} s"
    return f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def fmt_interval(ci95: list[float] | tuple[float, float] | None, signed: bool = False) -> str:
    if ci95 is None:
        return DASH
    f = "{:+.4f}" if signed else "{:.4f}"
    return f"[{f.format(ci95[0])}, {f.format(ci95[1])}]"


def num(x: float | None) -> str:
    """A CSV cell: full precision, empty when missing."""
    return "" if x is None else repr(float(x))


def cell(x: Any, fmt: Callable[[Any], str] = sig3) -> str:
    """A Markdown cell: formatted, or a dash when the value is missing."""
    return DASH if x is None else fmt(x)


def plural(n: int | None, word: str) -> str:
    return f"{DASH} {word}s" if n is None else f"{n} {word}" + ("" if n == 1 else "s")


def slugify(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "stage"


def text(s: Any) -> str:
    """Plain text (a label, a name, an error) made safe as Markdown inline: one line, literal."""
    one_line = " ".join(str(s).split())
    escaped = re.sub(r"([\\`*\[\]<>])", r"\\\1", one_line)
    # an underscore inside a word (val_loss) is literal in CommonMark: escape only the others
    return re.sub(r"(?<!\w)_|_(?!\w)", r"\\_", escaped)


def code(s: Any) -> str:
    """`s` as a code span, long enough to hold any backticks inside it."""
    s = " ".join(str(s).split())
    ticks = "`" * (max((len(m) for m in re.findall(r"`+", s)), default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{ticks}{pad}{s}{pad}{ticks}"


__all__ = [
    "DASH",
    "cell",
    "code",
    "fmt_interval",
    "fmt_seconds",
    "fmt_stat",
    "num",
    "plural",
    "sig3",
    "slugify",
    "text",
]
