"""A document as a list of blocks, written as Markdown or as HTML (the postmortem draft).

Blocks: ``H(level, text)``, ``P(text)``, ``UL(items)``, ``Table(headers, rows)``,
``Img(src, alt)`` and ``Todo(what)``, a placeholder for a person: in Markdown an HTML
comment ``<!-- TODO: what -->`` and a visible ``**TODO:** what`` line; in HTML the same
comment and a highlighted paragraph.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field

from faultbook.archive import present


@dataclass(frozen=True)
class H:
    level: int
    text: str


@dataclass(frozen=True)
class P:
    text: str


@dataclass(frozen=True)
class UL:
    items: Sequence[str]


@dataclass(frozen=True)
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[str]] = field(default_factory=list)


@dataclass(frozen=True)
class Img:
    src: str
    alt: str


@dataclass(frozen=True)
class Todo:
    what: str


Block = H | P | UL | Table | Img | Todo


def _md_cell(text: str) -> str:
    return _md_text(text).replace("|", "\\|")


def _md_text(text: str) -> str:
    """Record text in Markdown: one line, and no HTML that a renderer would run."""
    return " ".join(str(text).split()).replace("<", "&lt;")


def markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, H):
            out.append(f"{'#' * b.level} {_md_text(b.text)}")
        elif isinstance(b, P):
            out.append(_md_text(b.text))
        elif isinstance(b, UL):
            out.append("\n".join(f"- {_md_text(i)}" for i in b.items))
        elif isinstance(b, Table):
            lines = ["| " + " | ".join(_md_cell(h) for h in b.headers) + " |"]
            lines.append("|" + "---|" * len(b.headers))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("\n".join(lines))
        elif isinstance(b, Img):
            out.append(f"![{_md_cell(b.alt)}]({b.src})")
        else:
            what = _comment(b.what)
            out.append(f"<!-- TODO: {what} -->\n**TODO:** {_md_text(b.what)}")
    return "\n\n".join(out) + "\n"


def _comment(text: str) -> str:
    return " ".join(text.split()).replace("--", "- -")


TODO_CSS = ".todo{background:#fff3cd;border-left:4px solid #e0a800;padding:.3em .6em}"


def html_page(title: str, blocks: Sequence[Block]) -> str:
    e = html.escape
    body: list[str] = []
    for b in blocks:
        if isinstance(b, H):
            if b.level == 1:
                continue  # the page's own title
            body.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
        elif isinstance(b, P):
            body.append(f"<p>{e(b.text)}</p>")
        elif isinstance(b, UL):
            body.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{e(h)}</th>" for h in b.headers)
            rows = "".join(
                "<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in b.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Img):
            body.append(f'<p><img src="{e(b.src)}" alt="{e(b.alt)}" style="max-width:100%"></p>')
        else:
            body.append(
                f"<!-- TODO: {e(_comment(b.what))} -->"
                f'<p class="todo"><strong>TODO:</strong> {e(b.what)}</p>'
            )
    page = present.page(title, "".join(body))
    return page.replace("</style>", TODO_CSS + "</style>", 1)
