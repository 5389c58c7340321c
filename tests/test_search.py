"""Search stages: grid, random and optuna expand as written, bad spaces are one line, a
pruner stops a run in its worker, a killed search resumes to the same trials and winner,
trials run on two local workers at once, and the report shows trials and Optuna's figures."""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import assert_one_line_error, run_hpstudy
from cluster_fixtures import fork, plain_study, wait

from hpstudy import cli
from hpstudy.config import RunConfig
from hpstudy.errors import HpstudyError
from hpstudy.executors import DataOptions, Job, run_job
from hpstudy.executors.local import LocalExecutor
from hpstudy.run import RunDir, RunStatus
from hpstudy.study import Plan, builtin_names, describe, load_study, run_study, search

optuna = pytest.importorskip("optuna")

BASE = """
seeds = [0]
[base]
width = 0.125
batch_size = 64
limit_train = 128
limit_val = 64
device = "cpu"
"""
GRID = """
[[stages]]
name = "lr x wd"
kind = "grid"
epochs = 15
grid = { lr = [0.02, 0.05, 0.1], weight_decay = [1e-4, 5e-4] }
"""
RANDOM = """
[[stages]]
name = "random"
kind = "random"
epochs = 15
n = 4
space.lr = { log_uniform = [0.005, 0.5] }
space.mixup_alpha = { choice = [0.0, 0.2, 0.4] }
space.warmup_epochs = { int = [0, 3] }
space.label_smoothing = { uniform = [0.0, 0.2] }
"""
OPTUNA = """
[[stages]]
name = "tpe"
kind = "optuna"
epochs = 300
n_trials = 3
pruner = "median"
space.lr = { log_uniform = [0.01, 0.3] }
space.label_smoothing = { uniform = [0.0, 0.2] }
space.warmup_epochs = { int = [0, 10] }
"""
# the Done-when study: grid, random and optuna-with-pruning, at the smoke budget
SCENARIO = (
    'name = "search"\n'
    + BASE
    + GRID.replace("[0.02, 0.05, 0.1]", "[0.02, 0.1]")
    + RANDOM.replace("n = 4", "n = 2")
    + OPTUNA
)

def write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def study_of(tmp_path: Path, stages: str, name: str = "s") -> Path:
    return write(tmp_path, f'name = "{name}"\n' + BASE + stages)


# ---------------------------------------------------------------- expansion


def test_a_grid_is_the_product_and_its_winner_sets_every_field(tmp_path: Path) -> None:
    plan = Plan(load_study(study_of(tmp_path, GRID)), "full")
    runs = plan.stage_runs(0, {})
    assert len(runs) == 3 * 2
    pairs = {(r.config.lr, r.config.weight_decay) for r in runs}
    assert pairs == {(lr, wd) for lr in (0.02, 0.05, 0.1) for wd in (1e-4, 5e-4)}
    assert runs[0].label == "lr=0.02, weight_decay=0.0001"
    assert len({r.config.run_hash() for r in runs}) == 6
    assert all(r.config.epochs == 15 for r in runs)
    # a later stage starts from every field of the winner
    study = load_study(study_of(tmp_path, GRID + RANDOM))
    later = Plan(study, "full").config(1, {"lr": 0.3}, {"lr": 0.05, "weight_decay": 5e-4}, 0)
    assert (later.lr, later.weight_decay) == (0.3, 5e-4)


def test_random_draws_repeat_for_a_seed_differ_for_another_and_stay_in_the_space(
    tmp_path: Path,
) -> None:
    def draws(seed: int) -> list[dict[str, Any]]:
        text = RANDOM.replace("n = 4", f"n = 4\nsampler_seed = {seed}")
        plan = Plan(load_study(study_of(tmp_path, text)), "full")
        return [r.value for r in plan.stage_runs(0, {})]

    first = draws(0)
    assert first == draws(0) and len(first) == 4
    assert draws(1) != first
    for d in first + draws(1):
        assert 0.005 <= d["lr"] <= 0.5 and 0.0 <= d["label_smoothing"] <= 0.2
        assert d["mixup_alpha"] in (0.0, 0.2, 0.4)
        assert isinstance(d["warmup_epochs"], int) and 0 <= d["warmup_epochs"] <= 3
    # log-uniform: the draws of many spread over the decades, not bunched at the top
    many = search.draw_random(load_study(study_of(tmp_path, RANDOM)).stages[0].space, 400, 7)
    below = sum(d["lr"] < math.sqrt(0.005 * 0.5) for d in many)
    assert 140 < below < 260


def test_budgets_apply_to_search_stages(tmp_path: Path) -> None:
    study = load_study(study_of(tmp_path, GRID + OPTUNA))
    smoke = Plan(study, "smoke")
    assert {r.config.epochs for r in smoke.stage_runs(0, {})} == {1}
    config = smoke.config(1, {"lr": 0.1, "label_smoothing": 0.1, "warmup_epochs": 10}, {}, 0)
    assert (config.epochs, config.warmup_epochs, config.limit_train) == (2, 0, 128)
    assert Plan(study, "short").config(1, {"warmup_epochs": 10}, {}, 0).warmup_epochs == 1
    # the cost benchmark's runs: 6 grid settings and n_trials stand-ins for the trials
    assert len(Plan(study, "full").distinct_runs()) == 6 + 3


def test_plain_stages_keep_their_identity_and_search_settings_change_it(tmp_path: Path) -> None:
    seed_report = load_study("seed-report")
    old_style = [
        {"field": s.field, "values": s.values, "epochs": s.epochs, "overrides": s.overrides}
        for s in seed_report.stages
    ]
    assert seed_report.identity("full")["stages"] == old_style
    hashes = {
        load_study(study_of(tmp_path, RANDOM.replace("n = 4", variant))).identity_hash("full")
        for variant in ("n = 4", "n = 5", "n = 4\nsampler_seed = 1")
    }
    assert len(hashes) == 3
    renamed = OPTUNA.replace('name = "tpe"', 'name = "TPE search"')
    pruned = OPTUNA.replace('"median"', '"asha"')
    one = load_study(study_of(tmp_path, OPTUNA)).identity_hash("full")
    assert load_study(study_of(tmp_path, renamed)).identity_hash("full") == one
    assert load_study(study_of(tmp_path, pruned)).identity_hash("full") != one


# ---------------------------------------------------------------- bad spaces: one line


ONE_STAGE = '[[stages]]\nname = "bad"\nepochs = 15\n'


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        ('kind = "random"\nn = 2\nspace.lr = { uniform = [0.5, 0.1] }', "increasing"),
        ('kind = "random"\nn = 2\nspace.lr = { log_uniform = [0.0, 0.1] }', "> 0"),
        ('kind = "optuna"\nn_trials = 2\nspace.lr = { log_uniform = [-1, 0.1] }', "> 0"),
        ('kind = "random"\nn = 2\nspace.lrr = { uniform = [0.1, 0.2] }', "'lrr'"),
        ('kind = "random"\nn = 2\nspace.seed = { int = [0, 3] }', "'seed'"),
        ('kind = "grid"\ngrid = { momentum = [0.9], epochs = [1, 2] }', "'epochs'"),
        ('kind = "random"\nn = 2\nspace.lr = { uniform = ["a", 0.2] }', "finite numbers"),
        ('kind = "random"\nn = 2\nspace.lr = { uniform = [0.1, nan] }', "finite numbers"),
        ('kind = "random"\nn = 2\nspace.lr = { uniform = 0.1 }', "space.lr.uniform"),
        ('kind = "random"\nn = 2\nspace.warmup_epochs = { int = [0, 2.5] }', "integers"),
        ('kind = "random"\nn = 2\nspace.warmup_epochs = { int = [3, 1] }', "reversed"),
        ('kind = "random"\nn = 2\nspace.mixup_alpha = { choice = [] }', "at least 1"),
        ('kind = "random"\nn = 2\nspace.lr = { choice = [0.1], uniform = [0.1, 0.2] }', "one of"),
        ('kind = "random"\nn = 2\nspace.lr = { normal = [0.1, 0.2] }', "unknown key"),
        ('kind = "random"\nn = 2\nspace = {}', "at least 1"),
        ('kind = "random"\nspace.lr = { uniform = [0.1, 0.2] }', "n: Field required"),
        ('kind = "random"\nn = 0\nspace.lr = { uniform = [0.1, 0.2] }', "n: "),
        ('kind = "random"\nn = 99999999\nspace.lr = { uniform = [0.1, 0.2] }', "n: "),
        ('kind = "optuna"\nspace.lr = { uniform = [0.1, 0.2] }', "n_trials: Field required"),
        ('kind = "optuna"\nn_trials = 2\npruner = "hyperband"\nspace.lr = { uniform = [0.1, 0.2] }',
         "pruner"),
        ('kind = "bayes"\nfield = "lr"\nvalues = [0.1]', "kind must be one of"),
        ("kind = 3\nfield = \"lr\"\nvalues = [0.1]", "kind must be one of"),
        ('kind = "grid"\ngrid = { lr = [] }', "no values"),
        ('kind = "grid"\nfield = "lr"\ngrid = { lr = [0.1] }', "unknown key"),
        ('kind = "grid"\ngrid = { lr = [0.1, 0.1] }', "repeat"),
        ('kind = "grid"\ngrid = { lr = [0.1] }\noverrides = { lr = 0.2 }', "overrides"),
    ],
)
def test_every_class_of_bad_stage_is_one_line(tmp_path: Path, stage: str, expected: str) -> None:
    path = write(tmp_path, 'name = "bad"\n' + BASE + ONE_STAGE + stage + "\n")
    with pytest.raises(HpstudyError) as err:
        Plan(load_study(path), "full").validate()
    message = str(err.value)
    assert "\n" not in message and str(path) in message and expected in message, message


@pytest.mark.parametrize(
    ("space", "field"),
    [
        ("space.label_smoothing = { uniform = [0.0, 1.0] }", "label_smoothing"),  # hi: < 1
        ("space.warmup_epochs = { int = [0, 15] }", "warmup_epochs"),  # hi: < epochs
        ("space.lr = { choice = [0.1, -0.5] }", "lr"),  # one bad choice
        ('space.schedule = { choice = ["constant", "linear"] }', "schedule"),
        ("space.batch_size = { int = [0, 64] }", "batch_size"),  # lo
    ],
)
@pytest.mark.parametrize("kind", ["random", "optuna"])
def test_every_reachable_value_is_checked_before_training(
    tmp_path: Path, space: str, field: str, kind: str
) -> None:
    count = "n = 50" if kind == "random" else "n_trials = 2"
    stage = f'kind = "{kind}"\n{count}\n{space}\nspace.momentum = {{ uniform = [0.8, 0.9] }}\n'
    path = write(tmp_path, 'name = "bad"\n' + BASE + ONE_STAGE + stage)
    study = load_study(path)  # a valid space...
    with pytest.raises(HpstudyError) as err:  # ...that reaches a RunConfig that is not
        Plan(study, "full").validate()
    message = str(err.value)
    assert "\n" not in message and "stage 1 (bad)" in message and field in message, message


def test_a_later_stage_is_checked_against_every_corner_of_an_optuna_winner(tmp_path: Path) -> None:
    # stage 2's warmup is fine with lr alone but not with stage 1's epochs at the lower bound
    text = OPTUNA + '[[stages]]\nname = "wd"\nfield = "weight_decay"\nvalues = [0.0]\nepochs = 4\n'
    with pytest.raises(HpstudyError, match=r"stage 2 \(wd\).*warmup_epochs"):
        Plan(load_study(study_of(tmp_path, text)), "full").validate()


def test_a_bad_space_through_the_cli_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'name = "bad"\n' + BASE + ONE_STAGE +
                 'kind = "random"\nn = 2\nspace.lr = { log_uniform = [0, 1] }\n')  # fmt: skip
    assert_one_line_error(run_hpstudy("study", "show", str(path)), "log_uniform", str(path))


def test_an_optuna_stage_without_optuna_fails_at_load_with_the_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    with pytest.raises(HpstudyError) as err:
        load_study(study_of(tmp_path, GRID + OPTUNA))
    message = str(err.value)
    assert "\n" not in message and "pip install 'hpstudy[optuna]'" in message
    assert "stage 2 (tpe)" in message
    assert len(load_study(study_of(tmp_path, GRID + RANDOM)).stages) == 2  # others need none


def test_the_built_in_search_study_is_shown_and_valid_at_every_budget() -> None:
    assert "beat-published" in builtin_names()
    study = load_study("beat-published")
    assert [s.kind for s in study.stages] == ["grid", "optuna"]
    assert set(study.stages[1].space) == {  # type: ignore[union-attr]
        "lr", "weight_decay", "mixup_alpha", "label_smoothing", "warmup_epochs"
    }  # fmt: skip
    base = Plan(study, "full").config_for_base()
    assert (base.model, base.width) == ("mobilenet", 1.0)
    for budget in ("full", "short", "smoke"):
        Plan(study, budget).validate()
    text = describe(study)
    assert "grid of 4 x 3 = 12" in text and "Optuna TPE, 24 trials" in text and "ASHA" in text


# ---------------------------------------------------------------- pruning in the worker


def test_a_pruner_stops_a_run_early_in_its_worker(
    tmp_path: Path, synthetic_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = tmp_path / "j.journal"
    study = optuna.create_study(storage=search.open_storage(journal), study_name="s",
                                direction="maximize")  # fmt: skip
    good = optuna.trial.create_trial(
        params={}, distributions={}, value=0.99, intermediate_values={1: 0.99, 2: 0.99}
    )
    study.add_trial(good)
    number = study.ask().number
    monkeypatch.setattr(
        search, "make_pruner", lambda name: optuna.pruners.MedianPruner(n_startup_trials=1)
    )
    config = RunConfig(width=0.125, batch_size=64, limit_train=128, limit_val=64, epochs=3,
                       lr=1e-5, device="cpu")  # fmt: skip
    run_dir = tmp_path / "run"
    hook = search.OptunaTrialHook.spec(journal, "s", number, "val_acc", "median")
    job = Job(config, run_dir, "bad", (hook,))
    summary = run_job(job, DataOptions(root=str(synthetic_root), verify=False))
    assert summary.status == RunStatus.PRUNED and summary.epochs_done == 1
    assert summary.final is None  # never a candidate for winning
    assert len(RunDir(run_dir).read_metrics()) == 1
    reported = optuna.load_study(study_name="s", storage=search.open_storage(journal))
    assert list(reported.trials[number].intermediate_values) == [1]
    # a pruned run is done: never trained again, never resumed
    again = run_job(job, DataOptions(root=str(synthetic_root), verify=False))
    assert again.status == RunStatus.PRUNED and len(RunDir(run_dir).read_metrics()) == 1
    assert not search.needs_training(RunStatus.PRUNED, reused=False)


# ---------------------------------------------------------------- kills, resume, report


def drive(out: Path, study: Path, root: Path, kill_after: int) -> tuple[int, str]:
    """`study run` at smoke, with a pruner that prunes every odd trial after its first epoch
    (forced and deterministic), killed by SIGKILL after `kill_after` checkpoints: in a child
    forked from this process (cluster_fixtures.fork), on one thread. How it ended (-9 when
    killed) and its output."""
    log = out.parent / f"killed-after-{kill_after}.log"

    def child() -> int:
        search.make_pruner = lambda name: PruneOdd()  # the child's own modules: no undo
        save = RunDir.save_checkpoint
        count = [0]

        def save_then_maybe_die(self: RunDir, state: dict[str, Any]) -> None:
            save(self, state)
            count[0] += 1
            if count[0] == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

        RunDir.save_checkpoint = save_then_maybe_die  # type: ignore[method-assign]
        args = ["study", "run", str(study), "--out", str(out), "--budget", "smoke",
                "--root", str(root), "--no-verify"]  # fmt: skip
        return cli.main(args)

    return wait(fork(child, log)), log.read_text()


def trials_of(out: Path) -> list[tuple[int, str, dict[str, Any], list[float]]]:
    journals = sorted((out / "optuna").glob("*.journal"))
    assert len(journals) == 1
    # the stage's journal is a plain Optuna journal: load_study finds its one study
    loaded = optuna.load_study(study_name=None, storage=search.open_storage(journals[0]))
    return [(t.number, t.state.name, t.params, [t.intermediate_values[k] for k in sorted(
        t.intermediate_values)]) for t in loaded.trials]  # fmt: skip


class PruneOdd(optuna.pruners.BasePruner):
    """Prunes every odd trial at its first report: a pruning that is forced and repeatable."""

    def prune(self, study: Any, trial: Any) -> bool:
        return trial.number % 2 == 1


def run_in_process(study: Path, out: Path, root: Path, seeds: list[int] | None = None) -> None:
    """As `drive` does it, unkilled: one torch thread (CPU sums depend on the count)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(search, "make_pruner", lambda name: PruneOdd())
            state = run_study(study, out=out, budget="smoke", root=str(root), verify=False,
                              seeds=seeds)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert state.status == "finished"


def epochs_trained(out: Path) -> int:
    return sum(len(RunDir(run).read_metrics()) for run in (out / "runs").iterdir())


def test_the_cost_of_a_study_grown_by_a_seed_is_the_epochs_it_trains(
    tmp_path: Path, synthetic_root: Path, speed_cache: Path
) -> None:
    """Seed 0 of an Optuna stage (trial 1 pruned), then seeds 0,1 in the same folder: the
    cost counts the trials the journal holds, not fresh stand-ins, and no later seed of the
    pruned trial; its prediction of the epochs left is what trains."""
    from hpstudy.study import session

    study = write(tmp_path, 'name = "grown"\n' + BASE + OPTUNA)
    out = tmp_path / "out"
    costs = []
    real = session.study_cost

    def spy(*args: Any, **kwargs: Any) -> Any:
        costs.append(real(*args, **kwargs))
        return costs[-1]

    with plain_study(speed_cache), pytest.MonkeyPatch.context() as patch:
        patch.setattr(session, "study_cost", spy)
        run_in_process(study, out, synthetic_root)
        before = epochs_trained(out)
        run_in_process(study, out, synthetic_root, seeds=[0, 1])
    first, grown = costs
    # no cost can know which trial a pruner will stop: 3 trials of 2 epochs, at most
    assert (first.epochs, first.done_epochs, before) == (3 * 2, 0, 2 + 1 + 2)
    # seed 1 of trials 0 and 2 (trial 1's first seed was pruned: it trains no other)
    assert grown.runs == 3 + 2
    assert grown.epochs - grown.done_epochs == epochs_trained(out) - before == 2 + 2
    assert grown.test_seconds is not None and grown.test_images == 2 * 100


@pytest.fixture(scope="module")
def scenario(
    tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path, speed_cache: Path
) -> tuple[Path, Path, Path]:
    """The Done-when study at smoke: once uninterrupted, once killed twice and resumed.

    No study here exports its final model (no test reads it), and only the figures a test
    reads are rendered: the resumed study's Optuna figures."""
    tmp = tmp_path_factory.mktemp("scenario")
    study = write(tmp, SCENARIO)
    reference, killed = tmp / "reference", tmp / "killed"
    with plain_study(speed_cache):
        run_in_process(study, reference, synthetic_root)
    with plain_study(speed_cache, render=lambda path: "_tpe_" in path.name):
        # checkpoints: 4 grid, 2 random, then trial 0's first epoch: killed mid-trial...
        first, log = drive(killed, study, synthetic_root, kill_after=7)
        assert first == -signal.SIGKILL, log
        # ...then trial 0 resumed, and killed on trial 1's first (pruned) epoch
        second, log = drive(killed, study, synthetic_root, kill_after=2)
        assert second == -signal.SIGKILL, log
        run_in_process(study, killed, synthetic_root)
    return study, reference, killed


def state_of(out: Path) -> dict[str, Any]:
    return json.loads((out / "state.json").read_text())


def test_a_killed_search_resumes_to_the_same_trials_and_winner(
    scenario: tuple[Path, Path, Path],
) -> None:
    _, reference, killed = scenario
    trials = trials_of(reference)
    assert [t[:2] for t in trials] == [(0, "COMPLETE"), (1, "PRUNED"), (2, "COMPLETE")]
    assert trials_of(killed) == trials  # same parameters, states and reported values
    ref, got = state_of(reference), state_of(killed)
    assert got["status"] == ref["status"] == "finished"
    for a, b in zip(ref["stages"], got["stages"], strict=True):
        assert a["settings"][a["winner"]]["label"] == b["settings"][b["winner"]]["label"]
        assert [s["label"] for s in a["settings"]] == [s["label"] for s in b["settings"]]
    assert got["final"]["test_top1"] == ref["final"]["test_top1"]
    assert got["final"]["config"] == ref["final"]["config"]


def test_a_pruned_trial_stops_is_marked_and_never_wins(
    scenario: tuple[Path, Path, Path],
) -> None:
    _, _, killed = scenario
    tpe = state_of(killed)["stages"][2]
    assert tpe["kind"] == "optuna" and [s["trial"] for s in tpe["settings"]] == [0, 1, 2]
    pruned = tpe["settings"][1]
    run = RunDir(killed / pruned["runs"][0]["run_dir"])
    summary = run.read_summary()
    assert summary is not None and summary.status == RunStatus.PRUNED
    assert summary.epochs_done == 1 and run.read_config().epochs == 2
    assert pruned["final"] is None and tpe["winner"] != 1
    assert pruned["runs"][0]["status"] == "pruned"


def test_the_report_shows_the_trials_and_optunas_figures(
    scenario: tuple[Path, Path, Path],
) -> None:
    _, _, killed = scenario
    report = (killed / "report.md").read_text()
    tpe = report[report.index("## Stage 3: tpe"):report.index("## Final test result")]
    trials = tpe[: tpe.index("against each other setting")]  # the comparisons table follows
    lines = trials.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| trial |"))
    columns = [c.strip() for c in lines[header].strip("|").split("|")]
    assert set(columns[1:4]) == {"lr", "label_smoothing", "warmup_epochs"}  # one per parameter
    assert columns[4:6] == ["seeds", "status"]
    rows = lines[header + 2 : header + 5]
    assert rows[0].startswith("| **") and not lines[header + 5].startswith("| ")
    assert rows[-1].startswith("| 1 |") and "pruned at epoch 1/2" in rows[-1]  # pruned last
    assert "Pruned: 1 of 3 runs, at epoch 1 of 2." in tpe
    for what in ("history", "parallel", "importances"):
        figure = next((killed / "figures").glob(f"fig*_tpe_{what}.png"))
        assert figure.stat().st_size > 10_000 and f"]({figure.parent.name}/{figure.name})" in tpe
    grid = report[report.index("## Stage 1"):report.index("## Stage 2")]
    plain = grid.replace("**", "")  # the winner's row is bold
    assert "| # | lr | weight_decay | seeds |" in grid and "| 0.02 | 0.0001 |" in plain
    assert "A joint grid over" in grid


def test_a_rerun_after_the_report_is_lost_asks_and_trains_nothing(
    scenario: tuple[Path, Path, Path], synthetic_root: Path
) -> None:
    study, _, killed = scenario
    before = trials_of(killed)
    trained = {p: p.stat().st_mtime_ns for p in killed.rglob("checkpoint.pt")}
    (killed / "report.md").unlink()  # so the study is not done: every stage is gone through
    run_in_process(study, killed, synthetic_root)
    assert trials_of(killed) == before
    assert {p: p.stat().st_mtime_ns for p in killed.rglob("checkpoint.pt")} == trained
    assert (killed / "report.md").is_file()
    # a told trial whose run folder vanished: the run trains again, the trial stays as told
    tpe = state_of(killed)["stages"][2]
    loser = next(s for i, s in enumerate(tpe["settings"]) if i != tpe["winner"] and s["final"])
    run = killed / loser["runs"][0]["run_dir"]
    val_acc = RunDir(run).read_summary().final["val_acc"]  # type: ignore[union-attr]
    shutil.rmtree(run)
    (killed / "report.md").unlink()
    run_in_process(study, killed, synthetic_root)
    assert RunDir(run).read_summary().final["val_acc"] == val_acc  # type: ignore[union-attr]
    assert trials_of(killed) == before


# ---------------------------------------------------------------- parallel trials


def test_trials_run_on_two_local_workers_at_once(
    tmp_path: Path, synthetic_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = OPTUNA.replace('pruner = "median"\n', "")
    study = study_of(tmp_path, text, name="parallel")
    pool = LocalExecutor(DataOptions(str(synthetic_root), False), workers=["cpu", "cpu"])
    out = tmp_path / "out"
    state = run_study(study, out=out, budget="smoke", root=str(synthetic_root), verify=False,
                      executor=pool, export=False)  # fmt: skip (closing in a worker: no export)
    assert state.status == "finished"
    journal = next((out / "optuna").glob("*.journal"))
    trials = optuna.load_study(study_name=None, storage=search.open_storage(journal)).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert len(trials[0].intermediate_values) == 2  # reported by the worker processes
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    # two trials ran at once...
    assert any(a[1] > b[0] for a, b in itertools.pairwise(spans))
    # ...and the third was asked only once a worker was free (lazy jobs)
    first_done = min(spans[0][1], spans[1][1])
    assert spans[2][0] >= first_done
    runs = {s.runs[0].run_hash for s in state.stages[0].settings}
    assert len(runs) == 3 and all(RunDir(out / "runs" / h).status().done for h in runs)
