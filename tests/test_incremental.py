"""IncrementalCompiler against compile_program: the same Program (masks,
entries, slots, digests, map bytes) after every edit of a random edit
sequence, while the incremental side reuses its per-rule work.

Pools are small on purpose so that rules share keys (the merged table then
has several contributors per key) and shapes (the per-mask best rank moves
when the best rule goes)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pepc.compiler import layout
from pepc.compiler import Assignments, IncrementalCompiler, compile_program, pack
from pepc.policy.config import Config
from pepc.policy.model import ANY_PORT, Action, Location, Policy, PortRange, Prefix, Protocol, Rule
from pepc.reconcile import diff

from compile_helpers import NOW

IDS = ["a", "b", "c", "d", "e", "f", "g", "h", "aa", "ab", "ba"]
# both families, interleaved: a rule may name both (its atoms pair one
# family), and the likely first items hold one of each
PREFIXES = [
    Prefix.parse(t)
    for t in (
        "0.0.0.0/0", "::/0", "10.0.0.0/8", "2001:db8::/32", "10.1.0.0/16", "10.1.2.0/24", "2001:db8:1::/48",
        "10.1.2.3/32", "192.168.0.0/16", "2001:db8:1::3/128", "192.168.1.7/32",
    )
]
PORTS = [ANY_PORT, PortRange(53, 53), PortRange(80, 80), PortRange(443, 443), PortRange(1000, 2000), PortRange(1024, 65535), PortRange(0, 1023)]
PRIORITIES = [0, 0, 1, 5, 100, 65535]
TIMES = [None, NOW - timedelta(days=1), NOW + timedelta(hours=1), NOW + timedelta(days=2)]
NOWS = [NOW, NOW + timedelta(hours=2), NOW + timedelta(days=3)]
BIG = Config(capacities=layout.Capacities(max_rules=64, max_entries=1 << 16, max_masks=1024))

# the first items of each pool are likely, so keys collide across rules
_sub = st.lists(st.one_of(st.integers(0, 2), st.integers(0, len(PREFIXES) - 1)), min_size=1, max_size=2)
_ports = st.lists(st.one_of(st.integers(0, 1), st.integers(0, len(PORTS) - 1)), min_size=1, max_size=2)


@st.composite
def rules(draw, rid: str) -> Rule:
    action = draw(st.sampled_from(list(Action)))
    return Rule(
        id=rid,
        action=action,
        loc=Location("p/r.yaml", draw(st.integers(1, 3)), 1),
        priority=draw(st.sampled_from(PRIORITIES)),
        protocol=draw(st.sampled_from([Protocol.ANY, Protocol.ANY, Protocol.TCP, Protocol.UDP, Protocol.ICMP, Protocol.ICMPV6])),
        src=tuple(PREFIXES[i] for i in draw(_sub)),
        dst=tuple(PREFIXES[i] for i in draw(_sub)),
        sports=tuple(PORTS[i] for i in draw(_ports)) if draw(st.integers(0, 3)) == 0 else (ANY_PORT,),
        dports=tuple(PORTS[i] for i in draw(_ports)),
        rate_limit_bps=draw(st.sampled_from([1000, 2000])),
        enabled=draw(st.integers(0, 7)) > 0,
        expires_at=draw(st.sampled_from(TIMES)),
    )


def _edit(draw, current: dict[str, Rule]) -> None:
    kind = draw(st.sampled_from(["add", "clone", "clone", "remove", "remove", "replace", "field", "field", "touch"]))
    if kind == "clone" and current:  # same matches, another id and rank: keys with several contributors
        model = current[draw(st.sampled_from(sorted(current)))]
        rid = draw(st.sampled_from(IDS))
        fresh = draw(rules(rid))
        current[rid] = dataclasses.replace(model, id=rid, priority=fresh.priority, action=fresh.action, enabled=True, expires_at=None)
    elif kind == "add" or not current:
        rid = draw(st.sampled_from(IDS))
        current[rid] = draw(rules(rid))
    elif kind == "remove":
        del current[draw(st.sampled_from(sorted(current)))]
    elif kind == "replace":
        rid = draw(st.sampled_from(sorted(current)))
        current[rid] = draw(rules(rid))
    elif kind == "field":
        rid = draw(st.sampled_from(sorted(current)))
        other = draw(rules(rid))
        name = draw(st.sampled_from(["priority", "protocol", "src", "dst", "sports", "dports", "action", "expires_at", "loc", "rate_limit_bps"]))
        current[rid] = dataclasses.replace(current[rid], **{name: getattr(other, name)})
    else:  # an equal but new Rule object (a reload of an unchanged file)
        rid = draw(st.sampled_from(sorted(current)))
        current[rid] = dataclasses.replace(current[rid])


@st.composite
def histories(draw):
    current: dict[str, Rule] = {}
    for rid in draw(st.lists(st.sampled_from(IDS), max_size=8, unique=True)):
        current[rid] = draw(rules(rid))
    steps = []
    order: list[str] = sorted(current)
    for _ in range(draw(st.integers(1, 8))):
        for _ in range(draw(st.integers(0, 2))):
            _edit(draw, current)
        if draw(st.booleans()):  # file order must not matter
            order = draw(st.permutations(sorted(current)))
        else:  # the usual case: edits in place, the other rules where they were
            order = [rid for rid in order if rid in current] + sorted(set(current) - set(order))
        steps.append((Policy("p", tuple(current[r] for r in order)), draw(st.sampled_from(NOWS)), draw(st.sampled_from(["last", "last", "mine", "none", "same", "stale"]))))
    return steps


def _assert_same(got, want) -> None:
    assert got == want  # masks, entries, slots, digests (dataclass equality)
    assert got.policy_digest == want.policy_digest
    assert got.entries == want.entries
    got_c, want_c = got.map_contents(), want.map_contents()
    assert got_c == want_c
    assert pack.map_contents(got) == got_c
    # the packed rule contents are what the entries say, packed field by field
    assert got_c["pepc_rules"] == {e.key.key_bytes(): e.value_bytes() for e in want.entries if not e.key.shape.v6}
    assert got_c["pepc_rules6"] == {e.key.key_bytes(): e.value_bytes() for e in want.entries if e.key.shape.v6}
    assert diff.contents_digest(got_c) == got.policy_digest


@settings(max_examples=350, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(histories())
def test_incremental_compile_equals_a_fresh_compile_after_every_edit(steps):
    inc = IncrementalCompiler(BIG)
    last = None
    stale = Assignments()
    kept = []  # every Program stays what it was when returned
    prev_pol = None
    for pol, now, mode in steps:
        if prev_pol is not None and mode in ("last", "mine", "none"):  # as a LoadCache tells it
            old, new = set(map(id, prev_pol.rules)), set(map(id, pol.rules))
            pol.set_edit(prev_pol, tuple(r for r in prev_pol.rules if id(r) not in new), tuple(r for r in pol.rules if id(r) not in old))
        prev_pol = pol
        previous = {
            "none": None,
            "last": Assignments.from_program(last) if last else None,
            "mine": inc.last_assignments(),
            "same": stale,
            "stale": Assignments(slots={"a": 3, "zz": 0}, order_keys={"a": 7, "b": 5}),
        }[mode]
        got = inc.compile(pol, now, previous)
        _assert_same(got, compile_program(pol, BIG, now, previous))
        if last is not None and got.delta.rules is not None:
            # the delta is exact: the previous contents + the delta = these contents
            assert (got.delta.source, got.delta.serial - 1) == (last_delta_id[0], last_delta_id[1])
            before, after = last_contents, got.map_contents()
            for name, changes in (("pepc_rules", got.delta.rules), ("pepc_rules6", got.delta.rules6), ("pepc_slots", got.delta.slots)):
                patched = dict(before[name])
                for k, v in changes.items():
                    if v is None:
                        patched.pop(k, None)
                    else:
                        patched[k] = v
                assert patched == after[name], name
        last_contents = got.map_contents()
        last_delta_id = (inc._source, inc._serial)
        last = got
        stale = previous
        if len(kept) < 3:
            kept.append((got, got.map_contents()))
    for program, contents in kept:
        assert program.map_contents() == contents


def test_a_capacity_error_leaves_the_compiler_usable():
    from pepc.policy.diagnostics import PolicyError

    small = Config(capacities=layout.Capacities(max_rules=8, max_entries=4, max_masks=8))
    inc = IncrementalCompiler(small)
    r = Rule(id="a", action=Action.ALLOW, loc=Location("p/r.yaml", 1, 1), dports=(PortRange(80, 80),))
    ok = Policy("p", (r,))
    assert inc.compile(ok, NOW) == compile_program(ok, small, NOW)
    wide = Policy("p", (r, dataclasses.replace(r, id="b", dports=(PortRange(1, 1000),))))
    try:
        inc.compile(wide, NOW)
        raise AssertionError("no capacity error")
    except PolicyError as err:
        assert err.findings[0].code == "capacity"
    _assert_same(inc.compile(ok, NOW), compile_program(ok, small, NOW))


def test_one_rule_edit_touches_only_that_rules_work():
    """The reuse is real: an edit re-expands only the edited rule."""
    from pepc.compiler import core

    rs = [Rule(id=f"r{i}", action=Action.BLOCK, loc=Location("p/r.yaml", i + 1, 1), src=(Prefix((10 << 24) | i, 32),)) for i in range(50)]
    inc = IncrementalCompiler(BIG)
    inc.compile(Policy("p", tuple(rs)), NOW)
    calls = []
    real = core._expand_rule
    core._expand_rule = lambda r: calls.append(r.id) or real(r)
    try:
        rs[7] = dataclasses.replace(rs[7], dports=(PortRange(22, 22),))
        rs[8] = dataclasses.replace(rs[8], action=Action.ALLOW)  # values only: no re-expansion
        got = inc.compile(Policy("p", tuple(rs)), NOW)
    finally:
        core._expand_rule = real
    assert calls == ["r7"]
    _assert_same(got, compile_program(Policy("p", tuple(rs)), BIG, NOW))


def test_withdrawing_the_best_of_three_contributors_finds_the_next():
    def r(rid: str, prio: int) -> Rule:
        return Rule(id=rid, action=Action.ALLOW, loc=Location("p/r.yaml", 1, 1), priority=prio, dst=(Prefix.parse("10.0.0.0/8"),))

    a, b, c = r("a", 1), r("b", 5), r("c", 3)
    inc = IncrementalCompiler(BIG)
    first = inc.compile(Policy("p", (a, b, c)), NOW)
    pol = Policy("p", (a, c))  # the same Rule objects: only b's work is undone
    got = inc.compile(pol, NOW, Assignments.from_program(first))
    _assert_same(got, compile_program(pol, BIG, NOW, Assignments.from_program(first)))
    assert [e.rule_id for e in got.entries] == ["c"]


def test_added_ids_between_dense_order_keys_renumber_like_a_fresh_compile():
    """Order keys packed tight (as a long history can leave them): new ids
    must widen over their neighbours exactly as assign_order_keys does."""
    from pepc.compiler.assign import KEY_SPACE

    def r(rid: str) -> Rule:
        return Rule(id=rid, action=Action.BLOCK, loc=Location("p/r.yaml", 1, 1), dst=(Prefix.parse("10.0.0.0/8"),))

    base = [r(x) for x in ("a", "b", "c", "d", "e", "f")]
    dense = Assignments(slots={}, order_keys={"a": 1, "b": 2, "c": 3, "d": 4, "e": 6, "f": KEY_SPACE - 1})
    inc = IncrementalCompiler(BIG)
    first = inc.compile(Policy("p", tuple(base)), NOW, dense)
    assert [s.order_key for s in sorted(first.slots, key=lambda s: s.rule_id)][:4] == [1, 2, 3, 4]
    added = base + [r("bb"), r("bc"), r("g")]
    prev = Assignments.from_program(first)
    got = inc.compile(Policy("p", tuple(added)), NOW, prev)
    _assert_same(got, compile_program(Policy("p", tuple(added)), BIG, NOW, prev))
    keys = {s.rule_id: s.order_key for s in got.slots}
    assert keys["a"] == 1 and keys["b"] == 2 and keys["c"] != 3  # b..e renumbered to make room


def test_widening_into_the_next_run_of_new_ids():
    """Two runs of new ids close together between dense keys: widening the
    first run reaches the second (no key yet); both paths fill them as one
    window instead of failing."""
    from pepc.compiler.assign import assign_order_keys

    def r(rid: str) -> Rule:
        return Rule(id=rid, action=Action.BLOCK, loc=Location("p/r.yaml", 1, 1), dst=(Prefix.parse("10.0.0.0/8"),))

    dense_keys = {"a": 1, "b": 2, "c": 3, "d": 4, "e": 6}
    ids = [*dense_keys, "bb", "bc", "ca", "ea"]
    keys = assign_order_keys(ids, dense_keys)
    assert [keys[i] for i in sorted(ids)] == sorted(keys.values()) and len(set(keys.values())) == len(ids)
    assert keys["a"] == 1 and keys["b"] == 2
    base = [r(x) for x in dense_keys]
    inc = IncrementalCompiler(BIG)
    first = inc.compile(Policy("p", tuple(base)), NOW, Assignments(slots={}, order_keys=dense_keys))
    prev = Assignments.from_program(first)
    pol = Policy("p", tuple(base + [r(x) for x in ("bb", "bc", "ca", "ea")]))
    got = inc.compile(pol, NOW, prev)
    _assert_same(got, compile_program(pol, BIG, NOW, prev))
    assert {s.rule_id: s.order_key for s in got.slots} == keys


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 30), max_size=20), st.lists(st.integers(0, 40), max_size=20))
def test_rule_changes_are_the_objects_that_came_and_went(before, after):
    """model.rule_changes against a set oracle: whatever the two sequences,
    old - gone + came holds exactly the objects of new (by identity), and
    an object said gone that new still holds is said come too (it moved)."""
    from pepc.policy.model import rule_changes

    pool = {i: Rule(id=f"r{i}", action=Action.BLOCK, loc=Location("p/r.yaml", 1, 1)) for i in range(41)}
    old = tuple(pool[i] for i in dict.fromkeys(before))  # a policy holds each rule once
    new = tuple(pool[i] for i in dict.fromkeys(after))
    gone, came = rule_changes(old, new)
    ids = lambda rs: set(map(id, rs))  # noqa: E731
    assert ids(gone) <= ids(old) and ids(came) <= ids(new)
    assert (ids(old) - ids(gone)) | ids(came) == ids(new)
    assert ids(gone) & ids(new) <= ids(came)
