"""make docs: the mkdocs hook (README as the home page, runbook parameters tables)."""

from __future__ import annotations

import logging

import pytest

from faultbook.oncall import docsite
from faultbook.report import runner


def test_the_parameters_table_is_the_notebooks_cell() -> None:
    table = docsite.parameters_table("health-check")
    declared = [p for p in runner.parameters("health-check") if p not in runner.RUNNER_PARAMS]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == declared
    assert "| `timeout_s` | float | `10.0` | seconds to wait for each host's SSH answer |" in rows
    assert "result_dir" not in "".join(rows)
    assert "modes `drill`, `incident`" in table


def test_the_table_goes_at_the_marker_or_ends_the_parameters_section() -> None:
    assert "| `timeout_s` |" in docsite.with_parameters(
        f"# hc\n\n{docsite.MARKER}\n", "health-check"
    )
    page = "# hc\n\n## Parameters\n\nhand-written\n\n## Steps\n\n1. ssh\n"
    out = docsite.with_parameters(page, "health-check")
    params, steps = out.index("## Parameters"), out.index("## Steps")
    assert params < out.index("hand-written") < out.index("| `timeout_s` |") < steps
    assert docsite.with_parameters("# hc\n", "health-check").count("## Parameters") == 1


def test_a_hand_written_table_that_drifted_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    page = (
        "## Parameters\n\n| name | type |\n|---|---|\n| `inventory` | str |\n"
        "| `timeout` | float |\n| `result_dir` | str |\n"
    )
    with caplog.at_level(logging.WARNING, logger="mkdocs.hooks.faultbook"):
        docsite.with_parameters(page, "health-check", "runbooks/health-check.md")
    text = caplog.text
    assert "lists `timeout`, which the notebook does not declare" in text
    assert "lacks `timeout_s`, which the notebook declares" in text
    assert "result_dir" not in text  # the runner's own parameter


def test_the_readme_links_become_site_links() -> None:
    text = (
        "[a](docs/alerts.md#guardrails) [b](runbooks/db-failover.ipynb) [c](LICENSE) "
        "[d](docs/roles/) [e](https://example.org/x.md) [f](#top)"
    )
    out = docsite.readme_for_site(text, {"db-failover"}, {"alerts.md", "roles/pki.md"})
    assert out == (
        "[a](alerts.md#guardrails) [b](runbooks/db-failover.md) c d "
        "[e](https://example.org/x.md) [f](#top)"
    )


def test_folder_links_and_their_generated_index(tmp_path) -> None:
    assert docsite.folder_links("see [roles](roles/) and [x](../runbooks/#a)") == (
        "see [roles](roles/index.md) and [x](../runbooks/index.md#a)"
    )
    (tmp_path / "roles").mkdir()
    (tmp_path / "roles" / "pki.md").write_text("# pki: the CA\n")
    found = docsite.folders({"index.md", "roles/pki.md", "runbooks/index.md", "runbooks/x.md"})
    assert found == {"roles": ["roles/pki.md"]}
    assert docsite.folder_index("roles", ["roles/pki.md"], tmp_path) == (
        "# roles\n\n- [pki: the CA](pki.md)\n"
    )
