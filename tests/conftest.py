"""Shared fixtures: a small synthetic CIFAR-100 and the real one rebuilt from ../shared/data."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cifar_archive import write_cifar100

# the shared/ folder sits beside the repository (CI keeps a copy beside the clone)
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
UNREACHABLE_URL = "http://127.0.0.1:9/cifar-100-python.tar.gz"


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (pyproject's addopts: 2 workers), each worker computes on its share
    of the cores, as hpstudy's own workers do (cores ÷ workers), and so do the processes its
    tests start: two workers each running OpenMP on every core spin against each other, and
    a training test then takes five times as long. A thread count set by the caller stays."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers is None:
        return
    share = max(1, (os.cpu_count() or 1) // int(workers))
    os.environ.setdefault("OMP_NUM_THREADS", str(share))
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, speed_cache: Path) -> None:
    """No test may download the real 160 MB archive: a missing dataset fails fast instead.
    Nor write the user's speed cache: the tests share one of their own."""
    monkeypatch.setenv("HPSTUDY_CIFAR100_URL", UNREACHABLE_URL)
    monkeypatch.setenv("HPSTUDY_CACHE", str(speed_cache))
    # a speed read on a busy machine is measured again by every study (the product's rule,
    # tested in test_contact): the tests' own studies, in this process, keep the session's
    # first reading instead, whatever else shares the machine
    monkeypatch.setattr("hpstudy.study.cost.load_average", lambda: 0.0)


@pytest.fixture(autouse=True)
def _study_export(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A study exports its final model at the end (about 3 s even for a tiny model: ONNX
    tracing, ONNX Runtime, timings). The tests of that step are marked `study_export`; the
    other in-process studies (some 40 of them) leave it out to keep the suite fast. Studies
    run through the CLI in a subprocess still export."""
    if request.node.get_closest_marker("study_export") is None:
        monkeypatch.setattr("hpstudy.study.remote.export_final", lambda *args: None)


# a valid 1x1 PNG: what an unmarked test's report holds in place of each rendered figure
BLANK_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154"
    "789c63f8ffff3f030008fc02fea79aa0a00000000049454e44ae426082"
)


@pytest.fixture(autouse=True)
def _report_figures(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A report rasterises every figure (about half a second each on 2 cores, a dozen per
    study). The figures are built as always (their plotting code runs), but only the
    tests marked `report_figures` render them to pixels; the others' reports hold a blank
    PNG in each figure's place. Studies run through the CLI in a subprocess still render."""
    if request.node.get_closest_marker("report_figures") is not None:
        return
    from hpstudy.files import write_atomic

    def blank(fig: object, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, BLANK_PNG)
        fig.clear()  # type: ignore[attr-defined]
        return path

    monkeypatch.setattr("hpstudy.report.save", blank)


@pytest.fixture(scope="session")
def speed_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Data root with 500 train / 100 test images over 10 colour-coded (learnable) classes.

    Session-scoped and shared: tests must not modify it (copy it or write their own).
    """
    root = tmp_path_factory.mktemp("synthetic")
    write_cifar100(root, n_train=500, n_test=100, classes=10)
    return root


@pytest.fixture(scope="session")
def real_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Data root with the real CIFAR-100 pickles, rebuilt once per session (about 4 s)."""
    script = SHARED_DATA / "make_cifar100_python.py"
    if not script.is_file():
        pytest.skip(f"real CIFAR-100 shards not found in {SHARED_DATA}")
    root = tmp_path_factory.mktemp("real")
    subprocess.run([sys.executable, str(script), str(root)], check=True, capture_output=True)
    return root


@pytest.fixture(autouse=True)
def _no_kept_compiles() -> Iterator[None]:
    """A compiled model is kept for the process (hpstudy.run.compiled): a test that patched
    torch.compile must not hand its stand-in to the next test's runs."""
    yield
    compiled = sys.modules.get("hpstudy.run.compiled")
    if compiled is not None:
        compiled.forget_compiled()
