"""First contact: what the terminal tells a new user before, while and after a study runs.

The cost block against the plan, plain output off a terminal, `study show --toml`,
`list` and `init`, help texts for every option, status and `--watch`, the data
errors' hints, and the quick budget's rule.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import shutil
import sys
import tomllib
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error
from study_fixtures import cli, run_lean

import hpstudy
import hpstudy.study.cost as cost
from hpstudy import progress
from hpstudy.cli import build_parser, main, option_table
from hpstudy.config import SOURCE_FIELDS, RunConfig
from hpstudy.errors import HpstudyError
from hpstudy.models import list_models
from hpstudy.study import (
    BUDGETS,
    Plan,
    Speed,
    budget_costs,
    budget_epochs,
    builtin_names,
    cost_block,
    epoch_images,
    load_study,
    measure_speed,
    parse_study,
    starter_text,
    status_text,
    study_cost,
    study_text,
)
from hpstudy.study.cost import cached_speed

REPO = Path(__file__).resolve().parents[1]
TWO_RUNS = """
name = "contact"
description = "two tiny runs"
seeds = [0]
[base]
width = 0.125
batch_size = 64
limit_train = 64
limit_val = 64
device = "cpu"
[[stages]]
name = "learning rate"
field = "lr"
values = [0.01, 0.05]
epochs = 1
[[stages]]
name = "schedule"
field = "schedule"
values = ["constant", "cosine"]
epochs = 2
"""
SPEED = Speed("test device", train_images_per_s=100.0, eval_images_per_s=400.0,
              checkpoint_seconds=0.5)  # fmt: skip


# ---------------------------------------------------------------- the cost block


@pytest.mark.parametrize("budget", BUDGETS)
def test_cost_numbers_are_the_plans(budget: str) -> None:
    plan = Plan(load_study("seed-report"), budget)
    runs = plan.distinct_runs()
    cost = study_cost(plan, 40_000, 10_000, 10_000, SPEED)
    assert cost.runs == len(runs) == 8
    assert cost.epochs == sum(r.epochs for r in runs)
    assert cost.reused == 9 - len(runs)  # stage 4's "none" is stage 3's winner
    train, val = epoch_images(runs[0], 40_000, 10_000)
    assert (cost.train_images, cost.val_images) == (train, val)
    # a checkpoint is written while the next epoch trains: only the last one is waited for
    by_hand = sum(r.epochs * (train / 100 + val / 400) + 0.5 for r in runs) + 10_000 / 400
    assert cost.seconds == pytest.approx(by_hand, rel=1e-9)
    if budget == "full":
        assert cost.epochs == 1545 and (train, val) == (40_000, 10_000)


def test_cost_leaves_out_what_is_done_and_names_cheaper_budgets() -> None:
    plan = Plan(load_study("seed-report"), "short")
    first = plan.distinct_runs()[0]
    fresh = study_cost(plan, 40_000, 10_000, 10_000, SPEED)
    done = study_cost(
        plan, 40_000, 10_000, 10_000, SPEED, epochs_done=lambda c: c.epochs if c == first else 0
    )
    assert (done.done_runs, done.done_epochs) == (1, first.epochs)
    per_epoch = 40_000 / 100 + 10_000 / 400
    assert fresh.seconds is not None and done.seconds is not None
    assert fresh.seconds - done.seconds == pytest.approx(first.epochs * per_epoch + 0.5)
    cheaper = budget_costs(plan, 40_000, 10_000, 10_000, SPEED)
    assert [c.budget for c in cheaper] == ["quick", "smoke"]
    lines = cost_block("seed-report", done, cheaper, SPEED)
    text = "\n".join(lines)
    assert f"{done.epochs:,} epochs" in text and "8 runs" in text
    assert f"{done.epochs - first.epochs:,} epochs left" in text
    assert "--budget quick" in text and "--budget smoke" in text
    assert "Ctrl-C" in text and "same command resumes" in text
    assert "40,000 train, 10,000 val" in text


def test_runs_at_once_predict_each_stage_at_the_speed_measured_for_that_many() -> None:
    """With two slots, a stage of n runs trains min(n, 2) at once, each at the speed measured
    for that many: seed-report's stages of 3, 2, 2 and 1 runs. Sharing that halves each run's
    speed gains nothing; a compile is paid once per model shape where processes keep their
    compiled models, else by every run."""
    plan = Plan(load_study("seed-report"), "full")
    stages = plan.distinct_stage_runs()
    assert [len(s) for s in stages] == [3, 2, 2, 1]
    assert [r.run_hash() for s in stages for r in s] == [r.run_hash() for r in plan.distinct_runs()]
    shared = dataclasses.replace(SPEED, together=2, together_images_per_s=60.0)
    assert shared.train_rate(1) == 100.0 and shared.train_rate(2) == shared.train_rate(9) == 60.0
    sizes = (40_000, 10_000, 10_000)
    per_epoch = 40_000 / 100 + 10_000 / 400  # one run alone; its last write 0.5 s
    test = 10_000 / 400

    def by_hand(rate_of_two: float) -> float:
        seconds = test
        for stage in stages:
            at_once = min(2, len(stage))
            slower = 100.0 / (rate_of_two if at_once == 2 else 100.0)
            seconds += sum((r.epochs * per_epoch + 0.5) * slower for r in stage) / at_once
        return seconds

    two = study_cost(plan, *sizes, shared, slots=2)
    one = study_cost(plan, *sizes, shared, slots=1)
    assert two.seconds == pytest.approx(by_hand(60.0), rel=1e-9)
    epochs = sum(r.epochs for r in plan.distinct_runs())
    assert one.seconds == pytest.approx(epochs * per_epoch + 8 * 0.5 + test)
    # a write longer than an epoch's training and validation costs what it takes beyond them
    slow = dataclasses.replace(SPEED, checkpoint_seconds=per_epoch + 100.0)
    assert study_cost(plan, *sizes, slow).seconds == pytest.approx(
        one.seconds + epochs * 100.0 + 8 * (per_epoch + 99.5)
    )
    assert two.seconds < one.seconds and (two.at_once, one.at_once) == (2, 1)
    # resumed with one run left per stage: nothing trains at once any more
    last = {r.run_hash() for stage in stages for r in stage[-1:]}
    tail = study_cost(plan, *sizes, shared, slots=2,
                      epochs_done=lambda c: 0 if c.run_hash() in last else c.epochs)  # fmt: skip
    assert tail.at_once == 1 and tail.seconds == pytest.approx(
        sum(r.epochs * per_epoch + 0.5 for r in plan.distinct_runs() if r.run_hash() in last)
        + test
    )
    halved = dataclasses.replace(SPEED, together=2, together_images_per_s=50.0)
    assert study_cost(plan, *sizes, halved, slots=2).seconds == pytest.approx(one.seconds)
    unmeasured = study_cost(plan, *sizes, SPEED, slots=2)  # no reading together: as alone
    assert unmeasured.seconds == pytest.approx(by_hand(100.0), rel=1e-9)
    text = "\n".join(cost_block("seed-report", two, [], shared))
    assert "up to 2 runs at once: each trains at 60 img/s" in text and "compiling" not in text

    # 40,000 = 312 x 128 + 64: two graphs per run (the partial last batch is a shape too)
    compiled = dataclasses.replace(SPEED, compile_seconds=30.0)
    kept = study_cost(plan, *sizes, compiled)
    every_run = study_cost(plan, *sizes, compiled, reuses_compiled=False)
    assert kept.compile_seconds == pytest.approx(2 * 30.0)
    assert every_run.compile_seconds == pytest.approx(8 * 2 * 30.0)
    assert kept.seconds == pytest.approx(one.seconds + 60.0)
    assert "compiling: 60 s of it (30 s per graph, measured)" in "\n".join(
        cost_block("seed-report", kept, [], compiled)
    )


def test_the_speed_together_is_asked_of_every_slot_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In every worker at once (test_kinds' study on two workers measures it for real)."""
    monkeypatch.setenv("HPSTUDY_CACHE", str(tmp_path))
    monkeypatch.setattr(cost, "load_average", lambda: 0.5)
    config = RunConfig(width=0.125, batch_size=16, eval_batch_size=32, device="cpu")
    asked: list[int] = []

    def at_once(fn, *args):  # an executor's call_at_once, the readings given
        asked.append(args[-1])
        return [50.0, 70.0]

    cached = dataclasses.replace(SPEED, measured_now=False)
    speed = cost.speed_together(at_once, 2, config, cached)
    assert (speed.together, speed.together_images_per_s, asked) == (2, 60.0, [2])
    assert cost.speed_together(at_once, 2, config, cached).together_images_per_s == 60.0
    assert asked == [2]  # read from the cache the second time
    cost.speed_together(at_once, 2, config, SPEED)  # the speed measured now: this too
    cost.speed_together(at_once, 2, config, cached, remeasure=True)
    assert asked == [2, 2, 2]
    assert cost.speed_together(at_once, 1, config, cached) is cached  # one slot: nothing
    assert asked == [2, 2, 2]


def test_speed_is_measured_once_and_a_bad_cache_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPSTUDY_CACHE", str(tmp_path))
    monkeypatch.setattr(cost, "load_average", lambda: 0.5)  # a quiet machine, whatever this is
    config = RunConfig(width=0.125, batch_size=16, eval_batch_size=32, device="cpu")
    first = measure_speed(config)
    assert first.measured_now and first.train_images_per_s > 0 and first.eval_images_per_s > 0
    assert first.load == 0.5 and first.spread >= 0 and first.hpstudy == hpstudy.__version__
    again = measure_speed(config)
    assert not again.measured_now and again.train_images_per_s == first.train_images_per_s
    cache = tmp_path / "speed.json"
    entries = json.loads(cache.read_text())
    assert entries.pop("schema_version") == 1
    ((key, entry),) = entries.items()
    assert "width 0.125" in key and "batch 16" in key
    assert {"load", "spread", "measured_at", "hpstudy"} <= entry.keys()
    assert cached_speed(entry) is not None and not cached_speed(entry).measured_now
    garbage = [
        1,
        {"device_name": "x"},
        {**entry, "train_images_per_s": "fast"},
        {**entry, "eval_images_per_s": -1.0},
        {**entry, "checkpoint_seconds": math.inf},
    ]
    assert [cached_speed(g) for g in garbage] == [None] * len(garbage)
    # a reading not to be trusted any more is measured again
    cores = os.cpu_count() or 1
    stale = [
        {**entry, "load": cores + 1.0},  # taken on a busy machine
        {**entry, "measured_at": entry["measured_at"] - 31 * 86400},  # older than 30 days
        {**entry, "hpstudy": "0.0.1"},  # by another hpstudy (torch is in the key)
        {k: v for k, v in entry.items() if k != "load"},  # from before loads were kept
    ]
    assert [cached_speed(g) for g in stale] == [None] * len(stale)
    assert cached_speed({**entry, "load": float(cores)}) is not None
    # a compile time that is no duration is read as none, never as a negative or NaN one
    for odd in (-1.0, math.nan, "slow", None):
        assert cached_speed({**entry, "compile_seconds": odd}).compile_seconds == 0.0  # type: ignore[union-attr]
    assert cached_speed({**entry, "compile_seconds": 42}).compile_seconds == 42.0  # type: ignore[union-attr]
    cache.write_text("{not json")  # a broken cache is measured over, never an error
    assert measure_speed(config).measured_now
    assert cached_speed(json.loads(cache.read_text())[key]) is not None
    monkeypatch.setattr(cost, "load_average", lambda: cores + 5.0)
    busy = measure_speed(config, remeasure=True)  # --remeasure: measured, cache or not
    assert busy.measured_now and busy.load == cores + 5.0
    assert cached_speed(json.loads(cache.read_text())[key]) is None  # never reused
    note = cost.speed_note(again)
    assert "cached per user in" in note and str(cache) in note and "load 0.5" in note


# ---------------------------------------------------------------- while it runs


def test_study_run_off_a_terminal_prints_plain_labelled_lines(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = tmp_path / "contact.toml"
    study.write_text(TWO_RUNS)
    out = tmp_path / "out"
    args = ["study", "run", str(study), "--root", str(synthetic_root), "--no-verify"]
    # a process of its own: its stderr is a real pipe, what "off a terminal" means
    # (figures and export left out: what it prints is the same)
    result = run_lean(*args, "--out", str(out))
    assert result.returncode == 0, result.stderr
    err = result.stderr
    assert "\x1b" not in err and "\r" not in err
    lines = err.splitlines()
    # the cost block comes before anything trains, with the plan's numbers
    first_stage = next(i for i, line in enumerate(lines) if line.startswith("stage 1/2"))
    block = "\n".join(lines[:first_stage])
    assert "contact (full): 4 runs to train, 6 epochs" in block
    assert "64 train, 64 val" in block and "Ctrl-C" in block and "--budget smoke" in block
    epoch_lines = [line for line in lines if " · epoch " in line]
    assert len(epoch_lines) == 6
    pattern = (
        r"stage \d [a-z_]+=\S+ seed 0 · epoch \d/\d · lr \S+ · train loss \d+\.\d{3} acc "
        r"\d\.\d{3} · val loss \d+\.\d{3} acc \d\.\d{3} · \d+ img/s · \d+\.\d s"
    )
    assert all(re.fullmatch(pattern, line) for line in epoch_lines), epoch_lines
    assert epoch_lines[0].startswith("stage 1 lr=0.01 seed 0 · epoch 1/1")
    assert any(line.startswith("stage 2 schedule=cosine seed 0 · epoch 2/2") for line in lines)
    assert "study: runs 4/4 · epochs 6/6" in err
    assert lines[-1] == f"report: {out / 'report.md'} and {out / 'report.html'}"
    assert "checks the plumbing" not in (out / "report.md").read_text()  # full budget

    status = status_text(out)
    winners = [line for line in status.splitlines() if line.rstrip().endswith("*")]
    assert len(winners) == 2 and "(n=" not in status and "time left" not in status
    # a watch of a finished study shows it once and returns, plain off a terminal (capsys's
    # stdout is not one either)
    watched = cli(capsys, "study", "status", str(out), "--watch", "0.1")
    assert watched.returncode == 0 and watched.stdout.strip() == status.strip()
    assert "\x1b" not in watched.stdout

    # a study that stopped halfway: what is left, and the time at the measured speed
    state = json.loads((out / "state.json").read_text())
    state["status"] = "running"
    (out / "state.json").write_text(json.dumps(state))
    last = state["stages"][1]["settings"][1]["runs"][0]["run_dir"]
    shutil.rmtree(out / last)
    status = status_text(out)
    assert re.search(r"done: 3/4 runs, 4/6 epochs; time left at the measured speed: \d+ s", status)
    watched = cli(capsys, "study", "status", str(out), "--watch", "0.1")
    assert watched.returncode == 0, watched.stderr  # nobody holds the folder: it ends


def test_a_drawn_bar_reads_the_loss_a_few_times_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []
    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    advance = progress.throttled(lambda steps, info: reads.append(steps) if info else None)
    for _ in range(10):  # ten steps inside one interval: the first is drawn, no others
        advance(1, lambda: "loss 1.0")
    assert reads == [1]
    clock[0] += progress.INFO_EVERY_S
    advance(1, lambda: "loss 0.9")
    assert reads == [1, 1]


def test_plain_display_counts_and_never_draws(capsys: pytest.CaptureFixture[str]) -> None:
    with progress.cli_logging(plain=True):  # what the command line installs, never drawn
        assert not progress.is_live()
        display = progress.StudyDisplay(2, 4, 0, 0, seconds_per_epoch=10.0)
        with progress.study_display(display):
            with progress.bar("epoch 1/2", 3) as advance:
                advance(1, lambda: pytest.fail("a plain bar reads no loss"))
            progress.run_started("stage 1 lr=0.1 seed 0")
            progress.epoch_finished("stage 1 lr=0.1 seed 0 · epoch 1/2", 4.0)
            assert display.seconds_left == pytest.approx(12.0)  # measured, no longer predicted
            progress.run_finished()
    err = capsys.readouterr().err
    assert "\x1b" not in err
    assert err.splitlines() == [
        "stage 1 lr=0.1 seed 0 · epoch 1/2",
        "study: runs 1/2 · epochs 1/4 · 12 s left",
    ]
    # as a library, without the command line's handler: nothing is printed
    with progress.study_display(progress.StudyDisplay(2, 4, 0, 0, seconds_per_epoch=10.0)):
        progress.epoch_finished("stage 1 lr=0.1 seed 0 · epoch 1/2", 4.0)
        progress.run_finished()
    assert capsys.readouterr().err == ""
    # runs trained elsewhere: the epochs timed in their folders replace the prediction
    remote = progress.StudyDisplay(2, 4, 0, 0, seconds_per_epoch=10.0, live=False)
    with progress.cli_logging(plain=True), progress.study_display(remote):
        progress.show_progress(1, 2, None)
        assert remote.seconds_left == pytest.approx(20.0)  # nothing timed yet: predicted
        progress.show_progress(1, 2, 3.0)
        assert remote.seconds_left == pytest.approx(6.0)
    assert capsys.readouterr().err.splitlines()[-1] == "study: runs 1/2 · epochs 2/4 · 6 s left"


# ---------------------------------------------------------------- show, list, init


def test_show_toml_prints_the_study_file_exactly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = cli(capsys, "study", "show", "seed-report", "--toml")
    assert result.returncode == 0
    source = REPO / "src" / "hpstudy" / "studies" / "seed-report.toml"
    assert result.stdout == source.read_text(encoding="utf-8")
    copy = parse_study(result.stdout, "copy")
    assert copy.identity("full") == load_study("seed-report").identity("full")
    own = tmp_path / "own.toml"
    own.write_text(TWO_RUNS)
    assert cli(capsys, "study", "show", str(own), "--toml").stdout == TWO_RUNS
    assert_one_line_error(cli(capsys, "study", "show", "nosuch", "--toml"), "nosuch")


def test_list_names_every_builtin_with_its_description(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = cli(capsys, "study", "list")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert len(lines) == len(builtin_names())
    for name, line in zip(builtin_names(), lines, strict=True):
        description = load_study(name).description
        assert description and line.split() == [name, *description.split()]


def test_init_writes_a_valid_commented_study_and_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    starter = tmp_path / "mine.toml"
    result = cli(capsys, "study", "init", "mine", "--out", str(starter))
    assert result.returncode == 0, result.stderr
    text = starter.read_text()
    assert text.count("#") >= 5  # commented: it says what each key does
    study = load_study(starter)
    assert study.name == "mine"
    Plan(study, "full", None).validate()

    copy = tmp_path / "copy.toml"
    result = cli(capsys, "study", "init", "my-report", "--from", "seed-report", "--out", str(copy))
    assert result.returncode == 0, result.stderr
    copied = load_study(copy)
    assert copied.name == "my-report"
    assert copied.identity("full") == load_study("seed-report").identity("full")
    original = tomllib.loads(study_text("seed-report")[0])
    report = tomllib.loads(copy.read_text())["report"]
    # the paper's numbers are not the copy's: kept as comments, not as published values
    assert report == {k: v for k, v in original["report"].items()
                      if not k.startswith("published")}  # fmt: skip
    assert "# (published by the study copied) published_test_top1 = 0.697" in copy.read_text()
    assert not any(s.published_label() for s in copied.stages)

    before = copy.read_bytes()
    refused = cli(capsys, "study", "init", "other", "--out", str(copy))
    assert_one_line_error(refused, str(copy), "exists")
    assert copy.read_bytes() == before
    target = str(tmp_path / "n.toml")
    for bad in (
        ["../x", "--out", target],  # a name that is a path
        ["x", "--from", "nosuch", "--out", target],  # no such study
        ["x", "--out", str(tmp_path / "no" / "x.toml")],  # no such folder
    ):
        assert_one_line_error(cli(capsys, "study", "init", *bad))
    assert not (tmp_path / "n.toml").exists() and not (tmp_path / "no").exists()


def test_init_refuses_a_source_whose_name_it_cannot_find(tmp_path: Path) -> None:
    quoted = tmp_path / "quoted.toml"
    quoted.write_text(TWO_RUNS.replace('name = "contact"', '"name" = "contact"'))
    with pytest.raises(HpstudyError, match=r"no `name = \.\.\.` line"):
        starter_text("renamed", str(quoted))
    assert parse_study(starter_text("renamed", "seed-report"), "copy").name == "renamed"


# ---------------------------------------------------------------- help


def walk(parser: argparse.ArgumentParser, prog: str = "hpstudy"):
    """(command, action) for every option and argument, and every command's own entry."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for entry in action._choices_actions:  # the command's line in its parent's help
                yield f"{prog} {entry.dest}", entry
            for name, sub in action.choices.items():
                yield from walk(sub, f"{prog} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield prog, action


def test_every_option_of_every_command_has_one_line_of_help() -> None:
    missing = [
        f"{prog} {'/'.join(a.option_strings) or a.dest}"
        for prog, a in walk(build_parser())
        if not (a.help and a.help.strip() and "\n" not in a.help)
    ]
    assert missing == []
    commands = {prog for prog, _ in walk(build_parser())}
    assert {"hpstudy study list", "hpstudy study init", "hpstudy study status"} <= commands


def test_train_help_is_built_from_the_run_config() -> None:
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    train = commands.choices["train"]
    helps = {a.dest: a.help for a in train._actions}
    for name, field in RunConfig.model_fields.items():
        assert field.description, name
        if name in SOURCE_FIELDS:  # filled in when a config is made, never an option
            assert name not in helps
            continue
        assert helps[name].startswith(field.description) and "(default: " in helps[name]
    assert all(model in helps["model"] for model in list_models())
    assert "(constant, cosine)" in helps["schedule"]
    assert "(default: 0.05)" in helps["lr"]


def test_readme_option_table_is_the_generated_one() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert option_table() in readme, "README's option table is stale: paste cli.option_table()"


def test_a_bad_field_in_a_study_file_says_what_the_field_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = (("lr", "-1"), ("momentum", "1.5"), ("label_smoothing", '"x"'), ("mixup_alpha", "nan"),
           ("compile", '"fast"'))  # fmt: skip
    for key, value in bad:
        study = tmp_path / "bad.toml"
        study.write_text(TWO_RUNS.replace("[base]", f"[base]\n{key} = {value}", 1)
                         .replace('field = "lr"', 'field = "weight_decay"')
                         .replace("[0.01, 0.05]", "[0.0, 0.1]"))  # fmt: skip
        line = assert_one_line_error(cli(capsys, "study", "show", str(study)))
        assert RunConfig.model_fields[key].description in line, line
    # every compile value is one field of [base] that leaves every run as it was
    hashes = set()
    for value in ("true", "false", '"default"', '"reduce-overhead"', '"max-autotune"'):
        study = parse_study(TWO_RUNS.replace("[base]", f"[base]\ncompile = {value}", 1), "c")
        hashes.add(tuple(r.run_hash() for r in Plan(study, "full").distinct_runs()))
    assert hashes == {tuple(r.run_hash() for r in Plan(parse_study(TWO_RUNS, "c"), "full")
                                                      .distinct_runs())}  # fmt: skip


# ---------------------------------------------------------------- data errors


def test_data_errors_say_every_way_to_point_at_the_data(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hints = ("--root", "$HPSTUDY_DATA", "default folder", "--no-verify")
    missing = cli(capsys, "data", "info", "--root", str(tmp_path / "nothing"))
    assert_one_line_error(missing, str(tmp_path / "nothing"), *hints)
    assert not (tmp_path / "nothing").exists()
    wrong_md5 = cli(capsys, "data", "info", "--root", str(synthetic_root))  # verified: refused
    assert_one_line_error(wrong_md5, "md5", *hints)


# ---------------------------------------------------------------- the quick budget


def test_quick_budget_is_one_rule_that_keeps_the_study_shape() -> None:
    assert [budget_epochs(e, "quick") for e in (1, 2, 10, 11, 15, 100, 300, 1000)] == [
        1, 2, 2, 3, 3, 3, 4, 4,
    ]  # fmt: skip
    for e in range(1, 2000):
        assert budget_epochs(e, "quick") == min(e, math.ceil(math.log10(e)) + 1 if e > 1 else 1)
    for source in ("seed-report", TWO_RUNS):
        study = load_study(source) if source in builtin_names() else parse_study(source, "s")
        full, quick = Plan(study, "full"), Plan(study, "quick")
        assert len(quick.distinct_runs()) == len(full.distinct_runs())  # the same reuse
        for run in quick.distinct_runs():
            assert run.limit_train == min(15_000, run.limit_train or 15_000)
            assert run.limit_val is not None and run.limit_val <= 5_000
    seed = Plan(load_study("seed-report"), "quick")
    assert [r.epochs for r in seed.distinct_runs()] == [3, 3, 3, 4, 4, 4, 4, 4]
    cost = study_cost(seed, 40_000, 10_000, 10_000)
    assert cost.epochs * cost.train_images == 435_000  # what the README's timing measured


def test_quick_budget_shrinks_warmup_with_the_epochs() -> None:
    text = TWO_RUNS.replace("[base]", "[base]\nwarmup_epochs = 50", 1)
    study = parse_study(
        text.replace("epochs = 2", "epochs = 300").replace("epochs = 1", "epochs = 100"), "warmup"
    )
    for run in Plan(study, "quick").distinct_runs():
        assert 0 <= run.warmup_epochs < run.epochs
    short = [r.warmup_epochs for r in Plan(study, "short").distinct_runs()]
    assert short == [5, 5, 5, 5]  # the divisor rule the other budgets keep


def test_quick_and_smoke_reports_say_what_their_numbers_mean() -> None:
    from hpstudy.report.sections.title import BUDGET_NOTES

    assert "plumbing" in BUDGET_NOTES["smoke"] and "not the results" in BUDGET_NOTES["smoke"]
    assert "quick" in BUDGET_NOTES and set(BUDGET_NOTES) < set(BUDGETS)


def test_study_help_names_every_study_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["study", "--help"])
    out = capsys.readouterr().out
    assert all(word in out for word in ("list", "init", "show", "status", "run"))
    with pytest.raises(HpstudyError):
        starter_text("x", "nosuch-study")


def test_a_reader_that_goes_away_ends_quietly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`hpstudy study list | head -1`: the closed pipe is no error worth a line."""
    sink = open(tmp_path / "sink", "w")  # noqa: SIM115 - main points its fd at devnull

    class ClosedPipe:
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            pass

        def fileno(self) -> int:
            return sink.fileno()

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["study", "list"]) == 1
    sink.close()
    assert capsys.readouterr().err == ""
