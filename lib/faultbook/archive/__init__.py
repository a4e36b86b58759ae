"""The run archive: every run's folder under $FAULTBOOK_HOME/runs/, its hash-chained audit
log, and retention (docs/drills.md)."""
