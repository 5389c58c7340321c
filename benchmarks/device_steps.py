"""The steps of benchmarks/device_check.sh, one per call, each appending what it measured to
OUT/device_check.jsonl (one JSON object a line) and OUT/device_check.md (a table row) as soon
as it has it, so a step killed by its timeout, or a script killed by the device tool's limit,
still leaves every figure measured before.

    python benchmarks/device_steps.py [--dry-run] --out OUT --work WORK STEP

STEP is one of: prepare (environment, synthetic CIFAR-shaped archive), tests (the CUDA tests),
runs (a real run at 1, 2, 4 at once), grid (the eager step grid), study (a smoke study with its
cost block), compile (torch.compile, then CUDA graphs). `--dry-run` is the CPU form: the same
steps at sizes that cost the test suite seconds (width 0.125, a few hundred images, fp32).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
JSONL, MARKDOWN = "device_check.jsonl", "device_check.md"


@dataclass(frozen=True)
class Sizes:
    """The GPU form, or the dry run's on a CPU."""

    device: str
    width: float
    train_images: int  # archive's train file; the split gives 4/5 to training
    test_images: int
    epochs: int  # of the real run
    limit_train: int | None  # the real run's train images (None: the whole split)
    batch: int
    concurrency: tuple[int, ...]
    warmup_steps: int
    steps: int
    precisions: tuple[str, ...]
    study: str  # a built-in name, or "tiny" (written on the spot)


GPU = Sizes(
    "cuda", 1.0, 50_000, 10_000, 3, None, 128, (1, 2, 4), 20, 50, ("fp32", "bf16"), "seed-report"
)
# the dry run: 80 train images at batch 32 leave a partial last batch of 16, as 40,000 at 128
# leave 64; torch is imported by each step (the runs step's driver needs none), and the study
# runs in the step's process without the final export and figure rasterisation, as the
# suite's in-process studies do: the whole dry run costs the suite seconds
DRY = Sizes("cpu", 0.125, 160, 32, 2, 80, 32, (2,), 1, 1, ("fp32",), "tiny")


def log(message: str) -> None:
    print(f"device_steps: {message}", file=sys.stderr, flush=True)


class Record:
    """Appends one line per finding to OUT's two files, flushed at once."""

    def __init__(self, out: Path, step: str) -> None:
        self.out, self.step = out, step

    def __call__(self, what: str, **figures: Any) -> None:
        line = {"step": self.step, "what": what, "time": time.strftime("%H:%M:%S"), **figures}
        with open(self.out / JSONL, "a") as f:
            f.write(json.dumps(line, default=str) + "\n")
        md = self.out / MARKDOWN
        if not md.exists():
            md.write_text("| step | what | figures |\n|---|---|---|\n")
        shown = ", ".join(f"{k} {fmt(v)}" for k, v in figures.items())
        with open(md, "a") as f:
            f.write(f"| {self.step} | {what} | {shown} |\n")
        log(f"{self.step} {what}: {shown}")


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "/").replace("\n", " ")[:300]


# ---------------------------------------------------------------- prepare


def prepare(s: Sizes, work: Path, record: Record) -> None:
    """The environment, and a CIFAR-shaped archive made here (the real one is too large to
    carry): tests/cifar_archive.py's learnable per-class colours. No torch import: the
    device itself is named by the tests step (and nvidia-smi in device_check.log)."""
    from importlib.metadata import version

    sys.path.insert(0, str(REPO / "tests"))
    from cifar_archive import write_cifar100

    record(
        "environment",
        torch=version("torch"),
        pydantic=version("pydantic"),
        python=sys.version.split()[0],
        cores=os.cpu_count(),
        omp_threads=os.environ.get("OMP_NUM_THREADS"),
    )
    t0 = time.perf_counter()
    write_cifar100(work / "data", s.train_images, s.test_images)
    record("synthetic archive", train=s.train_images, test=s.test_images,
           seconds=time.perf_counter() - t0)


# ---------------------------------------------------------------- tests


def tests(s: Sizes, out: Path, record: Record) -> None:
    """The CUDA-marked tests, in this process (no second interpreter to start)."""
    import xml.etree.ElementTree as ET

    import pytest
    import torch

    from hpstudy.run import device_name, resolve_device

    device = resolve_device(s.device)
    record("device", name=device_name(device), torch=torch.__version__, cuda=torch.version.cuda,
           threads=torch.get_num_threads())
    xml = out / "cuda_tests.xml"
    t0 = time.perf_counter()
    code = pytest.main(
        ["-m", "cuda", str(REPO / "tests" / "test_cuda.py"), "-q", "-p", "no:cacheprovider",
         f"--junitxml={xml}", "-o", "addopts="]
    )
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    record("pytest -m cuda tests/test_cuda.py", exit_code=int(code), **counts,
           seconds=time.perf_counter() - t0)


# ---------------------------------------------------------------- runs at once


def gpu_memory_mib() -> int | None:
    try:
        text = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10,
        ).stdout
        return sum(int(v) for v in text.split())
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def watch_memory(stop: threading.Event, peaks: list[int]) -> None:
    """The GPU's peak memory in use (all processes), read by nvidia-smi twice a second."""
    while not stop.wait(0.5):
        peaks[0] = max(peaks[0], gpu_memory_mib() or 0)


def runs(s: Sizes, work: Path, record: Record, limit_s: float) -> None:
    """`hpstudy train` (3 epochs: partial last batch, evaluation, checkpoints) in k processes at
    once, as --runs-per-device k would: wall time, aggregate images/s, peak GPU memory."""
    path = os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    for k in s.concurrency:
        threads = 1 if s.device == "cpu" else max(1, (os.cpu_count() or 1) // k)
        base = [sys.executable, "-m", "hpstudy", "train", "--root", str(work / "data"),
                "--no-verify", "--device", s.device, "--width", str(s.width),
                "--epochs", str(s.epochs), "--batch-size", str(s.batch), "--json"]
        if s.limit_train:
            base += ["--limit-train", str(s.limit_train), "--limit-val", "32"]
        # each run gets its share of the cores, for its kernels and for Inductor's compilers
        run_env = {**env, "OMP_NUM_THREADS": str(threads)}
        run_env["TORCHINDUCTOR_COMPILE_THREADS"] = str(threads)
        t0 = time.perf_counter()
        procs = [
            subprocess.Popen([*base, "--seed", str(i), "--out", str(work / f"runs{k}" / str(i))],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=run_env)
            for i in range(k)
        ]
        peaks = [0]
        stop = threading.Event()
        watcher = threading.Thread(target=watch_memory, args=(stop, peaks), daemon=True)
        watcher.start()
        results = []
        for p in procs:
            try:
                stdout, stderr = p.communicate(timeout=max(5, limit_s - (time.perf_counter() - t0)))
            except subprocess.TimeoutExpired:
                for q in procs:
                    q.kill()
                record(f"{k} at once", error=f"timed out after {limit_s:.0f} s")
                return
            if p.returncode != 0:
                record(f"{k} at once", error=stderr.strip().splitlines()[-1:] or p.returncode)
                return
            results.append(json.loads(stdout))
        wall = time.perf_counter() - t0
        stop.set()
        watcher.join()
        rates = [r["final"]["images_per_s"] for r in results if r.get("final")]
        train = (s.limit_train or s.train_images - s.train_images // 5) * s.epochs
        record(f"{k} at once", runs=k, wall_s=wall, images_per_s_all=k * train / wall,
               last_epoch_images_per_s=sum(rates), peak_gpu_mib=peaks[0] or None,
               val_acc=[round(r["final"]["val_acc"], 4) for r in results if r.get("final")])


# ---------------------------------------------------------------- the eager grid


def trainer_cell(s: Sizes, d: Any, **choice: Any) -> dict[str, Any]:
    """Images/s of Trainer.train_epoch after warm-up for one choice of execution."""
    import torch
    from _common import time_epoch

    from hpstudy.config import RunConfig
    from hpstudy.run import Trainer

    bench = choice.pop("cudnn_benchmark", False)
    batch = choice.pop("batch_size", s.batch)
    config = RunConfig(width=s.width, batch_size=batch, device=s.device, **choice)
    trainer = Trainer.create(config)  # compile: a mode, or false (the eager grid)
    torch.backends.cudnn.benchmark = bench  # after create, which sets the table's choice
    steps = s.steps * s.batch // batch or 1
    warm = d.head(train=max(1, s.warmup_steps) * batch + batch // 2)  # a partial batch too
    t0 = time.perf_counter()
    time_epoch(trainer, warm, epoch=10_000)
    first = time.perf_counter() - t0
    seconds = time_epoch(trainer, d.head(train=steps * batch), epoch=0)
    return {"images_per_s": steps * batch / seconds, "first_epoch_s": first}


def grid(s: Sizes, record: Record) -> None:
    import torch
    from _common import synthetic_cifar

    from hpstudy.config import RunConfig
    from hpstudy.run import device_data

    cifar = synthetic_cifar(max(2 * s.steps * 4 * s.batch, 8 * s.batch))
    d = device_data(cifar, RunConfig(device=s.device, batch_size=s.batch), torch.device(s.device))
    cells: list[dict[str, Any]] = [
        {"precision": p, "channels_last": cl, "cudnn_benchmark": b}
        for p in s.precisions for cl in (True, False) for b in (False, True)
    ]
    cells += [
        {"precision": "fp16", "channels_last": True, "cudnn_benchmark": True},
        {"precision": s.precisions[-1], "channels_last": True, "ema_decay": 0.999},
        {"precision": s.precisions[-1], "channels_last": True, "batch_size": 4 * s.batch},
    ]
    if s.device == "cpu":  # the dry run: one cell of each kind, not the whole grid
        cells = [cells[0], *cells[-3:]]
    for cell in cells:
        name = " ".join(f"{k}={v}" for k, v in cell.items())
        if cell["precision"] == "fp16" and s.device == "cpu":
            record(name, skipped="fp16 needs CUDA")
            continue
        try:
            record(name, compile=False, **trainer_cell(s, d, compile=False, **dict(cell)))
        except Exception as err:  # a cell that fails is a finding; the next one still runs
            record(name, error=f"{type(err).__name__}: {str(err)[:200]}")


# ---------------------------------------------------------------- a smoke study


TINY_STUDY = """
name = "tiny"
description = "device_check's dry run: seed-report's shape at a width a CPU trains in seconds"
seeds = [0]
selection = "val_acc"
[base]
width = 0.125
batch_size = 32
limit_train = 64
limit_val = 32
[[stages]]
name = "learning rate"
field = "lr"
values = [0.01, 0.05]
epochs = 1
"""


def study(s: Sizes, work: Path, record: Record, dry_run: bool) -> None:
    """`hpstudy study run --budget smoke` end to end in this process (the CLI itself, its lines
    captured): the cost block's prediction against the wall time it took."""
    import contextlib
    import io
    import runpy

    target = s.study
    if target == "tiny":
        target = str(work / "tiny.toml")
        Path(target).write_text(TINY_STUDY)
    if dry_run:  # left out, as the suite's in-process studies leave them out
        import hpstudy.report
        import hpstudy.study.remote

        hpstudy.study.remote.export_final = lambda *args: None
        hpstudy.report.save = blank_figure
    os.environ["HPSTUDY_CACHE"] = str(work / "cache")
    argv = ["study", "run", target, "--budget", "smoke", "--root", str(work / "data"),
            "--no-verify", "--device", s.device, "--out", str(work / "study"), "--json"]
    err, out = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    sys.argv = ["hpstudy", *argv]  # `python -m hpstudy ARGV`, in this process
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            runpy.run_module("hpstudy", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    wall = time.perf_counter() - t0
    sys.stderr.write(err.getvalue())
    predicted = [line.strip() for line in err.getvalue().splitlines() if "predicted on" in line]
    if code != 0:
        record("smoke study", error=err.getvalue().strip().splitlines()[-1:], exit_code=code)
        return
    record("smoke study", wall_s=wall, cost_block=predicted[:1] or None)


def blank_figure(fig: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    fig.clear()
    return path


# ---------------------------------------------------------------- compile


def compiled(s: Sizes, record: Record) -> None:
    """torch.compile (static shapes: the partial batch gets its own graph, once), then a
    second run of that shape in the same process (it takes the kept compiled model over:
    its first epoch compiles nothing), then with CUDA graphs (compile = "reduce-overhead");
    graphs and recompiles counted by dynamo."""
    import torch
    from _common import synthetic_cifar
    from torch._dynamo.utils import counters

    from hpstudy.config import RunConfig
    from hpstudy.run import device_data

    p = s.precisions[-1]
    cifar = synthetic_cifar(max(2 * s.steps * s.batch, 4 * s.batch))
    d = device_data(cifar, RunConfig(device=s.device, batch_size=s.batch), torch.device(s.device))
    for mode, again in (("default", False), ("default", True), ("reduce-overhead", False)):
        if not again:  # the reused cell keeps the graphs of the cell before it
            torch._dynamo.reset()
            counters.clear()
        name = f"compile mode={mode}{' reused' if again else ''}"
        try:
            cell = trainer_cell(s, d, precision=p, channels_last=True, cudnn_benchmark=True,
                                compile=mode)
        except Exception as err:
            record(name, error=f"{type(err).__name__}: {str(err)[:200]}")
            continue
        graphs = dict(counters["stats"]).get("unique_graphs")
        recompiles = sum(counters["recompiles"].values())
        record(f"{name} precision={p}", **cell, graphs=graphs, recompiles=recompiles)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=("prepare", "tests", "runs", "grid", "study", "compile"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--limit", type=float, default=300.0, help="seconds this step may take")
    args = p.parse_args(argv)
    s = DRY if args.dry_run else GPU
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    record = Record(args.out, args.step)
    if args.step == "prepare":
        prepare(s, args.work, record)
    elif args.step == "tests":
        tests(s, args.out, record)
    elif args.step == "runs":
        runs(s, args.work, record, args.limit)
    elif args.step == "grid":
        grid(s, record)
    elif args.step == "study":
        study(s, args.work, record, args.dry_run)
    else:
        compiled(s, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
