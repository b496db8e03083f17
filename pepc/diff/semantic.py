"""The semantic difference of two policies: which packets are decided differently.

Each side's live atoms are boxes in the checker's packet space
(checker/geometry.py), in rank order. The space is split, exactly as the
checker's searches split it, until every piece is *uniform on both sides*:
on each side the first box meeting the piece contains it (that rule decides
every packet of the piece) or no box meets it (the default decides). A
piece whose deciders differ is a changed region; pieces whose every
possible decider is the same on both sides are dropped without splitting
further. Adjacent changed pieces with the same old and new decision are
merged back into larger boxes, so the regions read like rules.

What counts as a change (docs/decisions.md): the *outcome* of a packet is
its deciding rule (or the default) and that rule's action with its rate.
A region's `kind` is the coarsest thing that changed:

- `verdict`: PASS <-> DROP (RATE_LIMIT passes within its rate);
- `action`: the same verdict by another action (ALLOW -> LOG_ONLY, another
  rate, the default's ALLOW -> LOG_ONLY);
- `rule`: the same action decided by another rule (or by a rule instead
  of the default with that same action): counters and events move.

Every region carries a witness packet; `diff` confirms each one on the
compiled programs of both sides with the simulator.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Iterator, Sequence

from pepc.checker.geometry import (
    DEFAULTED, GUARDED, TCP_FRAG, TCP_PORTS, UDP_FRAG, UDP_PORTS, UNIVERSE, Box, atom_box, covers, intersection, packet_of,
    pick_point,
)
from pepc.checker.regions import _cut, _meet, _split
from pepc.policy.model import Action, Policy, Rule
from pepc.policy.semantics import Packet, atoms_of, rank_key, verdict_of


class Kind(enum.IntEnum):
    """How much of a packet's outcome changed; smaller is more serious."""

    VERDICT = 1
    ACTION = 2
    RULE = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Outcome:
    """Who decides a packet on one side and what it does."""

    rule: Rule | None  # None: no rule matches, the default action decides
    default: Action
    #: no rule matches a packet the ICMPv6 lockout guard protects: it passes
    #: whatever the default says (semantics.GUARDED_ICMPV6_TYPES)
    guard: bool = False

    @property
    def action(self) -> Action:
        if self.rule is None:
            return Action.ALLOW if self.guard else self.default
        return self.rule.action

    @property
    def verdict(self) -> str:
        if self.rule is None and self.guard:
            return "PASS"
        return verdict_of(None if self.rule is None else self.rule.action, self.default)

    @property
    def action_key(self) -> tuple:
        # the guard's pass is ALLOW's outcome, as a default ALLOW's is: a
        # rule that takes over from it with ALLOW changes the decider only
        a = self.action
        if self.rule is not None and a is Action.RATE_LIMIT:
            return (a, self.rule.rate_limit_bps, self.rule.burst_bytes or self.rule.rate_limit_bps)
        return (a,)

    @property
    def rule_id(self) -> str | None:
        return None if self.rule is None else self.rule.id

    @property
    def action_text(self) -> str:
        if self.rule is None:
            return "GUARD PASS" if self.guard else f"DEFAULT {self.default.name}"
        if self.rule.action is Action.RATE_LIMIT:
            return f"RATE_LIMIT {self.rule.rate_limit_bps} B/s"
        return self.rule.action.name


def kind_of(old: Outcome, new: Outcome) -> Kind | None:
    if old.verdict != new.verdict:
        return Kind.VERDICT
    if old.action_key != new.action_key:
        return Kind.ACTION
    if old.rule_id != new.rule_id:
        return Kind.RULE
    return None


@dataclass(frozen=True)
class Region:
    box: Box
    old: Outcome
    new: Outcome
    kind: Kind

    @property
    def witness(self) -> Packet:
        return packet_of(pick_point(self.box))


@dataclass(frozen=True)
class RuleChange:
    id: str
    change: str  # "added" | "removed" | "changed"
    old: Rule | None
    new: Rule | None
    fields: tuple[str, ...] = ()  # for "changed": the fields that differ


@dataclass(frozen=True)
class PolicyDiff:
    regions: tuple[Region, ...]
    rules: tuple[RuleChange, ...]
    old_default: Action
    new_default: Action

    def count(self, kind: Kind) -> int:
        return sum(1 for r in self.regions if r.kind is kind)

    def shown(self, level: Kind) -> tuple[Region, ...]:
        """The regions at `level` or more serious."""
        return tuple(r for r in self.regions if r.kind <= level)


# --- the region search ------------------------------------------------------------


def _boxes(rules: Sequence[Rule], changed: frozenset[str]) -> list[tuple]:
    """Boxes of every atom, in rank order, tagged with the rule's index
    and whether the rule is not the same on the other side."""
    out = []
    for i, r in enumerate(rules):
        flag = r.id in changed
        for a in atoms_of(r):
            b = atom_box(a)
            if b is not None:
                out.append((rank_key(a), b + (i, flag)))
    out.sort(key=lambda t: t[0])
    return [b for _, b in out]


def _first_covering(bs: list, C: Box) -> int:
    for i, b in enumerate(bs):
        if covers(b, C):  # type: ignore[arg-type]
            return i
    return -1


def _starts() -> list[tuple[Box, bool]]:
    """Where the search starts: each family's space in the parts of the
    class line that no box mixes with ports (boxes with ports span only
    the classes with ports, so the port-less parts are never cut along a
    port and their regions are shown without ports), and apart where no
    rule means the default and where it means the guard's pass.
    (box, guarded) pairs."""
    out = []
    for u in UNIVERSE:
        for c0, c1 in ((u[0], TCP_FRAG), (TCP_PORTS, UDP_PORTS), (UDP_FRAG, u[1])):
            part = (max(c0, u[0]), min(c1, u[1])) + u[2:]
            if part[0] > part[1]:
                continue
            for x, guarded in [(d, False) for d in DEFAULTED] + [(GUARDED, True)]:
                piece = intersection(part, x)  # type: ignore[arg-type]
                if piece is not None:
                    out.append((piece, guarded))
    return out


def _content(r: Rule) -> tuple:
    """Everything about a rule that decides packets (not where it is written)."""
    return tuple(getattr(r, f.name) for f in fields(Rule) if f.name not in ("loc", "field_locs"))


def changed_pieces(
    old_rules: Sequence[Rule], old_default: Action, new_rules: Sequence[Rule], new_default: Action
) -> Iterator[tuple[Box, Outcome, Outcome]]:
    """Uniform pieces of the packet space whose outcome differs (any kind).

    Exact: a piece is reported only when the first box meeting it on each
    side contains it (or none meets it), so every packet of the piece has
    the reported outcomes; a piece is dropped only when every decider it
    may still have is the same on both sides, or when no rule that differs
    between the sides meets it (then both sides rank the same atoms there,
    and only a change of the default could tell them apart)."""
    o_by, n_by = {r.id: r for r in old_rules}, {r.id: r for r in new_rules}
    changed = frozenset(
        rid for rid in o_by.keys() | n_by.keys()
        if rid not in o_by or rid not in n_by or _content(o_by[rid]) != _content(n_by[rid])
    )
    ob, nb = _boxes(old_rules, changed), _boxes(new_rules, changed)
    same_default = old_default == new_default
    o_out = [Outcome(r, old_default) for r in old_rules]
    n_out = [Outcome(r, new_default) for r in new_rules]

    def same(a: Outcome, b: Outcome) -> bool:
        return kind_of(a, b) is None

    def candidates(bs: list, i: int, outs: list, none: Outcome) -> list[Outcome]:
        got = [outs[b[10]] for b in (bs[: i + 1] if i >= 0 else bs)]
        return got if i >= 0 else got + [none]

    for start, guarded in _starts():
        o_none, n_none = Outcome(None, old_default, guarded), Outcome(None, new_default, guarded)
        stack = [(start, _meet(ob, start), _meet(nb, start))]
        while stack:
            C, ol, nl = stack.pop()
            if (same_default or guarded) and not any(b[11] for b in ol) and not any(b[11] for b in nl):
                continue
            i, j = _first_covering(ol, C), _first_covering(nl, C)
            if i >= 0:
                ol = ol[: i + 1]
            if j >= 0:
                nl = nl[: j + 1]
            o_dec = o_none if not ol else (o_out[ol[0][10]] if i == 0 else None)
            n_dec = n_none if not nl else (n_out[nl[0][10]] if j == 0 else None)
            if o_dec is not None and n_dec is not None:
                if not same(o_dec, n_dec):
                    yield C, o_dec, n_dec
                continue
            if o_dec is not None and all(same(o_dec, c) for c in candidates(nl, j, n_out, n_none)):
                continue
            if n_dec is not None and all(same(c, n_dec) for c in candidates(ol, i, o_out, o_none)):
                continue
            cutting = (ol[:i] if i >= 0 else ol) + (nl[:j] if j >= 0 else nl)
            k, v = _cut(C, cutting)
            left, right = _split(C, k, v)
            stack.append((right, [b for b in ol if b[k + 1] >= v], [b for b in nl if b[k + 1] >= v]))
            stack.append((left, [b for b in ol if b[k] < v], [b for b in nl if b[k] < v]))


def merge_boxes(boxes: list[Box]) -> list[Box]:
    """Fewer boxes with the same union: two boxes that agree on four
    dimensions and touch in the fifth become one, until none do."""
    cur = sorted(set(boxes))
    changed = True
    while changed:
        changed = False
        for k in (8, 6, 2, 4, 0):
            rest = [d for d in range(0, 10, 2) if d != k]
            cur.sort(key=lambda b: tuple(b[d] for d in rest) + tuple(b[d + 1] for d in rest) + (b[k],))
            out: list[Box] = []
            for b in cur:
                if out:
                    p = out[-1]
                    if all(p[d] == b[d] and p[d + 1] == b[d + 1] for d in rest) and p[k + 1] + 1 == b[k]:
                        out[-1] = p[:k] + (p[k], b[k + 1]) + p[k + 2 :]  # type: ignore[assignment]
                        changed = True
                        continue
                out.append(b)
            cur = out
    return sorted(cur)


def rule_changes(old: Policy, new: Policy) -> tuple[RuleChange, ...]:
    """Rules added, removed and changed, by id (everything a rule says but
    where it was written)."""
    o = {r.id: r for r in old.rules}
    n = {r.id: r for r in new.rules}
    out = []
    names = [f.name for f in fields(Rule) if f.name not in ("id", "loc", "field_locs")]
    for rid in sorted(o.keys() | n.keys()):
        a, b = o.get(rid), n.get(rid)
        if a is None:
            out.append(RuleChange(rid, "added", None, b))
        elif b is None:
            out.append(RuleChange(rid, "removed", a, None))
        else:
            diff = tuple(name for name in names if getattr(a, name) != getattr(b, name))
            if diff:
                out.append(RuleChange(rid, "changed", a, b, diff))
    return tuple(out)


def diff_policies(old: Policy, old_default: Action, new: Policy, new_default: Action, now: datetime) -> PolicyDiff:
    """The exact semantic difference of `old` and `new` at time `now`."""
    old_live, new_live = old.live_rules(now), new.live_rules(now)
    groups: dict[tuple, list[Box]] = {}
    outcomes: dict[tuple, tuple[Outcome, Outcome]] = {}
    for box, o, n in changed_pieces(old_live, old_default, new_live, new_default):
        key = (o.rule_id, o.action_key, n.rule_id, n.action_key)
        groups.setdefault(key, []).append(box)
        outcomes.setdefault(key, (o, n))
    regions = []
    for key, boxes in groups.items():
        o, n = outcomes[key]
        kind = kind_of(o, n)
        assert kind is not None
        for b in merge_boxes(boxes):
            regions.append(Region(b, o, n, kind))
    regions.sort(key=lambda r: (r.kind, r.box, r.old.rule_id or "", r.new.rule_id or ""))
    return PolicyDiff(tuple(regions), rule_changes(old, new), old_default, new_default)
