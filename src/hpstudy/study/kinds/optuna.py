"""The "optuna" stage kind: `n_trials` of Optuna's seeded TPE sampler, optionally pruned.

An adaptive kind: its settings are trials asked one at a time as workers free up
(`hpstudy.study.search.OptunaSearch` keeps them in a journal file in the study
folder). Validation uses the space's corners; the cost plan, `n_trials` random
draws standing in for the trials (at most that many runs: pruning stops some early).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from hpstudy.study.kinds import Search, register_kind
from hpstudy.study.kinds.space import MAX_DRAWS, SearchStage, corners, draw_random

if TYPE_CHECKING:
    from hpstudy.study.plan import Plan
    from hpstudy.study.state import StudyFolder

PRUNERS = {"median": "median pruner", "asha": "ASHA pruner", None: "no pruner"}


@register_kind
class OptunaStage(SearchStage):
    """kind "optuna": `n_trials` of Optuna's seeded TPE sampler, optionally pruned."""

    kind: Literal["optuna"]
    n_trials: int = Field(ge=1, le=MAX_DRAWS)
    pruner: Literal["median", "asha"] | None = None

    adaptive: ClassVar[bool] = True
    words: ClassVar[str] = "An Optuna TPE search over"

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "space": self.space_identity(), "n_trials": self.n_trials,
                "pruner": self.pruner, "sampler_seed": self.sampler_seed,
                "epochs": self.epochs, "overrides": self.overrides}  # fmt: skip

    def describe(self) -> str:
        return (
            f"Optuna TPE, {self.n_trials} trials (seed {self.sampler_seed}, "
            f"{PRUNERS[self.pruner]}): {self.space_text()}"
        )

    def size(self) -> int:
        return self.n_trials

    def candidates(self) -> list[Any]:
        return corners(self.space)

    def stand_ins(self) -> list[Any]:
        return draw_random(self.space, self.n_trials, self.sampler_seed)

    def missing(self) -> str | None:
        try:
            import optuna  # noqa: F401
        except ImportError:
            return "Optuna: pip install 'hpstudy[optuna]'"
        return None

    def search(
        self, folder: StudyFolder, plan: Plan, k: int, winners: dict[str, Any], seen: set[str]
    ) -> Search:
        from hpstudy.study.search import OptunaSearch

        return OptunaSearch(folder, plan, k, winners, seen)
