"""Policy -> Program: atoms, tuple-space keys, ranks, masks and slots.

The compiler is pure and deterministic in (policy, config, now, previous):
rules are visited in id order, keys are sorted, and order keys and slots
come from `assign`, so file order and dict order never leak into output.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

from pepc import layout
from pepc.compiler import pack
from pepc.compiler.assign import assign_order_keys, assign_slots
from pepc.compiler.ports import port_prefixes
from pepc.config import Config
from pepc.diagnostics import Finding, PolicyError, Related
from pepc.model import Action, Location, Policy, Protocol, Rule
from pepc.program import Entry, EntryKey, Mask, MaskShape, Program, SlotInfo
from pepc.semantics import SPEC_PROTOCOL, SPEC_SINGLE_PORT

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


def _expand(rules: list[Rule], order_keys: Mapping[str, int]) -> tuple[dict[tuple, tuple[int, int]], list[int]]:
    """Every key of every atom -> (best rank, index of the rule holding it),
    plus the atom count per rule."""
    best: dict[tuple, tuple[int, int]] = {}
    get = best.get
    atoms_per_rule = []
    for ri, rule in enumerate(rules):
        base = ((0xFFFF - rule.priority) << layout.RANK_PRIO_SHIFT) | order_keys[rule.id]
        proto = rule.protocol
        spec_proto = SPEC_PROTOCOL if proto is not _ANY else 0
        sitems = [(p.is_any, SPEC_SINGLE_PORT if p.is_single else 0, port_prefixes(p)) for p in rule.sports]
        ditems = [(p.is_any, SPEC_SINGLE_PORT if p.is_single else 0, port_prefixes(p)) for p in rule.dports]
        atoms_per_rule.append(len(rule.src) * len(rule.dst) * len(sitems) * len(ditems))
        for s_any, s_spec, s_cover in sitems:
            for d_any, d_spec, d_cover in ditems:
                protos = _protocols(proto, not (s_any and d_any))
                if not protos:
                    continue
                port_spec = spec_proto + s_spec + d_spec
                for src in rule.src:
                    sp, sa = src.plen, src.addr
                    for dst in rule.dst:
                        dp, da = dst.plen, dst.addr
                        rank = base | ((0xFF - (sp + dp + port_spec)) << layout.RANK_SPEC_SHIFT)
                        cand = (rank, ri)
                        for pplen, pval in protos:
                            for splen, sval in s_cover:
                                for dplen, dval in d_cover:
                                    key = (sp, dp, splen, dplen, pplen, pval, sa, da, sval, dval)
                                    cur = get(key)
                                    if cur is None or rank < cur[0]:
                                        best[key] = cand
    return best, atoms_per_rule


def compile_program(policy: Policy, config: Config, now: datetime, previous: Assignments | None = None) -> Program:
    """Compile the rules live at `now` into one data-plane generation.

    Raises PolicyError (code `capacity`) when the result does not fit the
    configured maps: a plan is never silently truncated.
    """
    # Hundreds of thousands of small immutable objects and no cycles: the
    # cyclic GC would rescan the growing heap again and again for nothing.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _compile(policy, config, now, previous)
    finally:
        if enabled:
            gc.enable()


def _compile(policy: Policy, config: Config, now: datetime, previous: Assignments | None) -> Program:
    caps = config.capacities
    rules = sorted(policy.live_rules(now), key=lambda r: r.id)
    if len(rules) > caps.max_rules:
        cfg_loc = _config_loc(config, "max_rules")
        over = rules[caps.max_rules]
        raise _capacity_error(
            f"{len(rules)} live rules do not fit capacities.max_rules = {caps.max_rules}",
            over.loc,
            [Related("capacities.max_rules is set here", cfg_loc)] if cfg_loc else [],
            over.id,
        )

    ids = [r.id for r in rules]
    order_keys = assign_order_keys(ids, previous.order_keys if previous else None)
    slots = assign_slots(ids, caps.max_rules, previous.slots if previous else None)

    best, atoms_per_rule = _expand(rules, order_keys)

    entries_per_rule = [0] * len(rules)
    mask_best: dict[tuple, int] = {}
    for key, (rank, ri) in best.items():
        entries_per_rule[ri] += 1
        shape = key[:5]
        cur = mask_best.get(shape)
        if cur is None or rank < cur:
            mask_best[shape] = rank

    if len(best) > caps.max_entries:
        cfg_loc = _config_loc(config, "max_entries")
        top = sorted(range(len(rules)), key=lambda i: (-entries_per_rule[i], rules[i].id))[:3]
        related = [Related(f"rule {rules[i].id!r} needs {entries_per_rule[i]} entries", rules[i].loc) for i in top]
        loc = cfg_loc or rules[top[0]].loc
        raise _capacity_error(
            f"the policy needs {len(best)} rule-map entries; capacities.max_entries is {caps.max_entries}",
            loc,
            related,
            None if cfg_loc else rules[top[0]].id,
        )

    shapes = {s: MaskShape(*s) for s in mask_best}
    mask_order = sorted(mask_best, key=lambda s: (mask_best[s], s))
    if len(mask_order) > caps.max_masks:
        cfg_loc = _config_loc(config, "max_masks")
        # the first masks that do not fit, by the rule holding their best entry
        owner: dict[tuple, int] = {}
        for key, (rank, ri) in best.items():
            if rank == mask_best[key[:5]]:
                owner[key[:5]] = ri
        extra = mask_order[caps.max_masks : caps.max_masks + 3]
        related = [
            Related(f"rule {rules[owner[s]].id!r} needs mask {_shape_text(s)}", rules[owner[s]].loc) for s in extra
        ]
        first = rules[owner[extra[0]]]
        raise _capacity_error(
            f"the policy needs {len(mask_order)} distinct masks; capacities.max_masks is {caps.max_masks}",
            cfg_loc or first.loc,
            related,
            None if cfg_loc else first.id,
        )

    masks = tuple(Mask(shapes[s], mask_best[s]) for s in mask_order)
    slot_of = [slots[r.id] for r in rules]
    action_of = [r.action for r in rules]
    id_of = [r.id for r in rules]
    # The packed key is big-endian in field order, so sorting by its bytes is
    # sorting by EntryKey (and a memcmp per comparison instead of a tuple walk).
    key_pack = pack.compiled(layout.RULE_KEY).pack
    val_pack = pack.compiled(layout.RULE_VAL).pack
    packed = {key_pack(*k): k for k in best}
    rule_bytes = {}
    entry_list = []
    for kb in sorted(packed):
        k = packed[kb]
        rank, ri = best[k]
        rule_bytes[kb] = val_pack(rank, slot_of[ri], action_of[ri])
        entry_list.append(_entry(shapes[k[:5]], k, rank, slot_of[ri], action_of[ri], id_of[ri]))
    entries = tuple(entry_list)
    del packed, entry_list
    slot_infos = tuple(
        sorted(
            (
                SlotInfo(
                    slot=slots[r.id],
                    rule_id=r.id,
                    action=r.action,
                    priority=r.priority,
                    order_key=order_keys[r.id],
                    rate_bps=r.rate_limit_bps if r.action is Action.RATE_LIMIT else 0,
                    burst_bytes=_burst(r),
                    loc=r.loc,
                )
                for r in rules
            ),
            key=lambda s: s.slot,
        )
    )
    u32 = pack.compiled(layout.U32_KEY).pack
    digest = pack.policy_digest(
        {u32(i): pack.mask_value(m) for i, m in enumerate(masks)},
        rule_bytes,
        pack.slot_values(slot_infos),
        int(config.default_action),
        config.event_cap,
    )
    return Program(
        caps=caps,
        default_action=config.default_action,
        event_cap=config.event_cap,
        masks=masks,
        entries=entries,
        slots=slot_infos,
        policy_digest=digest,
        layout_digest=pack.layout_digest(caps),
    )


_new = object.__new__
_set = object.__setattr__


def _entry(shape: MaskShape, k: tuple, rank: int, slot: int, action: Action, rule_id: str) -> Entry:
    """Entry(EntryKey(shape, *k[5:]), rank, slot, action, rule_id), built
    without the frozen-dataclass __init__ (one object.__setattr__ per
    field): the same objects at half the cost, which matters at 10^5
    entries. tests/test_compiler.py checks equality with the constructor."""
    key = _new(EntryKey)
    _set(key, "__dict__", {"shape": shape, "proto": k[5], "src": k[6], "dst": k[7], "sport": k[8], "dport": k[9]})
    entry = _new(Entry)
    _set(entry, "__dict__", {"key": key, "rank": rank, "slot": slot, "action": action, "rule_id": rule_id})
    return entry


def _burst(rule: Rule) -> int:
    if rule.action is not Action.RATE_LIMIT:
        return 0
    # DESIGN.md: burst defaults to one second's worth of the rate
    return rule.burst_bytes or rule.rate_limit_bps


def _shape_text(shape: tuple) -> str:
    s, d, sp, dp, pp = shape
    return f"src/{s} dst/{d} sport/{sp} dport/{dp} proto/{pp}"


def rule_stats(policy: Policy, program: Program) -> dict[str, RuleStats]:
    """Atoms and map entries per live rule of `program` (for plans and summaries)."""
    entries: dict[str, int] = {}
    for e in program.entries:
        entries[e.rule_id] = entries.get(e.rule_id, 0) + 1
    out = {}
    by_id = {r.id: r for r in policy.rules}
    for s in program.slots:
        r = by_id.get(s.rule_id)
        atoms = len(r.src) * len(r.dst) * len(r.sports) * len(r.dports) if r else 0
        out[s.rule_id] = RuleStats(atoms, entries.get(s.rule_id, 0))
    return out
