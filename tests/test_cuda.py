"""Every CUDA path, on a GPU: bf16 and fp16 (grad scaler) training steps, resume on CUDA,
evaluation, augmentation on the device, several runs per GPU through `--devices`.

All marked `cuda` and skipped, with the reason, where no GPU is visible;
`benchmarks/device_check.sh` (and gpu_check.py) runs them (`pytest -m cuda`) when GPU time
is lent.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from hpstudy import augment, cli
from hpstudy.config import RunConfig
from hpstudy.run import (
    CheckpointWriter,
    Execution,
    Trainer,
    device_data,
    evaluate_arrays,
    load_data,
    train,
)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

TINY = {"width": 0.25, "batch_size": 64, "limit_train": 256, "limit_val": 64, "device": "cuda"}


def tiny(**kw: Any) -> RunConfig:
    return RunConfig(**{**TINY, **kw})


def params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().float().flatten().cpu() for p in model.parameters()])


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_a_training_epoch_in_each_precision(precision: str, synthetic_root: Path) -> None:
    config = tiny(precision=precision)
    trainer = Trainer.create(config)
    assert trainer.ex.device.type == "cuda" and trainer.ex.precision == precision
    assert (trainer.scaler is not None) == (precision == "fp16")  # fp16 needs the scaler
    with trainer.ex.autocast():  # autocast computes the convolutions in the asked dtype
        probe = trainer.model(torch.zeros(2, 3, 32, 32, device="cuda"))
    assert probe.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}.get(
        precision, torch.float32
    )
    d = device_data(load_data(synthetic_root, False), config, trainer.ex.device)
    before = params(trainer.model)
    trainer.set_lr(0)
    loss, acc = trainer.train_epoch(d, 0, False)
    assert math.isfinite(loss) and 0 <= acc <= 1
    assert not torch.equal(before, params(trainer.model)), "the weights did not move"
    if trainer.scaler is not None:
        assert trainer.scaler.get_scale() > 0
        assert "scaler" in trainer.state()


def test_the_default_on_cuda_is_the_tables_and_its_hash_is_bf16s() -> None:
    ex = Execution.resolve(tiny())
    assert (ex.precision, ex.channels_last, ex.eval_batch_size) == ("bf16", True, 1024)
    bf16 = tiny(precision="bf16").for_device("cuda")
    assert tiny().for_device("cuda").run_hash() == bf16.run_hash()
    assert bf16.draw_device == "cuda"  # the GPU's draws: another run than the CPU's


def test_a_cuda_trainer_sets_cudnn_benchmark_as_the_table_says() -> None:
    torch.backends.cudnn.benchmark = not Execution.resolve(RunConfig(device="cuda")).cudnn_benchmark
    trainer = Trainer.create(RunConfig(width=0.125, device="cuda"))
    assert torch.backends.cudnn.benchmark is trainer.ex.cudnn_benchmark is True


def test_an_ema_step_on_cuda_equals_torchs_averaged_model() -> None:
    """WeightEma on the GPU: no per-step read of a counter, the same numbers as torch's."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    trainer = Trainer.create(RunConfig(width=0.125, device="cuda", ema_decay=0.9))
    ema = trainer.ema
    assert ema is not None
    averaged = AveragedModel(trainer.model, multi_avg_fn=get_ema_multi_avg_fn(0.9),
                             use_buffers=True)  # fmt: skip
    for _ in range(3):
        with torch.no_grad():
            for p in trainer.model.parameters():
                p.add_(torch.randn_like(p))
        ema.update()
        averaged.update_parameters(trainer.model)
    ours, theirs = ema.state_dict(), averaged.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_resume_on_cuda_continues_the_run(
    precision: str, synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run stopped after its first checkpoint resumes on the GPU from epoch 1 (with the
    scaler's state in fp16) and ends close to an uninterrupted one (cuDNN is not bitwise
    deterministic, so within a margin)."""
    config = tiny(epochs=2, precision=precision)
    whole = train(config, tmp_path / "whole", root=synthetic_root, verify=False)

    class Stop(Exception):
        pass

    submit = CheckpointWriter.submit

    def submit_then_stop(self: CheckpointWriter, state: dict[str, Any]) -> None:
        submit(self, state)  # leaving train waits for the background write
        raise Stop

    monkeypatch.setattr(CheckpointWriter, "submit", submit_then_stop)
    with pytest.raises(Stop):
        train(config, tmp_path / "cut", root=synthetic_root, verify=False)
    monkeypatch.undo()
    ckpt = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and (("scaler" in ckpt) == (precision == "fp16"))
    resumed = train(config, tmp_path / "cut", root=synthetic_root, verify=False)
    assert resumed.status == whole.status == "finished"
    assert resumed.device.startswith("cuda") and resumed.precision == precision
    assert resumed.final is not None and whole.final is not None
    assert resumed.final["train_loss"] == pytest.approx(whole.final["train_loss"], rel=0.05)
    assert resumed.final["val_acc"] == pytest.approx(whole.final["val_acc"], abs=0.1)


def test_evaluation_on_cuda_agrees_with_the_cpu(synthetic_root: Path) -> None:
    config = tiny(precision="fp32")
    trainer = Trainer.create(config)
    cifar = load_data(synthetic_root, False)
    on_gpu = device_data(cifar, config, trainer.ex.device)
    gpu = trainer.evaluate(on_gpu)
    cpu_ex = Execution.resolve(config.model_copy(update={"device": "cpu"}))
    cpu_model = trainer.model.to("cpu")
    on_cpu = device_data(cifar, config, cpu_ex.device)
    cpu = evaluate_arrays(
        cpu_model, on_cpu.val_x, on_cpu.val_y, on_cpu.val_coarse, on_cpu.mean, on_cpu.std, cpu_ex
    )
    assert gpu["images"] == cpu["images"] == 64
    assert gpu["loss"] == pytest.approx(cpu["loss"], rel=1e-3)
    assert abs(gpu["top1"] - cpu["top1"]) <= 2 / 64  # a near-tie may flip one or two


def test_augmentation_runs_on_the_device_and_is_a_flip_and_crop() -> None:
    images = torch.randint(1, 256, (512, 3, 32, 32), dtype=torch.uint8, device="cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)
    out = augment.flip_crop(images, gen)
    assert out.is_cuda and out.shape == images.shape and out.dtype == torch.uint8
    # each output is its image, maybe flipped, shifted by at most 4 with black borders:
    # the centre 24x24 of the output lies inside the image, so it appears in it
    centre = out[:, :, 4:28, 4:28].cpu()
    source = images.cpu()
    for i in range(0, 512, 37):
        found = any(
            torch.equal(centre[i], img[:, dy : dy + 24, dx : dx + 24])
            for img in (source[i], source[i].flip(-1))
            for dy in range(9)
            for dx in range(9)
        )
        assert found, i
    x = augment.normalize(out, torch.zeros(3, device="cuda"), torch.ones(3, device="cuda"))
    mixed, partner = augment.mixup(x, 0.3, gen)
    assert mixed.is_cuda and partner.is_cuda


def test_two_runs_share_one_gpu_through_devices(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = tmp_path / "two.toml"
    study.write_text(
        'name = "two-on-one"\nseeds = [0]\n[base]\nwidth = 0.25\nlimit_train = 256\n'
        'limit_val = 64\n[[stages]]\nname = "lr"\nfield = "lr"\nvalues = [0.05, 0.5]\n'
        "epochs = 1\n"
    )
    out = tmp_path / "study"
    argv = ["study", "run", str(study), "--out", str(out), "--devices", "0,0"]
    assert cli.main([*argv, "--root", str(synthetic_root), "--no-verify"]) == 0, capsys
    summaries = [json.loads(p.read_text()) for p in (out / "runs").glob("*/summary.json")]
    assert len(summaries) == 2
    assert {s["device"] for s in summaries} == {"cuda:0"}
    assert {s["status"] for s in summaries} == {"finished"}
    assert {s["precision"] for s in summaries} == {"bf16"}
