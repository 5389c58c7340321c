"""Stage kinds: the registry and the protocol every kind of stage implements.

A stage's `kind` says how it chooses its settings. Each kind is one pydantic model
(a subclass of `StageKind`, its `kind` field a Literal of its name) that both
validates the study file's table and answers every question the rest of hpstudy
asks of a stage: its identity (what changes results), a phrase describing it, the
fields it varies, the settings it trains (a fixed kind lists them; an adaptive kind
asks them one at a time through a `Search`), the values that stand for them when
validating and costing a study, how progress lines name a setting, and the words
the report opens its section with.

This module is a leaf: it imports no other kind, no plan and no runner. The built-in
kinds (values, grid, random, optuna) are imported on first look-up; a kind of
another package registers itself with `register_kind`, or is found through the
entry-point group `hpstudy.stage_kinds` (the entry point names the kind and points
at its class) the first time a study names it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Protocol, TypeVar, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from hpstudy.config import RunConfig
from hpstudy.errors import HpstudyError

if TYPE_CHECKING:
    from hpstudy.executors import Job
    from hpstudy.study.kinds.values import Published
    from hpstudy.study.plan import Plan
    from hpstudy.study.state import StageState, StudyFolder

ENTRY_POINT_GROUP = "hpstudy.stage_kinds"
BUILT_IN = ("values", "grid", "random", "optuna")
# fields a stage may not vary: the study decides them
RESERVED_FIELDS = frozenset({"seed", "epochs"})


# ---------------------------------------------------------------- what a stage is made of


def scalar(value: Any) -> Any:
    """A RunConfig value in a study file is a number, a string or a boolean: TOML dates,
    times, arrays and tables mean nothing to a run."""
    if not isinstance(value, bool | int | float | str):
        raise ValueError(f"must be a number, string or boolean, not a {type(value).__name__}")
    return value


Scalar = Annotated[Any, AfterValidator(scalar)]
# the most settings one stage may try (a grid's combinations, a random stage's draws, an
# optuna stage's trials): checked before any is listed, so a study file cannot make
# validation run for minutes
MAX_SETTINGS = 10_000


def known_field(name: str) -> str:
    if name not in RunConfig.model_fields or name in RESERVED_FIELDS:
        raise ValueError(f"{name!r} is not a RunConfig field a stage can vary")
    return name


def format_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def label_of(assignment: dict[str, Any]) -> str:
    """A setting named by its fields: `lr=0.05, weight_decay=0.0005`."""
    return ", ".join(f"{name}={format_value(v)}" for name, v in assignment.items())


class Search(Protocol):
    """An adaptive stage's settings, asked one at a time: the session pulls `jobs()` as
    workers free up (the search decides each next run from the results so far), calls
    `tell()` once a round of jobs has ended, and stops when a round starts no job."""

    def headline(self) -> str:
        """What the stage will do, for its opening progress line."""
        ...

    def jobs(self) -> Iterator[Job]:
        """The runs to train now, made lazily; ends when no run is ready to start."""
        ...

    def tell(self) -> None:
        """Learn the outcome of every run that ended."""
        ...

    def stage_state(self) -> StageState:
        """The stage's settings asked so far, with their runs."""
        ...


class StageKind(BaseModel):
    """A stage of a study, of one kind: the fields every kind has (a name, a horizon, fixed
    overrides, a figure number) and the protocol each kind implements.

    A fixed kind implements `settings`; an adaptive kind sets `adaptive` and implements
    `search` and `stand_ins`. Every kind implements `varied`, `identity` and `describe`.
    """

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    epochs: int = Field(ge=1)
    overrides: dict[str, Scalar] = {}
    figure: int | None = Field(None, ge=1)  # the stage figure's number in the report

    # settings asked one at a time by `search` (more seeds do not apply), not listed
    adaptive: ClassVar[bool] = False
    # the settings are one field's values, shown in the study file's order (not best first)
    one_field: ClassVar[bool] = False
    # how the report opens the stage's section: "<words> `lr, weight_decay` for 15 epochs"
    words: ClassVar[str] = "Varies"

    # ------------------------------------------------------------ every kind

    @classmethod
    def kind_name(cls) -> str:
        """The name a study file gives this kind (its `kind` field's Literal)."""
        field = cls.model_fields.get("kind")
        names = get_args(field.annotation) if field is not None else ()
        if len(names) != 1 or not isinstance(names[0], str):
            raise TypeError(f"{cls.__name__}: a stage kind needs a field kind: Literal['name']")
        return names[0]

    def varied(self) -> list[str]:
        """The RunConfig fields this stage varies."""
        raise NotImplementedError

    def varied_text(self) -> str:
        """The varied fields as one name ("lr, weight_decay"), as the state and report say it."""
        return ", ".join(self.varied())

    def identity(self) -> dict[str, Any]:
        """What of the stage changes results (part of the study's hash: never change it)."""
        raise NotImplementedError

    def describe(self) -> str:
        """What the stage tries, in one phrase (`hpstudy study show`)."""
        raise NotImplementedError

    def assignment(self, value: Any) -> dict[str, Any]:
        """The fields a setting's value sets: a several-field setting is already that dict."""
        return dict(value)

    def setting_text(self, value: Any) -> str:
        """A setting as progress and error lines name it: `lr=0.05, weight_decay=0.0005`."""
        return label_of(self.assignment(value))

    def check_overrides(self) -> None:
        """Call from the kind's own validator: overrides may not set what the stage varies."""
        for key in ("seed", "epochs", *self.varied()):
            if key in self.overrides:
                raise ValueError(f"overrides may not set {key!r}")

    def candidates(self) -> list[Any]:
        """Values standing for whatever the stage may pick, to validate every configuration
        the study can produce before anything trains (default: its settings)."""
        return [value for _, value in self.settings()]

    def size(self) -> int:
        """How many settings the stage may train, counted without listing or drawing them
        (a kind overrides it where listing costs: the study's run cap is checked first)."""
        return len(self.stand_ins())

    def stand_ins(self) -> list[Any]:
        """The settings the stage trains, for the cost plan and progress (an adaptive kind:
        as many values as it may try)."""
        return [value for _, value in self.settings()]

    def assumed_winner(self) -> int:
        """Which of `stand_ins` the cost plan assumes wins (its count does not depend on it)."""
        return 0

    def published_label(self) -> str | None:
        """The label of the setting the published study chose (None: it names none)."""
        return None

    def published_of(self, label: str) -> Published | None:
        """The published values of the setting labelled `label`, if any."""
        return None

    def missing(self) -> str | None:
        """What the kind needs that is not installed, with the hint to install it."""
        return None

    def cautions(self, epochs: int) -> list[str]:
        """Settings that are valid but will not do what they seem to at `epochs` epochs per
        run (a pruner that cannot prune), each a line saying what to change."""
        return []

    # ------------------------------------------------------------ a fixed kind

    def settings(self) -> list[tuple[str, Any]]:
        """(label, value) of every setting, in order; a value is what `assignment` takes."""
        raise ValueError(f"stage {self.name!r}: a {self.kind_name()} stage's settings are asked")

    # ------------------------------------------------------------ an adaptive kind

    def search(
        self, folder: StudyFolder, plan: Plan, k: int, winners: dict[str, Any], seen: set[str]
    ) -> Search:
        """Stage `k` of `plan` as a search, starting from the `winners` of earlier stages;
        a run whose hash is in `seen` is reused (the search adds the hashes it meets)."""
        raise TypeError(f"a {self.kind_name()} stage is not adaptive")


# ---------------------------------------------------------------- the registry

REGISTRY: dict[str, type[StageKind]] = {}
K = TypeVar("K", bound=type[StageKind])


def register_kind(cls: K) -> K:
    """Make `cls` the stage kind its `kind` Literal names (usable as a class decorator).
    Registering another class under a name already taken is refused."""
    if not (isinstance(cls, type) and issubclass(cls, StageKind)):
        raise TypeError(f"{cls!r} is not a StageKind")
    name = cls.kind_name()
    held = REGISTRY.get(name)
    # the same class again (its module imported twice) replaces itself; another is refused
    if held is not None and where(held) != where(cls):
        raise HpstudyError(
            f"stage kind {name!r} is already registered ({where(held)}); {where(cls)} "
            "needs another name"
        )
    REGISTRY[name] = cls
    return cls


def where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def load_built_in() -> None:
    for name in BUILT_IN:
        if name not in REGISTRY:
            importlib.import_module(f"hpstudy.study.kinds.{name}")


def find_kind(name: object) -> type[StageKind] | None:
    """The registered kind called `name`, a built-in one, or one an installed package
    offers as an entry point; None where there is none. A plugin that fails to load is
    an HpstudyError naming it."""
    if not isinstance(name, str):
        return None
    if name not in REGISTRY:
        load_built_in()
    if name not in REGISTRY:
        for point in entry_points(group=ENTRY_POINT_GROUP, name=name):
            try:
                found = point.load()
            except Exception as err:  # a broken plugin: its own words, one line
                raise HpstudyError(
                    f"stage kind {name!r} ({point.value}) failed to load: "
                    f"{type(err).__name__}: {err}"
                ) from None
            if isinstance(found, type) and issubclass(found, StageKind) and name not in REGISTRY:
                register_kind(found)
    return REGISTRY.get(name)


def kind_of(name: str) -> type[StageKind]:
    """The kind called `name`, or one HpstudyError listing the known kinds."""
    found = find_kind(name)
    if found is None:
        raise HpstudyError(f"unknown stage kind {name!r}: kind must be one of {', '.join(kinds())}")
    return found


def kinds() -> list[str]:
    """Every kind's name: the built-in ones, those registered, those installed packages offer."""
    load_built_in()
    offered = [p.name for p in entry_points(group=ENTRY_POINT_GROUP)]
    return list(dict.fromkeys([*BUILT_IN, *REGISTRY, *offered]))


__all__ = [
    "BUILT_IN",
    "ENTRY_POINT_GROUP",
    "MAX_SETTINGS",
    "RESERVED_FIELDS",
    "Scalar",
    "Search",
    "StageKind",
    "find_kind",
    "format_value",
    "kind_of",
    "kinds",
    "known_field",
    "label_of",
    "register_kind",
]
