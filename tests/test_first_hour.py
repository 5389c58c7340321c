"""The first hour without surprises: `study list` and `study show` on the base install, pruners
that cannot prune said at validation, a starter file that shows every stage kind, a copy that
leaves the paper's numbers behind, a --root at the dataset folder itself, one --no-verify hint.

All in process, no training.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from unit_fixtures import run_here

from hpstudy.data import load_cifar100, resolve_root
from hpstudy.errors import HpstudyError
from hpstudy.study import Plan, builtin_names, load_study, parse_study, starter_text

OPTUNA_STAGE = """
name = "pruned"
seeds = [0]
[base]
width = 0.125
[[stages]]
name = "tpe"
kind = "optuna"
epochs = {epochs}
n_trials = {n_trials}
pruner = "{pruner}"
space.lr = {{ log_uniform = [0.01, 0.3] }}
"""


def test_study_list_and_show_work_without_optuna_and_say_what_is_missing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    listed = run_here(capsys, "study", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert [line.split()[0] for line in lines] == builtin_names()
    needs = [line for line in lines if "needs an extra" in line]
    assert [line.split()[0] for line in needs] == ["beat-published"]
    assert "pip install 'hpstudy[optuna]'" in needs[0]
    shown = run_here(capsys, "study", "show", "beat-published")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("beat-published: ")
    assert "note: needs an extra to run: stage 2" in shown.stdout
    assert "pip install 'hpstudy[optuna]'" in shown.stdout
    # running it is still refused in one line
    with pytest.raises(HpstudyError, match=r"hpstudy\[optuna\]"):
        load_study("beat-published")


@pytest.mark.parametrize(
    ("n_trials", "epochs", "pruner", "said"),
    [
        (4, 300, "median", ["n_trials = 4", "before 5 have finished", "set n_trials above 5"]),
        (6, 300, "median", []),
        (6, 15, "median", ["at 1 epoch per run", "more epochs"]),  # smoke: 15 epochs -> 1
        (1, 300, "asha", ["ASHA pruner prunes nothing with n_trials = 1"]),
        (2, 300, "asha", []),
    ],
)
def test_a_pruner_that_cannot_prune_is_said_at_validation(
    tmp_path: Path, n_trials: int, epochs: int, pruner: str, said: list[str]
) -> None:
    text = OPTUNA_STAGE.format(n_trials=n_trials, epochs=epochs, pruner=pruner)
    study = parse_study(text, "pruned.toml")
    cautions = " ".join(Plan(study, "smoke").cautions())
    assert all(words in cautions for words in said), cautions
    assert bool(cautions) == bool(said)


def test_study_show_prints_the_pruner_caution(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "pruned.toml"
    path.write_text(OPTUNA_STAGE.format(n_trials=4, epochs=300, pruner="median"))
    shown = run_here(capsys, "study", "show", str(path))
    assert shown.returncode == 0, shown.stderr
    warnings = [line for line in shown.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "n_trials = 4" in warnings[0]


def test_the_starter_shows_every_stage_kind_and_its_examples_are_valid() -> None:
    text = starter_text("mine")
    for kind in ("grid", "random", "optuna"):
        assert f'# kind = "{kind}"' in text
    # the commented examples, uncommented, are a valid study
    start = text.index("# [[stages]]")
    end = text.index("[final]")
    examples = re.sub(r"^# ?", "", text[start:end], flags=re.MULTILINE)
    study = parse_study(text[:start] + examples + text[end:], "uncommented")
    assert [s.kind_name() for s in study.stages] == ["values", "values", "grid", "random",
                                                      "optuna"]  # fmt: skip
    Plan(study, "full", None).validate()


def test_a_copy_of_a_study_keeps_no_published_value() -> None:
    copy = parse_study(starter_text("mine", "seed-report"), "copy")
    assert copy.report.published_test_top1 is None and copy.report.published_test_loss is None
    assert all(s.published_label() is None for s in copy.stages)
    assert copy.identity("full") == load_study("seed-report").identity("full")


def test_root_may_name_the_dataset_folder_itself(synthetic_root: Path) -> None:
    folder = synthetic_root / "cifar-100-python"
    assert resolve_root(folder) == resolve_root(synthetic_root)
    assert len(load_cifar100(folder, verify=False).train.fine) == 500
    # a folder of that name that holds no dataset of its own is a root as any other
    assert resolve_root(synthetic_root / "x" / "cifar-100-python").name == "cifar-100-python"


def test_the_split_info_adds_the_class_balance_of_the_images_runs_use(
    synthetic_root: Path,
) -> None:
    import torch

    from hpstudy.data import split_info, train_val_split

    cifar = load_cifar100(synthetic_root, verify=False)
    assert "used_train" not in split_info(cifar, 0)
    info = split_info(cifar, 0, 100)
    train_idx, _ = train_val_split(cifar.train.fine.numel(), 0)
    counts = torch.bincount(cifar.train.fine[train_idx[:100]], minlength=100)
    assert info["used_train"] == 100
    assert info["used_class_proportions"] == (counts.double() / 100).tolist()
    assert "used_train" not in split_info(cifar, 0, 10_000)  # no fewer than the split's


def test_the_md5_error_names_no_verify_once(synthetic_root: Path) -> None:
    with pytest.raises(HpstudyError) as err:
        load_cifar100(synthetic_root, verify=True)
    assert str(err.value).count("--no-verify") == 1
