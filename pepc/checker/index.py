"""Which atoms can meet a box, or contain a point, without looking at all.

Two prefixes intersect only when one contains the other. `_Index` buckets
atoms by one address prefix (the *primary*: destination or source); a
query visits the buckets of the query prefix's ancestors (one lookup per
prefix length in use) and of its descendants (a range of a sorted list
per longer length). A large bucket is indexed again by the other address
prefix the same way, and a large group of one (dst, src) pair by
destination port, so that a long block list or a long port list does not
turn into a scan. Candidates are confirmed by the exact box test.

`BoxIndex` keeps one index per primary and answers a box query from the
one where the query prefix is longer (fewer descendants to visit). It is
incremental (`add`), so the pair search can sweep the rank order and keep
only the atoms ranked before the current one. `ScanIndex` is the same
interface as a plain scan: the all-pairs baseline the benchmark measures
against and the reference of a test.

Queries are generators: callers that need one candidate stop early.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from typing import Iterator

from pepc.checker.geometry import PORT_MAX, Box

#: Buckets and groups at most this long are scanned instead of indexed.
_SCAN = 16

_MASKS = [(0xFFFFFFFF << (32 - n)) & 0xFFFFFFFF for n in range(33)]
_SIZES = [1 << (32 - n) for n in range(33)]


class _Group:
    """Atoms with one (primary, secondary) prefix pair, by destination port."""

    __slots__ = ("members", "wide", "single")

    def __init__(self) -> None:
        self.members: list[int] = []
        self.wide: list[int] | None = None
        self.single: dict[int, list[int]] = {}

    def add(self, i: int, box: Box, boxes: list) -> None:
        self.members.append(i)
        if self.wide is not None:
            self._put(i, box)
        elif len(self.members) > _SCAN:
            self.wide = []
            for j in self.members:
                self._put(j, boxes[j])

    def _put(self, i: int, box: Box) -> None:
        if box[8] == box[9]:
            self.single.setdefault(box[8], []).append(i)
        else:
            self.wide.append(i)  # type: ignore[union-attr]

    def query(self, lo: int, hi: int) -> list[int]:
        wide = self.wide
        if wide is None or (lo == 0 and hi == PORT_MAX):
            return self.members
        single = self.single
        if lo == hi:
            got = single.get(lo)
            return wide + got if got else wide
        out = list(wide)
        if hi - lo < len(single):
            for port in range(lo, hi + 1):
                got = single.get(port)
                if got:
                    out += got
        else:
            for port, got in single.items():
                if lo <= port <= hi:
                    out += got
        return out


class _Bucket:
    """Atoms with one primary prefix, by secondary prefix when many."""

    __slots__ = ("members", "sec", "plens", "addrs")

    def __init__(self) -> None:
        self.members: list[int] = []
        self.sec: dict[tuple[int, int], _Group] | None = None
        self.plens: list[int] = []
        self.addrs: dict[int, list[int]] = {}

    def add(self, i: int, key: tuple[int, int], box: Box, boxes: list, keys: list) -> None:
        self.members.append(i)
        if self.sec is not None:
            self._put(i, key, box, boxes)
        elif len(self.members) > _SCAN:
            self.sec = {}
            for j in self.members:
                self._put(j, keys[j], boxes[j], boxes)

    def _put(self, i: int, key: tuple[int, int], box: Box, boxes: list) -> None:
        g = self.sec.get(key)  # type: ignore[union-attr]
        if g is None:
            g = self.sec[key] = _Group()  # type: ignore[index]
            plen, addr = key
            arr = self.addrs.get(plen)
            if arr is None:
                insort(self.plens, plen)
                arr = self.addrs[plen] = []
            insort(arr, addr)
        g.add(i, box, boxes)

    def query(self, plen: int, addr: int, last: int, lo: int, hi: int) -> Iterator[list[int]]:
        """Candidate lists whose secondary prefix meets (plen, addr)."""
        sec = self.sec
        if sec is None:
            yield self.members
            return
        for p in self.plens:
            if p <= plen:
                g = sec.get((p, addr & _MASKS[p]))
                if g is not None:
                    yield g.query(lo, hi)
            else:
                arr = self.addrs[p]
                for a in arr[bisect_left(arr, addr) : bisect_right(arr, last)]:
                    yield sec[(p, a)].query(lo, hi)

    def stab(self, addr: int, port: int) -> Iterator[list[int]]:
        sec = self.sec
        if sec is None:
            yield self.members
            return
        for p in self.plens:
            g = sec.get((p, addr & _MASKS[p]))
            if g is not None:
                yield g.query(port, port)


class _Index:
    """Atoms bucketed by one address prefix: field 4 (dst) or 2 (src)."""

    def __init__(self, boxes: list, pkeys: list, skeys: list, field: int):
        self.boxes = boxes
        self.pkeys = pkeys
        self.skeys = skeys
        self.field = field
        self.buckets: dict[tuple[int, int], _Bucket] = {}
        self.plens: list[int] = []
        self.addrs: dict[int, list[int]] = {}

    def add(self, i: int) -> None:
        key = self.pkeys[i]
        b = self.buckets.get(key)
        if b is None:
            b = self.buckets[key] = _Bucket()
            plen, addr = key
            arr = self.addrs.get(plen)
            if arr is None:
                insort(self.plens, plen)
                arr = self.addrs[plen] = []
            insort(arr, addr)
        b.add(i, self.skeys[i], self.boxes[i], self.boxes, self.skeys)

    def meeting(self, q: Box, pkey: tuple[int, int], skey: tuple[int, int]) -> Iterator[int]:
        boxes, buckets = self.boxes, self.buckets
        c0, c1, s0, s1, d0, d1, p0, p1, q0, q1 = q
        pplen, paddr = pkey
        plast = paddr + _SIZES[pplen] - 1
        splen, saddr = skey
        slast = saddr + _SIZES[splen] - 1
        for p in self.plens:
            if p <= pplen:
                b = buckets.get((p, paddr & _MASKS[p]))
                chosen = (b,) if b is not None else ()
            else:
                arr = self.addrs[p]
                chosen = [buckets[(p, a)] for a in arr[bisect_left(arr, paddr) : bisect_right(arr, plast)]]
            for b in chosen:
                for members in b.query(splen, saddr, slast, q0, q1):
                    for j in members:
                        o = boxes[j]
                        if (
                            o[0] <= c1 and o[1] >= c0 and o[2] <= s1 and o[3] >= s0 and o[4] <= d1
                            and o[5] >= d0 and o[6] <= p1 and o[7] >= p0 and o[8] <= q1 and o[9] >= q0
                        ):
                            yield j

    def stab(self, point: tuple) -> Iterator[int]:
        boxes, buckets = self.boxes, self.buckets
        cls, src, dst, sport, dport = point
        prim, sec = (dst, src) if self.field == 4 else (src, dst)
        for p in self.plens:
            b = buckets.get((p, prim & _MASKS[p]))
            if b is None:
                continue
            for members in b.stab(sec, dport):
                for j in members:
                    o = boxes[j]
                    if (
                        o[0] <= cls <= o[1] and o[2] <= src <= o[3] and o[4] <= dst <= o[5]
                        and o[6] <= sport <= o[7] and o[8] <= dport <= o[9]
                    ):
                        yield j


class BoxIndex:
    def __init__(self, boxes: list, dsts: list, srcs: list):
        self.dsts, self.srcs = dsts, srcs
        self.by_dst = _Index(boxes, dsts, srcs, 4)
        self.by_src = _Index(boxes, srcs, dsts, 2)

    def add(self, i: int) -> None:
        self.by_dst.add(i)
        self.by_src.add(i)

    def meeting(self, q: Box, dst: tuple[int, int], src: tuple[int, int]) -> Iterator[int]:
        """Atoms whose boxes meet box q, whose dst/src are these prefixes."""
        if dst[0] >= src[0]:
            return self.by_dst.meeting(q, dst, src)
        return self.by_src.meeting(q, src, dst)

    def stab(self, point: tuple) -> Iterator[int]:
        """Atoms whose boxes contain the point."""
        return self.by_dst.stab(point)


class ScanIndex:
    """BoxIndex's interface as a scan of everything added (O(n) a query)."""

    def __init__(self, boxes: list, dsts: list, srcs: list):
        self.boxes = boxes
        self.members: list[int] = []

    def add(self, i: int) -> None:
        self.members.append(i)

    def meeting(self, q: Box, dst: tuple[int, int], src: tuple[int, int]) -> Iterator[int]:
        c0, c1, s0, s1, d0, d1, p0, p1, q0, q1 = q
        boxes = self.boxes
        for j in self.members:
            o = boxes[j]
            if (
                o[0] <= c1 and o[1] >= c0 and o[2] <= s1 and o[3] >= s0 and o[4] <= d1
                and o[5] >= d0 and o[6] <= p1 and o[7] >= p0 and o[8] <= q1 and o[9] >= q0
            ):
                yield j

    def stab(self, point: tuple) -> Iterator[int]:
        cls, src, dst, sport, dport = point
        boxes = self.boxes
        for j in self.members:
            o = boxes[j]
            if (
                o[0] <= cls <= o[1] and o[2] <= src <= o[3] and o[4] <= dst <= o[5]
                and o[6] <= sport <= o[7] and o[8] <= dport <= o[9]
            ):
                yield j
