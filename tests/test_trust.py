"""Trust: per-image predictions, comparisons and intervals, seeds as a lever, like for like."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run_hpstudy
from scipy import stats
from unit_fixtures import quick_studies, run_here

from hpstudy.config import RunConfig
from hpstudy.data import load_cifar100
from hpstudy.errors import HpstudyError
from hpstudy.report import write_report
from hpstudy.run import RunDir, split_of, train
from hpstudy.study import load_study, parse_seeds, run_study
from hpstudy.study.compare import (
    BOOTSTRAP_RESAMPLES,
    accuracy_interval,
    compare,
    mcnemar,
    prediction_interval,
    wilson,
)
from hpstudy.study.state import StudyFolder

# two steps of 64 images a run: these tests check what is recorded and compared, not learning
TINY = dict(width=0.125, batch_size=64, limit_train=128, limit_val=100, device="cpu")
BASE = "\n".join(f"{k} = {json.dumps(v)}" for k, v in TINY.items())

# two stages at the smoke budget; the published winner of stage 1 is named so that the
# report can flag it and --follow published can follow it
TRUST_STUDY = f"""
name = "trust"
seeds = [0, 1, 2]
[base]
{BASE}
[[stages]]
name = "learning rate"
field = "lr"
values = [0.01, 0.5]
epochs = 15
published_winner = "0.5"
published.'0.01' = {{ val_acc = 0.395 }}
published.'0.5' = {{ val_acc = 0.431 }}
[[stages]]
name = "weight decay"
field = "weight_decay"
values = [0.0, 0.0005]
epochs = 15
published_winner = "0.0005"
published.'0' = {{ val_acc = 0.5 }}
published.'0.0005' = {{ val_acc = 0.6 }}
[report]
published_test_top1 = 0.697
"""

# one stage of two settings that train (almost) the same: never decided. One step of 64
# images per run: what the twin tests check is which runs exist, not what they learn.
TWIN_BASE = "\n".join(
    f"{k} = {json.dumps(v)}" for k, v in {**TINY, "limit_train": 64, "limit_val": 32}.items()
)
TWIN_STUDY = f"""
name = "twin"
seeds = [0]
[base]
{TWIN_BASE}
[[stages]]
name = "learning rate"
field = "lr"
values = [0.01, 0.0100000001]
labels = ["a", "b"]
epochs = 15
published.a = {{ val_acc = 0.01 }}
"""


def write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def trust_study(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Done-when scenario: three seeds at the smoke budget."""
    tmp = tmp_path_factory.mktemp("trust")
    out = tmp / "study"
    with quick_studies():  # no test here reads the exported model or the figures' pixels
        run_study(write(tmp, "trust", TRUST_STUDY), out=out, budget="smoke",
                  root=str(synthetic_root), verify=False)  # fmt: skip
    return out


def state_of(out: Path) -> dict:
    return json.loads((out / "state.json").read_text())


# ---------------------------------------------------------------- statistics, known cases


def contingency(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, ...]:
    a = np.array([1] * both + [1] * only_a + [0] * only_b + [0] * neither, dtype=bool)
    b = np.array([1] * both + [0] * only_a + [1] * only_b + [0] * neither, dtype=bool)
    return a, b


def test_mcnemar_on_a_hand_made_table() -> None:
    a, b = contingency(both=50, only_a=12, only_b=3, neither=35)
    p = mcnemar(a, b)
    # the discordant pairs only: 12 against 3 out of 15, exact two-sided
    assert p == pytest.approx(stats.binomtest(12, 15, 0.5).pvalue, rel=1e-12)
    assert p == pytest.approx(2 * (1 + 15 + 105 + 455) / 2**15, rel=1e-12)  # 0.03515625
    assert mcnemar(b, a) == pytest.approx(p)  # symmetric
    assert mcnemar(*contingency(10, 0, 0, 5)) == 1.0  # no discordant image: no evidence
    one_seed = compare([a.astype(float)], [b.astype(float)], correctness=True)
    assert one_seed.p_value == pytest.approx(p)
    assert one_seed.difference == pytest.approx((12 - 3) / 100)
    assert "McNemar" in one_seed.test


def test_wilson_interval_is_scipys() -> None:
    lo, hi = wilson(70, 100)
    assert (lo, hi) == pytest.approx((0.6041, 0.7810), abs=1e-4)  # the textbook values
    (lo1, hi1), how = accuracy_interval([np.r_[np.ones(70), np.zeros(30)]])
    assert how.startswith("Wilson") and (lo1, hi1) == pytest.approx((lo, hi))


def test_interval_covers_a_known_difference() -> None:
    """200 simulated experiments, true difference 0.05: the 95 % interval covers it 90-99 %."""
    rng = np.random.default_rng(11)
    covered = 0
    for _ in range(200):
        w = rng.random(2000) < 0.70
        s = rng.random(2000) < 0.65
        ci = compare([w], [s], correctness=True).ci95
        covered += ci[0] <= 0.05 <= ci[1]
    assert 0.90 <= covered / 200 <= 0.99


def test_the_seed_interval_widens_with_seed_noise_and_the_image_one_does_not() -> None:
    rng = np.random.default_rng(3)

    def widths(seed_std: float) -> tuple[float, float]:
        pw, ps = 0.7 + rng.normal(0, seed_std, 4), 0.65 + rng.normal(0, seed_std, 4)
        w = [rng.random(1000) < p for p in pw]
        s = [rng.random(1000) < p for p in ps]
        d = compare(w, s, correctness=True)
        assert "paired t" in d.test and d.seeds == 4 and d.p_value is not None
        assert d.ci95 is not None and d.images_ci95 is not None
        return d.ci95[1] - d.ci95[0], d.images_ci95[1] - d.images_ci95[0]

    (seeds_quiet, images_quiet), (seeds_noisy, images_noisy) = widths(0.0), widths(0.05)
    assert seeds_noisy > 1.5 * seeds_quiet
    assert images_noisy == pytest.approx(images_quiet, rel=0.3)  # new images, same models


def test_bootstrap_is_deterministic_and_uses_its_seed() -> None:
    rng = np.random.default_rng(5)
    w = [rng.random(500) for _ in range(3)]  # losses: the gather path
    s = [rng.random(500) + 0.02 for _ in range(3)]
    first = compare(w, s, correctness=False, lower_is_better=True)
    assert compare(w, s, correctness=False, lower_is_better=True) == first
    other = compare(w, s, correctness=False, lower_is_better=True, seed=1)
    assert other.images_ci95 != first.images_ci95 and other.ci95 == first.ci95  # t: no draws
    gaps = [a.mean() - b.mean() for a, b in zip(w, s, strict=True)]
    assert first.difference == pytest.approx(np.mean(gaps))
    assert first.prob_better is not None and first.prob_better > 0.5  # lower is better
    assert BOOTSTRAP_RESAMPLES >= 2000
    right = [rng.random(500) < 0.6 for _ in range(3)]  # right/wrong: the multinomial path
    assert accuracy_interval(right) == accuracy_interval(right)


# ---------------------------------------------------------------- per-image predictions


def test_val_predictions_give_val_acc_exactly_also_after_resume(
    synthetic_root: Path, tmp_path: Path
) -> None:
    config = RunConfig(**TINY, epochs=1, lr=0.05)
    run = RunDir(tmp_path / "run")
    summary = train(config, run.path, root=synthetic_root, verify=False, show_progress=False)
    predicted = run.read_val_predictions()
    assert predicted is not None and predicted.dtype == np.int16 and len(predicted) == 100
    cifar = load_cifar100(synthetic_root, verify=False)
    _, val_idx = split_of(config, cifar)
    labels = cifar.train.fine[val_idx].numpy()
    assert summary.final is not None
    assert float(np.mean(predicted == labels)) == summary.final["val_acc"]  # exactly
    losses = run.read_val_losses()
    assert losses is not None and losses.dtype == np.float32
    assert float(losses.mean()) == pytest.approx(summary.final["val_loss"], rel=1e-5)
    # killed after the final epoch's checkpoint, before its outcome was written
    run.summary_path.unlink()
    run.val_predictions_path.unlink()
    train(config, run.path, root=synthetic_root, verify=False, show_progress=False)
    assert np.array_equal(run.read_val_predictions(), predicted)


def test_a_torn_predictions_file_is_one_line(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    for payload in (b"", b"\x93NUMPY garbage", np.zeros((2, 2), np.int16).tobytes()):
        run.val_predictions_path.write_bytes(payload)
        with pytest.raises(HpstudyError) as err:
            run.read_val_predictions()
        assert "\n" not in str(err.value)
    np.save(run.val_predictions_path, np.zeros(3, np.float64))
    with pytest.raises(HpstudyError, match="not 1-D int16"):
        run.read_val_predictions()


# ---------------------------------------------------------------- the Done-when scenario


def test_state_holds_comparisons_and_test_interval(trust_study: Path) -> None:
    state = state_of(trust_study)
    for stage in state["stages"]:
        assert isinstance(stage["decided"], bool)
        others = [s["label"] for i, s in enumerate(stage["settings"]) if i != stage["winner"]]
        assert [c["setting"] for c in stage["comparisons"]] == others
        for c in stage["comparisons"]:
            lo, hi = c["ci95"]
            assert lo <= c["difference"] <= hi and 0 <= c["prob_better"] <= 1
            assert c["seeds"] == 3 and c["test"].startswith("paired t")
            assert len(c["images_ci95"]) == 2
            if c["p_value"] is None:  # runs alike on every seed (two steps of training)
                assert c["ci95"] == [0, 0] and c["decision_ci"] is None
                assert "no interval is claimed" in c["test"]
            else:  # Bonferroni over one comparison: the decision interval is the 95 % one
                assert c["decision_ci"] == pytest.approx(c["ci95"], abs=1e-12)
                assert len(c["prob_better_ci95"]) == 2
        on_its_side = all(c["decision_ci"] is not None and c["decision_ci"][0] > 0
                          for c in stage["comparisons"])  # fmt: skip
        assert stage["decided"] == on_its_side
        assert (stage["looks"], stage["alpha_spent"]) == (1, pytest.approx(0.05))
        if not stage["decided"]:
            assert "Not decided" in stage["verdict"]
    top1 = state["final"]["test_top1"]
    tops = [r["test"]["top1"] for r in state["final"]["runs"]]
    if np.ptp(tops) == 0:  # two steps of training may predict one class on every seed
        assert top1["ci95"] is None and "do not vary" in top1["interval"]
    else:
        lo, hi = stats.ttest_1samp(tops, 0).confidence_interval(0.95)
        assert top1["ci95"] == pytest.approx([lo, hi], abs=1e-9)
        assert top1["interval"] == "t-interval over runs"


def test_three_seeds_give_the_paired_t_interval_of_the_runs_val_acc(trust_study: Path) -> None:
    """Done when: ci95 equals (to 1e-9) the paired t-interval recomputed from the runs'
    final val_acc, p_value the paired t-test."""
    state = state_of(trust_study)
    compared = 0
    for stage in state["stages"]:
        winner = stage["settings"][stage["winner"]]

        def acc(setting: dict) -> list[float]:
            return [RunDir(trust_study / r["run_dir"]).read_metrics()[-1]["val_acc"]
                    for r in setting["runs"]]  # fmt: skip

        for c in stage["comparisons"]:
            setting = next(s for s in stage["settings"] if s["label"] == c["setting"])
            d = np.subtract(acc(winner), acc(setting))
            if np.ptp(d) == 0:  # no t-interval: the test above checks what is said instead
                assert c["p_value"] is None
                continue
            compared += 1
            test = stats.ttest_1samp(d, 0)
            ci = test.confidence_interval(0.95)
            assert c["ci95"] == pytest.approx([ci.low, ci.high], abs=1e-9)
            assert c["p_value"] == pytest.approx(test.pvalue, abs=1e-9)
            assert c["images_ci95"] is not None
    assert compared >= 1  # the learning rates differ on some seed even after two steps


def test_numbers_recomputed_from_val_predictions_agree(
    trust_study: Path, synthetic_root: Path
) -> None:
    state = state_of(trust_study)
    cifar = load_cifar100(synthetic_root, verify=False)

    def correct(run_dir: str) -> np.ndarray:
        run = RunDir(trust_study / run_dir)
        _, val_idx = split_of(run.read_config(), cifar)
        predicted = run.read_val_predictions()
        assert predicted is not None
        return predicted == cifar.train.fine[val_idx].numpy()

    for stage in state["stages"]:
        winner = stage["settings"][stage["winner"]]
        mine = {r["seed"]: correct(r["run_dir"]) for r in winner["runs"]}
        for c in stage["comparisons"]:
            setting = next(s for s in stage["settings"] if s["label"] == c["setting"])
            theirs = {r["seed"]: correct(r["run_dir"]) for r in setting["runs"]}
            # the accuracies from the predictions are the runs' own val_acc
            for r in setting["runs"]:
                rows = RunDir(trust_study / r["run_dir"]).read_metrics()
                assert float(np.mean(theirs[r["seed"]])) == rows[-1]["val_acc"]
            gap = winner["final"]["val_acc"]["mean"] - setting["final"]["val_acc"]["mean"]
            assert c["difference"] == pytest.approx(gap, abs=1e-12)
            again = compare([mine[s] for s in (0, 1, 2)], [theirs[s] for s in (0, 1, 2)],
                            correctness=True)  # fmt: skip
            assert again.ci95 is not None and list(again.ci95) == c["ci95"]
            assert again.images_ci95 is not None and list(again.images_ci95) == c["images_ci95"]
            assert again.prob_better == c["prob_better"]


def test_report_shows_comparisons_interval_and_reproduction(trust_study: Path) -> None:
    md = (trust_study / "report.md").read_text()
    state = state_of(trust_study)
    assert "P(winner better on a new seed)" in md
    assert len(list((trust_study / "figures").glob("fig*b_learning_rate_differences.png"))) == 1
    assert "What the intervals are about" in md and "no study-wide error control" in md
    # the published test top-1 against the prediction interval for one new run (3 runs)
    tops = [r["test"]["top1"] for r in state["final"]["runs"]]
    if np.ptp(tops) == 0:
        assert "**cannot tell**, the final runs' test top-1 do not vary" in md
    else:
        lo, hi = state["final"]["test_top1"]["ci95"]
        assert f"[{lo:.4f}, {hi:.4f}]" in md
        plo, phi = prediction_interval(np.array(tops))
        inside = plo <= 0.697 <= phi
        assert f"The published 0.697 is **{'inside' if inside else 'outside'}** the 95 %" in md
    reproduction = md.split("## Reproduction")[1].split("\n## ")[0]
    assert "| test top-1 | 0.697 |" in reproduction
    rows = (trust_study / "tables" / "reproduction.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 + 1  # header, four published val_acc, the test top-1
    verdicts = ("consistent", "inside the prediction interval", "outside", "cannot tell")
    assert all(row.split(",")[-1] in verdicts for row in rows[1:])
    assert all(row.endswith(",cannot tell") or "prediction interval for one new run (3" in row
               for row in rows[1:])  # fmt: skip
    assert (trust_study / "tables" / "comparisons1_learning_rate.csv").is_file()


def test_report_flags_runs_that_differ_from_the_published_ones(
    trust_study: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "study"
    shutil.copytree(trust_study, copy)
    state = StudyFolder(copy).read_state()
    first = state.stages[0]
    labels = [s.label for s in first.settings]
    # whatever hpstudy chose, name the other setting as the published winner
    other = labels[1 - first.winner] if first.winner is not None else labels[0]
    first.published_winner = other
    StudyFolder(copy).write_state(state)
    write_report(copy)
    md = (copy / "report.md").read_text()
    stage2 = md.split("## Stage 2")[1].split("\n## ")[0]
    mine = first.settings[first.winner].label  # type: ignore[index]
    assert f"measured with `lr {mine}`, published with `lr {other}`" in stage2
    assert "Not like for like" not in md.split("## Stage 2")[0]  # stage 1 starts from base


# ---------------------------------------------------------------- seeds and modes


def test_growing_the_seeds_of_a_finished_study_trains_only_new_runs(
    synthetic_root: Path, tmp_path: Path
) -> None:
    spec = write(tmp_path, "twin", TWIN_STUDY)
    out = tmp_path / "study"
    run_study(spec, out=out, budget="smoke", root=str(synthetic_root), verify=False)
    # Done when, one seed: not decided, no P(better), the seed-noise sentence, and the
    # reproduction table cannot tell
    stage = state_of(out)["stages"][0]
    (c,) = stage["comparisons"]
    assert stage["decided"] is False and c["prob_better"] is None and c["seeds"] == 1
    assert "these validation images, this seed" in c["test"] and c["p_value"] is not None
    md = (out / "report.md").read_text()
    for text in (stage["verdict"], md):
        assert "noise is not measured (`--seeds 3` measures it)" in text
    line = (out / "tables" / "reproduction.csv").read_text().splitlines()[1]
    assert line.endswith(",cannot tell") and "one run" in line
    before = {p.parent.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*/checkpoint.pt")}
    assert len(before) == 2
    state = run_study(spec, out=out, budget="smoke", root=str(synthetic_root), verify=False,
                      seeds=parse_seeds("2"))  # fmt: skip
    after = {p.name for p in (out / "runs").iterdir()}
    assert len(after) == 4 and set(before) < after
    for name, mtime in before.items():  # the old runs were not trained again
        assert (out / "runs" / name / "checkpoint.pt").stat().st_mtime_ns == mtime
    assert state.seeds == [0, 1] and all(len(s.runs) == 2 for s in state.stages[0].settings)
    assert state.stages[0].comparisons[0].seeds == 2


def test_until_decided_adds_seeds_to_an_undecided_stage(
    synthetic_root: Path, tmp_path: Path
) -> None:
    spec = write(tmp_path, "twin", TWIN_STUDY)
    state = run_study(spec, out=tmp_path / "study", budget="smoke", root=str(synthetic_root),
                      verify=False, until_decided=3)  # fmt: skip
    stage = state.stages[0]
    assert not stage.decided  # the twins train alike: no interval can exclude 0
    assert [r.seed for r in stage.settings[0].runs] == [0, 1, 2]
    assert state.seeds == [0] and state.until_decided == 3
    assert "not distinguishable at 3 seeds" in (stage.verdict or "")
    # judged at 2 and 3 seeds (never at one), each look at α/2: 0.05 spent in all
    assert (stage.looks, stage.alpha_spent) == (2, pytest.approx(0.05))


def test_follow_published_starts_each_stage_from_the_published_winners(
    trust_study: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "study"
    shutil.copytree(trust_study, out)  # same folder: runs of equal configs are reused
    spec = write(tmp_path, "trust", TRUST_STUDY)
    state = run_study(spec, out=out, budget="smoke", root=str(synthetic_root), verify=False,
                      follow="published")  # fmt: skip
    assert state.follow == "published"
    first = state.stages[0]
    assert first.carried == 1  # "0.5", the published winner, whatever hpstudy chose
    for setting in state.stages[1].settings:
        for run in setting.runs:
            assert RunDir(out / run.run_dir).read_config().lr == 0.5
    md = (out / "report.md").read_text()
    assert "Not like for like" not in md
    if first.winner != first.carried:
        chosen = first.settings[first.winner].label  # type: ignore[index]
        assert f"hpstudy's own selection chose **{chosen}**" in md


def test_split_follows_seed_is_part_of_the_identity(tmp_path: Path) -> None:
    plain = load_study(write(tmp_path, "twin", TWIN_STUDY))
    follows = load_study(write(tmp_path, "twin2", TWIN_STUDY.replace(
        'seeds = [0]', 'seeds = [0]\nsplit_follows_seed = true')))  # fmt: skip
    assert plain.identity_hash("smoke") != follows.identity_hash("smoke")
    from hpstudy.study import Plan

    configs = Plan(follows, "smoke").stage_runs(0, {}, [3, 4])
    assert [c.config.split_seed for c in configs] == [3, 4, 3, 4]
    assert {c.config.split_seed for c in Plan(plain, "smoke").stage_runs(0, {}, [3])} == {0}


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"seeds": "abc"}, "--seeds"),
        ({"seeds": "0"}, "--seeds: a count must be"),
        ({"seeds": "-2"}, "--seeds"),
        ({"seeds": "99999999999"}, "--seeds"),
        ({"seeds": ","}, "--seeds"),
        ({"seeds": "1,1"}, "seeds must be distinct"),
        ({"seeds": "0,-1"}, "seeds must be distinct"),
        ({"seeds": "0,99999999999999"}, "seeds must be distinct"),
        ({"until_decided": 0}, "--until-decided"),
        ({"until_decided": -3}, "--until-decided"),
        ({"until_decided": 10_000_000}, "--until-decided"),
        ({"follow": "theirs"}, "--follow"),
    ],
)
def test_bad_trust_options_are_one_line(tmp_path: Path, options: dict, needle: str) -> None:
    spec = write(tmp_path, "twin", TWIN_STUDY)
    with pytest.raises(HpstudyError) as err:
        if "seeds" in options:  # as the command line hands them over
            options = {**options, "seeds": parse_seeds(options["seeds"])}
        run_study(spec, out=tmp_path / "o", **options)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("flags", "needle"),
    [(["--seeds", "2,x"], "--seeds"), (["--until-decided", "nan"], "--until-decided")],
)
def test_bad_trust_flags_are_one_line(
    tmp_path: Path, flags: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write(tmp_path, "twin", TWIN_STUDY)
    result = run_here(capsys, "study", "run", str(spec), "--out", str(tmp_path / "o"), *flags)
    assert_one_line_error(result, needle)
    assert not (tmp_path / "o").exists()


def test_a_bad_trust_flag_is_one_line_from_a_real_process(tmp_path: Path) -> None:
    spec = write(tmp_path, "twin", TWIN_STUDY)
    result = run_hpstudy("study", "run", str(spec), "--out", str(tmp_path / "o"),
                         "--until-decided", "nan")  # fmt: skip
    assert_one_line_error(result, "--until-decided")
    assert not (tmp_path / "o").exists()


def test_follow_published_without_published_winners_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write(tmp_path, "twin", TWIN_STUDY)
    out = tmp_path / "o"
    result = run_here(capsys, "study", "run", str(spec), "--follow", "published",
                      "--out", str(out))  # fmt: skip
    assert_one_line_error(result, "published_winner")
    assert not out.exists()


def test_runs_without_predictions_are_said_to_be_missing(trust_study: Path) -> None:
    """An older run folder (no val_predictions.npy) is never compared silently, nor a crash."""
    from hpstudy.study.select import judge

    state = StudyFolder(trust_study).read_state()
    stage = state.stages[0]
    assert stage.winner is not None
    right = {seed: (np.ones(100, dtype=bool), None) for seed in (0, 1, 2)}
    outcomes = [dict(right) for _ in stage.settings]
    del outcomes[1 - stage.winner][1]  # seed 1 of the other setting keeps no predictions
    judged = judge(stage, outcomes, "val_acc")
    (c,) = judged.comparisons
    assert c.ci95 is None and c.difference is None and c.test.startswith("none: ")
    assert "[1]" in c.test and not judged.decided
    assert "cannot be judged" in (judged.verdict or "")
    # val_loss needs the per-image losses, which these outcomes lack
    by_loss = judge(stage, [dict(right) for _ in stage.settings], "val_loss")
    assert by_loss.comparisons[0].ci95 is None
