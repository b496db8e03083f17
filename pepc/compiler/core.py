"""Policy -> Program: atoms, tuple-space keys, ranks, masks and slots.

The compiler is pure and deterministic in (policy, config, now, previous):
rules are visited in id order, keys are sorted, and order keys and slots
come from `assign`, so file order and dict order never leak into output.
"""

from __future__ import annotations

import hashlib
from operator import attrgetter
from functools import lru_cache
from bisect import bisect_left, insort
import weakref
from itertools import count
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

from pepc.compiler import layout
from pepc.policy import gcpause
from pepc.compiler import pack
from pepc.compiler.assign import KEY_SPACE, _fits, _spread, assign_order_keys, assign_slots
from pepc.compiler.ports import port_prefixes
from pepc.policy.config import Config
from pepc.policy.diagnostics import Finding, PolicyError, Related
from pepc.policy.model import Action, Location, Policy, Protocol, Rule, rule_changes
from pepc.compiler.program import KEY6_SIZE, Mask, MaskShape, Program, ProgramDelta, SlotInfo
from pepc.policy.semantics import SPEC_PROTOCOL, SPEC_SINGLE_PORT

_TCP, _UDP, _ANY = Protocol.TCP.value, Protocol.UDP.value, Protocol.ANY


@dataclass(frozen=True)
class Assignments:
    """What must stay stable from one plan to the next: slot and order key
    of every rule id."""

    slots: Mapping[str, int] = field(default_factory=dict)
    order_keys: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_program(cls, program: Program) -> "Assignments":
        return cls(
            slots={s.rule_id: s.slot for s in program.slots},
            order_keys={s.rule_id: s.order_key for s in program.slots},
        )

    @classmethod
    def from_plan_json(cls, plan: Mapping[str, Any]) -> "Assignments":
        """From a parsed plan.json (its `rules` table). Raises ValueError
        when the table is not shaped like one pepc writes."""
        rules = plan.get("rules") if isinstance(plan, Mapping) else None
        if not isinstance(rules, list):
            raise ValueError("no `rules` list")
        slots: dict[str, int] = {}
        keys: dict[str, int] = {}
        for i, r in enumerate(rules):
            if not isinstance(r, Mapping):
                raise ValueError(f"rules[{i}] is not an object")
            rid, slot, key = r.get("id"), r.get("slot"), r.get("order_key")
            if not isinstance(rid, str) or type(slot) is not int or type(key) is not int:
                raise ValueError(f"rules[{i}] needs a string `id` and integer `slot` and `order_key`")
            if rid in slots:
                raise ValueError(f"rules[{i}]: id {rid!r} appears twice")
            slots[rid], keys[rid] = slot, key
        return cls(slots=slots, order_keys=keys)


@dataclass(frozen=True)
class RuleStats:
    atoms: int
    entries: int


def _config_loc(config: Config, key: str) -> Location | None:
    """Where `capacities.<key>` is set in the config file (the file itself
    when the key is absent, None without a file)."""
    if not config.source:
        return None
    here = Location(config.source)
    try:
        from pepc.loader.files import read_and_parse

        parsed = read_and_parse(config.source, config.source)
        doc = parsed.docs[0].value if parsed.docs else None
        caps = doc.get("capacities") if isinstance(doc, dict) else None
        if isinstance(caps, dict) and key in caps:
            return parsed.marks.key_loc(caps, key, (1, 1))
        if isinstance(doc, dict) and "capacities" in doc:
            return parsed.marks.key_loc(doc, "capacities", (1, 1))
    except Exception:  # the location is a courtesy; the error stands without it
        return here
    return here


def _capacity_error(message: str, loc: Location, related: list[Related], rule: str | None = None) -> PolicyError:
    return PolicyError([Finding("capacity", message, loc, rule=rule, related=tuple(related))])


def _protocols(rule_proto: Protocol, has_ports: bool) -> tuple[tuple[int, int], ...]:
    """(proto_plen, proto) keys for an atom. A port constraint only matches
    TCP and UDP, so ANY with ports becomes two keys and ICMP with ports
    none at all (such an atom can never match)."""
    if rule_proto is _ANY:
        return ((8, _TCP), (8, _UDP)) if has_ports else ((0, 0),)
    if has_ports and not rule_proto.carries_ports:
        return ()
    return ((8, rule_proto.value),)


_KEY_PACK = layout.RULE_KEY.pack_values
_KEY6_PACK = layout.RULE6_KEY.pack_values
#: Both families' keys live in one table (shape -> key -> best). A shape is
#: the key's five plen bytes; an IPv6 shape has this tag in front, so the
#: two families' masks never merge (tell a key's family by its length).
_V6_TAG = b"6"


def shape_of(kb: bytes) -> bytes:
    """The mask shape (table key) of a packed rule key of either family."""
    return kb[:5] if len(kb) != KEY6_SIZE else _V6_TAG + kb[:5]


def _mask_shape(s: bytes) -> MaskShape:
    return MaskShape(*s) if len(s) == 5 else MaskShape(*s[1:], True)
_VAL_PACK = layout.RULE_VAL.pack_values
_U32 = layout.U32_KEY.pack_values
_PRIO_SHIFT, _SPEC_SHIFT = layout.RANK_PRIO_SHIFT, layout.RANK_SPEC_SHIFT


@lru_cache(maxsize=8192)
def _port_combos(proto: Protocol, sports: tuple, dports: tuple) -> tuple:
    """The port/protocol part of a rule's keys, shared by rules with the same
    protocol and port items: ((port specificity, ((proto_plen, proto,
    sport_plen, sport, dport_plen, dport), ...)), ...)."""
    spec_proto = SPEC_PROTOCOL if proto is not _ANY else 0
    sitems = [(p.is_any, SPEC_SINGLE_PORT if p.is_single else 0, port_prefixes(p)) for p in sports]
    ditems = [(p.is_any, SPEC_SINGLE_PORT if p.is_single else 0, port_prefixes(p)) for p in dports]
    out = []
    for s_any, s_spec, s_cover in sitems:
        for d_any, d_spec, d_cover in ditems:
            protos = _protocols(proto, not (s_any and d_any))
            if not protos:
                continue
            combos = tuple(
                (pplen, pval, splen, sval, dplen, dval)
                for pplen, pval in protos
                for splen, sval in s_cover
                for dplen, dval in d_cover
            )
            out.append((spec_proto + s_spec + d_spec, combos))
    return tuple(out)


def _expand_rule(rule: Rule) -> tuple[tuple[bytes, int], ...]:
    """Every key of every atom of `rule` (packed RULE_KEY bytes, or
    RULE6_KEY bytes for an IPv6 atom; the first five bytes are the mask
    shape), each once, with the best rank the rule gives it minus the order
    key (which only ORs into the low bits). Atoms pair prefixes of one
    family the protocol allows (semantics.atoms_of)."""
    combos = _port_combos(rule.protocol, rule.sports, rule.dports)
    base = (0xFFFF - rule.priority) << _PRIO_SHIFT
    srcs, dsts = rule.src, rule.dst
    fams = rule.protocol.families
    if len(combos) == 1 and len(srcs) == 1 and len(dsts) == 1 and not srcs[0].v6 and not dsts[0].v6 and 4 in fams:
        # the common rule: one atom; its keys are distinct (one port cover each)
        (port_spec, cs), = combos
        (src,), (dst,) = srcs, dsts
        sp, sa, dp, da = src.plen, src.addr, dst.plen, dst.addr
        rank = base | ((0x1FF - (sp + dp + port_spec)) << _SPEC_SHIFT)
        return tuple(
            (_KEY_PACK(sp, dp, splen, dplen, pplen, pval, sa, da, sval, dval), rank)
            for pplen, pval, splen, sval, dplen, dval in cs
        )
    out: dict[bytes, int] = {}
    get = out.get
    for port_spec, cs in combos:
        for src in srcs:
            if src.family not in fams:
                continue
            v6 = src.v6
            sp, sa = src.plen, src.addr
            sb = sa.to_bytes(16, "big") if v6 else b""
            for dst in dsts:
                if dst.v6 != v6:
                    continue
                dp, da = dst.plen, dst.addr
                rank = base | ((0x1FF - (sp + dp + port_spec)) << _SPEC_SHIFT)
                if v6:
                    db = da.to_bytes(16, "big")
                    for pplen, pval, splen, sval, dplen, dval in cs:
                        key = _KEY6_PACK(sp, dp, splen, dplen, pplen, pval, *sb, *db, sval, dval)
                        cur = get(key)
                        if cur is None or rank < cur:
                            out[key] = rank
                    continue
                for pplen, pval, splen, sval, dplen, dval in cs:
                    key = _KEY_PACK(sp, dp, splen, dplen, pplen, pval, sa, da, sval, dval)
                    cur = get(key)
                    if cur is None or rank < cur:
                        out[key] = rank
    return tuple(out.items())


def _same_matches(a: Rule, b: Rule) -> bool:
    """Whether two rules have the same keys and ranks (up to the order key)."""
    return (
        a.priority == b.priority
        and a.protocol is b.protocol
        and a.src == b.src
        and a.dst == b.dst
        and a.sports == b.sports
        and a.dports == b.dports
    )


_NOTHING = object()
_new = object.__new__
_set = object.__setattr__


def _slot_info(rule: Rule, slot: int, order_key: int) -> SlotInfo:
    """SlotInfo(...) without the frozen-dataclass __init__ (the same object)."""
    info = _new(SlotInfo)
    _set(
        info,
        "__dict__",
        {
            "slot": slot,
            "rule_id": rule.id,
            "action": rule.action,
            "priority": rule.priority,
            "order_key": order_key,
            "rate_bps": rule.rate_limit_bps if rule.action is Action.RATE_LIMIT else 0,
            "burst_bytes": _burst(rule),
            "loc": rule.loc,
        },
    )
    return info


_SOURCES = count(1)


class IncrementalCompiler:
    """compile_program, keeping per-rule work from one call to the next.

    `compile(policy, now, previous)` returns exactly what
    `compile_program(policy, config, now, previous)` returns. Between calls
    it keeps: every live rule's expansion (its keys with their ranks minus
    the order key), the merged key -> best (rank, rule) table grouped by
    mask shape, every contributor of keys that several rules hold (so that
    withdrawing the best finds the next), the best rank per shape, the
    packed rule and slot contents, and the digest's per-map sums. A call
    then costs O(rules) identity checks plus work proportional to the rules
    that changed (their keys, and the shapes whose best entry they held).
    Any exception resets the state: the next call starts afresh.
    """

    def __init__(self, config: Config):
        self.config = config
        self._track = True  # keep contributors for later withdrawals
        self._reset()

    def _reset(self) -> None:
        self._rules: dict[str, Rule] = {}  # live rules by id
        self._seq: tuple[Rule, ...] | None = None  # policy.rules of the last call
        self._last_policy: Policy | None = None  # the policy of the last call (for Policy.edit_from)
        self._now: datetime | None = None
        self._expiring: dict[int, Rule] = {}  # the rules of _seq with an expiry, by id()
        self._sorted: list[str] | None = None  # live ids in string order
        self._slot_set: set[int] = set()  # the slots of the last result
        self._slot_floor = 0  # no slot below this is free in _slot_set
        self._exp: dict[str, tuple[tuple[bytes, int], ...]] = {}
        self._ok: dict[str, int] = {}
        self._slot: dict[str, int] = {}
        self._prev_in: Any = _NOTHING
        self._shapes: dict[bytes, dict[bytes, tuple[int, str]]] = {}
        self._extra: dict[bytes, dict[str, int]] = {}
        self._vals: dict[bytes, bytes] = {}
        self._vals6: dict[bytes, bytes] = {}  # the IPv6 rule map (pepc_rules6)
        self._vals_shared = False
        self._last_program: weakref.ref | None = None
        self._acc_rules = 0
        self._acc_rules6 = 0
        self._mask_best: dict[bytes, int] = {}
        self._slotinfo: dict[str, SlotInfo] = {}
        self._slotval: dict[str, tuple[bytes, int]] = {}  # rule id -> (slot key, hash term)
        self._slot_contents: dict[bytes, bytes] = {}
        self._by_slot: list[SlotInfo | None] = []
        self._slots_tuple: tuple[SlotInfo, ...] = ()
        self._acc_slots = 0
        self._masks: dict[tuple[bytes, int], Mask] = {}
        self._source = next(_SOURCES)  # a new identity after every reset: deltas never span one
        self._serial = 0  # Programs returned since the last reset (ProgramDelta)

    def compile(self, policy: Policy, now: datetime, previous: Assignments | None = None) -> Program:
        with gcpause.paused():
            try:
                return self._compile(policy, now, previous)
            except BaseException:
                self._reset()
                raise

    def last_assignments(self) -> Assignments | None:
        """The slots and order keys of the last result (None before the
        first). Passing this object back as `previous` (when the live state
        holds exactly the last result) saves comparing 10^5-entry maps with
        it; any equal Assignments gives the same Program, only slower."""
        if self._prev_in is _NOTHING:
            return None
        return Assignments(slots=self._slot, order_keys=self._ok)

    # --- assignments -----------------------------------------------------------------

    def _assign(
        self, new: dict[str, Rule], previous: Assignments | None, added: list[str], removed: list[str]
    ) -> tuple[dict[str, int], dict[str, int], set[str] | None]:
        """(order keys, slots, ids whose order key or slot may differ from the
        last call's, None meaning any). Exactly assign_order_keys and
        assign_slots; when `previous` is the last result (what a plan made
        from it holds), only the added and removed ids are looked at."""
        if self._prev_in is not _NOTHING:
            if not added and not removed and previous is self._prev_in:
                return self._ok, self._slot, set()  # same ids, same previous: same result
            trusted = previous is not None and (
                (previous.order_keys is self._ok or previous.order_keys == self._ok)
                and (previous.slots is self._slot or previous.slots == self._slot)
            )
            if not added and not removed and trusted:
                return self._ok, self._slot, set()
            if trusted and self._sorted is not None and len(added) + len(removed) <= 4096:
                return self._assign_delta(added, removed)
        ids = sorted(new)
        order_keys = assign_order_keys(ids, previous.order_keys if previous else None)
        slots = assign_slots(ids, self.config.capacities.max_rules, previous.slots if previous else None)
        self._sorted = ids
        self._slot_set = set(slots.values())
        self._slot_floor = 0
        return order_keys, slots, None

    def _assign_delta(self, added: list[str], removed: list[str]) -> tuple[dict[str, int], dict[str, int], set[str]]:
        """assign_order_keys / assign_slots with previous = the last result,
        touching only the neighbourhood of the added ids (the same widening
        search, over the same positions, as assign_order_keys)."""
        last_ok, last_slot = self._ok, self._slot
        order = self._sorted
        for rid in removed:
            del order[bisect_left(order, rid)]
        for rid in added:
            insort(order, rid)
        n = len(order)
        new_ids = set(added)
        placed: dict[str, int] = {}

        def key_at(p: int) -> int | None:
            rid = order[p]
            k = placed.get(rid)
            if k is not None:
                return k
            return None if rid in new_ids else last_ok[rid]

        positions = sorted(bisect_left(order, rid) for rid in added)
        r = 0
        while r < len(positions):
            i = positions[r]
            j = i + 1
            r += 1
            while r < len(positions) and positions[r] == j:
                j += 1
                r += 1
            start, end, widen = i, j, 0
            while True:
                done = False
                for left in range(widen, -1, -1):
                    right = widen - left
                    s, e = start - left, end + right
                    if s < 0 or e > n:
                        continue
                    while e < n and key_at(e) is None:  # the next run joins the window
                        e += 1
                    lo = key_at(s - 1) if s > 0 else 0
                    hi = key_at(e) if e < n else KEY_SPACE
                    if _fits(lo, hi, e - s):  # type: ignore[arg-type]
                        for q, k in zip(range(s, e), _spread(lo, hi, e - s)):  # type: ignore[arg-type]
                            placed[order[q]] = k
                        done = True
                        break
                if done:
                    break
                widen += 1
            while r < len(positions) and positions[r] < e:
                r += 1
        order_keys = last_ok.copy()
        for rid in removed:
            del order_keys[rid]
        order_keys.update(placed)
        changed = {rid for rid, k in placed.items() if last_ok.get(rid) != k}

        # slots: survivors keep theirs; added ids, in id order, take the
        # lowest slot the last result did not use, then the ones it freed
        cap = self.config.capacities.max_rules
        used = self._slot_set
        slots = last_slot.copy()
        freed = sorted(s for s in (slots.pop(rid) for rid in removed) if 0 <= s < cap)
        reuse = iter(freed)
        s = self._slot_floor
        while s < cap and s in used:
            s += 1
        self._slot_floor = s
        for rid in sorted(added):
            while s < cap and s in used:
                s += 1
            if s < cap:
                slots[rid] = s
                s += 1
            else:
                slots[rid] = next(reuse, len(slots) + cap)
            changed.add(rid)
        # the next call's "used" is this result's slots
        used.difference_update(freed)
        used.update(slots[rid] for rid in added)
        self._slot_floor = min([self._slot_floor, *freed])
        return order_keys, slots, changed

    # --- the merged table ------------------------------------------------------------

    def _withdraw(self, rid: str, order_key: int, dirty_keys: set, dirty_shapes: set) -> None:
        shapes, extra, mask_best = self._shapes, self._extra, self._mask_best
        for kb, prank in self._exp[rid]:
            shape = kb[:5] if len(kb) != KEY6_SIZE else _V6_TAG + kb[:5]
            sd = shapes[shape]
            cur = sd[kb]
            ext = extra.get(kb)
            if ext is None:
                del sd[kb]
            else:
                del ext[rid]
                if cur[1] == rid:
                    sd[kb] = min((r, i) for i, r in ext.items())
                if len(ext) == 1:
                    del extra[kb]
            if cur[1] == rid:
                dirty_keys.add(kb)
                if cur[0] == mask_best.get(shape):
                    dirty_shapes.add(shape)

    def _contribute(self, rid: str, order_key: int, dirty_keys: set | None) -> None:
        shapes, extra, mask_best, track = self._shapes, self._extra, self._mask_best, self._track
        for kb, prank in self._exp[rid]:
            rank = prank | order_key
            shape = kb[:5] if len(kb) != KEY6_SIZE else _V6_TAG + kb[:5]
            sd = shapes.get(shape)
            if sd is None:
                sd = shapes[shape] = {}
            cur = sd.get(kb)
            if cur is None:
                sd[kb] = (rank, rid)
            else:
                if track:
                    ext = extra.get(kb)
                    if ext is None:
                        extra[kb] = {cur[1]: cur[0], rid: rank}
                    else:
                        ext[rid] = rank
                if rank > cur[0]:
                    continue
                sd[kb] = (rank, rid)
            if dirty_keys is not None:
                dirty_keys.add(kb)
                mb = mask_best.get(shape)
                if mb is None or rank < mb:
                    mask_best[shape] = rank

    # --- one call --------------------------------------------------------------------

    def _live_delta(self, rules: tuple[Rule, ...], now: datetime, edit: Any = None) -> dict[str, Rule | None] | None:
        """Bring self._rules (live rules by id) to `rules` at `now` by
        looking only at the Rule objects that are new or gone since the last
        call (Policy.edit_from, else model.rule_changes) and at rules with
        an expiry when `now` moved. Returns {id: the live rule it had before, or None} for every
        id touched, or None when there is no cheap delta (then nothing was
        changed)."""
        old_seq = self._seq
        if old_seq is None or not self._rules:
            return None
        if edit is not None:  # the loader said which Rule objects came and went
            gone, came = list(edit[0]), list(edit[1])
        else:
            gone, came = rule_changes(old_seq, rules)
        if len(gone) + len(came) > 8192:
            return None
        expiring = self._expiring
        if now != self._now:
            gone_ids = set(map(id, gone))
            for i, r in expiring.items():
                if i not in gone_ids:  # still there (kept alive by the last _seq): liveness may change
                    gone.append(r)
                    came.append(r)
        live = self._rules
        touched: dict[str, Rule | None] = {}
        for o in gone:
            if live.get(o.id) is o:
                touched.setdefault(o.id, o)
                del live[o.id]
            expiring.pop(id(o), None)
        for r in came:
            if r.is_live(now):
                touched.setdefault(r.id, None)
                live[r.id] = r
            if r.expires_at is not None:
                expiring[id(r)] = r
        return touched

    def _live_full(self, rules: tuple[Rule, ...], now: datetime) -> dict[str, Rule | None]:
        """Like _live_delta, by a pass over every rule."""
        old = self._rules
        new = {r.id: r for r in rules if r.is_live(now)}
        get = old.get
        touched = {rid: get(rid) for rid, r in new.items() if get(rid) is not r}
        if len(old) != len(new) or old.keys() != new.keys():
            touched.update((rid, r) for rid, r in old.items() if rid not in new)
        self._rules = new
        self._expiring = {id(r): r for r in rules if r.expires_at is not None}
        return touched

    def _compile(self, policy: Policy, now: datetime, previous: Assignments | None) -> Program:
        config = self.config
        caps = config.capacities
        fresh = not self._rules
        rules_in = policy.rules
        last = self._last_policy
        edit = policy.edit_from(last) if last is not None and last.rules is self._seq else None
        touched = None if fresh else self._live_delta(rules_in, now, edit)
        self._last_policy = policy
        if touched is None:
            touched = self._live_full(rules_in, now)
        self._seq, self._now = rules_in, now
        new = self._rules
        if len(new) > caps.max_rules:
            rules = sorted(new.values(), key=lambda r: r.id)
            cfg_loc = _config_loc(config, "max_rules")
            over = rules[caps.max_rules]
            raise _capacity_error(
                f"{len(rules)} live rules do not fit capacities.max_rules = {caps.max_rules}",
                over.loc,
                [Related("capacities.max_rules is set here", cfg_loc)] if cfg_loc else [],
                over.id,
            )
        removed = [rid for rid, o in touched.items() if o is not None and rid not in new]
        added = [rid for rid, o in touched.items() if o is None and rid in new]
        order_keys, slots, reassigned = self._assign(new, previous, added, removed)
        old_ok, old_slot = self._ok, self._slot
        if fresh:
            changed = list(new)
            removed = []
        else:
            changed = [rid for rid, o in touched.items() if rid in new and new[rid] is not o]
            if reassigned is None:
                reassigned = {
                    rid for rid in new if old_ok.get(rid) != order_keys[rid] or old_slot.get(rid) != slots[rid]
                }
            seen = set(changed)
            changed += [rid for rid in reassigned if rid not in seen and rid in new]

        def old_rule(rid: str) -> Rule | None:
            return touched[rid] if rid in touched else new[rid]

        exp = self._exp
        dirty_keys: set[bytes] | None = None
        if fresh:
            for rid, r in new.items():
                exp[rid] = _expand_rule(r)
                self._contribute(rid, order_keys[rid], None)
            self._fresh_contents(new, slots)
        else:
            dirty_keys = set()
            dirty_shapes: set[bytes] = set()
            for rid in removed:
                self._withdraw(rid, old_ok[rid], dirty_keys, dirty_shapes)
                del exp[rid]
            for rid in changed:
                if old_rule(rid) is not None:
                    self._withdraw(rid, old_ok[rid], dirty_keys, dirty_shapes)
            for rid in changed:
                r, old = new[rid], old_rule(rid)
                if old is None or not (old is r or _same_matches(old, r)):
                    exp[rid] = _expand_rule(r)
                self._contribute(rid, order_keys[rid], dirty_keys)
            self._update_contents(new, slots, dirty_keys, dirty_shapes)

        self._ok, self._slot, self._prev_in = order_keys, slots, previous

        # capacities are per family: each has its own maps of that size
        if len(self._vals) > caps.max_entries:
            raise self._entries_error(new, False)
        if len(self._vals6) > caps.max_entries:
            raise self._entries_error(new, True)

        mask_best = self._mask_best
        mask_order = sorted((s for s in mask_best if len(s) == 5), key=lambda s: (mask_best[s], s))
        mask_order6 = sorted((s for s in mask_best if len(s) != 5), key=lambda s: (mask_best[s], s))
        if len(mask_order) > caps.max_masks:
            raise self._masks_error(new, mask_order)
        if len(mask_order6) > caps.max_masks:
            raise self._masks_error(new, mask_order6)
        cache = self._masks

        def masks_of(order: list[bytes]) -> list[Mask]:
            out = []
            for s in order:
                m = cache.get((s, mask_best[s]))
                if m is None:
                    m = cache[(s, mask_best[s])] = Mask(_mask_shape(s), mask_best[s])
                out.append(m)
            return out

        masks, masks6 = masks_of(mask_order), masks_of(mask_order6)
        if len(cache) > 4 * (len(masks) + len(masks6)) + 64:
            self._masks = {(s, mask_best[s]): m for s, m in zip(mask_order + mask_order6, masks + masks6)}
        mask_contents = {_U32(i): pack.mask_value(m) for i, m in enumerate(masks)}
        mask6_contents = {_U32(i): pack.mask_value(m) for i, m in enumerate(masks6)}

        dirty_slots = self._update_slots(new, order_keys, slots, changed, removed, fresh)

        total = pack.contents_sum("pepc_masks", mask_contents) + self._acc_rules + self._acc_slots
        total += pack.contents_sum("pepc_masks6", mask6_contents) + self._acc_rules6
        digest = pack.finish_digest(
            total, len(masks), len(self._vals), len(self._slotinfo), int(config.default_action), config.event_cap,
            len(masks6), len(self._vals6),
        )
        self._vals_shared = True  # the Program owns these dicts now: copy before the next change
        self._serial += 1
        if dirty_keys is not None and dirty_slots is not None:
            vals, vals6, sc = self._vals, self._vals6, self._slot_contents
            delta = ProgramDelta(
                self._source,
                self._serial,
                {kb: vals.get(kb) for kb in dirty_keys if len(kb) != KEY6_SIZE},
                {kb: sc.get(kb) for kb in dirty_slots},
                {kb: vals6.get(kb) for kb in dirty_keys if len(kb) == KEY6_SIZE},
            )
        else:
            delta = ProgramDelta(self._source, self._serial, None, None, None)
        program = Program(
            caps=caps,
            default_action=config.default_action,
            event_cap=config.event_cap,
            masks=tuple(masks),
            slots=self._slots_tuple,
            policy_digest=digest,
            layout_digest=pack.layout_digest(caps),
            packed_rules=self._vals,
            masks6=tuple(masks6),
            packed_rules6=self._vals6,
        )
        object.__setattr__(program, "delta", delta)
        if not self._track:  # a one-shot compiler never changes its slot table again: share it
            object.__setattr__(program, "packed_slots", self._slot_contents)
        self._last_program = weakref.ref(program)
        return program

    def _fresh_contents(self, new: dict[str, Rule], slots: dict[str, int]) -> None:
        slot_of = slots
        act = {rid: int(r.action) for rid, r in new.items()}
        vals: dict[bytes, bytes] = {}
        vals6: dict[bytes, bytes] = {}
        mask_best = self._mask_best
        for shape, sd in self._shapes.items():
            (vals if len(shape) == 5 else vals6).update({kb: _VAL_PACK(rank, slot_of[rid], act[rid]) for kb, (rank, rid) in sd.items()})
            mask_best[shape] = min(sd.values())[0]
        self._vals, self._vals6 = vals, vals6
        self._vals_shared = False
        self._acc_rules = pack.contents_sum("pepc_rules", vals)
        self._acc_rules6 = pack.contents_sum("pepc_rules6", vals6)

    def _update_contents(self, new: dict[str, Rule], slots: dict[str, int], dirty_keys: set, dirty_shapes: set) -> None:
        if self._vals_shared:
            # The last Program shares this dict: copy it, unless that Program
            # is gone (then nobody can see the change).
            last = self._last_program() if self._last_program is not None else None
            if last is not None and last.packed_rules is self._vals:
                self._vals = self._vals.copy()
            if last is not None and last.packed_rules6 is self._vals6:
                self._vals6 = self._vals6.copy()
            self._vals_shared = False
            del last
        vals4, vals6, shapes = self._vals, self._vals6, self._shapes
        acc4, acc6 = self._acc_rules, self._acc_rules6
        h = pack.element_hash
        for kb in dirty_keys:
            v6 = len(kb) == KEY6_SIZE
            if v6:
                sd = shapes.get(_V6_TAG + kb[:5])
                vals, name, acc = vals6, "pepc_rules6", acc6
            else:
                sd = shapes.get(kb[:5])
                vals, name, acc = vals4, "pepc_rules", acc4
            cur = sd.get(kb) if sd is not None else None
            old = vals.get(kb)
            if cur is None:
                if old is not None:
                    acc -= h(name, kb, old)
                    del vals[kb]
            else:
                nv = _VAL_PACK(cur[0], slots[cur[1]], int(new[cur[1]].action))
                if nv != old:
                    if old is not None:
                        acc -= h(name, kb, old)
                    acc += h(name, kb, nv)
                    vals[kb] = nv
            if v6:
                acc6 = acc
            else:
                acc4 = acc
        self._acc_rules = acc4 % pack.DIGEST_MOD
        self._acc_rules6 = acc6 % pack.DIGEST_MOD
        mask_best = self._mask_best
        for shape in dirty_shapes:
            sd = shapes.get(shape)
            if not sd:
                shapes.pop(shape, None)
                mask_best.pop(shape, None)
            else:
                mask_best[shape] = min(sd.values())[0]

    def _fresh_slots(self, new: dict[str, Rule], order_keys: dict[str, int], slots: dict[str, int]) -> None:
        """_update_slots for a first call, in bulk."""
        infos = {rid: _slot_info(r, slots[rid], order_keys[rid]) for rid, r in new.items()}
        keys = {rid: _U32(slots[rid]) for rid in new}
        slot_value = pack.slot_value
        values = {rid: slot_value(info) for rid, info in infos.items()}
        tag = b"pepc_slots\0"
        sha, from_bytes = hashlib.sha256, int.from_bytes
        terms = {rid: from_bytes(sha(tag + keys[rid] + values[rid]).digest(), "little") for rid in new}
        self._slotinfo = infos
        self._slotval = {rid: (keys[rid], terms[rid]) for rid in new}
        self._slot_contents = {keys[rid]: values[rid] for rid in new}
        self._acc_slots = sum(terms.values()) % pack.DIGEST_MOD
        ordered = sorted(infos.values(), key=attrgetter("slot"))
        by_slot: list[SlotInfo | None] = [None] * (ordered[-1].slot + 1 if ordered else 0)
        for info in ordered:
            by_slot[info.slot] = info
        self._by_slot = by_slot
        self._slots_tuple = tuple(ordered)

    def _update_slots(self, new, order_keys, slots, changed, removed, fresh) -> set[bytes] | None:
        """Bring the slot table to this call; returns the slot keys whose
        element may have changed (None: all new, no delta)."""
        infos, svals, contents = self._slotinfo, self._slotval, self._slot_contents
        dirty: set[bytes] = set()
        if not changed and not removed:
            return dirty
        if fresh and not infos:
            self._fresh_slots(new, order_keys, slots)
            return None
        by_slot = self._by_slot
        acc = self._acc_slots
        h = pack.element_hash
        slot_value = pack.slot_value
        for rid in (*removed, *(rid for rid in changed if rid in infos)):
            old = infos.pop(rid)
            kb, term = svals.pop(rid)
            acc -= term
            if contents.get(kb) is not None and by_slot[old.slot] is old:
                del contents[kb]
                by_slot[old.slot] = None
                dirty.add(kb)
        top = max((slots[rid] for rid in changed), default=-1)
        if top >= len(by_slot):
            by_slot.extend([None] * (top + 1 - len(by_slot)))
        for rid in changed:
            info = _slot_info(new[rid], slots[rid], order_keys[rid])
            kb, vb = _U32(info.slot), slot_value(info)
            term = h("pepc_slots", kb, vb)
            infos[rid], svals[rid], contents[kb] = info, (kb, term), vb
            by_slot[info.slot] = info
            dirty.add(kb)
            acc += term
        self._acc_slots = acc % pack.DIGEST_MOD
        self._slots_tuple = tuple(filter(None, by_slot))
        return dirty

    # --- capacity errors -------------------------------------------------------------

    def _entries_error(self, new: dict[str, Rule], v6: bool) -> PolicyError:
        caps = self.config.capacities
        rules = sorted(new.values(), key=lambda r: r.id)
        per_rule = dict.fromkeys(new, 0)
        for shape, sd in self._shapes.items():
            if (len(shape) != 5) != v6:
                continue
            for _, rid in sd.values():
                per_rule[rid] += 1
        cfg_loc = _config_loc(self.config, "max_entries")
        top = sorted(rules, key=lambda r: (-per_rule[r.id], r.id))[:3]
        related = [Related(f"rule {r.id!r} needs {per_rule[r.id]} entries", r.loc) for r in top]
        return _capacity_error(
            f"the policy needs {len(self._vals6 if v6 else self._vals)} rule-map entries for {'IPv6' if v6 else 'IPv4'}; "
            f"capacities.max_entries is {caps.max_entries} (per address family)",
            cfg_loc or top[0].loc,
            related,
            None if cfg_loc else top[0].id,
        )

    def _masks_error(self, new: dict[str, Rule], mask_order: list[bytes]) -> PolicyError:
        caps = self.config.capacities
        cfg_loc = _config_loc(self.config, "max_masks")
        # the first masks that do not fit, by the rule holding their best entry
        extra = mask_order[caps.max_masks : caps.max_masks + 3]
        owner = {s: min(self._shapes[s].values())[1] for s in extra}
        related = [
            Related(f"rule {owner[s]!r} needs mask {_shape_text(tuple(s))}", new[owner[s]].loc) for s in extra
        ]
        first = new[owner[extra[0]]]
        family = "IPv6" if len(mask_order[0]) != 5 else "IPv4"
        return _capacity_error(
            f"the policy needs {len(mask_order)} distinct masks for {family}; capacities.max_masks is {caps.max_masks} (per address family)",
            cfg_loc or first.loc,
            related,
            None if cfg_loc else first.id,
        )


def compile_program(policy: Policy, config: Config, now: datetime, previous: Assignments | None = None) -> Program:
    """Compile the rules live at `now` into one data-plane generation.

    Raises PolicyError (code `capacity`) when the result does not fit the
    configured maps: a plan is never silently truncated.
    """
    compiler = IncrementalCompiler(config)
    compiler._track = False  # used once: no withdrawals to prepare for
    return compiler.compile(policy, now, previous)


def capacity_findings(policy: Policy, config: Config, now: datetime) -> list[Finding]:
    """The `capacity` findings of compiling `policy` under `config`: what
    `pepc check` reports (the checker takes this as its capacity check)."""
    try:
        compile_program(policy, config, now)
    except PolicyError as err:
        return [f for f in err.findings if f.code == "capacity"]
    return []


def _burst(rule: Rule) -> int:
    if rule.action is not Action.RATE_LIMIT:
        return 0
    # docs/semantics.md: burst defaults to one second's worth of the rate
    return rule.burst_bytes or rule.rate_limit_bps


def _shape_text(shape: tuple) -> str:
    if len(shape) != 5:  # an IPv6 shape: the tag, then the plens
        s, d, sp, dp, pp = shape[1:]
        return f"IPv6 src/{s} dst/{d} sport/{sp} dport/{dp} proto/{pp}"
    s, d, sp, dp, pp = shape
    return f"src/{s} dst/{d} sport/{sp} dport/{dp} proto/{pp}"


def _atom_count(r: Rule) -> int:
    """len(list(semantics.atoms_of(r))), without building them."""
    pairs = 0
    for fam in r.protocol.families:
        v6 = fam == 6
        pairs += sum(1 for p in r.src if p.v6 == v6) * sum(1 for p in r.dst if p.v6 == v6)
    return pairs * len(r.sports) * len(r.dports)


def rule_stats(policy: Policy, program: Program) -> dict[str, RuleStats]:
    """Atoms and map entries per live rule of `program` (for plans and summaries)."""
    ids = {s.slot: s.rule_id for s in program.slots}
    per_slot: dict[int, int] = {}
    unval = layout.RULE_VAL.unpack_values
    for vb in (*program.rule_contents().values(), *program.rule6_contents().values()):
        slot = unval(vb)[1]
        per_slot[slot] = per_slot.get(slot, 0) + 1
    entries: dict[str, int] = {}
    for slot, n in per_slot.items():
        rid = ids.get(slot, "")
        entries[rid] = entries.get(rid, 0) + n
    out = {}
    by_id = {r.id: r for r in policy.rules}
    for s in program.slots:
        r = by_id.get(s.rule_id)
        atoms = _atom_count(r) if r else 0
        out[s.rule_id] = RuleStats(atoms, entries.get(s.rule_id, 0))
    return out
