"""The study's report: tables (CSV + Markdown), figures (PNG), report.md and report.html.

The last step of the data flow, and the one place that writes the report's
files: `hpstudy.study.analysis` gives every number and verdict (it reads the study
folder through its owners, never the dataset), `sections` render it section by
section into blocks and tables, `figures` draws the plots, `render` writes the
Markdown and HTML. It renders any study, finished or not, and computes nothing.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from hpstudy.files import write_atomic
from hpstudy.report.figures import save
from hpstudy.report.render import markdown_table, render_html, render_markdown
from hpstudy.report.sections import build
from hpstudy.study.analysis import Analysis, analyse

# what write_report writes in these folders; anything else there of these kinds is stale
OWN_SUFFIXES = {"tables": (".csv", ".md"), "figures": (".png",)}


def csv_text(rows: list[list[object]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def write_text(path: Path, content: str) -> None:
    write_atomic(path, content.encode("utf-8"))


def write_report(study_dir: str | Path, analysis: Analysis | None = None) -> Path:
    """Write tables/, figures/, report.md and report.html into a study folder; returns report.md.
    `analysis`: the folder's analysis when the caller has it already (else it is made here)."""
    study_dir = Path(study_dir)
    report = build(analysis if analysis is not None else analyse(study_dir))

    written: set[Path] = set()
    for folder in OWN_SUFFIXES:
        (study_dir / folder).mkdir(parents=True, exist_ok=True)
    for table in report.tables:
        csv_path = study_dir / "tables" / f"{table.name}.csv"
        md_path = study_dir / "tables" / f"{table.name}.md"
        write_text(csv_path, csv_text([table.csv_header, *table.csv_rows]))
        write_text(md_path, markdown_table(table.header, table.rows) + "\n")
        written |= {csv_path, md_path}
    for image in report.images:
        written.add(save(image.figure, study_dir / image.path))
    # no stale table or figure from an earlier state of the study (other numbers, stages)
    for folder, suffixes in OWN_SUFFIXES.items():
        for path in (study_dir / folder).iterdir():
            if path.suffix in suffixes and path.is_file() and path not in written:
                path.unlink()

    markdown = render_markdown(report.blocks)
    md_path = study_dir / "report.md"
    write_text(md_path, markdown)
    write_text(study_dir / "report.html", render_html(markdown, report.title, study_dir))
    return md_path


__all__ = ["write_report"]
