"""The mkdocs hook of ``make docs`` (``mkdocs.yml``: ``hooks:``): the docs site from docs/
and the README, with each runbook's parameters table generated from its notebook.

- ``on_files``: the README becomes the home page (``index.md``), its links rewritten for
  the site (``docs/X`` → ``X``, ``runbooks/X.ipynb`` → the runbook's page, other files of
  the repository → plain text: they are not part of the site); a runbook without a page
  under docs/runbooks/ gets a generated one.
- ``on_page_markdown``: on ``runbooks/<name>.md`` the table of ``<name>.ipynb``'s cell
  tagged ``parameters`` (``papermill.inspect_notebook``: name, type, default, the
  comment on its line) replaces a ``<!-- faultbook:parameters -->`` marker, or else
  ends the page's ``## Parameters`` section (or the page). A hand-written table in that
  section that names a parameter the notebook lacks, or lacks one it has, is a warning,
  which ``mkdocs build --strict`` turns into a failed build.

The hook imports nothing from mkdocs (plain arguments), so the library needs mkdocs only
to build the site.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from faultbook.paths import REPO_ROOT, RUNBOOKS_DIR

log = logging.getLogger("mkdocs.hooks.faultbook")
MARKER = "<!-- faultbook:parameters -->"
_LINK = re.compile(r"\[([^\]]*)\]\((?!https?:|mailto:|#)([^)\s#]*)(#[^)\s]*)?\)")
_ROW_NAME = re.compile(r"^\|\s*`([A-Za-z_]\w*)`\s*\|", re.M)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def parameters_table(runbook: str) -> str:
    """The Markdown table of a runbook's parameters cell (``result_dir`` left out: the
    runner sets it)."""
    from faultbook.report import runner

    rows = [
        f"| `{p.name}` | {_cell(p.type)} | `{_cell(p.default)}` | {_cell(p.help)} |"
        for p in runner.parameters(runbook).values()
        if p.name not in runner.RUNNER_PARAMS
    ]
    modes = ", ".join(f"`{m}`" for m in runner.modes(runbook))
    return (
        f"Generated from `runbooks/{runbook}.ipynb`'s `parameters` cell when this site was "
        f"built; modes {modes}; `result_dir` is set by `faultbook run`.\n\n"
        "| name | type | default | the cell's comment |\n|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )


def _section(markdown: str, heading: str) -> tuple[int, int] | None:
    """(start, end) of the section under ``## HEADING`` (to the next ``## `` or the end)."""
    m = re.search(rf"^## {re.escape(heading)}\s*$", markdown, re.M)
    if not m:
        return None
    nxt = re.search(r"^## ", markdown[m.end() :], re.M)
    return m.end(), m.end() + nxt.start() if nxt else len(markdown)


def drift(runbook: str, section: str) -> list[str]:
    """What a hand-written parameters table says that the notebook does not, in words."""
    from faultbook.report import runner

    declared = {p for p in runner.parameters(runbook) if p not in runner.RUNNER_PARAMS}
    written = set(_ROW_NAME.findall(section)) - set(runner.RUNNER_PARAMS)
    if not written:
        return []
    out = [f"lists `{n}`, which the notebook does not declare" for n in sorted(written - declared)]
    out += [f"lacks `{n}`, which the notebook declares" for n in sorted(declared - written)]
    return out


def with_parameters(markdown: str, runbook: str, page: str = "") -> str:
    table = parameters_table(runbook)
    if MARKER in markdown:
        return markdown.replace(MARKER, table)
    span = _section(markdown, "Parameters")
    if span is None:
        return markdown.rstrip("\n") + "\n\n## Parameters\n\n" + table
    start, end = span
    for problem in drift(runbook, markdown[start:end]):
        log.warning("%s: the parameters table %s", page or runbook, problem)
    block = "\n**The notebook's parameters cell**\n\n" + table + "\n"
    return markdown[:end].rstrip("\n") + "\n\n" + block + markdown[end:]


def readme_for_site(text: str, runbook_names: set[str], docs: set[str]) -> str:
    """The README's links as the site needs them (see the module's docstring)."""

    def fix(m: re.Match[str]) -> str:
        label, target, anchor = m.group(1), m.group(2), m.group(3) or ""
        rest = target.removeprefix("docs/")
        if target.startswith("docs/") and rest in docs:
            return f"[{label}]({rest}{anchor})"
        stem = Path(target).stem
        if target.startswith("runbooks/") and target.endswith(".ipynb") and stem in runbook_names:
            return f"[{label}](runbooks/{stem}.md)"
        return label  # a repository file or folder, not a page of the site

    return _LINK.sub(fix, text)


# ------------------------------------------------------------------ mkdocs events
def _runbooks() -> list[str]:
    return sorted(p.stem for p in RUNBOOKS_DIR.glob("*.ipynb"))


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    docs = {f.src_uri for f in files}
    names = set(_runbooks())
    if "index.md" not in docs and "README.md" not in docs:
        text = (REPO_ROOT / "README.md").read_text()
        files.append(File.generated(config, "index.md", content=readme_for_site(text, names, docs)))
    for name in sorted(names):
        uri = f"runbooks/{name}.md"
        if uri not in docs:
            files.append(File.generated(config, uri, content=f"# {name}\n\n{MARKER}\n"))
            docs.add(uri)
    for folder, pages in sorted(folders(docs).items()):
        content = folder_index(folder, pages, Path(str(config["docs_dir"])))
        files.append(File.generated(config, f"{folder}/index.md", content=content))
    return files


def folders(docs: set[str]) -> dict[str, list[str]]:
    """Each folder of the docs without an index.md, with its pages: it gets one, so that a
    link to the folder (``roles/``, as GitHub shows folders) is a page of the site."""
    out: dict[str, list[str]] = {}
    for uri in sorted(docs):
        if "/" in uri and uri.endswith(".md"):
            out.setdefault(uri.rsplit("/", 1)[0], []).append(uri)
    return {f: pages for f, pages in out.items() if f"{f}/index.md" not in docs}


def folder_index(folder: str, pages: list[str], docs_dir: Path) -> str:
    lines = [f"# {folder}", ""]
    for uri in pages:
        path = docs_dir / uri
        title = Path(uri).stem
        if path.is_file():
            m = re.search(r"^# (.+)$", path.read_text(), re.M)
            title = m.group(1).strip() if m else title
        lines.append(f"- [{title}]({uri.rsplit('/', 1)[1]})")
    return "\n".join(lines) + "\n"


_DIR_LINK = re.compile(r"\]\(((?:\.\./)*[\w./-]*?\w)/(#[^)\s]*)?\)")


def folder_links(markdown: str) -> str:
    """``[x](roles/)`` → ``[x](roles/index.md)``: a link to a folder, as a page link."""
    return _DIR_LINK.sub(lambda m: f"]({m.group(1)}/index.md{m.group(2) or ''})", markdown)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    uri = str(page.file.src_uri)
    markdown = folder_links(markdown)
    m = re.fullmatch(r"runbooks/([\w-]+)\.md", uri)
    if m and (RUNBOOKS_DIR / f"{m.group(1)}.ipynb").is_file():
        return with_parameters(markdown, m.group(1), uri)
    return markdown
