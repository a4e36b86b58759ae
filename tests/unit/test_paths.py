from __future__ import annotations

from pathlib import Path

import pytest

from faultbook.errors import ConfigError
from faultbook.paths import DEFAULT_HOME, faultbook_home


def test_default_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAULTBOOK_HOME", raising=False)
    assert faultbook_home() == DEFAULT_HOME


def test_relative_home_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAULTBOOK_HOME", "relative/dir")
    with pytest.raises(ConfigError, match="relative path; expected an absolute directory"):
        faultbook_home()


def test_home_that_is_a_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    monkeypatch.setenv("FAULTBOOK_HOME", str(f))
    with pytest.raises(ConfigError, match="exists but is not a directory"):
        faultbook_home()


def test_home_that_cannot_be_created(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    monkeypatch.setenv("FAULTBOOK_HOME", str(f / "sub"))
    with pytest.raises(ConfigError, match="cannot be created"):
        faultbook_home(create=True)
