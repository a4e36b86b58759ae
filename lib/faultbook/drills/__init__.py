"""Drills: the fault catalogue and its journal, client load, what clients saw (DrillResult),
the ledger proofs, the procedure every runbook shares and its step helpers. Imports the
plumbing, ``faultbook.lab``, ``faultbook.stack`` and ``faultbook.backup``."""
