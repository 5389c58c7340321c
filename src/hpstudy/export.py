"""Shipping a finished run's model: safetensors and ONNX files, checked and timed on the CPU.

`load_model(RUN_DIR)` gives the trained model back in one call. `export_run` writes
model.safetensors (the selected weights, with the run's config and normalisation as
metadata), model.onnx (input: uint8 NCHW [N, C, H, W] pixels 0..255, [N, 3, 32, 32] for
CIFAR; normalisation
inside the graph, any batch size; output: logits [N, classes]), checks that ONNX
Runtime's logits equal PyTorch's on real validation images, measures CPU latency
and throughput with both runtimes, and writes it all to export.json.
Needs the `export` extra (safetensors, onnx, onnxruntime).
"""

from __future__ import annotations

import io
import json
import os
import statistics
import time
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hpstudy.constants import IMAGE_SHAPE
from hpstudy.errors import HpstudyError
from hpstudy.files import check_writable, read_json, stamped, write_atomic, write_json, write_with
from hpstudy.models import count_macs, count_parameters
from hpstudy.run import RunDir, data_shape, load_data, split_of
from hpstudy.run.evaluate import load_trained
from hpstudy.run.folder import EXPORT_FILES, not_a_folder

INSTALL_HINT = "pip install 'hpstudy[export]'"
# what the check allows between ONNX Runtime's and PyTorch's float32 logits
MAX_ABS_LOGIT_DIFF = 1e-3
MIN_TOP1_AGREEMENT = 0.999
CHECK_IMAGES = 1000  # validation images the check runs on (all of them if fewer)
LATENCY_RUNS = 100  # batch-1 timings; the median is reported
WARMUP_RUNS = 10
THROUGHPUT_BATCH = 256
THROUGHPUT_RUNS = 5


def load_model(run_dir: str | Path, device: str = "cpu") -> nn.Module:
    """A finished run's trained model in eval mode, with its selected weights (the EMA's when
    the run kept one). It takes normalised float images; see `deployable` for raw pixels.
    A study folder means its final run (the first seed's)."""
    return load_trained(final_run_of(run_dir), device).model


def final_run_of(path: str | Path) -> Path:
    """`path` itself, or where it is a study folder (state.json, no config.json), the run
    folder of its final configuration's first seed; one line where it has none yet."""
    from hpstudy.study.state import StudyFolder

    path = Path(path)
    if (path / "config.json").is_file() or not (path / "state.json").is_file():
        return path
    final = StudyFolder(path).read_state().final
    if final is None or not final.runs:
        raise HpstudyError(
            f"{path}: a study folder whose final runs have not finished; run the study first, "
            "or pass a run folder (runs/<hash>)"
        )
    return path / final.runs[0].run_dir


class Deployable(nn.Module):
    """The model behind its normalisation: uint8 (or float) pixels 0..255, NCHW, in; logits out."""

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean.detach().float().cpu().view(1, -1, 1, 1))
        self.register_buffer("std", std.detach().float().cpu().view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images.float() / 255 - self.mean) / self.std)


class MissingExtra(HpstudyError):
    """The `export` extra is not installed."""


def _require_extra() -> tuple[Any, Any]:
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        import onnxruntime
        import safetensors.torch
    except ImportError as err:
        raise MissingExtra(f"export needs {err.name or 'its extra'}: {INSTALL_HINT}") from None
    return safetensors.torch, onnxruntime


def write_safetensors(path: Path, model: nn.Module, metadata: dict[str, str]) -> None:
    from safetensors.torch import save

    # safetensors stores plain contiguous tensors: channels_last weights are laid out anew
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # written as every other file (atomic, the umask's mode): save_file makes it 0600
    write_atomic(path, save(state, metadata=metadata))


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a model.safetensors that `export_run` wrote."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118


def write_onnx(
    path: Path, deployable: Deployable, image_shape: tuple[int, ...] = IMAGE_SHAPE
) -> None:
    example = torch.zeros(1, *image_shape, dtype=torch.uint8)
    # The TorchScript exporter (dynamo=False) works for this model with torch 2.13 and needs
    # no onnxscript; its deprecation warning and chatter are not the user's business.
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            deployable,
            (example,),
            str(path),
            dynamo=False,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
        )


def _session(onnxruntime: Any, path: Path) -> Any:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def check_outputs(deployable: Deployable, session: Any, images: torch.Tensor) -> dict[str, Any]:
    """ONNX Runtime against PyTorch on `images` (uint8): largest logit gap, top-1 agreement."""
    with torch.inference_mode():
        expected = deployable(images).numpy()
    got = session.run(None, {"images": images.numpy()})[0]
    diff = float(np.abs(got - expected).max())
    agree = float((got.argmax(1) == expected.argmax(1)).mean())
    passed = diff <= MAX_ABS_LOGIT_DIFF and agree >= MIN_TOP1_AGREEMENT
    return {
        "images": len(images),
        "max_abs_logit_diff": diff,
        "top1_agreement": agree,
        "tolerance": {
            "max_abs_logit_diff": MAX_ABS_LOGIT_DIFF,
            "min_top1_agreement": MIN_TOP1_AGREEMENT,
        },
        "passed": passed,
    }


def _time(fn: Any, runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def benchmark(
    deployable: Deployable,
    session: Any,
    latency_runs: int = LATENCY_RUNS,
    image_shape: tuple[int, ...] = IMAGE_SHAPE,
) -> dict[str, dict[str, float]]:
    """Batch-1 median latency (ms) and batch-256 throughput (images/s), PyTorch and ONNX Runtime."""
    gen = torch.Generator().manual_seed(0)
    one = torch.randint(0, 256, (1, *image_shape), dtype=torch.uint8, generator=gen)
    many = torch.randint(0, 256, (THROUGHPUT_BATCH, *image_shape), dtype=torch.uint8, generator=gen)
    results = {}
    with torch.inference_mode():
        runtimes = {
            "pytorch": lambda x: deployable(x),
            "onnxruntime": lambda x: session.run(None, {"images": x.numpy()}),
        }
        for name, run in runtimes.items():
            latency = sorted(_time(lambda run=run: run(one), latency_runs, WARMUP_RUNS))
            batch = sorted(_time(lambda run=run: run(many), THROUGHPUT_RUNS, 1))
            results[name] = {
                "latency_ms_batch1_median": 1000 * statistics.median(latency),
                # the spread of the timings: their 10th and 90th percentiles
                "latency_ms_batch1_p10": 1000 * percentile(latency, 0.1),
                "latency_ms_batch1_p90": 1000 * percentile(latency, 0.9),
                "latency_runs": len(latency),
                "throughput_images_per_s_batch256": THROUGHPUT_BATCH / statistics.median(batch),
                "throughput_spread": (batch[-1] - batch[0]) / statistics.median(batch),
            }
    return results


def percentile(ordered: list[float], q: float) -> float:
    """The q-quantile of sorted timings (the nearest rank: a timing that was measured)."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def load_now() -> dict[str, float | int | None]:
    """The 1-minute load average and the core count, beside the timings they affect."""
    try:
        load: float | None = os.getloadavg()[0]
    except (OSError, AttributeError):
        load = None
    return {"load_1min": load, "cores": os.cpu_count()}


def check_export_folder(out_dir: Path, run: RunDir) -> None:
    """Refuse, writing nothing, a folder an export may not write in: under a file, holding
    files other than an export's, an export's files that hpstudy did not write (no export.json
    of its own beside them), or one of them a link or a folder. The run's own folder holds
    only the run's files (`RunDir.check` refused it otherwise)."""
    if problem := not_a_folder(out_dir):
        raise HpstudyError(f"{out_dir}: {problem}; use another --out")
    targets = [out_dir / name for name in EXPORT_FILES]
    for target in targets:
        check_writable(target)
    if not out_dir.is_dir() or out_dir.resolve() == run.path.resolve():
        return
    own = {name + tmp for name in EXPORT_FILES for tmp in ("", ".tmp")}
    try:
        names = sorted(p.name for p in out_dir.iterdir())
    except OSError as err:
        raise HpstudyError(f"{out_dir}: cannot read ({err.strerror or err})") from None
    foreign = [n for n in names if n not in own]
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise HpstudyError(
            f"{out_dir}: holds files that are not an export's ({foreign[0]!r}{more}); "
            "use another --out, or an empty folder"
        )
    present = [n for n in names if n in EXPORT_FILES]
    if present:
        export_json = out_dir / "export.json"
        held = read_json(export_json, "export") if export_json.exists() else None
        if not (isinstance(held, dict) and isinstance(held.get("run_hash"), str)):
            raise HpstudyError(
                f"{out_dir}: holds {present[0]!r} but no export.json hpstudy wrote, so it is not "
                "an earlier export; hpstudy will not replace it: use another --out"
            )


def export_run(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    root: str | Path | None = None,
    verify: bool = True,
    check: bool = True,
    latency_runs: int = LATENCY_RUNS,
) -> dict[str, Any]:
    """Export a finished run's selected weights to OUT (default: the run folder); returns what
    export.json holds. A check that fails its tolerance is written, then raised in one line."""
    if latency_runs < 1:
        raise HpstudyError(f"latency runs must be >= 1 (got {latency_runs})")
    _, onnxruntime = _require_extra()
    run = RunDir(run_dir)
    trained = load_trained(run.path, "cpu")
    out_dir = run.path if out is None else Path(out)
    check_export_folder(out_dir, run)  # before anything is written
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HpstudyError(f"{out_dir}: cannot create ({err.strerror or err})") from None
    # plain NCHW float32 on the CPU: the layout both runtimes are timed in
    model = trained.model.to(memory_format=torch.contiguous_format)
    config = trained.config
    mean, std = trained.mean.cpu(), trained.std.cpu()
    deployable = Deployable(model, mean, std).eval()
    _, image_shape = data_shape(config)
    classes = int(model(torch.zeros(1, *image_shape)).shape[1])
    metadata = {
        "config": json.dumps(config.model_dump(), sort_keys=True),
        "run_hash": config.run_hash(),
        "mean": json.dumps(mean.tolist()),
        "std": json.dumps(std.tolist()),
        "num_classes": str(classes),
        "weights": trained.weights,
        "input": "float32 NCHW, normalised: (pixels / 255 - mean) / std",
    }
    st_path, onnx_path = out_dir / "model.safetensors", out_dir / "model.onnx"
    # through a temporary file each: never through a link, never a half-written model
    write_with(st_path, lambda tmp: write_safetensors(tmp, model, metadata))
    write_with(onnx_path, lambda tmp: write_onnx(tmp, deployable, image_shape))
    session = _session(onnxruntime, onnx_path)
    result: dict[str, Any] = {
        "run_dir": str(run.path),
        "run_hash": config.run_hash(),
        "weights": trained.weights,
        "onnx_input": f"images: uint8 NCHW [N, {', '.join(map(str, image_shape))}], pixels "
        "0..255 (normalisation inside)",
        "onnx_output": f"logits: float32 [N, {classes}]",
        "parameters": count_parameters(model),
        "macs_per_image": count_macs(model, image_shape),
        "files": {p.name: p.stat().st_size for p in (st_path, onnx_path)},
        "threads": torch.get_num_threads(),
        "check": None,
    }
    if check:
        cifar = load_data(root, verify, config.dataset, config.image_size)
        _, val_idx = split_of(config, cifar)
        images = cifar.train.images[val_idx[:CHECK_IMAGES]]
        result["check"] = check_outputs(deployable, session, images)
    before = load_now()
    result["latency"] = benchmark(deployable, session, latency_runs, image_shape)
    after = load_now()
    loads = [x["load_1min"] for x in (before, after) if x["load_1min"] is not None]
    result["load"] = {"load_1min": max(loads) if loads else None, "cores": after["cores"]}
    result = stamped(result, "export")  # returned as written
    write_json(out_dir / "export.json", result, "export")
    if result["check"] is not None and not result["check"]["passed"]:
        c = result["check"]
        raise HpstudyError(
            f"{onnx_path}: ONNX Runtime differs from PyTorch (max logit gap "
            f"{c['max_abs_logit_diff']:.2e}, top-1 agreement {c['top1_agreement']:.4f}; "
            f"allowed {MAX_ABS_LOGIT_DIFF:g} and {MIN_TOP1_AGREEMENT})"
        )
    return result


def latency_table(result: dict[str, Any]) -> list[list[str]]:
    """Rows (runtime, batch-1 median ms with its 10-90 % range, batch-256 images/s with its
    spread) of an export's timings; an export.json from before the spreads shows none."""
    rows = []
    for name, t in result.get("latency", {}).items():
        ms = f"{t['latency_ms_batch1_median']:.2f}"
        if "latency_ms_batch1_p10" in t:
            ms += f" ({t['latency_ms_batch1_p10']:.2f}-{t['latency_ms_batch1_p90']:.2f})"
        ips = f"{t['throughput_images_per_s_batch256']:.0f}"
        if "throughput_spread" in t:
            ips += f" (±{50 * t['throughput_spread']:.0f} %)"
        rows.append([name, ms, ips])
    return rows


def load_text(result: dict[str, Any]) -> str:
    """The load the timings were taken under, in words ("" for an export without it)."""
    load = result.get("load") or {}
    if load.get("load_1min") is None:
        return ""
    busy = load["load_1min"] > (load["cores"] or 1)
    busy_text = " (busy: other work shared the cores)" if busy else ""
    return f"1-minute load {load['load_1min']:.1f} on {load['cores']} cores{busy_text}"


__all__ = [
    "INSTALL_HINT",
    "MAX_ABS_LOGIT_DIFF",
    "MIN_TOP1_AGREEMENT",
    "Deployable",
    "MissingExtra",
    "benchmark",
    "check_export_folder",
    "check_outputs",
    "export_run",
    "latency_table",
    "load_model",
    "load_text",
    "read_safetensors",
]
