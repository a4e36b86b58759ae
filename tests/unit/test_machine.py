from __future__ import annotations

from pathlib import Path

from faultbook.lab import machine


def test_hosts_file_keeps_peer_lines_and_sets_own_name(tmp_path: Path) -> None:
    p = tmp_path / "hosts"
    p.write_text("127.0.0.1 localhost\n127.0.1.1 oldname\n10.77.0.41 backup1\n")
    text = machine.hosts_file(p, "db3")
    assert "127.0.1.1 db3" in text and "oldname" not in text
    assert "10.77.0.41 backup1" in text
    assert machine.hosts_file(tmp_path / "missing", "db3").startswith("127.0.0.1 localhost\n")
