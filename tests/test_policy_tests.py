"""`pepc test`: the shipped tests.d passes, wrong expectations fail (exit 1),
bad test files are located errors (exit 2), JUnit XML for CI."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema
from hypothesis import given
from hypothesis import strategies as st

from conftest import ROOT, doc_pages
from pepc.cli import main
from pepc.simulate.policytest import unique_names

TESTS_D = ROOT / "tests.d"
JUNIT_XSD = xmlschema.XMLSchema(ROOT / "tests" / "fixtures" / "junit-10.xsd")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def test_shipped_tests_pass(capsys, examples, tmp_path):
    junit = tmp_path / "junit.xml"
    rc, out, _ = run(capsys, "test", str(examples), "--junit", str(junit))
    assert rc == 0, out
    last = out.splitlines()[-1]
    n = int(last.split()[0])
    assert last == f"{n} passed, 0 failed" and n >= 20
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites" and root.get("tests") == str(n) and root.get("failures") == "0"
    assert {s.get("name") for s in root.iter("testsuite")} >= {str(TESTS_D / "web.yaml")}
    JUNIT_XSD.validate(str(junit))
    for suite in root.iter("testsuite"):
        names = [tc.get("name") for tc in suite.iter("testcase")]
        assert len(names) == len(set(names)), suite.get("name")


def _tests(tmp_path: Path, text: str) -> Path:
    d = tmp_path / "tests.d"
    d.mkdir(exist_ok=True)
    (d / "t.yaml").write_text(text)
    return d


def test_wrong_expectation_fails_with_location(capsys, examples, tmp_path):
    d = _tests(
        tmp_path,
        "tests:\n"
        "  - name: right\n"
        "    packet: tcp 8.8.8.8:4000 > 203.0.113.10:443\n"
        "    expect: ALLOW\n"
        "  - name: wrong action\n"
        "    packet: tcp 8.8.8.8:4000 > 203.0.113.10:443\n"
        "    expect: BLOCK\n"
        "  - name: wrong rule\n"
        "    packet: tcp 8.8.8.8:4000 > 203.0.113.10:443\n"
        "    expect: PASS\n"
        "    rule: ssh_admins\n",
    )
    junit = tmp_path / "j.xml"
    rc, out, _ = run(capsys, "test", str(examples), str(d), "--junit", str(junit))
    assert rc == 1
    lines = out.splitlines()
    assert lines[-1] == "1 passed, 2 failed"
    assert lines[0].startswith(f"{d / 't.yaml'}:5:5: FAIL wrong action")
    assert "expected BLOCK, got ALLOW (PASS) by rule web_public" in lines[0]
    assert lines[1].startswith(f"{d / 't.yaml'}:8:5: FAIL wrong rule")
    root = ET.parse(junit).getroot()
    failures = [tc for tc in root.iter("testcase") if tc.find("failure") is not None]
    assert [tc.get("name") for tc in failures] == ["wrong action", "wrong rule"]
    assert failures[0].find("system-out").text.splitlines()[0] == f"location: {d / 't.yaml'}:5:5"
    JUNIT_XSD.validate(str(junit))


def test_junit_names_are_unique_and_the_xml_is_valid(capsys, examples, tmp_path):
    """Repeated names (a case with several packets, or two cases named
    alike) get " [2]", " [3]"; text no XML can carry is escaped; the file
    validates against the JUnit schema with failures in it."""
    d = _tests(
        tmp_path,
        "tests:\n"
        "  - name: web\n"
        "    packet: [tcp 8.8.8.8:4000 > 203.0.113.10:443, tcp 8.8.8.8:4000 > 203.0.113.10:80]\n"
        "    expect: ALLOW\n"
        "  - name: web [2]\n"
        "    packet: tcp 8.8.8.8:4000 > 203.0.113.10:443\n"
        "    expect: BLOCK\n"
        "  - name: web\n"
        "    packet: tcp 8.8.8.8:4000 > 203.0.113.10:443\n"
        "    expect: ALLOW\n"
        '  - name: "bell \\a <&> ]]>"\n'
        "    packet: tcp 8.8.8.8:4000 > 203.0.113.10:443\n"
        "    expect: DROP\n",
    )
    junit = tmp_path / "j.xml"
    rc, out, _ = run(capsys, "test", str(examples), str(d), "--junit", str(junit))
    assert rc == 1 and out.splitlines()[-1] == "3 passed, 2 failed"
    JUNIT_XSD.validate(str(junit))
    (suite,) = ET.parse(junit).getroot().iter("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("5", "2", "0")
    cases = list(suite.iter("testcase"))
    assert [tc.get("name") for tc in cases] == ["web", "web [3]", "web [2]", "web [4]", "bell \\x07 <&> ]]>"]
    assert [tc.find("failure") is not None for tc in cases] == [False, False, True, False, True]
    lines = [tc.find("system-out").text.splitlines() for tc in cases]
    assert lines[1] == [f"location: {d / 't.yaml'}:3:51", "packet: tcp 8.8.8.8:4000 > 203.0.113.10:80", "expect: ALLOW"]


@given(st.lists(st.sampled_from(["a", "b", "a [2]", "a [3]", "b [2]", "a [2] [2]"]), max_size=12))
def test_unique_names_against_a_naive_renamer(names):
    out = unique_names(names)
    assert len(out) == len(set(out)) == len(names)
    # naive oracle: a name's first occurrence keeps it; the k-th repeat gets
    # the smallest suffix no input name and no earlier output uses
    expect: list[str] = []
    for name in names:
        if name not in expect:
            expect.append(name)
            continue
        n = 2
        while f"{name} [{n}]" in names or f"{name} [{n}]" in expect:
            n += 1
        expect.append(f"{name} [{n}]")
    assert out == expect


def test_expectation_kinds(capsys, examples, tmp_path):
    d = _tests(
        tmp_path,
        'now: "2031-01-01T00:00:00Z"\n'  # the abuser block has expired by then
        "tests:\n"
        "  - {packet: tcp 203.0.113.77:1 > 203.0.113.10:443, expect: allow, rule: web_public}\n"
        "  - {packet: udp 8.8.8.8:1 > 203.0.113.10:443, expect: DEFAULT}\n"
        "  - {packet: udp 8.8.8.8:1 > 203.0.113.10:443, expect: DROP}\n"
        "  - {packet: tcp 8.8.8.8:1 > 203.0.113.10:8443, expect: PASS}\n"
        "  - {packet: tcp 8.8.8.8:1 > 203.0.113.10:8443, expect: RATE_LIMIT}\n"
        "  - {packet: [icmp 1.1.1.1 > 203.0.113.10, icmp 2.2.2.2 > 203.0.113.10], expect: ALLOW, rule: icmp}\n",
    )
    rc, out, _ = run(capsys, "test", str(examples), str(d))
    assert (rc, out.splitlines()[-1]) == (0, "7 passed, 0 failed")


def test_ipv6_cases(capsys, examples, tmp_path):
    d = _tests(
        tmp_path,
        'now: "2026-11-23T00:00:00Z"\n'
        "tests:\n"
        "  - {packet: 'tcp [2001:db8:100::1]:1 > [2001:db8::10]:22', expect: ALLOW, rule: ssh_admins}\n"
        "  - {packet: 'tcp [2001:db8:bad::1]:1 > [2001:db8::10]:443', expect: BLOCK, rule: block_abuser_v6}\n"
        "  - {packet: 'udp [2001:db8::1]:1 > [2001:db8::10]:443', expect: DEFAULT}\n"
        "  - {packet: 'icmpv6 2001:db8::1 > 2001:db8::10 type=128', expect: ALLOW, rule: icmpv6}\n"
        # guarded: no rule matches (the icmpv6 rule names 2001:db8::10 only), the guard passes it
        "  - {packet: 'icmpv6 fe80::1 > ff02::1:ff00:10 type=135', expect: DEFAULT}\n"
        "  - name: the guard is no BLOCK\n"
        "    packet: icmpv6 fe80::1 > ff02::1:ff00:10 type=135\n"
        "    expect: DROP\n",
    )
    rc, out, _ = run(capsys, "test", str(examples), str(d))
    assert (rc, out.splitlines()[-1]) == (1, "5 passed, 1 failed")
    assert f"{d / 't.yaml'}:8:5: FAIL the guard is no BLOCK" in out
    assert "expected DROP, got DEFAULT (no rule matches; the lockout guard passes ICMPv6 type 135, PASS)" in out


@pytest.mark.parametrize(
    "packet, column, words",
    [
        ("tcp 2001:db8::1:1 > [2001:db8::10]:22", 17, "[ADDRESS]:PORT"),
        ("tcp 10.0.0.1:1 > [2001:db8::10]:22", 30, "one family"),
        ("icmpv6 fe80::1%eth0 > fe80::2", 27, "zone id"),
    ],
)
def test_bad_ipv6_packets_in_test_files_are_located(capsys, examples, tmp_path, packet, column, words):
    d = _tests(tmp_path, f"tests:\n  - packet: {packet}\n    expect: ALLOW\n")
    rc, out, err = run(capsys, "test", str(examples), str(d))
    assert rc == 2, out + err
    assert f"{d / 't.yaml'}:2:{column}: error:" in err, err
    assert words in err and "[bad-packet]" in err


def test_now_option_and_file_clock(capsys, examples, tmp_path):
    text = "tests:\n  - {packet: tcp 203.0.113.77:1 > 203.0.113.10:443, expect: BLOCK}\n"
    d = _tests(tmp_path, text)
    assert run(capsys, "test", str(examples), str(d), "--now", "2026-01-01T00:00:00Z")[0] == 0
    assert run(capsys, "test", str(examples), str(d), "--now", "2031-01-01T00:00:00Z")[0] == 1
    d = _tests(tmp_path, 'now: "2026-01-01T00:00:00Z"\n' + text)
    assert run(capsys, "test", str(examples), str(d), "--now", "2031-01-01T00:00:00Z")[0] == 0  # the file's clock wins


@pytest.mark.parametrize(
    "text, line, column, words",
    [
        ("tests: []\nextra: 1\n", 2, 1, "unknown key 'extra'"),
        ("tests: {}\n", 1, 8, "must be a list"),
        ("- packet: x\n", 1, 1, "expected a mapping"),
        ("now: yesterday\ntests: []\n", 1, 6, "now:"),
        ("tests:\n  - packet: tcp 1.1.1.1:1 > 2.2.2.2:2\n", 2, 5, "no `expect`"),
        ("tests:\n  - expect: ALLOW\n", 2, 5, "no `packet`"),
        ("tests:\n  - {packet: tcp 1.1.1.1:1 > 2.2.2.2:2, expect: MAYBE}\n", 2, 49, "not one of"),
        ("tests:\n  - {packet: tcp 1.1.1.1:1 > 2.2.2.2:2, expect: ALLOW, rul: x}\n", 2, 56, "did you mean 'rule'"),
        ("tests:\n  - {packet: tcp 1.1.1.1:1 > 2.2.2.2:2, expect: ALLOW, rule: web_publik}\n", 2, 62, "did you mean 'web_public'"),
        ("tests:\n  - {packet: tcp 1.1.1.1:1 > 2.2.2.2:2, expect: DEFAULT, rule: web_public}\n", 2, 64, "drop `rule`"),
        ("tests:\n  - packet: tcp 1.1.1.1 > 2.2.2.2:2\n    expect: ALLOW\n", 2, 17, "ADDRESS:PORT"),
        ('tests:\n  - packet: "udp 1.1.1.1:1 > 2.2.2.2:77777"\n    expect: ALLOW\n', 2, 38, "0-65535"),
        ("tests:\n  - packet: [tcp 1.1.1.1:1 > 2.2.2.2:2, icmp 1.1.1.1:3 > 2.2.2.2]\n    expect: ALLOW\n", 2, 46, "no ports"),
        ("tests:\n  - packet: 42\n    expect: ALLOW\n", 2, 13, "expected a packet"),
        ("tests:\n  - {packet: icmp 1.1.1.1 > 2.2.2.2, expect: ALLOW, expect: BLOCK}\n", 2, 53, "duplicate"),
        ("tests: [\n", 2, 1, ""),
    ],
)
def test_bad_test_files_are_located(capsys, examples, tmp_path, text, line, column, words):
    d = _tests(tmp_path, text)
    rc, out, err = run(capsys, "test", str(examples), str(d))
    assert rc == 2, out + err
    where = f"{d / 't.yaml'}:{line}:{column}: error:"
    assert where in err, err
    assert words in err


def test_missing_or_empty_test_directory(capsys, examples, tmp_path):
    rc, _, err = run(capsys, "test", str(examples), str(tmp_path / "nope"))
    assert rc == 2 and "does not exist" in err
    (tmp_path / "empty").mkdir()
    rc, _, err = run(capsys, "test", str(examples), str(tmp_path / "empty"))
    assert rc == 2 and "holds no test files" in err


def test_default_directory_is_beside_the_policy(capsys, tmp_path):
    shutil.copytree(ROOT / "policies.d", tmp_path / "policies.d")
    shutil.copy(ROOT / "pepc.yaml", tmp_path / "pepc.yaml")
    _tests(tmp_path, "tests:\n  - {packet: icmp 8.8.8.8 > 203.0.113.10, expect: ALLOW, rule: icmp}\n")
    rc, out, _ = run(capsys, "test", str(tmp_path / "policies.d"))
    assert (rc, out.splitlines()[-1]) == (0, "1 passed, 0 failed")


def test_docs_test_file_example_passes(capsys, examples, tmp_path):
    """The `pepc test` file example of the CLI reference (the only ```yml
    block of the docs) is real: it passes on the example policies."""
    import re

    blocks = [(p.name, b) for p in doc_pages() for b in re.findall(r"^```yml\n(.*?)^```", p.read_text(), re.S | re.M)]
    assert [name for name, _ in blocks] == ["cli.md"]
    d = _tests(tmp_path, blocks[0][1])
    rc, out, _ = run(capsys, "test", str(examples), str(d))
    assert (rc, out.splitlines()[-1]) == (0, "4 passed, 0 failed")
