"""The "random" stage kind: `n` settings drawn from a search space with a seeded generator.

A fixed list, known before anything trains: the draws are numpy's, seeded by the
stage's sampler seed, and validated with the space's corners besides.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from hpstudy.study.kinds import label_of, register_kind
from hpstudy.study.kinds.space import MAX_DRAWS, SearchStage, corners, draw_random


@register_kind
class RandomStage(SearchStage):
    """kind "random": `n` settings drawn from the space with the sampler seed."""

    kind: Literal["random"]
    n: int = Field(ge=1, le=MAX_DRAWS)

    words: ClassVar[str] = "A random search over"

    def size(self) -> int:
        return self.n

    def settings(self) -> list[tuple[str, Any]]:
        return [(label_of(a), a) for a in draw_random(self.space, self.n, self.sampler_seed)]

    def candidates(self) -> list[Any]:
        # a bad space is refused as written, whichever draws it happens to give
        return [value for _, value in self.settings()] + corners(self.space)

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "space": self.space_identity(), "n": self.n,
                "sampler_seed": self.sampler_seed, "epochs": self.epochs,
                "overrides": self.overrides}  # fmt: skip

    def describe(self) -> str:
        return f"random search, {self.n} draws (seed {self.sampler_seed}): {self.space_text()}"
