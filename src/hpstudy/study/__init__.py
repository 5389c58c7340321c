"""A study as data: the study file, the plan (one expansion), the typed state, selection, runner.

The names below are the public API.
"""

from hpstudy.study.plan import BUDGETS, Plan, budget_epochs
from hpstudy.study.runner import default_out, parse_seeds, run_study, status_text
from hpstudy.study.select import select, summarise
from hpstudy.study.spec import StudyConfig, builtin_names, describe, load_study
from hpstudy.study.state import StudyFolder, StudyState

__all__ = [
    "BUDGETS",
    "Plan",
    "StudyConfig",
    "StudyFolder",
    "StudyState",
    "budget_epochs",
    "builtin_names",
    "default_out",
    "describe",
    "load_study",
    "parse_seeds",
    "run_study",
    "select",
    "status_text",
    "summarise",
]
