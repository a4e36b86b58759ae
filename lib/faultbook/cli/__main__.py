"""``python -m faultbook.cli``: the ``faultbook`` command."""

from faultbook.cli import main

main()
