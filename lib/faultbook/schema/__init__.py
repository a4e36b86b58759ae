"""JSON Schemas shipped with faultbook (package data, read with importlib.resources).

``result.schema.json`` is the schema of every runbook's result.json; see
:func:`faultbook.results.validate`.
"""
