"""hpstudy: rerun, trust and extend hyperparameter studies."""

__version__ = "0.1.0"
