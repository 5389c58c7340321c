"""A study as data: the study file, the plan (one expansion), the typed state, selection, runner.

The names below are the public API.
"""

from hpstudy.study.cost import (
    Speed,
    StudyCost,
    budget_costs,
    cost_block,
    epoch_images,
    epoch_seconds,
    measure_speed,
    study_cost,
)
from hpstudy.study.plan import BUDGETS, Plan, budget_epochs
from hpstudy.study.runner import default_out, parse_seeds, run_study, status_text, watch_status
from hpstudy.study.select import select, summarise
from hpstudy.study.spec import (
    StudyConfig,
    builtin_names,
    describe,
    load_study,
    parse_study,
    starter_text,
    study_text,
)
from hpstudy.study.state import StudyFolder, StudyState

__all__ = [
    "BUDGETS",
    "Plan",
    "Speed",
    "StudyConfig",
    "StudyCost",
    "StudyFolder",
    "StudyState",
    "budget_costs",
    "budget_epochs",
    "builtin_names",
    "cost_block",
    "default_out",
    "describe",
    "epoch_images",
    "epoch_seconds",
    "load_study",
    "measure_speed",
    "parse_seeds",
    "parse_study",
    "run_study",
    "select",
    "starter_text",
    "status_text",
    "study_cost",
    "study_text",
    "summarise",
    "watch_status",
]
