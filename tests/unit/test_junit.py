"""JUnit XML: one test case per drill, metrics as properties, a failure from the verdict;
validated against tests/unit/fixtures/junit.xsd with xmlschema."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest
import xmlschema
from defusedxml import ElementTree as SafeET
from fakeruns import fake_result

from faultbook.errors import ResultError, UsageError
from faultbook.suites import junit
from faultbook.suites.model import Entry

XSD = xmlschema.XMLSchema(Path(__file__).parent / "fixtures" / "junit.xsd")


def _docs(tmp_path: Path) -> list[dict]:
    return [
        fake_result(tmp_path / "a", "db-failover", started="2026-11-27T10:00:00.000Z"),
        fake_result(tmp_path / "b", "lb-failover", verdict="fail"),
    ]


def test_one_case_per_drill_with_metrics_and_a_failure(tmp_path: Path) -> None:
    out = junit.write(_docs(tmp_path), tmp_path / "junit.xml", suite="smoke")
    XSD.validate(str(out))
    root = SafeET.parse(out).getroot()
    assert root.tag == "testsuites" and root.get("tests") == "2" and root.get("failures") == "1"
    (suite,) = root
    assert suite.get("name") == "smoke" and suite.get("timestamp") == "2026-11-27T10:00:00"
    ok, bad = suite.findall("testcase")
    assert ok.get("name") == "db-failover" and ok.get("classname") == "faultbook.db-failover"
    props = {p.get("name"): p.get("value") for p in ok.iter("property")}
    assert (
        props["rto_s"] == "4.25" and props["lost_writes"] == "0" and props["fault"] == "host-crash"
    )
    assert props["p99_ms"] == "10004.2"
    assert ok.find("failure") is None
    failure = bad.find("failure")
    assert failure is not None and failure.get("message") == "verify: lost writes: 2"


def test_skipped_entries_and_outcomes_and_paths(tmp_path: Path) -> None:
    docs = _docs(tmp_path)
    entry = Entry(3, "db-primary-crash", "db-failover", limits={"p99_ms": 500.0})
    items = [
        SimpleNamespace(entry=entry, status="fail", reason="", doc=docs[0]),
        SimpleNamespace(
            entry=Entry(4, "lb", "lb-failover"),
            status="skipped",
            reason="not in steady state",
            doc=None,
        ),
        SimpleNamespace(result=tmp_path / "b" / "result.json"),  # a RunOutcome
        tmp_path / "a",  # a run directory
    ]
    out = junit.write(items, tmp_path / "j.xml")
    XSD.validate(str(out))
    cases = SafeET.parse(out).getroot().findall(".//testcase")
    assert [c.get("name") for c in cases] == [
        "db-primary-crash",
        "lb",
        "lb-failover",
        "db-failover",
    ]
    limit = cases[0].find("failure")
    assert limit is not None and "p99_ms=10004.24888 > 500" in limit.get("message", "")
    skipped = cases[1].find("skipped")
    assert skipped is not None and skipped.get("message") == "not in steady state"
    assert SafeET.parse(out).getroot().get("skipped") == "1"


def test_the_schema_check_can_fail(tmp_path: Path) -> None:
    out = junit.write(_docs(tmp_path), tmp_path / "junit.xml")
    tree = SafeET.parse(out)
    case = tree.getroot().find(".//testcase")
    assert case is not None
    del case.attrib["name"]
    ET.SubElement(case, "failure")
    tree.write(tmp_path / "broken.xml")
    assert not XSD.is_valid(str(tmp_path / "broken.xml"))


def test_an_unusable_path_or_item_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(ResultError, match="--junit .*cannot write it"):
        junit.write(_docs(tmp_path), tmp_path / "f" / "junit.xml")
    with pytest.raises(ResultError, match="not a readable result.json"):
        junit.write([tmp_path / "nothing"], tmp_path / "x.xml")
    with pytest.raises(ResultError, match="cannot make a JUnit test case from int"):
        junit.write([3], tmp_path / "x.xml")


def test_a_run_is_one_case_named_after_its_drill(tmp_path: Path) -> None:
    doc = fake_result(tmp_path / "r", "db-failover", verdict="fail")
    outcome = SimpleNamespace(result=tmp_path / "r" / "result.json")  # a RunOutcome
    case = junit.run_case(outcome)
    assert case.name == "db-failover/host-crash" and case.failure == "verify: lost writes: 2"
    hc = fake_result(tmp_path / "h", "health-check", fault=None, mode="incident")
    assert junit.run_case(hc).name == "health-check"  # not a drill: its runbook
    out = junit.write([junit.run_case(doc)], tmp_path / "run.xml", suite="db-failover")
    XSD.validate(str(out))
    with pytest.raises(ResultError, match="cannot make a JUnit test case from int"):
        junit.run_case(3)


def test_check_path_makes_the_directory_or_refuses_in_one_line(tmp_path: Path) -> None:
    assert junit.check_path(tmp_path / "new" / "j.xml") == (tmp_path / "new" / "j.xml")
    assert (tmp_path / "new").is_dir() and not (tmp_path / "new" / "j.xml").exists()
    assert list((tmp_path / "new").iterdir()) == []  # its probe is gone
    (tmp_path / "f").write_text("")
    for bad, why in ((tmp_path / "f" / "j.xml", "Not a directory"), (tmp_path, "Is a directory")):
        with pytest.raises(UsageError) as err:
            junit.check_path(bad)
        assert str(err.value) == f"--junit {str(bad)!r}: cannot write it: {why}"
        assert err.value.exit_code == 2
