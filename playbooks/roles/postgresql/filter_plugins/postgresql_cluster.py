# -*- coding: utf-8 -*-
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

from __future__ import absolute_import, division, print_function

import re

__metaclass__ = type

_CONTROLDATA_FIELDS = {
    "sysid": r"^Database system identifier:\s*(\d+)\s*$",
    "state": r"^Database cluster state:\s*(.+?)\s*$",
    "checksums": r"^Data page checksum version:\s*(\d+)\s*$",
    "timeline": r"^Latest checkpoint's TimeLineID:\s*(\d+)\s*$",
}


class PlanError(Exception):
    """The probes describe a cluster the role must not touch on its own."""


def _parse_controldata(text):
    facts = {}
    for key, pattern in _CONTROLDATA_FIELDS.items():
        match = re.search(pattern, text or "", re.MULTILINE)
        facts[key] = match.group(1) if match else None
    for key in ("checksums", "timeline"):
        if facts[key] is not None:
            facts[key] = int(facts[key])
    return facts


def _by_host(results):
    """Index a registered loop result by the host the item was delegated to."""
    indexed = {}
    for result in results or []:
        item = result.get("item")
        host = item.get("item") if isinstance(item, dict) else item
        if host is not None:
            indexed[host] = result
    return indexed


def _facts(files, controldata, sql, marker):
    reachable = bool(files) and not files.get("unreachable", False) and not files.get("failed", False)
    names = {f["path"].rsplit("/", 1)[-1] for f in files.get("files", [])} if reachable else set()
    facts = {
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


def postgresql_cluster_probes(hostvars, db_hosts, active_hosts, others, marker):
    """Fold the probe results into ``{host: facts}`` for every db host.

    A host of this run probed itself (registered postgresql_probe_files,
    postgresql_probe_controldata, postgresql_probe_sql); a db host left out
    of the run (--limit) was probed by delegation, whose three loop results
    come in ``others``. A host that is neither (unreachable) is down.

    facts: reachable, has_cluster, member (the faultbook marker is in PGDATA),
    standby_signal, running, in_recovery, sysid, state, checksums, timeline.
    """
    delegated = [_by_host(others.get(k, {}).get("results")) for k in ("files", "controldata", "sql")]
    probes = {}
    for host in db_hosts:
        if host in active_hosts:
            hv = hostvars[host]
            probes[host] = _facts(
                hv.get("postgresql_probe_files") or {},
                hv.get("postgresql_probe_controldata"),
                hv.get("postgresql_probe_sql"),
                marker,
            )
        elif host in delegated[0]:
            probes[host] = _facts(delegated[0][host], delegated[1].get(host), delegated[2].get(host), marker)
        else:
            probes[host] = _facts({}, None, None, marker)
    return probes


def _choose_primary(probes, initial_primary):
    members = [h for h, p in probes.items() if p["reachable"] and p["member"]]
    running_primaries = sorted(h for h in members if probes[h]["running"] and not probes[h]["in_recovery"])
    if len(running_primaries) > 1:
        detail = ", ".join("%s (timeline %s)" % (h, probes[h]["timeline"]) for h in running_primaries)
        raise PlanError(
            "split brain: more than one primary is running: %s. Demote all but one "
            "(db_rejoin) before provisioning again; the role will not choose." % detail
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
            "no primary is running and several stopped hosts would start as one: %s. "
            "Start the right one by hand (or promote a standby) and run again."
            % ", ".join(stopped_primaries)
        )
    if members:
        raise PlanError(
            "the cluster exists (members: %s) but no primary is running and every "
            "member is a standby. Promote one (db_promote) and run again."
            % ", ".join(sorted(members))
        )
    if initial_primary not in probes or not probes[initial_primary]["reachable"]:
        raise PlanError(
            "fresh cluster, but the initial primary %s is not reachable" % initial_primary
        )
    return initial_primary, True


def _standby_action(probe, primary_probe, rebuild_diverged, host):
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
            "%s holds data of this cluster but is not a standby of the primary; "
            "postgresql_rebuild_diverged is false, so rejoin it (pg_rewind) first" % host
        )
    return "build"


def postgresql_cluster_plan(probes, initial_primary, rebuild_diverged=True):
    """Return ``{primary, fresh, error, hosts: {host: {role, action}}, standbys}``.

    On a situation the role must not resolve alone, ``error`` holds the
    reason and ``primary`` is empty.
    """
    try:
        primary, fresh = _choose_primary(probes, initial_primary)
        hosts = {}
        for host, probe in sorted(probes.items()):
            if host == primary:
                if fresh:
                    action = "adopt"
                else:
                    action = "keep" if probe["running"] else "start"
                hosts[host] = {"role": "primary", "action": action}
            else:
                hosts[host] = {
                    "role": "standby",
                    "action": _standby_action(probe, probes[primary], rebuild_diverged, host),
                }
    except PlanError as exc:
        return {"primary": "", "fresh": False, "error": str(exc), "hosts": {}, "standbys": []}
    standbys = sorted(h for h, p in hosts.items() if p["role"] == "standby" and p["action"] != "skip")
    return {"primary": primary, "fresh": fresh, "error": "", "hosts": hosts, "standbys": standbys}


class FilterModule(object):
    """Filters of the faultbook postgresql role."""

    def filters(self):
        return {
            "postgresql_cluster_probes": postgresql_cluster_probes,
            "postgresql_cluster_plan": postgresql_cluster_plan,
        }
