# faultbook: `make demo` and `make test` do all the set-up on a fresh Debian
# bookworm machine as root: apt packages, the venv, the lab image.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    := .venv
PY      := $(VENV)/bin/python
FB      := $(VENV)/bin/faultbook
PYTEST  := $(VENV)/bin/pytest
REPORTS ?= reports
# What the controller needs from Debian (the lab hosts get theirs in the lab image).
APT_PACKAGES := systemd-container debootstrap iproute2 iptables util-linux procps \
                openssh-client iputils-ping python3 python3-venv python3-dev wrk \
                cron chromium nmap ssh-audit testssl.sh

export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help setup apt venv image demo test test-full lint docs docs-examples unit integration nbval bench bench-alerts gameday lab-up lab-down clean

help:
	@echo "make demo    set up, boot the lab, run the runbooks, print the report's path"
	@echo "make test    set up, lint, unit tests, lab integration tests, nbval; lab down at the end"
	@echo "make test-full  make test plus the slower integration cases marked extended"
	@echo "make bench   measure lab up/down, VIP throughput and each drill x5 (docs/benchmarks.md)"
	@echo "make bench-alerts  the autopilot drills x5: fault -> alert -> receiver -> runbook"
	@echo "make docs    the docs site (mkdocs, Material) from docs/ and the README into site/"

apt:
	@missing=$$(for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing $$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	/usr/bin/python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

venv: apt $(VENV)/.installed

image: venv
	$(FB) lab image

setup: apt venv image

# The docs site: mkdocs --strict, so a broken link or a runbook page whose parameters
# table disagrees with its notebook fails (and so fails make lint, make test).
docs: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

# The docs site's committed examples: each runbook's newest archived run (a drill that
# passed first) into docs/examples/<runbook>/, for `git add docs/examples` after lab drills.
docs-examples: venv
	$(PY) -m faultbook.oncall.docsite examples

lint: venv docs
	$(VENV)/bin/ruff check lib tests runbooks playbooks
	$(VENV)/bin/ruff format --check lib tests runbooks playbooks
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy playbooks/roles/haproxy/files/haproxy-server-state
	$(VENV)/bin/mypy playbooks/roles/monitoring/files/faultbook-pgbackrest-metrics
	$(VENV)/bin/mypy playbooks/roles/journal/files/faultbook-log-metrics
	cd playbooks && ANSIBLE_CONFIG=ansible.cfg ../$(VENV)/bin/ansible-playbook \
	  -i ../inventories/lab/hosts.yml --syntax-check site.yml
	$(VENV)/bin/ansible-lint --profile production playbooks/

# promtool (rule tests) comes from the lab image: the controller needs no Prometheus.
IMAGE_ROOT = $$($(PY) -c 'from faultbook.lab import image; from faultbook.paths import faultbook_home; print(image.image_dir(faultbook_home()) / "rootfs")')

unit: image
	FAULTBOOK_PROMTOOL="chroot $(IMAGE_ROOT) promtool" FAULTBOOK_PROMTOOL_REQUIRED=1 \
	  $(PYTEST) -q tests/unit

# `lab up` provisions the stack (playbooks/site.yml); the tests then check it. The stack's
# tests and the drills run first, then nbval (every runbook needs the provisioned stack),
# and the lab's destructive tests (crash, partition, down: they wipe the stack) last.
NBVAL = $(PYTEST) -q --nbval-lax -p no:cacheprovider runbooks/

# `lab up` starts the alert receiver; the tests stop it, except test_alerts.py, which
# starts it for itself: the others inject faults outside any run, and autopilot would
# act on them (a run holds the inventory's lock; a bare fault in a test does not).
# make test runs the integration tests not marked `extended`; make test-full runs them all
# (the extended ones are slower cases of capabilities the others already cover: a whole
# second provision, more browser runs, more drills; README.md, "Tests").
MARK ?= integration and not extended

# LAB_UP: how the integration stage gets its lab; make test boots it earlier, alongside
# lint and the unit tests, and passes LAB_UP=true.
LAB_UP ?= $(FB) lab up

integration: setup
	$(LAB_UP)
	$(FB) alerts stop
	$(PYTEST) -q --durations=25 -m "$(MARK)" tests/integration/test_stack.py \
	  tests/integration/test_security.py tests/integration/test_hardening.py \
	  tests/integration/test_logs.py tests/integration/test_triage.py \
	  tests/integration/test_ansible.py tests/integration/test_backup.py \
	  tests/integration/test_webtier.py tests/integration/test_incidents.py \
	  tests/integration/test_oncall_browser.py tests/integration/test_drills.py \
	  tests/integration/test_schedule.py tests/integration/test_detection.py \
	  tests/integration/test_rollback.py tests/integration/test_restore.py \
	  tests/integration/test_alerts.py
	$(NBVAL)
	$(PYTEST) -q -m "$(MARK)" tests/integration/test_lab.py

# nbval alone: every runbook in incident mode against a healthy, provisioned lab.
nbval: setup
	$(FB) lab up
	$(NBVAL)

# Runs every stage in order and always takes the lab down, even when a stage failed.
# The lab image is built (when not cached), then the lab booted and provisioned
# (about 5 minutes), in the background while lint and the unit tests run: neither
# touches the lab (the unit tests that need a lab state directory make their own
# under tmp). The unit tests wait for the image only (promtool comes from it). The
# background's output is shown once the lab is up; the integration stage starts
# only after lint, the unit tests and the lab all succeeded.
LAB_UP_LOG = $(REPORTS)/lab-up.log
IMAGE_READY = $(REPORTS)/.lab-image-ready

test: apt venv
	@rc=0; mkdir -p $(REPORTS); rm -f $(IMAGE_READY); \
	echo "== the lab image, then the lab (boot and provision), in the background (log: $(LAB_UP_LOG))"; \
	( $(FB) lab image && touch $(IMAGE_READY) && $(FB) lab up ) > $(LAB_UP_LOG) 2>&1 & up=$$!; \
	$(MAKE) --no-print-directory lint && \
	{ while [ ! -e $(IMAGE_READY) ] && kill -0 $$up 2>/dev/null; do sleep 2; done; \
	  [ -e $(IMAGE_READY) ] || { echo "the lab image was not built: see $(LAB_UP_LOG)"; false; }; } && \
	$(MAKE) --no-print-directory unit || rc=$$?; \
	echo "== waiting for the lab"; wait $$up; uprc=$$?; cat $(LAB_UP_LOG); \
	if [ $$uprc -ne 0 ]; then echo "the lab image or faultbook lab up failed (exit $$uprc)"; rc=1; fi; \
	if [ $$rc -eq 0 ]; then $(MAKE) --no-print-directory integration LAB_UP=true || rc=$$?; fi; \
	echo "== taking the lab down"; $(FB) lab down || rc=1; \
	exit $$rc

# Everything make test runs, plus the integration tests marked `extended`.
test-full: setup
	@$(MAKE) --no-print-directory test MARK=integration

# The health check, then the web node, database and load balancer drills and the
# point-in-time restore drill in turn; `faultbook demo` prints the summary table
# and the report's path.
demo: setup
	$(FB) lab up
	@rc=0; $(FB) demo --out $(REPORTS)/demo || rc=$$?; \
	echo "the lab is still up: explore with 'faultbook lab status', stop with 'faultbook lab down'"; \
	exit $$rc

# Lab up/down (the lab must be down), then, on a freshly provisioned lab, the
# stack's throughput, every failover drill five times, and the stress runbook's capacity.
# Figures, not tests: they go into docs/benchmarks.md.
bench: setup
	$(PY) -m faultbook.report.bench lab
	$(FB) lab up
	$(PY) -m faultbook.report.bench hosts --seconds 60
	$(PY) -m faultbook.report.bench vip --seconds 20
	$(PY) -m faultbook.report.bench drills --runs 5 --out $(REPORTS)/bench
	$(PY) -m faultbook.report.bench restore --seed-mib 1024 --runs 3 --out $(REPORTS)/bench
	$(PY) -m faultbook.alerts.bench --runs 5 --out $(REPORTS)/bench
	$(FB) run stress -p mode drill --out $(REPORTS)/bench/stress
	$(FB) lab down

# The autopilot drills alone (alert -> receiver -> runbook), 5 runs per scenario.
bench-alerts: setup
	$(FB) lab up
	$(PY) -m faultbook.alerts.bench --runs 5 --out $(REPORTS)/bench

# The game day (docs/drills.md#game-day): suites/gameday.yml, every fault on every tier the
# runbooks can drill, then its fault x tier matrix (RTO, lost writes, failed requests, the
# verdict or what failed) in docs/gameday.md. Hours, and destructive: not part of make test.
# The matrix is written even when entries failed; the exit status is the suite's.
# The lab's data disks (FAULTBOOK_LAB_DATA_DISKS=1) are what the disk-full entries fill:
# boot the lab for the game day from down (lab up leaves a running lab as it is).
gameday: setup
	FAULTBOOK_LAB_DATA_DISKS=1 $(FB) lab up
	@out=$(REPORTS)/suite-gameday-$$(date -u +%Y%m%dT%H%M%SZ); rc=0; \
	$(FB) suite run gameday --out $$out --junit $$out/junit.xml || rc=$$?; \
	$(PY) -m faultbook.suites.gameday matrix --suite-dir $$out --out docs/gameday.md || rc=1; \
	echo "the lab is still up: explore with 'faultbook lab status', stop with 'faultbook lab down'"; \
	exit $$rc

lab-up: setup
	$(FB) lab up

lab-down: venv
	$(FB) lab down

clean:
	rm -rf $(VENV) $(REPORTS) .pytest_cache .mypy_cache .ruff_cache
