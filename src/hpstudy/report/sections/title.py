"""The report's title and what the reader must know first: a status note (title), then the
study's notes, its shape (stages, settings, seeds, reused runs) and the budget's caveats
(overview)."""

from __future__ import annotations

from hpstudy.report.blocks import Block, FigureNumbers, Heading, Para, Rendered, Section
from hpstudy.report.text import code, plural, text
from hpstudy.study.analysis import Analysis

BETTER = {"val_acc": "highest", "val_loss": "lowest"}

# what a cheaper budget's numbers can and cannot say
BUDGET_NOTES = {
    "smoke": "Budget `smoke` checks the plumbing, not the results: every run and every step of "
    "the study is exercised on a few thousand images for one or two epochs, so its numbers "
    "say that the study runs end to end, not which setting is better.",
    "quick": "Budget `quick` trains on a subset of the images for a fraction of the epochs, so "
    "every healthy run ends well above chance but far below the full study: its winners are "
    "a first hint, not the full study's answer.",
}


def render(a: Analysis, numbers: FigureNumbers) -> Rendered:
    blocks: list[Block] = [
        Heading(f"{text(a.report.title or a.name)} (budget {text(a.budget)})", 1)
    ]
    if a.status == "incomplete":
        failed = len(a.failed)
        which = f": {plural(failed, 'run')} failed (listed below)" if failed else ""
        blocks.append(Para(
            f"**This study is incomplete**{which}; running `hpstudy study run` again retries "
            "failed runs. Tables and figures show the runs done so far.",
            note=True,
        ))  # fmt: skip
    elif a.status != "finished":
        blocks.append(Para(
            f"**This study is not finished** (status: {a.status}): tables and figures "
            "show the runs done so far.",
            note=True,
        ))  # fmt: skip
    return Rendered(blocks)


# what each interval is about, and what the stages' decisions are not (issue 20)
ESTIMAND = (
    "What the intervals are about: a comparison's 95 % interval at two seeds or more is about "
    "new seeds of training on these validation images (on new images too where each seed "
    "draws its own split, `split_follows_seed`), and the interval over images beside it about "
    "new validation images for these trained models; one seed measures only the latter. "
    "Stages are greedy, so each stage's decision is conditional on the winners of the stages "
    "before it, and there is no study-wide error control across the stages (each is decided "
    "at 5 %, split among the comparisons with its winner and the looks of `--until-decided`)."
)


def overview(a: Analysis, numbers: FigureNumbers) -> Rendered:
    """The study's notes, how it runs, and what its budget means (after any failed runs)."""
    blocks: list[Block] = [Para(note) for note in a.report.notes]
    so_far = "" if a.status == "finished" else " so far"
    how = (
        "one hyperparameter at a time, each keeping the winner of the one before"
        if all(s.one_field for s in a.stages)
        else "each keeping the winners of the ones before"
    )
    grown = (f", more in stages not decided at {len(a.seeds)} (`--until-decided "
             f"{a.until_decided}`)" if a.until_decided else "")  # fmt: skip
    if a.follow == "published":
        blocks.append(Para(
            "Each stage starts from the **published** winners of the stages before it "
            "(`--follow published`), so every table measures the published configurations; "
            "each stage still says what hpstudy's own selection chose."
        ))  # fmt: skip
    named = f"Study {code(a.name)}: " if a.report.title else ""
    c = a.counts
    blocks.append(Para(
        f"{named}{plural(len(a.stages), 'stage')}{so_far}, {how}: {c.settings} settings × "
        f"{len(a.seeds)} seed(s) {a.seeds}{grown} = {c.entries} runs, {c.distinct} distinct "
        f"({c.reused} reused, not trained again). The winner of a stage has the "
        f"{BETTER[a.selection]} mean `{a.selection}` at the final epoch, on the "
        "validation split."
    ))  # fmt: skip
    blocks.append(Para(ESTIMAND))
    if a.budget in BUDGET_NOTES:
        blocks.append(Para(BUDGET_NOTES[a.budget]))
    if a.budget != "full" and a.has_published:
        blocks.append(Para(
            f"Budget `{a.budget}` shortens runs and data: the published values in "
            "brackets are from the full study, a reference rather than a target."
        ))  # fmt: skip
    return Rendered(blocks)


SECTION = Section("title", render)
# after the failed runs of an incomplete study
OVERVIEW = Section("overview", overview)
