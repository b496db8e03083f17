"""The anomaly searches. Each returns raw findings (`Raw`): the finding
plus what suppression needs to know (which rules it is on, which rule
pairs it is about).

Definitions (on the rank order of DESIGN.md; only live rules take part):

- shadowed: no packet is won by the rule. Exactly: every atom's box is
  covered by the union of the boxes ranked before it (other rules' atoms
  and the rule's own better atoms). Related: every rule that wins some
  packet the rule matches.
- redundant: not shadowed, and at every packet the rule wins, the first
  other rule that matches it has the same action (RATE_LIMIT: same rate and
  burst), or none does and the default action is the same. Related: the
  rules (or the default) that take over its packets.
- conflict / correlation / generalization: two rules with different
  actions and a packet that both match and one of them wins (a third rule
  ranked before both does not). Equal priority: `conflict` (only
  specificity or the id decides). Different priority: `generalization` when
  the lower-priority rule's match space contains the other's, else
  `correlation`; when the higher-priority rule contains the other, the
  other is shadowed and reported as such. Pairs involving a shadowed rule
  are not reported again (the shadowed finding names the rules).
- never-matches: atoms with a port constraint and protocol ICMP.
- unreachable-default: the union of all live atoms is the whole space.
"""

from __future__ import annotations

from dataclasses import dataclass

from pepc.checker import regions
from pepc.checker.geometry import FULL, intersection, packet_of, pick_point
from pepc.checker.space import ActionKey, Space
from pepc.diagnostics import CODES, Finding, Related
from pepc.model import Action, Location, Rule
from pepc.semantics import atom_matches, specificity

#: How many rule ids a message names before "and N more" (related
#: locations always list them all).
_NAMES_IN_MESSAGE = 4


@dataclass(frozen=True)
class Raw:
    finding: Finding
    on: tuple[str, ...] = ()  # rules whose `suppress:` may silence it
    pair: tuple[str, str] | None = None  # pairwise: silenced by allow_overlap between the two
    partners: tuple[str, ...] = ()  # coverage: silenced when every partner is acknowledged
    via_default: bool = False  # the default action is among the partners (cannot be acknowledged)


def describe(rule: Rule) -> str:
    if rule.action is Action.RATE_LIMIT:
        text = f"RATE_LIMIT {rule.rate_limit_bps} B/s"
        if rule.burst_bytes:
            text += f" burst {rule.burst_bytes} B"
        return text
    return rule.action.name


def _names(ids: list[str]) -> str:
    shown = ", ".join(f"`{i}`" for i in ids[:_NAMES_IN_MESSAGE])
    if len(ids) > _NAMES_IN_MESSAGE:
        shown += f" and {len(ids) - _NAMES_IN_MESSAGE} more"
    return shown


def _by_place(rules: list[Rule]) -> list[Rule]:
    return sorted(rules, key=lambda r: (r.loc, r.id))


class Analysis:
    def __init__(self, space: Space, default: Action, default_key: ActionKey, root: str):
        self.s = space
        self.default = default
        self.default_key = default_key
        self.root = root
        self.shadowed: set[int] = set()

    def finding(self, code: str, message: str, loc: Location, **kw) -> Finding:
        return Finding(code, message, loc, **kw)

    # --- never-matches ------------------------------------------------------

    def never_matches(self) -> list[Raw]:
        out = []
        for ri, rule in enumerate(self.s.rules):
            dead = self.s.dead_atoms[ri]
            if not dead:
                continue
            on_dst = any(not p.is_any for p in rule.dports)
            field = "dst.port" if on_dst else "src.port"
            if not self.s.rule_atoms[ri]:
                msg = f"rule `{rule.id}` can never match: it has a port constraint but protocol ICMP, and ICMP packets carry no ports"
            else:
                msg = (
                    f"part of rule `{rule.id}` can never match: its port items other than `any` "
                    f"need ports, and ICMP packets carry none"
                )
            out.append(Raw(self.finding("never-matches", msg, rule.loc_of(field), rule=rule.id), on=(rule.id,)))
        return out

    # --- shadowed / redundant ------------------------------------------------

    def coverage(self) -> list[Raw]:
        s = self.s
        out: list[Raw] = []
        items, arule, akeys = s.items, s.arule, s.akeys
        for ri, rule in enumerate(s.rules):
            own_atoms = s.rule_atoms[ri]
            if not own_atoms:
                continue
            mykey = akeys[ri]
            default_same = self.default_key == mykey

            def is_same(w: tuple, mykey=mykey) -> bool:
                return akeys[w[10]] == mykey

            parts = []
            bad = False
            for a in own_atoms:
                before, after = s.split(a)
                bl = [items[j] for j in before]
                wl = [items[j] for j in after if arule[j] != ri]
                parts.append((a, bl, wl))
                if regions.find_bad(s.boxes[a], bl, wl, is_same, default_same) is not None:
                    bad = True
                    break
            if bad:
                continue
            free = None
            for a, bl, _ in parts:
                free = regions.find_free(s.boxes[a], bl)
                if free is not None:
                    break
            if free is None:
                self.shadowed.add(ri)
                out.append(self._shadowed(ri, parts))
            else:
                out.append(self._redundant(ri, parts, a, free))
        return out

    def _shadowed(self, ri: int, parts: list) -> Raw:
        s = self.s
        rule = s.rules[ri]
        winners: set[int] = set()
        witness = None
        for a, bl, _ in parts:
            for piece, winner, _succ in regions.partition(s.boxes[a], bl, [], ri):
                if winner is None:
                    raise AssertionError(f"rule {rule.id} is shadowed but wins a piece")
                if witness is None:
                    witness = (a, pick_point(piece), winner)
                winners.add(winner)
        a, point, claimed = witness  # type: ignore[misc]
        win = s.first_match(point, [a] + s.meets[a])
        if win is None or s.arule[win] != claimed or not atom_matches(s.atoms[a], packet_of(point)):
            raise AssertionError(f"witness for shadowed {rule.id} does not hold")
        cover = _by_place([s.rules[w] for w in winners])
        pkt = packet_of(point)
        ids = [r.id for r in cover]
        msg = f"rule `{rule.id}` can never win: every packet it matches goes to a rule ranked before it ({_names(ids)})"
        related = tuple(
            Related(f"`{r.id}` ({describe(r)}, priority {r.priority}) wins packets of `{rule.id}`", r.loc) for r in cover
        )
        return Raw(
            self.finding("shadowed", msg, rule.loc, rule=rule.id, related=related, witness=str(pkt)),
            on=(rule.id,),
            partners=tuple(ids),
        )

    def _redundant(self, ri: int, parts: list, a: int, free) -> Raw:
        s = self.s
        rule = s.rules[ri]
        takers: set[int | None] = set()
        for b, bl, wl in parts:
            for _piece, winner, succ in regions.partition(s.boxes[b], bl, wl, ri):
                if winner is None:
                    takers.add(succ)
        point = pick_point(free)
        cands = [a] + s.meets[a]
        win = s.first_match(point, cands)
        nxt = s.first_match(point, cands, skip_rule=ri)
        if win is None or s.arule[win] != ri:
            raise AssertionError(f"witness for redundant {rule.id}: the rule does not win it")
        if (s.akeys[s.arule[nxt]] if nxt is not None else self.default_key) != s.akeys[ri]:
            raise AssertionError(f"witness for redundant {rule.id}: the action would change")
        via_default = None in takers
        others = _by_place([s.rules[t] for t in takers if t is not None])
        ids = [r.id for r in others]
        parts_text = []
        if ids:
            parts_text.append(f"{_names(ids)}, ranked after it, with the same action")
        if via_default:
            parts_text.append(f"the default action {self.default.name}")
        msg = (
            f"rule `{rule.id}` ({describe(rule)}) is redundant: removing it changes no packet's action; "
            f"the packets it wins would go to {' and to '.join(parts_text)}"
        )
        related = tuple(Related(f"`{r.id}` ({describe(r)}) would take its packets", r.loc) for r in others)
        return Raw(
            self.finding("redundant", msg, rule.loc, rule=rule.id, related=related, witness=str(packet_of(point))),
            on=(rule.id,),
            partners=tuple(ids),
            via_default=via_default,
        )

    # --- pairs ----------------------------------------------------------------

    def pairs(self) -> list[Raw]:
        s = self.s
        arule, akeys, arank, meets = s.arule, s.akeys, s.arank, s.meets
        shadowed = self.shadowed
        found: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for x in range(len(s.atoms)):
            rx = arule[x]
            if rx in shadowed:
                continue
            kx = akeys[rx]
            for y in meets[x]:
                if y > x:
                    ry = arule[y]
                    if ry != rx and akeys[ry] != kx and ry not in shadowed:
                        found.setdefault((rx, ry) if rx < ry else (ry, rx), []).append((x, y))
        out = []
        for (r1, r2), atom_pairs in sorted(found.items()):
            hit = self._pair_witness(r1, r2, atom_pairs)
            if hit is not None:
                out.append(self._pair_finding(r1, r2, *hit))
        return out

    def _pair_witness(self, r1: int, r2: int, atom_pairs: list) -> tuple | None:
        """A packet both rules match and one of them wins, with the
        candidates that decide it."""
        s = self.s
        arule, arank, items, meets = s.arule, s.arank, s.items, s.meets
        for x, y in atom_pairs:
            if arank[x] > arank[y]:
                x, y = y, x
            region = intersection(s.boxes[x], s.boxes[y])
            m = meets[x] if len(meets[x]) <= len(meets[y]) else meets[y]
            rx = arank[x]
            bl = []
            for j in m:
                if arank[j] >= rx:
                    break
                if arule[j] != r1 and arule[j] != r2:
                    bl.append(items[j])
            piece = regions.find_free(region, bl)
            if piece is not None:
                return pick_point(piece), [x, y] + m
        return None

    def _pair_finding(self, r1: int, r2: int, point: tuple, cands: list) -> Raw:
        s = self.s
        a, b = s.rules[r1], s.rules[r2]
        pkt = packet_of(point)
        win = s.first_match(point, cands)
        in1 = s.first_match(point, [j for j in cands if s.arule[j] == r1])
        in2 = s.first_match(point, [j for j in cands if s.arule[j] == r2])
        if win is None or s.arule[win] not in (r1, r2) or in1 is None or in2 is None:
            raise AssertionError(f"pair witness for {a.id}/{b.id} does not hold")
        winner, loser = (a, b) if s.arule[win] == r1 else (b, a)
        w_atom, l_atom = (in1, in2) if winner is a else (in2, in1)
        pair = (a.id, b.id)
        if a.priority == b.priority:
            ws, ls = specificity(s.atoms[w_atom]), specificity(s.atoms[l_atom])
            if ws != ls:
                why = f"specificity {ws} > {ls}"
            else:
                why = f"the rule id (`{winner.id}` < `{loser.id}`)"
            msg = (
                f"rules `{loser.id}` ({describe(loser)}) and `{winner.id}` ({describe(winner)}) overlap at equal "
                f"priority {a.priority}; only the tie-break decides: {why}, e.g. `{pkt}` goes to `{winner.id}`"
            )
            rel = Related(f"`{winner.id}` ({describe(winner)}) wins the overlap by tie-break", winner.loc)
            f = self.finding("conflict", msg, loser.loc, rule=loser.id, related=(rel,), witness=str(pkt))
            return Raw(f, on=(loser.id, winner.id), pair=pair)
        hi, lo = (a, b) if a.priority > b.priority else (b, a)
        if winner is not hi:
            raise AssertionError(f"pair witness for {a.id}/{b.id}: priority does not decide")
        hi_i, lo_i = (r1, r2) if hi is a else (r2, r1)
        if self._contains(lo_i, hi_i):
            msg = (
                f"rule `{lo.id}` ({describe(lo)}, priority {lo.priority}) generalizes `{hi.id}` "
                f"({describe(hi)}, priority {hi.priority}): `{hi.id}` is an exception inside it, e.g. `{pkt}` goes to `{hi.id}`"
            )
            code = "generalization"
            rel = Related(f"`{hi.id}` ({describe(hi)}) is the exception, decided by priority", hi.loc)
        else:
            msg = (
                f"rule `{lo.id}` ({describe(lo)}, priority {lo.priority}) partially overlaps `{hi.id}` "
                f"({describe(hi)}, priority {hi.priority}); priority gives the overlap to `{hi.id}`, e.g. `{pkt}`"
            )
            code = "correlation"
            rel = Related(f"`{hi.id}` ({describe(hi)}) wins the overlap by priority", hi.loc)
        f = self.finding(code, msg, lo.loc, rule=lo.id, related=(rel,), witness=str(pkt))
        return Raw(f, on=(lo.id, hi.id), pair=pair)

    def _contains(self, outer: int, inner: int) -> bool:
        """Whether rule `outer`'s match space contains rule `inner`'s."""
        s = self.s
        outer_items = [s.items[j] for j in s.rule_atoms[outer]]
        return all(regions.find_free(s.boxes[a], outer_items) is None for a in s.rule_atoms[inner])

    # --- unreachable default ---------------------------------------------------

    def unreachable_default(self) -> list[Raw]:
        s = self.s
        if not s.boxes or regions.find_free(FULL, s.items) is not None:
            return []
        catch_all = [i for i in range(len(s.boxes)) if s.boxes[i] == FULL]
        if catch_all:
            best = min(catch_all, key=s.arank.__getitem__)
            rule = s.rules[s.arule[best]]
            msg = (
                f"rule `{rule.id}` matches every packet, so the default action "
                f"{self.default.name} is never used"
            )
            return [Raw(self.finding("unreachable-default", msg, rule.loc, rule=rule.id), on=(rule.id,))]
        msg = f"the live rules together match every packet, so the default action {self.default.name} is never used"
        return [Raw(self.finding("unreachable-default", msg, Location(self.root)))]


def checker_codes() -> frozenset[str]:
    codes = frozenset(
        {"shadowed", "redundant", "conflict", "correlation", "generalization", "never-matches", "unreachable-default", "capacity"}
    )
    assert codes <= CODES.keys()
    return codes
