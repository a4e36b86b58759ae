"""The lab: real Debian hosts booted with systemd-nspawn on this machine."""
