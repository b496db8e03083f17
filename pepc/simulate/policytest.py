"""Policy unit tests (`pepc test`): packets with expected outcomes, in YAML.

A test file (default directory: tests.d/ beside policies.d/, *.yaml/*.yml,
read recursively in sorted order) is a mapping:

    now: "2026-11-23T00:00:00Z"   # optional: the clock for this file's cases
    tests:
      - name: ssh from the office   # optional; default: the packet
        packet: tcp 198.51.100.7:50000 > 203.0.113.10:22   # or a list of packets
        expect: ALLOW                # see below
        rule: ssh_admins             # optional: the rule that must decide

`expect` is one of
  - ALLOW, BLOCK, LOG_ONLY, RATE_LIMIT: a rule with that action decides;
  - DEFAULT: no rule matches, the host's default action applies (for
    the ICMPv6 types the lockout guard protects, the guard passes it);
  - PASS or DROP: only the verdict matters (whichever rule, or the default,
    decides; RATE_LIMIT counts as PASS, within its rate).

Each case is evaluated over the compiled program, like `pepc simulate`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pepc.compiler import compile_program
from pepc.policy.config import Config
from pepc.policy.diagnostics import Finding, PolicyError
from pepc.loader.files import read_source
from pepc.loader.reader import parse_text
from pepc.loader.schema import did_you_mean
from pepc.loader.values import ValueProblem, parse_time
from pepc.policy.model import Location, Policy
from pepc.simulate.evaluate import Decision, PacketSyntaxError, index_of, parse_packet
from pepc.policy.semantics import Packet

TEST_SUFFIXES = (".yaml", ".yml")
ACTION_EXPECTATIONS = ("ALLOW", "BLOCK", "LOG_ONLY", "RATE_LIMIT", "DEFAULT")
VERDICT_EXPECTATIONS = ("PASS", "DROP")
EXPECTATIONS = ACTION_EXPECTATIONS + VERDICT_EXPECTATIONS
FILE_KEYS = ("now", "tests")
CASE_KEYS = ("name", "packet", "expect", "rule")


@dataclass(frozen=True)
class Case:
    name: str
    packet: Packet
    packet_text: str
    expect: str
    rule: str | None
    loc: Location
    now: datetime | None


@dataclass(frozen=True)
class Result:
    case: Case
    decision: Decision
    passed: bool
    message: str  # why it failed ("" when it passed)


@dataclass
class Outcome:
    results: list[Result] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(1 for r in self.results if r.passed)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if not r.passed)


def default_test_dir(policy_dir: str) -> str:
    parent = os.path.dirname(os.path.normpath(policy_dir))
    return os.path.join(parent, "tests.d") if parent else "tests.d"


def discover(test_dir: str) -> tuple[list[str], list[Finding]]:
    here = Location(test_dir)
    if not os.path.exists(test_dir):
        return [], [Finding("bad-test", f"the test directory {test_dir} does not exist", here, help="create it, or pass TESTDIR")]
    if os.path.isfile(test_dir):
        return [test_dir], []
    found = []
    for dirpath, dirnames, filenames in os.walk(test_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.lower().endswith(TEST_SUFFIXES) and not name.startswith("."):
                found.append(os.path.join(dirpath, name))
    found.sort(key=lambda p: Path(os.path.relpath(p, test_dir)).as_posix())
    if not found:
        return [], [Finding("bad-test", f"{test_dir} holds no test files (*.yaml, *.yml)", here)]
    return found, []


def _packet_column(lines: list[str], pos: tuple[int, int], err_col: int) -> int:
    """Column of a packet syntax error inside a YAML scalar at `pos`: exact
    for plain and quoted one-line scalars."""
    line, col = pos
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    quoted = col - 1 < len(text) and text[col - 1] in "\"'"
    return col + err_col - 1 + (1 if quoted else 0)


def load_file(path: str, policy: Policy) -> tuple[list[Case], list[Finding]]:
    text, findings = read_source(path, path)
    if text is None:
        return [], findings
    parsed = parse_text(text, path)
    if parsed.findings:
        return [], list(parsed.findings)
    marks = parsed.marks
    lines = text.splitlines()
    top = Location(path, 1, 1)
    if not parsed.docs or parsed.docs[0].value is None:
        return [], [Finding("bad-test", "the file is empty: expected a mapping with a `tests` list", top)]
    if len(parsed.docs) > 1:
        return [], [Finding("bad-test", "a test file holds one YAML document", marks.loc(parsed.docs[1].pos))]
    doc = parsed.docs[0]
    data, dpos = doc.value, doc.pos
    if not isinstance(data, dict):
        return [], [Finding("bad-test", "expected a mapping with a `tests` list", marks.loc(dpos))]
    out: list[Finding] = []
    for key in data:
        if key not in FILE_KEYS:
            hint = did_you_mean(key, FILE_KEYS)
            out.append(Finding("bad-test", f"unknown key {key!r}" + (f"; did you mean {hint!r}?" if hint else f"; expected one of {', '.join(FILE_KEYS)}"), marks.key_loc(data, key, dpos)))
    now = None
    if "now" in data:
        try:
            now = parse_time(data["now"])
        except ValueProblem as p:
            out.append(Finding("bad-test", f"now: {p.message}", marks.value_loc(data, "now", dpos), help=p.help or None))
    tests = data.get("tests")
    if "tests" not in data:
        out.append(Finding("bad-test", "missing `tests`: a list of cases", marks.loc(dpos)))
        return [], out
    tpos = marks.value_pos(data, "tests", dpos)
    if not isinstance(tests, list):
        out.append(Finding("bad-test", "`tests` must be a list of cases", marks.loc(tpos)))
        return [], out
    rule_ids = {r.id for r in policy.rules}
    cases: list[Case] = []
    for i, item in enumerate(tests):
        ipos = marks.item_pos(tests, i, tpos)
        iloc = marks.loc(ipos)
        if not isinstance(item, dict):
            out.append(Finding("bad-test", "a case must be a mapping with `packet` and `expect`", iloc))
            continue
        bad = False
        for key in item:
            if key not in CASE_KEYS:
                hint = did_you_mean(key, CASE_KEYS)
                out.append(Finding("bad-test", f"unknown key {key!r}" + (f"; did you mean {hint!r}?" if hint else f"; expected one of {', '.join(CASE_KEYS)}"), marks.key_loc(item, key, ipos)))
                bad = True
        for key in ("packet", "expect"):
            if key not in item:
                out.append(Finding("bad-test", f"the case has no `{key}`", iloc))
                bad = True
        expect = item.get("expect")
        if "expect" in item:
            if not isinstance(expect, str) or expect.upper() not in EXPECTATIONS:
                out.append(Finding("bad-test", f"expect: {expect!r} is not one of {', '.join(EXPECTATIONS)}", marks.value_loc(item, "expect", ipos)))
                bad = True
        rule = item.get("rule")
        if "rule" in item:
            if not isinstance(rule, str):
                out.append(Finding("bad-test", "rule: expected a rule id (a string)", marks.value_loc(item, "rule", ipos)))
                bad = True
            elif rule not in rule_ids:
                hint = did_you_mean(rule, rule_ids)
                out.append(Finding("bad-test", f"rule: no rule has the id {rule!r}" + (f"; did you mean {hint!r}?" if hint else ""), marks.value_loc(item, "rule", ipos)))
                bad = True
            elif isinstance(expect, str) and expect.upper() == "DEFAULT":
                out.append(Finding("bad-test", "rule: `expect: DEFAULT` means no rule decides; drop `rule`", marks.value_loc(item, "rule", ipos)))
                bad = True
        name = item.get("name")
        if "name" in item and not isinstance(name, str):
            out.append(Finding("bad-test", "name: expected a string", marks.value_loc(item, "name", ipos)))
            bad = True
        raw = item.get("packet")
        if "packet" not in item:
            continue
        ppos = marks.value_pos(item, "packet", ipos)
        texts: list[tuple[str, tuple[int, int]]] = []
        if isinstance(raw, str):
            texts = [(raw, ppos)]
        elif isinstance(raw, list) and raw and all(isinstance(t, str) for t in raw):
            texts = [(t, marks.item_pos(raw, j, ppos)) for j, t in enumerate(raw)]
        else:
            out.append(Finding("bad-test", "packet: expected a packet (a string) or a non-empty list of packets", marks.loc(ppos)))
            continue
        for ptext, pos in texts:
            try:
                pkt = parse_packet(ptext)
            except PacketSyntaxError as err:
                out.append(Finding("bad-packet", err.message, Location(path, pos[0], _packet_column(lines, pos, err.column))))
                continue
            if not bad:
                cases.append(
                    Case(
                        name=name if isinstance(name, str) else ptext.strip(),
                        packet=pkt,
                        packet_text=ptext.strip(),
                        expect=expect.upper(),
                        rule=rule,
                        loc=marks.loc(pos) if len(texts) > 1 else iloc,
                        now=now,
                    )
                )
    return cases, out


def load_cases(test_dir: str, policy: Policy) -> list[Case]:
    """Every case under `test_dir`; PolicyError with every problem found."""
    files, findings = discover(test_dir)
    cases: list[Case] = []
    for f in files:
        c, problems = load_file(f, policy)
        cases.extend(c)
        findings.extend(problems)
    if findings:
        raise PolicyError(findings)
    return cases


def _describe(d: Decision, default_name: str, pkt: Packet | None = None) -> str:
    if d.action is None:
        if pkt is not None and pkt.guarded:
            return f"DEFAULT (no rule matches; the lockout guard passes ICMPv6 type {pkt.icmp_type}, {d.verdict})"
        return f"DEFAULT ({default_name}, {d.verdict})"
    return f"{d.action_name} ({d.verdict}) by rule {d.rule_id}"


def check(case: Case, decision: Decision, default_name: str) -> Result:
    if case.expect in VERDICT_EXPECTATIONS:
        ok = decision.verdict == case.expect
        want = case.expect
    else:
        ok = decision.action_name == case.expect
        want = case.expect if case.expect != "DEFAULT" else "DEFAULT (no rule matches)"
    if case.rule is not None:
        ok = ok and decision.rule_id == case.rule
        want += f" by rule {case.rule}"
    msg = "" if ok else f"expected {want}, got {_describe(decision, default_name, case.packet)}"
    return Result(case, decision, ok, msg)


def run_cases(cases: list[Case], policy: Policy, config: Config, now: datetime) -> Outcome:
    programs: dict[datetime, Any] = {}
    outcome = Outcome()
    for case in cases:
        t = case.now or now
        if t not in programs:
            programs[t] = compile_program(policy, config, t)
        program = programs[t]
        decision = index_of(program).evaluate(case.packet)
        outcome.results.append(check(case, decision, program.default_action.name))
    return outcome


# XML 1.0 cannot carry these at all, not even escaped: a case name from YAML
# may hold them ("\x07"), so they are written as \xNN text instead.
_XML_INVALID = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _xml_text(text: str) -> str:
    return _XML_INVALID.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def unique_names(names: list[str]) -> list[str]:
    """`names` with later repeats suffixed " [2]", " [3]", ...: JUnit
    consumers key results by (suite, name) and drop or merge duplicates."""
    taken = set(names)
    seen: set[str] = set()
    out = []
    for name in names:
        if name in seen:
            n = 2
            while f"{name} [{n}]" in taken:
                n += 1
            name = f"{name} [{n}]"
            taken.add(name)
        seen.add(name)
        out.append(name)
    return out


def junit_xml(outcome: Outcome, suite_name: str = "pepc policy tests") -> bytes:
    """JUnit XML as the common schema (Jenkins' junit-10.xsd, which
    tests/fixtures holds) defines it: one testsuite per test file, case
    names unique within it; a case's file:line:column and packet are in its
    system-out, since testcase has no attributes for them."""
    import xml.etree.ElementTree as ET

    by_file: dict[str, list[Result]] = {}
    for r in outcome.results:
        by_file.setdefault(r.case.loc.file, []).append(r)
    root = ET.Element(
        "testsuites", name=suite_name, tests=str(len(outcome.results)), failures=str(outcome.failed), errors="0"
    )
    for file, results in by_file.items():
        shown = _xml_text(file)
        suite = ET.SubElement(
            root,
            "testsuite",
            name=shown,
            tests=str(len(results)),
            failures=str(sum(1 for r in results if not r.passed)),
            errors="0",
            file=shown,
        )
        for r, name in zip(results, unique_names([r.case.name for r in results])):
            tc = ET.SubElement(suite, "testcase", classname=shown, name=_xml_text(name))
            if not r.passed:
                fail = ET.SubElement(tc, "failure", message=_xml_text(r.message), type="PolicyTestFailure")
                fail.text = _xml_text(f"{r.case.loc}: {r.case.packet_text}: {r.message}")
            expect = r.case.expect + (f" by rule {r.case.rule}" if r.case.rule else "")
            out = ET.SubElement(tc, "system-out")
            out.text = _xml_text(f"location: {r.case.loc}\npacket: {r.case.packet_text}\nexpect: {expect}")
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
