"""Drill suites (YAML files of runbooks run in turn), schedules on the machine's own
scheduler, the history site and its score, JUnit XML (docs/drills.md)."""
