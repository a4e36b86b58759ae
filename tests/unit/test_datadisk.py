"""The lab's data disks (lab.machine.DATA_FS): the bounded filesystem a disk-full drill fills
in place of the controller's disk. Commands faked: nothing is made, mounted or booted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from faultbook.errors import LabError
from faultbook.lab import machine


class FakeMounts:
    """machine._run and is_mounted over a set of mounted paths; commands recorded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: str = "") -> None:
        self.mounted: set[Path] = set()
        self.cmds: list[list[str]] = []
        self.fail = fail
        monkeypatch.setattr(machine, "_run", self.run)
        monkeypatch.setattr(machine, "is_mounted", lambda p: p in self.mounted)

    def run(self, cmd: list[str], what: str) -> None:
        self.cmds.append(cmd)
        if self.fail and self.fail == cmd[0]:
            raise LabError(f"cannot {what}: {cmd[0]} failed")
        if cmd[0] == "mount":
            self.mounted.add(Path(cmd[-1]))


@pytest.fixture
def image(tmp_path: Path) -> Path:
    root = tmp_path / "image"
    (root / "var/lib/prometheus/node-exporter").mkdir(parents=True)
    (root / "var/lib/prometheus").chmod(0o750)
    return root


def test_db_backup_and_mon_hosts_get_a_data_disk() -> None:
    assert machine.data_fs_for(("db",)) == ("/var/lib/postgresql", 8192)
    assert machine.data_fs_for(["backup"]) == ("/var/lib/pgbackrest", 12288)
    assert machine.data_fs_for(("mon",)) == ("/var/lib/prometheus", 4096)
    assert machine.data_fs_for(("web",)) is None and machine.data_fs_for(("lb",)) is None


def test_a_new_data_disk_is_sparse_holds_the_images_files_and_is_mounted(
    tmp_path: Path, image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = FakeMounts(monkeypatch)
    d = machine.HostDirs(tmp_path / "hosts/mon1")
    assert machine.mount_data(d, image, "/var/lib/prometheus", 64)
    mkfs, mount = m.cmds
    assert mkfs[:3] == ["mkfs.ext4", "-q", "-F"] and "nodiscard" in mkfs
    assert mkfs[-3:] == ["-d", str(image / "var/lib/prometheus"), str(d.data_image) + ".new"]
    assert mount == ["mount", "-o", "loop", str(d.data_image), str(d.data)]
    assert d.data_image.stat().st_size == 64 << 20
    assert d.data_image.stat().st_blocks == 0  # sparse: the controller pays for what is written
    assert d.data.stat().st_mode & 0o777 == 0o750  # its root looks like the image's directory
    # Mounted already: nothing more; made already: only mounted again.
    assert machine.mount_data(d, image, "/var/lib/prometheus", 64) and len(m.cmds) == 2
    m.mounted.clear()
    assert machine.mount_data(d, image, "/var/lib/prometheus", 64)
    assert [c[0] for c in m.cmds] == ["mkfs.ext4", "mount", "mount"]


def test_a_host_with_data_on_its_overlay_keeps_it_there(
    tmp_path: Path, image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = FakeMounts(monkeypatch)
    d = machine.HostDirs(tmp_path / "hosts/db1")
    (d.upper / "var/lib/postgresql/15/main").mkdir(parents=True)
    assert not machine.mount_data(d, image, "/var/lib/postgresql", 64)
    assert m.cmds == [] and not d.data_image.exists()


@pytest.mark.parametrize("failing", ["mkfs.ext4", "mount"])
def test_a_data_disk_that_cannot_be_made_leaves_nothing(
    tmp_path: Path, image: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    FakeMounts(monkeypatch, fail=failing)
    d = machine.HostDirs(tmp_path / "hosts/db1")
    with pytest.raises(LabError, match=f"{failing} failed"):
        machine.mount_data(d, image, "/var/lib/postgresql", 64)
    assert not d.data_image.exists() and not list(d.base.glob("data.ext4*"))


def test_an_existing_data_disk_that_cannot_be_mounted_is_kept(
    tmp_path: Path, image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    FakeMounts(monkeypatch, fail="mount")
    d = machine.HostDirs(tmp_path / "hosts/db1")
    d.base.mkdir(parents=True)
    d.data_image.write_bytes(b"the host's data")
    with pytest.raises(LabError):
        machine.mount_data(d, image, "/var/lib/postgresql", 64)
    assert d.data_image.read_bytes() == b"the host's data"


def _lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[tuple[str, Any]]]:
    from faultbook.lab import lab as lab_mod

    monkeypatch.setenv("FAULTBOOK_HOME", str(tmp_path))
    lab = lab_mod.Lab()
    (lab.ssh_dir / "hostkeys").mkdir(parents=True)
    (lab.ssh_dir / "id_ed25519.pub").write_text("ssh-ed25519 AAAA test\n")
    started: list[tuple[str, Any]] = []
    monkeypatch.setattr(machine, "mount", lambda d, root: None)
    monkeypatch.setattr(machine, "personalise", lambda *a: None)
    monkeypatch.setattr(
        machine, "start", lambda name, d, bridge, binds=(): started.append((name, binds)) or 1
    )
    return lab, started


def test_boot_binds_the_data_disk_into_the_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab, started = _lab(tmp_path, monkeypatch)
    monkeypatch.setattr(machine, "mount_data", lambda d, root, guest, size: True)
    monkeypatch.setenv(machine.DATA_DISKS_ENV, "1")
    lab._boot("db2", tmp_path / "image")
    lab._boot("web1", tmp_path / "image")
    assert started == [
        ("db2", ((lab.dirs("db2").data, "/var/lib/postgresql"),)),
        ("web1", ()),
    ]


def test_data_disks_are_opt_in_but_an_existing_one_is_always_mounted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab, started = _lab(tmp_path, monkeypatch)
    monkeypatch.setattr(machine, "mount_data", lambda d, root, guest, size: True)
    monkeypatch.delenv(machine.DATA_DISKS_ENV, raising=False)
    lab._boot("db2", tmp_path / "image")
    assert started == [("db2", ())]
    # a disk made earlier holds the host's data: it is mounted whatever the setting
    lab.dirs("db3").data_image.parent.mkdir(parents=True, exist_ok=True)
    lab.dirs("db3").data_image.write_bytes(b"")
    lab._boot("db3", tmp_path / "image")
    assert started[-1] == ("db3", ((lab.dirs("db3").data, "/var/lib/postgresql"),))


def test_boot_without_a_data_disk_when_none_can_be_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No loop devices or no mkfs.ext4 must not break `lab up`: the host boots on its
    overlay (and disk-full refuses there); a host whose data is on its disk never does."""
    lab, started = _lab(tmp_path, monkeypatch)

    def broken(d: machine.HostDirs, root: Path, guest: str, size: int) -> bool:
        raise LabError("cannot mount the data disk: no loop device")

    monkeypatch.setattr(machine, "mount_data", broken)
    lab._boot("backup1", tmp_path / "image")
    assert started == [("backup1", ())]
    d = lab.dirs("db1")
    d.base.mkdir(parents=True)
    d.data_image.write_bytes(b"data")
    with pytest.raises(LabError, match="no loop device"):
        lab._boot("db1", tmp_path / "image")
    assert [n for n, _ in started] == ["backup1"]


def test_down_never_deletes_a_host_whose_data_disk_stays_mounted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from faultbook.lab import lab as lab_mod

    lab, _ = _lab(tmp_path, monkeypatch)
    for h in lab.inv.hosts:
        lab.dirs(h).upper.mkdir(parents=True)
    calls: list[str] = []
    monkeypatch.setattr(lab_mod, "preflight", lambda: None)
    monkeypatch.setattr(machine, "find_nspawn", lambda name, root: None)
    monkeypatch.setattr(machine, "unmount", lambda d: None)
    monkeypatch.setattr(machine, "remove_cgroups", lambda name: None)
    monkeypatch.setattr(machine, "unmount_data", lambda d: d.base.name != "db3")
    monkeypatch.setattr(machine, "processes", lambda hosts: {h: set() for h in hosts})
    monkeypatch.setattr(lab_mod.net, "veths", lambda: [])
    monkeypatch.setattr(lab_mod.net, "bridge_down", lambda bridge: calls.append("bridge_down"))
    with pytest.raises(LabError, match="the data disk of db3 stays mounted"):
        lab.down()
    assert lab.dirs("db3").upper.exists() and not lab.dirs("db1").base.exists()
    assert calls == []
