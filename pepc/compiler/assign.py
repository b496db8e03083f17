"""Stable assignment of order keys and slots.

Both are chosen so that an edit touching one rule changes the data plane
only for that rule: surviving ids keep their order key and slot; new ids
get keys between their neighbours (fractional indexing) and slots nobody
used before.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from pepc.compiler.layout import ORDER_KEY_BITS

KEY_SPACE = 1 << ORDER_KEY_BITS  # keys live in [1, KEY_SPACE - 1]


def _spread(lo: int, hi: int, n: int) -> list[int]:
    """n distinct integers strictly between lo and hi, evenly spaced.
    Requires hi - lo - 1 >= n."""
    step = hi - lo
    return [lo + (j + 1) * step // (n + 1) for j in range(n)]


def _fits(lo: int, hi: int, n: int) -> bool:
    return hi - lo - 1 >= n


def assign_order_keys(ids: Sequence[str], previous: Mapping[str, int] | None = None) -> dict[str, int]:
    """Order keys for `ids` (any order): strictly increasing in plain string
    order of the ids, kept from `previous` wherever possible."""
    order = sorted(ids)
    n = len(order)
    if n >= KEY_SPACE - 1:
        raise ValueError("too many rules for the order-key space")
    keys: list[int | None] = [None] * n
    if previous:
        kept = [(i, previous.get(rid)) for i, rid in enumerate(order)]
        kept = [(i, k) for i, k in kept if isinstance(k, int) and 0 < k < KEY_SPACE]
        # Only trust history that is consistent with today's string order
        # (a plan from pepc always is); otherwise start afresh.
        if all(a[1] < b[1] for a, b in zip(kept, kept[1:])):
            for i, k in kept:
                keys[i] = k
    i = 0
    while i < n:
        if keys[i] is not None:
            i += 1
            continue
        j = i
        while j < n and keys[j] is None:
            j += 1
        # positions [i, j) need keys; widen the window over kept neighbours
        # (renumbering them) only as far as needed, preferring the smallest
        # widening and, among equals, the one reaching further left.
        start, end = i, j
        widen = 0
        while True:
            placed = False
            for left in range(widen, -1, -1):
                right = widen - left
                s, e = start - left, end + right
                if s < 0 or e > n:
                    continue
                # widening right can reach the next run of new ids (keys to
                # the left are all placed): the window takes that run too
                while e < n and keys[e] is None:
                    e += 1
                lo = keys[s - 1] if s > 0 else 0
                hi = keys[e] if e < n else KEY_SPACE
                if _fits(lo, hi, e - s):  # type: ignore[arg-type]
                    keys[s:e] = _spread(lo, hi, e - s)  # type: ignore[arg-type]
                    placed = True
                    j = max(j, e)
                    break
            if placed:
                break
            widen += 1
        i = j
    return {rid: k for rid, k in zip(order, keys)}  # type: ignore[misc]


def assign_slots(ids: Sequence[str], capacity: int, previous: Mapping[str, int] | None = None) -> dict[str, int]:
    """Slots for `ids`: survivors keep theirs; new ids (in string order) take
    the lowest slot no previous rule used, and only when those run out the
    slots freed by removed rules (so a freed slot's counters and token bucket
    are not inherited by a new rule while unused slots remain)."""
    order = sorted(ids)
    out: dict[str, int] = {}
    taken: set[int] = set()
    prev = previous or {}
    for rid in order:
        s = prev.get(rid)
        if isinstance(s, int) and 0 <= s < capacity and s not in taken:
            out[rid] = s
            taken.add(s)
    freed = sorted({s for s in prev.values() if isinstance(s, int) and 0 <= s < capacity} - taken)
    freed_set = set(freed)
    fresh = (s for s in range(capacity) if s not in taken and s not in freed_set)
    reuse = iter(freed)
    for rid in order:
        if rid in out:
            continue
        s = next(fresh, None)
        if s is None:
            s = next(reuse, None)
        if s is None:
            s = len(out) + capacity  # over capacity: the caller reports it
        out[rid] = s
        taken.add(s)
    return out
