"""hpstudy: rerun, trust and extend hyperparameter studies."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # `hpstudy.load_model` and `hpstudy.run_study` without importing torch for every
    # `import hpstudy`
    if name == "load_model":
        from hpstudy.export import load_model

        return load_model
    if name == "run_study":  # a study (config, dict, file or name) in, a StudyResult out
        from hpstudy.study.runner import run

        return run
    if name in ("StudyConfig", "StudyResult"):
        from hpstudy import study

        return getattr(study, name)
    raise AttributeError(f"module 'hpstudy' has no attribute {name!r}")


__all__ = ["StudyConfig", "StudyResult", "__version__", "load_model", "run_study"]
