"""The direct table: a copy of a generation's rule map the XDP program can
read without calling into the kernel.

Why: a BPF hash-map lookup is a call into the kernel (`__htab_map_lookup_elem`,
which calls `memcmp`), and on kernels with costly returns (retpolines, SRSO
"safe RET") those two returns are most of its ~27 ns -- a quarter of the
cost of a packet that hits a rule. An array lookup is inlined by the
verifier. So each generation also has `pepc_direct_<gen>`, an array laid
out as an open-addressing hash table over the rule-map entries: the program
hashes the key it built (the same hash as the prefilter, pepc/compiler/bloom.py),
looks at the entry's home and up to DEPTH entries after it, and compares
the stored key word by word. A match is the rule-map value; an empty entry
means no such key. Keys that do not fit within DEPTH of their home stay
only in `pepc_rules_<gen>` (which always holds every entry): their home
entry carries OVERFLOW and the program falls back to the hash map there.

Canonical layout: the table is a function of the set of keys, not of the
order they were written in. Keys are placed in (home, key) order, each at
its home or the first free entry after the previous one (linear probing
with ordered insertion). The reconciler diffs desired and live tables
element by element like any array, and an edit changes only the cluster of
consecutive entries around the edited key's home -- `Table.update` redoes
just those, equal to a fresh build (property test).

Like the prefilter, the table is trusted only while its marker (the last
element: the generation's policy digest ^ SCHEME in its first word) belongs
to the generation's current policy digest, so a writer that does not know
about the table can make it useless, never wrong. Sizing: 2 homes per
rule-map entry (at most half full), DEPTH + 1 entries of 40 bytes probed.

IPv6 has its own table, `pepc_direct6_<gen>` over `pepc_rules6_<gen>`: the
same layout rule, sizing and flags, entries of `layout.DIRECT6` (the 48-byte
key, the flags padded to 8, the value), homes from the IPv6 prefilter's
hash (`bloom.hash64_6`) and a marker of its own (`SCHEME6`). Every function
here takes `v6` to pick the family.
"""

from __future__ import annotations

import bisect
import struct
from itertools import repeat
from typing import Mapping

from pepc.compiler import bloom, layout

#: Bump when the hash, layout, sizing or marker changes (mirrored in bpf/pepc_xdp.c).
SCHEME = 0x70657063_64697201  # "pepcdir" v1
SCHEME6 = 0x70657063_64693601  # "pepcdi6" v1: the IPv6 table
DEPTH = layout.DIRECT_DEPTH  # entries probed after the home (the program unrolls DEPTH + 1 compares)
USED = 1
OVERFLOW = 2  # some key whose home is this entry lives only in the rule map
MAP_NAME = "pepc_direct"  # kernel maps pepc_direct_0 and pepc_direct_1
MAP_NAME6 = "pepc_direct6"  # kernel maps pepc_direct6_0 and pepc_direct6_1

# An entry is the key's 20 bytes, the flags (padded to 4), then the rule-map
# value verbatim: packing one is two concatenations.
_ENTRY = layout.DIRECT
_FLAGS_AT = _ENTRY.offsets["flags"]
assert _FLAGS_AT == layout.RULE_KEY.size and _ENTRY.offsets["rank"] == 24 and _ENTRY.size == 24 + layout.RULE_VAL.size
assert [f.name for f in _ENTRY.fields[5:]] == [f.name for f in layout.RULE_VAL.fields[:3]] + ["_pad1"]
_FLAGS = tuple(bytes([f, 0, 0, 0]) for f in range(4))
_M32 = 0xFFFFFFFF
_MARKER_PAD = bytes(_ENTRY.size - 8)
_U32 = struct.Struct("<I").pack


class _Family:
    """What differs between the IPv4 and the IPv6 table."""

    def __init__(self, entry: layout.Struct, key: layout.Struct, scheme: int, hash64, hashes) -> None:
        self.key_size = key.size
        self.flags_at = entry.offsets["flags"]
        self.value_at = entry.offsets["rank"]
        assert self.flags_at == key.size and entry.size == self.value_at + layout.RULE_VAL.size
        self.flags = tuple(bytes([f]) + bytes(self.value_at - self.flags_at - 1) for f in range(4))
        self.marker_pad = bytes(entry.size - 8)
        self.scheme = scheme
        self.hash64 = hash64
        self.hashes = hashes


_V4 = _Family(layout.DIRECT, layout.RULE_KEY, SCHEME, bloom.hash64, bloom.hashes)
_V6 = _Family(layout.DIRECT6, layout.RULE6_KEY, SCHEME6, bloom.hash64_6, bloom.hashes6)
assert _V4.flags == _FLAGS


def _fam(v6: bool) -> _Family:
    return _V6 if v6 else _V4


def map_entries(caps: layout.Capacities) -> int:
    """max_entries of each pepc_direct_<gen> array (sized in pepc/compiler/layout.py):
    the homes, DEPTH more entries a probe may reach past the last home,
    then the marker."""
    return layout.map_def(MAP_NAME).entries(caps)


def homes_of_map(max_entries: int) -> int:
    return max_entries - DEPTH - 1


def homes(caps: layout.Capacities) -> int:
    return homes_of_map(map_entries(caps))


def home(key: bytes, n_homes: int) -> int:
    """The entry where the probe for `key` starts (low half of the
    prefilter's hash; an IPv6 key is told by its size)."""
    h = bloom.hash64_6(key) if len(key) == _V6.key_size else bloom.hash64(key)
    return ((h & _M32) * n_homes) >> 32


def marker(policy_digest: bytes, v6: bool = False) -> int:
    return int.from_bytes(policy_digest[:8], "little") ^ _fam(v6).scheme


def marker_element(gen_value: bytes, v6: bool = False) -> bytes:
    return marker(bloom.gen_digest(gen_value), v6).to_bytes(8, "little") + _fam(v6).marker_pad


def _homes(keys: list[bytes], n_homes: int, hashes: list[int] | None = None, v6: bool = False) -> list[int]:
    """home() of every key, from their bloom hashes when the caller has them."""
    if hashes is None:
        hashes = _fam(v6).hashes(keys)
    return [((h & _M32) * n_homes) >> 32 for h in hashes]


def entry(key: bytes, value: bytes, flags: int = USED) -> bytes:
    """The table element holding rule-map `key` (of either family) with rule-map `value`."""
    return key + (_V6 if len(key) == _V6.key_size else _V4).flags[flags] + value


def _place(
    rules: Mapping[bytes, bytes], n_homes: int, hashes: list[int] | None, by_home: dict[int, list[bytes]] | None = None,
    v6: bool = False,
) -> tuple[list[int], list[bytes], set[int]]:
    """The canonical layout: (positions, the keys there, homes with a key
    that did not fit). Keys in (home, key) order, each at its home or the
    next free entry, unless that is more than DEPTH past its home. Fills
    `by_home` (home -> its keys in order) when given."""
    if n_homes < 1:
        raise ValueError("a direct table needs at least one home")
    keys = list(rules)
    pos: list[int] = []
    placed: list[bytes] = []
    over: set[int] = set()
    nxt = 0
    for h, k in sorted(zip(_homes(keys, n_homes, hashes, v6), keys)):
        if by_home is not None:
            by_home.setdefault(h, []).append(k)
        if h >= nxt:
            nxt = h
        elif nxt - h > DEPTH:
            over.add(h)
            continue
        pos.append(nxt)
        placed.append(k)
        nxt += 1
    return pos, placed, over


def _elements(rules: Mapping[bytes, bytes], pos: list[int], placed: list[bytes], over: set[int], v6: bool = False) -> dict[bytes, bytes]:
    # C-level loops: this runs for 10^5 keys on a first apply
    used = _fam(v6).flags[USED]
    out = dict(zip(map(_U32, pos), map(bytes.__add__, map(bytes.__add__, placed, repeat(used)), map(rules.__getitem__, placed))))
    if over:
        at = dict(zip(pos, placed))
        for p in over:
            out[_U32(p)] = entry(at[p], rules[at[p]], USED | OVERFLOW)
    return out


class Table:
    """A table laid out for `rules` (rule-map key -> value), kept across
    edits. `elements()` is the array (u32 index -> entry, empty entries
    omitted, no marker); `update()` applies rule-map changes and returns the
    elements that changed (None: now empty)."""

    def __init__(self, rules: Mapping[bytes, bytes], n_homes: int, hashes: list[int] | None = None, v6: bool = False) -> None:
        """`hashes`: bloom.hashes() of the keys of `rules` in its order, when
        the caller has them. `v6`: the IPv6 table (keys of pepc_rules6)."""
        self.n = n_homes
        self.v6 = v6
        self._vals: dict[bytes, bytes] = dict(rules)  # a copy: the caller edits its map before update()
        self._by_home: dict[int, list[bytes]] = {}  # home -> its keys, sorted
        pos, placed, self._over = _place(self._vals, n_homes, hashes, self._by_home, v6)
        self._at: dict[int, bytes] = dict(zip(pos, placed))  # position -> key
        self._elem = _elements(self._vals, pos, placed, self._over, v6)

    def elements(self) -> dict[bytes, bytes]:
        """The table's elements. Shared: do not modify."""
        return self._elem

    def overflowed(self) -> int:
        """Keys that live only in the rule map."""
        return len(self._vals) - len(self._at)

    def update(self, changes: Mapping[bytes, bytes | None]) -> dict[bytes, bytes | None]:
        by_home = self._by_home
        affected: set[int] = set()
        for k, v in changes.items():
            if v is None:
                if k not in self._vals:
                    continue
                del self._vals[k]
                h = home(k, self.n)
                lst = by_home[h]
                lst.pop(bisect.bisect_left(lst, k))
                if not lst:
                    del by_home[h]
            else:
                old = self._vals.get(k)
                if old == v:
                    continue
                self._vals[k] = v
                h = home(k, self.n)
                if old is None:
                    bisect.insort(by_home.setdefault(h, []), k)
            affected.add(h)
        out: dict[bytes, bytes | None] = {}
        pending = sorted(affected)
        j, done, nxt = 0, 0, 0
        at, elem, vals = self._at, self._elem, self._vals
        while j < len(pending):
            # Re-place the cluster holding the next affected home: from the
            # first entry of its run in the old layout (the entry before it
            # is empty, so the chain starts afresh there in both layouts) to
            # the first entry empty in both layouts past every affected home
            # met on the way; beyond it the two layouts are the same.
            c = pending[j]
            while c > done and (c - 1) in at:
                c -= 1
            if c > done:
                nxt = c
            new_at: dict[int, bytes] = {}
            new_over: set[int] = set()
            q = c
            while True:
                while j < len(pending) and pending[j] < q:
                    j += 1
                if nxt <= q and q not in at and (j == len(pending) or pending[j] > q):
                    break
                for k in by_home.get(q, ()):
                    p = q if q >= nxt else nxt
                    if p - q > DEPTH:
                        new_over.add(q)
                        continue
                    new_at[p] = k
                    nxt = p + 1
                q += 1
            for p in range(c, q):
                pk = p.to_bytes(4, "little")
                old = elem.get(pk)
                k = new_at.get(p)
                if k is None:
                    at.pop(p, None)
                    elem.pop(pk, None)
                    new = None
                else:
                    at[p] = k
                    new = elem[pk] = entry(k, vals[k], USED | OVERFLOW if p in new_over else USED)
                if new != old:
                    out[pk] = new
                if p in new_over:
                    self._over.add(p)
                else:
                    self._over.discard(p)
            done = nxt = q
        return out


def contents(
    rules: Mapping[bytes, bytes], gen_value: bytes, n_homes: int, hashes: list[int] | None = None, v6: bool = False
) -> dict[bytes, bytes]:
    """The table of one generation as array elements, the marker of its
    policy digest (from its pepc_gen value) included."""
    out = _elements(rules, *_place(rules, n_homes, hashes, None, v6), v6)
    out[(n_homes + DEPTH).to_bytes(4, "little")] = marker_element(gen_value, v6)
    return out


def for_contents(generation: Mapping[str, Mapping[bytes, bytes]], n_homes: int, hashes: list[int] | None = None) -> dict[bytes, bytes]:
    """The table for a generation given as Program.map_contents()."""
    return contents(generation["pepc_rules"], generation["pepc_gen"][(0).to_bytes(4, "little")], n_homes, hashes)


def for_contents6(generation: Mapping[str, Mapping[bytes, bytes]], n_homes: int) -> dict[bytes, bytes]:
    """The IPv6 table (pepc_direct6, over pepc_rules6) for a generation given as Program.map_contents()."""
    return contents(generation.get("pepc_rules6", {}), generation["pepc_gen"][(0).to_bytes(4, "little")], n_homes, None, True)


def lookup(elements: Mapping[bytes, bytes], key: bytes, n_homes: int) -> tuple[str, bytes | None]:
    """What the XDP program concludes from a table: ("hit", rule-map value),
    ("absent", None) or ("hash", None) -- ask the rule map. The reference for
    the C code and for the tests."""
    fam = _V6 if len(key) == _V6.key_size else _V4
    h = home(key, n_homes)
    first = None
    at, ks, vs = fam.flags_at, fam.key_size, fam.value_at
    for j in range(DEPTH + 1):
        e = elements.get((h + j).to_bytes(4, "little"))
        if j == 0:
            first = e
        if e is None or not e[at] & USED:
            break
        if e[:ks] == key:
            return "hit", e[vs:]
    if first is not None and first[at] & OVERFLOW:
        return "hash", None
    return "absent", None
