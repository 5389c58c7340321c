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
from hpstudy.files import stamped, write_json
from hpstudy.models import count_macs, count_parameters
from hpstudy.run import RunDir, data_shape, load_data, split_of
from hpstudy.run.evaluate import load_trained

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
    the run kept one). It takes normalised float images; see `deployable` for raw pixels."""
    return load_trained(run_dir, device).model


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
    from safetensors.torch import save_file

    # safetensors stores plain contiguous tensors: channels_last weights are laid out anew
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=metadata)


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
            latency = _time(lambda run=run: run(one), latency_runs, WARMUP_RUNS)
            batch = _time(lambda run=run: run(many), THROUGHPUT_RUNS, 1)
            results[name] = {
                "latency_ms_batch1_median": 1000 * statistics.median(latency),
                "latency_runs": len(latency),
                "throughput_images_per_s_batch256": THROUGHPUT_BATCH / statistics.median(batch),
            }
    return results


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
    write_safetensors(st_path, model, metadata)
    write_onnx(onnx_path, deployable, image_shape)
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
    result["latency"] = benchmark(deployable, session, latency_runs, image_shape)
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
    """Rows (runtime, batch-1 median ms, batch-256 images/s) of an export's timings."""
    return [
        [
            name,
            f"{t['latency_ms_batch1_median']:.2f}",
            f"{t['throughput_images_per_s_batch256']:.0f}",
        ]
        for name, t in result.get("latency", {}).items()
    ]


__all__ = [
    "INSTALL_HINT",
    "MAX_ABS_LOGIT_DIFF",
    "MIN_TOP1_AGREEMENT",
    "Deployable",
    "MissingExtra",
    "benchmark",
    "check_outputs",
    "export_run",
    "latency_table",
    "load_model",
    "read_safetensors",
]
