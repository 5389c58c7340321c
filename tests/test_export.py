"""Shipping a run's model: safetensors round-trips, ONNX Runtime equals PyTorch, the latency
table, `hpstudy.load_model`, one-line errors, and the study's final export in its report.

Cost: one small study (two 1-epoch runs), whose final run and its export (the study's
own, through export_run's defaults) most tests read; three more exports of that run.
"""

from __future__ import annotations

import builtins
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from cluster_fixtures import plain_study

import hpstudy
from hpstudy import cli, export
from hpstudy.config import RunConfig
from hpstudy.errors import HpstudyError
from hpstudy.models import create_model
from hpstudy.run import RunDir, evaluate
from hpstudy.study import StudyState, run_study

pytest.importorskip("onnxruntime")
pytest.importorskip("safetensors")


STUDY = """
name = "shipped"
seeds = [0]
[base]
width = 0.125
batch_size = 16  # enough steps for the BN statistics to make the logits depend on the image
limit_train = 192
limit_val = 96
device = "cpu"
ema_decay = 0.5
[[stages]]
name = "optimizer"
field = "optimizer"
values = ["sgd", "adamw"]
epochs = 1
"""


@pytest.fixture(scope="module")
def shipped(
    synthetic_root: Path, speed_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, StudyState, dict]:
    """A study of two 1-epoch runs with an EMA of their weights, and the final export it ends
    with (export_run's defaults, into the final run's folder): the study folder, its state,
    and what export_run returned."""
    spec = tmp_path_factory.mktemp("export") / "shipped.toml"
    spec.write_text(STUDY)
    out = spec.parent / "study"
    returned: list[dict] = []
    real = export.export_run

    def export_run(*args: object, **kwargs: object) -> dict:
        returned.append(real(*args, **kwargs))  # type: ignore[arg-type]
        return returned[-1]

    with plain_study(speed_cache, export=True), pytest.MonkeyPatch.context() as patch:
        patch.setattr(export, "export_run", export_run)
        state = run_study(spec, out=out, budget="full", root=str(synthetic_root), verify=False)
    assert len(returned) == 1
    return out, state, returned[0]


@pytest.fixture(scope="module")
def ema_run(shipped: tuple[Path, StudyState, dict]) -> Path:
    """A finished 1-epoch run with an EMA of its weights (the selected ones): the study's final
    run."""
    out, state, _ = shipped
    return out / state.final.runs[0].run_dir  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def exported(ema_run: Path, shipped: tuple[Path, StudyState, dict]) -> tuple[Path, dict]:
    """Where the study exported its final run (that run's folder), and what export_run returned."""
    return ema_run, shipped[2]


def test_load_model_returns_the_selected_weights_in_eval_mode(ema_run: Path) -> None:
    model = hpstudy.load_model(ema_run)
    assert not model.training
    ckpt = torch.load(ema_run / "checkpoint.pt", weights_only=True)
    state = model.state_dict()
    for key, value in ckpt["ema"].items():
        if key.startswith("module."):
            assert torch.equal(state[key.removeprefix("module.")], value), key
    # the raw weights differ from the EMA's: load_model did not hand back the raw ones
    assert any(not torch.equal(state[k], v) for k, v in ckpt["model"].items()
               if v.is_floating_point())  # fmt: skip


def test_load_model_of_a_study_folder_is_its_final_run(
    shipped: tuple[Path, StudyState, dict], ema_run: Path
) -> None:
    out = shipped[0]
    assert "load_model" in dir(hpstudy) and "run_study" in dir(hpstudy)
    of_study, of_run = hpstudy.load_model(out), hpstudy.load_model(ema_run)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(of_study(x), of_run(x))
    from hpstudy.study import StudyFolder

    bare = out.parent / "unfinished-study"
    bare.mkdir(exist_ok=True)
    state = StudyFolder(out).read_state().model_copy(update={"final": None})
    StudyFolder(bare).write_state(state)
    with pytest.raises(HpstudyError, match="final runs have not finished"):
        hpstudy.load_model(bare)


def test_the_exported_files_share_one_mode(exported: tuple[Path, dict]) -> None:
    out, _ = exported
    modes = {(out / n).stat().st_mode & 0o777 for n in ("model.safetensors", "model.onnx")}
    assert len(modes) == 1, modes  # safetensors' save_file alone writes 0600


def test_a_run_trained_in_fp16_loads_and_exports_on_the_cpu_in_fp32(
    ema_run: Path, tmp_path: Path
) -> None:
    """fp16 is CUDA's (the CPU refuses it): a run trained so is loaded in fp32 on a CPU, with
    the same weights, and exports; its config (and hash) stay as trained."""
    import shutil

    run = tmp_path / "fp16-run"
    shutil.copytree(ema_run, run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "precision": "fp16"}))
    with pytest.raises(HpstudyError, match="fp16 needs a CUDA device"):  # what it was
        hpstudy.run.Execution.resolve(RunConfig(precision="fp16", device="cpu"))
    model = hpstudy.load_model(run)
    reference = hpstudy.load_model(ema_run).state_dict()
    assert all(v.dtype != torch.float16 for v in model.state_dict().values())
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())
    export.export_run(run, tmp_path / "out", check=False, latency_runs=1)
    assert (tmp_path / "out" / "model.onnx").is_file()
    assert RunDir(run).read_config().precision == "fp16"


def test_safetensors_round_trips_with_config_and_normalisation(
    ema_run: Path, exported: tuple[Path, dict]
) -> None:
    out, result = exported
    tensors, meta = export.read_safetensors(out / "model.safetensors")
    model = hpstudy.load_model(ema_run)
    for key, value in model.state_dict().items():
        assert torch.equal(tensors[key], value.contiguous()), key
    config = RunConfig(**json.loads(meta["config"]))
    assert config.run_hash() == meta["run_hash"] == result["run_hash"]
    assert meta["num_classes"] == "100" and meta["weights"] == "ema"
    ckpt = torch.load(ema_run / "checkpoint.pt", weights_only=True)
    assert json.loads(meta["mean"]) == pytest.approx(ckpt["normalization"]["mean"])
    assert json.loads(meta["std"]) == pytest.approx(ckpt["normalization"]["std"])
    # a fresh model of the config with these tensors is the trained one
    fresh = create_model(config.model, int(meta["num_classes"]), config.width)
    fresh.load_state_dict(tensors)
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(fresh.eval()(x), model(x), atol=1e-5)


def test_onnx_runtime_equals_pytorch_on_validation_images(
    ema_run: Path, exported: tuple[Path, dict], synthetic_root: Path
) -> None:
    import onnxruntime

    out, result = exported
    check = result["check"]
    assert check["passed"] and check["images"] == 96
    assert check["max_abs_logit_diff"] <= 1e-3 and check["top1_agreement"] >= 0.999
    session = onnxruntime.InferenceSession(str(out / "model.onnx"),
                                           providers=["CPUExecutionProvider"])  # fmt: skip
    (inp,) = session.get_inputs()
    assert inp.type == "tensor(uint8)" and inp.shape[1:] == [3, 32, 32]
    assert isinstance(inp.shape[0], str)  # a dynamic batch axis
    images = torch.randint(0, 256, (7, 3, 32, 32), dtype=torch.uint8)
    logits = session.run(None, {inp.name: images.numpy()})[0]
    trained = hpstudy.load_model(ema_run)
    ckpt = torch.load(ema_run / "checkpoint.pt", weights_only=True)
    mean = torch.tensor(ckpt["normalization"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(ckpt["normalization"]["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = trained((images.float() / 255 - mean) / std).numpy()
    assert logits.shape == (7, 100)
    spread = expected.std(axis=0).mean()
    assert spread > 1e-5  # logits that vary with the image: the comparison can fail
    assert np.abs(logits - expected).max() <= min(1e-3, 0.01 * spread)
    # the val accuracy through ONNX is the run's (selected weights) val accuracy
    val = evaluate(ema_run, "val", root=synthetic_root, verify=False, device="cpu")
    summary = RunDir(ema_run).read_summary()
    assert val["top1"] == pytest.approx(summary.final["val_acc"])  # type: ignore[union-attr]


def test_export_json_holds_sizes_and_the_latency_table(exported: tuple[Path, dict]) -> None:
    out, result = exported
    on_disk = json.loads((out / "export.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    assert result["files"]["model.onnx"] == (out / "model.onnx").stat().st_size
    assert result["parameters"] == sum(p.numel() for p in hpstudy.load_model(
        result["run_dir"]).parameters())  # fmt: skip
    assert result["macs_per_image"] > 0
    for runtime in ("pytorch", "onnxruntime"):
        t = result["latency"][runtime]
        assert t["latency_runs"] == 100
        assert 0 < t["latency_ms_batch1_median"] < 10_000
        # the spread of the timings beside their median
        low, high = t["latency_ms_batch1_p10"], t["latency_ms_batch1_p90"]
        assert low <= t["latency_ms_batch1_median"] <= high
        assert t["throughput_images_per_s_batch256"] > 0 and t["throughput_spread"] >= 0
    assert result["load"]["cores"] == os.cpu_count() and result["load"]["load_1min"] >= 0
    assert [row[0] for row in export.latency_table(result)] == ["pytorch", "onnxruntime"]


def test_the_cli_prints_the_table_and_refuses_bad_input_in_one_line(
    ema_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # in this process: the same main() as the command, without its 4 s start; batch-256
    # throughput timed once, not 5 times (the table's numbers are not what is checked here)
    monkeypatch.setattr(export, "THROUGHPUT_RUNS", 1)
    out = tmp_path / "cli"
    argv = ["export", str(ema_run), "--out", str(out), "--no-check", "--latency-runs", "5"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr()
    assert "onnxruntime" in printed.out and "batch 1 ms" in printed.out, printed
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "model.onnx", "export.json"}
    assert "timed under a 1-minute load" in printed.out
    written = json.loads((out / "export.json").read_text())
    assert written["check"] is None and written["latency"]["pytorch"]["latency_runs"] == 5
    # a folder holding an earlier export (its own export.json) is written again
    assert cli.main(argv) == 0
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "model.onnx", "export.json"}
    a_file = tmp_path / "file"
    a_file.write_text("x")
    bad = [
        ([str(tmp_path / "nothing")], "not a trained run"),
        ([str(ema_run), "--out", str(a_file / "sub"), "--no-check"], "is a file"),
        ([str(ema_run), "--latency-runs", "0"], "latency runs"),
        ([str(a_file)], "not a trained run"),
    ]
    for args, needle in bad:
        assert cli.main(["export", *args]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err


def test_a_missing_extra_is_one_line_with_the_install_hint(
    ema_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'", name="onnxruntime")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    with pytest.raises(HpstudyError) as err:
        export.export_run(ema_run, check=False)
    assert "pip install 'hpstudy[export]'" in str(err.value) and "onnxruntime" in str(err.value)


def test_a_failed_check_is_written_and_said_in_one_line(
    ema_run: Path, synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = export.check_outputs

    def off(deployable, session, images):
        # as if the ONNX graph computed something else: PyTorch's side is another model
        torch.manual_seed(1)
        other = create_model("mobilenet", 100, 0.125).eval()
        shifted = export.Deployable(other, deployable.mean.view(-1), deployable.std.view(-1))
        return real(shifted, session, images)

    monkeypatch.setattr(export, "check_outputs", off)
    monkeypatch.setattr(export, "THROUGHPUT_RUNS", 1)  # the timings are not checked here
    with pytest.raises(HpstudyError, match="ONNX Runtime differs from PyTorch"):
        export.export_run(ema_run, tmp_path / "bad", root=synthetic_root, verify=False,
                          latency_runs=1)  # fmt: skip
    assert json.loads((tmp_path / "bad" / "export.json").read_text())["check"]["passed"] is False


@pytest.mark.study_export
def test_a_study_ships_its_final_model_and_reports_it(
    shipped: tuple[Path, StudyState, dict], synthetic_root: Path
) -> None:
    out, state, _ = shipped
    final_run = RunDir(out / state.final.runs[0].run_dir)  # type: ignore[union-attr]
    shipped_export = final_run.read_export()
    assert shipped_export is not None and shipped_export["weights"] == "ema"
    assert shipped_export["check"]["passed"]
    assert (final_run.path / "model.onnx").is_file()
    report = (out / "report.md").read_text()
    final = report[report.index("## Final test result"):]
    assert "exponential moving average of the weights (decay 0.5)" in final
    parameters = f"{shipped_export['parameters']:,} parameters"
    assert "The final model, exported" in final and parameters in final
    assert "| onnxruntime |" in final and "| pytorch |" in final
    assert (out / "tables" / "export.csv").is_file()
    # a second `study run` exports nothing again
    stamp = final_run.export_path.stat().st_mtime_ns
    run_study(out.parent / "shipped.toml", out=out, budget="full", root=str(synthetic_root),
              verify=False)  # fmt: skip
    assert final_run.export_path.stat().st_mtime_ns == stamp


@pytest.mark.study_export
def test_a_study_without_the_extra_says_so_in_one_line_and_finishes(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from hpstudy.executors import DataOptions
    from hpstudy.study.remote import export_final

    def missing(*args, **kwargs):
        raise export.MissingExtra(f"export needs onnxruntime: {export.INSTALL_HINT}")

    monkeypatch.setattr(export, "export_run", missing)
    run = tmp_path / "r"
    run.mkdir()
    export_final(str(run), DataOptions(root=str(synthetic_root), verify=False), None)
    said = [r.getMessage() for r in caplog.records if r.name.startswith("hpstudy")]
    assert len(said) == 1 and "final model not exported" in said[0]
    assert "pip install 'hpstudy[export]'" in said[0]
