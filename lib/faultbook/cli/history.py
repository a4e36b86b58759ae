"""``faultbook history``: the archive as a static HTML site, JSON or JUnit XML."""

from __future__ import annotations

import click

from faultbook.cli.base import main


@main.command("history")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="reports/history",
    show_default=True,
    help="Where to write the site.",
)
@click.option("--json", "as_json", is_flag=True, help="Also print the history as JSON.")
@click.option(
    "--junit",
    "junit",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write JUnit XML: one test case per drill, its latest run.",
)
@click.option(
    "--recent-days",
    "recent_days",
    type=float,
    default=7.0,
    show_default=True,
    help="A pass younger than this scores 100, an older one 75.",
)
def history_cmd(out_dir: str, as_json: bool, junit: str | None, recent_days: float) -> None:
    """Every archived run, trends per drill, the latest verdict per drill and the
    reliability score per tier and overall (docs/drills.md)."""
    import math

    from faultbook.errors import ParameterError
    from faultbook.report import runner
    from faultbook.suites import history
    from faultbook.suites import junit as junit_mod

    if not (math.isfinite(recent_days) and recent_days > 0):
        raise ParameterError(f"--recent-days must be a number of days > 0, got {recent_days}")
    if junit:
        junit_mod.check_path(junit)  # before the site is built (exit 2)
    out = runner.prepare_out_dir(out_dir)
    data = history.build(out, recent_days=recent_days)
    if as_json:
        click.echo(history.json_text(data), nl=False)
    if junit:
        path = junit_mod.write(history.junit_items(data), junit, suite="history")
        click.echo(f"junit: {path}", err=as_json)
    card = data["_card"]
    tiers = ", ".join(f"{t} {v:.0f}" for t, v in sorted(card.tiers.items()))
    click.echo(
        f"history: {len(data['runs'])} runs; score {card.overall:.0f} ({tiers}); "
        f"{(out / 'index.html').resolve()}",
        err=as_json,
    )
