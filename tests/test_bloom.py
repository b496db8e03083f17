"""pepc.compiler.bloom, pure: every key of a generation has its bit (no false
negatives, ever), the marker follows the policy digest, and the false-
positive rate is what the sizing promises."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from pepc.compiler import bloom, layout

KEYS = st.binary(min_size=20, max_size=20)


def gen_value(digest: bytes) -> bytes:
    return layout.GEN.pack({"n_masks": 1, "policy_digest": digest})


@given(st.lists(KEYS, max_size=200), st.integers(1, 5000), st.binary(min_size=32, max_size=32))
def test_every_key_has_its_bit_and_the_marker_is_last(keys, n_words, digest):
    c = bloom.contents(keys, gen_value(digest), n_words)
    for k in keys:
        i, bit = bloom.position(k, n_words)
        assert 0 <= i < n_words and bit and bit & (bit - 1) == 0
        assert int.from_bytes(c[i.to_bytes(4, "little")], "little") & bit
    assert int.from_bytes(c[n_words.to_bytes(4, "little")], "little") == bloom.marker(digest)
    assert all(int.from_bytes(k, "little") <= n_words for k in c)
    assert all(len(v) == 8 for v in c.values())


def test_marker_changes_with_the_digest_and_the_scheme():
    a, b = bytes(32), bytes([1]) + bytes(31)
    assert bloom.marker(a) != bloom.marker(b)
    assert bloom.marker(a) == bloom.SCHEME  # an all-zero digest still yields a non-zero marker


def test_false_positive_rate_at_full_capacity():
    rng = random.Random(7)
    n = 4096
    keys = {rng.randbytes(20) for _ in range(n)}  # as many keys as words: the configured maximum
    c = bloom.contents(keys, gen_value(bytes(32)), n)
    words = {int.from_bytes(k, "little"): int.from_bytes(v, "little") for k, v in c.items()}
    probes = [rng.randbytes(20) for _ in range(20000)]
    fp = 0
    for p in probes:
        if p in keys:
            continue
        i, bit = bloom.position(p, n)
        fp += bool(words.get(i, 0) & bit)
    assert fp / len(probes) < 0.03  # ~1 - e^(-1/64) = 1.6% expected


def test_structured_keys_spread_like_random_ones():
    """Rule keys differ in a few bits (consecutive addresses, one shape):
    the hash must still spread them, or the rate above would be a lie."""
    n = 8192
    keys = [layout.RULE_KEY.pack({"src_plen": 32, "proto_plen": 8, "proto": 6, "src": 0x0A000000 + i}) for i in range(n)]
    c = bloom.contents(keys, gen_value(bytes(32)), n)
    bits = sum(bin(int.from_bytes(v, "little")).count("1") for k, v in c.items() if int.from_bytes(k, "little") < n)
    assert bits > 0.98 * n  # few collisions: about n(1 - 1/128) distinct bits expected


def test_for_contents_reads_a_program_generation():
    from pepc.policy.model import Action, Location, Policy, Prefix, Rule
    from pepc.compiler import compile_program, pack
    from pepc.policy.config import Config
    from datetime import datetime, timezone

    pol = Policy("/p", (Rule("a", Action.BLOCK, Location("x", 1, 1), src=(Prefix.parse("10.0.0.0/8"),)),))
    prog = compile_program(pol, Config(), datetime(2026, 1, 1, tzinfo=timezone.utc))
    gen = pack.map_contents(prog)
    c = bloom.for_contents(gen, 1000)
    assert c == bloom.contents(gen["pepc_rules"], gen["pepc_gen"][bytes(4)], 1000)
    assert bloom.marker(bytes.fromhex(prog.policy_digest)) == int.from_bytes(c[(1000).to_bytes(4, "little")], "little")
