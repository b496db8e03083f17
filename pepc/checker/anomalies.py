"""The anomaly searches.

Definitions (on the rank order of docs/semantics.md; only live rules take part):

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
  partners, at most PAIR_CAP of them per tier (equal / higher priority;
  the message says when there may be more): a block list that overlaps every service rule is one finding per
  rule, not one per pair.
- never-matches: atoms with a port constraint and protocol ICMP or ICMPV6.
- unreachable-default: the union of all live atoms is every packet the
  default decides (both families; the guarded ICMPv6 packets aside).

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

from pepc.checker import regions, workers
from pepc.checker.geometry import (
    CORNERS,
    DEFAULTED,
    N_CLASSES,
    by_fallback,
    contains_point,
    covers,
    intersection,
    intersects,
    is_guarded,
    packet_of,
    pick_point,
    sample_points,
)
from pepc.checker.space import ActionKey, Space
from pepc.checker.space import default_key as _key_of_default
from pepc.policy.diagnostics import Finding, Related
from pepc.policy.model import Action, Location, Rule
from pepc.policy.semantics import rank_key, specificity

#: Partner rules a pairwise finding names per losing rule.
PAIR_CAP = 5
#: Later atoms with another action a rule's probes try before the exact search.
PROBES = 16
#: Random points per atom its first probes try besides the readable one.
SAMPLES = 4
#: Later atoms of another action probed (in rank order) before an exact
#: search for a changed decision.
EXACT_PROBES = 16
#: Pieces the search for related rules of one finding may visit.
PIECE_CAP = 2000
#: Atoms ranked before a shadowed atom and meeting it beyond which its winners are named from
#: probes instead of an exhaustive partition.
BETTER_CAP = 256
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


#: the taker of a redundant rule's guarded ICMPv6 packets: the lockout guard
_GUARD = -1


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
    def __init__(
        self,
        space: Space,
        default: Action,
        default_key: ActionKey,
        root: str,
        sup: Suppressions,
        rule_idx: dict[str, int] | None = None,
    ):
        self.s = space
        self.default = default
        self.default_key = default_key
        self.root = root
        self.sup = sup
        self.shadowed: set[int] = set()
        self.rule_idx = rule_idx if rule_idx is not None else {r.id: i for i, r in enumerate(space.rules)}
        #: what decides a guarded ICMPv6 packet no rule matches: it passes
        self.guard_key = _key_of_default(Action.ALLOW)

    def fallback_key(self, point: tuple) -> ActionKey:
        """The action of a packet at `point` that no rule matches: the
        default's, or for a packet the lockout guard protects, ALLOW's."""
        return self.guard_key if is_guarded(point) else self.default_key

    # --- never-matches ------------------------------------------------------

    def never_matches(self, only: list[int] | None = None) -> list[Raw]:
        out = []
        for ri in range(len(self.s.rules)) if only is None else only:
            rule = self.s.rules[ri]
            if not self.s.dead_atoms[ri]:
                continue
            field = "dst.port" if any(not p.is_any for p in rule.dports) else "src.port"
            if not self.s.rule_atoms[ri]:
                msg = (
                    f"rule `{rule.id}` can never match: it has a port constraint but protocol {rule.protocol.name}, "
                    f"and {rule.protocol.name} packets carry no ports"
                )
            else:
                msg = (
                    f"part of rule `{rule.id}` can never match: its port items other than `any` "
                    f"need ports, and {rule.protocol.name} packets carry none"
                )
            out.append(Raw(Finding("never-matches", msg, rule.loc_of(field), rule=rule.id), on=(rule.id,)))
        return out

    # --- shadowed / redundant ------------------------------------------------

    def coverage(self, part: tuple[int, int] = (0, 1)) -> list[Raw]:
        """Shadowed and redundant rules (of the rules in slice part = (k, m),
        see workers.owns: each rule's verdict is its own, so the slices can
        be computed apart and merged).

        1. One readable packet per atom: where the rule wins it and the
           next rule (or the default) acts differently, the rule matters.
        2. For the rules still open, the later atoms of another action
           meeting theirs (up to the first later atom that hides the whole
           atom: nothing after it decides there), the only ones that can
           make them matter; a packet in each of the first PROBES of them
           is tried. (A rule no probe saw win whose every atom lies inside
           one box ranked before it is shadowed: it skips to its finding.)
        3. Exact region search (regions.py) for what is still open.
        """
        s = self.s
        akeys, arule, boxes, rules = s.akeys, s.arule, s.boxes, s.rules
        fallback = self.fallback_key
        n = len(rules)
        free: list[tuple | None] = [None] * n  # a point where the rule wins
        pending: set[int] = set()
        for ri in range(n):
            if s.rule_atoms[ri] and workers.owns(part, ri) and not self._probe_atoms(ri, free):
                pending.add(ri)
        worse_diff = [False] * n
        covered: set[int] = set()
        probes = dict.fromkeys(pending, PROBES)
        for ri in sorted(pending):
            if free[ri] is None and self._covered(ri):
                # no probe saw it win, and it is shadowed: no need to probe
                # the atoms after it
                covered.add(ri)
                continue
            mykey = akeys[ri]
            for a in s.rule_atoms[ri]:
                # lazily: a wide atom's successors are thousands, and the
                # first PROBES of them usually settle it
                for w in s.later(a):
                    if akeys[arule[w]] == mykey:
                        continue
                    worse_diff[ri] = True
                    if probes[ri] <= 0:
                        break
                    probes[ri] -= 1
                    meet = intersection(boxes[a], boxes[w])
                    for point in (pick_point(meet), *sample_points(meet, 1)):  # type: ignore[arg-type]
                        win, nxt = s.decide(point, ri)
                        if arule[win] == ri:
                            free[ri] = free[ri] or point
                            if (akeys[arule[nxt]] if nxt is not None else fallback(point)) != mykey:
                                pending.discard(ri)
                                break
                    if ri not in pending:
                        break
                if ri not in pending or probes[ri] <= 0:
                    break
        out: list[Raw] = []
        for ri in sorted(pending):
            self._settle(ri, free[ri], worse_diff[ri], out, "shadowed" if ri in covered else None)
        return out

    def _settle(self, ri: int, free: tuple | None, worse_diff: bool, out: list[Raw], verdict: tuple | str | None = None) -> None:
        """Step 3 for one rule the probes left open: the exact search
        (unless the `verdict` is known), and its finding (if any) appended
        to `out`."""
        verdict = verdict or self._exact(ri, free, worse_diff)
        if verdict == "shadowed":
            self.shadowed.add(ri)
            out.append(self._shadowed(ri))
        elif verdict is not None:
            out.append(self._redundant(ri, verdict))

    def coverage_of(self, only: list[int], redundant: bool = True) -> list[Raw]:
        """coverage() for the rules `only` (indexes): the same verdicts,
        found by the probes and the exact search alone (the sweep of
        coverage() only spares exact searches across a whole policy).
        `redundant=False`: only shadowed rules are wanted, so a rule found
        winning some packet is done with."""
        free: dict[int, tuple | None] = dict.fromkeys(only)
        out: list[Raw] = []
        for ri in only:
            if not self.s.rule_atoms[ri] or self._probe_atoms(ri, free):  # type: ignore[arg-type]
                continue
            if not redundant and free[ri] is not None:
                continue
            self._settle(ri, free[ri], True, out)
        return out

    def _probe_atoms(self, ri: int, free: list) -> bool:
        """Step 1: whether a readable packet shows that rule ri matters."""
        s = self.s
        akeys, arule, mykey = s.akeys, s.arule, s.akeys[ri]
        for sampled in (False, True):
            for a in s.rule_atoms[ri]:
                points = sample_points(s.boxes[a], SAMPLES) if sampled else (pick_point(s.boxes[a]),)
                for point in points:
                    win, nxt = s.decide(point, ri)
                    if arule[win] == ri:
                        free[ri] = free[ri] or point
                        if (akeys[arule[nxt]] if nxt is not None else self.fallback_key(point)) != mykey:
                            return True
        return False

    def _matters_at_successors(self, ri: int) -> bool:
        """Whether a probe where a later atom of another action begins to
        decide shows the rule matters: the first EXACT_PROBES of them in
        rank order (the likeliest successors), a readable point in each. Far cheaper than find_bad over a wide atom's
        thousands of better neighbours; where it fails, find_bad decides."""
        s = self.s
        arule, akeys, boxes, mykey = s.arule, s.akeys, s.boxes, s.akeys[ri]
        for a in s.rule_atoms[ri]:
            tried = 0
            for w in s.worse(a):
                if akeys[w[10]] == mykey:
                    continue
                tried += 1
                if tried > EXACT_PROBES:
                    break
                meet = intersection(boxes[a], w)
                for point in (pick_point(meet),):  # type: ignore[arg-type]
                    win, nxt = s.decide(point, ri)
                    if arule[win] == ri and (akeys[arule[nxt]] if nxt is not None else self.fallback_key(point)) != mykey:
                        return True
        return False

    def _covered(self, ri: int) -> bool:
        """Whether every atom of the rule lies inside one box of another
        rule ranked before it: shadowed, decided without the atoms around
        it (a wide rule under a catch-all meets every rule of the policy)."""
        return all(self.s.cover_of(a) is not None for a in self.s.rule_atoms[ri])

    def _exact(self, ri: int, free: tuple | None, worse_diff: bool) -> tuple | str | None:
        """None (the rule decides some packet), "shadowed", or for a
        redundant rule a point where it wins."""
        s = self.s
        akeys, boxes, own = s.akeys, s.boxes, s.rule_atoms[ri]
        mykey, dkey = akeys[ri], self.default_key
        if self._covered(ri):
            return "shadowed"
        if free is None:
            # no probe saw it win: most such rules are shadowed, which the
            # search for a free piece proves faster than find_bad
            for a in own:
                piece = regions.find_free(boxes[a], s.better(a))
                if piece is not None:
                    free = pick_point(piece)
                    break
            else:
                return "shadowed"
        # without a later atom of another action, and the default acting
        # alike, no packet the rule wins can change: skip the search
        # (unmatched guarded ICMPv6 packets fall to the lockout guard, not
        # to the default: each part of a box is searched with its fallback)
        parts = [(a, part, (self.guard_key if guarded else dkey) == mykey) for a in own for part, guarded in by_fallback(boxes[a])]
        if worse_diff or not all(same for _, _, same in parts):
            if self._matters_at_successors(ri):
                return None

            def is_same(w: tuple) -> bool:
                return akeys[w[10]] == mykey

            for a, part, same in parts:
                if regions.find_bad(part, s.better(a), s.worse(a), is_same, same) is not None:
                    return None
        for a in own:
            if free is not None:
                break
            piece = regions.find_free(boxes[a], s.better(a))
            free = pick_point(piece) if piece is not None else None
        return free if free is not None else "shadowed"

    def _shadowed(self, ri: int) -> Raw:
        s = self.s
        rule = s.rules[ri]
        winners: set[int] = set()
        witness = None
        pieces = 0
        if any(s.better_exceeds(a, BETTER_CAP) for a in s.rule_atoms[ri]):
            # Too many rules around it to name every winner: name those of
            # a few probes, and say the list is cut short.
            winners, witness = self._probe_winners(ri)
            pieces = PIECE_CAP
        for a in s.rule_atoms[ri] if witness is None else ():
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
        judged = s.judge(point, also=(ri, claimed))
        win = s.first_of(judged)
        if win is None or s.arule[win] != claimed or s.first_of(judged, rule=ri) is None:
            raise AssertionError(f"witness for shadowed {rule.id} does not hold")
        cover = _by_place([s.rules[w] for w in winners])
        ids = [r.id for r in cover]
        more = " (and possibly others: the search was cut short)" if pieces >= PIECE_CAP else ""
        msg = (
            f"rule `{rule.id}` can never win: every packet it matches goes to a rule ranked "
            f"before it ({_names(ids)}){more}"
        )
        related = tuple(
            Related(f"`{r.id}` ({describe(r)}, priority {r.priority}) wins packets of `{rule.id}`", r.loc, r.id) for r in cover
        )
        return Raw(
            Finding("shadowed", msg, rule.loc, rule=rule.id, related=related, witness=str(packet_of(point))),
            on=(rule.id,),
            partners=tuple(ids),
        )

    def _probe_winners(self, ri: int) -> tuple[set[int], tuple]:
        """For a shadowed rule: the rules winning a few of its packets (a
        readable one, the corners of each atom, and one inside the box of
        the atom covering it, if any), and the first as (point, rule)."""
        s = self.s
        winners: set[int] = set()
        witness = None
        for a in s.rule_atoms[ri]:
            b = s.boxes[a]
            points = [pick_point(b), (b[0], b[2], b[4], b[6], b[8]), (b[1], b[3], b[5], b[7], b[9])]
            cover = s.cover_of(a)
            if cover is not None:
                points.append(pick_point(intersection(b, s.boxes[cover])))  # type: ignore[arg-type]
            for point in points:
                win = s.arule[s.winner(point)]  # type: ignore[index]
                if win == ri:
                    raise AssertionError(f"rule {s.rules[ri].id} is shadowed but wins {point}")
                winners.add(win)
                if witness is None:
                    witness = (point, win)
        return winners, witness  # type: ignore[return-value]

    def _redundant(self, ri: int, known: tuple) -> Raw:
        """`known`: a point the rule wins, the witness if the search for
        the rules taking over is cut short before it finds one."""
        s = self.s
        rule = s.rules[ri]
        takers: set[int | None] = set()
        witness = None
        pieces = 0
        # the guarded part of a box falls to the lockout guard, the rest to
        # the default: partitioned apart, each piece has one fallback
        for a, part, guarded in ((a, p, g) for a in s.rule_atoms[ri] for p, g in by_fallback(s.boxes[a])):
            for piece, _, succ in regions.partition(part, [], s.worse(a), ri):
                pieces += 1
                if pieces >= PIECE_CAP:
                    break
                if succ is None and guarded:
                    succ = _GUARD
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
            witness = known
        judged = s.judge(witness, also=(ri,))
        win, nxt = s.first_of(judged), s.first_of(judged, skip_rule=ri)
        if win is None or s.arule[win] != ri:
            raise AssertionError(f"witness for redundant {rule.id}: the rule does not win it")
        if (s.akeys[s.arule[nxt]] if nxt is not None else self.fallback_key(witness)) != s.akeys[ri]:
            raise AssertionError(f"witness for redundant {rule.id}: the action would change")
        via_guard = _GUARD in takers
        via_default = None in takers
        others = _by_place([s.rules[t] for t in takers if t is not None and t != _GUARD])
        ids = [r.id for r in others]
        parts = []
        if ids:
            parts.append(f"{_names(ids)} (ranked after it, same action)")
        if via_default:
            parts.append(f"the default action {self.default.name}")
        if via_guard:
            parts.append("the lockout guard, which passes the ICMPv6 neighbour discovery, MLD and packet-too-big messages no rule matches")
        more = " (and possibly others: the search was cut short)" if pieces >= PIECE_CAP else ""
        msg = (
            f"rule `{rule.id}` ({describe(rule)}) is redundant: removing it changes no packet's action; "
            f"the packets it wins would go to {' and to '.join(parts)}{more}"
        )
        related = tuple(Related(f"`{r.id}` ({describe(r)}) would take its packets", r.loc, r.id) for r in others)
        return Raw(
            Finding("redundant", msg, rule.loc, rule=rule.id, related=related, witness=str(packet_of(witness))),
            on=(rule.id,),
            partners=tuple(ids),
            via_default=via_default or via_guard,
        )

    # --- pairs ----------------------------------------------------------------

    def pairs(self, part: tuple[int, int] = (0, 1)) -> list[Finding]:
        """Pairwise findings, already filtered by the suppressions, of the
        losing rules in slice part = (k, m), see workers.owns (what a rule
        loses depends on the atoms ranked before it, not on the other
        losers, so the slices can be computed apart and merged).

        The sweep goes down the rank order. `seen` holds every atom ranked
        before the current one, `same` those of the current priority
        (candidates for `conflict`; the others are for `correlation` /
        `generalization`), each split by action so that a rule never looks
        at candidates with its own action. The two tiers are capped apart,
        so that a rule that loses to many higher-priority rules still shows
        its tie-break conflicts: once the higher tier is capped, the rest of
        the equal one comes from `same`.
        """
        s = self.s
        arule, akeys, boxes, dsts, srcs, rules = s.arule, s.akeys, s.boxes, s.dsts, s.srcs, s.rules
        shadowed = self.shadowed
        seen: dict[Action, object] = {}  # every atom ranked before the current one
        same: dict[Action, object] = {}  # those of the current priority
        level_prio = None
        found: dict[int, dict[int, str | None]] = {}  # loser -> partner -> code (None: silenced)
        counts: dict[tuple[int, int], int] = {}
        capped: set[tuple[int, int]] = set()  # (loser, tier)
        retries: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for x in s.order:
            L = arule[x]
            rule = rules[L]
            act = rule.action
            prio = rule.priority
            if prio != level_prio:
                same, level_prio = {}, prio
            if L not in shadowed and workers.owns(part, L):
                kL = akeys[L]
                got = found.setdefault(L, {})
                # both tiers open: one query of everything seen finds both;
                # once the higher tier is capped, the rest of the equal one
                # comes from its own (small) index
                for indexes, stop in ((seen, (L, 1)), (same, (L, 0))):
                    if (L, 0) in capped and (L, 1) in capped:
                        break
                    if stop in capped:
                        continue
                    for other, idx in indexes.items():
                        if other is act and act is not Action.RATE_LIMIT:
                            continue
                        for y in idx.meeting(boxes[x], dsts[x], srcs[x]):  # type: ignore[attr-defined]
                            H = arule[y]
                            if H in got or akeys[H] == kL or H in shadowed:
                                continue
                            tier = 0 if rules[H].priority == prio else 1
                            if (L, tier) in capped:
                                continue
                            point = pick_point(intersection(boxes[x], boxes[y]))  # type: ignore[arg-type]
                            if arule[s.winner(point)] == H:  # type: ignore[index]
                                if len(s.rule_atoms[H]) > 1:
                                    point = self._first_taken(x, H)
                                self._take(L, H, tier, got, counts, capped, point)
                                if stop in capped:
                                    break
                            else:
                                retries.setdefault((L, tier), []).append((x, y))
                        if stop in capped:
                            break
                    if indexes is seen and stop not in capped:
                        break  # the query of everything seen saw the equal tier whole
            self._insert(seen, act, x)
            self._insert(same, act, x)
        for (L, tier), tries in retries.items():
            got = found[L]
            for x, y in tries:
                if (L, tier) in capped:
                    break
                H = arule[y]
                if H not in got and self._exact_take(x, y) is not None:
                    self._take(L, H, tier, got, counts, capped, None)
        out = []
        for L in sorted(found):
            partners = {H: got for H, got in found[L].items() if got is not None}
            if partners:
                out += self._pair_findings(L, partners, {tier for tier in (0, 1) if (L, tier) in capped})
        return out

    def _insert(self, indexes: dict, action: Action, atom: int) -> None:
        idx = indexes.get(action)
        if idx is None:
            idx = indexes[action] = self.s.new_index()
        idx.add(atom)

    def _exact_take(self, x: int, y: int) -> tuple | None:
        """A piece of x∩y that y's rule wins (atom y ranked before x)."""
        s = self.s
        region = intersection(s.boxes[x], s.boxes[y])
        if region is None:
            return None
        ry, H, arank, arule, items = s.arank[y], s.arule[y], s.arank, s.arule, s.items
        js = sorted((j for j in s.meeting_both(x, y, region) if arank[j] < ry and arule[j] != H), key=arank.__getitem__)
        return regions.find_free(region, [items[j] for j in js])

    def _first_taken(self, x: int, H: int) -> tuple:
        """The probe point of the first of H's atoms (rank order) that
        takes packets of atom x: the same whatever order the index
        returned H's atoms in."""
        s = self.s
        bx, rx = s.boxes[x], s.arank[x]
        for y in s.rule_atoms[H]:
            if s.arank[y] < rx and intersects(bx, s.boxes[y]):
                point = pick_point(intersection(bx, s.boxes[y]))  # type: ignore[arg-type]
                if s.arule[s.winner(point)] == H:  # type: ignore[index]
                    return point
        raise AssertionError("no atom of the rule takes the packet it was found taking")

    def _take(self, L: int, H: int, tier: int, got: dict, counts: dict, capped: set, point: tuple | None) -> None:
        """Record that rule H takes some of rule L's packets."""
        rules = self.s.rules
        code = self._pair_code(L, H)
        silencing = self.sup.code(rules[L].id, code) + self.sup.acks(rules[L].id, rules[H].id)
        if silencing:
            self.sup.used.update(silencing)
            got[H] = None
            return
        got[H] = (code, point)
        n = counts[(L, tier)] = counts.get((L, tier), 0) + 1
        if n >= PAIR_CAP and not self._pending_code_suppressions(L):
            capped.add((L, tier))

    def _pending_code_suppressions(self, L: int) -> bool:
        """A `suppress:` entry of a pair code on L that nothing used yet: the
        search goes on so that it is not reported unused wrongly."""
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
        for a in s.rule_atoms[inner]:
            box = s.boxes[a]
            if any(covers(o, box) for o in outer_items):
                continue
            point = pick_point(box)
            if not any(contains_point(o, point) for o in outer_items):
                return False
            if regions.find_free(box, outer_items) is not None:
                return False
        return True

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

    def _pair_findings(self, L: int, partners: dict[int, tuple], capped_tiers: set[int]) -> list[Finding]:
        s = self.s
        lo = s.rules[L]
        out = []
        for code in PAIR_CODES:
            hs = _by_place([s.rules[H] for H, (c, _) in partners.items() if c == code])
            if not hs:
                continue
            related, first_pkt, notes = [], None, []
            for hi in hs:
                H = self.rule_idx[hi.id]
                point = partners[H][1] or self.pair_witness(L, H)
                if point is None:
                    raise AssertionError(f"no witness for {hi.id} taking packets of {lo.id}")
                if first_pkt is None:
                    # the finding's witness: confirmed by the semantics
                    judged = s.judge(point, also=(L, H))
                    win, mine = s.first_of(judged), s.first_of(judged, rule=L)
                    if win is None or s.arule[win] != H or mine is None:
                        raise AssertionError(f"witness for {hi.id} over {lo.id} does not hold")
                    first_pkt = str(packet_of(point))
                elif code == "conflict":  # the tie-break is told from the atoms at the point
                    win, mine = s.winner(point), s.first_own(point, L)
                if code == "conflict":
                    ws, ls = specificity(s.atoms[win]), specificity(s.atoms[mine])
                    why = f"specificity {ws} > {ls}" if ws != ls else f"id `{hi.id}` < `{lo.id}`"
                    notes.append(f"`{hi.id}` ({why})")
                    text = f"`{hi.id}` ({describe(hi)}) wins by tie-break ({why})"
                else:
                    notes.append(f"`{hi.id}` ({describe(hi)}, priority {hi.priority})")
                    text = f"`{hi.id}` ({describe(hi)}, priority {hi.priority}) takes some of its packets"
                related.append(Related(text, hi.loc, hi.id))
            shown = ", ".join(notes[:_NAMES_IN_MESSAGE])
            if len(notes) > _NAMES_IN_MESSAGE:
                shown += f" and {len(notes) - _NAMES_IN_MESSAGE} more"
            if (0 if code == "conflict" else 1) in capped_tiers:
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
        # the default decides the unmatched packets of both families (the
        # guarded ICMPv6 ones aside): a v4-only catch-all leaves v6 to it
        probes = [pick_point(d) for d in DEFAULTED] + list(CORNERS)
        if any(s.winner(p) is None for p in probes):
            return []
        whole: dict[int, list[int]] = {}  # rule -> its atoms that cover a part of DEFAULTED
        for i, box in enumerate(s.boxes):
            if any(covers(box, d) for d in DEFAULTED):
                whole.setdefault(s.arule[i], []).append(i)
        catch_all = [
            min(atoms, key=s.arank.__getitem__)
            for ri, atoms in whole.items()
            if all(any(covers(s.boxes[i], d) for i in atoms) for d in DEFAULTED)
        ]
        if not catch_all and any(regions.find_free(d, s.items) is not None for d in DEFAULTED):
            return []
        if catch_all:
            best = min(catch_all, key=s.arank.__getitem__)
            rule = s.rules[s.arule[best]]
            msg = f"rule `{rule.id}` matches every packet, so the default action {self.default.name} is never used"
            return [Raw(Finding("unreachable-default", msg, rule.loc, rule=rule.id), on=(rule.id,))]
        msg = f"the live rules together match every packet, so the default action {self.default.name} is never used"
        return [Raw(Finding("unreachable-default", msg, Location(self.root)))]
