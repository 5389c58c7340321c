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
# finished trials before a pruner (as make_pruner builds it, Optuna's defaults) judges any:
# the median pruner's n_startup_trials; ASHA's 'auto' min_resource, read off the first
PRUNER_STARTUP = {"median": 5, "asha": 1}


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

    def cautions(self, epochs: int) -> list[str]:
        """A pruner that cannot prune: too few trials after its start-up, or too few epochs
        (a trial is judged after an epoch; one epoch leaves nothing to stop)."""
        if self.pruner is None:
            return []
        where, startup = f"stage {self.name!r}", PRUNER_STARTUP[self.pruner]
        found = []
        if self.n_trials <= startup:
            found.append(
                f"{where}: the {PRUNERS[self.pruner]} prunes nothing with n_trials = "
                f"{self.n_trials} (it judges none before {startup} have finished): set n_trials "
                f"above {startup}, or drop the pruner"
            )
        if epochs < 2:
            found.append(
                f"{where}: the {PRUNERS[self.pruner]} prunes nothing at {epochs} epoch per run "
                "(a trial is judged after each epoch but the last): give the stage more epochs "
                "(or a larger --budget), or drop the pruner"
            )
        return found

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
