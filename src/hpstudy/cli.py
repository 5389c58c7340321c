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


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line too."""

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
    default = field.default
    shown = ("all" if name.startswith("limit") else "auto") if default is None else default
    return f"{text} (default: {shown})"


def option_table() -> str:
    """The README's table of `train` options (= study-file keys), from the same descriptions."""
    from hpstudy.config import RunConfig

    rows = ["| option | study-file key | what it sets |", "|---|---|---|"]
    for name in RunConfig.model_fields:
        rows.append(f"| `--{name.replace('_', '-')}` | `{name}` | {field_help(name)} |")
    return "\n".join(rows)


def add_run_config_options(p: argparse.ArgumentParser) -> None:
    """One option per RunConfig field, named after it, typed after it, described by it."""
    from hpstudy.config import RunConfig

    for name, field in RunConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        kind = field.annotation
        args = typing.get_args(kind)
        help_text = field_help(name)
        if kind is bool or (isinstance(kind, types.UnionType) and bool in args):
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


def add_slurm_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--slurm-cluster",
        choices=("slurm", "local", "debug"),
        default="slurm",
        help="slurm executor: submitit's cluster; local runs the jobs as processes here, "
        "debug in this process (default: slurm)",
    )
    p.add_argument(
        "--slurm-partition", default=None, metavar="NAME", help="slurm executor: the partition"
    )
    p.add_argument(
        "--slurm-gpus-per-job",
        type=int,
        default=None,
        metavar="N",
        help="slurm executor: GPUs per run (default: 1; local/debug: 1 if a GPU is visible)",
    )
    p.add_argument(
        "--slurm-cpus-per-job",
        type=int,
        default=None,
        metavar="N",
        help="slurm executor: CPUs per run (default: the cluster's)",
    )
    p.add_argument(
        "--slurm-time",
        type=int,
        default=None,
        metavar="MINUTES",
        help="slurm executor: time limit per job; a job that hits it is requeued and "
        "resumes from its checkpoint (default: 1440)",
    )
    p.add_argument(
        "--slurm-max-parallel",
        type=int,
        default=None,
        metavar="N",
        help="slurm executor: jobs queued or running at once (default: 32)",
    )


def slurm_options(args: argparse.Namespace) -> Any:
    """SlurmOptions from the --slurm-* flags; flags without --executor slurm are refused."""
    from hpstudy.executors import SlurmOptions

    given = {
        "partition": args.slurm_partition,
        "gpus_per_job": args.slurm_gpus_per_job,
        "cpus_per_job": args.slurm_cpus_per_job,
        "time_minutes": args.slurm_time,
        "max_parallel": args.slurm_max_parallel,
    }
    given = {k: v for k, v in given.items() if v is not None}
    if args.executor != "slurm":
        if given or args.slurm_cluster != "slurm":
            raise HpstudyError("--slurm-* options need --executor slurm")
        return None
    return SlurmOptions(cluster=args.slurm_cluster, **given)


def build_parser() -> argparse.ArgumentParser:
    from hpstudy.study.budget import BUDGETS

    parser = Parser(prog="hpstudy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    data_p = sub.add_parser("data", help="the CIFAR-100 archive").add_subparsers(
        dest="data_command", required=True
    )
    p = data_p.add_parser("download", help="fetch and verify the official archive")
    add_data_options(p)
    p.add_argument(
        "--dataset",
        choices=("cifar100", "cifar10"),
        default="cifar100",
        help="which archive (default: cifar100)",
    )
    p = data_p.add_parser("info", help="split sizes, channel stats, class balance")
    add_data_options(p)
    p.add_argument(
        "--dataset",
        choices=("cifar100", "cifar10"),
        default="cifar100",
        help="which archive (default: cifar100)",
    )
    p.add_argument("--seed", type=int, default=0, help="split seed (0 is the report's)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")

    p = sub.add_parser("train", help="train one run")
    add_run_config_options(p)
    add_data_options(p)
    p.add_argument("--out", required=True, type=Path, help="the run directory")

    p = sub.add_parser("evaluate", help="evaluate a finished run")
    p.add_argument("run_dir", type=Path, help="the run's folder (holds config.json)")
    p.add_argument(
        "--split",
        choices=("val", "test"),
        default="val",
        help="val, or test (recorded in the run's summary.json) (default: val)",
    )
    p.add_argument("--device", default=None, help="auto, cpu or cuda[:i] (default: auto)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    add_data_options(p)

    study_p = sub.add_parser("study", help="run, inspect and show studies").add_subparsers(
        dest="study_command", required=True
    )
    p = sub.add_parser(
        "export", help="write model.safetensors and model.onnx, check them, time them"
    )
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
    add_data_options(p)

    p = study_p.add_parser("run", help="run a study (resumes where it stopped)")
    p.add_argument("study", help="a TOML file or a built-in name (seed-report)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="study folder (default: runs/NAME for the full budget, runs/NAME-BUDGET otherwise)",
    )
    p.add_argument(
        "--budget",
        choices=BUDGETS,
        default="full",
        help="full: as written; short: a tenth of the epochs; quick: fewer epochs and "
        "images, for a CPU (seed-report in under an hour); smoke: 1-2 epochs on 2,048/512 "
        "images, to check the plumbing (default: full)",
    )
    p.add_argument(
        "--executor",
        choices=("local", "ray", "slurm"),
        default="local",
        help="local: this machine; ray: a Ray cluster (pip install 'hpstudy[ray]'); slurm: "
        "one SLURM job per run (pip install 'hpstudy[slurm]')",
    )
    p.add_argument(
        "--devices",
        default=None,
        help="local executor: comma-separated GPU indices, one worker each; repeat an index "
        "(0,0) to share a GPU; without a GPU, that many CPU workers",
    )
    p.add_argument(
        "--runs-per-device",
        type=int,
        default=None,
        metavar="N",
        help="local executor: N worker processes per device (default: the auto table's, 1)",
    )
    add_slurm_options(p)
    p.add_argument("--address", default=None, help="ray executor: cluster address (auto joins)")
    p.add_argument("--device", default=None, help="device for every run (default: auto)")
    p.add_argument(
        "--seeds",
        default=None,
        help="override the study's seeds: a count (3 = seeds 0,1,2) or a list (0,1,5); "
        "growing the seeds of a finished study trains only the new runs",
    )
    p.add_argument(
        "--until-decided",
        type=int,
        default=None,
        metavar="N",
        help="a stage whose winner is not decided (an interval contains 0) gets one more "
        "seed at a time, up to N seeds, before the next stage starts",
    )
    p.add_argument(
        "--follow",
        choices=("own", "published"),
        default="own",
        help="own: each stage starts from hpstudy's winners; published: from the published "
        "winners, so every table compares like with like (default folder "
        "runs/NAME[-BUDGET]-published) (default: own)",
    )
    p.add_argument(
        "--split-follows-seed",
        action="store_true",
        default=None,
        help="draw each run's train/val split from its seed (split_follows_seed = true in "
        "the study file; a different study: other runs, another folder)",
    )
    add_data_options(p)
    add_study_inspection(study_p)

    p = sub.add_parser("report", help="write report.md / report.html for a study folder")
    p.add_argument("dir", type=Path, help="a study folder")
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
        help="the study's analysis (every number and verdict of its report) as one JSON object",
    )
    p = study_p.add_parser("show", help="print a study's stages, or its file with --toml")
    p.add_argument("study", help="a TOML file or a built-in name (seed-report)")
    p.add_argument(
        "--toml", action="store_true", help="print the study file exactly, to copy and change"
    )
    study_p.add_parser("list", help="the built-in studies, a line each")
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


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")


def cmd_data(args: argparse.Namespace) -> None:
    from hpstudy import data

    if args.data_command == "download":
        folder = data.download(args.root, verify=args.verify, dataset=args.dataset)
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

    values = {k: getattr(args, k) for k in RunConfig.model_fields if getattr(args, k) is not None}
    config = make_run_config(values, "train options")  # a bad option fails before torch loads
    from hpstudy.run import train

    summary = train(config, args.out, root=args.root, verify=args.verify)
    if summary.final is not None:
        print(
            f"{args.out}: {summary.status} {summary.epochs_done} epochs, "
            f"val acc {summary.final['val_acc']:.4f}, val loss {summary.final['val_loss']:.4f}"
        )
    else:
        print(f"{args.out}: {summary.status} at epoch {summary.epochs_done}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from hpstudy.run import evaluate

    result = evaluate(
        args.run_dir, args.split, root=args.root, verify=args.verify, device=args.device
    )
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
    from hpstudy.export import export_run, latency_table

    result = export_run(
        args.run_dir,
        args.out,
        root=args.root,
        verify=args.verify,
        check=args.check,
        latency_runs=args.latency_runs,
    )
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
    print(f"{'runtime':12} {'batch 1 ms (median)':>20} {'batch 256 images/s':>19}")
    for name, ms, ips in latency_table(result):
        print(f"{name:12} {ms:>20} {ips:>19}")


WATCH_SECONDS = 5.0


def cmd_study_show(args: argparse.Namespace) -> None:
    from hpstudy import study

    config = study.load_study(args.study)
    study.Plan(config, "full").validate()
    if args.toml:
        sys.stdout.write(study.study_text(args.study)[0])
    else:
        print(study.describe(config))


def cmd_study_list(args: argparse.Namespace) -> None:
    from hpstudy import study

    names = study.builtin_names()
    width = max(map(len, names), default=0)
    for name in names:
        print(f"{name:{width}}  {study.load_study(name).description}")


def cmd_study_init(args: argparse.Namespace) -> None:
    from hpstudy import study

    text = study.starter_text(args.name, args.source)
    out = args.out if args.out is not None else Path(f"{args.name}.toml")
    try:
        with open(out, "x", encoding="utf-8") as f:  # "x": never over an existing file
            f.write(text)
    except FileExistsError:
        raise HpstudyError(
            f"{out}: exists; init never overwrites a file (use another --out)"
        ) from None
    print(f"{out}: study {args.name!r} written; edit it, then try: hpstudy study run {out} "
          "--budget smoke")


def cmd_study_status(args: argparse.Namespace) -> None:
    from hpstudy import study

    if args.json:
        if args.watch is not None:
            raise HpstudyError("--json prints the analysis once; it does not go with --watch")
        # through JSON text: pydantic writes a non-finite number as null, as JSON has none
        print_json(json.loads(study.analyse(args.dir).model_dump_json()))
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
    else:
        # a study file that does not load fails before the runner (and torch) is imported
        from hpstudy.study.spec import load_study

        load_study(args.study)
        if args.executor != "local" and (args.devices or args.runs_per_device is not None):
            raise HpstudyError("--devices and --runs-per-device are for --executor local")
        devices = None
        if args.devices:
            try:
                devices = [int(d) for d in args.devices.split(",")]
            except ValueError:  # int() also refuses "" (0,,1) and huge text
                raise HpstudyError(
                    f"--devices: expected GPU indices like 0,1 (got {args.devices!r})"
                ) from None
        study.run_study(
            args.study,
            out=args.out,
            budget=args.budget,
            executor=args.executor,
            root=args.root,
            verify=args.verify,
            devices=devices,
            address=args.address,
            device=args.device,
            runs_per_device=args.runs_per_device,
            slurm=slurm_options(args),
            seeds=study.parse_seeds(args.seeds) if args.seeds is not None else None,
            until_decided=args.until_decided,
            follow=args.follow,
            split_follows_seed=args.split_follows_seed,
        )


def cmd_report(args: argparse.Namespace) -> None:
    from hpstudy.report import write_report

    path = write_report(args.dir)
    print(f"report written: {path}")


COMMANDS = {
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
    args = build_parser().parse_args(argv)
    try:
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
