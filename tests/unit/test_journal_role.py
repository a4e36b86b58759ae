"""Role journal as it renders for lab hosts, and its agreement with faultbook.logs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from role_templates import ROLES, render

from faultbook import logs

ROLE = ROLES / "journal"


def _yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def test_each_host_has_one_uploader_per_receiver_with_its_own_cursor() -> None:
    urls = {
        mon: render("journal", "journal-upload.env.j2", "web1", extra={"journal_receiver": mon})
        for mon in ("mon1", "mon2")
    }
    assert "JOURNAL_UPLOAD_URL=https://10.77.0.51:19532\n" in urls["mon1"]
    assert "JOURNAL_UPLOAD_URL=https://10.77.0.52:19532\n" in urls["mon2"]
    unit = render("journal", "journal-upload@.service.j2", "web1")
    assert "--save-state=/var/lib/faultbook-journal-upload/%i.state" in unit
    assert "EnvironmentFile=/etc/faultbook/journal-upload/%i.env" in unit
    assert "StartLimitIntervalSec=0" in unit and "Restart=always" in unit
    assert "SupplementaryGroups=systemd-journal ssl-cert" in unit


def test_an_ipv6_receiver_is_bracketed(tmp_path: Path) -> None:
    inv = tmp_path / "hosts.yml"
    inv.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "children": {
                        "mon": {"hosts": {"mon1": {"ansible_host": "fd00::51"}}},
                        "web": {"hosts": {"web1": {"ansible_host": "fd00::21"}}},
                    }
                }
            }
        )
    )
    env = render(
        "journal",
        "journal-upload.env.j2",
        "web1",
        inventory=inv,
        extra={"journal_receiver": "mon1", "journal_remote_port": 6514},
    )
    assert "JOURNAL_UPLOAD_URL=https://[fd00::51]:6514\n" in env


def test_uploads_check_the_receiver_against_the_inventory_ca() -> None:
    conf = render("journal", "journal-upload.conf.j2", "db1")
    assert "TrustedCertificateFile=/etc/faultbook/tls/ca.crt" in conf
    assert "ServerKeyFile=/etc/faultbook/tls/host.key" in conf
    assert "NetworkTimeoutSec=60s" in conf


def test_the_receiver_writes_one_file_where_the_library_reads() -> None:
    dropin = render("journal", "systemd-journal-remote.service.conf.j2", "mon1")
    lines = dropin.splitlines()
    assert "ExecStart=" in lines  # Debian's ExecStart reset, then ours
    assert (
        "ExecStart=/lib/systemd/systemd-journal-remote --listen-https=-3 --split-mode=none "
        "--output=/var/log/journal/remote/all.journal" in lines
    )
    role_vars = _yaml(ROLE / "vars" / "main.yml")
    assert role_vars["journal_remote_dir"] == logs.REMOTE_DIR
    assert role_vars["journal_remote_output"].startswith(logs.REMOTE_DIR + "/")
    defaults = _yaml(ROLE / "defaults" / "main.yml")
    assert defaults["journal_receiver_group"] == logs.DEFAULT_RECEIVER_GROUP
    socket = render("journal", "systemd-journal-remote.socket.conf.j2", "mon1")
    assert socket.splitlines()[-2:] == ["ListenStream=", "ListenStream=19532"]
    remote = render("journal", "journal-remote.conf.j2", "mon1")
    assert "ServerCertificateFile=/etc/faultbook/tls/host.crt" in remote
    assert "\nTrustedCertificateFile" not in remote  # Debian's build refuses it (no GnuTLS)


def test_the_vacuum_bounds_the_archive_by_size() -> None:
    service = render("journal", "journal-vacuum.service.j2", "mon2")
    assert (
        "ExecStart=/usr/bin/journalctl --quiet --directory=/var/log/journal/remote "
        "--vacuum-size=1G" in service
    )
    timer = render("journal", "journal-vacuum.timer.j2", "mon2")
    assert "OnUnitActiveSec=5min" in timer


def test_defaults_and_argument_specs_agree() -> None:
    defaults = _yaml(ROLE / "defaults" / "main.yml")
    spec = _yaml(ROLE / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert set(defaults) == set(spec)
    for name, value in defaults.items():
        assert spec[name]["default"] == value, name
