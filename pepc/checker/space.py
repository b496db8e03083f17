"""The live rules as ranked boxes, with an index over them.

Built once per analysis: every atom of every live rule becomes a box
(geometry.py) and gets its integer position in the total order of
`semantics.rank_key`. The searches ask the index for the atoms containing
a point (`stab`) or meeting an atom (`meeting`), and materialize a rank-
sorted list only when an exact region search needs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pepc.checker.geometry import Box, atom_box, contains_point, packet_of
from pepc.checker.index import BoxIndex, ScanIndex
from pepc.model import Action, Rule
from pepc.semantics import Atom, atom_matches, atoms_of, rank_key

ActionKey = tuple[int, int, int]


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
        for i in range(len(self.boxes)):
            self.index.add(i)
        self._stabs: dict[tuple, list[int]] = {}

    def new_index(self) -> BoxIndex | ScanIndex:
        return self.index_type(self.boxes, self.dsts, self.srcs)

    def stab(self, point: tuple) -> list[int]:
        """The atoms containing the point (remembered: witnesses are often
        probed twice)."""
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
            ra, arank, items = self.arank[a], self.arank, self.items
            got = [items[j] for j in sorted(self.meeting(a), key=arank.__getitem__) if arank[j] < ra]
            self._lists[key] = got
        return got

    def worse(self, a: int) -> list[tuple]:
        """Other rules' atoms meeting atom a ranked after it, best first."""
        key = ("w", a)
        got = self._lists.get(key)
        if got is None:
            ra, ri, arank, arule, items = self.arank[a], self.arule[a], self.arank, self.arule, self.items
            got = [
                items[j] for j in sorted(self.meeting(a), key=arank.__getitem__) if arank[j] > ra and arule[j] != ri
            ]
            self._lists[key] = got
        return got

    def decide(self, point: tuple, ri: int) -> tuple[int, int | None]:
        """At a point: the winning atom, and the first atom of another rule
        than `ri` (None: no other rule matches)."""
        arank, arule = self.arank, self.arule
        best = nxt = None
        br = nr = 1 << 62
        for j in self.stab(point):
            r = arank[j]
            if r < br:
                best, br = j, r
            if r < nr and arule[j] != ri:
                nxt, nr = j, r
        return best, nxt  # type: ignore[return-value]

    def winner(self, point: tuple) -> int | None:
        best, br = None, 1 << 62
        for j in self.stab(point):
            if self.arank[j] < br:
                best, br = j, self.arank[j]
        return best

    # --- witnesses, checked against pepc.semantics ------------------------

    def judge(self, point: tuple, also: tuple[int, ...] = ()) -> list[int]:
        """The atoms matching `point` by the semantics (atom_matches), best
        first by rank_key.

        The candidates are the index's, plus every atom of the rules they
        belong to and of `also`; the decision is the semantics': a witness
        is only reported when they confirm it, and an atom whose box
        disagrees with atom_matches (or one the index missed) is a bug.
        """
        pkt = packet_of(point)
        found = set(self.stab(point))
        rules = {self.arule[j] for j in found} | set(also)
        matching = []
        for j in found | {j for r in rules for j in self.rule_atoms[r]}:
            atom = self.atoms[j]
            matches = atom_matches(atom, pkt)
            if matches != contains_point(self.boxes[j], point) or matches != (j in found):
                raise AssertionError(f"geometry and semantics disagree on {pkt} for rule {atom.rule.id}")
            if matches:
                matching.append((rank_key(atom), j))
        return [j for _, j in sorted(matching)]

    def first_of(self, judged: list[int], rule: int = -1, skip_rule: int = -1) -> int | None:
        for j in judged:
            if (rule < 0 or self.arule[j] == rule) and self.arule[j] != skip_rule:
                return j
        return None
