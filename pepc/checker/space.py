"""The live rules as ranked boxes, with their meeting lists.

Built once per analysis: every atom of every live rule becomes a box
(geometry.py), gets its integer position in the total order of
`semantics.rank_key`, and the list of atoms whose boxes meet its own
(index.py), sorted best first. Everything the anomaly searches need is a
slice of those lists.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

from pepc.checker.geometry import Box, atom_box, contains_point, packet_of
from pepc.checker.index import meeting_atoms, meeting_atoms_naive
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
    rule_atoms: list[list[int]]  # per rule, its live atoms, best first
    dead_atoms: list[int]  # per rule, how many of its atoms can match nothing
    meets: list[list[int]]  # per atom, atoms whose boxes meet it, best first

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
                dsts.append((atom.dst.plen, atom.dst.addr))
                srcs.append((atom.src.plen, atom.src.addr))
        order = sorted(range(len(atoms)), key=lambda i: rank_key(atoms[i]))
        arank = [0] * len(atoms)
        for pos, i in enumerate(order):
            arank[i] = pos
        meets = meeting_atoms_naive(boxes) if naive else meeting_atoms(boxes, dsts, srcs)
        key = arank.__getitem__
        for m in meets:
            m.sort(key=key)
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
            rule_atoms=rule_atoms,
            dead_atoms=dead,
            meets=meets,
        )

    def split(self, a: int) -> tuple[list[int], list[int]]:
        """Atoms meeting atom a ranked before it, and ranked after it."""
        m = self.meets[a]
        s = bisect_left(m, self.arank[a], key=self.arank.__getitem__)
        return m[:s], m[s:]

    # --- witnesses, checked against pepc.semantics ------------------------

    def first_match(self, point: tuple, candidates, skip_rule: int = -1) -> int | None:
        """The atom that wins `point` among `candidates` by the semantics
        (atom_matches and rank_key), ignoring rule `skip_rule`.

        The candidates come from the geometry; the decision does not: a
        witness is only reported when the semantics confirm it.
        """
        pkt = packet_of(point)
        best, best_key = None, None
        for j in candidates:
            if self.arule[j] == skip_rule:
                continue
            atom = self.atoms[j]
            if atom_matches(atom, pkt):
                if not contains_point(self.boxes[j], point):
                    raise AssertionError(f"geometry and semantics disagree on {pkt} for rule {atom.rule.id}")
                k = rank_key(atom)
                if best_key is None or k < best_key:
                    best, best_key = j, k
            elif contains_point(self.boxes[j], point):
                raise AssertionError(f"geometry and semantics disagree on {pkt} for rule {atom.rule.id}")
        return best
