"""The final test result: measured beside published, its interval in words, the configuration and
weights tested, each final run, how often the test split was touched, and top-1 per superclass."""

from __future__ import annotations

from typing import Any

from hpstudy.report.blocks import (
    Block,
    Code,
    FigureNumbers,
    Heading,
    NamedTable,
    Para,
    Rendered,
    Section,
    Table,
)
from hpstudy.report.text import DASH, cell, code, fmt_interval, fmt_stat, num, plural, sig3, text
from hpstudy.study.analysis import Analysis, FinalAnalysis

HEADER = ["run", "seed", "test top-1", "test top-5", "test loss", "test evaluations"]
CSV_HEADER = ["run_hash", "seed", "test_loss", "test_top1", "test_top5", "test_evaluations"]


def interval_sentence(final: FinalAnalysis, budget: str) -> str:
    """How the test interval was made, and the published test top-1 judged by the rule of the
    reproduction table: equivalent within the margin (TOST), else inside or outside the 95 %
    prediction interval for one new run; at one run, cannot tell."""
    t, published = final.test_top1, final.published_top1
    if t.ci95 is None:
        why = (t.interval or "").removeprefix("none: ") or "no per-image test outcomes"
        sentence = f"No interval for the test top-1: {text(why)}."
    else:
        how = f"{text(t.interval or 'interval')}, {plural(t.n, 'run')}"
        about = ("these test images and this seed only" if t.n == 1
                 else "the mean of new seeds, on these test images")  # fmt: skip
        sentence = (f"The 95 % interval of the test top-1 ({how}) is {fmt_interval(t.ci95)}: "
                    f"it is about {about}.")  # fmt: skip
    if published is None or final.published_verdict is None:
        return sentence
    verdict, margin = final.published_verdict, final.equivalence_margin
    if verdict in ("cannot tell", "not measured"):
        why = ("at one run (seed noise is not measured; `--seeds 3` measures it)" if t.n == 1
               else "the final runs' test top-1 do not vary" if t.n > 1 else "no final run")
        sentence += f" Against the published {published:g}: **{verdict}**, {why}."
    else:
        pi = f"the 95 % prediction interval for one new run {fmt_interval(final.prediction)}"
        words = {
            "consistent": f"**consistent**: equivalent within ±{margin:g} (TOST), inside {pi}",
            "inside the prediction interval": f"**inside** {pi}, but not shown equivalent "
                                              f"within ±{margin:g} (TOST)",
            "outside": f"**outside** {pi}",
        }.get(verdict, verdict)
        sentence += f" The published {published:g} is {words}."
    if budget != "full":
        sentence += f" (Budget `{budget}`: the published number is a full-budget one.)"
    return sentence


def selected_weights_text(config: dict[str, Any]) -> str:
    decay = config.get("ema_decay") or 0
    if decay:
        return (f"Selected and tested weights: the exponential moving average of the weights "
                f"(decay {decay:g}), as for every run with an EMA: its validation metrics chose "
                "the winners and it was evaluated on test; the raw weights' validation metrics "
                "are in each run's `metrics.csv` (`raw_val_*`).")  # fmt: skip
    return "Selected and tested weights: the weights at the final epoch."


LEDGER_HEADER = ["configuration", "run", "evaluated at", "test top-1", "seeds of the study run",
                 "reported"]
LEDGER_CSV = ["config_hash", "run_hash", "at", "test_top1", "seeds", "reported"]


def ledger_text(final: FinalAnalysis) -> str:
    """How often, and on how many configurations, the test split was evaluated (the ledger)."""
    touches, configs = final.test_touches, final.tested_configs
    if not touches:  # a state written before the study kept a ledger
        return touched_text(final.most_test_evaluations)
    if len(configs) == 1 and len(touches) == len(final.runs):
        return (f"The test split was evaluated once per final run, on the final configuration "
                f"only ({code(configs[0])}; the study's test ledger).")  # fmt: skip
    return (f"The test split was evaluated {plural(len(touches), 'time')} on "
            f"{plural(len(configs), 'configuration')} "
            f"({', '.join(code(c) for c in configs)}; the study's test ledger, listed below).")


def touched_text(most: int) -> str:
    if most > 1:
        return (f"Note: the test split was evaluated up to {most} times on a final run "
                "(the run's test-evaluation ledger).")  # fmt: skip
    if most == 0:
        return "No test evaluation is recorded for the final runs."
    return "The test split was evaluated once, on the final configuration only."


def render(a: Analysis, numbers: FigureNumbers) -> Rendered:
    final, spec = a.final, a.report
    show_published = spec.published_test_top1 is not None
    csv_header = CSV_HEADER + (["published_test_top1"] if show_published else [])
    blocks: list[Block] = [Heading("Final test result")]
    if final is None:
        blocks.append(Para("The test result is **pending**: the study has not reached its final "
                           "evaluation, and the test split has not been touched."))  # fmt: skip
        return Rendered(blocks, [NamedTable("final", HEADER, [], csv_header, [])])

    if len(final.tested_configs) > 1:
        others = [c for c in final.tested_configs if c != final.config_hash]
        reported = code(final.config_hash or DASH)
        blocks.append(Para(
            f"**The test split was evaluated on {len(final.tested_configs)} distinct "
            f"configurations, not one.** The result below is that of {reported}, "
            f"the final winner of the last `study run`; the test split also met "
            f"{', '.join(code(c) for c in others)} (a rerun that changed the winner, say with "
            "other seeds, or a run tested by hand). A test number picked among several "
            "configurations is no longer an untouched estimate: every test touch is listed at "
            "the end of this section."
        ))  # fmt: skip
    top1, loss_published = final.test_top1, final.published_loss
    within = f" (95 % interval {fmt_interval(top1.ci95)})" if top1.ci95 else ""
    measured = [
        ["test top-1", f"**{fmt_stat(top1)}**{within}", cell(final.published_top1)],
        ["test top-5", fmt_stat(final.test_top5), DASH],
        ["test loss (mean cross-entropy per image)", fmt_stat(final.test_loss),
         text(loss_published) if loss_published is not None else DASH],
    ]  # fmt: skip
    if show_published:
        blocks.append(Table(["metric", "measured", "published"], measured))
    else:
        blocks.append(Table(["metric", "measured"], [row[:2] for row in measured]))
        if loss_published is not None:
            blocks.append(Para(f"Published test loss: {text(loss_published)}."))
    blocks.append(Para(interval_sentence(final, a.budget)))
    c = a.chance
    chance = (f"Chance (a uniform guess among {c.classes} classes): top-1 {sig3(c.top1)}, "
              f"top-5 {sig3(c.top5)}.")  # fmt: skip
    if final.at_chance:
        blocks.append(Para(f"{chance} **At chance:** the test top-1's 95 % interval contains "
                           "it: this model shows nothing learned.", note=True))  # fmt: skip
    else:
        blocks.append(Para(chance))
    blocks += [
        Para("Final configuration (every field off its default, as a study file's `[base]`; "
             "the seed is the study's):"),
        Code(final.base_toml, "toml"),
        Para("The same run trained again by hand (the same run hash; `--seed` for each seed):"),
        Code(final.train_command, "sh"),
    ]  # fmt: skip
    blocks.append(Para(selected_weights_text(final.config)))

    rows, csv_rows = [], []
    for run in final.runs:
        t = run.test
        rows.append([code(run.run_hash), str(run.seed), sig3(t.top1), sig3(t.top5), sig3(t.loss),
                     str(run.test_evaluations)])  # fmt: skip
        csv_rows.append([run.run_hash, run.seed, num(t.loss), num(t.top1), num(t.top5),
                         run.test_evaluations,
                         *([num(final.published_top1)] if show_published else [])])  # fmt: skip
    blocks.append(Table(HEADER, rows))
    blocks.append(Para(
        "Selection used the validation split only, carved out of the official training set; "
        f"the test split played no part in it. {ledger_text(final)}"
    ))  # fmt: skip
    tables = [NamedTable("final", HEADER, rows, csv_header, csv_rows)]
    if len(final.tested_configs) > 1 or len(final.test_touches) > len(final.runs):
        rows, csv_rows = [], []
        for t in final.test_touches:
            reported = "yes" if t.config_hash == final.config_hash else "no"
            seeds = ", ".join(str(s) for s in t.seeds) or DASH
            rows.append([code(t.config_hash), code(t.run_hash), text(t.at), sig3(t.top1), seeds,
                         reported])  # fmt: skip
            csv_rows.append([t.config_hash, t.run_hash, t.at, num(t.top1),
                             " ".join(str(s) for s in t.seeds), reported])  # fmt: skip
        blocks += [Para("Every evaluation of the test split made for this study (its test "
                        "ledger, `test_ledger.jsonl`):"), Table(LEDGER_HEADER, rows)]  # fmt: skip
        tables.append(NamedTable("test_ledger", LEDGER_HEADER, rows, LEDGER_CSV, csv_rows))

    if final.superclass:
        rows = [[text(name.replace("_", " ")), fmt_stat(s)] for name, s in final.superclass.items()]
        csv_rows = [[name, num(s and s.mean), num(s.std) if s and s.n >= 2 else "",
                     s.n if s else 0]
                    for name, s in final.superclass.items()]  # fmt: skip
        blocks += [Para("Test top-1 per superclass (coarse label):"),
                   Table(["superclass", "top-1"], rows)]  # fmt: skip
        csv_header = ["superclass", "top1_mean", "top1_std", "n"]
        tables.append(NamedTable("superclass", ["superclass", "top-1"], rows, csv_header, csv_rows))
    return Rendered(blocks, tables)


SECTION = Section("final test result", render)
