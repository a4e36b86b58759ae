"""Triage: from a symptom (the VIP probe failing, 5xx, latency, writes failing) along the
dependency chain to the broken link, with the evidence at each hop and the runbook that
fixes it (docs/runbooks/triage.md).

    ``evidence``  typed, immutable evidence per hop; the probes' commands and parsers;
    ``collect``   gathers it from the stack, every hop in parallel, each bounded;
    ``diagnose``  the pure decision: the broken link, its proof, the runbook(s);
    ``steps``     the runbook's steps: parameters, tables, result.json, the hand-over file.
"""
