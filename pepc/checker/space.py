"""The live rules as ranked boxes, with an index over them.

Built once per analysis: every atom of every live rule becomes a box
(geometry.py) and gets its integer position in the total order of
`semantics.rank_key`. The searches ask the index for the atoms containing
a point (`stab`) or meeting an atom (`meeting`), and materialize a rank-
sorted list only when an exact region search needs it.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Iterator

from pepc.checker.geometry import Box, atom_box, contains_point, covers, packet_of
from pepc.checker.index import BoxIndex, ScanIndex
from pepc.policy.model import Action, Rule
from pepc.policy.semantics import Atom, atom_matches, atoms_of, rank_key

ActionKey = tuple[int, int, int]

#: Above every rank (a DynamicSpace's ranks are sparse).
NO_RANK = 1 << 62

#: A rank window up to this many atoms per bucket a query would visit is
#: scanned instead of queried.
_SCAN_PER_VISIT = 4


def action_key(rule: Rule) -> ActionKey:
    """What "the same action" means for redundancy: RATE_LIMIT rules with
    different rates or bursts act differently."""
    if rule.action is Action.RATE_LIMIT:
        return (int(rule.action), rule.rate_limit_bps, rule.burst_bytes or rule.rate_limit_bps)
    return (int(rule.action), 0, 0)


def default_key(action: Action) -> ActionKey:
    if action is Action.RATE_LIMIT:
        return (int(action), -1, -1)  # no rule shares the default's (absent) bucket
    return (int(action), 0, 0)


@dataclass
class Space:
    rules: list[Rule]
    akeys: list[ActionKey]
    atoms: list[Atom]
    boxes: list[Box]
    items: list[tuple]  # box + (rule index,): the candidates regions.py takes
    arule: list[int]
    arank: list[int]
    order: list[int]  # atom indices, best first
    dsts: list[tuple[int, int]]  # per atom (plen, addr) of its destination prefix
    srcs: list[tuple[int, int]]
    rule_atoms: list[list[int]]  # per rule, its live atoms, best first
    dead_atoms: list[int]  # per rule, how many of its atoms can match nothing
    index_type: type
    index: BoxIndex | ScanIndex = field(init=False)
    _lists: dict = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.index = self.index_type(self.boxes, self.dsts, self.srcs, classes=False)
        # added best first, so that every candidate list of a point query is
        # in rank order and the searches for the best atoms stop early
        for i in self.order:
            self.index.add(i)
        if isinstance(self.index, BoxIndex):
            self.index.freeze()
        #: whether the index's candidate lists are in rank order (a
        #: DynamicSpace adds atoms out of order)
        self.ranked_lists = True
        self._stabs: dict[tuple, list[int]] = {}

    def new_index(self) -> BoxIndex | ScanIndex:
        return self.index_type(self.boxes, self.dsts, self.srcs)

    def stab(self, point: tuple) -> list[int]:
        """The atoms containing the point (remembered: a DynamicSpace,
        whose lists are not in rank order, answers every point query from
        here, and a probe's point is often asked again)."""
        got = self._stabs.get(point)
        if got is None:
            if len(self._stabs) > 200_000:
                self._stabs.clear()
            got = self._stabs[point] = self.index.stab(point)
        return got

    @classmethod
    def build(cls, rules: list[Rule], naive: bool = False) -> "Space":
        atoms: list[Atom] = []
        boxes: list[Box] = []
        arule: list[int] = []
        dsts: list[tuple[int, int]] = []
        srcs: list[tuple[int, int]] = []
        dead = [0] * len(rules)
        for ri, rule in enumerate(rules):
            for atom in atoms_of(rule):
                box = atom_box(atom)
                if box is None:
                    dead[ri] += 1
                    continue
                atoms.append(atom)
                boxes.append(box)
                arule.append(ri)
                dsts.append(atom.dst.line)
                srcs.append(atom.src.line)
        order = sorted(range(len(atoms)), key=lambda i: rank_key(atoms[i]))
        arank = [0] * len(atoms)
        for pos, i in enumerate(order):
            arank[i] = pos
        rule_atoms: list[list[int]] = [[] for _ in rules]
        for i in order:
            rule_atoms[arule[i]].append(i)
        return cls(
            rules=rules,
            akeys=[action_key(r) for r in rules],
            atoms=atoms,
            boxes=boxes,
            items=[b + (ri,) for b, ri in zip(boxes, arule)],
            arule=arule,
            arank=arank,
            order=order,
            dsts=dsts,
            srcs=srcs,
            rule_atoms=rule_atoms,
            dead_atoms=dead,
            index_type=ScanIndex if naive else BoxIndex,
        )

    # --- queries --------------------------------------------------------------

    def meeting(self, a: int):
        """Atoms meeting atom a (a itself included)."""
        return self.index.meeting(self.boxes[a], self.dsts[a], self.srcs[a])

    def meeting_both(self, x: int, y: int, box: Box):
        """Atoms meeting `box`, the intersection of atoms x and y."""
        dst = self.dsts[x] if self.dsts[x][0] >= self.dsts[y][0] else self.dsts[y]
        src = self.srcs[x] if self.srcs[x][0] >= self.srcs[y][0] else self.srcs[y]
        return self.index.meeting(box, dst, src)

    def better(self, a: int) -> list[tuple]:
        """The atoms meeting atom a ranked before it (any rule), best first:
        where one of them matches, a does not decide."""
        key = ("b", a)
        got = self._lists.get(key)
        if got is None:
            arank, items = self.arank, self.items
            got = [items[j] for j in sorted(self._before(a), key=arank.__getitem__)]
            self._lists[key] = got
        return got

    def better_exceeds(self, a: int, limit: int) -> bool:
        """Whether more than `limit` atoms ranked before atom a meet it,
        counted without materializing them all."""
        got = self._lists.get(("b", a))
        if got is not None:
            return len(got) > limit
        seen = []
        for j in self._before(a):
            seen.append(j)
            if len(seen) > limit:
                return True
        # all of them, few: what better(a) would find
        arank, items = self.arank, self.items
        self._lists[("b", a)] = [items[j] for j in sorted(seen, key=arank.__getitem__)]
        return False

    def _before(self, a: int) -> Iterator[int]:
        """The atoms meeting atom a ranked before it (in no particular order)."""
        ra, arank = self.arank[a], self.arank
        met = self.index.meeting(self.boxes[a], self.dsts[a], self.srcs[a], (arank, -1, ra)) if self.ranked_lists else self.meeting(a)
        return (j for j in met if arank[j] < ra)

    def _candidates(self, point: tuple) -> list[list[int]]:
        """Lists holding every atom containing the point, in rank order
        when `ranked_lists` (else one list of exactly those atoms)."""
        if self.ranked_lists:
            return self.index.stab_lists(point)
        return [self.stab(point)]

    def _container(self, a: int, lo: int, hi: int) -> int | None:
        """The best-ranked atom of another rule, ranked strictly between lo
        and hi, whose box contains atom a's whole box; None if there is
        none. A box containing a's contains its lowest corner, so one
        point query finds the candidates."""
        b, ri, arank, arule, boxes = self.boxes[a], self.arule[a], self.arank, self.arule, self.boxes
        rank = arank.__getitem__
        best, br = None, hi
        stop = self.ranked_lists
        for members in self._candidates((b[0], b[2], b[4], b[6], b[8])):
            if stop and lo >= 0:
                start = bisect_right(members, lo, key=rank)
                members = members[start:] if start else members
            for j in members:
                r = arank[j]
                if r >= br:
                    if stop:
                        break
                    continue
                o = boxes[j]
                if (
                    r > lo and arule[j] != ri and o[0] <= b[0] and o[1] >= b[1] and o[2] <= b[2] and o[3] >= b[3]
                    and o[4] <= b[4] and o[5] >= b[5] and o[6] <= b[6] and o[7] >= b[7] and o[8] <= b[8] and o[9] >= b[9]
                ):
                    best, br = j, r
                    if stop:
                        break
        return best

    def cover_of(self, a: int) -> int | None:
        """The best-ranked atom of another rule, ranked before atom a,
        whose box contains a's whole box; None if there is none."""
        return self._container(a, -1, self.arank[a])


    def hider(self, a: int) -> int:
        """The rank of the best-ranked atom of another rule, ranked after
        atom a, whose box contains a's whole box (NO_RANK if none):
        wherever a matches, that atom or a better one matches too, so no
        atom ranked after it can ever decide a packet of a's, with or
        without a's rule."""
        j = self._container(a, self.arank[a], NO_RANK)
        return NO_RANK if j is None else self.arank[j]

    def later(self, a: int) -> Iterator[int]:
        """Other rules' atoms meeting atom a that may decide a packet of
        a's were a's rule removed: ranked after a, up to its hider (in no
        particular order)."""
        ra, ri, rh, arank, arule = self.arank[a], self.arule[a], self.hider(a), self.arank, self.arule
        if not self.ranked_lists:
            return (j for j in self.meeting(a) if ra < arank[j] <= rh and arule[j] != ri)
        q = self.boxes[a]
        end = min(rh, len(self.order) - 1)  # ranked lists: the ranks are 0..len-1
        if end - ra <= _SCAN_PER_VISIT * self.index.visits(q, self.dsts[a], self.srcs[a]):
            # a short window (a wide atom near the bottom): scanning it beats
            # visiting every bucket under a wide prefix
            return self._scan_window(q, ri, ra, end)
        return (j for j in self.index.meeting(q, self.dsts[a], self.srcs[a], (arank, ra, rh + 1)) if arule[j] != ri)

    def _scan_window(self, q: Box, ri: int, ra: int, rh: int) -> Iterator[int]:
        c0, c1, s0, s1, d0, d1, p0, p1, q0, q1 = q
        boxes, arule = self.boxes, self.arule
        for j in self.order[ra + 1 : rh + 1]:
            o = boxes[j]
            if (
                o[0] <= c1 and o[1] >= c0 and o[2] <= s1 and o[3] >= s0 and o[4] <= d1
                and o[5] >= d0 and o[6] <= p1 and o[7] >= p0 and o[8] <= q1 and o[9] >= q0 and arule[j] != ri
            ):
                yield j

    def worse(self, a: int) -> list[tuple]:
        """Other rules' atoms meeting atom a ranked after it, best first,
        up to the first that contains a's box (the later ones never decide
        a packet of a's)."""
        key = ("w", a)
        got = self._lists.get(key)
        if got is None:
            arank, items = self.arank, self.items
            got = [items[j] for j in sorted(self.later(a), key=arank.__getitem__)]
            self._lists[key] = got
        return got

    def decide(self, point: tuple, ri: int, lists: list[list[int]] | None = None) -> tuple[int, int | None]:
        """At a point: the winning atom, and the first atom of another rule
        than `ri` (None: no other rule matches). `lists`: the point's
        candidate lists, when the caller already has them."""
        arank, arule, boxes = self.arank, self.arule, self.boxes
        cls, src, dst, sport, dport = point
        best = nxt = None
        br = nr = 1 << 62
        stop = self.ranked_lists
        for members in self._candidates(point) if lists is None else lists:
            for j in members:
                r = arank[j]
                if r >= nr:
                    if stop:
                        break  # the rest of the list ranks after both
                    continue
                o = boxes[j]
                if not (
                    o[0] <= cls <= o[1] and o[2] <= src <= o[3] and o[4] <= dst <= o[5]
                    and o[6] <= sport <= o[7] and o[8] <= dport <= o[9]
                ):
                    continue
                if r < br:
                    best, br = j, r
                if arule[j] != ri:
                    nxt, nr = j, r
                    if stop:
                        break
        return best, nxt  # type: ignore[return-value]

    def winner(self, point: tuple) -> int | None:
        arank, boxes = self.arank, self.boxes
        cls, src, dst, sport, dport = point
        best, br = None, 1 << 62
        stop = self.ranked_lists
        for members in self._candidates(point):
            for j in members:
                r = arank[j]
                if r >= br:
                    if stop:
                        break
                    continue
                o = boxes[j]
                if (
                    o[0] <= cls <= o[1] and o[2] <= src <= o[3] and o[4] <= dst <= o[5]
                    and o[6] <= sport <= o[7] and o[8] <= dport <= o[9]
                ):
                    best, br = j, r
                    if stop:
                        break
        return best

    # --- witnesses, checked against pepc.policy.semantics ------------------------

    def judge(self, point: tuple, also: tuple[int, ...] = ()) -> list[int]:
        """The atoms matching `point` by the semantics (atom_matches), best
        first by rank_key: a prefix long enough to hold the first atom, and
        for each rule of `also` its first atom and the first of another
        rule (what `first_of` is asked).

        The candidates are the atoms the boxes say answer the questions
        (`_answers`), plus every atom of the rules in `also` ranked up to
        the last answer; the decision is the semantics': a witness is only
        reported when they confirm it, and an atom whose box disagrees
        with atom_matches is a bug.
        """
        pkt = packet_of(point)
        answers, bound = self._answers(point, also)
        arank = self.arank
        cands = answers | {j for r in also for j in self.rule_atoms[r] if arank[j] <= bound}
        own = {r: False for r in also}  # rule -> its first atom seen
        other = {r: False for r in also}  # rule -> a first atom of another rule seen
        matching: list[int] = []
        arule = self.arule
        for j in sorted(cands, key=self.arank.__getitem__):
            if matching:
                # past the first match, only an atom that answers one of the
                # questions still open is judged (a wide rule's own atom
                # may rank after hundreds that contain the point)
                r = arule[j]
                if not (own.get(r) is False or any(not got and x != r for x, got in other.items())):
                    continue
            atom = self.atoms[j]
            matches = atom_matches(atom, pkt)
            if matches != contains_point(self.boxes[j], point):
                raise AssertionError(f"geometry and semantics disagree on {pkt} for rule {atom.rule.id}")
            if not matches:
                continue
            matching.append(j)
            r = self.arule[j]
            for x in also:
                if r == x:
                    own[x] = True
                else:
                    other[x] = True
            if all(own.values()) and all(other.values()):
                break
        return matching

    def _answers(self, point: tuple, also: tuple[int, ...]) -> tuple[set[int], int]:
        """By the boxes: the atoms answering judge's questions at the
        point (the first atom, and for each rule of `also` its first atom
        and the first of another rule) and the rank of the last of them
        (NO_RANK when some question has no answer). `decide` stops each
        rank-ordered candidate list at its answer, so a point inside
        hundreds of wide rules' atoms costs what its answers need."""
        arank = self.arank
        if not also:
            w = self.winner(point)
            return (set(), NO_RANK) if w is None else ({w}, arank[w])
        answers: set[int] = set()
        bound = -1
        lists = self._candidates(point)  # one index walk for every rule asked about
        for x in also:
            best, nxt = self.decide(point, x, lists)
            own = self.first_own(point, x)
            answers.update(j for j in (best, nxt, own) if j is not None)
            bound = NO_RANK if nxt is None or own is None else max(bound, arank[nxt], arank[own])
        return answers, bound

    def first_own(self, point: tuple, ri: int) -> int | None:
        """Rule ri's best-ranked atom containing the point (None: none)."""
        arank, boxes = self.arank, self.boxes
        return min((j for j in self.rule_atoms[ri] if contains_point(boxes[j], point)), key=arank.__getitem__, default=None)

    def first_of(self, judged: list[int], rule: int = -1, skip_rule: int = -1) -> int | None:
        for j in judged:
            if (rule < 0 or self.arule[j] == rule) and self.arule[j] != skip_rule:
                return j
        return None
