"""The mask prefilter: a Bloom filter over a generation's rule-map keys.

A tuple-space walk costs one hash-map lookup per mask, and on kernels with
expensive calls (retpolines, SRSO "safe RET") a lookup is ~30 ns: most of a
packet's cost once a policy has a handful of masks. Before looking a key up,
the XDP program hashes it (a few multiplies, in registers) and tests one bit
of `pepc_bloom_<gen>`; a clear bit means no entry has this key, so the
lookup is skipped. A set bit is a maybe: the lookup decides. So the filter
can only ever cost a lookup, never change a verdict -- provided it holds a
bit for every key of the generation.

That proviso is guarded by a marker, so a writer that does not know about
the filter can never make it lie: the last element of the array holds
`marker(policy digest)`, and the program uses the filter only while that
equals the marker of the policy digest in `pepc_gen[gen]`. Every change of
a generation's rules changes its policy digest, so a filter left behind by
an older write is ignored (correct, only slower) until someone writes the
filter for the new contents. The scheme constant is folded into the marker,
so a program and a pepc that hash differently never trust each other's
filters. tests/test_kernel_layer.py checks that bpf/pepc_xdp.c agrees.

Sizing: one u64 word per rule-map entry (`max_entries` words, 64 bits per
entry): at full capacity a mask's false-positive rate is about 1.6%.
"""

from __future__ import annotations

import struct
from typing import Iterable, Mapping

from pepc import layout

#: Bump when the hash, sizing or marker changes (mirrored in bpf/pepc_xdp.c).
SCHEME = 0x70657063_626C6D01  # "pepcblm" v1

K1, K2, K3, K4 = 0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93
_M64 = (1 << 64) - 1
_KEY = struct.Struct("<QQI")  # the three words the program hashes
assert _KEY.size == layout.RULE_KEY.size

MAP_NAME = "pepc_bloom"  # kernel maps pepc_bloom_0 and pepc_bloom_1


def words(caps: layout.Capacities) -> int:
    return caps.max_entries


def map_entries(caps: layout.Capacities) -> int:
    """max_entries of each pepc_bloom_<gen> array: the words plus the marker."""
    return layout.map_def(MAP_NAME).entries(caps)


def hash64(key: bytes) -> int:
    """The program's hash of a rule-map key (also the direct table's, pepc/direct.py)."""
    a, b, c = _KEY.unpack(key)
    h = ((a * K1) ^ (b * K2) ^ (c * K3)) & _M64
    h ^= h >> 32
    h = (h * K4) & _M64
    return h ^ (h >> 32)


def hashes(keys: list[bytes]) -> list[int]:
    """hash64() of every key, in order: one pass shared by the filter and
    the direct table (10^5 keys on a first apply)."""
    k1, k2, k3, k4, m = K1, K2, K3, K4, _M64
    out = []
    for a, b, c in _KEY.iter_unpack(b"".join(keys)):
        h = ((a * k1) ^ (b * k2) ^ (c * k3)) & m
        h = ((h ^ (h >> 32)) * k4) & m
        out.append(h ^ (h >> 32))
    return out


def _word_bit(h: int, n_words: int) -> tuple[int, int]:
    return ((h >> 32) * n_words) >> 32, 1 << (h & 63)


def position(key: bytes, n_words: int) -> tuple[int, int]:
    """(word index, bit mask) of a rule-map key."""
    return _word_bit(hash64(key), n_words)


def gen_digest(gen_value: bytes) -> bytes:
    """The policy digest a pepc_gen value carries: what the markers of the
    prefilter and of the direct table are made of."""
    return bytes(layout.GEN.unpack(gen_value)["policy_digest"]).ljust(32, b"\0")


def marker(policy_digest: bytes) -> int:
    """The marker for a generation whose pepc_gen.policy_digest is `policy_digest`."""
    return int.from_bytes(policy_digest[:8], "little") ^ SCHEME


def contents(rule_keys: Iterable[bytes], gen_value: bytes, n_words: int, key_hashes: list[int] | None = None) -> dict[bytes, bytes]:
    """The filter for one generation, as array elements (u32 key -> u64
    value; zero words omitted): a bit per rule-map key, plus the marker of
    the generation's policy digest (taken from its pepc_gen value).
    `n_words` is words(caps), i.e. the live map's max_entries - 1;
    `key_hashes` the keys' hashes() when the caller has them."""
    n = n_words
    acc: dict[int, int] = {}
    for h in hashes(list(rule_keys)) if key_hashes is None else key_hashes:
        i, bit = _word_bit(h, n)
        acc[i] = acc.get(i, 0) | bit
    acc[n] = marker(gen_digest(gen_value))
    return {i.to_bytes(4, "little"): v.to_bytes(8, "little") for i, v in acc.items()}


def for_contents(generation: Mapping[str, Mapping[bytes, bytes]], n_words: int, key_hashes: list[int] | None = None) -> dict[bytes, bytes]:
    """The filter for a generation given as Program.map_contents() (what a
    reconciler would add as `contents["pepc_bloom"]`, written to
    pepc_bloom_<gen>, with n_words = that map's max_entries - 1)."""
    return contents(generation["pepc_rules"], generation["pepc_gen"][(0).to_bytes(4, "little")], n_words, key_hashes)
