"""Your own model and data: a model module and an .npz / image folder made here run through the
same stages, selection, report and export as CIFAR; every hostile input is one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_one_line_error
from study_fixtures import as_in_a_test, cli, stage_finals

from hpstudy.config import make_run_config
from hpstudy.data import load_user_dataset
from hpstudy.errors import HpstudyError
from hpstudy.sources import register_dataset
from hpstudy.study.remote import export_final as EXPORT_FINAL  # the real one, before any patch

SRC = Path(__file__).resolve().parents[1] / "src"
# the user's model module: a builder, and the ways a builder can be wrong
MODULE = """
import torch
from torch import nn


def build(num_classes, width, hidden=8):
    h = max(1, int(hidden * width))
    return nn.Sequential(
        nn.Conv2d(3, h, 3, padding=1), nn.BatchNorm2d(h), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(h, num_classes),
    )


def raising(num_classes, width):
    raise RuntimeError("boom in the builder")


def not_a_module(num_classes, width):
    return 42


def wrong_shape(num_classes, width):
    return nn.Sequential(nn.Conv2d(3, 5, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def load_tiny():
    import numpy as np
    rng = np.random.default_rng(1)
    return {
        "x_train": rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8),
        "y_train": np.arange(40) % 2,
        "x_test": rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8),
        "y_test": np.arange(10) % 2,
    }


NOT_CALLABLE = 3
"""
ENTRY_POINTS = """[hpstudy.models]
tinynet = ownnets:build
[hpstudy.datasets]
tinydata = ownnets:load_tiny
"""


def colour_images(labels: np.ndarray, side: int, seed: int) -> np.ndarray:
    """Images whose colour says their class (learnable), with noise: uint8 (N, side, side, 3)."""
    rng = np.random.default_rng(seed)
    palette = np.array([[220, 40, 40], [40, 220, 40], [40, 40, 220], [220, 220, 40]])
    noise = rng.integers(-30, 31, (len(labels), side, side, 3))
    return np.clip(palette[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)


def write_npz(path: Path, n_train: int = 240, n_test: int = 40, side: int = 16) -> Path:
    y_train, y_test = np.arange(n_train) % 4, np.arange(n_test) % 4
    np.savez(
        path,
        x_train=colour_images(y_train, side, 0),
        y_train=y_train,
        x_test=colour_images(y_test, side, 1),
        y_test=y_test,
        class_names=np.array(["red", "green", "blue", "yellow"]),
    )
    return path


def write_folder(root: Path, per_class: int = 6, side: int = 16) -> Path:
    from PIL import Image

    for split, seed in (("train", 0), ("test", 1)):
        for label, name in enumerate(["red", "green", "blue"]):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i, image in enumerate(colour_images(np.full(per_class, label), side, seed)):
                Image.fromarray(image).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder on sys.path with the user's module, an installed-looking distribution that
    declares an entry point of each group, and an .npz: as a user's project holds them."""
    folder = tmp_path_factory.mktemp("own")
    (folder / "ownnets.py").write_text(MODULE)
    dist = folder / "ownnets-1.2.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ownnets\nVersion: 1.2\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    write_npz(folder / "data.npz")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(folder))
        yield folder
    sys.modules.pop("ownnets", None)


# ---------------------------------------------------------------- identity


def test_own_model_and_data_enter_the_identity_and_a_change_is_a_new_run(
    own: Path, tmp_path: Path
) -> None:
    data = write_npz(tmp_path / "d.npz", n_train=8, n_test=4)
    values = {"model": "ownnets:build", "dataset": f"npz:{data}", "model_args": {"hidden": 4}}
    config = make_run_config(values)
    assert config.model_source.startswith("ownnets:build ownnets sha256:")
    assert config.data_source.startswith(f"npz:{data} sha256:")
    # read back from its run folder, a config keeps its fingerprint: same hash, same folder
    assert make_run_config(config.model_dump()).run_hash() == config.run_hash()
    # the builder's keywords are part of the identity
    other_args = make_run_config({**values, "model_args": {"hidden": 5}})
    assert other_args.run_hash() != config.run_hash()
    # a changed data file is a new run (same size: the content is what counts)
    write_npz(data, n_train=8, n_test=4, side=16)
    arrays = dict(np.load(data))
    arrays["y_train"] = arrays["y_train"][::-1].copy()
    np.savez(data, **arrays)
    os.utime(data, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert make_run_config(values).run_hash() != config.run_hash()
    # the built-in model and CIFAR keep no fingerprint: their hashes are what they were
    plain = make_run_config({"model_args": {}})
    assert plain.model_source is None and plain.data_source is None
    assert plain.run_hash() == make_run_config({}).run_hash()


def test_a_changed_model_module_is_a_new_run(own: Path, tmp_path: Path) -> None:
    (tmp_path / "changing_net.py").write_text(MODULE)
    sys.path.insert(0, str(tmp_path))
    try:
        before = make_run_config({"model": "changing_net:build"}).run_hash()
        (tmp_path / "changing_net.py").write_text(MODULE + "\n# edited\n")
        after = make_run_config({"model": "changing_net:build"}).run_hash()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("changing_net", None)
    assert before != after


# ---------------------------------------------------------------- refusals, one line each


@pytest.mark.parametrize(
    ("model", "needle"),
    [
        ("ownnets/build.py:build", "never a file path"),
        ("no_such_module_here:build", "No module named 'no_such_module_here'"),
        ("ownnets:missing", "has no attribute 'missing'"),
        ("ownnets:NOT_CALLABLE", "is a int, not a callable"),
        ("ownnets:raising", "building it failed (RuntimeError: boom in the builder)"),
        ("ownnets:not_a_module", "returned a int, not a torch.nn.Module"),
        ("ownnets:wrong_shape", "not [2, 4] (one logit per class)"),
    ],
)
def test_a_bad_model_is_one_line_before_anything_trains(
    own: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str, needle: str
) -> None:
    out = tmp_path / "run"
    args = ["train", "--model", model, "--dataset", f"npz:{own / 'data.npz'}", "--out", str(out)]
    assert_one_line_error(cli(capsys, *args, "--epochs", "1", "--device", "cpu"), needle)
    assert not out.exists()


def npz_member(path: Path, name: str, header: bytes, body: bytes) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}.npy", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little")
                   + header + body)  # fmt: skip


def hostile_npz(tmp: Path, case: str) -> Path:
    path = tmp / f"{case}.npz"
    good = {
        "x_train": np.zeros((4, 8, 8, 3), np.uint8),
        "y_train": np.zeros(4, np.int64),
        "x_test": np.zeros((2, 8, 8, 3), np.uint8),
        "y_test": np.zeros(2, np.int64),
    }
    if case == "object":
        np.savez(path, **{**good, "y_train": np.array([1, "a", None, 2], dtype=object)})
    elif case == "shape lie":
        header = b"{'descr': '|u1', 'fortran_order': False, 'shape': (400, 8, 8, 3), }"
        npz_member(path, "x_train", header.ljust(118) + b"\n", bytes(64))
    elif case == "huge header":
        npz_member(path, "x_train", b"{" + b" " * 20_000 + b"}\n", b"")
    elif case == "huge shape":
        header = b"{'descr': '|u1', 'fortran_order': False, 'shape': (1000000000, 512, 512, 3), }"
        npz_member(path, "x_train", header.ljust(118) + b"\n", b"")
    elif case == "float images":
        np.savez(path, **{**good, "x_train": np.zeros((4, 8, 8, 3), np.float32)})
    elif case == "label count":
        np.savez(path, **{**good, "y_train": np.zeros(3, np.int64)})
    elif case == "negative label":
        np.savez(path, **{**good, "y_test": np.array([0, -1])})
    elif case == "missing":
        np.savez(path, **{k: v for k, v in good.items() if k != "y_test"})
    elif case == "not a zip":
        path.write_bytes(b"not a zip at all")
    return path


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("object", "holds Python objects"),
        ("shape lie", "not a readable .npz"),
        ("huge header", "not a readable .npz"),
        ("huge shape", "is too large"),
        ("float images", "x_train must be a uint8 array (got float32)"),
        ("label count", "y_train holds 3 labels for 4 images"),
        ("negative label", "y_test labels must be in 0.."),
        ("missing", "no y_test"),
        ("not a zip", "not a readable .npz"),
    ],
)
def test_a_hostile_npz_is_one_line(tmp_path: Path, case: str, needle: str) -> None:
    path = hostile_npz(tmp_path, case)
    with pytest.raises(HpstudyError, match=None) as err:
        load_user_dataset(f"npz:{path}")
    assert needle in str(err.value) and "\n" not in str(err.value)


def hostile_folder(tmp: Path, case: str) -> Path:
    from PIL import Image

    root = write_folder(tmp / case, per_class=2, side=8)
    first = root / "train" / "red" / "0.png"
    if case == "link out":
        outside = tmp / "secret.png"
        outside.write_bytes(first.read_bytes())
        (root / "train" / "red" / "link.png").symlink_to(outside)
    elif case == "not an image":
        first.write_text("hello, not a png")
    elif case == "other file":
        (root / "train" / "red" / "notes.txt").write_text("x")
    elif case == "empty class":
        for f in (root / "test" / "blue").iterdir():
            f.unlink()
    elif case == "class sets":
        (root / "test" / "blue").rename(root / "test" / "purple")
    elif case == "sizes":
        Image.new("RGB", (10, 10)).save(first)
    elif case == "bomb":
        Image.new("RGB", (2000, 2000)).save(first)  # > 2 * MAX_IMAGE_PIXELS set below
    return root


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("link out", "a link; folder datasets hold plain files only"),
        ("not an image", "not an image Pillow can read"),
        ("other file", "not a .png or .jpg image"),
        ("empty class", "an empty class"),
        ("class sets", "train/ and test/ differ in classes (blue, purple)"),
        ("sizes", "images differ in size (8x8 and 10x10): set image_size"),
        ("bomb", "decompression bomb"),
    ],
)
def test_a_hostile_image_folder_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, needle: str
) -> None:
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    root = hostile_folder(tmp_path, case)
    with pytest.raises(HpstudyError) as err:
        load_user_dataset(f"folder:{root}")
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_a_bad_dataset_name_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for dataset, needle in [("imagenet", "unknown dataset 'imagenet'"), ("npz:", "needs a path"),
                            ("npz:/no/such.npz", "no such .npz file")]:  # fmt: skip
        result = cli(capsys, "train", "--dataset", dataset, "--out", "unused")
        assert_one_line_error(result, needle)


# ---------------------------------------------------------------- sources


def test_folder_is_decoded_once_resized_and_cached(tmp_path: Path) -> None:
    from PIL import Image

    root = write_folder(tmp_path / "imgs", per_class=3, side=12)
    data = load_user_dataset(f"folder:{root}")
    assert data.fine_names == ["blue", "green", "red"] and data.coarse_names == []
    assert tuple(data.train.images.shape) == (9, 3, 12, 12)
    # images of two sizes: resized to the declared image_size
    Image.new("RGB", (20, 20), (200, 10, 10)).save(root / "train" / "red" / "big.png")
    resized = load_user_dataset(f"folder:{root}", image_size=16)
    assert tuple(resized.train.images.shape) == (10, 3, 16, 16)
    cached = sorted((Path(os.environ["HPSTUDY_CACHE"]) / "folders").glob("*-16.npz"))
    assert cached, "the decoded folder was not cached"
    # the cache is what the next load reads: a file garbled in place (same name, same
    # size) is not decoded again
    garbled = root / "train" / "red" / "0.png"
    garbled.write_bytes(bytes(garbled.stat().st_size))
    again = load_user_dataset(f"folder:{root}", image_size=16)
    assert (again.train.images == resized.train.images).all()


def test_registered_and_entry_point_datasets_and_models(
    own: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import ownnets

    register_dataset("tiny-registered", ownnets.load_tiny)
    config = make_run_config({"dataset": "tiny-registered"})
    assert config.data_source.startswith("tiny-registered ownnets sha256:")
    from hpstudy.run import data_shape

    assert data_shape(config) == (2, (3, 8, 8))
    via_entry_point = make_run_config({"dataset": "tinydata", "model": "tinynet"})
    assert "(ownnets==1.2)" in via_entry_point.data_source
    assert "(ownnets==1.2)" in via_entry_point.model_source
    # `hpstudy models` lists the entry point's model with its size for the dataset
    result = cli(capsys, "models", "--json", "--dataset", "tinydata")
    assert result.returncode == 0, result.stderr
    listed = {m["name"]: m for m in json.loads(result.stdout)["models"]}
    assert listed["tinynet"]["parameters"] == 3 * 8 * 9 + 8 + 2 * 8 + 8 * 2 + 2
    assert listed["mobilenet"]["parameters"] > 0


def test_study_init_writes_a_starter_for_your_model_and_data(
    own: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hpstudy.study import load_study

    out = tmp_path / "mine.toml"
    data = f"npz:{own / 'data.npz'}"
    result = cli(capsys, "study", "init", "mine", "--model", "ownnets:build", "--dataset", data,
                 "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    study = load_study(str(out))
    assert study.base["model"] == "ownnets:build" and study.base["dataset"] == data


# ---------------------------------------------------------------- the study, end to end

OWN_STUDY = """
name = "own"
seeds = [0]
[base]
model = "ownnets:build"
dataset = "npz:DATA"
batch_size = 32
device = "cpu"
[base.model_args]
hidden = 6
[[stages]]
name = "learning rate"
field = "lr"
values = [0.01, 0.1]
epochs = 1
[[stages]]
name = "schedule"
field = "schedule"
values = ["constant", "cosine"]
epochs = 1
"""


@pytest.fixture(scope="module")
def own_study(own: Path, speed_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The two-stage study of the user's model on the user's .npz at the smoke budget, run
    once (in this process, blank figures), its final model exported as a study does."""
    from hpstudy.study import run_study

    folder = tmp_path_factory.mktemp("own-study")
    study = folder / "own.toml"
    study.write_text(OWN_STUDY.replace("DATA", str(own / "data.npz")))
    with as_in_a_test(speed_cache), pytest.MonkeyPatch.context() as patch:
        patch.setattr("hpstudy.study.remote.export_final", EXPORT_FINAL)  # this one exports
        run_study(study, out=folder / "study", budget="smoke")
    return folder


def test_own_model_and_npz_run_a_two_stage_study_with_reuse_report_and_export(
    own_study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = own_study / "study"
    state = json.loads((out / "state.json").read_text())
    assert state["status"] == "finished"
    assert state["data"]["num_classes"] == 4 and state["data"]["image_shape"] == [3, 16, 16]
    # stage 2 tries stage 1's winner again: the same run, reused, not trained twice
    assert any(entry["reused"] for s in state["stages"] for setting in s["settings"]
               for entry in setting["runs"])  # fmt: skip
    assert len(list((out / "runs").iterdir())) == 3
    report = (out / "report.md").read_text()
    assert "4 classes, 16x16 RGB images" in report and "superclass" not in report
    assert state["stages"][0]["comparisons"], "the winner is compared with the other setting"
    exported = json.loads(next((out / "runs").glob("*/export.json")).read_text())
    assert exported["check"]["passed"] and exported["onnx_input"].startswith(
        "images: uint8 NCHW [N, 3, 16, 16]"
    )
    # a rerun of the finished study (the command line's) trains nothing and changes nothing
    before = (out / "state.json").read_text()
    args = ["study", "run", str(own_study / "own.toml"), "--budget", "smoke", "--out", str(out)]
    assert cli(capsys, *args).returncode == 0
    assert json.loads((out / "state.json").read_text())["stages"] == json.loads(before)["stages"]


def test_folder_dataset_trains_and_evaluates_with_the_built_in_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_folder(tmp_path / "imgs", per_class=20, side=16)
    out = tmp_path / "run"
    args = ["train", "--dataset", f"folder:{root}", "--width", "0.125", "--epochs", "1",
            "--batch-size", "16", "--device", "cpu", "--out", str(out), "--json"]  # fmt: skip
    result = cli(capsys, *args)
    assert result.returncode == 0, result.stderr
    result = cli(capsys, "evaluate", str(out), "--split", "test", "--json")
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert scores["images"] == 60 and scores["superclass_top1"] == {}


def test_sigkill_during_a_study_of_your_own_then_rerun_gives_same_results(
    own: Path, own_study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["study", "run", str(own_study / "own.toml"), "--budget", "smoke"]
    whole, killed = own_study / "study", tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(own)])}
    command = [sys.executable, "-m", "hpstudy", *args, "--out", str(killed)]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    proc = subprocess.Popen(command, env=env, **quiet)
    deadline = time.time() + 300  # a hang guard, not a measurement
    while time.time() < deadline and proc.poll() is None:  # kill once the first run has ended
        if list(killed.glob("runs/*/summary.json")):
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (killed / "report.md").exists()
    # the rerun needs no process of its own: what it resumes is on disk
    assert cli(capsys, *args, "--out", str(killed)).returncode == 0
    assert stage_finals(killed) == stage_finals(whole)
    tables = sorted(p.name for p in (whole / "tables").glob("stage*.csv"))
    assert tables
    for name in tables:
        assert (killed / "tables" / name).read_text() == (whole / "tables" / name).read_text()
