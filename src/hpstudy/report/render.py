"""Rendering: Markdown text from the report's blocks, and one self-contained HTML page from it.

The HTML is the Markdown rendered by markdown-it (CommonMark plus tables, raw
HTML off), with every figure's relative path replaced by a base64 data URI and
the CSS inline, so report.html is a single file that can be mailed or archived.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import re
from pathlib import Path
from urllib.parse import unquote

from markdown_it import MarkdownIt
from markdown_it.token import Token

from hpstudy.files import read_capped
from hpstudy.report.blocks import Block, Code, Heading, Image, Para, Table

CSS = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;
color:#222;line-height:1.45}table{border-collapse:collapse;margin:1rem 0}
th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}th{background:#f3f3f3}
img{max-width:100%}p>em:only-child{color:#555}
blockquote{background:#fff4d6;border-left:4px solid #e0a800;margin:1rem 0;padding:.5rem 1rem}
blockquote p{margin:0}code{background:#f3f3f3;padding:0 .2rem}"""


FIGURE_CAP = 64 * 2**20  # bytes: one figure inlined into report.html


def table_cell(text: str) -> str:
    """One cell of a Markdown table: on one line, its pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(table_cell(c) for c in row) + " |" for row in lines)


def render_markdown(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Para):
            out.append(f"> {b.text}" if b.note else b.text)
        elif isinstance(b, Table):
            out.append(markdown_table(b.header, b.rows))
        elif isinstance(b, Image):
            alt = b.caption.split(":")[0]  # "Figure N"; the caption follows in italics
            out.append(f"![{alt}]({b.path})\n\n*{b.caption}*")
        elif isinstance(b, Code):
            # a fence longer than any run of backticks inside: the text stays literal
            fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", b.text)), default=0))
            out.append(f"{fence}{b.lang}\n{b.text}\n{fence}")
    return "\n\n".join(out) + "\n"


def markdown_parser() -> MarkdownIt:
    # raw HTML off: text from a study file or an error message is shown, never interpreted
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def data_uri(path: Path) -> str:
    payload = read_capped(path, FIGURE_CAP)
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{kind};base64,{base64.b64encode(payload).decode('ascii')}"


def inline_images(tokens: list[Token], base: Path) -> None:
    """Point every image at its file's bytes (a data URI) instead of its relative path."""
    for token in tokens:
        for child in token.children or []:
            if child.type == "image":
                src = str(child.attrGet("src") or "")
                if src and not src.startswith("data:"):
                    child.attrSet("src", data_uri(base / unquote(src)))


def render_html(markdown: str, title: str, base: Path) -> str:
    """`markdown` as one HTML page; image paths are relative to `base` and end up inlined."""
    md = markdown_parser()
    tokens = md.parse(markdown)
    inline_images(tokens, base)
    body = md.renderer.render(tokens, md.options, {})
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
        f"{body}</body></html>\n"
    )
