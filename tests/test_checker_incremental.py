"""The check gate's shortcuts against the exhaustive analysis (lifecycle +
`analyze`, errors only): IncrementalChecker after every edit of a random
edit sequence, and `check_errors` (rule by rule when the config allows),
the same errors (code, rule, location), with the default severities and
with configs that make more codes errors."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pepc.compiler import layout
from pepc.checker.incremental import IncrementalChecker
from pepc.policy.config import Config
from pepc.policy.diagnostics import Severity
from pepc.policy.model import Action, Location, Policy, Prefix, Rule
from pepc.checker.incremental import _full_errors
from pepc.reconcile.apply import check_errors

from compile_helpers import NOW
from test_incremental import histories

CAPS = layout.Capacities(max_rules=4096, max_entries=1 << 16, max_masks=1024)


def _config(kind: str, default: Action) -> Config:
    sev = {
        "default": {},
        "strict": {"redundant": Severity.ERROR, "never-matches": Severity.ERROR, "expired": Severity.ERROR},
        "pairs": {"conflict": Severity.ERROR},  # not decided incrementally: the full analysis runs
        "quiet": {"shadowed": Severity.INFO},
    }[kind]
    return Config(capacities=CAPS, default_action=default, severity=tuple(sev.items()))


def _with_suppressions(policy: Policy) -> Policy:
    """Suppressions that follow the rule's content, so edits change them too."""
    out = []
    for r in policy.rules:
        if r.loc.line == 2:
            r = dataclasses.replace(r, allow_overlap=("a", "b", "c"))
        elif r.loc.line == 3:
            r = dataclasses.replace(r, suppress=("shadowed", "redundant"))
        out.append(r)
    return Policy(policy.root, tuple(out))


def _key(findings) -> list[tuple]:
    return sorted((f.code, f.rule, f.loc) for f in findings if f.code != "capacity")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(histories(), st.sampled_from(["default", "strict", "pairs", "quiet"]), st.sampled_from([Action.ALLOW, Action.BLOCK]))
def test_incremental_gate_equals_the_full_gate_after_every_edit(steps, kind, default):
    config = _config(kind, default)
    checker = IncrementalChecker(config)
    prev = None
    for i, (pol, now, mode) in enumerate(steps):
        pol = _with_suppressions(pol)
        if prev is not None and mode in ("last", "mine"):  # as a LoadCache tells it: which Rule objects came and went
            old, new = set(map(id, prev.rules)), set(map(id, pol.rules))
            pol.set_edit(prev, tuple(r for r in prev.rules if id(r) not in new), tuple(r for r in pol.rules if id(r) not in old))
        prev = pol
        got = checker.errors(pol, now)
        want = _key(_full_errors(pol, config, now))
        assert _key(got) == want, (i, checker.last_mode)
        assert _key(check_errors(pol, config, now)) == want
        if i and kind != "pairs":
            assert checker.last_mode in ("incremental", "unchanged")


def _block(i: int) -> Rule:
    return Rule(f"r{i:05d}", Action.BLOCK, Location("p/b.yaml", i + 1, 5), src=(Prefix((10 << 24) | (i + 1), 32),))


def test_one_edit_in_a_block_list_looks_at_its_neighbours_only():
    wide = Rule("wide", Action.ALLOW, Location("p/a.yaml", 1, 5), dst=(Prefix.parse("192.168.0.0/16"),))
    rules = [_block(i) for i in range(2000)] + [wide]
    checker = IncrementalChecker(Config(capacities=CAPS))
    assert checker.errors(Policy("p", tuple(rules)), NOW) == [] and checker.last_mode == "full"
    # the edit makes r00007 a copy of r00003 behind it: shadowed (same action, id tie-break)
    rules[7] = dataclasses.replace(rules[7], src=rules[3].src)
    got = checker.errors(Policy("p", tuple(rules)), NOW)
    assert [(f.code, f.rule) for f in got] == [("shadowed", "r00007")]
    assert checker.last_mode == "incremental" and checker.last_focus == 3  # r00003, r00007 and `wide`
    # the error is looked at again until it is fixed
    rules[7] = _block(7)
    assert checker.errors(Policy("p", tuple(rules)), NOW) == [] and checker.last_focus == 3


def test_lines_moving_is_not_an_edit():
    rules = [_block(i) for i in range(50)]
    checker = IncrementalChecker(Config(capacities=CAPS))
    checker.errors(Policy("p", tuple(rules)), NOW)
    moved = [dataclasses.replace(r, loc=Location("p/b.yaml", r.loc.line + 3, 5)) for r in rules]
    assert checker.errors(Policy("p", tuple(moved)), NOW) == [] and checker.last_focus == 0
