"""A corpus of hostile inputs: each ends in one `error:` line, a non-zero exit, no traceback,
no file changed outside the folder it names, and no payload run.

Cases run in-process through `hpstudy.cli.main` (the CLI's own error handling, without
a torch import per case); a few run as a real subprocess too.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import subprocess
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from cifar_archive import py2_pickle_bytes, write_cifar100
from cli_helpers import assert_one_line_error
from unit_fixtures import quick_studies, run_together

from hpstudy import cli

MARKER = "PAYLOAD_RAN"
TINY = 'width = 0.125\nbatch_size = 64\nlimit_train = 128\nlimit_val = 64\ndevice = "cpu"\n'
STAGE = '[[stages]]\nname = "lr"\nfield = "lr"\nvalues = [0.01, 0.05]\nepochs = 1\n'


class Payload:
    """Unpickling this runs a shell command that leaves the marker file."""

    def __init__(self, folder: Path) -> None:
        self.command = f"touch {folder / MARKER}"

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (self.command,))


def study_text(name: str = "hostile", base: str = TINY, stages: str = STAGE, head: str = "") -> str:
    return f'name = "{name}"\n{head}[base]\n{base}{stages}'


@dataclass
class Case:
    """`setup(tmp, env)` builds the inputs and returns the argv (a key it adds to `env` is
    set as an environment variable); `named` is the folder the command may write in
    (relative to tmp), None when it may write nowhere."""

    id: str
    setup: Callable[[Path, dict[str, Path]], list[str]]
    needle: str
    named: str | None = None


def data_root(tmp: Path, **files: bytes) -> Path:
    """A copy of a small valid dataset with some files replaced."""
    root = tmp / "data"
    write_cifar100(root, n_train=60, n_test=20, classes=10)
    for name, payload in files.items():
        (root / "cifar-100-python" / name).write_bytes(payload)
    return root


def split_pickle(data: object, fine: object = None, coarse: object = None) -> bytes:
    n = len(data) if isinstance(data, np.ndarray) else 2
    fine = list(range(n)) if fine is None else fine
    coarse = [0] * n if coarse is None else coarse
    return py2_pickle_bytes({b"data": data, b"fine_labels": fine, b"coarse_labels": coarse})


def info(root: Path) -> list[str]:
    return ["data", "info", "--root", str(root), "--no-verify"]


def data_case(id: str, needle: str, **files: Callable[[Path], bytes]) -> Case:
    def setup(tmp: Path, env: dict[str, Path]) -> list[str]:
        return info(data_root(tmp, **{k: f(tmp) for k, f in files.items()}))

    return Case(id, setup, needle)


IMAGES = np.zeros((2, 3072), np.uint8)
DATA_CASES = [
    data_case("truncated-pickle", "train", train=lambda t: split_pickle(IMAGES)[:40]),
    data_case("garbage-pickle", "train", train=lambda t: os.urandom(2000)),
    data_case("empty-file", "train", train=lambda t: b""),
    data_case("os-system", "refusing", train=lambda t: pickle.dumps(Payload(t), protocol=2)),
    data_case("os-system-nested", "refusing",
              train=lambda t: pickle.dumps({b"data": Payload(t)}, protocol=2)),
    data_case("eval", "refusing", train=lambda t: pickle.dumps(eval, protocol=2)),
    data_case("object-array", "train",
              train=lambda t: pickle.dumps(np.array([Payload(t)], dtype=object), protocol=2)),
    data_case("not-a-dict", "train", train=lambda t: pickle.dumps([1, 2, 3], protocol=2)),
    data_case("int-pickle", "train", train=lambda t: pickle.dumps(7, protocol=2)),
    data_case("no-data-key", "data", train=lambda t: py2_pickle_bytes({b"fine_labels": []})),
    data_case("wrong-dtype", "data", train=lambda t: split_pickle(np.zeros((2, 3072), np.int32))),
    data_case("wrong-shape", "data", train=lambda t: split_pickle(np.zeros((2, 100), np.uint8))),
    data_case("empty-test-split", "test", test=lambda t: split_pickle(IMAGES[:0])),
    data_case("float-labels", "fine_labels", train=lambda t: split_pickle(IMAGES, [1.5, 2.5])),
    data_case("string-labels", "fine_labels", train=lambda t: split_pickle(IMAGES, ["a", "b"])),
    data_case("labels-out-of-range", "fine_labels", train=lambda t: split_pickle(IMAGES, [0, 100])),
    data_case("label-count", "fine_labels", train=lambda t: split_pickle(IMAGES, [0])),
    data_case("meta-without-names", "meta", meta=lambda t: py2_pickle_bytes({b"x": 1})),
    data_case("meta-wrong-count", "meta",
              meta=lambda t: py2_pickle_bytes({b"fine_label_names": [b"a"],
                                               b"coarse_label_names": [b"b"]})),
]


def garbage_archive(tmp: Path, env: dict[str, Path]) -> list[str]:
    root = tmp / "garbage"
    root.mkdir()
    (root / "cifar-100-python.tar.gz").write_bytes(os.urandom(5000))
    return ["data", "info", "--root", str(root)]


def root_is_file(tmp: Path, env: dict[str, Path]) -> list[str]:
    (tmp / "afile").write_text("x")
    return ["data", "info", "--root", str(tmp / "afile"), "--no-verify"]


def wrong_md5(tmp: Path, env: dict[str, Path]) -> list[str]:
    return ["data", "info", "--root", str(data_root(tmp))]  # verifying a hand-built copy


def unknown_home(tmp: Path, env: dict[str, Path]) -> list[str]:
    env["HPSTUDY_DATA"] = Path("~no-such-user-hpstudy/data")
    return ["data", "info"]


ENV_CASES = [
    Case("garbage-archive", garbage_archive, "cifar-100-python.tar.gz"),
    Case("root-is-a-file", root_is_file, "afile"),
    Case("wrong-md5", wrong_md5, "md5"),
    Case("unknown-user-home", unknown_home, "no-such-user-hpstudy"),
]


def study_case(id: str, text: str, needle: str, budget: str = "smoke") -> Case:
    def setup(tmp: Path, env: dict[str, Path]) -> list[str]:
        path = tmp / "study.toml"
        path.write_text(text)
        return ["study", "run", str(path), "--out", str(tmp / "out"), "--budget", budget,
                "--root", str(env["root"]), "--no-verify"]  # fmt: skip

    return Case(id, setup, needle)


STUDY_CASES = [
    study_case("toml-syntax", "name = [unclosed", "not valid TOML"),
    study_case("toml-binary", "\udcff".encode("utf-8", "surrogateescape").decode("latin1"),
               "study.toml"),
    study_case("datetime-value", study_text(stages=STAGE.replace("0.01", "1979-05-27")),
               "values.0: must be a number"),
    study_case("datetime-base", study_text(base=TINY + "lr = 1979-05-27T07:32:00Z\n"), "lr"),
    study_case("datetime-seed", study_text(head="seeds = [1979-05-27]\n"), "seeds"),
    study_case("seed-beyond-2-32", study_text(head="seeds = [4294967296]\n"), "seeds"),
    study_case("negative-lr", study_text(stages=STAGE.replace("0.01", "-0.01")), "lr"),
    study_case("nan-lr", study_text(stages=STAGE.replace("0.01", "nan")), "lr"),
    study_case("inf-width", study_text(base=TINY.replace("0.125", "inf")), "width"),
    study_case("unknown-key", study_text(head="colour = 1\n"), "colour"),
    study_case("unknown-base-key", study_text(base=TINY + "learning_rate = 1\n"), "learning_rate"),
    study_case("unknown-field", study_text(stages=STAGE.replace('"lr"\nv', '"colour"\nv')),
               "colour"),
    study_case("values-repeat", study_text(stages=STAGE.replace("0.05", "0.01")), "repeat"),
    study_case("labels-mismatch", study_text(stages=STAGE + 'labels = ["a"]\n'), "labels"),
    study_case("no-stages", 'name = "x"\nstages = []\n', "stages"),
    study_case("name-with-slash", study_text(name="../../escape"), "name"),
    study_case("name-dotdot", study_text(name=".."), "name"),
    study_case("name-leading-dot", study_text(name=".hidden"), "name"),
    study_case("name-too-long", study_text(name="n" * 101), "name"),
    study_case("epochs-string", study_text(stages=STAGE.replace("epochs = 1", 'epochs = "ten"')),
               "epochs"),
    study_case("nesterov-without-momentum",
               study_text(base=TINY + "momentum = 0.0\nnesterov = true\n"), "nesterov"),
    study_case("fp16-on-cpu", study_text(base=TINY + 'precision = "fp16"\n'), "fp16"),
    study_case("bad-budget", study_text(), "budget", budget="huge"),
]


def study_file(tmp: Path) -> Path:
    path = tmp / "study.toml"
    path.write_text(study_text())
    return path


def out_is_file(tmp: Path, env: dict[str, Path]) -> list[str]:
    (tmp / "out").write_text("mine")
    return ["study", "run", str(study_file(tmp)), "--out", str(tmp / "out")]


def out_under_file(tmp: Path, env: dict[str, Path]) -> list[str]:
    (tmp / "out").write_text("mine")
    return ["study", "run", str(study_file(tmp)), "--out", str(tmp / "out" / "sub")]


def out_holds_user_files(tmp: Path, env: dict[str, Path]) -> list[str]:
    (tmp / "out").mkdir()
    (tmp / "out" / "report.md").write_text("my own notes")
    return ["study", "run", str(study_file(tmp)), "--out", str(tmp / "out"),
            "--root", str(env["root"]), "--no-verify"]  # fmt: skip


def copied_study(tmp: Path, env: dict[str, Path]) -> Path:
    out = tmp / "out"
    shutil.copytree(env["study"], out)
    return out


def doctored_study(file: str, content: Callable[[str], str | bytes], command: str) -> Callable:
    def setup(tmp: Path, env: dict[str, Path]) -> list[str]:
        out = copied_study(tmp, env)
        path = out / file
        new = content(path.read_text())
        path.write_bytes(new if isinstance(new, bytes) else new.encode())
        if command == "run":
            return ["study", "run", str(env["study_toml"]), "--out", str(out),
                    "--root", str(env["root"]), "--no-verify"]  # fmt: skip
        return ["study", "status", str(out)] if command == "status" else ["report", str(out)]

    return setup


def drop_key(text: str) -> str:
    state = json.loads(text)
    del state["stages"][0]["epochs"]
    return json.dumps(state)


FOLDER_CASES = [
    Case("out-is-a-file", out_is_file, "out"),
    Case("out-under-a-file", out_under_file, "out"),
    Case("out-holds-user-files", out_holds_user_files, "study.json", named="out"),
    Case("status-not-a-study", lambda t, e: ["study", "status", str(t)], "not a study folder"),
    Case("report-not-a-study", lambda t, e: ["report", str(t)], "not a study folder"),
    Case("state-binary", doctored_study("state.json", lambda s: os.urandom(64), "status"),
         "state.json", named="out"),
    Case("state-truncated", doctored_study("state.json", lambda s: s[: len(s) // 2], "report"),
         "state.json", named="out"),
    Case("state-a-list", doctored_study("state.json", lambda s: "[1, 2]", "report"),
         "state.json", named="out"),
    Case("state-missing-key", doctored_study("state.json", drop_key, "report"), "epochs",
         named="out"),
    Case("state-wrong-type", doctored_study("state.json",
         lambda s: s.replace('"budget": "smoke"', '"budget": 3'), "status"), "budget",
         named="out"),
    Case("study-json-corrupt", doctored_study("study.json", lambda s: "{", "run"),
         "study.json", named="out"),
    Case("study-json-other-study", doctored_study("study.json",
         lambda s: s.replace(json.loads(s)["study_hash"], "0123456789ab"), "run"),
         "different study", named="out"),
]


def copied_run(tmp: Path, env: dict[str, Path]) -> Path:
    run = tmp / "run"
    shutil.copytree(env["run"], run)
    return run


def doctored_run(file: str, content: Callable[[Path, Path], bytes], command: str) -> Callable:
    def setup(tmp: Path, env: dict[str, Path]) -> list[str]:
        run = copied_run(tmp, env)
        (run / file).write_bytes(content(run / file, tmp))
        if command == "evaluate":
            return ["evaluate", str(run), "--root", str(env["root"]), "--no-verify"]
        (run / "summary.json").unlink(missing_ok=True)  # resume from the checkpoint
        config = json.loads((run / "config.json").read_text())
        return ["train", "--out", str(run), "--root", str(env["root"]), "--no-verify",
                "--width", str(config["width"]), "--epochs", str(config["epochs"]),
                "--batch-size", str(config["batch_size"]), "--device", "cpu"]  # fmt: skip

    return setup


def edit_config(change: dict[str, object]) -> Callable[[Path, Path], bytes]:
    return lambda path, tmp: json.dumps({**json.loads(path.read_text()), **change}).encode()


def edit_checkpoint(change: Callable[[dict], object]) -> Callable[[Path, Path], bytes]:
    def content(path: Path, tmp: Path) -> bytes:
        ckpt = torch.load(path, weights_only=True)
        buf = io.BytesIO()
        torch.save(change(ckpt), buf)
        return buf.getvalue()

    return content


def foreign_checkpoint(path: Path, tmp: Path) -> bytes:
    buf = io.BytesIO()
    torch.save({"model": Payload(tmp)}, buf)  # torch.save pickles it: a code-running file
    return buf.getvalue()


def with_epoch(ckpt: dict, epoch: int) -> dict:
    return {**ckpt, "epoch": epoch}


def small_model(ckpt: dict) -> dict:
    return {**ckpt, "model": {k: v[:1] if v.dim() else v for k, v in ckpt["model"].items()}}


RUN_CASES = [
    Case("config-unknown-key", doctored_run("config.json", edit_config({"colour": 1}), "evaluate"),
         "colour", named="run"),
    Case("config-wrong-type", doctored_run("config.json", edit_config({"lr": "fast"}), "evaluate"),
         "lr", named="run"),
    Case("config-binary", doctored_run("config.json", lambda p, t: os.urandom(40), "evaluate"),
         "config.json", named="run"),
    Case("config-a-list", doctored_run("config.json", lambda p, t: b"[]", "evaluate"),
         "config.json", named="run"),
    Case("summary-wrong-status", doctored_run("summary.json",
         lambda p, t: p.read_bytes().replace(b'"finished"', b'"done"'), "evaluate"),
         "status", named="run"),
    Case("checkpoint-garbage", doctored_run("checkpoint.pt", lambda p, t: os.urandom(500),
         "evaluate"), "checkpoint.pt", named="run"),
    Case("checkpoint-foreign-code", doctored_run("checkpoint.pt", foreign_checkpoint, "evaluate"),
         "checkpoint.pt", named="run"),
    Case("checkpoint-missing-keys", doctored_run("checkpoint.pt",
         edit_checkpoint(lambda c: {"epoch": c["epoch"]}), "evaluate"), "checkpoint.pt",
         named="run"),
    Case("checkpoint-wrong-shapes", doctored_run("checkpoint.pt", edit_checkpoint(small_model),
         "evaluate"), "checkpoint.pt", named="run"),
    Case("checkpoint-epoch-beyond", doctored_run("checkpoint.pt",
         edit_checkpoint(lambda c: with_epoch(c, 99)), "train"), "epoch", named="run"),
    Case("checkpoint-a-tensor", doctored_run("checkpoint.pt",
         edit_checkpoint(lambda c: torch.zeros(3)), "train"), "checkpoint.pt",
         named="run"),
    Case("checkpoint-empty-zip", doctored_run("checkpoint.pt", lambda p, t: empty_zip(),
         "evaluate"), "checkpoint.pt", named="run"),
    Case("metrics-corrupt", lambda t, e: corrupt_metrics(t, e, b"epoch,lr\n1,x\n"), "metrics.csv",
         named="out"),
    Case("metrics-nul-bytes", lambda t, e: corrupt_metrics(t, e, b"\0" * 64), "metrics.csv",
         named="out"),
]


def corrupt_metrics(tmp: Path, env: dict[str, Path], content: bytes) -> list[str]:
    out = copied_study(tmp, env)
    next(out.glob("runs/*/metrics.csv")).write_bytes(content)
    return ["study", "status", str(out)]


def empty_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", b"garbage")
    return buf.getvalue()


def train_args(env: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["train", "--root", str(env["root"]), "--no-verify", "--width", "0.125",
            "--epochs", "1", "--limit-train", "64", "--limit-val", "32", "--device", "cpu",
            "--out", str(out), *extra]  # fmt: skip


def train_into_user_folder(tmp: Path, env: dict[str, Path]) -> list[str]:
    (tmp / "mine").mkdir()
    (tmp / "mine" / "notes.txt").write_text("mine")
    return train_args(env, tmp / "mine")


def train_into_other_run(tmp: Path, env: dict[str, Path]) -> list[str]:
    return train_args(env, copied_run(tmp, env), "--lr", "0.5")


CLI_CASES = [
    Case("train-negative-lr", lambda t, e: train_args(e, t / "r", "--lr", "-1"), "lr"),
    Case("train-seed-2-40", lambda t, e: train_args(e, t / "r", "--seed", str(2**40)), "seed"),
    Case("train-device-tpu", lambda t, e: train_args(e, t / "r", "--device", "tpu"), "device"),
    Case("train-unknown-model", lambda t, e: train_args(e, t / "r", "--model", "vgg99"), "vgg99"),
    Case("train-no-data", lambda t, e: train_args({"root": t / "nothing"}, t / "r"), "CIFAR-100"),
    Case("train-into-user-folder", train_into_user_folder, "mine", named="mine"),
    Case("train-into-other-run", train_into_other_run, "different run", named="run"),
    Case("evaluate-unfinished", lambda t, e: ["evaluate", str(t)], "not a trained run"),
    Case("evaluate-bad-split", lambda t, e: ["evaluate", str(t), "--split", "train"], "split"),
    Case("devices-not-numbers", lambda t, e: ["study", "run", "seed-report", "--devices", "a,b",
         "--out", str(t / "o")], "devices"),
    Case("unknown-study", lambda t, e: ["study", "show", "no-such-study"], "no-such-study"),
    Case("study-file-is-a-folder", lambda t, e: ["study", "show", str(t)], "no such study"),
]

# ---------------------------------------------------------------- integrity (issue 21)

# every field a grid may vary with 20 values: 20**6 = 64 M combinations
HUGE_GRID = "".join(
    f"{name} = [{', '.join(repr(round(start + step * i, 6)) for i in range(20))}]\n"
    for name, start, step in [("lr", 0.01, 0.01), ("weight_decay", 0.0, 1e-4),
                              ("momentum", 0.5, 0.02), ("label_smoothing", 0.0, 0.01),
                              ("mixup_alpha", 0.0, 0.1), ("ema_decay", 0.9, 0.001)]
)  # fmt: skip
GRID_STAGE = '[[stages]]\nname = "g"\nkind = "grid"\nepochs = 1\n[stages.grid]\n'
RANDOM_STAGE = ('[[stages]]\nname = "r{k}"\nkind = "random"\nepochs = 1\nn = {n}\n'
                'space.{field} = {{ {dist} = [{lo}, {hi}] }}\n')  # fmt: skip


def random_stage(k: int, n: int, field: str = "lr", dist: str = "log_uniform",
                 lo: str = "0.01", hi: str = "0.1") -> str:  # fmt: skip
    return RANDOM_STAGE.format(k=k, n=n, field=field, dist=dist, lo=lo, hi=hi)


def linked(file: str, target: Callable[[Path], Path], command: str) -> Callable:
    """The copied study with `file` replaced by a link to `target(tmp)` (or, for "fifo", by a
    FIFO): a tampered folder that must not make hpstudy read without end."""

    def setup(tmp: Path, env: dict[str, Path]) -> list[str]:
        out = copied_study(tmp, env)
        path = next(out.glob(file))
        path.unlink()
        made = target(tmp)
        if made == Path("fifo"):
            os.mkfifo(path)
        else:
            path.symlink_to(made)
        if command == "run":
            return ["study", "run", str(env["study_toml"]), "--out", str(out),
                    "--root", str(env["root"]), "--no-verify"]  # fmt: skip
        return ["study", "status", str(out)] if command == "status" else ["report", str(out)]

    return setup


def oversized(tmp: Path) -> Path:
    big = tmp / "big.json"
    with open(big, "wb") as f:
        f.truncate(65 * 2**20)  # sparse: 65 MB of zeros that take no disk
    return big


def edit_state(change: Callable[[dict], None]) -> Callable[[str], str]:
    def content(text: str) -> str:
        state = json.loads(text)
        change(state)
        return json.dumps(state)

    return content


def user_file(tmp: Path) -> Path:
    mine = tmp / "mine.txt"
    mine.write_text("the user's own file")
    return mine


def export_args(env: dict[str, Path], run: Path, *extra: str) -> list[str]:
    return ["export", str(run), "--root", str(env["root"]), "--no-verify", "--latency-runs", "1",
            *extra]  # fmt: skip


def export_with_summary_linked(tmp: Path, env: dict[str, Path]) -> list[str]:
    run = copied_run(tmp, env)
    (run / "summary.json").unlink()
    (run / "summary.json").symlink_to("/dev/zero")
    return export_args(env, run)


def export_through_link(tmp: Path, env: dict[str, Path]) -> list[str]:
    run = copied_run(tmp, env)
    (run / "model.onnx").symlink_to(user_file(tmp))
    return export_args(env, run)


def export_onto_a_folder(tmp: Path, env: dict[str, Path]) -> list[str]:
    run = copied_run(tmp, env)
    (run / "model.onnx").mkdir()
    return export_args(env, run)


def export_over_user_model(tmp: Path, env: dict[str, Path]) -> list[str]:
    (tmp / "mine").mkdir()
    (tmp / "mine" / "model.onnx").write_text("the user's own model")
    return export_args(env, copied_run(tmp, env), "--out", str(tmp / "mine"))


def export_into_user_folder(tmp: Path, env: dict[str, Path]) -> list[str]:
    (tmp / "mine").mkdir()
    (tmp / "mine" / "notes.txt").write_text("mine")
    return export_args(env, copied_run(tmp, env), "--out", str(tmp / "mine"))


def ci95(value: list[float]) -> Callable[[dict], None]:
    return lambda state: state["final"]["test_top1"].update(ci95=value)


INTEGRITY_CASES = [
    Case("summary-is-dev-zero", linked("runs/*/summary.json", lambda t: Path("/dev/zero"),
         "status"), "summary.json"),
    Case("summary-is-a-fifo", linked("runs/*/summary.json", lambda t: Path("fifo"), "status"),
         "FIFO"),
    Case("study-json-is-dev-zero", linked("study.json", lambda t: Path("/dev/zero"), "run"),
         "study.json"),
    Case("state-json-is-dev-zero", linked("state.json", lambda t: Path("/dev/zero"), "report"),
         "state.json"),
    Case("state-json-oversized", linked("state.json", oversized, "report"), "larger than"),
    Case("metrics-is-dev-zero", linked("runs/*/metrics.csv", lambda t: Path("/dev/zero"),
         "status"), "metrics.csv"),
    Case("export-summary-is-dev-zero", export_with_summary_linked, "summary.json"),
    Case("export-through-a-link", export_through_link, "link"),
    Case("export-onto-a-folder", export_onto_a_folder, "folder"),
    Case("export-over-a-user-model", export_over_user_model, "export.json"),
    Case("export-into-a-user-folder", export_into_user_folder, "notes.txt"),
    study_case("grid-of-64-million", study_text(stages=GRID_STAGE + HUGE_GRID), "MAX_SETTINGS"),
    study_case("random-n-beyond-cap", study_text(stages=random_stage(1, 10_001)), "10000"),
    study_case("study-of-too-many-runs",
               study_text(head="seeds = [0, 1, 2]\n",
                          stages=random_stage(1, 10_000) + random_stage(2, 10_000)),
               "MAX_STUDY_RUNS"),
    study_case("uniform-span-overflows",
               study_text(stages=random_stage(1, 2, "label_smoothing", "uniform", "-1.7e308",
                                              "1.7e308")), "wider than a float"),
    study_case("int-bounds-beyond-int64",
               study_text(stages=random_stage(1, 2, "warmup_epochs", "int", "0", str(2**70))),
               "2**62"),
    Case("state-ci95-empty", doctored_study("state.json", edit_state(ci95([])), "report"),
         "ci95", named="out"),
    Case("state-ci95-one-value", doctored_study("state.json", edit_state(ci95([0.1])), "status"),
         "ci95", named="out"),
    Case("state-no-settings", doctored_study("state.json",
         edit_state(lambda s: s["stages"][0].update(settings=[])), "report"), "winner",
         named="out"),
    Case("state-winner-out-of-range", doctored_study("state.json",
         edit_state(lambda s: s["stages"][0].update(winner=7)), "report"), "winner",
         named="out"),
    Case("state-no-final-runs", doctored_study("state.json",
         edit_state(lambda s: s["final"].update(runs=[])), "report"), "runs", named="out"),
    Case("state-two-million-classes", doctored_study("state.json",
         edit_state(lambda s: s["data"].update(class_proportions=[0.01] * 2_000_000)),
         "report"), "class_proportions", named="out"),
    Case("state-optuna-half-recorded", doctored_study("state.json",
         edit_state(lambda s: s["stages"][0].update(kind="optuna", journal="optuna/x.log")),
         "report"), "optuna_study", named="out"),
]

CASES = (DATA_CASES + ENV_CASES + STUDY_CASES + FOLDER_CASES + RUN_CASES + CLI_CASES
         + INTEGRITY_CASES)  # fmt: skip


def snapshot(folder: Path, skip: Path | None) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and (skip is None or not p.is_relative_to(skip))
    }


@pytest.fixture(scope="module")
def env(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A finished run folder and a finished smoke study on the synthetic data, to doctor."""
    base = tmp_path_factory.mktemp("hostile-base")
    run = base / "run"
    toml = base / "study.toml"
    toml.write_text(study_text())
    study = base / "study"
    with quick_studies():  # no case reads the export or the figures' pixels
        assert cli.main(["train", "--root", str(synthetic_root), "--no-verify", "--width",
                         "0.125", "--epochs", "1", "--batch-size", "64", "--device", "cpu",
                         "--out", str(run)]) == 0  # fmt: skip
        assert cli.main(["study", "run", str(toml), "--out", str(study), "--budget", "smoke",
                         "--root", str(synthetic_root), "--no-verify"]) == 0  # fmt: skip
    return {"root": synthetic_root, "run": run, "study": study, "study_toml": toml}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_is_one_line(
    case: Case,
    env: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    given = dict(env)
    argv = case.setup(tmp_path, given)
    for key in given.keys() - env.keys():  # what a case adds is an environment variable
        monkeypatch.setenv(key, str(given[key]))
    named = tmp_path / case.named if case.named else None
    before = snapshot(tmp_path, named)
    capsys.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as exit:  # argparse's usage errors end the parse with an exit
        code = exit.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert case.needle in lines[0], lines[0]
    assert "weights_only" not in lines[0] and "internal error" not in lines[0]
    assert snapshot(tmp_path, named) == before, "a file outside the named folder changed"
    assert not list(tmp_path.rglob(MARKER)), "a payload ran"


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 80
    assert len({c.id for c in CASES}) == len(CASES)


REAL_PROCESS_CASES = ["os-system", "checkpoint-foreign-code", "name-with-slash"]


@pytest.fixture(scope="module")
def real_runs(
    env: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[subprocess.CompletedProcess[str], Path]]:
    """The REAL_PROCESS_CASES as real `hpstudy` processes, all started at once: their
    start-ups (torch's import, about 4 s) run side by side. Each has its own folder."""
    folders = {case_id: tmp_path_factory.mktemp(case_id) for case_id in REAL_PROCESS_CASES}
    cases = {c.id: c for c in CASES}
    argv = {case_id: cases[case_id].setup(tmp, dict(env)) for case_id, tmp in folders.items()}
    results = run_together(argv)
    return {case_id: (results[case_id], folders[case_id]) for case_id in REAL_PROCESS_CASES}


@pytest.mark.parametrize("case_id", REAL_PROCESS_CASES)
def test_hostile_input_through_a_real_process(
    case_id: str, real_runs: dict[str, tuple[subprocess.CompletedProcess[str], Path]]
) -> None:
    case = next(c for c in CASES if c.id == case_id)
    result, tmp = real_runs[case_id]
    assert case.needle in assert_one_line_error(result)
    assert not list(tmp.rglob(MARKER))


# ---------------------------------------------------------------- the test ledger


def ledger_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "test_ledger.jsonl").read_text().splitlines()]


def test_every_test_touch_is_on_the_record_and_a_second_configuration_is_reported_first(
    env: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = copied_study(tmp_path, env)
    root = ["--root", str(env["root"]), "--no-verify"]
    state = json.loads((out / "state.json").read_text())
    stage = state["stages"][0]
    winner = stage["settings"][stage["winner"]]["runs"][0]
    loser = stage["settings"][1 - stage["winner"]]["runs"][0]
    (first,) = ledger_of(out)  # the study's own final evaluation
    assert (first["run_hash"], first["seeds"]) == (winner["run_hash"], [0])
    assert state["final"]["config_hash"] == first["config_hash"]

    # another configuration meets the test split: recorded before its result is shown
    capsys.readouterr()
    assert cli.main(["evaluate", str(out / loser["run_dir"]), "--split", "test", *root]) == 0
    assert "test ledger" in capsys.readouterr().err
    touches = ledger_of(out)
    assert [t["run_hash"] for t in touches] == [winner["run_hash"], loser["run_hash"]]
    assert touches[0]["config_hash"] != touches[1]["config_hash"]
    assert cli.main(["study", "status", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "test split: evaluated 2 times on 2 distinct configurations" in shown
    assert f"{first['config_hash']} (reported)" in shown
    with quick_studies():  # the next report counts it (the ledger is fresher than the state)
        assert cli.main(["report", str(out)]) == 0
    assert "**The test split was evaluated on 2 distinct" in (out / "report.md").read_text()

    # a rerun with more seeds says so on the terminal before it tests, and its report puts
    # both configurations first, in bold, naming the one reported
    with quick_studies():
        assert cli.main(["study", "run", str(env["study_toml"]), "--out", str(out),
                         "--budget", "smoke", "--seeds", "0,1", *root]) == 0  # fmt: skip
    said = capsys.readouterr()
    assert "the final winner changed" in said.out + said.err
    touches = ledger_of(out)
    assert len(touches) == 3 and touches[2]["seeds"] == [0, 1]  # the new final seed's test
    state = json.loads((out / "state.json").read_text())
    assert len(state["final"]["test_touches"]) == 3
    reported = state["final"]["config_hash"]
    report = (out / "report.md").read_text()
    final = report[report.index("Final test result"):].split("\n\n")
    assert final[1].startswith("**The test split was evaluated on 2 distinct configurations")
    assert f"`{reported}`" in final[1]
    assert "test ledger" in report and all(t["run_hash"] in report for t in touches)
    assert "evaluated once, on the final configuration only" not in report


def test_status_shows_the_run_a_study_is_training_as_running(
    env: dict[str, Path], tmp_path: Path
) -> None:
    from hpstudy.study.state import StudyFolder
    from hpstudy.study.status import status_text

    out = copied_study(tmp_path, env)
    state = json.loads((out / "state.json").read_text())
    state["status"] = "running"
    (out / "state.json").write_text(json.dumps(state))
    run = out / state["stages"][0]["settings"][0]["runs"][0]["run_dir"]
    (run / "summary.json").unlink()  # not finished: partial, from its checkpoint

    def row(text: str) -> str:
        return next(line for line in text.splitlines() if line.endswith(run.name)
                    or f"{run.name} " in line)  # fmt: skip

    assert " partial " in row(status_text(out))  # no `study run` holds the folder
    with StudyFolder(out).lock():
        assert " partial " in row(status_text(out))  # not yet taken up by this study run
        os.utime(run / "config.json")  # the study run claims it: it trains now
        assert " running " in row(status_text(out))
    assert " partial " in row(status_text(out))


def test_a_recorded_optuna_study_missing_from_its_journal_skips_its_figures(
    env: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    optuna = pytest.importorskip("optuna")
    from hpstudy.study.search import open_storage

    out = copied_study(tmp_path, env)
    (out / "optuna").mkdir()
    optuna.create_study(study_name="another", storage=open_storage(out / "optuna" / "j.log"))
    state = json.loads((out / "state.json").read_text())
    state["stages"][0].update(kind="optuna", journal="optuna/j.log", optuna_study="missing")
    (out / "state.json").write_text(json.dumps(state))
    assert cli.main(["report", str(out)]) == 0
    assert "holds no Optuna study 'missing'" in (out / "report.md").read_text()


def test_writes_never_go_through_a_link_and_reads_stop_at_their_cap(tmp_path: Path) -> None:
    from hpstudy.errors import HpstudyError
    from hpstudy.files import read_capped, write_atomic

    mine = user_file(tmp_path)
    target = tmp_path / "state.json"
    (tmp_path / "state.json.tmp").symlink_to(mine)  # a link planted at the temporary name
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new" and mine.read_text() == "the user's own file"
    assert not (tmp_path / "state.json.tmp").exists()
    link = tmp_path / "summary.json"
    link.symlink_to(mine)
    with pytest.raises(HpstudyError, match="is a link"):
        write_atomic(link, b"x")
    assert link.is_symlink() and mine.read_text() == "the user's own file"
    assert read_capped(target, 3) == b"new"
    with pytest.raises(HpstudyError, match="larger than the 2 bytes"):
        read_capped(target, 2)
    os.mkfifo(tmp_path / "fifo")  # opened without waiting for a writer, then refused
    with pytest.raises(HpstudyError, match="is a FIFO"):
        read_capped(tmp_path / "fifo", 100)
