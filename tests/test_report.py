"""report.py on a hand-built study folder: files, PNGs, table numbers, HTML self-containment."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread

from hpstudy.errors import HpstudyError
from hpstudy.report import beta_pdf, fmt_stat, sig3, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EPOCHS = 3
PUBLISHED_LR = {
    "0.01": {"train_loss": 2.01, "train_acc": 0.450, "val_loss": 2.36, "val_acc": 0.395},
    "0.05": {"train_loss": 1.68, "train_acc": 0.524, "val_loss": 1.99, "val_acc": 0.467},
}


def metric_rows(base: float, seed: int, cosine: bool, lr: float) -> list[dict[str, float]]:
    """Distinct, seed-dependent curves so means and stds are not trivially equal."""
    rows = []
    for e in range(1, EPOCHS + 1):
        acc = base + 0.05 * e + 0.013 * seed
        rate = 0.5 * lr * (1 + math.cos(math.pi * (e - 1) / EPOCHS)) if cosine else lr
        rows.append({
            "epoch": e, "lr": rate, "train_loss": 4.0 - acc * 3, "train_acc": acc + 0.02,
            "val_loss": 4.2 - acc * 3, "val_acc": acc, "val_top5": acc + 0.2,
            "seconds": 10.0 + seed, "images_per_s": 400.0 + 10 * e,
        })  # fmt: skip
    return rows


def write_run(study: Path, run_hash: str, config: dict[str, Any], rows: list[dict] | None,
              status: str) -> None:  # fmt: skip
    run_dir = study / "runs" / run_hash
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config))
    if rows is None:
        return  # a failed run: config only, no metrics, no summary
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = {
        "status": status,
        "epochs_done": len(rows),
        "parameters": 3_309_476,
        "train_seconds": sum(r["seconds"] for r in rows),
        "macs_per_image": 46_446_592,
        "precision": "fp32",
        "test_evaluations": [],
    }
    if config["schedule"] == "cosine":
        summary["test_evaluations"] = [{"split": "test"}]  # the final runs, tested once
    (run_dir / "summary.json").write_text(json.dumps(summary))


def make_study(tmp_path: Path) -> tuple[Path, dict[str, Any], dict[tuple[str, str], list]]:
    """Two stages x two settings x two seeds; lr 0.01 seed 1 failed; stage 2 'constant'
    reuses stage 1's 0.05 runs. Returns the folder, its state and the finished rows per setting."""
    study = tmp_path / "study"
    finished: dict[tuple[str, str], list] = {}

    def setting(stage: str, label: str, value: Any, base: float, lr: float, cosine: bool,
                published: dict | None, failed_seed: int | None = None) -> dict:  # fmt: skip
        runs = []
        for seed in (0, 1):
            run_hash = f"{stage[:2]}{label.replace('.', '')}{seed}".ljust(12, "x")
            if stage == "schedule" and label == "constant":
                run_hash = f"le005{seed}".ljust(12, "x")  # reused from stage 1
            config = {"lr": lr, "epochs": EPOCHS, "seed": seed,
                      "schedule": "cosine" if cosine else "constant"}  # fmt: skip
            if seed == failed_seed:
                write_run(study, run_hash, config, None, "failed")
                runs.append({"seed": seed, "run_hash": run_hash, "run_dir": f"runs/{run_hash}",
                             "status": "failed", "error": "boom", "reused": False})  # fmt: skip
                continue
            rows = metric_rows(base, seed, cosine, lr)
            write_run(study, run_hash, config, rows, "finished")
            finished.setdefault((stage, label), []).append(rows)
            runs.append({"seed": seed, "run_hash": run_hash, "run_dir": f"runs/{run_hash}",
                         "status": "finished", "error": None, "reused": False})  # fmt: skip
        return {"value": value, "label": label, "published": published, "runs": runs,
                "final": None}  # fmt: skip

    stages = [
        {"name": "learning rate", "field": "lr", "epochs": EPOCHS, "figure": 2,
         "settings": [setting("learning rate", "0.01", 0.01, 0.2, 0.01, False,
                              PUBLISHED_LR["0.01"], failed_seed=1),
                      setting("learning rate", "0.05", 0.05, 0.3, 0.05, False,
                              PUBLISHED_LR["0.05"])],
         "winner": 1, "published_winner": "0.05", "margin": 0.1, "spread": 0.009,
         "verdict": "The margin exceeds the seed spread."},
        {"name": "schedule", "field": "schedule", "epochs": EPOCHS, "figure": 4,
         "settings": [setting("schedule", "constant", "constant", 0.3, 0.05, False, None),
                      setting("schedule", "cosine", "cosine", 0.35, 0.05, True, None)],
         "winner": 1, "published_winner": "cosine", "margin": 0.05, "spread": 0.009,
         "verdict": "The margin exceeds the seed spread."},
    ]  # fmt: skip
    cosine = stages[1]["settings"][1]["runs"]
    superclass = {"aquatic_mammals": 0.5, "fish": 0.6}
    final = {
        "config": {"lr": 0.05, "schedule": "cosine", "epochs": EPOCHS},
        "runs": [{"seed": r["seed"], "run_hash": r["run_hash"], "run_dir": r["run_dir"],
                  "test": {"loss": 1.2 + 0.1 * r["seed"], "top1": 0.69 + 0.01 * r["seed"],
                           "top5": 0.9, "superclass_top1": superclass}} for r in cosine],
        "test_top1": {"mean": 0.695, "std": 0.00707, "n": 2},
        "published_test_top1": 0.697,
    }  # fmt: skip
    rng = np.random.default_rng(0)
    proportions = rng.dirichlet(np.full(100, 400.0)).tolist()
    state = {
        "name": "seed-report", "budget": "smoke", "seeds": [0, 1], "selection": "val_acc",
        "status": "finished",
        "data": {"train_size": 40000, "val_size": 10000, "test_size": 10000,
                 "mean": [0.5068, 0.4861, 0.4403], "std": [0.2671, 0.2563, 0.2759],
                 "class_proportions": proportions, "val_indices_sha256": "ab" * 32,
                 "root": "/data"},
        "stages": stages, "final": final,
        "environment": {"hpstudy": "0.1.0", "torch": "2.13.0+cpu", "python": "3.11.7",
                        "platform": "Linux", "device": "cpu (2 cores)"},
    }  # fmt: skip
    (study / "state.json").write_text(json.dumps(state))
    return study, state, finished


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def study(tmp_path: Path) -> tuple[Path, dict[str, Any], dict]:
    return make_study(tmp_path)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], dict]:
    """One report written once for the tests that only read it (figures take seconds)."""
    folder, state, finished = make_study(tmp_path_factory.mktemp("written"))
    assert write_report(folder) == folder / "report.md"
    return folder, state, finished


def test_writes_every_file(written):
    folder, _, _ = written
    expected = ["report.md", "report.html", "tables/stage1_learning_rate.csv",
                "tables/stage2_schedule.csv", "tables/final.csv",
                "figures/fig1_class_proportions.png", "figures/fig2_learning_rate.png",
                "figures/fig4_schedule.png", "figures/fig3_cosine_lr.png",
                "figures/fig6_beta_density.png"]  # fmt: skip
    missing = [p for p in expected if not (folder / p).is_file()]
    assert not missing


def test_figures_are_real_pngs(written):
    folder, _, _ = written
    pngs = sorted((folder / "figures").glob("*.png"))
    assert len(pngs) == 5
    for png in pngs:
        assert png.read_bytes().startswith(PNG_MAGIC), png
        image = imread(png)
        assert image.shape[0] > 100 and image.shape[1] > 100, png
        assert image.std() > 0, f"{png} is blank"


def test_stage_table_means_and_stds_come_from_the_metrics(written):
    folder, _, finished = written
    rows = read_csv(folder / "tables" / "stage1_learning_rate.csv")
    assert [r["setting"] for r in rows] == ["0.01", "0.05"]
    for row in rows:
        finals = [runs[-1] for runs in finished[("learning rate", row["setting"])]]
        assert int(row["n"]) == len(finals)
        for m in ("train_loss", "train_acc", "val_loss", "val_acc"):
            values = np.array([f[m] for f in finals])
            std = values.std(ddof=1) if len(values) > 1 else 0.0
            assert float(row[f"{m}_mean"]) == pytest.approx(values.mean())
            assert float(row[f"{m}_std"]) == pytest.approx(std)
            assert float(row[f"published_{m}"]) == PUBLISHED_LR[row["setting"]][m]
    # the failed seed is left out, not counted as zero
    assert rows[0]["n"] == "1" and float(rows[0]["val_acc_std"]) == 0.0


def test_winner_is_marked(written):
    folder, _, _ = written
    assert [r["winner"] for r in read_csv(folder / "tables" / "stage1_learning_rate.csv")] == [
        "0",
        "1",
    ]
    md = (folder / "report.md").read_text(encoding="utf-8")
    assert re.search(r"^\| \*\*0\.05\*\* \| \*\*2/2\*\*", md, re.M)
    assert re.search(r"^\| 0\.01 \| 1/2 \| 1 finished, 1 failed \|", md, re.M)


def test_published_values_sit_beside_measured(written):
    folder, _, finished = written
    md = (folder / "report.md").read_text(encoding="utf-8")
    row = next(line for line in md.splitlines() if line.startswith("| **0.05**"))
    values = np.array([runs[-1]["val_acc"] for runs in finished[("learning rate", "0.05")]])
    measured = f"{values.mean():#.3g} ± {values.std(ddof=1):.3f}"
    assert f"{measured} (0.467)" in row
    assert "(1.68)" in row and "(0.524)" in row and "(1.99)" in row


def test_final_result_beside_published(written):
    folder, state, _ = written
    md = (folder / "report.md").read_text(encoding="utf-8")
    assert "0.695 ± 0.007" in md and "| 0.697 |" in md
    for run in state["final"]["runs"]:  # the runs it came from, with their seeds
        assert f"| `{run['run_hash']}` | {run['seed']} |" in md
    assert "validation split only" in md and "evaluated once" in md
    rows = read_csv(folder / "tables" / "final.csv")
    assert [float(r["test_top1"]) for r in rows] == [0.69, 0.70]


def test_html_is_self_contained(written):
    folder, _, _ = written
    page = (folder / "report.html").read_text(encoding="utf-8")
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)
    assert len(sources) == 5
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<table>" in page and "<strong>0.05</strong>" in page
    assert "**" not in page  # Markdown emphasis converted, not leaked


def test_unfinished_study_renders_with_pending_test(study):
    folder, state, _ = study
    state["status"], state["final"] = "running", None
    cosine = state["stages"][1]["settings"][1]["runs"][1]
    cosine.update(status="pending")
    (folder / cosine["run_dir"] / "summary.json").unlink()
    (folder / cosine["run_dir"] / "metrics.csv").unlink()
    (folder / "state.json").write_text(json.dumps(state))
    write_report(folder)
    md = (folder / "report.md").read_text(encoding="utf-8")
    assert "not finished" in md
    assert "test result is **pending**" in md
    assert re.search(r"^\| \*\*cosine\*\* \| \*\*1/2\*\*", md, re.M)
    assert "| pending | 0 | — | — |" in md  # the pending run in the run table
    assert len(read_csv(folder / "tables" / "final.csv")) == 0


def test_no_schedule_stage_skips_figure_3(study):
    folder, state, _ = study
    state["stages"] = state["stages"][:1]
    state["final"] = None
    (folder / "state.json").write_text(json.dumps(state))
    write_report(folder)
    assert not (folder / "figures" / "fig3_cosine_lr.png").exists()
    assert "Figure 3 skipped" in (folder / "report.md").read_text(encoding="utf-8")


def test_missing_state_is_a_user_error(tmp_path):
    with pytest.raises(HpstudyError, match=r"not a study folder \(no state\.json\)"):
        write_report(tmp_path)


def test_number_formats_follow_the_report():
    assert sig3(0.45) == "0.450" and sig3(1.0) == "1.00" and sig3(0.00686) == "0.00686"
    assert fmt_stat({"mean": 0.4671, "std": 0.0042, "n": 2}) == "0.467 ± 0.004"
    assert fmt_stat({"mean": 0.4671, "std": 0.0001, "n": 2}) == "0.467 ± 0.0001"
    assert fmt_stat({"mean": 0.4671, "std": 0.0, "n": 1}) == "0.467"
    assert fmt_stat(None) == "—"


def test_beta_density_is_a_density():
    assert beta_pdf(np.array([0.5]), 2.0, 2.0)[0] == pytest.approx(1.5)
    x = np.linspace(0, 1, 100_001)[1:-1]
    for a in (1.5, 3.0):
        assert np.trapezoid(beta_pdf(x, a, a), x) == pytest.approx(1.0, abs=1e-3)
    # U-shaped at the report's α: symmetric, lowest in the middle
    y = beta_pdf(np.array([0.1, 0.5, 0.9]), 0.2, 0.2)
    assert y[0] == pytest.approx(y[2]) and y[1] < y[0]
