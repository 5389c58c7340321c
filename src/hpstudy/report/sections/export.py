"""The shipped final model: size, files, the ONNX check and the CPU latency table (export.json)."""

from __future__ import annotations

from hpstudy.export import latency_table, load_text
from hpstudy.report.blocks import (
    Block,
    FigureNumbers,
    Heading,
    NamedTable,
    Para,
    Rendered,
    Section,
    Table,
)
from hpstudy.report.text import num, text
from hpstudy.study.analysis import Analysis

HEADER = ["runtime", "batch 1 latency (ms, median, 10-90 %)", "batch 256 throughput (images/s)"]
CSV_HEADER = ["runtime", "latency_ms_batch1_median", "throughput_images_per_s_batch256",
              "latency_runs"]  # fmt: skip


def render(a: Analysis, numbers: FigureNumbers) -> Rendered:
    if a.final is None:  # the test result is pending: nothing to export yet
        return Rendered()
    export = a.export
    blocks: list[Block] = [Heading("The final model, exported", 3)]
    if export is None:
        blocks.append(Para("Not exported (see `hpstudy export`; it needs "
                           "`pip install 'hpstudy[export]'`)."))  # fmt: skip
        return Rendered(blocks)
    files = ", ".join(f"`{name}` {size / 1e6:.2f} MB" for name, size in export["files"].items())
    blocks.append(Para(f"{export['parameters']:,} parameters, {export['macs_per_image']:,} "
                       f"multiply-adds per image; {files}. ONNX input: "
                       f"{text(export['onnx_input'])}."))  # fmt: skip
    if (c := export.get("check")) is not None:
        verdict = "passed" if c["passed"] else "**failed**"
        blocks.append(Para(
            f"ONNX Runtime against PyTorch on {c['images']} validation images: largest logit "
            f"difference {c['max_abs_logit_diff']:.1e} (allowed "
            f"{c['tolerance']['max_abs_logit_diff']:g}), top-1 agreement "
            f"{c['top1_agreement']:.4f} (at least {c['tolerance']['min_top1_agreement']}): "
            f"{verdict}."
        ))  # fmt: skip
    rows, csv_rows = latency_table(export), []
    for name, t in export.get("latency", {}).items():
        ms, ips = t["latency_ms_batch1_median"], t["throughput_images_per_s_batch256"]
        csv_rows.append([name, num(ms), num(ips), t["latency_runs"]])
    load = load_text(export)
    under = f", {text(load)}" if load else ""
    blocks += [Para(f"CPU timings ({export['threads']} threads{under}):"), Table(HEADER, rows)]
    return Rendered(blocks, [NamedTable("export", HEADER, rows, CSV_HEADER, csv_rows)])


SECTION = Section("export", render)
