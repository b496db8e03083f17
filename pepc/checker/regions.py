"""Exact region search over boxes: divide and conquer, never sampling.

Every search starts from a box C and a list of candidate boxes and splits C
along a boundary of a box that cuts it, until each piece is *uniform*: every
relevant candidate either contains the whole piece or misses it. The answer
for a uniform piece is read off exactly, so the searches are exact; they
prune pieces whose answer is already known and stop at the first piece that
answers the question, so they cost far less than the full arrangement.

Candidates are tuples whose first ten fields are a box (see geometry.py);
field 10 is a tag the caller chooses (a rule index). Lists given "in rank
order" are sorted best first.
"""

from __future__ import annotations

import itertools
from typing import Callable, Iterator

from pepc.checker.geometry import Box, pick_point

#: How many cutting boxes `_cut` looks at to place a cut; the median of an
#: even sample keeps pieces balanced without sorting every boundary.
_SAMPLE = 24


def _covering(bs: list, C: Box) -> int:
    """Index of the first box in bs that contains C, or -1."""
    c0, c1, c2, c3, c4, c5, c6, c7, c8, c9 = C
    for i, b in enumerate(bs):
        if (
            b[0] <= c0 and b[1] >= c1 and b[2] <= c2 and b[3] >= c3 and b[4] <= c4
            and b[5] >= c5 and b[6] <= c6 and b[7] >= c7 and b[8] <= c8 and b[9] >= c9
        ):
            return i
    return -1


def _meet(bs: list, C: Box) -> list:
    c0, c1, c2, c3, c4, c5, c6, c7, c8, c9 = C
    return [
        b for b in bs
        if b[0] <= c1 and b[1] >= c0 and b[2] <= c3 and b[3] >= c2 and b[4] <= c5
        and b[5] >= c4 and b[6] <= c7 and b[7] >= c6 and b[8] <= c9 and b[9] >= c8
    ]


def _share(b: tuple, C: Box) -> float:
    """The fraction of C's volume that box b covers."""
    f = 1.0
    for k in (0, 2, 4, 6, 8):
        lo = b[k] if b[k] > C[k] else C[k]
        hi = b[k + 1] if b[k + 1] < C[k + 1] else C[k + 1]
        f *= (hi - lo + 1) / (C[k + 1] - C[k] + 1)
    return f


def _by_share(bs: list, C: Box) -> list:
    """bs with the boxes that cover a fair share of C first, largest
    first (for searches the order of whose boxes does not matter): a few
    large boxes that cover C are found and cut along before thousands of
    thin ones."""
    big, thin = _split_big(bs, C)
    if not big:
        return bs
    big.sort(key=lambda b: -_share(b, C))
    return big + thin


def _split_big(bs: list, C: Box) -> tuple[list, list]:
    """bs as (boxes covering a fair share of C's addresses, the others).
    Thin in an address is enough to be thin: most boxes of a block list
    are rejected on one product."""
    big, thin = [], []
    s2, s4 = C[3] - C[2] + 1, C[5] - C[4] + 1
    for b in bs:
        f = ((b[3] if b[3] < C[3] else C[3]) - (b[2] if b[2] > C[2] else C[2]) + 1) / s2
        f *= ((b[5] if b[5] < C[5] else C[5]) - (b[4] if b[4] > C[4] else C[4]) + 1) / s4
        (big if f >= _BIG else thin).append(b)
    return big, thin


#: A box covering at least this share of a piece is cut along first.
_BIG = 1 / 64


def _cut_big(C: Box, bs: list) -> tuple[int, int] | None:
    """A cut along the first box of bs (largest first) if it is big in C."""
    b = bs[0]
    if _share(b, C) < _BIG:
        return None
    for k in (4, 8, 2, 6, 0):
        if b[k] > C[k]:
            return k, b[k]
        if b[k + 1] < C[k + 1]:
            return k, b[k + 1] + 1
    return None


def _cut(C: Box, bs: list) -> tuple[int, int]:
    """A cut (field index of a lower bound, value) strictly inside C, at a
    boundary of one of bs (boxes that meet C without containing it).

    The dimension with the most distinct boundaries in an even sample of bs
    is cut at their median: pieces shrink geometrically when boxes are many.
    """
    step = len(bs) // _SAMPLE + 1
    sample = bs[::step]
    best_k, best_vals = -1, ()
    for k in (4, 8, 2, 6, 0):  # dst, dport, src, sport, class: most selective first
        lo, hi = C[k], C[k + 1]
        vals = set()
        for b in sample:
            if b[k] > lo:
                vals.add(b[k])
            if b[k + 1] < hi:
                vals.add(b[k + 1] + 1)
        if len(vals) > len(best_vals):
            best_k, best_vals = k, vals
    if best_k < 0:
        # Only possible when the sample missed the cutting boxes: every box
        # in bs cuts C somewhere, so scan them all.
        for b in bs:
            for k in (4, 8, 2, 6, 0):
                if b[k] > C[k]:
                    return k, b[k]
                if b[k + 1] < C[k + 1]:
                    return k, b[k + 1] + 1
        raise AssertionError("no box cuts the region")
    ordered = sorted(best_vals)
    return best_k, ordered[len(ordered) // 2]


def _split(C: Box, k: int, v: int) -> tuple[Box, Box]:
    left = C[: k + 1] + (v - 1,) + C[k + 2 :]
    right = C[:k] + (v,) + C[k + 1 :]
    return left, right  # type: ignore[return-value]


#: Above this many boxes meeting C, find_free first searches the part of C
#: the big boxes leave free.
_TWO_LEVEL = 256


#: The dimensions _hole looks for an uncovered interval in, most selective first.
_HOLE_DIMS = (4, 2, 8, 6, 0)
#: Calls one _hole search may make (its recursion tries the dimensions in
#: several orders).
_HOLE_BUDGET = 64


def _uncovered(lo: int, hi: int, bs: list, k: int, readable: int) -> tuple[int, int] | None:
    """An interval of [lo, hi] that no box of bs meets in dimension k:
    around the readable value if it is free (witnesses are read by
    people), else from lo, jumping past the boxes holding the point a few
    times (a block list rarely holds the first address); then sweeping
    them sorted."""
    if not any(b[k] <= readable <= b[k + 1] for b in bs):
        below = max((b[k + 1] for b in bs if b[k + 1] < readable), default=lo - 1)
        above = min((b[k] for b in bs if b[k] > readable), default=hi + 1)
        return below + 1, above - 1
    p = lo
    for _ in range(8):
        end = max((b[k + 1] for b in bs if b[k] <= p <= b[k + 1]), default=-1)
        if end < 0:
            nxt = min((b[k] for b in bs if b[k] > p), default=hi + 1)
            return p, min(hi, nxt - 1)
        p = end + 1
        if p > hi:
            return None
    for b0, b1 in sorted((b[k], b[k + 1]) for b in bs):
        if b0 > p:
            return p, min(hi, b0 - 1)
        if b1 >= p:
            p = b1 + 1
            if p > hi:
                return None
    return p, hi


def _hole(C: Box, bs: list, dims: tuple[int, ...] = _HOLE_DIMS, budget: list | None = None) -> Box | None:
    """A piece of C that no box of bs (every box meeting C) meets, found
    one dimension at a time, or None (which proves nothing: the exact
    search follows). Where the boxes narrower than C in dimension k leave
    an interval of it uncovered, only the boxes spanning all of C's k
    meet that slab, and they are searched the same way along the other
    dimensions: a wide rule under a block list of sources, nets of
    destinations and port-range rules is free where a source, a
    destination and a port each avoid their own kind of box."""
    if not bs:
        return C
    if budget is None:
        budget = [_HOLE_BUDGET]
    readable = pick_point(C)
    for k in dims:
        if budget[0] <= 0:
            return None
        budget[0] -= 1
        lo, hi = C[k], C[k + 1]
        narrow = [b for b in bs if b[k] > lo or b[k + 1] < hi]
        if not narrow:
            continue
        got = _uncovered(lo, hi, narrow, k, readable[k // 2])
        if got is None:
            continue
        slab = C[:k] + got + C[k + 2 :]
        if len(narrow) == len(bs):
            return slab  # type: ignore[return-value]
        spanning = [b for b in bs if b[k] <= lo and b[k + 1] >= hi]
        found = _hole(slab, spanning, tuple(d for d in dims if d != k), budget)  # type: ignore[arg-type]
        if found is not None:
            return found
    return None


def _free_pieces(C: Box, bs: list) -> Iterator[Box]:
    """Disjoint pieces of C that no box of bs (the boxes meeting C,
    largest first) meets, whose union is all of C the boxes leave free."""
    stack = [(C, bs)]
    while stack:
        C, bs = stack.pop()
        if not bs:
            yield C
            continue
        if _covering(bs, C) >= 0:
            continue
        k, v = _cut_big(C, bs) or _cut(C, bs)
        left, right = _split(C, k, v)
        lb = [b for b in bs if b[k] < v]
        rb = [b for b in bs if b[k + 1] >= v]
        # the emptier piece first: a free piece is found sooner there
        if len(lb) <= len(rb):
            stack.append((right, rb))
            stack.append((left, lb))
        else:
            stack.append((left, lb))
            stack.append((right, rb))


def find_free(C: Box, boxes: list, *, by_share: bool = False) -> Box | None:
    """A piece of C that no box of `boxes` meets; None when their union
    covers C. `by_share`: `boxes` are already largest first.

    Many boxes (a wide rule under a block list): the few big boxes are
    tried first, and where they cover C the thin ones are never looked
    at. Else a hole by dimension (`_hole`) usually answers in a few
    passes; failing that, the pieces the big boxes leave free are searched
    one by one against the thin ones, so that the thousands of thin boxes
    are not split along every cut the big ones need."""
    met = _meet(boxes, C)
    if len(met) <= _TWO_LEVEL:
        return _plain_free(C, met, by_share)
    big, thin = _split_big(met, C)
    pieces = None
    if big and thin:
        pieces = _free_pieces(C, sorted(big, key=lambda b: -_share(b, C)))
        first = next(pieces, None)
        if first is None:
            return None  # the big boxes alone cover C
        pieces = itertools.chain((first,), pieces)
    got = _hole(C, met)
    if got is not None:
        return got
    if pieces is None:
        return _plain_free(C, met, by_share)
    return next((got for piece in pieces if (got := _free_among(piece, thin)) is not None), None)


def _plain_free(C: Box, met: list, by_share: bool) -> Box | None:
    """The first free piece of the divide and conquer over the boxes
    meeting C."""
    return next(_free_pieces(C, met if by_share else _by_share(met, C)), None)


def _free_among(piece: Box, thin: list) -> Box | None:
    """find_free for one piece the big boxes leave free: only the thin
    boxes can meet it."""
    tb = _meet(thin, piece)
    if not tb:
        return piece
    return _hole(piece, tb) or _plain_free(piece, tb, False)


def find_bad(C: Box, blockers: list, worse: list, is_same: Callable[[tuple], bool], default_same: bool) -> Box | None:
    """A piece of C where the searched rule wins and removing it would
    change the action.

    `blockers` are the boxes ranked before the rule's atom (where one meets
    C the rule may not win); `worse` are other rules' boxes ranked after it,
    in rank order: at a point the rule wins, the first of them containing
    the point decides the action without the rule (none: the default).
    Returns a uniform piece where the rule wins and that decision differs,
    or None when there is no such point.
    """
    bl, wl = _by_share(_meet(blockers, C), C), _meet(worse, C)
    if len(bl) > 4 * len(wl) + _SAMPLE:
        return _find_bad_by_successor(C, bl, wl, is_same, default_same)
    stack = [(C, bl, wl)]
    while stack:
        C, bl, wl = stack.pop()
        if bl and _covering(bl, C) >= 0:
            continue
        i = _covering(wl, C)
        if i >= 0:
            wl = wl[: i + 1]  # later boxes never decide inside C
        if (i >= 0 or default_same) and all(is_same(w) for w in wl):
            continue
        if not bl:
            if not wl:
                return C  # the default decides, and it differs
            first = wl[0]
            if not is_same(first):
                # first in rank order: it decides wherever it reaches in C
                return (
                    max(C[0], first[0]), min(C[1], first[1]), max(C[2], first[2]), min(C[3], first[3]),
                    max(C[4], first[4]), min(C[5], first[5]), max(C[6], first[6]), min(C[7], first[7]),
                    max(C[8], first[8]), min(C[9], first[9]),
                )
        cutting = bl + (wl[:-1] if i >= 0 else wl)
        k, v = (_cut_big(C, bl) if bl else None) or _cut(C, cutting)
        left, right = _split(C, k, v)
        stack.append((right, [b for b in bl if b[k + 1] >= v], [w for w in wl if w[k + 1] >= v]))
        stack.append((left, [b for b in bl if b[k] < v], [w for w in wl if w[k] < v]))
    return None


def _find_bad_by_successor(C: Box, bl: list, wl: list, is_same: Callable[[tuple], bool], default_same: bool) -> Box | None:
    """find_bad for many blockers and few later boxes: the pieces of C
    where the decision without the rule differs come from the later boxes
    alone (few), and each is then searched for a place no blocker reaches.
    Cutting by thousands of blockers first (a wide rule under a block list)
    would visit a piece per blocker even where the decision is the same."""
    by_tag = {w[10]: w for w in wl}
    for piece, _, succ in partition(C, [], wl, -1):
        if default_same if succ is None else is_same(by_tag[succ]):
            continue
        free = find_free(piece, bl, by_share=True)
        if free is not None:
            return free
    return None


def partition(C: Box, blockers: list, worse: list, own: int) -> Iterator[tuple[Box, int | None, int | None]]:
    """Uniform pieces of C with who decides them, for naming related rules.

    Yields `(piece, winner, successor)`: `winner` is the tag of the first
    blocker (rank order) containing the piece, or None when no blocker
    does and the searched rule wins it; then `successor` is the tag of the
    first `worse` box containing it (None: the default action). Pieces a
    blocker tagged `own` wins (the rule's own better atom) are skipped:
    they are reported from that atom.
    """
    stack = [(C, _meet(blockers, C), _meet(worse, C))]
    while stack:
        C, bl, wl = stack.pop()
        i = _covering(bl, C)
        if i >= 0:
            bl = bl[: i + 1]
            if i == 0:
                if bl[0][10] != own:
                    yield C, bl[0][10], None
                continue
            cutting = bl[:i]
        elif bl:
            cutting = bl
        else:
            j = _covering(wl, C)
            if j >= 0:
                wl = wl[: j + 1]
                if j == 0:
                    yield C, None, wl[0][10]
                    continue
                cutting = wl[:j]
            elif wl:
                cutting = wl
            else:
                yield C, None, None
                continue
        k, v = _cut(C, cutting)
        left, right = _split(C, k, v)
        stack.append((right, [b for b in bl if b[k + 1] >= v], [w for w in wl if w[k + 1] >= v]))
        stack.append((left, [b for b in bl if b[k] < v], [w for w in wl if w[k] < v]))
