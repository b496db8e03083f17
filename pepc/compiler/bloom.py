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

IPv6 has its own filter, `pepc_bloom6_<gen>` over `pepc_rules6_<gen>`: the
same sizing, bit choice and marker rule, a hash over the six u64 words of
the 48-byte key (`hash64_6`) and its own scheme constant (`SCHEME6`), so
neither family's filter can pass for the other's.

Sizing: one u64 word per rule-map entry (`max_entries` words, 64 bits per
entry): at full capacity a mask's false-positive rate is about 1.6%.
"""

from __future__ import annotations

import struct
from typing import Iterable, Mapping

from pepc.compiler import layout

#: Bump when the hash, sizing or marker changes (mirrored in bpf/pepc_xdp.c).
SCHEME = 0x70657063_626C6D01  # "pepcblm" v1
SCHEME6 = 0x70657063_626C3601  # "pepcbl6" v1: the IPv6 filter

K1, K2, K3, K4 = 0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93
_M64 = (1 << 64) - 1
K5, K6, K7 = 0x94D049BB133111EB, 0xBF58476D1CE4E5B9, 0xFF51AFD7ED558CCD
_KEY = struct.Struct("<QQI")  # the three words the program hashes
assert _KEY.size == layout.RULE_KEY.size
_KEY6 = struct.Struct("<6Q")  # the six words of an IPv6 key (the last: ports + padding)
assert _KEY6.size == layout.RULE6_KEY.size

MAP_NAME = "pepc_bloom"  # kernel maps pepc_bloom_0 and pepc_bloom_1
MAP_NAME6 = "pepc_bloom6"  # kernel maps pepc_bloom6_0 and pepc_bloom6_1


def words(caps: layout.Capacities) -> int:
    return caps.max_entries


def map_entries(caps: layout.Capacities) -> int:
    """max_entries of each pepc_bloom_<gen> array: the words plus the marker."""
    return layout.map_def(MAP_NAME).entries(caps)


def hash64(key: bytes) -> int:
    """The program's hash of a rule-map key (also the direct table's, pepc/compiler/direct.py)."""
    a, b, c = _KEY.unpack(key)
    h = ((a * K1) ^ (b * K2) ^ (c * K3)) & _M64
    h ^= h >> 32
    h = (h * K4) & _M64
    return h ^ (h >> 32)


def hash64_6(key: bytes) -> int:
    """The program's hash of an IPv6 rule-map key (bpf/pepc_xdp.c lookup_mask6)."""
    shape, s0, s1, d0, d1, ports = _KEY6.unpack(key)
    h = ((shape * K1) ^ (s0 * K2) ^ (s1 * K5) ^ (d0 * K6) ^ (d1 * K7) ^ (ports * K3)) & _M64
    h ^= h >> 32
    h = (h * K4) & _M64
    return h ^ (h >> 32)


def hashes6(keys: list[bytes]) -> list[int]:
    """hash64_6() of every key, in order."""
    k1, k2, k3, k4, k5, k6, k7, m = K1, K2, K3, K4, K5, K6, K7, _M64
    out = []
    for shape, s0, s1, d0, d1, ports in _KEY6.iter_unpack(b"".join(keys)):
        h = ((shape * k1) ^ (s0 * k2) ^ (s1 * k5) ^ (d0 * k6) ^ (d1 * k7) ^ (ports * k3)) & m
        h = ((h ^ (h >> 32)) * k4) & m
        out.append(h ^ (h >> 32))
    return out


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
    """(word index, bit mask) of a rule-map key of either family (told
    apart by the key's size)."""
    return _word_bit(hash64_6(key) if len(key) == _KEY6.size else hash64(key), n_words)


def gen_digest(gen_value: bytes) -> bytes:
    """The policy digest a pepc_gen value carries: what the markers of the
    prefilter and of the direct table are made of."""
    return bytes(layout.GEN.unpack(gen_value)["policy_digest"]).ljust(32, b"\0")


def marker(policy_digest: bytes, v6: bool = False) -> int:
    """The marker for a generation whose pepc_gen.policy_digest is
    `policy_digest` (of its IPv6 filter with v6)."""
    return int.from_bytes(policy_digest[:8], "little") ^ (SCHEME6 if v6 else SCHEME)


def contents(
    rule_keys: Iterable[bytes], gen_value: bytes, n_words: int, key_hashes: list[int] | None = None, v6: bool = False
) -> dict[bytes, bytes]:
    """The filter for one generation, as array elements (u32 key -> u64
    value; zero words omitted): a bit per rule-map key, plus the marker of
    the generation's policy digest (taken from its pepc_gen value).
    `n_words` is words(caps), i.e. the live map's max_entries - 1;
    `key_hashes` the keys' hashes() when the caller has them. With v6,
    the IPv6 filter (pepc_bloom6) over IPv6 rule keys."""
    n = n_words
    acc: dict[int, int] = {}
    if key_hashes is None:
        key_hashes = (hashes6 if v6 else hashes)(list(rule_keys))
    for h in key_hashes:
        i, bit = _word_bit(h, n)
        acc[i] = acc.get(i, 0) | bit
    acc[n] = marker(gen_digest(gen_value), v6)
    return {i.to_bytes(4, "little"): v.to_bytes(8, "little") for i, v in acc.items()}


def for_contents(generation: Mapping[str, Mapping[bytes, bytes]], n_words: int, key_hashes: list[int] | None = None) -> dict[bytes, bytes]:
    """The filter for a generation given as Program.map_contents() (what a
    reconciler would add as `contents["pepc_bloom"]`, written to
    pepc_bloom_<gen>, with n_words = that map's max_entries - 1)."""
    return contents(generation["pepc_rules"], generation["pepc_gen"][(0).to_bytes(4, "little")], n_words, key_hashes)


def for_contents6(generation: Mapping[str, Mapping[bytes, bytes]], n_words: int, key_hashes: list[int] | None = None) -> dict[bytes, bytes]:
    """for_contents for the IPv6 filter (contents["pepc_bloom6"], over
    pepc_rules6)."""
    return contents(generation.get("pepc_rules6", {}), generation["pepc_gen"][(0).to_bytes(4, "little")], n_words, key_hashes, v6=True)
