"""hpstudy: rerun, trust and extend hyperparameter studies."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # `hpstudy.load_model` without importing torch for every `import hpstudy`
    if name == "load_model":
        from hpstudy.export import load_model

        return load_model
    raise AttributeError(f"module 'hpstudy' has no attribute {name!r}")


__all__ = ["__version__", "load_model"]
