"""The on-call path: incident notebooks in JupyterLab, postmortem drafts, the docs site.

- ``oncall.incident``: incident folders (``$FAULTBOOK_HOME/incidents/``): prepare a
  runbook's copy, list the open ones, close one into the archive;
- ``oncall.jupyter``: JupyterLab for one incident folder (loopback, token, the
  project's kernel);
- ``oncall.postmortem``: a postmortem draft (Markdown and HTML) from archived runs;
- ``oncall.docsite``: the mkdocs hook of ``make docs`` (the README as the home page,
  each runbook's parameters table from its parameters cell).
"""
