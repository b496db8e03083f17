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

from pepc.checker.geometry import N_CLASSES, PORT_MAX, Box
from pepc.policy.model import LINE_BITS

#: Buckets and groups at most this long are scanned instead of indexed
#: (a parameter, so that a test can make every level kick in).
_SCAN = 16

#: Point queries find a group's port ranges by block of 2^_BLOCK_BITS ports.
_BLOCK_BITS = 10
_BLOCKS = (PORT_MAX >> _BLOCK_BITS) + 1

# Prefixes are (length, address) on the unified line of pepc.policy.model
# (Prefix.line): both families in one 129-bit space.
_MASKS = [((1 << LINE_BITS) - 1) ^ ((1 << (LINE_BITS - n)) - 1) for n in range(LINE_BITS + 1)]
_SIZES = [1 << (LINE_BITS - n) for n in range(LINE_BITS + 1)]
#: bucket keys are addr << 8 | plen


class _Group:
    """Atoms with one (primary, secondary) prefix pair, by destination port."""

    __slots__ = ("members", "wide", "single", "scan", "blocks", "boxes")

    def __init__(self, scan: int) -> None:
        self.members: list[int] = []
        self.wide: list[int] | None = None
        self.single: dict[int, list[int]] = {}
        self.scan = scan
        # the wide members by block of destination ports they overlap, for
        # point queries (built on the first one after an add)
        self.blocks: list[list[int]] | None = None
        self.boxes: list | None = None

    def add(self, i: int, box: Box, boxes: list) -> None:
        self.members.append(i)
        self.blocks = None
        self.boxes = boxes
        if self.wide is not None:
            self._put(i, box)
        elif len(self.members) > self.scan:
            self.wide = []
            for j in self.members:
                self._put(j, boxes[j])

    def _put(self, i: int, box: Box) -> None:
        if box[8] == box[9]:
            self.single.setdefault(box[8], []).append(i)
        else:
            self.wide.append(i)  # type: ignore[union-attr]

    def wide_at(self, port: int) -> list[int]:
        """The wide members whose destination ports may hold `port` (in
        the order they were added)."""
        blocks = self.blocks
        if blocks is None:
            blocks = self.blocks = [[] for _ in range(_BLOCKS)]
            boxes = self.boxes
            for j in self.wide:  # type: ignore[union-attr]
                b = boxes[j]  # type: ignore[index]
                for k in range(b[8] >> _BLOCK_BITS, (b[9] >> _BLOCK_BITS) + 1):
                    blocks[k].append(j)
        return blocks[port >> _BLOCK_BITS]

    def query(self, lo: int, hi: int) -> tuple[list[int], ...]:
        """Candidate lists for destination ports [lo, hi], each in the order
        atoms were added (so a rank-ordered index can skip a prefix)."""
        wide = self.wide
        if wide is None or (lo == 0 and hi == PORT_MAX):
            return (self.members,)
        single = self.single
        if lo == hi:
            got = single.get(lo)
            return (wide, got) if got else (wide,)
        out = [wide]
        if hi - lo < len(single):
            for port in range(lo, hi + 1):
                got = single.get(port)
                if got:
                    out.append(got)
        else:
            for port, got in single.items():
                if lo <= port <= hi:
                    out.append(got)
        return tuple(out)


def _defer(pending: dict[int, list[int]] | None, plen: int, addr: int) -> dict[int, list[int]]:
    """Queue an address for its sorted list: sorting once before the next
    query, instead of an insort per add, keeps building O(n log n) when
    addresses come in no order (an insort into a long list moves half of it)."""
    if pending is None:
        pending = {}
    got = pending.get(plen)
    if got is None:
        pending[plen] = [addr]
    else:
        got.append(addr)
    return pending


def _settle(addrs: dict[int, list[int]], pending: dict[int, list[int]]) -> None:
    """Sort the queued addresses into their lists (the caller then drops
    the queue)."""
    for plen, new in pending.items():
        arr = addrs[plen]
        if len(new) < 8:
            for a in new:
                insort(arr, a)
        else:
            arr.extend(new)
            arr.sort()


def _in_window(members: list[int], window: tuple) -> list[int]:
    """The part of a rank-ordered list strictly inside window = (ranks,
    lo, hi): cut by bisection, a short list by a look."""
    rank, lo, hi = window[0].__getitem__, window[1], window[2]
    if len(members) <= 4:  # (bisecting costs more than a look)
        return [j for j in members if lo < rank(j) < hi]
    start = bisect_right(members, lo, key=rank) if lo >= 0 else 0
    stop = bisect_left(members, hi, start, key=rank)
    return members[start:stop] if start or stop < len(members) else members


class _Bucket:
    """Atoms with one primary prefix, by secondary prefix when many."""

    __slots__ = ("members", "sec", "plens", "addrs", "scan", "pending", "lo", "hi")

    def __init__(self, scan: int) -> None:
        self.members: list[int] = []
        # the span of the members' secondary prefixes on the address line
        self.lo = 1 << LINE_BITS
        self.hi = -1
        self.sec: dict[int, _Group] | None = None  # key: addr << 8 | plen
        self.plens: list[int] = []
        self.addrs: dict[int, list[int]] = {}
        self.scan = scan
        self.pending: dict[int, list[int]] | None = None  # addresses not yet sorted into addrs

    def whole(self, addr: int, last: int) -> bool:
        """Whether a query for secondary prefix [addr, last] takes every
        member: the bucket has no secondary index, or the prefix holds
        every member's (`any` of a family), where visiting the groups one
        by one would find the same members; the one list (in the order
        added) also lets a rank-ordered query bisect past a block list."""
        return self.sec is None or (addr <= self.lo and self.hi <= last)

    def add(self, i: int, key: tuple[int, int], box: Box, boxes: list, keys: list) -> None:
        self.members.append(i)
        plen, addr = key
        if addr < self.lo:
            self.lo = addr
        if addr + _SIZES[plen] - 1 > self.hi:
            self.hi = addr + _SIZES[plen] - 1
        if self.sec is not None:
            self._put(i, key, box, boxes)
        elif len(self.members) > self.scan:
            self.sec = {}
            for j in self.members:
                self._put(j, keys[j], boxes[j], boxes)

    def _put(self, i: int, key: tuple[int, int], box: Box, boxes: list) -> None:
        plen, addr = key
        g = self.sec.get(addr << 8 | plen)  # type: ignore[union-attr]
        if g is None:
            g = self.sec[addr << 8 | plen] = _Group(self.scan)  # type: ignore[index]
            if plen not in self.addrs:
                insort(self.plens, plen)
                self.addrs[plen] = []
            self.pending = _defer(self.pending, plen, addr)
        g.add(i, box, boxes)

    def query(self, plen: int, addr: int, last: int, lo: int, hi: int) -> Iterator[list[int]]:
        """Candidate lists whose secondary prefix meets (plen, addr), for a
        bucket with a secondary index whose span the query prefix does not
        hold (`whole`, which _Index.meeting tests first)."""
        sec = self.sec
        if self.pending:
            _settle(self.addrs, self.pending)
            self.pending = None
        for p in self.plens:
            if p <= plen:
                g = sec.get((addr & _MASKS[p]) << 8 | p)
                if g is not None:
                    yield from g.query(lo, hi)
            else:
                arr = self.addrs[p]
                # indices, not a slice: a caller that stops early must not
                # pay for copying a long block list
                for k in range(bisect_left(arr, addr), bisect_right(arr, last)):
                    yield from sec[arr[k] << 8 | p].query(lo, hi)

class _Index:
    """Atoms bucketed by one address prefix: field 4 (dst) or 2 (src)."""

    def __init__(self, boxes: list, pkeys: list, skeys: list, field: int, scan: int = _SCAN):
        self.scan = scan
        self.boxes = boxes
        self.pkeys = pkeys
        self.skeys = skeys
        self.field = field
        self.buckets: dict[int, _Bucket] = {}  # key: addr << 8 | plen
        self.plens: list[int] = []
        self.addrs: dict[int, list[int]] = {}
        # per length, the buckets in the order of addrs: a query slices the
        # range under its prefix instead of hashing a 129-bit key per bucket
        self.blists: dict[int, list[_Bucket]] = {}
        self.pending: dict[int, list[int]] | None = None  # addresses not yet sorted into addrs
        # frozen (no more adds): per length, the atoms of the buckets without
        # a secondary index in address order, and the other buckets, so a
        # wide query slices the atoms under it instead of visiting a bucket
        # per host rule (built on first use, dropped by an add)
        self.flat: dict[int, tuple[list[int], list[int], list[int], list[_Bucket]]] | None = None
        self.frozen = False

    def add(self, i: int) -> None:
        self.flat = None
        self.frozen = False
        plen, addr = self.pkeys[i]
        b = self.buckets.get(addr << 8 | plen)
        if b is None:
            b = self.buckets[addr << 8 | plen] = _Bucket(self.scan)
            if plen not in self.addrs:
                insort(self.plens, plen)
                self.addrs[plen] = []
                self.blists[plen] = []
            self.pending = _defer(self.pending, plen, addr)
        b.add(i, self.skeys[i], self.boxes[i], self.boxes, self.skeys)

    def _settle(self) -> None:
        """Sort the queued bucket addresses into addrs and blists."""
        buckets = self.buckets
        for plen, new in self.pending.items():  # type: ignore[union-attr]
            arr, bl = self.addrs[plen], self.blists[plen]
            if len(new) < 8:
                for a in new:
                    k = bisect_left(arr, a)
                    arr.insert(k, a)
                    bl.insert(k, buckets[a << 8 | plen])
            else:
                arr.extend(new)
                arr.sort()
                self.blists[plen] = [buckets[a << 8 | plen] for a in arr]
        self.pending = None

    def _flatten(self) -> dict:
        flat = {}
        for p, arr in self.addrs.items():
            fa: list[int] = []
            fm: list[int] = []
            ba: list[int] = []
            bb: list[_Bucket] = []
            for a, b in zip(arr, self.blists[p]):
                if b.sec is None:
                    fa += [a] * len(b.members)
                    fm += b.members
                else:
                    ba.append(a)
                    bb.append(b)
            flat[p] = (fa, fm, ba, bb)
        self.flat = flat
        return flat

    def settle_all(self) -> None:
        if self.pending:
            self._settle()
        for b in self.buckets.values():
            if b.pending:
                _settle(b.addrs, b.pending)
                b.pending = None

    def meeting(self, q: Box, pkey: tuple[int, int], skey: tuple[int, int], window: tuple | None = None) -> Iterator[int]:
        """Atoms whose boxes meet q. `window` = (ranks, lo, hi): only atoms
        ranked strictly between lo and hi are wanted, and every list is in
        rank order (atoms were added best first), so each list is cut to
        the window by bisection: a query for the atoms around a rule need
        not walk a block list ranked before it, or the service rules
        ranked after the first rule that hides all of them."""
        if self.pending:
            self._settle()
        boxes, buckets = self.boxes, self.buckets
        c0, c1, s0, s1, d0, d1, p0, p1, q0, q1 = q
        pplen, paddr = pkey
        plast = paddr + _SIZES[pplen] - 1
        splen, saddr = skey
        slast = saddr + _SIZES[splen] - 1
        if window is not None:
            rank, w_lo, w_hi = window[0].__getitem__, window[1], window[2]
        frozen = self.frozen
        for p in self.plens:
            if p <= pplen:
                b = buckets.get((paddr & _MASKS[p]) << 8 | p)
                if b is None:
                    continue
                chosen: list[_Bucket] | tuple = (b,)
            elif frozen:
                fa, fm, ba, bb = (self.flat or self._flatten())[p]
                k0 = bisect_left(fa, paddr)
                k1 = bisect_right(fa, plast, k0)
                for j in fm[k0:k1]:
                    o = boxes[j]
                    if (
                        o[8] <= q1 and o[9] >= q0 and o[4] <= d1 and o[5] >= d0 and o[2] <= s1
                        and o[3] >= s0 and o[6] <= p1 and o[7] >= p0 and o[0] <= c1 and o[1] >= c0
                        and (window is None or w_lo < rank(j) < w_hi)
                    ):
                        yield j
                if not ba:
                    continue
                k0 = bisect_left(ba, paddr)
                k1 = bisect_right(ba, plast, k0)
                if k0 == k1:
                    continue
                chosen = bb[k0:k1]
            else:
                arr = self.addrs[p]
                k0 = bisect_left(arr, paddr)
                k1 = bisect_right(arr, plast, k0)
                if k0 == k1:
                    continue
                chosen = self.blists[p][k0:k1]
            for b in chosen:
                for members in (b.members,) if b.whole(saddr, slast) else b.query(splen, saddr, slast, q0, q1):
                    if window is not None:
                        members = _in_window(members, window)
                    for j in members:
                        o = boxes[j]
                        # destination ports first: in a bucket of one
                        # address pair they are what tells atoms apart
                        if (
                            o[8] <= q1 and o[9] >= q0 and o[4] <= d1 and o[5] >= d0 and o[2] <= s1
                            and o[3] >= s0 and o[6] <= p1 and o[7] >= p0 and o[0] <= c1 and o[1] >= c0
                        ):
                            yield j

    def visits(self, pkey: tuple[int, int]) -> int:
        """How many buckets a query for primary prefix pkey visits."""
        if self.pending:
            self._settle()
        pplen, paddr = pkey
        plast = paddr + _SIZES[pplen] - 1
        n = 0
        for p in self.plens:
            if p <= pplen:
                n += 1
            else:
                arr = self.addrs[p]
                n += bisect_right(arr, plast) - bisect_left(arr, paddr)
        return n

    def stab_lists(self, point: tuple, lists: list[list[int]]) -> None:
        """Append to `lists` the candidate lists for the atoms containing
        the point (a superset; each list in the order atoms were added)."""
        buckets, masks = self.buckets, _MASKS
        dport = point[4]
        prim, sec_addr = (point[2], point[1]) if self.field == 4 else (point[1], point[2])
        for p in self.plens:
            b = buckets.get((prim & masks[p]) << 8 | p)
            if b is None:
                continue
            sec = b.sec
            if sec is None:
                lists.append(b.members)
                continue
            for sp in b.plens:
                g = sec.get((sec_addr & masks[sp]) << 8 | sp)
                if g is not None:
                    if g.wide is None:
                        lists.append(g.members)
                    else:
                        lists.append(g.wide_at(dport))
                        got = g.single.get(dport)
                        if got:
                            lists.append(got)

    def stab(self, point: tuple, out: list[int]) -> None:
        """Append the atoms containing the point to `out`."""
        boxes = self.boxes
        cls, src, dst, sport, dport = point
        lists: list[list[int]] = []
        self.stab_lists(point, lists)
        for members in lists:
            for j in members:
                o = boxes[j]
                if (
                    o[0] <= cls <= o[1] and o[2] <= src <= o[3] and o[4] <= dst <= o[5]
                    and o[6] <= sport <= o[7] and o[8] <= dport <= o[9]
                ):
                    out.append(j)


#: Ports per block of the port index.
_PORT_BITS = 6
#: Queries spanning fewer destination ports may use the port index.
_PORT_QUERY_SPAN = 1 << 12
#: Below this many bucket visits a prefix query is cheap enough as it is.
_PORT_MIN_VISITS = 64
#: A bucket visit costs about this many candidate box tests.
_VISIT_COST = 3


class _PortIndex:
    """Atoms by destination port, for queries that are narrow in ports and
    wide in addresses, where the prefix indexes would visit a bucket per
    host rule under the prefix.

    An atom spanning at most two blocks of 2^_PORT_BITS ports is listed
    under the block its range starts in (so it is met once, and a query
    looks one block to the left of its own); the others (wide port
    ranges, port-less atoms) go to a prefix index of their own."""

    __slots__ = ("boxes", "blocks", "wide")

    def __init__(self, boxes: list, dsts: list, srcs: list, scan: int) -> None:
        self.boxes = boxes
        self.blocks: dict[int, list[int]] = {}
        self.wide = BoxIndex(boxes, dsts, srcs, classes=False, scan=scan, ports=False)

    def add(self, i: int) -> None:
        b = self.boxes[i]
        first = b[8] >> _PORT_BITS
        if (b[9] >> _PORT_BITS) - first <= 1:
            got = self.blocks.get(first)
            if got is None:
                self.blocks[first] = [i]
            else:
                got.append(i)
        else:
            self.wide.add(i)

    def complete(self) -> None:
        self.wide.complete()

    def _lists(self, q: Box) -> Iterator[list[int]]:
        blocks = self.blocks
        for k in range(max(0, (q[8] >> _PORT_BITS) - 1), (q[9] >> _PORT_BITS) + 1):
            got = blocks.get(k)
            if got:
                yield got

    def cost(self, q: Box, dst: tuple[int, int], src: tuple[int, int]) -> int:
        return sum(len(got) for got in self._lists(q)) + _VISIT_COST * self.wide.visits(q, dst, src)

    def meeting(self, q: Box, dst: tuple[int, int], src: tuple[int, int], window: tuple | None) -> Iterator[int]:
        boxes = self.boxes
        c0, c1, s0, s1, d0, d1, p0, p1, q0, q1 = q
        for members in self._lists(q):
            if window is not None:
                members = _in_window(members, window)
            for j in members:
                o = boxes[j]
                if (
                    o[0] <= c1 and o[1] >= c0 and o[2] <= s1 and o[3] >= s0 and o[4] <= d1
                    and o[5] >= d0 and o[6] <= p1 and o[7] >= p0 and o[8] <= q1 and o[9] >= q0
                ):
                    yield j
        yield from self.wide.meeting(q, dst, src, window)


class BoxIndex:
    """Atoms by the two address prefixes, for box and point queries.

    With `classes=True` (the sweeps) the atoms are first split by their
    protocol-class interval (one of the seven a rule can have), so that an
    ICMP rule never walks the TCP rules of a wide bucket. The static index
    keeps one partition: its point queries would otherwise visit up to
    four, and its box queries are rare.
    """

    def __init__(self, boxes: list, dsts: list, srcs: list, classes: bool = True, scan: int = _SCAN, ports: bool = True):
        self.boxes, self.dsts, self.srcs = boxes, dsts, srcs
        self.classes = classes
        self.scan = scan
        self.ports = ports
        self.frozen = False
        # per class interval: [by destination, by source, atoms added, by
        # destination port]; the last two indexes are built on the first
        # box query that wants them (point queries never do), then kept
        self.parts: dict[tuple[int, int], list] = {}

    def add(self, i: int) -> None:
        self.frozen = False
        b = self.boxes[i]
        key = (b[0], b[1]) if self.classes else (0, N_CLASSES - 1)
        part = self.parts.get(key)
        if part is None:
            part = self.parts[key] = [_Index(self.boxes, self.dsts, self.srcs, 4, self.scan), None, [], None]
        part[0].add(i)
        part[2].append(i)
        if part[1] is not None:
            part[1].add(i)
        if part[3] is not None:
            part[3].add(i)

    def complete(self) -> None:
        """Build now what box queries would build on first use (for a
        long-lived index: the cost belongs to its construction)."""
        for part in self.parts.values():
            for ix in (part[0], self._by_src(part)):
                ix.settle_all()
            if self.ports:
                self._by_port(part).complete()

    def freeze(self) -> None:
        """No more adds are coming (until one comes): the prefix indexes
        may keep the flat atom lists their wide queries slice."""
        for part in self.parts.values():
            for ix in (part[0], part[1]):
                if ix is not None:
                    ix.frozen = True
        self.frozen = True

    def _by_src(self, part: list) -> "_Index":
        bs = part[1]
        if bs is None:
            bs = part[1] = _Index(self.boxes, self.srcs, self.dsts, 2, self.scan)
            for i in part[2]:
                bs.add(i)
            bs.frozen = self.frozen
        return bs

    def _by_port(self, part: list) -> "_PortIndex":
        bp = part[3]
        if bp is None:
            bp = part[3] = _PortIndex(self.boxes, self.dsts, self.srcs, self.scan)
            for i in part[2]:
                bp.add(i)
        return bp

    def meeting(self, q: Box, dst: tuple[int, int], src: tuple[int, int], window: tuple | None = None) -> Iterator[int]:
        """Atoms whose boxes meet box q, whose dst/src are these prefixes.
        `window`: see _Index.meeting (a superset may come back without it).

        The prefix index of the longer query prefix answers, unless that
        prefix is wide and the query's destination ports narrow (a port
        range rule over a /8 of host rules): then the port index does,
        when it has fewer candidates than the buckets the other would
        visit."""
        for (c0, c1), part in self.parts.items():
            if c0 <= q[1] and c1 >= q[0]:
                ix, pkey, skey, _ = self._route(part, q, dst, src)
                if pkey is None:
                    yield from ix.meeting(q, dst, src, window)
                else:
                    yield from ix.meeting(q, pkey, skey, window)

    def _route(self, part: list, q: Box, dst: tuple[int, int], src: tuple[int, int]) -> tuple:
        """Which index of one part answers a box query: (index, primary
        key, secondary key, bucket visits) for a prefix index, (port index,
        None, None, its cost in visits) for the port index. The visits are
        only counted where the port index was considered (else None)."""
        prim, pkey, skey = (part[0], dst, src) if dst[0] >= src[0] else (self._by_src(part), src, dst)
        if (
            self.ports and q[9] - q[8] < _PORT_QUERY_SPAN
            and len(prim.buckets) > _PORT_MIN_VISITS and prim.plens[-1] > pkey[0]
        ):
            visits = prim.visits(pkey)
            if visits > _PORT_MIN_VISITS:
                cost = self._by_port(part).cost(q, dst, src)
                if cost < _VISIT_COST * visits:
                    return part[3], None, None, cost // _VISIT_COST
            return prim, pkey, skey, visits
        return prim, pkey, skey, None

    def visits(self, q: Box, dst: tuple[int, int], src: tuple[int, int]) -> int:
        """About how many buckets meeting(q, dst, src) visits: a caller that
        can scan a short rank window instead compares the two."""
        n = 0
        for (c0, c1), part in self.parts.items():
            if c0 <= q[1] and c1 >= q[0]:
                ix, pkey, _, got = self._route(part, q, dst, src)
                n += got if got is not None else ix.visits(pkey)
        return n

    def stab(self, point: tuple) -> list[int]:
        """Atoms whose boxes contain the point."""
        out: list[int] = []
        cls = point[0]
        for (c0, c1), part in self.parts.items():
            if c0 <= cls <= c1:
                part[0].stab(point, out)
        return out

    def stab_lists(self, point: tuple) -> list[list[int]]:
        """Candidate lists that hold every atom containing the point, each
        in the order the atoms were added: a caller that added them best
        first can stop a list at its first atom that qualifies."""
        lists: list[list[int]] = []
        cls = point[0]
        for (c0, c1), part in self.parts.items():
            if c0 <= cls <= c1:
                part[0].stab_lists(point, lists)
        return lists


class ScanIndex:
    """BoxIndex's interface as a scan of everything added (O(n) a query)."""

    def __init__(self, boxes: list, dsts: list, srcs: list, classes: bool = True):
        self.boxes = boxes
        self.members: list[int] = []

    def add(self, i: int) -> None:
        self.members.append(i)

    def meeting(self, q: Box, dst: tuple[int, int], src: tuple[int, int], window: tuple | None = None) -> Iterator[int]:
        c0, c1, s0, s1, d0, d1, p0, p1, q0, q1 = q
        boxes = self.boxes
        for j in self.members:
            o = boxes[j]
            if (
                o[0] <= c1 and o[1] >= c0 and o[2] <= s1 and o[3] >= s0 and o[4] <= d1
                and o[5] >= d0 and o[6] <= p1 and o[7] >= p0 and o[8] <= q1 and o[9] >= q0
            ):
                yield j

    def visits(self, q: Box, dst: tuple[int, int], src: tuple[int, int]) -> int:
        return len(self.members)

    def stab_lists(self, point: tuple) -> list[list[int]]:
        return [self.members]

    def stab(self, point: tuple) -> list[int]:
        cls, src, dst, sport, dport = point
        boxes = self.boxes
        return [
            j for j in self.members
            if boxes[j][0] <= cls <= boxes[j][1] and boxes[j][2] <= src <= boxes[j][3]
            and boxes[j][4] <= dst <= boxes[j][5] and boxes[j][6] <= sport <= boxes[j][7]
            and boxes[j][8] <= dport <= boxes[j][9]
        ]
