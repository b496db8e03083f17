"""Which atoms can meet which: the candidate index that keeps the checker
from comparing every rule with every other.

Two prefixes intersect only when one contains the other. Atoms are bucketed
by destination prefix; each atom looks up only the buckets of its own
destination prefix and of its ancestors (at most one per prefix length in
use), so every meeting pair is found exactly once, from the side with the
longer (or equal) destination prefix. A large bucket is indexed again by
source prefix (ancestors by lookup, descendants by a sorted range) and a
large group by destination port, so that a long block list or a long port
list in one bucket does not turn into a scan. Candidates are confirmed by
the exact box test; the result is the list of meeting atoms of every atom,
sorted by rank.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from pepc.checker.geometry import PORT_MAX

#: Buckets and groups at most this long are scanned instead of indexed.
_SCAN = 24

_MASKS = [(0xFFFFFFFF << (32 - n)) & 0xFFFFFFFF for n in range(33)]


class _PortGroup:
    """Members of one (dst prefix, src prefix) bucket, by destination port."""

    __slots__ = ("members", "wide", "single", "keys")

    def __init__(self) -> None:
        self.members: list[int] = []
        self.wide: list[int] | None = None

    def finish(self, boxes: list) -> None:
        if len(self.members) <= _SCAN:
            return
        self.wide = []
        self.single: dict[int, list[int]] = {}
        for i in self.members:
            b = boxes[i]
            if b[8] == b[9]:
                self.single.setdefault(b[8], []).append(i)
            else:
                self.wide.append(i)
        self.keys = sorted(self.single)

    def candidates(self, lo: int, hi: int) -> list[int]:
        if self.wide is None or (lo == 0 and hi == PORT_MAX):
            return self.members
        out = list(self.wide)
        if lo == hi:
            out += self.single.get(lo, ())
        else:
            for k in self.keys[bisect_left(self.keys, lo) : bisect_right(self.keys, hi)]:
                out += self.single[k]
        return out


class _Bucket:
    """Atoms with one destination prefix."""

    __slots__ = ("members", "by_src", "plens", "sorted_addrs")

    def __init__(self) -> None:
        self.members: list[int] = []
        self.by_src: dict[tuple[int, int], _PortGroup] | None = None

    def finish(self, boxes: list, srcs: list) -> None:
        if len(self.members) <= _SCAN:
            return
        self.by_src = {}
        for i in self.members:
            self.by_src.setdefault(srcs[i], _PortGroup()).members.append(i)
        for g in self.by_src.values():
            g.finish(boxes)
        self.plens = sorted({p for p, _ in self.by_src})
        self.sorted_addrs = {p: sorted(a for q, a in self.by_src if q == p) for p in self.plens}

    def candidates(self, splen: int, saddr: int, slast: int, dlo: int, dhi: int) -> list[int]:
        if self.by_src is None:
            return self.members
        out: list[int] = []
        by_src = self.by_src
        for p in self.plens:
            if p <= splen:
                g = by_src.get((p, saddr & _MASKS[p]))
                if g is not None:
                    out += g.candidates(dlo, dhi)
            else:
                addrs = self.sorted_addrs[p]
                for a in addrs[bisect_left(addrs, saddr) : bisect_right(addrs, slast)]:
                    out += by_src[(p, a)].candidates(dlo, dhi)
        return out


def meeting_atoms(boxes: list, dsts: list[tuple[int, int]], srcs: list[tuple[int, int]]) -> list[list[int]]:
    """For every atom, the other atoms whose boxes intersect its box.

    `dsts[i]`/`srcs[i]` are atom i's destination/source prefix as
    (length, address). Lists come back in index order of discovery; the
    caller sorts them.
    """
    n = len(boxes)
    buckets: dict[tuple[int, int], _Bucket] = {}
    for i in range(n):
        buckets.setdefault(dsts[i], _Bucket()).members.append(i)
    for bucket in buckets.values():
        bucket.finish(boxes, srcs)
    dplens = sorted({p for p, _ in buckets})
    meets: list[list[int]] = [[] for _ in range(n)]
    get = buckets.get
    for i in range(n):
        dplen, daddr = dsts[i]
        splen, saddr = srcs[i]
        b = boxes[i]
        c0, c1, s0, s1, d0, d1, p0, p1, q0, q1 = b
        mi = meets[i]
        for p in dplens:
            if p > dplen:
                break
            bucket = get((p, daddr & _MASKS[p]))
            if bucket is None:
                continue
            same = p == dplen
            for j in bucket.candidates(splen, saddr, s1, q0, q1):
                if same and j >= i:
                    continue
                o = boxes[j]
                if (
                    o[0] <= c1 and o[1] >= c0 and o[2] <= s1 and o[3] >= s0 and o[4] <= d1
                    and o[5] >= d0 and o[6] <= p1 and o[7] >= p0 and o[8] <= q1 and o[9] >= q0
                ):
                    mi.append(j)
                    meets[j].append(i)
    return meets


def meeting_atoms_naive(boxes: list) -> list[list[int]]:
    """The all-pairs version of `meeting_atoms` (O(n²)); the baseline the
    benchmark measures the index against, and a test's reference."""
    n = len(boxes)
    meets: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        c0, c1, s0, s1, d0, d1, p0, p1, q0, q1 = boxes[i]
        mi = meets[i]
        for j in range(i + 1, n):
            o = boxes[j]
            if (
                o[0] <= c1 and o[1] >= c0 and o[2] <= s1 and o[3] >= s0 and o[4] <= d1
                and o[5] >= d0 and o[6] <= p1 and o[7] >= p0 and o[8] <= q1 and o[9] >= q0
            ):
                mi.append(j)
                meets[j].append(i)
    return meets
