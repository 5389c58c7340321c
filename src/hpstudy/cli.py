"""hpstudy: rerun, trust and extend hyperparameter studies (MobileNet on CIFAR-100 and more).

Every error you can cause ends in one line starting `error:` and a non-zero exit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpstudy.errors import HpstudyError


class Formatter(argparse.HelpFormatter):
    """argparse's help, with `--compile [MODE], --no-compile`: the negative flag takes none."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        text = super()._format_action_invocation(action)
        if isinstance(action, FlagOrChoice):
            text = text.removesuffix(" " + self._format_args(action, action.dest.upper()))
        return text


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--root",
        help="folder holding cifar-100-python/ or cifar-10-batches-py/ "
        "(default: $HPSTUDY_DATA or the per-user cache)",
    )
    p.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip the md5 check (for a dataset built in the official layout by hand)",
    )


def field_help(name: str) -> str:
    """A RunConfig field's one-line help: its description, its choices, its default."""
    from hpstudy.config import RunConfig
    from hpstudy.models import list_models

    field = RunConfig.model_fields[name]
    text = field.description or name.replace("_", " ")
    if name == "model":
        text += f" ({', '.join(list_models())})"
    elif typing.get_origin(field.annotation) is typing.Literal:
        text += f" ({', '.join(map(str, typing.get_args(field.annotation)))})"
    elif choices := literal_choices(typing.get_args(field.annotation)):  # compile: a flag too
        flag = name.replace("_", "-")
        text += f" ({', '.join(choices)}; true is {choices[0]}; --{flag} alone: true, "
        text += f"--no-{flag}: false)"
    default = field.get_default(call_default_factory=True)
    if name == "model_args":
        return f"{text}, as a JSON table: '{{\"depth\": 4}}' (default: none)"
    if name == "image_size":
        return f"{text} (default: the images' own)"
    shown = ("all" if name.startswith("limit") else "auto") if default is None else default
    return f"{text} (default: {shown})"


def json_table(text: str) -> dict[str, Any]:
    """--model-args: a JSON object (its values are checked by RunConfig)."""
    try:
        value = json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a JSON table: {text[:60]!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"not a JSON table: {text[:60]!r}")
    return value


def option_table() -> str:
    """The README's table of `train` options (= study-file keys), from the same descriptions."""
    from hpstudy.config import SOURCE_FIELDS, RunConfig

    rows = ["| option | study-file key | what it sets |", "|---|---|---|"]
    for name in RunConfig.model_fields:
        if name in SOURCE_FIELDS:
            continue
        rows.append(f"| `--{name.replace('_', '-')}` | `{name}` | {field_help(name)} |")
    return "\n".join(rows)


class FlagOrChoice(argparse.Action):
    """BooleanOptionalAction's pair with an optional value: `--compile` (true), `--compile
    reduce-overhead` (one of the choices), `--no-compile` (false)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        flag = option_strings[0]
        super().__init__([flag, "--no-" + flag[2:]], dest, nargs="?", const=True, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if option_string is not None and option_string.startswith("--no-"):
            if values is not True:
                parser.error(f"{option_string} takes no value (got {values!r})")
            values = False
        setattr(namespace, self.dest, values)


def literal_choices(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The values of the Literal among a union's members (none: ())."""
    return next((typing.get_args(a) for a in args if typing.get_origin(a) is typing.Literal), ())


def add_run_config_options(p: argparse.ArgumentParser) -> None:
    """One option per RunConfig field, named after it, typed after it, described by it."""
    from hpstudy.config import SOURCE_FIELDS, RunConfig

    for name, field in RunConfig.model_fields.items():
        if name in SOURCE_FIELDS:  # filled in, never given
            continue
        flag = "--" + name.replace("_", "-")
        kind = field.annotation
        args = typing.get_args(kind)
        help_text = field_help(name)
        if name == "model_args":
            p.add_argument(
                flag, dest=name, type=json_table, default=None, metavar="JSON", help=help_text
            )
        elif bool in args and (choices := literal_choices(args)):
            p.add_argument(
                flag, dest=name, action=FlagOrChoice, choices=choices, default=None,
                metavar="MODE", help=help_text,
            )  # fmt: skip
        elif kind is bool or (isinstance(kind, types.UnionType) and bool in args):
            p.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif typing.get_origin(kind) is typing.Literal:
            p.add_argument(flag, dest=name, choices=args, default=None, help=help_text)
        else:
            base = next((a for a in (args or (kind,)) if a is not type(None)), str)
            p.add_argument(
                flag,
                dest=name,
                type=base,
                default=None,
                metavar=base.__name__.upper(),
                help=help_text,
            )


def add_executor_options(p: argparse.ArgumentParser) -> None:
    """--executor and each executor's own options, declared by the executor (a group each).
    A plugin that cannot be imported is listed, and says why when it is chosen."""
    from hpstudy.executors import OptionGroup, executor_class, executor_names

    names = executor_names()
    groups: dict[str, list[argparse.Action]] = {}
    summaries = []
    for name in names:
        try:
            cls = executor_class(name)
        except HpstudyError:
            summaries.append(f"{name}: (cannot be loaded)")
            continue
        summaries.append(f"{name}: {cls.summary}" if cls.summary else name)
        group = OptionGroup(p.add_argument_group(f"--executor {name}"))
        cls.add_options(group)
        groups[name] = group.actions
    p.add_argument(
        "--executor",
        choices=names,
        default="local",
        help="; ".join(summaries) + " (default: local)",
    )
    p.set_defaults(executor_actions=groups)


def executor_values(args: argparse.Namespace) -> dict[str, Any]:
    """The chosen executor's own options, by dest; another executor's options are refused."""
    chosen: dict[str, Any] = {}
    for name, actions in args.executor_actions.items():
        if name == args.executor:
            chosen = {a.dest: getattr(args, a.dest) for a in actions}
            continue
        given = [a.option_strings[0] for a in actions if getattr(args, a.dest) != a.default]
        if given:
            them = "is an option" if len(given) == 1 else "are options"
            raise HpstudyError(
                f"{', '.join(given)} {them} of --executor {name} (not of {args.executor})"
            )
    return chosen


JSON_HELP = "one JSON object on stdout (with schema_version); lines for people on stderr"


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help=JSON_HELP)


def add_dataset(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset",
        choices=("cifar100", "cifar10"),
        default="cifar100",
        help="which archive (default: cifar100)",
    )


def build_data(p: argparse.ArgumentParser) -> None:
    data_p = p.add_subparsers(dest="data_command", required=True)
    q = data_p.add_parser("download", help="fetch and verify the official archive")
    add_data_options(q)
    add_dataset(q)
    add_json(q)
    q = data_p.add_parser("info", help="split sizes, channel stats, class balance")
    add_data_options(q)
    add_dataset(q)
    q.add_argument("--seed", type=int, default=0, help="split seed (0 is the report's)")
    add_json(q)


def build_train(p: argparse.ArgumentParser) -> None:
    add_run_config_options(p)
    add_data_options(p)
    p.add_argument("--out", required=True, type=Path, help="the run directory")
    add_json(p)


def build_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="the run's folder (holds config.json)")
    p.add_argument(
        "--split",
        choices=("val", "test"),
        default="val",
        help="val, or test (recorded in the run's summary.json) (default: val)",
    )
    p.add_argument("--device", default=None, help="auto, cpu or cuda[:i] (default: auto)")
    add_json(p)
    add_data_options(p)


def build_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="a finished run's folder")
    p.add_argument("--out", type=Path, default=None, help="folder for the files (default: RUN_DIR)")
    p.add_argument(
        "--no-check",
        dest="check",
        action="store_false",
        help="skip comparing ONNX Runtime with PyTorch on validation images (needs no data)",
    )
    p.add_argument(
        "--latency-runs", type=int, default=100, help="batch-1 timings, median kept (default: 100)"
    )
    add_json(p)
    add_data_options(p)


def build_study(p: argparse.ArgumentParser) -> None:
    from hpstudy.study.budget import BUDGETS

    study_p = p.add_subparsers(dest="study_command", required=True)
    q = study_p.add_parser("run", help="run a study (resumes where it stopped)")
    q.add_argument("study", help="a TOML file or a built-in name (seed-report)")
    q.add_argument(
        "--out",
        type=Path,
        default=None,
        help="study folder (default: runs/NAME for the full budget, runs/NAME-BUDGET otherwise)",
    )
    q.add_argument(
        "--budget",
        choices=BUDGETS,
        default="full",
        help="full: as written; short: a tenth of the epochs; quick: fewer epochs and "
        "images, for a CPU (seed-report in under an hour); smoke: 1-2 epochs on 2,048/512 "
        "images, to check the plumbing (default: full)",
    )
    add_executor_options(q)
    q.add_argument("--device", default=None, help="device for every run (default: auto)")
    q.add_argument(
        "--seeds",
        default=None,
        help="override the study's seeds: a count (3 = seeds 0,1,2) or a list (0,1,5); "
        "growing the seeds of a finished study trains only the new runs",
    )
    q.add_argument(
        "--remeasure",
        action="store_true",
        help="time the model again before the cost block, whatever the speed cache holds (a "
        "cached speed is measured again anyway when taken under a load above the core count, "
        "older than 30 days or by another hpstudy or torch); the cache is per user: "
        "$HPSTUDY_CACHE/speed.json, else ~/.cache/hpstudy/speed.json",
    )
    q.add_argument(
        "--no-export",
        dest="export",
        action="store_false",
        help="leave out the final model's export at the end (model.onnx, model.safetensors, "
        "their check and latency timings); `hpstudy export RUN_DIR` makes it later",
    )
    q.add_argument(
        "--until-decided",
        type=int,
        default=None,
        metavar="N",
        help="a stage whose winner is not decided gets one more seed at a time, up to N "
        "seeds, before the next stage starts; never decided before 2 seeds, and each look "
        "spends an equal share of the 5 %% error rate, so growing keeps it at 5 %%",
    )
    q.add_argument(
        "--follow",
        choices=("own", "published"),
        default="own",
        help="own: each stage starts from hpstudy's winners; published: from the published "
        "winners, so every table compares like with like (default folder "
        "runs/NAME[-BUDGET]-published) (default: own)",
    )
    q.add_argument(
        "--split-follows-seed",
        action="store_true",
        default=None,
        help="draw each run's train/val split from its seed (split_follows_seed = true in "
        "the study file; a different study: other runs, another folder)",
    )
    add_json(q)
    add_data_options(q)
    add_study_inspection(study_p)


def build_models(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset",
        default=None,
        help="size each model for this dataset's classes and images (default: CIFAR-100's)",
    )
    add_json(p)


def build_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="a study folder")
    add_json(p)


# command -> (its one-line help, the function that adds its options)
SUBCOMMANDS = {
    "data": ("the CIFAR-100 archive", build_data),
    "train": ("train one run", build_train),
    "evaluate": ("evaluate a finished run", build_evaluate),
    "study": ("run, inspect and show studies", build_study),
    "export": ("write model.safetensors and model.onnx, check them, time them", build_export),
    "report": ("write report.md / report.html for a study folder", build_report),
    "models": ("the models by name (built-in, registered, entry points) and sizes", build_models),
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The `hpstudy` parser. Given the command line, only its command's options are built:
    `train`'s come from RunConfig (pydantic), `study run`'s from the executors, and
    `hpstudy --help` needs neither. Without it, every command's."""
    parser = Parser(prog="hpstudy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    words = [a for a in argv if not a.startswith("-")] if argv is not None else None
    for name, (help_text, build) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if words is None or (words and words[0] == name):
            build(p)
    return parser


def add_study_inspection(study_p: argparse._SubParsersAction) -> None:
    """status, show, list, init: the study commands that train nothing."""
    p = study_p.add_parser("status", help="one line per run, winners marked, time left")
    p.add_argument("dir", type=Path, help="a study folder")
    p.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=WATCH_SECONDS,
        default=None,
        metavar="SECONDS",
        help=f"refresh every SECONDS (default {WATCH_SECONDS:g}) until the study ends "
        "(Ctrl-C stops watching, not the study)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="the study's analysis (every number and verdict of its report) and what is left "
        "to run, as one JSON object",
    )
    p = study_p.add_parser("show", help="print a study's stages, or its file with --toml")
    p.add_argument("study", help="a TOML file or a built-in name (seed-report)")
    p.add_argument(
        "--toml", action="store_true", help="print the study file exactly, to copy and change"
    )
    add_json(p)
    p = study_p.add_parser("list", help="the built-in studies, a line each")
    add_json(p)
    p = study_p.add_parser("init", help="write a commented study file to start from")
    p.add_argument("name", help="the new study's name (also its file's, NAME.toml)")
    p.add_argument(
        "--from",
        dest="source",
        default=None,
        metavar="STUDY",
        help="copy this built-in study or TOML file instead of the starter",
    )
    p.add_argument(
        "--out", type=Path, default=None, help="file to write (default: NAME.toml); never replaced"
    )
    p.add_argument(
        "--model", default=None, help="your own model in the starter: 'module:callable' or a name"
    )
    p.add_argument(
        "--dataset", default=None, help="your own data in the starter: npz:FILE or folder:FOLDER"
    )
    add_json(p)


def print_json(obj: dict[str, Any]) -> None:
    """A `--json` command's one object on stdout, with the output's schema_version."""
    from hpstudy.files import stamped

    sys.stdout.write(json.dumps(stamped(obj, "output")) + "\n")


def cmd_data(args: argparse.Namespace) -> None:
    from hpstudy import data

    if args.data_command == "download":
        folder = data.download(args.root, verify=args.verify, dataset=args.dataset)
        if args.json:
            print_json({"dataset": args.dataset, "folder": str(folder)})
        else:
            print(f"{data.layout_of(args.dataset).title} ready in {folder}")
        return
    info = data.dataset_info(args.root, seed=args.seed, verify=args.verify, dataset=args.dataset)
    if args.json:
        print_json(info)
        return
    for key, value in info.items():
        if key != "class_proportions":  # 100 numbers: --json has them
            print(f"{key:24} {value}")


def cmd_train(args: argparse.Namespace) -> None:
    from hpstudy.config import RunConfig, make_run_config

    values = {k: v for k in RunConfig.model_fields if (v := getattr(args, k, None)) is not None}
    config = make_run_config(values, "train options")  # a bad option fails before torch loads
    from hpstudy.run import train

    summary = train(config, args.out, root=args.root, verify=args.verify)
    if args.json:
        print_json({"run_dir": str(args.out), **summary.model_dump(mode="json")})
    elif summary.final is not None:
        print(
            f"{args.out}: {summary.status} {summary.epochs_done} epochs, "
            f"val acc {summary.final['val_acc']:.4f}, val loss {summary.final['val_loss']:.4f}"
        )
    else:
        print(f"{args.out}: {summary.status} at epoch {summary.epochs_done}")


def record_in_study(run_dir: Path) -> None:
    """A test evaluation of a run in a study folder (STUDY/runs/HASH) goes on the study's
    test ledger before it is shown: the study's report will count it."""
    from hpstudy.study.state import StudyFolder

    folder = StudyFolder(run_dir.resolve().parent.parent)
    if run_dir.resolve().parent.name == "runs" and folder.record_path.is_file():
        folder.record_test_touches(seeds=[])
        print(f"recorded on the study's test ledger: {folder.ledger_path}", file=sys.stderr)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from hpstudy.run import evaluate

    result = evaluate(
        args.run_dir, args.split, root=args.root, verify=args.verify, device=args.device
    )
    if args.split == "test":
        record_in_study(Path(args.run_dir))
    if args.json:
        print_json(result)
        return
    print(
        f"{args.run_dir} on {args.split} ({result['images']} images): loss {result['loss']:.4f} "
        f"top-1 {result['top1']:.4f} top-5 {result['top5']:.4f}"
    )
    for name, acc in result["superclass_top1"].items():
        print(f"  {name:32} {acc:.4f}")


def cmd_export(args: argparse.Namespace) -> None:
    from hpstudy.export import export_run, latency_table, load_text

    result = export_run(
        args.run_dir,
        args.out,
        root=args.root,
        verify=args.verify,
        check=args.check,
        latency_runs=args.latency_runs,
    )
    if args.json:
        print_json(result)
        return
    out = args.out or args.run_dir
    files = ", ".join(f"{name} ({size / 1e6:.2f} MB)" for name, size in result["files"].items())
    print(f"{out}: {files}, export.json ({result['weights']} weights)")
    print(f"parameters {result['parameters']:,}, multiply-adds {result['macs_per_image']:,}/image")
    if (c := result["check"]) is not None:
        print(
            f"check on {c['images']} validation images: max |logit diff| "
            f"{c['max_abs_logit_diff']:.2e} (<= {c['tolerance']['max_abs_logit_diff']:g}), "
            f"top-1 agreement {c['top1_agreement']:.4f}"
        )
    print(f"{'runtime':12} {'batch 1 ms (median, 10-90 %)':>28} {'batch 256 images/s':>19}")
    for name, ms, ips in latency_table(result):
        print(f"{name:12} {ms:>28} {ips:>19}")
    if load := load_text(result):
        print(f"timed under a {load}")


WATCH_SECONDS = 5.0


def cmd_study_show(args: argparse.Namespace) -> None:
    from hpstudy import study

    # a study whose stage needs a missing extra is shown, with what to install to run it
    config = study.load_study(args.study, installed=False)
    plan = study.Plan(config, "full")
    plan.validate()
    missing = study.missing_extras(config)
    if args.json:
        text, _ = study.study_text(args.study)
        shown = {"source": str(config.source), "study": config.model_dump(mode="json"),
                 "missing": missing}  # fmt: skip
        print_json({**shown, "toml": text} if args.toml else shown)
    elif args.toml:
        sys.stdout.write(study.study_text(args.study)[0])
    else:
        print(study.describe(config))
    if missing and not args.json:
        print(f"note: needs an extra to run: {'; '.join(missing)}")
    if not args.json:
        for caution in plan.cautions():
            print(f"warning: {caution}")


def cmd_study_list(args: argparse.Namespace) -> None:
    from hpstudy import study

    names = study.builtin_names()
    configs = {name: study.load_study(name, installed=False) for name in names}
    missing = {name: study.missing_extras(c) for name, c in configs.items()}
    if args.json:
        print_json({"studies": [{"name": n, "description": c.description, "missing": missing[n]}
                                for n, c in configs.items()]})  # fmt: skip
        return
    width = max(map(len, names), default=0)
    for name, config in configs.items():
        note = f"  (needs an extra: {'; '.join(missing[name])})" if missing[name] else ""
        print(f"{name:{width}}  {config.description}{note}")


def cmd_study_init(args: argparse.Namespace) -> None:
    from hpstudy import study

    text = study.starter_text(args.name, args.source, args.model, args.dataset)
    out = args.out if args.out is not None else Path(f"{args.name}.toml")
    try:
        with open(out, "x", encoding="utf-8") as f:  # "x": never over an existing file
            f.write(text)
    except FileExistsError:
        raise HpstudyError(
            f"{out}: exists; init never overwrites a file (use another --out)"
        ) from None
    if args.json:
        print_json({"name": args.name, "file": str(out)})
        return
    print(f"{out}: study {args.name!r} written; edit it, then try: hpstudy study run {out} "
          "--budget smoke")


def progress_left(folder_path: Path) -> dict[str, Any] | None:
    """`study status --json`'s progress: runs and epochs done of the plan, and the time
    left at the measured speed; None for a finished study, or one it cannot plan."""
    from hpstudy.study import StudyFolder
    from hpstudy.study.status import folder_progress

    folder = StudyFolder(folder_path)
    state = folder.read_state()
    try:
        progress = folder_progress(folder, state) if state.status != "finished" else None
    except HpstudyError:  # what is left cannot be planned (no study.json): the rest still is
        return None
    if progress is None:
        return None
    return {
        "runs_done": progress.runs_done, "runs": progress.runs,
        "epochs_done": progress.epochs_done, "epochs": progress.epochs,
        "seconds_left": progress.seconds_left,
    }  # fmt: skip


def cmd_study_status(args: argparse.Namespace) -> None:
    from hpstudy import study

    if args.watch is not None and args.json:
        raise HpstudyError("--watch and --json: choose one (--json prints the status once)")
    if args.json:
        # through JSON text: pydantic writes a non-finite number as null, as JSON has none
        printed = json.loads(study.analyse(args.dir).model_dump_json())
        print_json({**printed, "progress": progress_left(args.dir)})
        return
    if args.watch is None:
        print(study.status_text(args.dir))
        return
    if not (args.watch > 0 and args.watch < 86_400):
        raise HpstudyError(f"--watch: seconds between 0 and 86400 (got {args.watch:g})")
    with contextlib.suppress(KeyboardInterrupt):  # the study goes on; only watching stops
        study.watch_status(args.dir, args.watch)


def cmd_study(args: argparse.Namespace) -> None:
    from hpstudy import study

    inspect = {
        "show": cmd_study_show,
        "status": cmd_study_status,
        "list": cmd_study_list,
        "init": cmd_study_init,
    }
    if args.study_command in inspect:
        inspect[args.study_command](args)
        return
    # a study file that does not load fails before the runner (and torch) is imported
    from hpstudy.study.spec import load_study

    config = load_study(args.study)
    from hpstudy.executors import DataOptions, make_executor

    values = executor_values(args)  # another executor's options are refused here
    executor = make_executor(
        args.executor, DataOptions(args.root, args.verify), device=args.device, **values
    )
    try:
        state = study.run_study(
            args.study,
            out=args.out,
            budget=args.budget,
            executor=executor,
            root=args.root,
            verify=args.verify,
            seeds=study.parse_seeds(args.seeds) if args.seeds is not None else None,
            until_decided=args.until_decided,
            follow=args.follow,
            split_follows_seed=args.split_follows_seed,
            remeasure=args.remeasure,
            export=args.export,
        )
    finally:  # an executor given to run_study is the giver's to close (a local Ray)
        executor.close()
    if args.json:
        folder = args.out or study.default_out(config.name, args.budget, args.follow)
        report = {"report": str(Path(folder) / "report.md")}
        print_json({"folder": str(folder), **report, "state": state.model_dump(mode="json")})


def cmd_report(args: argparse.Namespace) -> None:
    from hpstudy.report import write_report

    path = write_report(args.dir)
    if args.json:
        print_json({"report": str(path), "html": str(path.with_suffix(".html"))})
        return
    print(f"report written: {path}")


def cmd_models(args: argparse.Namespace) -> None:
    """Each model name, where it comes from, and its parameters at width 1.0 for the
    dataset's classes and images (a model that cannot be built says why)."""
    from hpstudy.config import make_run_config
    from hpstudy.models import count_parameters, create_model, list_models
    from hpstudy.models.registry import BUILTIN
    from hpstudy.run import data_shape

    dataset = args.dataset or "cifar100"
    classes, image_shape = data_shape(make_run_config({"dataset": dataset}, "--dataset"))
    rows = []
    for name in list_models():
        source = "built-in" if name in BUILTIN else "registered or entry point"
        try:
            parameters, error = count_parameters(create_model(name, classes, 1.0)), None
        except HpstudyError as err:
            parameters, error = None, one_line(str(err))
        rows.append({"name": name, "source": source, "parameters": parameters, "error": error})
    if args.json:
        print_json({"dataset": dataset, "num_classes": classes,
                    "image_shape": list(image_shape), "models": rows})  # fmt: skip
        return
    print(f"models at width 1.0 for {dataset} ({classes} classes, images "
          f"{'x'.join(map(str, image_shape))}); your own: --model module:callable")  # fmt: skip
    width = max((len(r["name"]) for r in rows), default=0)
    for r in rows:
        size = f"{r['parameters']:>12,} parameters" if r["error"] is None else r["error"]
        print(f"  {r['name']:{width}}  {size}  ({r['source']})")


COMMANDS = {
    "models": cmd_models,
    "data": cmd_data,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "export": cmd_export,
    "study": cmd_study,
    "report": cmd_report,
}


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    from hpstudy.progress import cli_logging

    try:
        with cli_logging():
            COMMANDS[args.command](args)
    except HpstudyError as err:
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away (`| head`): nothing is left to say
        # Python's advice: point stdout at devnull so the flush at exit cannot fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as err:  # the environment: a full disk, a folder we may not write
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: {where}{one_line(err.strerror or str(err))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "interrupted: finished epochs are kept; rerun the same command to resume",
            file=sys.stderr,
        )
        return 130
    except Exception as err:  # a bug of ours: still one line, with the way to the details
        if os.environ.get("HPSTUDY_DEBUG"):
            raise
        print(
            f"error: internal error {type(err).__name__}: {one_line(str(err))[:300]} "
            "(a bug in hpstudy: please report it; HPSTUDY_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 70
    return 0
