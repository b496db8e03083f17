"""regions.find_free's two-level search (big boxes first, then the thin
ones) and its hole-by-dimension shortcut (_hole) against a brute force
over every point of a small space."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pepc.checker import regions

@pytest.fixture(scope="module")
def monkeypatch_two_level():
    """The two-level search from a few boxes on, and a box thin when it
    covers less than 30% of a piece's addresses, so that small generated
    cases take it."""
    old = regions._TWO_LEVEL, regions._BIG
    regions._TWO_LEVEL, regions._BIG = 2, 0.3
    yield
    regions._TWO_LEVEL, regions._BIG = old


# a small space: every dimension 0..3, so brute force is 4^5 points
_HI = 3


def _interval(draw, wide: bool) -> tuple[int, int]:
    if wide:
        a = draw(st.integers(0, 1))
        return a, draw(st.integers(max(a, 2), _HI))
    a = draw(st.integers(0, _HI))
    return a, min(_HI, a + draw(st.integers(0, 1)))


@st.composite
def boxes(draw):
    out = []
    for i in range(draw(st.integers(0, 60))):
        big = draw(st.integers(0, 4)) == 0
        dims = [_interval(draw, big or draw(st.integers(0, 4)) > 0) for _ in range(5)]
        if not big:  # thin in an address: a block-list entry
            k = draw(st.sampled_from((1, 2)))
            a = draw(st.integers(0, _HI))
            dims[k] = (a, a)
        out.append(tuple(x for d in dims for x in d) + (i,))
    return out


@st.composite
def regions_(draw):
    return tuple(x for _ in range(5) for x in _interval(draw, draw(st.booleans())))


def _free_points(C, bs):
    for p in itertools.product(*(range(C[k], C[k + 1] + 1) for k in (0, 2, 4, 6, 8))):
        if not any(all(b[2 * d] <= p[d] <= b[2 * d + 1] for d in range(5)) for b in bs):
            yield p


def _inside(piece, C):
    return all(C[k] <= piece[k] <= piece[k + 1] <= C[k + 1] for k in (0, 2, 4, 6, 8))


def _meets(a, b):
    return all(a[k] <= b[k + 1] and b[k] <= a[k + 1] for k in (0, 2, 4, 6, 8))


@settings(max_examples=400, deadline=None)
@given(regions_(), boxes())
def test_two_level_find_free_is_exact(monkeypatch_two_level, C, bs):
    got = regions.find_free(C, bs)
    free = next(_free_points(C, bs), None)
    assert (got is None) == (free is None)
    if got is not None:
        assert _inside(got, C)
        assert not any(_meets(got, b) for b in bs)


def test_hole_finds_the_hole_a_block_list_leaves():
    C = (0, 0, 0, 99, 0, 99, 0, 0, 0, 0)
    blocks = [(0, 0, a, a, 0, 99, 0, 0, 0, 0, a) for a in range(100) if a != 42]
    assert regions._hole(C, blocks) == (0, 0, 42, 42, 0, 99, 0, 0, 0, 0)
    assert regions._hole(C, blocks + [(0, 0, 42, 42, 0, 99, 0, 0, 0, 0, 100)]) is None


def test_hole_combines_what_each_kind_of_box_leaves():
    """Sources blocked one by one, destination nets, port-range rules: no
    dimension alone has a hole (every kind spans the others), but a
    source, a destination and a port each avoiding their own kind do."""
    C = (0, 0, 0, 99, 0, 99, 0, 0, 0, 99)
    src_blocks = [(0, 0, a, a, 0, 99, 0, 0, 0, 99, a) for a in range(100) if a != 7]
    dst_nets = [(0, 0, 0, 99, d, d + 9, 0, 0, 0, 99, 100 + d) for d in range(0, 100, 10) if d != 50]
    port_rules = [(0, 0, 0, 99, 0, 99, 0, 0, p, p + 4, 200 + p) for p in range(0, 100, 5) if p != 95]
    bs = src_blocks + dst_nets + port_rules
    got = regions._hole(C, bs)
    assert got == (0, 0, 7, 7, 50, 59, 0, 0, 95, 99)
    # a box narrow in the destination as well: the hole moves beside it
    assert regions._hole(C, bs + [(0, 0, 7, 7, 50, 54, 0, 0, 95, 99, 999)]) == (0, 0, 7, 7, 55, 59, 0, 0, 95, 99)


@settings(max_examples=400, deadline=None)
@given(regions_(), boxes())
def test_hole_is_sound(C, bs):
    """Whatever _hole returns is free (it may miss: find_free then searches
    exactly)."""
    met = [b for b in bs if _meets(b, C)]
    got = regions._hole(C, met)
    if got is not None:
        assert _inside(got, C)
        assert not any(_meets(got, b) for b in met)
