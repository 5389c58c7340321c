"""What a library user and a packager expect: silence unless logging is configured, a
command-line parser that imports no heavy library, --json on every command that reports,
schema versions on every file with one migration table, one version, py.typed."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

import hpstudy
from hpstudy import cli, files, progress
from hpstudy.config import RunConfig
from hpstudy.errors import HpstudyError
from hpstudy.run import RunDir

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"


def python(code: str) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter: what this process imported or configured cannot leak in."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


# ---------------------------------------------------------------- the command line's parser

HELP_EVERYWHERE = """
import contextlib, io, sys
from hpstudy import cli

def commands(parser, path=()):
    subs = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    if not subs:
        yield list(path)
    for action in subs:
        for name, p in action.choices.items():
            yield from commands(p, (*path, name))

top = ["--help"]
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    cli.build_parser(top).parse_args(top)
bare = sorted(m for m in ("pydantic", "torch") if m in sys.modules)
argvs = [[*c, "--help"] for c in commands(cli.build_parser())]
for argv in argvs:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        cli.build_parser(argv).parse_args(argv)
heavy = sorted(m for m in ("torch", "scipy", "matplotlib", "numpy") if m in sys.modules)
print(len(argvs), bare, heavy)
"""


def test_every_help_builds_without_torch_scipy_or_matplotlib() -> None:
    result = python(HELP_EVERYWHERE)
    assert result.returncode == 0, result.stderr
    count, bare, heavy = result.stdout.split(" ", 2)
    assert int(count) >= 11  # data download/info, train, evaluate, export, report, study x5
    assert bare == "[]"  # `hpstudy --help` builds no command's options: not even pydantic
    assert heavy.strip() == "[]"


def test_the_parser_given_a_command_builds_only_it() -> None:
    parser = cli.build_parser(["report", "x"])
    assert parser.parse_args(["report", "x", "--json"]).json is True


# ---------------------------------------------------------------- logging

SILENT = """
import logging
{prefix}
logging.getLogger("hpstudy.run.loop").warning("a warning nobody asked to see")
from hpstudy.progress import worker_log_level
print(worker_log_level())
"""


def test_a_library_prints_nothing_unless_logging_is_configured() -> None:
    silent = python(SILENT.format(prefix="import hpstudy"))
    assert (silent.stdout, silent.stderr) == ("None\n", "")  # and its workers stay silent
    # the same record without hpstudy's NullHandler reaches Python's last-resort handler
    bare = python(SILENT.format(prefix=""))
    assert "a warning nobody asked to see" in bare.stderr
    shown = python(SILENT.format(prefix="import hpstudy; logging.basicConfig(level='INFO')"))
    assert "a warning nobody asked to see" in shown.stderr and shown.stdout == "20\n"


def test_the_command_lines_logging_is_undone_after_each_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, optuna = logging.getLogger("hpstudy"), logging.getLogger("optuna")
    before = (list(root.handlers), root.level, optuna.level)
    with progress.cli_logging():
        assert progress.worker_log_level() == logging.INFO
        assert optuna.getEffectiveLevel() == logging.WARNING  # its per-trial lines quieted
        logging.getLogger("hpstudy.x").info("shown")
    assert capsys.readouterr().err == "shown\n"
    assert cli.main(["study", "list"]) == 0
    assert (list(root.handlers), root.level, optuna.level) == before


def test_importing_optuna_leaves_its_verbosity_alone() -> None:
    pytest.importorskip("optuna")
    from hpstudy.study.search import import_optuna

    level = logging.getLogger("optuna").level
    import_optuna()
    assert logging.getLogger("optuna").level == level


# ---------------------------------------------------------------- --json


def leaf_parsers(parser: object, path: tuple[str, ...] = ()) -> dict[str, object]:
    subs = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]  # type: ignore[attr-defined]
    if not subs:
        return {" ".join(path): parser}
    found: dict[str, object] = {}
    for action in subs:
        for name, p in action.choices.items():
            found |= leaf_parsers(p, (*path, name))
    return found


def test_every_command_takes_json() -> None:
    leaves = leaf_parsers(cli.build_parser())
    assert "study run" in leaves and "data download" in leaves
    lacking = [name for name, p in leaves.items()
               if "--json" not in p._option_string_actions]  # type: ignore[attr-defined]  # fmt: skip
    assert lacking == []


def test_json_is_one_object_with_its_schema_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shown = {}
    for argv in (["study", "list"], ["study", "show", "seed-report"],
                 ["study", "init", "mine", "--out", str(tmp_path / "mine.toml")]):  # fmt: skip
        assert cli.main([*argv, "--json"]) == 0
        out = capsys.readouterr().out
        assert out.count("\n") == 1, out
        shown[argv[1]] = json.loads(out)
    assert all(s["schema_version"] == files.SCHEMA_VERSIONS["output"] for s in shown.values())
    assert "seed-report" in [s["name"] for s in shown["list"]["studies"]]
    assert shown["show"]["study"]["name"] == "seed-report"
    assert shown["init"]["file"] == str(tmp_path / "mine.toml")
    assert cli.main(["study", "status", str(tmp_path), "--json", "--watch"]) == 1
    assert "choose one" in capsys.readouterr().err


# ---------------------------------------------------------------- schema versions


def test_a_file_from_a_newer_hpstudy_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "state.json").write_text(json.dumps({"schema_version": 99, "name": "x"}))
    assert cli.main(["study", "status", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'state.json'}: written by a newer hpstudy (schema 99; this "
        f"hpstudy reads up to {files.SCHEMA_VERSIONS['state']}): upgrade hpstudy\n"
    )
    (tmp_path / "state.json").write_text(json.dumps({"schema_version": "1"}))
    assert cli.main(["study", "status", str(tmp_path)]) == 1
    assert "schema_version: expected a whole number >= 0 (got '1')" in capsys.readouterr().err


def test_a_file_without_schema_version_is_upgraded_by_the_table() -> None:
    old = {"data": {"root": "/d"}, "stages": [{"name": "lr"}], "status": "finished"}
    new = files.upgrade(old, "state", "state.json")
    assert new["data"]["dataset"] == "cifar100"  # written before CIFAR-10
    assert new["stages"][0]["kind"] == "values"  # written before stage kinds
    assert (new["follow"], new["until_decided"]) == ("own", None)
    same = files.upgrade({"schema_version": 1, "follow": "published"}, "state", "state.json")
    assert same == {"follow": "published"}  # today's layout: only the key is taken out
    for kind, steps in files.MIGRATIONS.items():  # each step leads to a version read today
        assert all(0 <= v < files.SCHEMA_VERSIONS[kind] for v in steps), kind


def test_schema_version_is_not_part_of_a_runs_identity(tmp_path: Path) -> None:
    config = RunConfig(lr=0.05, width=0.5)
    run = RunDir(tmp_path / "run")
    run.claim(config)
    written = json.loads(run.config_path.read_text())
    assert written["schema_version"] == files.SCHEMA_VERSIONS["config"]
    assert run.read_config().run_hash() == config.run_hash()
    del written["schema_version"]  # a folder written before schema versions
    run.config_path.write_text(json.dumps(written))
    assert run.read_config() == config
    with pytest.raises(HpstudyError, match="written by a newer hpstudy"):
        run.config_path.write_text(json.dumps({**written, "schema_version": 2**40}))
        run.read_config()


# ---------------------------------------------------------------- packaging


def test_the_version_is_written_once_in_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert hpstudy.__version__ == version("hpstudy")
    init = (SRC / "hpstudy" / "__init__.py").read_text()
    assert project["version"] not in init  # read from the metadata, not written again


def test_a_source_tree_never_installed_reads_its_version_from_pyproject(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`PYTHONPATH=src` on a machine where hpstudy was never installed (the GPU machine)."""
    import importlib.metadata

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert hpstudy.package_version() == project["version"] == version("hpstudy")


def test_the_package_says_it_is_typed() -> None:
    assert (SRC / "hpstudy" / "py.typed").is_file()
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "py.typed" in data["package-data"]["hpstudy"]
