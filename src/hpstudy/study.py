"""A study as data: StudyConfig (TOML), stages, winner selection, run reuse, resume.

A study folder holds `study.json` (what study, at what budget), `runs/<hash>/`
(one folder per distinct configuration, so equal configurations meet and are
reused) and `state.json` (stages, winners, final result: the report's input).

Nothing is remembered that cannot be derived: each `study run` expands the
stages again from the run folders, so a study killed anywhere resumes where it
stopped, and a finished run is never trained twice.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import time
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hpstudy import __version__, data
from hpstudy.config import RunConfig, format_validation_error, make_run_config
from hpstudy.errors import HpstudyError
from hpstudy.executors import DataOptions, Job, make_executor
from hpstudy.progress import log
from hpstudy.report import write_report
from hpstudy.train import (
    DONE_STATES,
    evaluate,
    load_data,
    read_json,
    read_metrics,
    read_summary,
    write_json,
)

BUDGETS = ("full", "short", "smoke")
SMOKE_LIMITS = {"limit_train": 2048, "limit_val": 512}
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")
# fields a stage may not vary: the study decides them
RESERVED_FIELDS = frozenset({"seed", "epochs"})


class Published(BaseModel):
    model_config = ConfigDict(extra="forbid")
    train_loss: float | None = None
    train_acc: float | None = None
    val_loss: float | None = None
    val_acc: float | None = None


class Stage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    field: str
    values: list[Any] = Field(min_length=1)
    labels: list[str] | None = None
    epochs: int = Field(ge=1)
    overrides: dict[str, Any] = {}
    figure: int | None = None
    published: dict[str, Published] = {}
    published_winner: str | None = None

    @field_validator("field")
    @classmethod
    def _known_field(cls, v: str) -> str:
        if v not in RunConfig.model_fields or v in RESERVED_FIELDS:
            raise ValueError(f"{v!r} is not a RunConfig field a stage can vary")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Stage:
        if self.labels is not None and len(self.labels) != len(self.values):
            raise ValueError(f"{len(self.labels)} labels for {len(self.values)} values")
        if len({json.dumps(v) for v in self.values}) != len(self.values):
            raise ValueError("values repeat")
        return self

    def label(self, i: int) -> str:
        return self.labels[i] if self.labels else format_value(self.values[i])


class Final(BaseModel):
    model_config = ConfigDict(extra="forbid")
    split: Literal["test"] = "test"
    published_test_top1: float | None = None


class StudyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    description: str = ""
    seeds: list[int] = Field([0], min_length=1)
    selection: Literal["val_acc", "val_loss"] = "val_acc"
    base: dict[str, Any] = {}
    stages: list[Stage] = Field(min_length=1)
    final: Final = Final()

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v) or min(v) < 0:
            raise ValueError("seeds must be distinct and >= 0")
        return v


def format_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


# ---------------------------------------------------------------- loading


def builtin_names() -> list[str]:
    folder = resources.files("hpstudy") / "studies"
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


def load_study(spec: str | Path) -> StudyConfig:
    """A TOML file, or the name of a built-in study."""
    path = Path(spec)
    if path.is_file():
        where, text = str(path), path.read_bytes()
    elif str(spec) in builtin_names():
        where = f"{spec} (built-in)"
        text = (resources.files("hpstudy") / "studies" / f"{spec}.toml").read_bytes()
    else:
        known = ", ".join(builtin_names())
        raise HpstudyError(f"{spec}: no such study file or built-in study (built-ins: {known})")
    try:
        raw = tomllib.loads(text.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise HpstudyError(f"{where}: not valid TOML ({err})") from None
    try:
        study = StudyConfig(**raw)
    except ValidationError as err:
        raise HpstudyError(format_validation_error(err, where)) from None
    # the base and every configuration the study can produce must be valid RunConfigs
    make_run_config(study.base, f"{where}: base")
    for i, stage in enumerate(study.stages):
        for value in stage.values:
            try:
                RunConfig(**{**study.base, **stage.overrides, stage.field: value})
            except ValidationError as err:
                raise HpstudyError(format_validation_error(err, f"{where}: stages[{i}]")) from None
    return study


def describe(study: StudyConfig) -> str:
    lines = [
        f"{study.name}: {study.description}",
        f"seeds {study.seeds}, winner by {study.selection}",
        "base: " + ", ".join(f"{k}={format_value(v)}" for k, v in study.base.items()),
    ]
    for i, stage in enumerate(study.stages, 1):
        settings = ", ".join(stage.label(j) for j in range(len(stage.values)))
        extra = f", overrides {stage.overrides}" if stage.overrides else ""
        lines.append(
            f"stage {i} {stage.name}: {stage.field} in [{settings}], {stage.epochs} epochs{extra}"
        )
    lines.append(
        f"final: winner of stage {len(study.stages)} evaluated once on {study.final.split}"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------- expansion


def budget_epochs(epochs: int, budget: str) -> int:
    """full: as written; short: /10; smoke: /150 (15 -> 1, 300 -> 2); rounding half up."""
    divisor = {"full": 1, "short": 10, "smoke": 150}[budget]
    return max(1, math.floor(epochs / divisor + 0.5))


def stage_config(
    study: StudyConfig, stage: Stage, value: Any, winners: dict[str, Any], seed: int, budget: str
) -> RunConfig:
    values = {**study.base, **winners, **stage.overrides}
    if budget == "smoke":
        for key, limit in SMOKE_LIMITS.items():
            values[key] = min(limit, values.get(key) or limit)
    values.update({"epochs": budget_epochs(stage.epochs, budget), stage.field: value, "seed": seed})
    return RunConfig(**values)


def summarise(xs: list[float]) -> dict[str, float]:
    n = len(xs)
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n}


def run_state(out: Path, run_dir: Path) -> dict[str, Any]:
    summary = read_summary(run_dir) or {}
    return {
        "status": summary.get("status", "pending"),
        "error": summary.get("error"),
        "final": summary.get("final"),
        "run_dir": str(run_dir.relative_to(out)),
    }


def select(stage: Stage, settings: list[dict[str, Any]], selection: str) -> dict[str, Any]:
    """Winner on the mean over seeds of the final-epoch validation metric, and how sure it is."""
    usable = [i for i, s in enumerate(settings) if s["final"] is not None]
    if not usable:
        return {"winner": None, "margin": None, "spread": None, "verdict": "no usable run"}
    sign = 1 if selection == "val_acc" else -1
    # ties (common on small validation sets) go to the lower validation loss, then to order
    ranked = sorted(
        usable,
        key=lambda i: (
            -sign * settings[i]["final"][selection]["mean"],
            settings[i]["final"]["val_loss"]["mean"],
        ),
    )
    winner = ranked[0]
    best = settings[winner]["final"][selection]
    margin = (
        abs(best["mean"] - settings[ranked[1]]["final"][selection]["mean"])
        if len(ranked) > 1
        else None
    )
    stds = [
        settings[i]["final"][selection]["std"]
        for i in usable
        if settings[i]["final"][selection]["n"] > 1
    ]
    spread = max(stds) if stds else None
    label = settings[winner]["label"]
    if margin is None:
        verdict = f"{label} is the only usable setting."
    elif spread is None:
        verdict = (
            f"{label} wins by {margin:.4f} {selection}; with one seed per setting this margin "
            "cannot be compared with seed noise (add seeds to tell)."
        )
    elif margin > 2 * spread:
        verdict = (
            f"{label} wins by {margin:.4f} {selection}, more than twice the largest "
            f"seed std ({spread:.4f}): the choice is clear."
        )
    else:
        verdict = (
            f"{label} wins by {margin:.4f} {selection}, within seed noise (largest seed std "
            f"{spread:.4f}): the settings are not distinguishable at these seeds."
        )
    if stage.published_winner is not None:
        same = stage.published_winner == label
        verdict += (
            " Same winner as the published study."
            if same
            else f" The published study chose {stage.published_winner}."
        )
    return {"winner": winner, "margin": margin, "spread": spread, "verdict": verdict}


# ---------------------------------------------------------------- the study folder


def study_identity(study: StudyConfig, budget: str) -> tuple[dict[str, Any], str]:
    identity = {"study": study.model_dump(), "budget": budget}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    return identity, digest


def claim_folder(out: Path, study: StudyConfig, budget: str) -> None:
    identity, digest = study_identity(study, budget)
    path = out / "study.json"
    if path.exists():
        held = read_json(path)
        if held.get("study_hash") != digest:
            raise HpstudyError(
                f"{out} holds a different study ({held.get('name')}, budget {held.get('budget')}, "
                f"{held.get('study_hash')}); use another --out"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, {"name": study.name, "budget": budget, "study_hash": digest, **identity})


def data_summary(root: str | None, verify: bool, split_seed: int) -> dict[str, Any]:
    """What the report says of the data: sizes, statistics, split fingerprint, Figure 1."""
    info = data.split_info(load_data(root, verify), split_seed)
    return {"root": str(data.resolve_root(root)), **info}


def environment(device: str) -> dict[str, str]:
    import torch

    return {
        "hpstudy": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
    }


def default_out(study: StudyConfig, budget: str) -> Path:
    return Path("runs") / (study.name if budget == "full" else f"{study.name}-{budget}")


def run_study(
    spec: str | Path,
    *,
    out: Path | None = None,
    budget: str = "full",
    executor: str = "local",
    root: str | None = None,
    verify: bool = True,
    devices: list[int] | None = None,
    address: str | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) a study; returns state.json's dict. Writes the report at the end."""
    if budget not in BUDGETS:
        raise HpstudyError(f"budget: must be one of {', '.join(BUDGETS)} (got {budget!r})")
    study = load_study(spec)
    out = Path(out) if out is not None else default_out(study, budget)
    claim_folder(out, study, budget)
    state_path = out / "state.json"
    if state_path.exists() and read_json(state_path).get("status") == "finished":
        log(
            f"{out}: study {study.name} ({budget}) already finished; nothing to do "
            f"(report: {out / 'report.md'})"
        )
        return read_json(state_path)

    options = DataOptions(root=root, verify=verify)
    runner = make_executor(executor, options, devices=devices, address=address, device=device)
    base = RunConfig(**study.base)
    state: dict[str, Any] = {
        "name": study.name,
        "budget": budget,
        "seeds": study.seeds,
        "selection": study.selection,
        "status": "running",
        "data": data_summary(root, verify, base.split_seed),
        "stages": [],
        "final": None,
        "environment": {},
    }
    started = time.perf_counter()
    winners: dict[str, Any] = {}
    seen: set[str] = set()
    try:
        for k, stage in enumerate(study.stages, 1):
            stage_state, jobs = expand_stage(out, study, stage, winners, budget, seen)
            state["stages"].append(stage_state)
            refresh(out, state)
            write_json(state_path, state)
            log(
                f"[bold]stage {k}/{len(study.stages)} {stage.name}[/bold]: "
                f"{len(stage.values) * len(study.seeds)} runs, {len(jobs)} to train"
            )
            runner.run(jobs)
            refresh(out, state)
            stage_state.update(select(stage, stage_state["settings"], study.selection))
            write_json(state_path, state)
            if stage_state["winner"] is None:
                raise no_usable_run(stage_state)
            winner = stage_state["settings"][stage_state["winner"]]
            winners[stage.field] = winner["value"]
            log(f"stage {stage.name}: winner {winner['label']} — {stage_state['verdict']}")
    finally:
        runner.close()

    state["final"] = final_evaluation(out, study, state, options, device)
    state["status"] = "finished"
    state["environment"] = environment(state["final"]["device"])
    state["wall_seconds_this_invocation"] = time.perf_counter() - started
    write_json(state_path, state)
    report = write_report(out)
    log(
        f"study {study.name} ({budget}) finished: test top-1 "
        f"{state['final']['test_top1']['mean']:.4f}; report: {report}"
    )
    return state


def expand_stage(
    out: Path,
    study: StudyConfig,
    stage: Stage,
    winners: dict[str, Any],
    budget: str,
    seen: set[str],
) -> tuple[dict[str, Any], list[Job]]:
    """The stage's runs given the winners so far, and those still to train.

    A configuration met in an earlier stage (`seen`) is reused, not trained again.
    """
    jobs, settings = [], []
    for i, value in enumerate(stage.values):
        label = stage.label(i)
        runs = []
        for seed in study.seeds:
            config = stage_config(study, stage, value, winners, seed, budget)
            run_hash = config.run_hash()
            reused = run_hash in seen
            seen.add(run_hash)
            runs.append({"seed": seed, "run_hash": run_hash, "reused": reused})
            run_dir = out / "runs" / run_hash
            if not reused and run_state(out, run_dir)["status"] not in DONE_STATES:
                jobs.append(Job(config, run_dir, f"{stage.name} / {label} / seed {seed}"))
        published = stage.published.get(label)
        settings.append(
            {
                "value": value,
                "label": label,
                "runs": runs,
                "published": published.model_dump() if published else None,
            }
        )
    stage_state = {
        "name": stage.name,
        "field": stage.field,
        "figure": stage.figure,
        "epochs": budget_epochs(stage.epochs, budget),
        "settings": settings,
        "published_winner": stage.published_winner,
    }
    return stage_state, jobs


def no_usable_run(stage_state: dict[str, Any]) -> HpstudyError:
    outcomes = "; ".join(
        f"{s['label']} seed {r['seed']}: {r['status']}" + (f" ({r['error']})" if r["error"] else "")
        for s in stage_state["settings"]
        for r in s["runs"]
    )
    return HpstudyError(
        f"stage {stage_state['name']!r} has no usable run ({outcomes}); "
        "fix the cause and rerun to resume"
    )


def refresh(out: Path, state: dict[str, Any]) -> None:
    """Bring every run's status and final metrics in `state` up to date from its folder."""
    for stage in state["stages"]:
        for setting in stage["settings"]:
            finals = []
            for run in setting["runs"]:
                current = run_state(out, out / "runs" / run["run_hash"])
                run.update(
                    status=current["status"], error=current["error"], run_dir=current["run_dir"]
                )
                if current["status"] == "finished" and current["final"]:
                    finals.append(current["final"])
            setting["final"] = (
                {m: summarise([f[m] for f in finals]) for m in METRICS} if finals else None
            )


def final_evaluation(
    out: Path, study: StudyConfig, state: dict[str, Any], options: DataOptions, device: str | None
) -> dict[str, Any]:
    """The winner of the last stage, every seed, evaluated on test exactly once."""
    last = state["stages"][-1]
    winner = last["settings"][last["winner"]]
    runs = []
    for run in winner["runs"]:
        if run["status"] != "finished":
            continue
        run_dir = out / run["run_dir"]
        done = (read_summary(run_dir) or {}).get("test_evaluations") or []
        test = (
            done[0]
            if done
            else evaluate(run_dir, "test", root=options.root, verify=options.verify, device=device)
        )
        runs.append(
            {
                "seed": run["seed"],
                "run_hash": run["run_hash"],
                "run_dir": run["run_dir"],
                "test": {k: test[k] for k in ("loss", "top1", "top5", "superclass_top1")},
            }
        )
    config = read_json(out / runs[0]["run_dir"] / "config.json")
    config.pop("seed", None)
    summary = read_summary(out / runs[0]["run_dir"]) or {}
    return {
        "config": config,
        "runs": runs,
        "test_top1": summarise([r["test"]["top1"] for r in runs]),
        "test_top5": summarise([r["test"]["top5"] for r in runs]),
        "test_loss": summarise([r["test"]["loss"] for r in runs]),
        "published_test_top1": study.final.published_test_top1,
        "device": summary.get("device_name", "unknown"),
    }


# ---------------------------------------------------------------- status


def status_text(out: Path) -> str:
    state_path = Path(out) / "state.json"
    if not state_path.exists():
        raise HpstudyError(f"{out}: not a study folder (no state.json)")
    state = read_json(state_path)
    lines = [
        f"{state['name']} ({state['budget']}): {state['status']}",
        f"{'stage':16} {'setting':12} {'seed':>4} {'state':9} {'epoch':>7} {'val_acc':>8}  run",
    ]
    for stage in state["stages"]:
        for setting in stage["settings"]:
            for run in setting["runs"]:
                run_dir = Path(out) / "runs" / run["run_hash"]
                current = run_state(Path(out), run_dir)
                rows = read_metrics(run_dir / "metrics.csv")
                status = current["status"]
                if status == "pending" and rows:
                    status = "partial"
                epoch = f"{rows[-1]['epoch'] if rows else 0}/{stage['epochs']}"
                acc = f"{rows[-1]['val_acc']:.4f}" if rows else "—"
                reuse = " (reused)" if run.get("reused") else ""
                lines.append(
                    f"{stage['name'][:16]:16} {setting['label'][:12]:12} {run['seed']:>4} "
                    f"{status:9} {epoch:>7} {acc:>8}  {run['run_hash']}{reuse}"
                )
    if state.get("final"):
        t = state["final"]["test_top1"]
        lines.append(f"final test top-1 {t['mean']:.4f} ± {t['std']:.4f} (n={t['n']})")
    return "\n".join(lines)
