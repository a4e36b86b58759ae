"""Build and cache the lab's root image with debootstrap.

The image holds every package the stack needs (lab hosts cannot reach a
registry), with every service disabled except sshd and systemd-networkd;
Ansible roles enable what each host runs. It is keyed by a hash of the
package list and this recipe, and rebuilt only when that changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from faultbook.errors import LabError

log = logging.getLogger(__name__)

SUITE = "bookworm"
MIRROR = os.environ.get("FAULTBOOK_MIRROR", "http://deb.debian.org/debian")
SECURITY_MIRROR = os.environ.get(
    "FAULTBOOK_SECURITY_MIRROR", "http://deb.debian.org/debian-security"
)
# Bump when the recipe below changes in a way that alters the image.
RECIPE_VERSION = "3"
DEPLOY_USER = "deploy"

PRESET = """\
# faultbook lab image: only what makes a host reachable starts at boot.
enable ssh.service
enable systemd-networkd.service
enable systemd-networkd.socket
disable *
"""

SSHD_LAB = """\
# faultbook lab image: keys only; the lab installs one pinned host key per host.
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
"""


def package_list() -> list[str]:
    text = resources.files("faultbook.lab").joinpath("packages.txt").read_text()
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def image_key(packages: list[str] | None = None) -> str:
    pkgs = sorted(packages if packages is not None else package_list())
    blob = "\n".join([SUITE, RECIPE_VERSION, MIRROR, *pkgs]).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def image_dir(home: Path) -> Path:
    return home / "images" / f"{SUITE}-{image_key()}"


def is_built(home: Path) -> bool:
    return (image_dir(home) / ".complete").is_file()


def _run(cmd: list[str], logf: Path, what: str) -> None:
    log.info("image: %s", what)
    with logf.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if rc.returncode != 0:
        raise LabError(
            f"image build failed while trying to {what} (rc={rc.returncode}); see {logf}"
        )


@contextlib.contextmanager
def _chroot_mounts(root: Path) -> Iterator[None]:
    mounted: list[Path] = []
    try:
        for src, rel, opts in (
            ("proc", "proc", ["-t", "proc"]),
            ("sysfs", "sys", ["-t", "sysfs"]),
            ("/dev", "dev", ["--bind"]),
            ("devpts", "dev/pts", ["-t", "devpts", "-o", "newinstance,ptmxmode=0666"]),
        ):
            target = root / rel
            target.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", *opts, src, str(target)], check=True)
            mounted.append(target)
        yield
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", "-l", str(target)], check=False)


def build(home: Path, force: bool = False) -> Path:
    """Return the image's root directory, building it first if needed."""
    final = image_dir(home)
    if is_built(home) and not force:
        return final / "rootfs"
    for tool in ("debootstrap", "chroot"):
        if shutil.which(tool) is None:
            raise LabError(f"{tool} is not installed; run: apt-get install debootstrap")
    work = final.with_name(final.name + ".building")
    if work.exists():
        shutil.rmtree(work)
    root = work / "rootfs"
    root.mkdir(parents=True)
    logf = work / "build.log"
    pkgs = package_list()
    _run(
        ["debootstrap", "--variant=minbase", SUITE, str(root), MIRROR],
        logf,
        "debootstrap a minimal Debian " + SUITE,
    )
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    (root / "etc/apt/sources.list.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/apt/sources.list.d/debian.sources").write_text(
        f"Types: deb\nURIs: {MIRROR}\nSuites: {SUITE} {SUITE}-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        f"Types: deb\nURIs: {SECURITY_MIRROR}\nSuites: {SUITE}-security\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\n# no service starts inside the image build\nexit 101\n")
    policy.chmod(0o755)
    # Each db host creates its own cluster (the postgresql role), never the image.
    pgc = root / "etc/postgresql-common/createcluster.d"
    pgc.mkdir(parents=True, exist_ok=True)
    (pgc / "00-faultbook.conf").write_text("create_main_cluster = false\n")
    env = ["env", "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C"]
    with _chroot_mounts(root):
        _run(["chroot", str(root), *env, "apt-get", "update", "-q"], logf, "apt-get update")
        _run(
            [
                "chroot",
                str(root),
                *env,
                "apt-get",
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                *pkgs,
            ],
            logf,
            "install the stack's packages",
        )
        _run(["chroot", str(root), "apt-get", "clean"], logf, "clean the apt cache")
    policy.unlink()
    shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    (root / "etc/ssh/sshd_config.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/ssh/sshd_config.d/00-faultbook-lab.conf").write_text(SSHD_LAB)
    preset_dir = root / "etc/systemd/system-preset"
    preset_dir.mkdir(parents=True, exist_ok=True)
    (preset_dir / "00-faultbook.preset").write_text(PRESET)
    _run(["systemctl", f"--root={root}", "preset-all"], logf, "disable every service unit")
    _run(
        [
            "chroot",
            str(root),
            "useradd",
            "--create-home",
            "--shell",
            "/bin/bash",
            "--user-group",
            DEPLOY_USER,
        ],
        logf,
        f"create the {DEPLOY_USER} user",
    )
    sudoers = root / "etc/sudoers.d/90-faultbook-deploy"
    sudoers.write_text(f"{DEPLOY_USER} ALL=(ALL:ALL) NOPASSWD: ALL\n")
    sudoers.chmod(0o440)
    (work / ".complete").write_text("\n".join([image_key(), *pkgs]) + "\n")
    if final.exists():
        shutil.rmtree(final)
    work.rename(final)
    log.info("image: built %s", final)
    return final / "rootfs"


def prune(home: Path) -> list[Path]:
    """Remove cached images other than the current one; return what was removed."""
    keep = image_dir(home)
    removed = []
    for d in (home / "images").glob(f"{SUITE}-*"):
        if d != keep:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed
