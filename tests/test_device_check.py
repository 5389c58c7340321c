"""benchmarks/device_check.sh, the one command the next GPU session runs, works end to end in
its CPU form (`--dry-run`: the same steps at tiny sizes) and leaves a JSON line and a table row
per finding as each step finishes, so that a step killed by its timeout costs only itself.

The dry run: a handful of processes at width 0.125 on 160 images, one thread each (about 35 s of
CPU); the timeout test runs a stand-in interpreter that only sleeps (~2 s, no CPU).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "device_check.sh"
STEPS = ["prepare", "tests", "runs", "grid", "study", "compile", "done"]


def device_check(out: Path, work: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "OUT": str(out), "WORK": str(work), "PYTHON": sys.executable}
    environ.pop("PYTHONPATH", None)  # the script puts its own src/ first, as on the GPU
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env={**environ, **env},
        timeout=600,
    )


def lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "device_check.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    out = tmp_path_factory.mktemp("device-check") / "out"
    result = device_check(out, out.parent / "work", "--dry-run")
    assert result.returncode == 0, result.stderr[-2000:]
    return out, lines(out)


def test_every_step_runs_in_order_and_writes_a_line_per_finding(
    dry_run: tuple[Path, list[dict[str, Any]]],
) -> None:
    out, found = dry_run
    steps = [line["step"] for line in found]
    assert sorted(set(steps), key=steps.index) == STEPS  # each step, in the script's order
    assert not [line for line in found if "error" in line and line["step"] != "compile"]
    table = (out / "device_check.md").read_text().splitlines()
    assert table[:2] == ["| step | what | figures |", "|---|---|---|"]
    assert len(table) == 2 + len(found)  # a row for every JSON line
    # what comes back from the device tool: at most 8 files, plain names
    assert sorted(p.name for p in out.iterdir()) == [
        "cuda_tests.xml", "device_check.jsonl", "device_check.log", "device_check.md"
    ]


def test_each_step_measured_what_the_gpu_session_needs(
    dry_run: tuple[Path, list[dict[str, Any]]],
) -> None:
    _, found = dry_run
    by = {(line["step"], line["what"]): line for line in found}
    tests = by["tests", "pytest -m cuda tests/test_cuda.py"]
    assert tests["exit_code"] == 0 and tests["tests"] >= 8 and tests["skipped"] == tests["tests"]
    runs = by["runs", "2 at once"]  # two real `hpstudy train` processes, partial batch and all
    assert runs["runs"] == 2 and len(runs["val_acc"]) == 2 and runs["images_per_s_all"] > 0
    assert runs["peak_gpu_mib"] is None  # no nvidia-smi here
    cells = [line for line in found if line["step"] == "grid"]
    assert [c["what"] for c in cells if "skipped" in c] == [
        "precision=fp16 channels_last=True cudnn_benchmark=True"
    ]
    assert all(c["images_per_s"] > 0 for c in cells if "skipped" not in c)
    assert any("ema_decay" in c["what"] for c in cells if "images_per_s" in c)
    study = by["study", "smoke study"]
    assert study["wall_s"] > 0 and "predicted on cpu" in study["cost_block"][0]
    assert by["done", "total"]["limit"] == 480


def test_a_step_past_its_time_is_killed_and_says_so_and_the_rest_say_out_of_time(
    tmp_path: Path,
) -> None:
    sleeper = tmp_path / "python"  # an interpreter that hangs, as a wedged CUDA step would
    sleeper.write_text("#!/bin/sh\nexec sleep 60\n")
    sleeper.chmod(0o755)
    out = tmp_path / "out"
    result = device_check(
        out, tmp_path / "work", "--dry-run",
        PYTHON=str(sleeper), DEVICE_CHECK_SECONDS="2", DEVICE_CHECK_MIN_STEP="1",
    )
    assert result.returncode == 0, result.stderr
    found = lines(out)
    assert found[0] == {**found[0], "step": "prepare", "what": "timed out"}
    assert found[0]["error"] == "killed after 2 s"
    skipped = [line["step"] for line in found if line["what"] == "skipped"]
    assert skipped == ["tests", "runs", "grid", "study", "compile"]
    assert found[-1]["step"] == "done" and found[-1]["seconds"] <= 4
