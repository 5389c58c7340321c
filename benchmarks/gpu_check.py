"""One prepared command for the minutes of GPU time a project gets: everything hpstudy must
learn on a GPU, in at most 8 minutes, written to DIR/gpu_check.json and DIR/gpu_check.md.

1. the test suite's CUDA-marked tests (`pytest -m cuda`);
2. training images/s of hpstudy's step at batch 128, after warm-up, for precision
   {fp32, bf16} x channels_last {on, off} x compile {off, on};
3. aggregate images/s of 1, 2, 4 and 8 runs training at once on the one device
   (what `--devices 0,0,...` / `--runs-per-device N` would give);
4. evaluation images/s at batch 256 and 1,024;
5. a short accuracy run (the same config on the CPU and on the GPU, 2 epochs on 4,096
   images) whose final val accuracies must agree within noise;
6. the predicted wall time of the full `seed-report` study from these figures;
7. the `auto` table these figures imply (DIR/auto_defaults.json: copy it to
   src/hpstudy/auto_defaults.json, or point $HPSTUDY_AUTO_DEFAULTS at it).

Without CUDA it runs the same plan on the CPU in a reduced form (a narrower model, a few
steps, 1-2 runs at once, compile left out) and says that the GPU figures are missing;
`--quick` shrinks it further for CI.

    python benchmarks/gpu_check.py --out gpu-check/                   # on the GPU machine
    python benchmarks/gpu_check.py --root /data --no-verify --out d   # real CIFAR-100
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from _common import environment, time_epoch

from hpstudy import constants, data
from hpstudy.config import RunConfig
from hpstudy.errors import HpstudyError
from hpstudy.files import stamped
from hpstudy.run import DeviceData, Trainer, device_data, load_data, resolve_device
from hpstudy.study import Plan, load_study

REPO = Path(__file__).resolve().parents[1]
SHIPPED_TABLE = REPO / "src" / "hpstudy" / "auto_defaults.json"
TIME_LIMIT_S = 8 * 60
BATCH = 128
# a choice must beat the current one by this much to change a default: noise is not a win
MARGIN = 1.10


@dataclass(frozen=True)
class Sizes:
    """How big each part of the check is: full on a GPU, reduced on a CPU, quick for CI."""

    mode: str
    width: float
    warmup_steps: int
    steps: int
    compile: bool
    precisions: tuple[str, ...]
    concurrency: tuple[int, ...]
    eval_images: int
    accuracy_train: int
    accuracy_val: int
    accuracy_epochs: int
    images: int  # synthetic images made in memory when no --root is given


SIZES = {
    "gpu": Sizes(
        "gpu", 1.0, 20, 50, True, ("fp32", "bf16"), (1, 2, 4, 8), 8192, 4096, 1024, 2, 16384
    ),
    "cpu": Sizes("cpu", 0.125, 1, 4, False, ("fp32", "bf16"), (1, 2), 1024, 1024, 256, 2, 2048),
    # bf16 autocast on a CPU without native bf16 is ~16x slower: too slow for CI's minute
    "quick": Sizes("quick", 0.125, 1, 2, False, ("fp32",), (1, 2), 512, 256, 128, 1, 1024),
}


class Clock:
    def __init__(self, limit: float) -> None:
        self.start, self.limit = time.perf_counter(), limit

    def left(self) -> float:
        return self.limit - (time.perf_counter() - self.start)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- images


LEARNABLE_CLASSES = 10  # of the 100 outputs: few enough to be learnt in a few dozen steps


def learnable_cifar(n: int, seed: int = 0) -> data.Cifar100:
    """CIFAR-shaped images whose class shows (a per-class colour pattern plus noise), so
    the accuracy run learns something and a CPU/GPU disagreement would show."""
    gen = torch.Generator().manual_seed(seed)
    patterns = torch.randint(40, 216, (constants.NUM_CLASSES, 3, 2, 2), generator=gen)
    patterns = patterns.repeat_interleave(16, 2).repeat_interleave(16, 3)

    def split(k: int) -> data.Split:
        fine = torch.randint(0, LEARNABLE_CLASSES, (k,), generator=gen)
        noise = torch.randint(-40, 41, (k, *constants.IMAGE_SHAPE), generator=gen)
        images = (patterns[fine] + noise).clamp(0, 255).to(torch.uint8)
        per_superclass = constants.NUM_CLASSES // constants.NUM_SUPERCLASSES
        return data.Split(images=images, fine=fine, coarse=fine // per_superclass)

    return data.Cifar100(
        train=split(n),
        test=split(max(1, n // 5)),
        fine_names=[f"class {i}" for i in range(constants.NUM_CLASSES)],
        coarse_names=[f"superclass {i}" for i in range(constants.NUM_SUPERCLASSES)],
    )


def source(args: argparse.Namespace, sizes: Sizes) -> tuple[data.Cifar100, str]:
    if args.root is not None:
        return load_data(args.root, args.verify), str(data.resolve_root(args.root))
    return learnable_cifar(sizes.images), f"synthetic ({sizes.images} learnable images)"


def base_config(sizes: Sizes, device: torch.device, **update: Any) -> RunConfig:
    return RunConfig(width=sizes.width, batch_size=BATCH, device=str(device), **update)


# ---------------------------------------------------------------- 1. CUDA tests


def cuda_tests(out: Path, clock: Clock, everywhere: bool) -> dict[str, Any]:
    """`pytest -m cuda` over the whole suite on a GPU; without one, over test_cuda.py only
    (collecting the suite costs CI 10 s of CPU to find tests that would all skip)."""
    tests = REPO / "tests" / ("" if everywhere else "test_cuda.py")
    if not tests.exists():
        return {"run": False, "why": f"{tests} not found (run from a checkout)"}
    xml = out / "cuda_tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", str(tests), "-q"]
    # -o addopts=: the suite's own options ask for pytest-xdist, which a GPU image lacks
    cmd += ["-p", "no:cacheprovider", f"--junitxml={xml}", "-o", "addopts="]
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=REPO, capture_output=True, text=True, timeout=max(30, clock.left() / 3)
        )
    except subprocess.TimeoutExpired:
        return {"run": True, "passed": False, "why": "timed out"}
    result: dict[str, Any] = {"run": True, "exit_code": proc.returncode, "where": str(tests)}
    result["seconds"] = time.perf_counter() - started
    try:
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite[0]
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    except (OSError, ET.ParseError, IndexError):
        counts = {}
    result.update(counts)
    result["passed"] = proc.returncode == 0 and counts.get("skipped", 0) < counts.get("tests", 0)
    if proc.returncode not in (0, 5):  # 5: nothing collected
        result["tail"] = proc.stdout.strip().splitlines()[-15:]
    return result


# ---------------------------------------------------------------- 2. throughput grid


def throughput_cell(
    cifar: data.Cifar100, sizes: Sizes, device: torch.device, **choice: Any
) -> dict[str, Any]:
    config = base_config(sizes, device, limit_train=sizes.steps * BATCH, limit_val=BATCH, **choice)
    trainer = Trainer.create(config)
    d = device_data(cifar, config, device)
    warm = d.head(train=max(1, sizes.warmup_steps) * BATCH)
    time_epoch(trainer, warm, epoch=10_000)  # warm-up (and compilation)
    seconds = time_epoch(trainer, d, epoch=0)
    return {**choice, "images_per_s": sizes.steps * BATCH / seconds}


def throughput_grid(
    cifar: data.Cifar100,
    sizes: Sizes,
    device: torch.device,
    clock: Clock,
    compiled: tuple[bool, ...],
    need_s: float,
) -> list[dict[str, Any]]:
    """The cells with compile in `compiled`, each only if `need_s` seconds are left."""
    cells = []
    for compile_model in compiled:
        for precision in ("fp32", "bf16"):
            for channels_last in (True, False):
                choice = {
                    "precision": precision,
                    "channels_last": channels_last,
                    "compile": compile_model,
                }
                if compile_model and not sizes.compile:
                    cells.append({**choice, "skipped": f"compile is left out in {sizes.mode} form"})
                    continue
                if precision not in sizes.precisions:
                    cells.append(
                        {**choice, "skipped": f"{precision} is left out in {sizes.mode} form"}
                    )
                    continue
                if clock.left() < need_s:
                    cells.append({**choice, "skipped": "out of time"})
                    continue
                try:
                    cell = throughput_cell(cifar, sizes, device, **choice)
                except Exception as err:  # a variant that fails is a finding, not a crash
                    cell = {**choice, "error": f"{type(err).__name__}: {str(err)[:200]}"}
                log(f"throughput {describe_choice(cell)}: {cell.get('images_per_s', cell)}")
                cells.append(cell)
    return cells


def describe_choice(c: dict[str, Any]) -> str:
    layout = "channels_last" if c["channels_last"] else "NCHW"
    return f"{c['precision']} {layout}{' compile' if c['compile'] else ''}"


# ---------------------------------------------------------------- 3. runs at once


def concurrent_worker(
    args: tuple[int, Sizes, str, str | None, bool, int], barrier: Any, results: Any
) -> None:
    seed, sizes, device_name, root, verify, threads = args
    torch.set_num_threads(threads)
    device = torch.device(device_name)
    cifar = learnable_cifar(sizes.images) if root is None else load_data(root, verify)
    config = base_config(sizes, device, limit_train=sizes.steps * BATCH, limit_val=BATCH, seed=seed)
    trainer = Trainer.create(config)
    d = device_data(cifar, config, device)
    time_epoch(trainer, d.head(train=max(1, sizes.warmup_steps) * BATCH), epoch=10_000)
    barrier.wait()  # every run starts its measured steps together
    start = time.time()
    time_epoch(trainer, d, epoch=0)
    results.put((start, time.time()))


def concurrency(
    args: argparse.Namespace, sizes: Sizes, device: torch.device, clock: Clock
) -> list[dict[str, Any]]:
    # CUDA cannot start in a child forked from a process that started it; a forkserver
    # starts clean and imports torch once, so each worker forks in milliseconds, not seconds
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "hpstudy.run"])
    rows = []
    for k in sizes.concurrency:
        if clock.left() < 45:
            rows.append({"runs": k, "skipped": "out of time"})
            continue
        # the threads this process measured with, shared out as the local executor does
        threads = max(1, torch.get_num_threads() // k)
        barrier, results = ctx.Barrier(k), ctx.Queue()
        work = (sizes, str(device), args.root, args.verify, threads)
        procs = [
            ctx.Process(target=concurrent_worker, args=((i, *work), barrier, results))
            for i in range(k)
        ]
        for p in procs:
            p.start()
        try:
            spans = [results.get(timeout=max(30, clock.left() - 20)) for _ in procs]
        except Exception as err:  # a worker died (out of memory): the row says so
            rows.append({"runs": k, "error": f"{type(err).__name__}: {err}"})
            spans = []
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
        if spans:
            wall = max(e for _, e in spans) - min(s for s, _ in spans)
            total = k * sizes.steps * BATCH / wall
            rows.append({"runs": k, "aggregate_images_per_s": total, "per_run": total / k})
            log(f"{k} runs at once: {total:.0f} images/s in all")
    return rows


# ---------------------------------------------------------------- 4. evaluation


def eval_rates(cifar: data.Cifar100, sizes: Sizes, device: torch.device) -> list[dict[str, Any]]:
    rows = []
    for batch in (256, 1024):
        config = base_config(
            sizes, device, limit_train=BATCH, limit_val=sizes.eval_images, eval_batch_size=batch
        )
        trainer = Trainer.create(config)
        d = device_data(cifar, config, device)
        trainer.evaluate(d.head(val=min(batch, sizes.eval_images)))  # warm-up
        trainer.ex.sync()
        t0 = time.perf_counter()
        trainer.evaluate(d)
        trainer.ex.sync()
        rows.append({"batch": batch, "images_per_s": len(d.val_y) / (time.perf_counter() - t0)})
    return rows


# ---------------------------------------------------------------- 5. accuracy, CPU vs GPU


def short_run(cifar: data.Cifar100, sizes: Sizes, device: torch.device) -> dict[str, Any]:
    config = base_config(
        sizes, device, limit_train=sizes.accuracy_train, limit_val=sizes.accuracy_val
    )
    config = config.model_copy(update={"epochs": sizes.accuracy_epochs})
    trainer = Trainer.create(config)
    d: DeviceData = device_data(cifar, config, device)
    t0 = time.perf_counter()
    val: dict[str, Any] = {}
    for epoch in range(config.epochs):
        trainer.set_lr(epoch)
        trainer.train_epoch(d, epoch, False)
        val = trainer.evaluate(d)
    return {
        "device": str(device),
        "precision": trainer.ex.precision,
        "val_acc": val["top1"],
        "val_loss": val["loss"],
        "seconds": time.perf_counter() - t0,
    }


def accuracy(cifar: data.Cifar100, sizes: Sizes, device: torch.device) -> dict[str, Any]:
    cpu = short_run(cifar, sizes, torch.device("cpu"))
    gpu = short_run(cifar, sizes, device) if device.type == "cuda" else None
    n = sizes.accuracy_val
    p = cpu["val_acc"]
    # two accuracies on n images, each with binomial noise: 3 standard deviations of the
    # difference, and never below 3 images' worth
    margin = max(3 * math.sqrt(2 * p * (1 - p) / n), 3 / n)
    result: dict[str, Any] = {"cpu": cpu, "gpu": gpu, "margin": margin, "val_images": n}
    if gpu is not None:
        result["difference"] = gpu["val_acc"] - cpu["val_acc"]
        result["agree"] = abs(result["difference"]) <= margin
    else:
        result["agree"] = None
    return result


# ---------------------------------------------------------------- 6. the study's wall time


def predict_study(
    train_rate: float, eval_rate: float, per_run: dict[int, float], device_type: str
) -> dict[str, Any]:
    """seed-report at the full budget: its stages in order, each stage's new runs spread
    over k runs at once (k from the concurrency figures), epochs x (train + val images)."""
    plan = Plan(load_study("seed-report"), "full", device_type)
    val = constants.val_size(50_000)
    train = 50_000 - val
    seen: set[str] = set()
    stages = []
    for seed in plan.study.seeds:
        winners: dict[str, Any] = {}
        for k, stage in enumerate(plan.study.stages):
            new = []
            for value in stage.values:
                config = plan.config(k, value, winners, seed)
                if config.run_hash() not in seen:
                    seen.add(config.run_hash())
                    new.append(config)
            stages.append([c.epochs for c in new])
            winners[stage.field] = stage.values[0]
    test_seconds = len(plan.study.seeds) * 10_000 / eval_rate
    options = {}
    for k, rate in {1: train_rate, **per_run}.items():
        seconds = test_seconds
        for epochs in stages:
            for wave in range(0, len(epochs), k):
                longest = max(epochs[wave : wave + k])
                seconds += longest * (train / rate + val / eval_rate)
        options[k] = seconds
    best = min(options, key=options.__getitem__)
    return {
        "study": "seed-report",
        "runs": sum(len(s) for s in stages),
        "epochs": sum(sum(s) for s in stages),
        "hours_by_runs_at_once": {str(k): s / 3600 for k, s in options.items()},
        "best_runs_at_once": best,
        "predicted_hours": options[best] / 3600,
    }


# ---------------------------------------------------------------- 7. the auto table


def auto_table(result: dict[str, Any], device: torch.device, sizes: Sizes) -> dict[str, Any]:
    table = json.loads(SHIPPED_TABLE.read_text())
    current = table["rows"][device.type]
    cells = [c for c in result["throughput"] if "images_per_s" in c]

    def rate(**choice: Any) -> float:
        found = [c["images_per_s"] for c in cells if all(c[k] == v for k, v in choice.items())]
        return max(found, default=0.0)

    row = dict(current)
    evidence = []
    by_precision = {p: rate(precision=p, compile=False) for p in ("fp32", "bf16")}
    if all(by_precision.values()):
        fast = max(by_precision, key=by_precision.__getitem__)
        if by_precision[fast] >= MARGIN * by_precision.get(current["precision"], 0.0):
            row["precision"] = fast
        evidence.append("images/s " + ", ".join(f"{p} {r:.0f}" for p, r in by_precision.items()))
    p = row["precision"]
    layouts = {cl: rate(precision=p, channels_last=cl, compile=False) for cl in (True, False)}
    if all(layouts.values()):
        row["channels_last"] = layouts[True] * MARGIN >= layouts[False]  # on unless NCHW wins
        evidence.append(f"channels_last {layouts[True]:.0f} vs NCHW {layouts[False]:.0f}")
    compiled = rate(precision=p, channels_last=row["channels_last"], compile=True)
    plain = rate(precision=p, channels_last=row["channels_last"], compile=False)
    if compiled and plain:
        row["compile"] = compiled >= MARGIN * plain
        evidence.append(f"compile {compiled:.0f} vs {plain:.0f}")
    evals = {r["batch"]: r["images_per_s"] for r in result["eval"]}
    if len(evals) == 2:
        other = 1024 if current["eval_batch_size"] == 256 else 256
        now = evals.get(current["eval_batch_size"], math.inf)
        if evals.get(other, 0.0) >= MARGIN * now:
            row["eval_batch_size"] = other
        evidence.append("eval " + ", ".join(f"batch {b} {r:.0f}" for b, r in evals.items()))
    together = {
        r["runs"]: r["aggregate_images_per_s"]
        for r in result["concurrency"]
        if "aggregate_images_per_s" in r
    }
    if 1 in together:
        best = max(together, key=together.__getitem__)
        row["runs_per_device"] = best if together[best] >= MARGIN * together[1] else 1
        evidence.append(
            "runs at once " + ", ".join(f"{k}: {r:.0f}" for k, r in sorted(together.items()))
        )
    env = result["environment"]
    row["measured_on"] = (
        f"{env['device_name']}, torch {env['torch']}, by gpu_check.py ({sizes.mode} form, "
        f"width {sizes.width}, {time.strftime('%Y-%m-%d')})"
    )
    row["evidence"] = "; ".join(evidence) or "nothing measured"
    table["rows"][device.type] = row
    return table


# ---------------------------------------------------------------- the check


def check(args: argparse.Namespace) -> dict[str, Any]:
    clock = Clock(args.time_limit)
    device = resolve_device("cuda" if torch.cuda.is_available() else "cpu")
    mode = "gpu" if device.type == "cuda" else ("quick" if args.quick else "cpu")
    sizes = SIZES[mode]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "mode": mode,
        "gpu_figures_missing": device.type != "cuda",
        "sizes": asdict(sizes),
        "batch_size": BATCH,
        "environment": environment(device),
    }
    cifar, where = source(args, sizes)
    result["data"] = where
    log(f"gpu_check: {mode} form on {result['environment']['device_name']}, data {where}")
    if mode == "quick" and device.type != "cuda":  # they would all skip; CI's dry run sees them
        result["cuda_tests"] = {
            "run": False,
            "why": "quick form without a GPU: `benchmarks/device_check.sh --dry-run` runs them",
        }
    else:
        result["cuda_tests"] = cuda_tests(out, clock, everywhere=device.type == "cuda")
    log(f"cuda tests: {result['cuda_tests']}")
    # compilation takes about a minute per cell: those cells come last, so that they and
    # not the concurrency or accuracy figures are what a slow machine leaves out
    result["throughput"] = throughput_grid(cifar, sizes, device, clock, (False,), 60)
    result["concurrency"] = concurrency(args, sizes, device, clock)
    result["eval"] = eval_rates(cifar, sizes, device)
    result["accuracy"] = (
        accuracy(cifar, sizes, device) if clock.left() > 30 else {"skipped": "out of time"}
    )
    result["throughput"] += throughput_grid(cifar, sizes, device, clock, (True,), 100)
    table = auto_table(result, device, sizes)
    row = table["rows"][device.type]
    train_rate = max(
        (
            c["images_per_s"]
            for c in result["throughput"]
            if "images_per_s" in c
            and all(c[k] == row[k] for k in ("precision", "channels_last", "compile"))
        ),
        default=0.0,
    )
    eval_rate = next(
        (r["images_per_s"] for r in result["eval"] if r["batch"] == row["eval_batch_size"]),
        0.0,
    )
    per_run = {r["runs"]: r["per_run"] for r in result["concurrency"] if "per_run" in r}
    if train_rate and eval_rate:
        result["prediction"] = {
            "train_images_per_s": train_rate,
            "eval_images_per_s": eval_rate,
            "model_width": sizes.width,
            **predict_study(train_rate, eval_rate, per_run, device.type),
        }
    result["auto_defaults"] = table
    result["seconds"] = clock.limit - clock.left()
    result["within_time_limit"] = result["seconds"] <= clock.limit
    return result


# ---------------------------------------------------------------- output


def markdown(r: dict[str, Any]) -> str:
    env = r["environment"]
    lines = [f"# gpu_check: {env['device_name']}", ""]
    if r["gpu_figures_missing"]:
        lines += [
            "**The GPU figures are missing: no CUDA GPU was visible.** This is the same plan "
            f"in its reduced {r['mode']} form on the CPU (model width {r['sizes']['width']}, "
            f"{r['sizes']['steps']} measured steps): it shows the check works, not how fast a "
            "GPU is. Do not copy its auto_defaults.json into the package.",
            "",
        ]
    lines += [
        f"torch {env['torch']}, data {r['data']}, batch {r['batch_size']}, "
        f"{r['seconds']:.0f} s in all (limit {TIME_LIMIT_S} s)",
        "",
        "## CUDA-marked tests",
        "",
    ]
    t = r["cuda_tests"]
    if not t.get("run"):
        lines.append(f"not run: {t.get('why')}")
    elif t.get("tests") and t.get("skipped") == t.get("tests") and r["gpu_figures_missing"]:
        lines.append(f"{t['tests']} tests, all skipped: no CUDA GPU (they need one)")
    else:
        lines.append(
            f"{t.get('tests', '?')} tests, {t.get('failures', '?')} failed, "
            f"{t.get('errors', '?')} errors, {t.get('skipped', '?')} skipped "
            f"(exit code {t.get('exit_code')}): **{'passed' if t['passed'] else 'NOT passed'}**"
        )
    lines += ["", "## Training images/s at batch 128", "", "| step | images/s |", "|---|---|"]
    for c in r["throughput"]:
        shown = (
            f"{c['images_per_s']:.0f}" if "images_per_s" in c else c.get("skipped") or c["error"]
        )
        lines.append(f"| {describe_choice(c)} | {shown} |")
    lines += ["", "## Runs at once on one device", "", "| runs | images/s in all | per run |"]
    lines.append("|---|---|---|")
    for c in r["concurrency"]:
        if "aggregate_images_per_s" in c:
            lines.append(
                f"| {c['runs']} | {c['aggregate_images_per_s']:.0f} | {c['per_run']:.0f} |"
            )
        else:
            lines.append(f"| {c['runs']} | {c.get('skipped') or c.get('error')} | |")
    lines += ["", "## Evaluation images/s", ""]
    lines += [f"- batch {e['batch']}: {e['images_per_s']:.0f}" for e in r["eval"]]
    lines += ["", "## Accuracy: the same run on the CPU and the GPU", ""]
    a = r["accuracy"]
    if "skipped" in a:
        lines.append(f"skipped: {a['skipped']}")
    else:
        lines.append(
            f"CPU ({a['cpu']['precision']}): val acc {a['cpu']['val_acc']:.4f} on "
            f"{a['val_images']} images"
        )
        if a["gpu"] is None:
            lines.append("\nGPU: **missing** (no CUDA GPU)")
        else:
            verdict = "agree" if a["agree"] else "**DO NOT agree**"
            lines.append(
                f"\nGPU ({a['gpu']['precision']}): val acc {a['gpu']['val_acc']:.4f}; "
                f"difference {a['difference']:+.4f}, noise margin ±{a['margin']:.4f}: {verdict}"
            )
    lines += ["", "## seed-report at the full budget, predicted", ""]
    p = r.get("prediction")
    if p is None:
        lines.append("not predicted: a figure it needs is missing")
    else:
        lines.append(
            f"{p['predicted_hours']:.2f} h with {p['best_runs_at_once']} run(s) at once "
            f"({p['runs']} runs, {p['epochs']} epochs; train {p['train_images_per_s']:.0f}, "
            f"eval {p['eval_images_per_s']:.0f} images/s at model width {p['model_width']})"
        )
    lines += ["", "## The auto table these figures imply", "", "```json"]
    lines += [json.dumps(r["auto_defaults"]["rows"], indent=2), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=".", help="folder for gpu_check.json / .md (default: .)")
    p.add_argument("--root", help="folder holding cifar-100-python/ (default: synthetic images)")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip the md5 check")
    p.add_argument("--quick", action="store_true", help="without CUDA: the smallest form (CI)")
    p.add_argument("--time-limit", type=float, default=TIME_LIMIT_S, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    out = Path(args.out)
    try:
        if out.exists() and not out.is_dir():
            raise HpstudyError(f"--out {out}: not a folder")
        result = check(args)
        (out / "gpu_check.json").write_text(
            json.dumps(stamped(result, "gpu_check"), indent=2) + "\n"
        )
        (out / "gpu_check.md").write_text(markdown(result))
        table = json.dumps(stamped(result["auto_defaults"], "auto_defaults"), indent=2) + "\n"
        (out / "auto_defaults.json").write_text(table)
    except HpstudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: {err.filename or out}: {err.strerror or err}", file=sys.stderr)
        return 2
    log(f"written: {out / 'gpu_check.json'}, {out / 'gpu_check.md'}, {out / 'auto_defaults.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
