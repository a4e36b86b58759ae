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
- each runbook's page also gets its latest scorecard and an executed example (at a
  ``<!-- faultbook:runs -->`` marker, or at the end of the page). The scorecard is
  ``suites.history.collect``'s data, what ``faultbook history`` shows; ``scorecard.md``
  is a generated page with the score per tier and overall. The example is the newest
  archived run of the runbook with its notebook's HTML (a drill that passed first, else
  any run), else the one committed in ``docs/examples/<runbook>/``; its HTML is
  published as ``examples/<runbook>.html``. With neither, the page says which command
  makes one: CI builds the site before anything has run.

``python -m faultbook.oncall.docsite examples`` (``make docs-examples``) copies each
runbook's newest archived run into ``docs/examples/<runbook>/``, the committed fallback.

The hook imports nothing from mkdocs (plain arguments), so the library needs mkdocs only
to build the site.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from faultbook.archive import store
from faultbook.errors import ArchiveError, FaultbookError
from faultbook.paths import REPO_ROOT, RUNBOOKS_DIR

log = logging.getLogger("mkdocs.hooks.faultbook")
MARKER = "<!-- faultbook:parameters -->"
RUNS_MARKER = "<!-- faultbook:runs -->"
EXAMPLES = "examples"  # docs/examples/<runbook>/ (committed) and the site's examples/<runbook>.html
EXAMPLE_FILES = ("result.json", store.META)  # copied with the HTML into docs/examples/<runbook>/
SCORECARD = "scorecard.md"
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


# ------------------------------------------------------------ examples and scores
@dataclass(frozen=True)
class Example:
    """An executed run of a runbook to show on its page: an archived run, or the copy of
    one committed in docs/examples/<runbook>/ (``origin`` says which, in words)."""

    run: store.ArchivedRun
    html: Path
    origin: str

    def describe(self) -> str:
        """Which run it is: UTC time, mode, verdict, trigger."""
        from faultbook.suites import score

        doc = self.run.doc or {}
        mode = str(doc.get("mode") or "unknown")
        drill = score.drill_key(doc)
        what = f"{mode} (`{drill}`)" if drill else mode
        trigger = f"`{self.run.trigger}`" if self.run.trigger else "not recorded"
        return (
            f"run of {_when(self.run.started)} UTC, mode {what}, "
            f"verdict **{self.run.verdict or 'none'}**, trigger {trigger}; {self.origin}"
        )


@dataclass
class Runs:
    """What one build knows about the runs: each runbook's example, and the history's
    data (``suites.history.collect``; None when no run is archived)."""

    examples: dict[str, Example] = field(default_factory=dict)
    history: dict[str, Any] | None = None
    unreadable: str = ""  # why the archive could not be read, when it could not


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def archived(home: Path | None = None) -> tuple[list[store.ArchivedRun], str]:
    """Every archived run (``archive.store.runs``), and why there are none when the archive
    cannot be read (an unusable ``$FAULTBOOK_HOME``): a docs build does not need it."""
    try:
        return store.runs(home), ""
    except (FaultbookError, OSError) as exc:
        why = str(exc) if isinstance(exc, FaultbookError) else exc.strerror or str(exc)
        log.info("no run archive for the docs site: %s", why)
        return [], why


def choose(runs: Sequence[store.ArchivedRun], runbook: str) -> store.ArchivedRun | None:
    """The run of RUNBOOK to show: the newest drill that passed, else the newest run; only
    runs with their notebook's HTML count."""
    mine = [r for r in runs if r.runbook == runbook and store.notebook_html(r) is not None]
    passed = [r for r in mine if (r.doc or {}).get("mode") == "drill" and r.verdict == "pass"]
    pool = passed or mine
    return max(pool, key=lambda r: (r.started, r.name)) if pool else None


def committed(runbook: str, docs_dir: Path) -> Example | None:
    """The example committed in DOCS_DIR/examples/RUNBOOK/ (``make docs-examples``), or
    None. One with its HTML but no readable result.json is a warning (a failed strict
    build), since the page could not say which run it is."""
    folder = docs_dir / EXAMPLES / runbook
    html = folder / f"{runbook}.html"
    if not html.is_file():
        return None
    doc = store.read_json(folder / "result.json")
    started = None
    if doc and isinstance(doc.get("started_at"), str):
        try:
            started = datetime.fromisoformat(doc["started_at"].replace("Z", "+00:00"))
        except ValueError:
            started = None
    if doc is None or started is None:
        log.warning(
            "%s/%s/%s has no readable result.json with started_at: refresh it with "
            "make docs-examples",
            docs_dir.name,
            EXAMPLES,
            runbook,
        )
        return None
    meta = store.read_json(folder / store.META) or {}
    run = store.ArchivedRun(folder, runbook, started, doc, meta)
    return Example(run, html, f"committed in `docs/{EXAMPLES}/{runbook}/` (`make docs-examples`)")


def example(
    runbook: str, runs: Sequence[store.ArchivedRun], docs_dir: Path | None = None
) -> Example | None:
    """RUNBOOK's example: from the archive (``choose``), else the committed one."""
    run = choose(runs, runbook)
    html = store.notebook_html(run) if run else None
    if run and html:
        return Example(run, html, f"from the run archive (`runs/{run.name}`)")
    return committed(runbook, docs_dir) if docs_dir else None


def gather(
    runbooks: Sequence[str],
    docs_dir: Path | None = None,
    home: Path | None = None,
    now: datetime | None = None,
) -> Runs:
    """The examples and the history's data for one build."""
    from faultbook.suites import history

    runs, why = archived(home)
    found = {name: example(name, runs, docs_dir) for name in runbooks}
    data = history.collect(home, Path("."), now) if runs else None
    return Runs({k: v for k, v in found.items() if v}, data, why)


def make_one(runbook: str) -> str:
    """The command that archives a run of RUNBOOK, hence an example."""
    from faultbook.report import runner

    if "drill" in runner.parameters(runbook):
        return f"faultbook run {runbook} -p drill true"
    if "drill" in runner.modes(runbook):
        return f"faultbook run {runbook} -p mode drill"
    return f"faultbook run {runbook}"


_NO_RUN = (
    "No run has been recorded yet in the run archive (`$FAULTBOOK_HOME/runs/`) of the "
    "machine that built this site"
)


def example_section(runbook: str, ex: Example | None, src: str = "") -> str:
    """The ``## Executed example`` section: a link to the example's HTML (the page's
    Markdown link, checked by mkdocs) and, with SRC (its URL from the page), an iframe."""
    head = "## Executed example\n\n"
    if ex is None:
        return head + (
            f"No executed example of {runbook} exists yet: the run archive of the machine "
            f"that built this site holds no run of it, and `docs/{EXAMPLES}/{runbook}/` "
            f"holds none committed. `{make_one(runbook)}` (on the lab, after "
            "`faultbook lab up`) archives one; `make docs-examples` copies it into "
            f"`docs/{EXAMPLES}/` to commit.\n"
        )
    link = f"[The executed notebook](../{EXAMPLES}/{runbook}.html)"
    out = head + (
        f"{link}: {ex.describe()}. Shown: the newest archived drill of {runbook} that "
        "passed, else its newest archived run, else the committed copy.\n"
    )
    if src:
        out += (
            f'\n<iframe src="{src}" title="{runbook}: an executed run" loading="lazy" '
            'style="width:100%;height:45rem;border:1px solid #8884"></iframe>\n'
        )
    return out


def _score(v: float) -> str:
    return f"{v:.0f}"  # as faultbook history prints it


def _drill_table(rows: Sequence[Mapping[str, Any]], tier: bool = False) -> str:
    head = "| drill |" + (" tier |" if tier else "")
    out = [
        head + " latest verdict | latest run (UTC) | score basis | score | runs |",
        "|---|" + ("---|" if tier else "") + "---|---|---|---|---|",
    ]
    for d in rows:
        cells = [f"`{d['drill']}`", *([d["tier"]] if tier else [])]
        cells += [d["verdict"], d["last"] or "never", d["status"], str(d["score"]), str(d["runs"])]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def scorecard_section(runbook: str, data: Mapping[str, Any] | None) -> str:
    """The ``## Latest scorecard`` section: the runbook's latest verdict, its drills'
    scores and its tier's, from ``suites.history.collect``'s DATA."""
    from faultbook.suites import score

    head = "## Latest scorecard\n\n"
    if data is None:
        return head + _NO_RUN + ", so there is no scorecard.\n"
    mine = [r for r in data["runs"] if r["runbook"] == runbook]
    at = (
        f"as of {_when(datetime.fromisoformat(data['generated_at']))} UTC, when this site was built"
    )
    if mine:
        last = max(mine, key=lambda r: r["at"])
        out = (
            f"Latest run: {last['started']} UTC, `{last['drill']}`, verdict "
            f"**{last['verdict']}** ({len(mine)} run(s) archived; {at}).\n"
        )
    else:
        out = f"No run of {runbook} has been recorded yet ({at}).\n"
    tier = score.TIERS.get(runbook)
    if tier is None:
        return head + out + f"\n{runbook} is not a drill, so it is not scored.\n"
    drills = [d for d in data["drills"] if d["drill"].split("/", 1)[0] == runbook]
    tiers, overall = data["score"]["tiers"], data["score"]["overall"]
    return (
        head
        + out
        + "\n"
        + _drill_table(drills)
        + f"\nTier **{tier}**: score **{_score(tiers[tier])}** (the mean of its drills); "
        + f"overall **{_score(overall)}**. Each drill scores by its latest run: passed within "
        + f"{data['recent_days']:g} days 100, passed longer ago 75, failed 50, never run 0 "
        + f"([the scorecard](../{SCORECARD})).\n"
    )


def scorecard_page(data: Mapping[str, Any] | None, unreadable: str = "") -> str:
    """The generated ``scorecard.md``: the score per tier and overall, then per drill
    (UNREADABLE: why the archive could not be read, when it could not)."""
    out = (
        "# Scorecard\n\nThe reliability score of the drills, from the run archive as "
        "`faultbook history` computes it ([drills.md](drills.md#history-and-the-score)).\n\n"
    )
    if data is None:
        why = f" (it could not be read: {unreadable})" if unreadable else ""
        return out + _NO_RUN + why + ": every drill scores 0 until one runs.\n"
    tiers, overall = data["score"]["tiers"], data["score"]["overall"]
    at = _when(datetime.fromisoformat(data["generated_at"]))
    rows = [f"| {t} | {_score(v)} |" for t, v in sorted(tiers.items())]
    return (
        out
        + f"As of {at} UTC, when this site was built, from {len(data['runs'])} archived "
        + f"run(s); a drill passed within {data['recent_days']:g} days scores 100, passed "
        + "longer ago 75, failed 50, never run 0; a tier is the mean of its drills, overall "
        + "the mean of the tiers.\n\n"
        + "| tier | score |\n|---|---|\n"
        + f"| **overall** | **{_score(overall)}** |\n"
        + "\n".join(rows)
        + "\n\n## Per drill\n\n"
        + _drill_table(data["drills"], tier=True)
    )


def with_runs(markdown: str, runbook: str, runs: Runs, src: str = "") -> str:
    """MARKDOWN with the runbook's scorecard and example at ``<!-- faultbook:runs -->``,
    or at the end."""
    block = (
        scorecard_section(runbook, runs.history)
        + "\n"
        + example_section(runbook, runs.examples.get(runbook), src)
    )
    if RUNS_MARKER in markdown:
        return markdown.replace(RUNS_MARKER, block)
    return markdown.rstrip("\n") + "\n\n" + block


def refresh_examples(
    dest: Path, home: Path | None = None, runbooks: Sequence[str] | None = None
) -> list[str]:
    """Copy each runbook's example from the archive (``choose``: its HTML, result.json and
    archive.json) into DEST/<runbook>/, replacing what was there; a runbook without an
    archived run keeps its folder. One line per runbook; ArchiveError when nothing was
    copied."""
    runs, why = archived(home)
    lines, copied = [], 0
    for name in runbooks if runbooks is not None else _runbooks():
        run = choose(runs, name)
        html = store.notebook_html(run) if run else None
        if run is None or html is None:
            lines.append(
                f"{name}: no archived run with its notebook's HTML; {dest / name} left as is"
            )
            continue
        folder = dest / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        shutil.copyfile(html, folder / f"{name}.html")
        for extra in EXAMPLE_FILES:
            if (run.path / extra).is_file():
                shutil.copyfile(run.path / extra, folder / extra)
        size = sum(f.stat().st_size for f in folder.iterdir()) / 1024
        mode = (run.doc or {}).get("mode", "?")
        lines.append(
            f"{name}: {run.path} ({mode}, {run.verdict or 'no verdict'}) -> {folder} "
            f"({size:,.0f} KiB)"
        )
        copied += 1
    if not copied:
        where = why or store.runs_root(home)
        raise ArchiveError(
            f"no archived run to copy into {dest} (archive: {where}); run a drill first"
        )
    return lines


# ------------------------------------------------------------------ mkdocs events
def _runbooks() -> list[str]:
    return sorted(p.stem for p in RUNBOOKS_DIR.glob("*.ipynb"))


_runs: Runs | None = None  # set by on_files, read by on_page_markdown (one build)


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
    docs_dir = Path(str(config["docs_dir"]))
    global _runs
    _runs = gather(sorted(names), docs_dir)
    for f in [f for f in files if f.src_uri.startswith(f"{EXAMPLES}/")]:
        files.remove(f)  # the committed examples: sources, published below when chosen
    for name, ex in sorted(_runs.examples.items()):
        uri = f"{EXAMPLES}/{name}.html"
        files.append(File.generated(config, uri, abs_src_path=str(ex.html)))
    if SCORECARD not in docs:
        content = scorecard_page(_runs.history, _runs.unreadable)
        files.append(File.generated(config, SCORECARD, content=content))
        docs.add(SCORECARD)
    for folder, pages in sorted(folders(docs).items()):
        content = folder_index(folder, pages, docs_dir)
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
        name = m.group(1)
        runs = _runs if _runs is not None else gather([name], Path(str(config["docs_dir"])))
        html = files.get_file_from_path(f"{EXAMPLES}/{name}.html")
        src = html.url_relative_to(page.file) if html is not None else ""
        return with_runs(with_parameters(markdown, name, uri), name, runs, src)
    return markdown


# ------------------------------------------------------------------ make docs-examples
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m faultbook.oncall.docsite",
        description="the docs site's committed examples (docs/oncall.md#the-docs-site)",
    )
    sub = ap.add_subparsers(dest="what", required=True)
    ex = sub.add_parser(
        "examples",
        help="copy each runbook's newest archived run into docs/examples/<runbook>/",
    )
    ex.add_argument("--dest", type=Path, default=REPO_ROOT / "docs" / EXAMPLES)
    ex.add_argument("--home", type=Path, default=None, help="default: $FAULTBOOK_HOME")
    a = ap.parse_args(argv)
    try:
        for line in refresh_examples(a.dest, a.home):
            sys.stdout.write(line + "\n")
    except FaultbookError as exc:
        sys.stderr.write(f"docsite: error: {exc}\n")
        return exc.exit_code
    sys.stdout.write(f"commit them: git add {a.dest}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
