"""The compiler: port prefix covers, order keys, slots, map contents, capacity."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compile_helpers import NOW, Action, Protocol, policy, rule
from pepc.compiler import layout
from pepc.policy import semantics
from pepc.compiler import Assignments, compile_program, pack
from pepc.compiler.assign import KEY_SPACE, assign_order_keys, assign_slots
from pepc.compiler.ports import range_to_prefixes
from pepc.policy.config import Config
from pepc.policy.diagnostics import PolicyError
from pepc.compiler.layout import Capacities
from pepc.policy.model import PortRange
from pepc.compiler.plan import plan_json


# --- range to prefix ---------------------------------------------------------------


def _naive_cover(lo: int, hi: int, bits: int) -> list[tuple[int, int]]:
    """Top-down over the binary trie: a node fully inside [lo, hi] is one
    prefix; a node partly inside splits. This canonical decomposition is the
    minimal exact cover."""
    out = []

    def walk(value: int, plen: int) -> None:
        first = value
        last = value | ((1 << (bits - plen)) - 1)
        if last < lo or first > hi:
            return
        if lo <= first and last <= hi:
            out.append((plen, value))
            return
        walk(value, plen + 1)
        walk(value | (1 << (bits - plen - 1)), plen + 1)

    walk(0, 0)
    return sorted(out, key=lambda p: p[1])


def _covered(prefixes, bits):
    ports = []
    for plen, value in prefixes:
        assert value & ((1 << (bits - plen)) - 1) == 0, "host bits set"
        ports.extend(range(value, value + (1 << (bits - plen))))
    return ports


def test_range_to_prefixes_exhaustive_8_bits():
    for lo in range(256):
        for hi in range(lo, 256):
            got = range_to_prefixes(lo, hi, 8)
            assert list(got) == _naive_cover(lo, hi, 8)
            assert _covered(got, 8) == list(range(lo, hi + 1))  # exact and disjoint


@settings(max_examples=500)
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_range_to_prefixes_16_bits_minimal_and_exact(a, b):
    lo, hi = min(a, b), max(a, b)
    got = range_to_prefixes(lo, hi)
    assert list(got) == _naive_cover(lo, hi, 16)
    assert len(got) <= 30
    # exactness without enumerating 65536 ports: contiguous, disjoint, from lo to hi
    pos = lo
    for plen, value in got:
        assert value == pos
        pos += 1 << (16 - plen)
    assert pos == hi + 1


def test_range_to_prefixes_examples():
    assert range_to_prefixes(0, 0xFFFF) == ((0, 0),)
    assert range_to_prefixes(80, 80) == ((16, 80),)
    assert range_to_prefixes(1, 0xFFFF)[-1] == (1, 0x8000)
    assert len(range_to_prefixes(1, 0xFFFE)) == 30  # the worst case


# --- order keys -------------------------------------------------------------------------

ids_st = st.lists(st.text(alphabet="abcAB01_-.é", min_size=1, max_size=5), min_size=0, max_size=40, unique=True)


def _increasing(keys: dict[str, int]) -> bool:
    ordered = [keys[i] for i in sorted(keys)]
    return all(0 < k < KEY_SPACE for k in ordered) and all(a < b for a, b in zip(ordered, ordered[1:]))


@given(ids_st)
def test_order_keys_fresh_are_increasing_and_spread(ids):
    keys = assign_order_keys(ids)
    assert set(keys) == set(ids)
    assert _increasing(keys)
    assert keys == assign_order_keys(list(reversed(ids)))  # input order does not matter


@settings(max_examples=300)
@given(ids_st, ids_st, st.randoms(use_true_random=False))
def test_order_keys_keep_survivors(before, added, rnd):
    prev = assign_order_keys(before)
    kept = [i for i in before if rnd.random() < 0.7]
    now_ids = sorted(set(kept) | set(added))
    keys = assign_order_keys(now_ids, prev)
    assert _increasing(keys)
    for i in kept:
        assert keys[i] == prev[i], "a surviving id must keep its order key"


def test_order_keys_renumber_only_the_smallest_run_without_a_gap():
    prev = {"a": 5, "c": 6, "e": 100, "g": 101}
    keys = assign_order_keys(["a", "b", "c", "e", "f", "g"], prev)
    assert _increasing(keys)
    assert sum(keys[i] != prev[i] for i in prev) == 2  # one neighbour per insertion
    # a run with no room at all: every key from 1 is taken
    dense = {f"k{i:02d}": i + 1 for i in range(10)}
    keys = assign_order_keys([*dense, "k04x"], dense)
    assert _increasing(keys)
    changed = [i for i in dense if keys[i] != dense[i]]
    assert 1 <= len(changed) <= 5, changed


def test_order_keys_ignore_inconsistent_history():
    keys = assign_order_keys(["a", "b"], {"a": 10, "b": 5})  # not in string order
    assert _increasing(keys)


# --- slots ------------------------------------------------------------------------------


def test_slots_survivors_keep_fresh_before_freed():
    prev = {"a": 0, "b": 1, "c": 2}
    slots = assign_slots(["a", "c", "d", "e"], 8, prev)
    assert slots["a"] == 0 and slots["c"] == 2
    assert slots["d"] == 3 and slots["e"] == 4  # never-used slots first; 1 (freed by b) last
    full = assign_slots(["a", "c", "d"], 3, prev)
    assert full["d"] == 1  # only when nothing else is left


def test_slots_drop_history_outside_capacity():
    slots = assign_slots(["a", "b"], 2, {"a": 7, "b": 0})
    assert slots == {"a": 1, "b": 0}


# --- compile ----------------------------------------------------------------------------


def _example_policy():
    return policy(
        rule("web", priority=100, protocol=Protocol.TCP, dst=["192.168.1.100/32", "192.168.1.101/32"], dports=[80, 443, (8000, 8099)]),
        rule("block_bad", Action.BLOCK, priority=1000, src=["10.0.0.50/32"], line=10),
        rule("dns", protocol=Protocol.ANY, dports=[53], line=20),
        rule("rl", Action.RATE_LIMIT, dst=["192.168.1.200/32"], dports=[8080], protocol=Protocol.TCP, rate_limit_bps=1000, line=30),
        rule("icmp_ports", protocol=Protocol.ICMP, dports=[7], line=40),
        rule("log", Action.LOG_ONLY, src=["172.16.0.0/12"], line=50),
    )


def test_map_contents_fast_path_equals_program_packing():
    program = compile_program(_example_policy(), Config(), NOW)
    assert pack.map_contents(program) == program.map_contents()
    # the compiler's packed rule map is what its entries say, packed field by
    # field through layout.Struct.pack (entries are decoded from that map)
    assert program.map_contents()["pepc_rules"] == {e.key.key_bytes(): e.value_bytes() for e in program.entries}
    assert len(program.entries) == program.n_entries


def test_entries_carry_the_rank_of_their_atom():
    pol = _example_policy()
    program = compile_program(pol, Config(), NOW)
    keys = {s.rule_id: s.order_key for s in program.slots}
    for e in program.entries:
        r = pol.rule(e.rule_id)
        ranks = {layout.rank_of(r.priority, semantics.specificity(a), keys[r.id]) for a in semantics.atoms_of(r)}
        assert e.rank in ranks
    # masks are in ascending best rank, each the minimum of its entries
    ranks = [m.best_rank for m in program.masks]
    assert ranks == sorted(ranks)
    for m in program.masks:
        assert m.best_rank == min(e.rank for e in program.entries if e.key.shape == m.shape)


def test_any_protocol_with_ports_becomes_tcp_and_udp_and_icmp_with_ports_nothing():
    program = compile_program(_example_policy(), Config(), NOW)
    dns = [e for e in program.entries if e.rule_id == "dns"]
    assert sorted(e.key.proto for e in dns) == [6, 17]
    assert all(e.key.shape.proto_plen == 8 for e in dns)
    assert not [e for e in program.entries if e.rule_id == "icmp_ports"]
    assert program.slot_of("icmp_ports") is not None  # still a live rule with a slot


def test_same_key_keeps_the_best_rank():
    pol = policy(
        rule("a", Action.BLOCK, priority=5, dst=["10.0.0.0/8"]),
        rule("b", Action.ALLOW, priority=9, dst=["10.0.0.0/8"]),
    )
    program = compile_program(pol, Config(), NOW)
    assert [e.rule_id for e in program.entries] == ["b"]


def test_input_order_does_not_change_the_output():
    pol = _example_policy()
    a = compile_program(pol, Config(), NOW)
    rules = list(pol.rules)
    random.Random(4).shuffle(rules)
    b = compile_program(replace(pol, rules=tuple(rules)), Config(), NOW)
    assert a == b
    assert plan_json(a, pol) == plan_json(b, replace(pol, rules=tuple(rules)))


def test_expired_and_disabled_rules_are_not_compiled():
    from datetime import timedelta

    pol = policy(
        rule("off", enabled=False),
        rule("old", expires_at=NOW - timedelta(seconds=1)),
        rule("exact", expires_at=NOW),
        rule("later", expires_at=NOW + timedelta(days=1)),
    )
    program = compile_program(pol, Config(), NOW)
    assert [s.rule_id for s in program.slots] == ["later"]


def _delta(a: dict, b: dict) -> dict[str, set]:
    out = {}
    for name in a:
        keys = set(a[name]) | set(b[name])
        out[name] = {k for k in keys if a[name].get(k) != b[name].get(k)}
    return out


def test_one_rule_change_is_a_one_rule_delta():
    pol = _example_policy()
    first = compile_program(pol, Config(), NOW)
    prev = Assignments.from_program(first)
    # change one rule's port
    changed = replace(pol.rule("dns"), dports=(PortRange(5353, 5353),))
    rules = tuple(changed if r.id == "dns" else r for r in pol.rules)
    second = compile_program(replace(pol, rules=rules), Config(), NOW, prev)
    d = _delta(pack.map_contents(first), pack.map_contents(second))
    assert len(d["pepc_rules"]) == 4  # two keys gone, two new
    touched = {first_or_second_rule(first, second, k) for k in d["pepc_rules"]}
    assert touched == {"dns"}
    assert d["pepc_slots"] == set()  # same id, action, priority: same slot entry
    assert d["pepc_gen"]  # the digest changed
    # add a rule between existing ids: only its own entries and slot appear
    third = compile_program(replace(pol, rules=pol.rules + (rule("dns2", dports=[99]),)), Config(), NOW, prev)
    d = _delta(pack.map_contents(first), pack.map_contents(third))
    assert {first_or_second_rule(first, third, k) for k in d["pepc_rules"]} == {"dns2"}
    assert len(d["pepc_slots"]) == 1
    # remove a rule: its entries and slot disappear, nothing else moves
    fourth = compile_program(replace(pol, rules=tuple(r for r in pol.rules if r.id != "log")), Config(), NOW, prev)
    d = _delta(pack.map_contents(first), pack.map_contents(fourth))
    assert {first_or_second_rule(first, fourth, k) for k in d["pepc_rules"]} == {"log"}
    assert len(d["pepc_slots"]) == 1


def first_or_second_rule(a, b, key_bytes) -> str:
    for prog in (a, b):
        for e in prog.entries:
            if e.key.key_bytes() == key_bytes:
                return e.rule_id
    raise AssertionError("key in neither program")


def test_without_history_an_insert_moves_other_keys_but_with_history_not():
    pol = _example_policy()
    first = compile_program(pol, Config(), NOW)
    grown = replace(pol, rules=pol.rules + (rule("c_new"),))
    fresh = compile_program(grown, Config(), NOW)
    kept = compile_program(grown, Config(), NOW, Assignments.from_program(first))
    before = {s.rule_id: (s.slot, s.order_key) for s in first.slots}
    assert any(before[s.rule_id] != (s.slot, s.order_key) for s in fresh.slots if s.rule_id in before)
    assert all(before[s.rule_id] == (s.slot, s.order_key) for s in kept.slots if s.rule_id in before)


def test_assignments_from_plan_json_round_trip():
    pol = _example_policy()
    program = compile_program(pol, Config(), NOW)
    doc = json.loads(plan_json(program, pol))
    assert Assignments.from_plan_json(doc) == Assignments.from_program(program)
    with pytest.raises(ValueError):
        Assignments.from_plan_json({"rules": [{"id": "a", "slot": "0", "order_key": 1}]})
    with pytest.raises(ValueError):
        Assignments.from_plan_json({"rules": [{"id": "a", "slot": 0, "order_key": 1}, {"id": "a", "slot": 1, "order_key": 2}]})


def test_policy_digest_tracks_the_data_plane():
    pol = _example_policy()
    a = compile_program(pol, Config(), NOW)
    assert compile_program(pol, Config(), NOW).policy_digest == a.policy_digest
    assert compile_program(pol, Config(default_action=Action.BLOCK), NOW).policy_digest != a.policy_digest
    # a description is not data-plane content
    rules = tuple(replace(r, description="changed") for r in pol.rules)
    assert compile_program(replace(pol, rules=rules), Config(), NOW).policy_digest == a.policy_digest
    # the digest is the one stored in pepc_gen
    gen = layout.GEN.unpack(a.gen_value())
    assert bytes(gen["policy_digest"]).hex() == a.policy_digest


# --- capacity ---------------------------------------------------------------------------


def _caps(**kw) -> Config:
    return Config(capacities=Capacities(**kw), source="pepc.yaml")


def test_capacity_rules():
    pol = policy(*(rule(f"r{i}", src=[f"10.0.0.{i}/32"], line=i + 1) for i in range(5)))
    with pytest.raises(PolicyError) as err:
        compile_program(pol, _caps(max_rules=4), NOW)
    (f,) = err.value.findings
    assert f.code == "capacity" and f.rule == "r4" and f.loc.line == 5
    assert "max_rules" in f.message and f.related[0].loc.file == "pepc.yaml"  # (a file that does not exist here)


def test_capacity_entries_points_at_the_config_and_the_biggest_rules():
    pol = policy(rule("wide", dports=[(1, 0xFFFE)]), rule("small", dports=[80]))
    with pytest.raises(PolicyError) as err:
        compile_program(pol, _caps(max_entries=10), NOW)
    (f,) = err.value.findings
    assert f.code == "capacity" and f.loc.file == "pepc.yaml"
    assert "62" in f.message  # 30 prefixes x tcp/udp + 2
    assert "wide" in f.related[0].message


def test_capacity_masks():
    pol = policy(*(rule(f"r{i}", src=[f"10.0.0.0/{8 + i}"]) for i in range(5)))
    with pytest.raises(PolicyError) as err:
        compile_program(pol, Config(capacities=Capacities(max_masks=3)), NOW)
    (f,) = err.value.findings
    assert f.code == "capacity" and "5 distinct masks" in f.message
    assert f.rule is not None  # no config file: the rule is the location
    compile_program(pol, Config(capacities=Capacities(max_masks=5)), NOW)  # exactly full is fine


def test_entries_equal_constructor_built_ones():
    from pepc.compiler.program import Entry, EntryKey

    program = compile_program(_example_policy(), Config(), NOW)
    rebuilt = tuple(
        Entry(EntryKey(e.key.shape, e.key.proto, e.key.src, e.key.dst, e.key.sport, e.key.dport), e.rank, e.slot, e.action, e.rule_id)
        for e in program.entries
    )
    assert program.entries == rebuilt
    assert [hash(e.key) for e in program.entries] == [hash(e.key) for e in rebuilt]
    assert [repr(e) for e in program.entries] == [repr(e) for e in rebuilt]
    assert list(program.entries) == sorted(program.entries, key=lambda e: e.key)


def test_fast_mask_packing_equals_layout():
    program = compile_program(_example_policy(), Config(), NOW)
    for m in program.masks:
        assert pack.mask_value(m) == m.value_bytes()
        assert pack.mask_fields(m.value_bytes()) == layout.MASK.unpack(m.value_bytes())
    assert pack.layout_digest(program.caps) == layout.layout_digest(program.caps)
