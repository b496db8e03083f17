"""The anomaly searches.

Definitions (on the rank order of DESIGN.md; only live rules take part):

- shadowed: no packet is won by the rule. Related: every rule that wins
  some packet the rule matches.
- redundant: not shadowed, and at every packet the rule wins, the first
  other rule that matches it has the same action (RATE_LIMIT: same rate and
  burst), or none does and the default action is the same. Related: the
  rules (or the default) that take over its packets.
- conflict / correlation / generalization, reported on the *losing* rule L
  for each rule H with a different action that wins some packet L matches
  (H "takes L's packets"): equal priorities make it a `conflict` (only
  specificity or the id decides); otherwise H has the higher priority and
  it is a `generalization` when L's match space contains H's (H is an
  exception carved out of L), else a `correlation`. (H containing L would
  make L shadowed.) Shadowed rules get no pairwise findings: the shadowed
  finding names the rules. One finding per losing rule and code names its
  partners, at most PAIR_CAP of them (the message says when there may be
  more): a block list that overlaps every service rule is one finding per
  rule, not one per pair.
- never-matches: atoms with a port constraint and protocol ICMP.
- unreachable-default: the union of all live atoms is the whole space.

How: a point probe (the index's `stab`: every atom containing one point)
answers most questions at once: a packet where the rule wins and removing
it changes the action proves it neither shadowed nor redundant. Only when
the probes find no such packet does an exact region search (regions.py)
run on the rank-sorted atoms meeting the rule, so the exact answer costs
little more than the probes for the rules that are fine. The pair search
sweeps the rank order with one index per action holding only the atoms
ranked before the current one, so it only ever sees candidates that could
take the current atom's packets.
"""

from __future__ import annotations

from dataclasses import dataclass

from pepc.checker import regions
from pepc.checker.geometry import FULL, N_CLASSES, intersection, intersects, packet_of, pick_point
from pepc.checker.space import ActionKey, Space
from pepc.diagnostics import Finding, Related
from pepc.model import Action, Location, Rule
from pepc.semantics import rank_key, specificity

#: Partner rules a pairwise finding names per losing rule.
PAIR_CAP = 8
#: Candidate atoms a rule's targeted probes look at before the exact search.
PROBE_BUDGET = 256
#: Pieces the search for related rules of one finding may visit.
PIECE_CAP = 20000
#: How many rule ids a message names before "and N more" (related
#: locations list them all).
_NAMES_IN_MESSAGE = 4

PAIR_CODES = ("conflict", "correlation", "generalization")


@dataclass(frozen=True)
class Raw:
    finding: Finding
    on: tuple[str, ...] = ()  # rules whose `suppress:` may silence it
    partners: tuple[str, ...] = ()  # coverage: silenced when every partner is acknowledged
    via_default: bool = False  # the default action is among the partners (cannot be acknowledged)


class Suppressions:
    """The `suppress`/`allow_overlap` entries of the live rules, and which
    of them silenced something."""

    def __init__(self, live: list[Rule]):
        self.by_id = {r.id: r for r in live}
        self.used: set[tuple[str, str]] = set()  # (rule id, "code:<c>" | "id:<rule>")

    def acks(self, a: str, b: str) -> list[tuple[str, str]]:
        out = []
        ra, rb = self.by_id.get(a), self.by_id.get(b)
        if ra is not None and b in ra.allow_overlap:
            out.append((a, "id:" + b))
        if rb is not None and a in rb.allow_overlap:
            out.append((b, "id:" + a))
        return out

    def code(self, rule_id: str, code: str) -> list[tuple[str, str]]:
        r = self.by_id.get(rule_id)
        return [(rule_id, "code:" + code)] if r is not None and code in r.suppress else []

    def silence(self, raw: Raw) -> bool:
        f = raw.finding
        entries = [e for rid in raw.on for e in self.code(rid, f.code)]
        if raw.partners and not raw.via_default and f.rule is not None:
            per_partner = [self.acks(f.rule, p) for p in raw.partners]
            if all(per_partner):
                entries += [e for got in per_partner for e in got]
        self.used.update(entries)
        return bool(entries)


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
    def __init__(self, space: Space, default: Action, default_key: ActionKey, root: str, sup: Suppressions):
        self.s = space
        self.default = default
        self.default_key = default_key
        self.root = root
        self.sup = sup
        self.shadowed: set[int] = set()
        self.rule_idx = {r.id: i for i, r in enumerate(space.rules)}

    # --- never-matches ------------------------------------------------------

    def never_matches(self) -> list[Raw]:
        out = []
        for ri, rule in enumerate(self.s.rules):
            if not self.s.dead_atoms[ri]:
                continue
            field = "dst.port" if any(not p.is_any for p in rule.dports) else "src.port"
            if not self.s.rule_atoms[ri]:
                msg = (
                    f"rule `{rule.id}` can never match: it has a port constraint but protocol ICMP, "
                    "and ICMP packets carry no ports"
                )
            else:
                msg = (
                    f"part of rule `{rule.id}` can never match: its port items other than `any` "
                    "need ports, and ICMP packets carry none"
                )
            out.append(Raw(Finding("never-matches", msg, rule.loc_of(field), rule=rule.id), on=(rule.id,)))
        return out

    # --- shadowed / redundant ------------------------------------------------

    def coverage(self) -> list[Raw]:
        out: list[Raw] = []
        for ri in range(len(self.s.rules)):
            if not self.s.rule_atoms[ri]:
                continue
            verdict = self._classify(ri)
            if verdict == "shadowed":
                self.shadowed.add(ri)
                out.append(self._shadowed(ri))
            elif verdict == "redundant":
                out.append(self._redundant(ri))
        return out

    def _classify(self, ri: int) -> str | None:
        """None (the rule decides some packet), "redundant" or "shadowed"."""
        s = self.s
        akeys, arule, arank, boxes = s.akeys, s.arule, s.arank, s.boxes
        mykey, dkey = akeys[ri], self.default_key
        own = s.rule_atoms[ri]
        free = False

        def changes(n: int | None) -> bool:
            return (akeys[arule[n]] if n is not None else dkey) != mykey

        # 1. one readable packet per atom
        for a in own:
            win, nxt = s.decide(pick_point(boxes[a]), ri)
            if arule[win] == ri:
                free = True
                if changes(nxt):
                    return None
        # 2. a packet inside each other rule's atom that could take over
        budget, exhausted, worse_diff = PROBE_BUDGET, True, False
        for a in own:
            ra, ba = arank[a], boxes[a]
            for w in s.meeting(a):
                budget -= 1
                if budget < 0:
                    exhausted = False
                    break
                if arank[w] <= ra or arule[w] == ri or akeys[arule[w]] == mykey:
                    continue
                worse_diff = True
                win, nxt = s.decide(pick_point(intersection(ba, boxes[w])), ri)  # type: ignore[arg-type]
                if arule[win] == ri:
                    free = True
                    if changes(nxt):
                        return None
            if not exhausted:
                break
        # 3. exact; skipped when no atom after it could change the action
        if not exhausted or worse_diff or dkey != mykey:

            def is_same(w: tuple) -> bool:
                return akeys[w[10]] == mykey

            for a in own:
                if regions.find_bad(boxes[a], s.better(a), s.worse(a), is_same, dkey == mykey) is not None:
                    return None
        if not free:
            free = any(regions.find_free(boxes[a], s.better(a)) is not None for a in own)
        return "redundant" if free else "shadowed"

    def _shadowed(self, ri: int) -> Raw:
        s = self.s
        rule = s.rules[ri]
        winners: set[int] = set()
        witness = None
        pieces = 0
        for a in s.rule_atoms[ri]:
            for piece, winner, _ in regions.partition(s.boxes[a], s.better(a), [], ri):
                if winner is None:
                    raise AssertionError(f"rule {rule.id} is shadowed but wins a piece")
                if witness is None:
                    witness = (pick_point(piece), winner)
                winners.add(winner)
                pieces += 1
                if pieces >= PIECE_CAP:
                    break
        point, claimed = witness  # type: ignore[misc]
        win = s.first_match(point, also=(ri, claimed))
        if win is None or s.arule[win] != claimed or s.first_match(point, only_rule=ri, also=(ri,)) is None:
            raise AssertionError(f"witness for shadowed {rule.id} does not hold")
        cover = _by_place([s.rules[w] for w in winners])
        ids = [r.id for r in cover]
        more = " (and possibly others: the search was cut short)" if pieces >= PIECE_CAP else ""
        msg = (
            f"rule `{rule.id}` can never win: every packet it matches goes to a rule ranked "
            f"before it ({_names(ids)}){more}"
        )
        related = tuple(
            Related(f"`{r.id}` ({describe(r)}, priority {r.priority}) wins packets of `{rule.id}`", r.loc) for r in cover
        )
        return Raw(
            Finding("shadowed", msg, rule.loc, rule=rule.id, related=related, witness=str(packet_of(point))),
            on=(rule.id,),
            partners=tuple(ids),
        )

    def _redundant(self, ri: int) -> Raw:
        s = self.s
        rule = s.rules[ri]
        takers: set[int | None] = set()
        witness = None
        pieces = 0
        for a in s.rule_atoms[ri]:
            for piece, _, succ in regions.partition(s.boxes[a], [], s.worse(a), ri):
                pieces += 1
                if pieces >= PIECE_CAP:
                    break
                if succ in takers:
                    continue
                point = pick_point(piece)
                win = s.winner(point)
                # the piece's successor holds at the point only if atom a
                # itself decides it (a better atom of the rule would have
                # its own successors)
                if win != a and not (s.arule[win] == ri and rank_key(s.atoms[win]) == rank_key(s.atoms[a])):  # type: ignore[index]
                    free = regions.find_free(piece, s.better(a))
                    if free is None:
                        continue  # blocked: the rule does not decide this piece
                    point = pick_point(free)
                takers.add(succ)
                if witness is None:
                    witness = point
            if pieces >= PIECE_CAP:
                break
        if witness is None:
            raise AssertionError(f"redundant rule {rule.id} has no packet it wins")
        win = s.first_match(witness, also=(ri,))
        nxt = s.first_match(witness, skip_rule=ri)
        if win is None or s.arule[win] != ri:
            raise AssertionError(f"witness for redundant {rule.id}: the rule does not win it")
        if (s.akeys[s.arule[nxt]] if nxt is not None else self.default_key) != s.akeys[ri]:
            raise AssertionError(f"witness for redundant {rule.id}: the action would change")
        via_default = None in takers
        others = _by_place([s.rules[t] for t in takers if t is not None])
        ids = [r.id for r in others]
        parts = []
        if ids:
            parts.append(f"{_names(ids)} (ranked after it, same action)")
        if via_default:
            parts.append(f"the default action {self.default.name}")
        more = " (and possibly others: the search was cut short)" if pieces >= PIECE_CAP else ""
        msg = (
            f"rule `{rule.id}` ({describe(rule)}) is redundant: removing it changes no packet's action; "
            f"the packets it wins would go to {' and to '.join(parts)}{more}"
        )
        related = tuple(Related(f"`{r.id}` ({describe(r)}) would take its packets", r.loc) for r in others)
        return Raw(
            Finding("redundant", msg, rule.loc, rule=rule.id, related=related, witness=str(packet_of(witness))),
            on=(rule.id,),
            partners=tuple(ids),
            via_default=via_default,
        )

    # --- pairs ----------------------------------------------------------------

    def pairs(self) -> list[Finding]:
        """Pairwise findings, already filtered by the suppressions."""
        s = self.s
        arule, akeys, boxes, dsts, srcs = s.arule, s.akeys, s.boxes, s.dsts, s.srcs
        shadowed, rules = self.shadowed, s.rules
        by_action: dict[Action, object] = {}
        found: dict[int, dict[int, str | None]] = {}  # loser -> partner -> code (None: silenced)
        counts: dict[int, int] = {}
        capped: set[int] = set()
        retries: dict[int, list[tuple[int, int]]] = {}
        for x in s.order:
            L = arule[x]
            act = rules[L].action
            if L not in shadowed and L not in capped:
                kL = akeys[L]
                got = found.setdefault(L, {})
                for other, idx in by_action.items():
                    if other is act and act is not Action.RATE_LIMIT:
                        continue
                    for y in idx.meeting(boxes[x], dsts[x], srcs[x]):  # type: ignore[attr-defined]
                        H = arule[y]
                        if H in got or akeys[H] == kL or H in shadowed:
                            continue
                        if arule[s.winner(pick_point(intersection(boxes[x], boxes[y])))] == H:  # type: ignore[arg-type,index]
                            self._take(L, H, got, counts, capped)
                            if L in capped:
                                break
                        else:
                            retries.setdefault(L, []).append((x, y))
                    if L in capped:
                        break
            idx = by_action.get(act)
            if idx is None:
                idx = by_action[act] = s.new_index()
            idx.add(x)  # type: ignore[attr-defined]
        for L, tries in retries.items():
            got = found[L]
            for x, y in tries:
                if L in capped:
                    break
                H = arule[y]
                if H not in got and self._exact_take(x, y) is not None:
                    self._take(L, H, got, counts, capped)
        out = []
        for L in sorted(found):
            partners = {H: code for H, code in found[L].items() if code is not None}
            if partners:
                out += self._pair_findings(L, partners, L in capped)
        return out

    def _exact_take(self, x: int, y: int) -> tuple | None:
        """A piece of x∩y that y's rule wins (atom y ranked before x)."""
        s = self.s
        region = intersection(s.boxes[x], s.boxes[y])
        if region is None:
            return None
        ry, H, arank, arule, items = s.arank[y], s.arule[y], s.arank, s.arule, s.items
        js = sorted((j for j in s.meeting_both(x, y, region) if arank[j] < ry and arule[j] != H), key=arank.__getitem__)
        return regions.find_free(region, [items[j] for j in js])

    def _take(self, L: int, H: int, got: dict, counts: dict, capped: set) -> None:
        """Record that rule H takes some of rule L's packets."""
        rules = self.s.rules
        code = self._pair_code(L, H)
        silencing = self.sup.code(rules[L].id, code) + self.sup.acks(rules[L].id, rules[H].id)
        if silencing:
            self.sup.used.update(silencing)
            got[H] = None
            return
        got[H] = code
        counts[L] = counts.get(L, 0) + 1
        if counts[L] >= PAIR_CAP and not self._pending_code_suppressions(L):
            capped.add(L)

    def _pending_code_suppressions(self, L: int) -> bool:
        rule = self.s.rules[L]
        return any(c in rule.suppress and (rule.id, "code:" + c) not in self.sup.used for c in PAIR_CODES)

    def _pair_code(self, L: int, H: int) -> str:
        lo, hi = self.s.rules[L], self.s.rules[H]
        if lo.priority == hi.priority:
            return "conflict"
        if lo.priority > hi.priority:
            raise AssertionError(f"{hi.id} takes packets of the higher-priority {lo.id}")
        return "generalization" if self._contains(L, H) else "correlation"

    def _contains(self, outer: int, inner: int) -> bool:
        """Whether rule `outer`'s match space contains rule `inner`'s."""
        s = self.s
        outer_items = [s.items[j] for j in s.rule_atoms[outer]]
        return all(regions.find_free(s.boxes[a], outer_items) is None for a in s.rule_atoms[inner])

    def pair_witness(self, L: int, H: int) -> tuple | None:
        """A packet of L's that H wins, found the same way whatever the
        index: probes over the atom pairs in rank order, then exactly."""
        s = self.s
        arank, boxes = s.arank, s.boxes
        cands = [
            (x, y)
            for x in s.rule_atoms[L]
            for y in s.rule_atoms[H]
            if arank[y] < arank[x] and intersects(boxes[x], boxes[y])
        ]
        for x, y in cands:
            point = pick_point(intersection(boxes[x], boxes[y]))  # type: ignore[arg-type]
            if s.arule[s.winner(point)] == H:  # type: ignore[index]
                return point
        for x, y in cands:
            piece = self._exact_take(x, y)
            if piece is not None:
                return pick_point(piece)
        return None

    def _pair_findings(self, L: int, partners: dict[int, str], capped: bool) -> list[Finding]:
        s = self.s
        lo = s.rules[L]
        out = []
        for code in PAIR_CODES:
            hs = _by_place([s.rules[H] for H, c in partners.items() if c == code])
            if not hs:
                continue
            related, first_pkt, notes = [], None, []
            for hi in hs:
                H = self.rule_idx[hi.id]
                point = self.pair_witness(L, H)
                if point is None:
                    raise AssertionError(f"no witness for {hi.id} taking packets of {lo.id}")
                win = s.first_match(point, also=(L, H))
                mine = s.first_match(point, only_rule=L, also=(L,))
                if win is None or s.arule[win] != H or mine is None:
                    raise AssertionError(f"witness for {hi.id} over {lo.id} does not hold")
                pkt = str(packet_of(point))
                first_pkt = first_pkt or pkt
                if code == "conflict":
                    ws, ls = specificity(s.atoms[win]), specificity(s.atoms[mine])
                    why = f"specificity {ws} > {ls}" if ws != ls else f"id `{hi.id}` < `{lo.id}`"
                    notes.append(f"`{hi.id}` ({why})")
                    text = f"`{hi.id}` ({describe(hi)}) wins by tie-break ({why}), e.g. `{pkt}`"
                else:
                    notes.append(f"`{hi.id}` ({describe(hi)}, priority {hi.priority})")
                    text = f"`{hi.id}` ({describe(hi)}, priority {hi.priority}) takes its packets, e.g. `{pkt}`"
                related.append(Related(text, hi.loc))
            shown = ", ".join(notes[:_NAMES_IN_MESSAGE])
            if len(notes) > _NAMES_IN_MESSAGE:
                shown += f" and {len(notes) - _NAMES_IN_MESSAGE} more"
            if capped:
                shown += f" (the first {PAIR_CAP} rules found are named; there may be more)"
            if code == "conflict":
                msg = (
                    f"rule `{lo.id}` ({describe(lo)}) overlaps rules with a different action at equal priority "
                    f"{lo.priority}, where only the tie-break decides: {shown}; e.g. `{first_pkt}` goes to `{hs[0].id}`"
                )
            elif code == "correlation":
                msg = (
                    f"rule `{lo.id}` ({describe(lo)}, priority {lo.priority}) partially overlaps higher-priority "
                    f"rules with a different action, which take those packets: {shown}"
                )
            else:
                msg = (
                    f"rule `{lo.id}` ({describe(lo)}, priority {lo.priority}) generalizes higher-priority rules "
                    f"with a different action (exceptions inside it): {shown}"
                )
            out.append(Finding(code, msg, lo.loc, rule=lo.id, related=tuple(related), witness=first_pkt))
        return out

    def acknowledged_pair_exists(self, a: str, b: str) -> bool:
        """Whether an allow_overlap between a and b has anything to
        silence: one takes packets of the other (different actions, neither
        shadowed). Used for entries the capped pair search never reached."""
        s = self.s
        A, B = self.rule_idx.get(a), self.rule_idx.get(b)
        if A is None or B is None or s.akeys[A] == s.akeys[B] or A in self.shadowed or B in self.shadowed:
            return False
        return self.pair_witness(A, B) is not None or self.pair_witness(B, A) is not None

    # --- unreachable default ---------------------------------------------------

    def unreachable_default(self) -> list[Raw]:
        s = self.s
        if not s.boxes:
            return []
        probes = [
            pick_point(FULL),
            (N_CLASSES - 1, 0xFFFFFFFE, 0xFFFFFFFE, 0xFFFE, 0xFFFE),
            (0, 1, 1, 1, 1),
        ]
        if any(s.winner(p) is None for p in probes):
            return []
        catch_all = [i for i in range(len(s.boxes)) if s.boxes[i] == FULL]
        if not catch_all and regions.find_free(FULL, s.items) is not None:
            return []
        if catch_all:
            best = min(catch_all, key=s.arank.__getitem__)
            rule = s.rules[s.arule[best]]
            msg = f"rule `{rule.id}` matches every packet, so the default action {self.default.name} is never used"
            return [Raw(Finding("unreachable-default", msg, rule.loc, rule=rule.id), on=(rule.id,))]
        msg = f"the live rules together match every packet, so the default action {self.default.name} is never used"
        return [Raw(Finding("unreachable-default", msg, Location(self.root)))]
