"""Study and run folders: names that are not paths, folders hpstudy may use, one writer per
study folder (an OS lock), a report that exists before the state says finished, corrupt files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error
from study_fixtures import as_in_a_test

from hpstudy import cli
from hpstudy.config import RunConfig
from hpstudy.errors import HpstudyError
from hpstudy.run import RunDir, RunStatus
from hpstudy.study import StudyFolder, default_out, load_study, run_study
from hpstudy.study.lock import LOCK_NAME

# one batch per epoch: these tests check folders, not what the runs learn
BASE = """
seeds = [0]
[base]
width = 0.125
batch_size = 64
limit_train = 64
limit_val = 64
device = "cpu"
"""
# stage 2's "none" is stage 1's winner: reused, not trained again
TWO_STAGES = (
    'name = "folders"\n'
    + BASE
    + """
[[stages]]
name = "lr"
field = "lr"
values = [0.01, 0.05]
epochs = 1
[[stages]]
name = "mixup"
field = "mixup_alpha"
values = [0.0, 0.2]
labels = ["none", "alpha 0.2"]
epochs = 1
"""
)
ONE_RUN = 'name = "one"\n' + BASE + '[[stages]]\nname = "lr"\nfield = "lr"\nvalues = [0.05]\n'
ONE_RUN += "epochs = 1\n"

# `study run` whose run stalls (holding the folder) until it is killed
STALLING = """
import sys, time
import hpstudy.run
hpstudy.run.train = lambda *args, **kwargs: time.sleep(600)
from hpstudy.cli import main
sys.exit(main(sys.argv[1:]))
"""
# `study run` killed (SIGKILL) once the final state is written, before the report (and,
# as in the in-process tests, without exporting the final model first)
KILLED_AT_REPORT = """
import os, signal, sys
import hpstudy.report, hpstudy.study.runner
hpstudy.report.write_report = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
hpstudy.study.remote.export_final = lambda *args: None
from hpstudy.cli import main
sys.exit(main(sys.argv[1:]))
"""


# ---------------------------------------------------------------- helpers


def snapshot(*roots: Path, skip: Path | None = None) -> dict[Path, tuple[bool, int, int]]:
    """Every file and folder under `roots` (but `skip`): kind, size, mtime."""
    seen = {}
    for root in roots:
        for p in [root, *root.rglob("*")]:
            if skip is not None and (p == skip or skip in p.parents):
                continue
            st = p.lstat()
            seen[p] = (p.is_dir(), st.st_size, st.st_mtime_ns)
    return seen


def cli_error(capsys: pytest.CaptureFixture[str], *argv: str, progress: bool = False) -> str:
    """`hpstudy ARGV` in this process: a non-zero exit and exactly one `error:` line (the
    only line on stderr, or with `progress` the last, after the progress lines)."""
    capsys.readouterr()
    code = cli.main(list(argv))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0, err
    assert lines and lines[-1].startswith("error: "), err
    assert len(lines) == 1 or (progress and sum(x.startswith("error:") for x in lines) == 1), err
    assert "internal error" not in lines[-1] and "Traceback" not in err
    return lines[-1]


def cli_ok(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def state_of(out: Path) -> dict:
    return json.loads((out / "state.json").read_text())


def checkpoints(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in out.rglob("checkpoint.pt")}


def reused_run(out: Path) -> Path:
    """Stage 2's "none": the run folder of stage 1's winner."""
    none = state_of(out)["stages"][1]["settings"][0]
    assert none["label"] == "none" and none["runs"][0]["reused"]
    return out / none["runs"][0]["run_dir"]


@pytest.fixture(scope="module")
def study_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("file") / "folders.toml"
    path.write_text(TWO_STAGES)
    return path


@pytest.fixture(scope="module")
def finished(
    study_file: Path,
    synthetic_root: Path,
    speed_cache: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """The two-stage study, finished, in a folder that existed (empty) before the run."""
    out = tmp_path_factory.mktemp("finished") / "study"
    out.mkdir()
    with as_in_a_test(speed_cache):
        state = run_study(study_file, out=out, root=str(synthetic_root), verify=False)
    assert state.status == "finished"
    return out


def copy_of(finished: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "study"))


# ---------------------------------------------------------------- 1. a name, not a path


@pytest.mark.parametrize(
    "name",
    [
        "a/b",
        "a\\\\b",
        "../escape",
        "..",
        "x..y",
        ".hidden",
        "a\\nb",
        "a\\u0000b",
        "a\\u202eb",
        "a" * 101,
    ],
)
def test_a_study_name_that_is_a_path_is_refused_at_load(tmp_path: Path, name: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(ONE_RUN.replace('name = "one"', f'name = "{name}"'))
    with pytest.raises(HpstudyError) as err:
        load_study(path)
    message = str(err.value)
    assert message.startswith(f"{path}: name: ") and "\n" not in message


@pytest.mark.parametrize("name", ["seed-report", "my study 2", "a.b", "x" * 100, "étude"])
def test_plain_names_stay_names_under_runs(tmp_path: Path, name: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(ONE_RUN.replace('name = "one"', f'name = "{name}"'))
    study = load_study(path)
    for budget in ("full", "smoke"):
        out = default_out(study.name, budget)
        assert out.parent == Path("runs") and out.name.startswith(name)


def test_a_path_as_name_touches_nothing_through_the_cli(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "escape.toml").write_text(ONE_RUN.replace('name = "one"', 'name = "../escape"'))
    before = snapshot(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "hpstudy", "study", "run", "escape.toml", "--budget", "smoke"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "a study name is a name, not a path" in assert_one_line_error(result, "escape.toml")
    assert snapshot(tmp_path) == before  # no runs/, no ../escape-smoke


# ---------------------------------------------------------------- 2. folders hpstudy may use


def test_study_run_refuses_a_folder_of_files_it_did_not_write(
    tmp_path: Path, study_file: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.md").write_text("my own notes\n")
    before = snapshot(tmp_path, synthetic_root)
    line = cli_error(
        capsys,
        "study",
        "run",
        str(study_file),
        "--out",
        str(out),
        "--root",
        str(synthetic_root),
        "--no-verify",
    )
    assert str(out) in line and "no study.json" in line and "'report.md'" in line
    assert "use another --out" in line
    assert snapshot(tmp_path, synthetic_root) == before
    assert (out / "report.md").read_text() == "my own notes\n"


def test_an_existing_empty_folder_is_fine_and_keeps_only_hpstudy_files(finished: Path) -> None:
    names = {p.name for p in finished.iterdir()}
    assert {"study.json", "state.json", "report.md", "report.html", "runs", LOCK_NAME} <= names
    assert (finished / LOCK_NAME).read_text() == ""  # a clean end names no holder


def test_out_that_is_a_file_or_under_a_file_is_one_line(
    tmp_path: Path, study_file: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    before = snapshot(tmp_path, synthetic_root)
    data = ("--root", str(synthetic_root), "--no-verify")
    line = cli_error(capsys, "study", "run", str(study_file), "--out", str(afile), *data)
    assert f"{afile}: is a file, not a folder" in line
    line = cli_error(capsys, "study", "run", str(study_file), "--out", str(afile / "s"), *data)
    assert f"{afile} is a file, not a folder" in line
    train = ("train", "--width", "0.125", "--limit-train", "128", "--epochs", "1", *data)
    assert f"{afile}: is a file" in cli_error(capsys, *train, "--out", str(afile))
    assert f"{afile} is a file" in cli_error(capsys, *train, "--out", str(afile / "run"))
    assert snapshot(tmp_path, synthetic_root) == before


def test_train_refuses_a_folder_that_is_not_a_run_folder(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me\n")
    before = snapshot(tmp_path, synthetic_root)
    line = cli_error(
        capsys,
        "train",
        "--width",
        "0.125",
        "--limit-train",
        "128",
        "--epochs",
        "1",
        "--root",
        str(synthetic_root),
        "--no-verify",
        "--out",
        str(out),
    )
    assert str(out) in line and "no config.json" in line and "not a run folder" in line
    assert snapshot(tmp_path, synthetic_root) == before


def test_a_failed_train_leaves_no_run_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "run"
    line = cli_error(capsys, "train", "--out", str(out), "--root", str(empty), "--epochs", "1")
    assert "cannot download CIFAR-100" in line
    assert not out.exists()


def test_claim_takes_empty_folders_and_a_failed_runs_leftovers_and_check_writes_nothing(
    tmp_path: Path,
) -> None:
    config = RunConfig(width=0.125, epochs=1)
    failed = RunDir(tmp_path / "failed")  # failed before its config was written
    failed.record_failure(config.run_hash(), "worker process died", "details")
    failed.claim(config)
    assert failed.read_config().run_hash() == config.run_hash()
    empty = RunDir(tmp_path / "empty")
    empty.path.mkdir()
    empty.claim(config)
    foreign = RunDir(tmp_path / "foreign")
    foreign.path.mkdir()
    (foreign.path / "summary.json").write_text("{}")
    (foreign.path / "data.bin").write_bytes(b"\0")
    with pytest.raises(HpstudyError, match=r"no config\.json \('data\.bin'\)"):
        foreign.check(config)
    with pytest.raises(HpstudyError, match="holds a different run"):
        empty.claim(config.model_copy(update={"lr": 0.5}))
    fresh = RunDir(tmp_path / "fresh")
    fresh.check(config)
    assert not fresh.path.exists()


def test_a_mistyped_root_creates_no_folder(
    tmp_path: Path, study_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, typo = tmp_path / "out", tmp_path / "dtaa" / "cifar"
    line = cli_error(
        capsys, "study", "run", str(study_file), "--out", str(out), "--root", str(typo)
    )
    assert "cannot download CIFAR-100" in line
    assert not out.exists()  # holds: the study folder is made only once the data is there
    assert not (tmp_path / "dtaa").exists()  # nor the data root: nothing could be fetched


# ---------------------------------------------------------------- 4. one writer per folder


def test_the_lock_refuses_a_second_holder_and_names_the_first(tmp_path: Path) -> None:
    folder = StudyFolder(tmp_path / "study")
    with folder.lock():
        assert (folder.path / LOCK_NAME).read_text().split()[0] == str(os.getpid())
        with pytest.raises(HpstudyError, match=rf"process {os.getpid()} on "), folder.lock():
            pass
    with folder.lock():  # released at the end of the block
        pass
    assert (folder.path / LOCK_NAME).read_text() == ""


def test_a_second_study_run_is_refused_while_status_reads_and_sigkill_frees_the_folder(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = tmp_path / "one.toml"
    study.write_text(ONE_RUN)
    out = tmp_path / "out"
    args = [
        "study",
        "run",
        str(study),
        "--out",
        str(out),
        "--root",
        str(synthetic_root),
        "--no-verify",
    ]
    # the holder is a process of its own; the commands it refuses or lets read run here
    holder = subprocess.Popen(
        [sys.executable, "-c", STALLING, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        lock = out / LOCK_NAME
        deadline = time.time() + 300
        while time.time() < deadline and holder.poll() is None:
            written = lock.read_text().split() if lock.is_file() else []
            if written and (out / "state.json").is_file():
                break
            time.sleep(0.05)
        assert holder.poll() is None, "the first study run ended early"
        assert lock.read_text().split()[0] == str(holder.pid)
        before = snapshot(tmp_path, synthetic_root, skip=out)
        line = cli_error(capsys, *args)
        assert str(out) in line and f"process {holder.pid} on " in line
        assert "another `study run`" in line
        assert "one (full): running" in cli_ok(capsys, "study", "status", str(out))
        cli_ok(capsys, "report", str(out))
        assert holder.poll() is None  # the refusals happened while it held the folder
        assert snapshot(tmp_path, synthetic_root, skip=out) == before
    finally:
        holder.kill()  # SIGKILL: the OS releases its lock
        holder.wait()
    cli_ok(capsys, *args)
    assert state_of(out)["status"] == "finished" and (out / "report.md").is_file()


# ---------------------------------------------------------------- 5. the report, then done


def test_a_report_that_fails_leaves_a_study_the_next_run_completes(
    finished: Path,
    study_file: Path,
    synthetic_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = copy_of(finished, tmp_path)
    (out / "state.json").unlink()  # not done: the next run goes through to the report
    trained = checkpoints(out)

    def fail(study_dir: Path) -> Path:
        raise HpstudyError(f"{study_dir}/figures: cannot write (No space left on device)")

    args = [
        "study",
        "run",
        str(study_file),
        "--out",
        str(out),
        "--root",
        str(synthetic_root),
        "--no-verify",
    ]
    with monkeypatch.context() as patched:
        patched.setattr("hpstudy.report.write_report", fail)
        line = cli_error(capsys, *args, progress=True)
    assert "the study is finished but its report could not be written" in line
    assert "No space left on device" in line and "run the same command again" in line
    assert state_of(out)["status"] == "running"
    assert not (out / "report.md").exists()

    state = run_study(study_file, out=out, root=str(synthetic_root), verify=False)
    assert state.status == "finished" and state_of(out)["status"] == "finished"
    assert (out / "report.md").is_file()
    assert checkpoints(out) == trained  # nothing trained again


def test_a_kill_between_state_and_report_is_completed_by_the_next_run(
    finished: Path,
    study_file: Path,
    synthetic_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = copy_of(finished, tmp_path)
    (out / "state.json").unlink()  # report.md stays: the earlier state's, stale from now on
    trained = checkpoints(out)
    args = [
        "study",
        "run",
        str(study_file),
        "--out",
        str(out),
        "--root",
        str(synthetic_root),
        "--no-verify",
    ]
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AT_REPORT, *args], capture_output=True, text=True, timeout=300
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert state_of(out)["status"] == "finished"
    assert not (out / "report.md").exists()  # so the study is not done

    # the next runs need no process of their own: what they complete is on disk
    capsys.readouterr()
    assert cli.main(args) == 0
    assert "already finished" not in capsys.readouterr().err
    assert (out / "report.md").is_file() and checkpoints(out) == trained

    (out / "report.md").unlink()  # a deleted report is written again, nothing retrained
    assert cli.main(args) == 0
    assert "already finished" not in capsys.readouterr().err
    assert (out / "report.md").is_file() and checkpoints(out) == trained


def test_a_reused_run_whose_folder_vanished_is_trained_again(
    finished: Path,
    study_file: Path,
    synthetic_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hpstudy.study import session

    out = copy_of(finished, tmp_path)
    reused = reused_run(out)
    val_acc = RunDir(reused).read_summary().final["val_acc"]  # type: ignore[union-attr]
    (out / "state.json").unlink()
    expand = session.expand_stage

    def vanish_before_stage_two(folder, plan, k, winners, seen):  # type: ignore[no-untyped-def]
        if k == 1:
            shutil.rmtree(reused)  # after stage 1 chose it, before stage 2 reuses it
        return expand(folder, plan, k, winners, seen)

    with monkeypatch.context() as patched:
        patched.setattr(session, "expand_stage", vanish_before_stage_two)
        state = run_study(study_file, out=out, root=str(synthetic_root), verify=False)
    none = state.stages[1].settings[0]
    assert none.runs[0].reused and none.runs[0].status == RunStatus.FINISHED
    assert state.status == "finished" and none.final is not None
    summary = RunDir(reused).read_summary()
    assert summary is not None and summary.final["val_acc"] == val_acc  # type: ignore[index]

    shutil.rmtree(reused)  # between two runs: the next one trains it again
    (out / "report.md").unlink()
    state = run_study(study_file, out=out, root=str(synthetic_root), verify=False)
    assert state.status == "finished"
    assert RunDir(reused).status() == RunStatus.FINISHED


# ---------------------------------------------------------------- 6. missing and corrupt files


def test_a_missing_runs_folder_reads_and_retrains(
    finished: Path,
    study_file: Path,
    synthetic_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = copy_of(finished, tmp_path)
    shutil.rmtree(out / "runs")
    assert "pending" in cli_ok(capsys, "study", "status", str(out))
    assert "report written" in cli_ok(capsys, "report", str(out))
    (out / "report.md").unlink()
    state = run_study(study_file, out=out, root=str(synthetic_root), verify=False)
    assert state.status == "finished" and len(list((out / "runs").iterdir())) == 3


def corruptions(text: str) -> dict[str, bytes]:
    wrong_types = json.loads(text)
    first = next(iter(wrong_types))
    wrong_types[first] = {"not": "this"}
    return {
        "binary": b"\xff\xfe\x00\x89PNG\r\n\x1a\n",
        "truncated": text.encode()[: len(text) // 2],
        "empty": b"",
        "wrong types": json.dumps(wrong_types).encode(),
        "a list": b"[1, 2, 3]\n",
        "a huge number": b'{"name": ' + b"9" * 5000 + b"}",
        "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    }


@pytest.mark.parametrize(
    "kind",
    ["binary", "truncated", "empty", "wrong types", "a list", "a huge number", "deep nesting"],
)
def test_a_corrupt_state_or_study_file_is_one_line_naming_it(
    finished: Path,
    study_file: Path,
    synthetic_root: Path,
    tmp_path: Path,
    kind: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = copy_of(finished, tmp_path)
    run = (
        "study",
        "run",
        str(study_file),
        "--out",
        str(out),
        "--root",
        str(synthetic_root),
        "--no-verify",
    )
    for name in ("state.json", "study.json"):
        path = out / name
        good = path.read_bytes()
        bad = corruptions(good.decode())[kind]
        path.write_bytes(bad)
        before = snapshot(tmp_path, synthetic_root)
        commands = [run]
        if name == "state.json":  # status and report read state.json only
            commands += [("study", "status", str(out)), ("report", str(out))]
        for argv in commands:
            line = cli_error(capsys, *argv)
            assert line.startswith(f"error: {path}: "), line
            assert snapshot(tmp_path, synthetic_root) == before  # the bad file is kept too
        path.write_bytes(good)


def test_status_and_report_need_only_state_json(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = copy_of(finished, tmp_path)
    (out / "study.json").write_bytes(b"\xff")
    assert "folders (full): finished" in cli_ok(capsys, "study", "status", str(out))
    cli_ok(capsys, "report", str(out))
    (out / "state.json").unlink()
    for argv in (("study", "status", str(out)), ("report", str(out))):
        assert "not a study folder (no state.json)" in cli_error(capsys, *argv)
