"""benchmarks/gpu_check.py completes on the CPU in its reduced form and writes its JSON, its
summary and an `auto` table hpstudy can load, saying that the GPU figures are missing.

One subprocess of the quick form: about 15 s of CPU.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from hpstudy.config import RunConfig
from hpstudy.run import Execution

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), *sys.path])}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the full check takes 8 minutes; run it by hand")
    out = tmp_path_factory.mktemp("gpu-check") / "out"
    result = run_check("--quick", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    return out, json.loads((out / "gpu_check.json").read_text())


def test_it_writes_json_and_summary_saying_gpu_figures_are_missing(
    checked: tuple[Path, dict[str, Any]],
) -> None:
    out, r = checked
    assert r["mode"] == "quick" and r["gpu_figures_missing"] is True
    assert r["within_time_limit"]
    summary = (out / "gpu_check.md").read_text()
    assert "The GPU figures are missing" in summary
    assert "GPU: **missing**" in summary
    # without a GPU the quick form leaves the CUDA tests to device_check's dry run (its test
    # checks they are collected and skip) and says so
    assert r["cuda_tests"]["run"] is False
    assert "not run: quick form without a GPU: `benchmarks/device_check.sh --dry-run`" in summary


def test_every_cell_of_the_plan_is_measured_or_says_why_not(
    checked: tuple[Path, dict[str, Any]],
) -> None:
    _, r = checked
    cells = {(c["precision"], c["channels_last"], c["compile"]): c for c in r["throughput"]}
    assert len(cells) == 8  # {fp32, bf16} x channels_last x compile
    for key, cell in cells.items():
        measured = key[0] == "fp32" and not key[2]  # what the quick form keeps
        assert ("images_per_s" in cell) == measured, cell
        assert measured or "left out in quick form" in cell["skipped"]
        assert not measured or cell["images_per_s"] > 0
    together = {c["runs"]: c for c in r["concurrency"]}
    assert sorted(together) == [1, 2]
    assert all(c["aggregate_images_per_s"] > 0 for c in together.values())
    acc = r["accuracy"]
    assert acc["gpu"] is None and acc["agree"] is None
    assert 0 <= acc["cpu"]["val_acc"] <= 1 and acc["margin"] > 0
    p = r["prediction"]
    assert p["study"] == "seed-report" and p["runs"] == 8 and p["epochs"] > 1000
    assert p["predicted_hours"] > 0 and p["model_width"] == 0.125


def test_the_table_it_writes_is_one_hpstudy_loads(
    checked: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, _ = checked
    table = json.loads((out / "auto_defaults.json").read_text())
    shipped = json.loads((REPO / "src" / "hpstudy" / "auto_defaults.json").read_text())
    assert table["rows"]["cuda"] == shipped["rows"]["cuda"]  # nothing measured there
    assert "quick form" in table["rows"]["cpu"]["measured_on"]
    monkeypatch.setenv("HPSTUDY_AUTO_DEFAULTS", str(out / "auto_defaults.json"))
    ex = Execution.resolve(RunConfig(device="cpu"))
    assert ex.eval_batch_size == table["rows"]["cpu"]["eval_batch_size"]
    assert ex.precision == table["rows"]["cpu"]["precision"]


def test_an_out_that_is_a_file_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # the script's main, in this process
    gpu_check = importlib.import_module("gpu_check")
    target = tmp_path / "file"
    target.write_text("x")
    assert gpu_check.main(["--quick", "--out", str(target)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"error: --out {target}: not a folder"]
