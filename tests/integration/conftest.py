"""Integration tests run against the real lab; they bring it up if it is not."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from faultbook.lab.lab import Lab


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (they boot the lab)")
    lab_ = Lab()
    lab_.up()
    yield lab_
