"""pepc.compiler.direct, pure: the table answers every lookup as the rule map would
(a naive dict is the oracle), its layout depends on the key set only, and
Table.update after any edit sequence equals a fresh build."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pepc.compiler import direct, layout

# 48 bytes: an IPv6 rule-map key; an IPv4 test takes the first 20 (FAMILY)
KEYS = st.binary(min_size=48, max_size=48)
FAMILY = pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])


def key(b: bytes, v6: bool) -> bytes:
    return b if v6 else b[:20]


def entry_struct(v6: bool) -> layout.Struct:
    return layout.DIRECT6 if v6 else layout.DIRECT


def val(i: int) -> bytes:
    return layout.RULE_VAL.pack({"rank": i, "slot": i % 1000, "action": i % 4})


def gen_value(digest: bytes) -> bytes:
    return layout.GEN.pack({"n_masks": 1, "policy_digest": digest})


def answer(elements, rules, key, n):
    """The program's verdict for `key`: the table's, with "hash" resolved by the rule map."""
    kind, v = direct.lookup(elements, key, n)
    if kind == "hash":
        return rules.get(key)
    return v


@FAMILY
@given(st.dictionaries(KEYS, st.integers(0, 2**40), max_size=120), st.integers(1, 64), st.lists(KEYS, max_size=30))
@settings(max_examples=300)
def test_lookups_equal_the_rule_map(v6, raw, n, probes):
    # small tables on purpose: full clusters and overflow happen often
    rules = {key(k, v6): val(i) for k, i in raw.items()}
    probes = [key(k, v6) for k in probes]
    el = direct.Table(rules, n, v6=v6).elements()
    for k in list(rules) + probes:
        assert answer(el, rules, k, n) == rules.get(k)
    assert all(0 <= int.from_bytes(p, "little") < n + direct.DEPTH for p in el)
    es = entry_struct(v6)
    assert all(len(e) == es.size for e in el.values())
    ks = (layout.RULE6_KEY if v6 else layout.RULE_KEY).size
    held = [e[:ks] for e in el.values() if e[es.offsets["flags"]] & direct.USED]
    assert sorted(held) == sorted(k for k in rules if direct.lookup(el, k, n)[0] == "hit")
    assert el == {k: v for k, v in direct.contents(rules, gen_value(bytes(32)), n, v6=v6).items() if int.from_bytes(k, "little") < n + direct.DEPTH}


@FAMILY
@given(st.lists(KEYS, max_size=60, unique=True), st.integers(1, 40), st.randoms(use_true_random=False))
def test_layout_depends_on_the_key_set_only(v6, keys, n, rnd):
    rules = {key(k, v6): val(i) for i, k in enumerate(keys)}
    shuffled = list(rules.items())
    rnd.shuffle(shuffled)
    assert direct.Table(rules, n, v6=v6).elements() == direct.Table(dict(shuffled), n, v6=v6).elements()


EDIT = st.tuples(st.integers(0, 2), st.integers(0, 10**6), KEYS)


@FAMILY
@given(st.dictionaries(KEYS, st.integers(0, 2**40), max_size=60), st.integers(1, 48), st.lists(st.lists(EDIT, max_size=6), max_size=12))
@settings(max_examples=300)
def test_update_equals_a_fresh_build(v6, raw, n, batches):
    rules = {key(k, v6): val(i) for k, i in raw.items()}
    table = direct.Table(rules, n, v6=v6)
    mirror = dict(table.elements())
    for batch in batches:
        changes: dict[bytes, bytes | None] = {}
        for op, i, k in batch:
            k = key(k, v6)
            live = sorted(rules)
            if op == 0 or not live:  # add (or change, when the key exists)
                changes[k] = val(i)
            elif op == 1:  # remove an existing key
                changes[live[i % len(live)]] = None
            else:  # change an existing key's value
                changes[live[i % len(live)]] = val(i)
        for k, v in changes.items():
            if v is None:
                rules.pop(k, None)
            else:
                rules[k] = v
        for p, e in table.update(changes).items():
            if e is None:
                mirror.pop(p)
            else:
                mirror[p] = e
        fresh = direct.Table(rules, n, v6=v6)
        assert mirror == fresh.elements() == table.elements()
        assert table.overflowed() == fresh.overflowed()


def test_update_touches_only_the_cluster():
    rng = random.Random(3)
    n = 4096
    rules = {rng.randbytes(20): val(i) for i in range(1000)}
    table = direct.Table(rules, n)
    for i in range(200):
        k = rng.randbytes(20)
        assert len(table.update({k: val(i)})) <= 2 * direct.DEPTH + 2


def test_marker_and_sizing():
    caps = layout.Capacities()
    assert direct.map_entries(caps) == layout.map_def(direct.MAP_NAME).entries(caps)
    assert direct.homes_of_map(direct.map_entries(caps)) == direct.homes(caps) == 2 * caps.max_entries
    digest = bytes(range(32))
    c = direct.contents({}, gen_value(digest), 10)
    assert c == {(10 + direct.DEPTH).to_bytes(4, "little"): direct.marker_element(gen_value(digest))}
    assert int.from_bytes(c[(10 + direct.DEPTH).to_bytes(4, "little")][:8], "little") == direct.marker(digest)
    assert direct.marker(bytes(32)) == direct.SCHEME
    c6 = direct.contents({}, gen_value(digest), 10, v6=True)
    assert int.from_bytes(c6[(10 + direct.DEPTH).to_bytes(4, "little")][:8], "little") == direct.marker(digest, True)
    assert direct.marker(bytes(32), True) == direct.SCHEME6 != direct.SCHEME
    assert len(c6[(10 + direct.DEPTH).to_bytes(4, "little")]) == layout.DIRECT6.size


def test_overflow_is_rare_at_full_capacity():
    """Sizing: at max_entries keys (half the homes) under 1% of the keys
    fall back to the rule map."""
    rng = random.Random(5)
    n_keys = 20000
    table = direct.Table({rng.randbytes(20): val(i) for i in range(n_keys)}, 2 * n_keys)
    assert table.overflowed() < n_keys // 100
