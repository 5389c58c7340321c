"""The study file: its typed model (StudyConfig), loading from TOML or a built-in name, identity.

A study is data. Everything that changes results (base, stages' fields, values,
epochs, overrides, selection, the final split, the budget) is its identity;
names, descriptions, labels, seeds and published numbers are not, so fixing a
typo or adding seeds never locks a study folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
import unicodedata
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from hpstudy.config import MAX_SEED, RunConfig
from hpstudy.errors import HpstudyError
from hpstudy.files import errors_message

# fields a stage may not vary: the study decides them
RESERVED_FIELDS = frozenset({"seed", "epochs"})
MAX_NAME = 100
MAX_DRAWS = 10_000  # settings of one random or optuna stage
# control, format, surrogate and line/paragraph-separator characters: never in a name
NON_PRINTING = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
Selection = Literal["val_acc", "val_loss"]


def scalar(value: Any) -> Any:
    """A RunConfig value in a study file is a number, a string or a boolean: TOML dates,
    times, arrays and tables mean nothing to a run."""
    if not isinstance(value, bool | int | float | str):
        raise ValueError(f"must be a number, string or boolean, not a {type(value).__name__}")
    return value


Scalar = Annotated[Any, AfterValidator(scalar)]


class Published(BaseModel):
    """A setting's values as the published study printed them."""

    model_config = ConfigDict(extra="forbid")
    train_loss: float | None = None
    train_acc: float | None = None
    val_loss: float | None = None
    val_acc: float | None = None


class StageCommon(BaseModel):
    """What every kind of stage has: a name, a horizon, fixed overrides, a figure number."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    epochs: int = Field(ge=1)
    overrides: dict[str, Scalar] = {}
    figure: int | None = Field(None, ge=1)  # the stage figure's number in the report

    def varied(self) -> list[str]:
        """The RunConfig fields this stage varies."""
        raise NotImplementedError

    def check_overrides(self) -> None:
        for key in ("seed", "epochs", *self.varied()):
            if key in self.overrides:
                raise ValueError(f"overrides may not set {key!r}")

    def assignment(self, value: Any) -> dict[str, Any]:
        """The fields a setting's value sets: a search stage's value is already that dict."""
        return dict(value)


class Stage(StageCommon):
    """kind "values" (the default): one field, a list of values."""

    kind: Literal["values"] = "values"
    field: str
    values: list[Scalar] = Field(min_length=1)
    labels: list[str] | None = None
    published: dict[str, Published] = {}
    published_winner: str | None = None

    @field_validator("field")
    @classmethod
    def _known_field(cls, v: str) -> str:
        return known_field(v)

    @model_validator(mode="after")
    def _consistent(self) -> Stage:
        if self.labels is not None and len(self.labels) != len(self.values):
            raise ValueError(f"{len(self.labels)} labels for {len(self.values)} values")
        if len({json.dumps(v, sort_keys=True) for v in self.values}) != len(self.values):
            raise ValueError("values repeat")
        if len(set(self.settings())) != len(self.values):
            raise ValueError("two values have the same label")
        unknown = sorted(set(self.published) - set(self.settings()))
        if unknown:
            raise ValueError(f"published values for unknown settings {unknown}")
        if self.published_winner is not None and self.published_winner not in self.settings():
            raise ValueError(f"published_winner {self.published_winner!r} is not a setting")
        self.check_overrides()
        return self

    def varied(self) -> list[str]:
        return [self.field]

    def assignment(self, value: Any) -> dict[str, Any]:
        return {self.field: value}

    def label(self, i: int) -> str:
        return self.labels[i] if self.labels else format_value(self.values[i])

    def settings(self) -> list[str]:
        return [self.label(i) for i in range(len(self.values))]

    def identity(self) -> dict[str, Any]:
        # exactly the identity of a stage before stage kinds existed: old folders stay valid
        return {
            "field": self.field,
            "values": self.values,
            "epochs": self.epochs,
            "overrides": self.overrides,
        }


def known_field(name: str) -> str:
    if name not in RunConfig.model_fields or name in RESERVED_FIELDS:
        raise ValueError(f"{name!r} is not a RunConfig field a stage can vary")
    return name


def number(v: Any) -> float:
    """A bound of a distribution: a finite int or float as TOML wrote it, never a string."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"bounds must be finite numbers (got {v!r})")
    return v


Bound = Annotated[Any, AfterValidator(number)]


class Distribution(BaseModel):
    """One field's distribution in a search space: exactly one of choice, uniform,
    log_uniform (bounds > 0) or int (integer bounds, both included)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    choice: list[Scalar] | None = Field(None, min_length=1)
    uniform: tuple[Bound, Bound] | None = None
    log_uniform: tuple[Bound, Bound] | None = None
    int_: tuple[Bound, Bound] | None = Field(None, alias="int")

    @model_validator(mode="after")
    def _one_kind(self) -> Distribution:
        given = [k for k in DISTRIBUTIONS if getattr(self, attr(k)) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(DISTRIBUTIONS)}")
        if self.choice is not None:
            if len({json.dumps(v) for v in self.choice}) != len(self.choice):
                raise ValueError("choices repeat")
            return self
        lo, hi = getattr(self, attr(given[0]))
        if self.int_ is not None:
            if not (isinstance(lo, int) and isinstance(hi, int)):
                raise ValueError(f"int bounds must be integers (got {lo!r}, {hi!r})")
            if lo > hi:
                raise ValueError(f"int bounds reversed ({lo} > {hi})")
        elif not lo < hi:
            raise ValueError(f"{given[0]} bounds must be increasing (got {lo!r}, {hi!r})")
        if self.log_uniform is not None and lo <= 0:
            raise ValueError(f"log_uniform bounds must be > 0 (got {lo!r})")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in DISTRIBUTIONS if getattr(self, attr(k)) is not None)

    @property
    def bounds(self) -> tuple[Any, Any]:
        return getattr(self, attr(self.kind))

    def extremes(self) -> list[Any]:
        """The values a draw can reach at the edges: every choice, or both bounds."""
        return list(self.choice) if self.choice is not None else list(self.bounds)

    def spec(self) -> dict[str, Any]:
        """As the study file writes it: {"log_uniform": [0.01, 0.3]}."""
        value = self.choice if self.choice is not None else list(self.bounds)
        return {self.kind: value}

    def describe(self) -> str:
        if self.choice is not None:
            return "choice(" + ", ".join(format_value(v) for v in self.choice) + ")"
        lo, hi = self.bounds
        return f"{self.kind}({format_value(lo)}, {format_value(hi)})"


DISTRIBUTIONS = ("choice", "uniform", "log_uniform", "int")


def attr(kind: str) -> str:
    return "int_" if kind == "int" else kind


class GridStage(StageCommon):
    """kind "grid": several fields varied jointly, every combination of their values."""

    kind: Literal["grid"]
    grid: dict[str, list[Scalar]] = Field(min_length=1)

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for name, values in v.items():
            known_field(name)
            if not values:
                raise ValueError(f"{name}: no values")
            if len({json.dumps(x) for x in values}) != len(values):
                raise ValueError(f"{name}: values repeat")
        return v

    @model_validator(mode="after")
    def _overrides(self) -> GridStage:
        self.check_overrides()
        return self

    def varied(self) -> list[str]:
        return list(self.grid)

    @property
    def field(self) -> str:
        """The varied fields as one name ("lr, weight_decay"), as the state and report say it."""
        return ", ".join(self.varied())

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "grid": self.grid, "epochs": self.epochs,
                "overrides": self.overrides}  # fmt: skip


class SearchStage(StageCommon):
    """What random and optuna stages share: a space of distributions and a sampler seed."""

    space: dict[str, Distribution] = Field(min_length=1)
    sampler_seed: int = Field(0, ge=0, le=MAX_SEED)

    @field_validator("space")
    @classmethod
    def _space(cls, v: dict[str, Distribution]) -> dict[str, Distribution]:
        for name in v:
            known_field(name)
        return v

    @model_validator(mode="after")
    def _overrides(self) -> SearchStage:
        self.check_overrides()
        return self

    def varied(self) -> list[str]:
        return list(self.space)

    @property
    def field(self) -> str:
        """The varied fields as one name ("lr, weight_decay"), as the state and report say it."""
        return ", ".join(self.varied())

    def space_identity(self) -> dict[str, Any]:
        return {name: d.spec() for name, d in self.space.items()}


class RandomStage(SearchStage):
    """kind "random": `n` settings drawn from the space with the sampler seed."""

    kind: Literal["random"]
    n: int = Field(ge=1, le=MAX_DRAWS)

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "space": self.space_identity(), "n": self.n,
                "sampler_seed": self.sampler_seed, "epochs": self.epochs,
                "overrides": self.overrides}  # fmt: skip


class OptunaStage(SearchStage):
    """kind "optuna": `n_trials` of Optuna's seeded TPE sampler, optionally pruned."""

    kind: Literal["optuna"]
    n_trials: int = Field(ge=1, le=MAX_DRAWS)
    pruner: Literal["median", "asha"] | None = None

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "space": self.space_identity(), "n_trials": self.n_trials,
                "pruner": self.pruner, "sampler_seed": self.sampler_seed,
                "epochs": self.epochs, "overrides": self.overrides}  # fmt: skip


def stage_kind(raw: Any) -> str:
    kind = raw.get("kind", "values") if isinstance(raw, dict) else getattr(raw, "kind", "values")
    return kind if kind in STAGE_KINDS else "unknown"


STAGE_KINDS = ("values", "grid", "random", "optuna")
AnyStage = Annotated[
    Annotated[Stage, Tag("values")]
    | Annotated[GridStage, Tag("grid")]
    | Annotated[RandomStage, Tag("random")]
    | Annotated[OptunaStage, Tag("optuna")],
    Discriminator(
        stage_kind,
        custom_error_type="stage_kind",
        custom_error_message=f"kind must be one of {', '.join(STAGE_KINDS)}",
    ),
]


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


class StudyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=MAX_NAME)
    description: str = ""
    seeds: list[int] = Field([0], min_length=1)
    selection: Selection = "val_acc"
    # every run's train/val split drawn from its own seed (split_seed = seed), so the
    # split's variance is part of the seed-to-seed spread
    split_follows_seed: bool = False
    base: dict[str, Scalar] = {}
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
            or any("split_seed" in (s.field, *s.overrides) for s in self.stages)
        ):
            raise ValueError("split_follows_seed sets every run's split_seed: the study may not")
        for key in self.base:
            if key in RESERVED_FIELDS:
                raise ValueError(f"base may not set {key!r}: seeds and stages decide it")
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

    def identity_hash(self, budget: str) -> str:
        text = json.dumps(self.identity(budget), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def validate_study(raw: dict[str, Any], where: str) -> StudyConfig:
    """`raw` as a StudyConfig, or one HpstudyError; a stage's errors are located as the file
    writes them (`stages.0.field`), without the stage kind pydantic adds to the location."""
    try:
        return StudyConfig.model_validate(raw)
    except ValidationError as err:
        errors = [
            {**e, "loc": e["loc"][:2] + e["loc"][3:]}
            if len(e["loc"]) > 2 and e["loc"][0] == "stages" and e["loc"][2] in STAGE_KINDS
            else e
            for e in err.errors()
        ]
        raise HpstudyError(f"{where}: {errors_message(errors)}") from None


def describe_stage(stage: AnyStage) -> str:
    """What a stage tries, in one phrase."""
    if isinstance(stage, Stage):
        return f"{stage.field} in [{', '.join(stage.settings())}]"
    if isinstance(stage, GridStage):
        sizes = " x ".join(str(len(v)) for v in stage.grid.values())
        axes = ", ".join(
            f"{name} in [{', '.join(format_value(v) for v in values)}]"
            for name, values in stage.grid.items()
        )
        return f"grid of {sizes} = {math.prod(len(v) for v in stage.grid.values())}: {axes}"
    space = ", ".join(f"{name} ~ {d.describe()}" for name, d in stage.space.items())
    if isinstance(stage, RandomStage):
        return f"random search, {stage.n} draws (seed {stage.sampler_seed}): {space}"
    pruner = {"median": "median pruner", "asha": "ASHA pruner", None: "no pruner"}[stage.pruner]
    return (
        f"Optuna TPE, {stage.n_trials} trials (seed {stage.sampler_seed}, {pruner}): {space}"
    )


def format_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


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
        try:
            raw = path.read_bytes()
        except OSError as err:
            raise HpstudyError(f"{path}: cannot read ({err.strerror or err})") from None
    else:
        known = ", ".join(builtin_names())
        raise HpstudyError(f"{spec}: no such study file or built-in study (built-ins: {known})")
    try:
        return raw.decode("utf-8"), where
    except UnicodeDecodeError as err:
        raise HpstudyError(f"{where}: not valid TOML ({err})") from None


def parse_study(text: str, where: str) -> StudyConfig:
    """A study file's text as a StudyConfig; every problem is one HpstudyError naming `where`."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise HpstudyError(f"{where}: not valid TOML ({err})") from None
    study = validate_study(raw, where)
    study._source = where
    for k, stage in enumerate(study.stages):
        if stage.kind == "optuna":
            try:
                import optuna  # noqa: F401
            except ImportError:
                raise HpstudyError(
                    f"{where}: stage {k + 1} ({stage.name}) is an optuna stage, which needs "
                    "Optuna: pip install 'hpstudy[optuna]'"
                ) from None
    return study


def load_study(spec: str | Path) -> StudyConfig:
    """A TOML file, or the name of a built-in study; every problem is one HpstudyError."""
    return parse_study(*study_text(spec))


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

[final]
split = "test"              # the last stage's winner is evaluated once on test
"""


def starter_text(name: str, source: str | None = None) -> str:
    """A commented study file named `name` to start from: the starter, or a copy of the
    study `source` (a built-in name or a file) with its name changed; checked to load."""
    if source is None:
        text = STARTER.replace('name = "NAME"', f"name = {json.dumps(name)}", 1)
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
    if parse_study(text, f"study {name!r}").name != name:
        raise HpstudyError(f"{source}: its `name = ...` line could not be renamed; copy it by hand")
    return text


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
