"""Drive a real JupyterLab in Debian's headless Chromium, as an on-call engineer would.

``served(runbook, params)`` starts ``faultbook notebook`` (a child process, as a person
would type it) and yields its URL and incident folder; ``Session`` opens the URL in
Chromium through Playwright (``executable_path``: Playwright's own browser download is
never used) and runs the notebook cell by cell with Shift+Enter, answering the
confirmation boxes the runbook puts up, and saving a screenshot after each step.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
# Chromium as root in a closed network: no sandbox (root), and none of its own
# background connections (they would be refused, many at a time).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = (
    Path(os.environ.get("FAULTBOOK_TEST_ARTIFACTS", ROOT / "reports" / "test-artifacts"))
    / "browser"
)


@dataclass
class Served:
    url: str
    folder: Path
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)


@contextmanager
def served(
    runbook: str, params: dict[str, str] | None = None, timeout_s: float = 120.0
) -> Iterator[Served]:
    """``faultbook notebook RUNBOOK -p … --port 0`` until the block ends (then SIGTERM)."""
    cmd = [str(ROOT / ".venv" / "bin" / "faultbook"), "notebook", runbook, "--port", "0"]
    for k, v in (params or {}).items():
        cmd += ["-p", k, v]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT
    )
    out: list[str] = []
    url = folder = None
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    try:
        while url is None or folder is None:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"faultbook notebook exited ({proc.wait()}): {''.join(out)}")
            out.append(line)
            if m := re.match(r"incident folder: (\S+)", line):
                folder = Path(m.group(1))
            if m := re.match(r"JupyterLab: (http://127\.0\.0\.1:\d+/\S+)", line):
                url = m.group(1)
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no URL from faultbook notebook in {timeout_s:g}s: {''.join(out)}"
                )
        yield Served(url, folder, proc, out)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


class CellFailed(AssertionError):
    pass


class Session:
    """One notebook open in Chromium."""

    def __init__(self, page: Any, name: str) -> None:
        self.page = page
        self.name = name
        self.shots = 0
        self.answers: list[tuple[str, str]] = []
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for old in ARTIFACTS.glob(f"{name}-[0-9][0-9]-*.png"):  # a previous run's
            old.unlink()

    def shot(self, what: str) -> Path:
        self.shots += 1
        path = (
            ARTIFACTS
            / f"{self.name}-{self.shots:02d}-{re.sub(r'[^a-z0-9]+', '-', what.lower())[:40]}.png"
        )
        self.page.screenshot(path=str(path), full_page=False)
        return path

    def open(self, url: str) -> None:
        self.page.goto(url)
        self.page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
        # the kernel is up when the toolbar's status says idle
        self.page.wait_for_function(
            "() => { const s = document.querySelector('.jp-Notebook-ExecutionIndicator');"
            " return s && s.getAttribute('data-status') === 'idle'; }",
            timeout=90_000,
        )
        self.page.locator(".jp-Notebook .jp-Cell").first.click()
        self.page.keyboard.press("Escape")  # command mode: Shift+Enter runs and advances
        self.shot("opened")

    def cells(self) -> int:
        return int(self.page.locator(".jp-Notebook .jp-Cell").count())

    def _running(self) -> bool:
        return bool(
            self.page.evaluate(
                "() => [...document.querySelectorAll('.jp-Notebook .jp-InputPrompt')]"
                ".some(p => p.textContent.includes('[*]'))"
            )
        )

    def run_all(
        self, notebook: Path, answer: Callable[[str], str], timeout_s: float = 600.0
    ) -> None:
        """Shift+Enter on every cell of NOTEBOOK (the file, for the count) in turn; each
        code cell must finish before the next. A confirmation box gets ANSWER(prompt). A
        cell with an error fails the run."""
        count = len(json.loads(notebook.read_text())["cells"])
        self.page.wait_for_function(
            f"() => document.querySelectorAll('.jp-Notebook .jp-Cell').length >= {count}",
            timeout=30_000,
        )
        for i in range(count):
            cell = self.page.locator(".jp-Notebook .jp-Cell").nth(i)
            cell.scroll_into_view_if_needed()
            code = "jp-CodeCell" in (cell.get_attribute("class") or "")
            # select this very cell (after a confirmation the focus is elsewhere), in
            # command mode, then run it and advance
            cell.locator(".jp-InputPrompt").first.click()
            self.page.keyboard.press("Escape")
            self.page.keyboard.press("Shift+Enter")
            if not code:
                continue
            deadline = time.monotonic() + timeout_s
            while True:
                box = self.page.locator(".jp-Stdin-input")
                if box.count() and box.first.is_visible():
                    prompt = self.page.locator(".jp-Stdin-prompt").last.inner_text()
                    reply = answer(prompt)
                    self.answers.append((prompt, reply))
                    self.shot(f"cell {i} asks")
                    handle = box.first.element_handle()
                    handle.fill(reply)
                    handle.press("Enter")
                    handle.wait_for_element_state("hidden", timeout=15_000)  # the answer is in
                    continue
                prompt_text = cell.locator(".jp-InputPrompt").inner_text()
                if re.search(r"\[\d+\]", prompt_text) and not self._running():
                    break
                if time.monotonic() > deadline:
                    self.shot(f"cell {i} timeout")
                    raise CellFailed(f"{self.name}: cell {i} still running after {timeout_s:g}s")
                time.sleep(0.3)
            error = cell.locator('[data-mime-type="application/vnd.jupyter.error"]')
            if error.count():
                self.shot(f"cell {i} error")
                raise CellFailed(
                    f"{self.name}: cell {i} failed: {error.first.inner_text()[-2000:]}"
                )
            if cell.locator(".jp-OutputArea-output").count():
                self.shot(f"cell {i}")

    def text(self) -> str:
        return str(self.page.locator(".jp-Notebook").inner_text())


@contextmanager
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise AssertionError(f"{CHROMIUM} is missing: make test installs Debian's chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            yield context.new_page()
        finally:
            browser.close()


def echo(msg: str) -> None:
    sys.stderr.write(msg + "\n")
