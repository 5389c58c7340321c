"""A study as data: the study file, its stage kinds, the plan (one expansion), the typed state,
selection, the session that runs it and the runner's API.

The names below are the public API. They are imported on first use (PEP 562), so that
`import hpstudy.study.budget` or the command line's parser does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_WHERE = {
    "Analysis": "analysis",
    "analyse": "analysis",
    "Speed": "cost",
    "StudyCost": "cost",
    "budget_costs": "cost",
    "cost_block": "cost",
    "epoch_images": "cost",
    "epoch_seconds": "cost",
    "measure_speed": "cost",
    "run_seconds": "cost",
    "study_cost": "cost",
    "BUDGETS": "budget",
    "budget_epochs": "budget",
    "Plan": "plan",
    "StudyResult": "runner",
    "default_out": "runner",
    "parse_seeds": "runner",
    "run": "runner",
    "run_study": "runner",
    "StudySession": "session",
    "Progress": "status",
    "folder_progress": "status",
    "status_text": "status",
    "watch_status": "status",
    "StageKind": "kinds",
    "kind_of": "kinds",
    "register_kind": "kinds",
    "select": "select",
    "summarise": "select",
    "StudyConfig": "spec",
    "study_from": "spec",
    "builtin_names": "spec",
    "describe": "spec",
    "load_study": "spec",
    "missing_extras": "spec",
    "parse_study": "spec",
    "starter_text": "spec",
    "study_text": "spec",
    "StudyFolder": "state",
    "StudyState": "state",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'hpstudy.study' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"hpstudy.study.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = sorted(_WHERE)
