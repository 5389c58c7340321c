"""The study file: its typed model (StudyConfig), loading from TOML or a built-in name, identity.

Each entry of `stages` is validated by the model its `kind` names in the registry of
stage kinds (`hpstudy.study.kinds`), so this module knows no kind by name; the same
model reads a study file, a dict given to `hpstudy.run_study` and study.json.

A study is data. Everything that changes results (base, stages' fields, values,
epochs, overrides, selection, the final split, the budget) is its identity;
names, descriptions, labels, seeds and published numbers are not, so fixing a
typo or adding seeds never locks a study folder.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
import unicodedata
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from hpstudy.config import MAX_SEED
from hpstudy.errors import HpstudyError
from hpstudy.files import errors_message, read_capped
from hpstudy.study.kinds import (
    RESERVED_FIELDS,
    StageKind,
    find_kind,
    format_value,
    kinds,
)
from hpstudy.study.kinds.values import Published as Published  # state.json holds them

MAX_NAME = 100
# the most runs a study file may imply (each stage's settings times the seeds, summed):
# far beyond any study on one machine, and checked before any setting is listed
MAX_STUDY_RUNS = 20_000
STUDY_FILE_CAP = 2**20  # bytes: a study file (the full study's is ~6 kB)
# control, format, surrogate and line/paragraph-separator characters: never in a name
NON_PRINTING = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
Selection = Literal["val_acc", "val_loss"]


def stage_of(raw: Any) -> StageKind:
    """One entry of `stages`, validated by the registered model of its `kind` (default
    "values"); errors are located inside the entry, as the file writes it (`stages.0.field`)."""
    if isinstance(raw, StageKind):
        return raw
    name = raw.get("kind", "values") if isinstance(raw, dict) else "values"
    try:
        kind = find_kind(name)
    except HpstudyError as err:  # a plugin that fails to load
        raise PydanticCustomError("stage_kind", "{why}", {"why": str(err)}) from None
    if kind is None:
        raise PydanticCustomError(
            "stage_kind", "kind must be one of {kinds}", {"kinds": ", ".join(kinds())}
        )
    return kind.model_validate(raw)


# a stage of any registered kind: validated by its kind's model, dumped with its own fields
AnyStage = Annotated[SerializeAsAny[StageKind], PlainValidator(stage_of)]


class Final(BaseModel):
    model_config = ConfigDict(extra="forbid")
    split: Literal["test"] = "test"


class ReportFigures(BaseModel):
    """Numbers of the report's figures that are not a stage's (absent: numbered in order)."""

    model_config = ConfigDict(extra="forbid")
    class_proportions: int | None = Field(None, ge=1)
    lr_schedule: int | None = Field(None, ge=1)  # shown only where a stage varies `schedule`
    mixup_beta: int | None = Field(None, ge=1)  # shown only where a stage varies `mixup_alpha`


class ReportSpec(BaseModel):
    """What the report says of a published study; a new study leaves it empty."""

    model_config = ConfigDict(extra="forbid")
    title: str | None = None
    published_test_top1: float | None = Field(None, ge=0, le=1)
    published_test_loss: str | None = None  # printed as given, beside the measured loss
    notes: list[str] = []  # paragraphs under the title
    figures: ReportFigures = ReportFigures()
    # a published accuracy within this of a new run's (TOST) is "consistent"
    # (top-1 as a fraction: 0.01 is one point; the run-to-run std of a full CIFAR-100 run
    # is about 0.3-1 point, so a smaller margin could rarely be shown)
    equivalence_margin: float = Field(0.01, gt=0, le=1)


class StudyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=MAX_NAME)
    description: str = ""
    seeds: list[int] = Field([0], min_length=1)
    selection: Selection = "val_acc"
    # every run's train/val split drawn from its own seed (split_seed = seed), so the
    # split's variance is part of the seed-to-seed spread
    split_follows_seed: bool = False
    base: dict[str, Any] = {}  # scalars, and model_args: a table of scalars
    stages: list[AnyStage] = Field(min_length=1)
    final: Final = Final()
    report: ReportSpec = ReportSpec()
    _source: str = PrivateAttr("study")

    @property
    def source(self) -> str:
        """Where the study was read from, for error messages: a path or `NAME (built-in)`."""
        return self._source

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        """The default folder is runs/NAME: a name that is a path would write elsewhere."""
        if (
            "/" in v
            or "\\" in v
            or ".." in v
            or v.startswith(".")
            or any(unicodedata.category(c) in NON_PRINTING for c in v)
        ):
            raise ValueError(
                "a study name is a name, not a path: no '/', '\\', '..', leading '.' "
                "or control characters"
            )
        return v

    @field_validator("base")
    @classmethod
    def _base_values(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key, value in v.items():
            if key == "model_args" and isinstance(value, dict):
                for arg, inner in value.items():
                    if not isinstance(inner, bool | int | float | str):
                        raise ValueError(f"model_args.{arg}: must be a number, string or "
                                         f"boolean, not a {type(inner).__name__}")  # fmt: skip
            elif not isinstance(value, bool | int | float | str):
                raise ValueError(f"{key}: must be a number, string or boolean, not a "
                                 f"{type(value).__name__}")  # fmt: skip
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v) or min(v) < 0 or max(v) > MAX_SEED:
            raise ValueError(f"seeds must be distinct integers in 0..{MAX_SEED}")
        return v

    @model_validator(mode="after")
    def _figures(self) -> StudyConfig:
        numbers = [s.figure for s in self.stages if s.figure is not None]
        numbers += [n for n in self.report.figures.model_dump().values() if n is not None]
        if len(numbers) != len(set(numbers)):
            raise ValueError(f"figure numbers repeat: {sorted(numbers)}")
        if self.split_follows_seed and (
            "split_seed" in self.base
            or any("split_seed" in (*s.varied(), *s.overrides) for s in self.stages)
        ):
            raise ValueError("split_follows_seed sets every run's split_seed: the study may not")
        for key in self.base:
            if key in RESERVED_FIELDS:
                raise ValueError(f"base may not set {key!r}: seeds and stages decide it")
        runs = sum(stage.size() for stage in self.stages) * len(self.seeds)
        if runs > MAX_STUDY_RUNS:
            raise ValueError(
                f"the study implies {runs:,} runs (each stage's settings times "
                f"{len(self.seeds)} seeds); a study may imply at most {MAX_STUDY_RUNS:,} "
                "(MAX_STUDY_RUNS)"
            )
        return self

    def identity(self, budget: str) -> dict[str, Any]:
        """What changes results: two studies with equal identities share a folder."""
        # only when on: a study written before the option keeps its hash and its folder
        follows = {"split_follows_seed": True} if self.split_follows_seed else {}
        return {
            **follows,
            "base": self.base,
            "stages": [s.identity() for s in self.stages],
            "selection": self.selection,
            "final": self.final.model_dump(),
            "budget": budget,
        }

    def as_file(self) -> dict[str, Any]:
        """The study as its file holds it (each stage with its own kind's fields), in JSON's
        types: `validate_study` of it is this study again (study.json keeps it)."""
        return self.model_dump(mode="json", by_alias=True)

    def identity_hash(self, budget: str) -> str:
        text = json.dumps(self.identity(budget), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def validate_study(raw: dict[str, Any], where: str) -> StudyConfig:
    """`raw` as a StudyConfig, or one HpstudyError naming `where`."""
    try:
        return StudyConfig.model_validate(raw)
    except ValidationError as err:
        raise HpstudyError(f"{where}: {errors_message(err.errors())}") from None


def describe_stage(stage: StageKind) -> str:
    """What a stage tries, in one phrase."""
    return stage.describe()


def builtin_names() -> list[str]:
    folder = resources.files("hpstudy") / "studies"
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


def study_text(spec: str | Path) -> tuple[str, str]:
    """The source text of a TOML file or a built-in study, and where it came from."""
    path = Path(spec)
    if str(spec) in builtin_names() and not path.exists():
        where = f"{spec} (built-in)"
        raw = (resources.files("hpstudy") / "studies" / f"{spec}.toml").read_bytes()
    elif path.is_file():
        where = str(path)
        raw = read_capped(path, STUDY_FILE_CAP)
    else:
        known = ", ".join(builtin_names())
        raise HpstudyError(f"{spec}: no such study file or built-in study (built-ins: {known})")
    try:
        return raw.decode("utf-8"), where
    except UnicodeDecodeError as err:
        raise HpstudyError(f"{where}: not valid TOML ({err})") from None


def parse_study(text: str, where: str, installed: bool = True) -> StudyConfig:
    """A study file's text as a StudyConfig; every problem is one HpstudyError naming `where`.
    `installed` False: a stage whose kind needs a missing extra is no error (to show it)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise HpstudyError(f"{where}: not valid TOML ({err})") from None
    study = validate_study(raw, where)
    study._source = where
    if installed:
        check_installed(study)
    return study


def missing_extras(study: StudyConfig) -> list[str]:
    """What each stage whose kind needs a missing extra lacks, a phrase each."""
    return [
        f"stage {k + 1} ({stage.name}) is a {stage.kind_name()} stage, which needs {needs}"
        for k, stage in enumerate(study.stages)
        if (needs := stage.missing()) is not None
    ]


def check_installed(study: StudyConfig) -> None:
    """Every stage's kind has what it needs (Optuna for an optuna stage), or one line."""
    if missing := missing_extras(study):
        raise HpstudyError(f"{study.source}: {missing[0]}")


def study_from(study: StudyConfig | dict[str, Any] | str | Path) -> StudyConfig:
    """A StudyConfig from what a caller has: itself, a dict as the study file would hold
    it, a TOML file or a built-in name; every problem is one HpstudyError."""
    if isinstance(study, StudyConfig):
        check_installed(study)
        return study
    if isinstance(study, dict):
        name = study.get("name")
        where = f"study {name!r} (a dict)" if isinstance(name, str) else "study (a dict)"
        config = validate_study(study, where)
        config._source = where
        check_installed(config)
        return config
    if isinstance(study, str | Path):
        return load_study(study)
    raise HpstudyError(
        f"study: a StudyConfig, a dict, a TOML file or a built-in name (got {type(study).__name__})"
    )


def load_study(spec: str | Path, installed: bool = True) -> StudyConfig:
    """A TOML file, or the name of a built-in study; every problem is one HpstudyError.
    `installed` False: loaded even where a stage needs an extra that is missing."""
    return parse_study(*study_text(spec), installed=installed)


def own_model_lines(model: str) -> str:
    """The starter's model line for the user's own builder (its keywords: `model_args`)."""
    return (
        f"model = {json.dumps(model)}   # build(num_classes, width, **model_args) -> nn.Module\n"
        "# model_args = { depth = 4 }   # its keywords (part of every run's identity)\n"
    )


def own_dataset_line(dataset: str) -> str:
    return (
        f"dataset = {json.dumps(dataset)}   # npz:FILE or folder:FOLDER (relative to where "
        "you run), cifar10, cifar100\n"
    )


STARTER = """\
# A study: each stage varies one RunConfig field (see `hpstudy train --help` for every
# field and what it means); every later stage starts from the winners before it.
# Run it with `hpstudy study run FILE`; try `--budget smoke` first (minutes on a CPU).

name = "NAME"
description = "what this study asks, in one line"
seeds = [0]                 # several seeds: tables show mean ± std, winners by the mean
selection = "val_acc"       # or "val_loss": final-epoch validation metric, mean over seeds

[base]                      # fields every run shares; the rest keep their defaults
model = "mobilenet"
width = 1.0
schedule = "constant"

[[stages]]
name = "learning rate"
field = "lr"                # the RunConfig field this stage varies
values = [0.01, 0.05, 0.5]
epochs = 15
# labels = ["low", "mid", "high"]   # how the report names the values
# overrides = { weight_decay = 5e-4 }  # other fields fixed for this stage only

[[stages]]
name = "schedule"
field = "schedule"
values = ["constant", "cosine"]
epochs = 30

# Other kinds of stage search several fields at once (uncomment one to try it):
#
# [[stages]]
# name = "lr x wd"
# kind = "grid"             # every combination: 3 x 2 = 6 settings
# epochs = 15
# grid = { lr = [0.02, 0.05, 0.1], weight_decay = [1e-4, 5e-4] }
#
# [[stages]]
# name = "random"
# kind = "random"           # n draws from the space (seeded by sampler_seed, default 0)
# epochs = 15
# n = 8
# space.lr = { log_uniform = [0.005, 0.5] }
# space.mixup_alpha = { choice = [0.0, 0.2, 0.4] }
#
# [[stages]]
# name = "tpe"
# kind = "optuna"           # needs pip install 'hpstudy[optuna]'
# epochs = 15
# n_trials = 12             # a pruner starts pruning after a few trials: median after 5
# pruner = "median"         # or "asha", or absent: no pruning
# space.lr = { log_uniform = [0.01, 0.3] }
# space.label_smoothing = { uniform = [0.0, 0.2] }
# space.warmup_epochs = { int = [0, 3] }    # both bounds included

[final]
split = "test"              # the last stage's winner is evaluated once on test
"""


def starter_text(
    name: str, source: str | None = None, model: str | None = None, dataset: str | None = None
) -> str:
    """A commented study file named `name` to start from: the starter, or a copy of the
    study `source` (a built-in name or a file) with its name changed; checked to load.
    `model` and `dataset` (the starter only) name the user's own: the file's base says so."""
    if source is None:
        text = STARTER.replace('name = "NAME"', f"name = {json.dumps(name)}", 1)
        base_end = 'schedule = "constant"\n'
        if dataset is not None:
            text = text.replace(base_end, base_end + own_dataset_line(dataset), 1)
        if model is not None:
            text = text.replace('model = "mobilenet"\n', own_model_lines(model), 1)
    elif model is not None or dataset is not None:
        raise HpstudyError("--model and --dataset fill in the starter, not a copy (--from)")
    else:
        text, where = study_text(source)
        parse_study(text, where)  # a broken source is its own error, not the copy's
        # the study's own name: before the first table (stages have names too)
        first_table = re.search(r"^\s*\[", text, re.MULTILINE)
        head_end = first_table.start() if first_table else len(text)
        line = re.compile(r'^name\s*=\s*("[^"\n]*"|\'[^\'\n]*\')', re.MULTILINE)
        found = line.search(text, 0, head_end)
        if found is None:
            raise HpstudyError(f"{where}: no `name = ...` line of its own to rename")
        text = f"{text[: found.start(1)]}{json.dumps(name)}{text[found.end(1) :]}"
        # the source's published numbers are its paper's, not the new study's: kept as comments
        text = PUBLISHED_LINE.sub(r"\1# (published by the study copied) \2", text)
    copy = parse_study(text, f"study {name!r}")
    if copy.name != name:
        raise HpstudyError(f"{source}: its `name = ...` line could not be renamed; copy it by hand")
    if source is not None and has_published(copy):
        raise HpstudyError(f"{source}: its published values span lines; copy it by hand")
    return text


# a line of a study file that states a published number (a stage's or the report's)
PUBLISHED_LINE = re.compile(
    r"^([ \t]*)(published(?:_winner|_test_top1|_test_loss)?\s*[.=].*)$", re.MULTILINE
)


def has_published(study: StudyConfig) -> bool:
    report = study.report
    return (report.published_test_top1 is not None or report.published_test_loss is not None
            or any(getattr(stage, "published", None) or getattr(stage, "published_winner", None)
                   for stage in study.stages))  # fmt: skip


def describe(study: StudyConfig) -> str:
    lines = [
        f"{study.name}: {study.description}",
        f"seeds {study.seeds}, winner by {study.selection}"
        + (", split drawn from each seed" if study.split_follows_seed else ""),
        "base: " + ", ".join(f"{k}={format_value(v)}" for k, v in study.base.items()),
    ]
    for i, stage in enumerate(study.stages, 1):
        extra = f", overrides {stage.overrides}" if stage.overrides else ""
        what = describe_stage(stage)
        lines.append(f"stage {i} {stage.name}: {what}, {stage.epochs} epochs{extra}")
    lines.append(
        f"final: winner of stage {len(study.stages)} evaluated once on {study.final.split}"
    )
    return "\n".join(lines)
