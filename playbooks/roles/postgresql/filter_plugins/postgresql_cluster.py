"""Decide who is primary and what each db host needs, from read-only probes.

The postgresql role probes every db host (files in PGDATA, pg_controldata,
``SELECT pg_is_in_recovery()``) and hands the raw results to two filters:

``postgresql_cluster_probes``
    folds the three registered loop results into one dict per host;
``postgresql_cluster_plan``
    picks the current primary and an action for every host.

The decision lives here, in plain Python, so that it can be read in one
sitting and tested without a lab. It never guesses during a split brain:
two running primaries that both belong to the cluster stop the run.

Actions in the plan:

``adopt``  (primary only) first provision: take over the cluster that is in
           PGDATA (the Debian default one), mark it as ours, start it.
``keep``   the host is running in the right role: leave its data alone.
``start``  the host's data is right but the server is stopped: start it.
``build``  (standby only) PGDATA is not a standby of this cluster: stop the
           server, empty PGDATA and pg_basebackup from the primary.
``skip``   the host did not answer over SSH: nothing can be done there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

# One host's facts (see postgresql_cluster_probes); a registered task result.
Facts = dict[str, Any]
Result = Mapping[str, Any]

_CONTROLDATA_FIELDS = {
    "sysid": r"^Database system identifier:\s*(\d+)\s*$",
    "state": r"^Database cluster state:\s*(.+?)\s*$",
    "checksums": r"^Data page checksum version:\s*(\d+)\s*$",
    "timeline": r"^Latest checkpoint's TimeLineID:\s*(\d+)\s*$",
}


class PlanError(Exception):
    """The probes describe a cluster the role must not touch on its own."""


def _parse_controldata(text: str | None) -> Facts:
    facts: Facts = {}
    for key, pattern in _CONTROLDATA_FIELDS.items():
        match = re.search(pattern, text or "", re.MULTILINE)
        facts[key] = match.group(1) if match else None
    for key in ("checksums", "timeline"):
        if facts[key] is not None:
            facts[key] = int(facts[key])
    return facts


def _by_host(results: Iterable[Result] | None) -> dict[str, Result]:
    """Index a registered loop result by the host the item was delegated to."""
    indexed: dict[str, Result] = {}
    for result in results or []:
        item = result.get("item")
        host = item.get("item") if isinstance(item, dict) else item
        if host is not None:
            indexed[host] = result
    return indexed


def _facts(files: Result, controldata: Result | None, sql: Result | None, marker: str) -> Facts:
    reachable = bool(files) and not files.get("unreachable") and not files.get("failed")
    names = {f["path"].rsplit("/", 1)[-1] for f in files.get("files", [])} if reachable else set()
    facts: Facts = {
        "reachable": reachable,
        "has_cluster": "PG_VERSION" in names,
        "member": marker in names,
        "standby_signal": "standby.signal" in names,
        "running": False,
        "in_recovery": None,
    }
    facts.update(_parse_controldata((controldata or {}).get("stdout", "")))
    rows = (sql or {}).get("query_result")
    if reachable and rows:
        facts["running"] = True
        facts["in_recovery"] = bool(rows[0].get("in_recovery"))
    return facts


def postgresql_cluster_probes(
    hostvars: Mapping[str, Mapping[str, Any]],
    db_hosts: Iterable[str],
    active_hosts: Iterable[str],
    others: Mapping[str, Result],
    marker: str,
) -> dict[str, Facts]:
    """Fold the probe results into ``{host: facts}`` for every db host.

    A host of this run probed itself (registered postgresql_probe_files,
    postgresql_probe_controldata, postgresql_probe_sql); a db host left out
    of the run (--limit) was probed by delegation, whose three loop results
    come in ``others``. A host that is neither (unreachable) is down.

    facts: reachable, has_cluster, member (the faultbook marker is in PGDATA),
    standby_signal, running, in_recovery, sysid, state, checksums, timeline.
    """
    files, controldata, sql = (
        _by_host(others.get(k, {}).get("results")) for k in ("files", "controldata", "sql")
    )
    active = set(active_hosts)
    probes: dict[str, Facts] = {}
    for host in db_hosts:
        if host in active:
            hv = hostvars[host]
            probes[host] = _facts(
                hv.get("postgresql_probe_files") or {},
                hv.get("postgresql_probe_controldata"),
                hv.get("postgresql_probe_sql"),
                marker,
            )
        elif host in files:
            probes[host] = _facts(files[host], controldata.get(host), sql.get(host), marker)
        else:
            probes[host] = _facts({}, None, None, marker)
    return probes


def _choose_primary(probes: Mapping[str, Facts], initial_primary: str) -> tuple[str, bool]:
    members = [h for h, p in probes.items() if p["reachable"] and p["member"]]
    running_primaries = sorted(
        h for h in members if probes[h]["running"] and not probes[h]["in_recovery"]
    )
    if len(running_primaries) > 1:
        detail = ", ".join(f"{h} (timeline {probes[h]['timeline']})" for h in running_primaries)
        raise PlanError(
            f"split brain: more than one primary is running: {detail}. Demote all but one "
            "(db_rejoin) before provisioning again; the role will not choose."
        )
    if running_primaries:
        return running_primaries[0], False

    stopped_primaries = sorted(
        h for h in members if not probes[h]["running"] and not probes[h]["standby_signal"]
    )
    if len(stopped_primaries) == 1:
        return stopped_primaries[0], False
    if len(stopped_primaries) > 1:
        raise PlanError(
            "no primary is running and several stopped hosts would start as one: "
            f"{', '.join(stopped_primaries)}. "
            "Start the right one by hand (or promote a standby) and run again."
        )
    if members:
        raise PlanError(
            f"the cluster exists (members: {', '.join(sorted(members))}) but no primary is "
            "running and every member is a standby. Promote one (db_promote) and run again."
        )
    if initial_primary not in probes or not probes[initial_primary]["reachable"]:
        raise PlanError(
            f"fresh cluster, but the initial primary {initial_primary} is not reachable"
        )
    return initial_primary, True


def _standby_action(probe: Facts, primary_probe: Facts, rebuild_diverged: bool, host: str) -> str:
    if not probe["reachable"]:
        return "skip"
    follows = (
        probe["member"]
        and probe["standby_signal"]
        and probe["sysid"] is not None
        and probe["sysid"] == primary_probe["sysid"]
    )
    if follows:
        return "keep" if probe["running"] else "start"
    if probe["member"] and not rebuild_diverged:
        raise PlanError(
            f"{host} holds data of this cluster but is not a standby of the primary; "
            "postgresql_rebuild_diverged is false, so rejoin it (pg_rewind) first"
        )
    return "build"


def postgresql_cluster_plan(
    probes: Mapping[str, Facts], initial_primary: str, rebuild_diverged: bool = True
) -> dict[str, Any]:
    """Return ``{primary, fresh, error, hosts: {host: {role, action}}, standbys}``.

    On a situation the role must not resolve alone, ``error`` holds the
    reason and ``primary`` is empty.
    """
    try:
        primary, fresh = _choose_primary(probes, initial_primary)
        hosts: dict[str, dict[str, str]] = {}
        for host, probe in sorted(probes.items()):
            if host == primary:
                action = "adopt" if fresh else "keep" if probe["running"] else "start"
                hosts[host] = {"role": "primary", "action": action}
            else:
                hosts[host] = {
                    "role": "standby",
                    "action": _standby_action(probe, probes[primary], rebuild_diverged, host),
                }
    except PlanError as exc:
        return {"primary": "", "fresh": False, "error": str(exc), "hosts": {}, "standbys": []}
    standbys = sorted(
        h for h, p in hosts.items() if p["role"] == "standby" and p["action"] != "skip"
    )
    return {"primary": primary, "fresh": fresh, "error": "", "hosts": hosts, "standbys": standbys}


class FilterModule:
    """Filters of the faultbook postgresql role."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "postgresql_cluster_probes": postgresql_cluster_probes,
            "postgresql_cluster_plan": postgresql_cluster_plan,
        }
