"""Pure comparison of desired and live generation contents.

Everything here works on the `Program.map_contents()` shape: logical map
name -> {key bytes: value bytes}, with `pepc_gen` under the placeholder key
0 and ARRAY maps holding only their non-zero elements. The live reader
(live.py) produces the same shape, so a diff is a comparison of dicts and
needs no kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from pepc import layout
from pepc.model import Action

#: The maps that exist once per generation, in the order apply writes them.
GEN_MAPS: tuple[str, ...] = ("pepc_rules", "pepc_masks", "pepc_slots", "pepc_gen")

Contents = Mapping[str, Mapping[bytes, bytes]]

_U32 = layout.U32_KEY


def u32(v: int) -> bytes:
    return _U32.pack({"v": v})


def u32_of(key: bytes) -> int:
    return int.from_bytes(key[:4], "little")


def is_array(name: str) -> bool:
    return layout.map_def(name).kind != "HASH"


def _nonzero(content: Mapping[bytes, bytes]) -> dict[bytes, bytes]:
    return {k: v for k, v in content.items() if any(v)}


def empty_contents() -> dict[str, dict[bytes, bytes]]:
    return {name: {} for name in GEN_MAPS}


class Normalized(dict):
    """Contents already normalized (normalize() returns these as they are)."""


def normalize(contents: Contents) -> dict[str, dict[bytes, bytes]]:
    """Every generation map present; zero elements of ARRAY maps dropped
    (the kernel cannot tell an unused array element from a zero one)."""
    if isinstance(contents, Normalized):
        return contents
    out = Normalized()
    for name in GEN_MAPS:
        c = contents.get(name, {})
        out[name] = _nonzero(c) if is_array(name) else dict(c)
    return out


@dataclass(frozen=True)
class MapDelta:
    """What makes one generation map equal to the desired one.

    `deletes` are keys that must go: removed from a HASH map, set to zero
    in an ARRAY map (only elements that are non-zero now are listed)."""

    name: str
    writes: tuple[tuple[bytes, bytes], ...] = ()
    deletes: tuple[bytes, ...] = ()

    @property
    def count(self) -> int:
        return len(self.writes) + len(self.deletes)

    changed: int = 0  # how many of `writes` replace an existing element

    @property
    def added(self) -> int:
        return len(self.writes) - self.changed


@dataclass(frozen=True)
class GenDelta:
    maps: tuple[MapDelta, ...] = ()

    @property
    def count(self) -> int:
        return sum(m.count for m in self.maps)

    @property
    def empty(self) -> bool:
        return self.count == 0

    def of(self, name: str) -> MapDelta:
        for m in self.maps:
            if m.name == name:
                return m
        return MapDelta(name)

    def summary(self) -> dict[str, dict[str, int]]:
        return {
            m.name: {"add": m.added, "change": m.changed, "delete": len(m.deletes)}
            for m in self.maps
        }


def diff_map(name: str, desired: Mapping[bytes, bytes], live: Mapping[bytes, bytes]) -> MapDelta:
    writes = []
    changed = 0
    for k, v in desired.items():
        cur = live.get(k)
        if cur != v:
            writes.append((k, v))
            if cur is not None:
                changed += 1
    deletes = [k for k in live if k not in desired]
    writes.sort()
    deletes.sort()
    return MapDelta(name, tuple(writes), tuple(deletes), changed)


def diff_generation(desired: Contents, live: Contents) -> GenDelta:
    """The minimal writes that turn `live` (one generation) into `desired`."""
    d, l = normalize(desired), normalize(live)
    return GenDelta(tuple(diff_map(name, d[name], l[name]) for name in GEN_MAPS))


def apply_delta(live: Contents, delta: GenDelta) -> dict[str, dict[bytes, bytes]]:
    """`live` after `delta` (for tests and for reasoning about crash states)."""
    out = {k: dict(v) for k, v in normalize(live).items()}
    for m in delta.maps:
        c = out[m.name]
        for k in m.deletes:
            c.pop(k, None)
        for k, v in m.writes:
            c[k] = v
    return normalize(out)


# --- decoding for humans --------------------------------------------------------


@dataclass(frozen=True)
class LiveRule:
    """A rule as one generation's `pepc_slots` element describes it."""

    slot: int
    id_bytes: bytes  # truncated to layout.RULE_ID_LEN
    id_len: int
    action: int
    priority: int
    order_key: int
    rate_bps: int
    burst_bytes: int

    @property
    def truncated(self) -> bool:
        return self.id_len > len(self.id_bytes)

    @property
    def display_id(self) -> str:
        text = self.id_bytes.decode("utf-8", "replace")
        return text + "…" if self.truncated else text

    def fields(self) -> dict[str, object]:
        return {
            "slot": self.slot,
            "action": _action_name(self.action),
            "priority": self.priority,
            "order_key": self.order_key,
            "rate_bps": self.rate_bps,
            "burst_bytes": self.burst_bytes,
        }


def _action_name(v: int) -> str:
    try:
        return Action(v).name
    except ValueError:
        return f"?{v}"


def identity(rule_id: str) -> tuple[bytes, int]:
    """How a rule id is recognisable in a `pepc_slots` element."""
    raw = rule_id.encode("utf-8")
    return raw[: layout.RULE_ID_LEN], min(len(raw), 0xFFFF)


_SLOT_OFF = layout.SLOT.offsets
#: The bytes of a slot element that name its rule: id_len and the id.
_IDENT = slice(_SLOT_OFF["id_len"], layout.SLOT.size)
_FLAGS = _SLOT_OFF["flags"]


_SLOT_STRUCT = None


def _slot_struct():
    global _SLOT_STRUCT
    if _SLOT_STRUCT is None:
        from pepc.compiler.pack import compiled

        _SLOT_STRUCT = compiled(layout.SLOT)
    return _SLOT_STRUCT


def decode_slot(key: bytes, value: bytes) -> LiveRule | None:
    rate, burst, order_key, priority, action, flags, id_len, rid = _slot_struct().unpack_from(value)
    if not flags & layout.SLOT_FLAG_USED:
        return None
    return LiveRule(u32_of(key), rid.rstrip(b"\0"), id_len, action, priority, order_key, rate, burst)


def decode_slots(slots: Mapping[bytes, bytes], only: Iterable[bytes] | None = None) -> dict[int, LiveRule]:
    """Used slots by index (all, or those of the keys in `only`)."""
    out = {}
    keys = slots.keys() if only is None else [k for k in only if k in slots]
    for k in keys:
        r = decode_slot(k, slots[k])
        if r is not None:
            out[r.slot] = r
    return out


def decode_gen(value: bytes | None) -> dict[str, object] | None:
    if not value or not any(value):
        return None
    g = layout.GEN.unpack(value)
    return {
        "n_masks": g["n_masks"],
        "default_action": _action_name(g["default_action"]),
        "default_action_value": g["default_action"],
        "event_cap": g["event_cap"],
        "n_rules": g["n_rules"],
        "policy_digest": bytes(g["policy_digest"]).hex(),
    }


def gen_info(contents: Contents) -> dict[str, object] | None:
    return decode_gen(contents.get("pepc_gen", {}).get(u32(0)))


_RULE_VAL_SLOT = layout.RULE_VAL.offsets["slot"]


def slot_of_value(v: bytes) -> int:
    return int.from_bytes(v[_RULE_VAL_SLOT : _RULE_VAL_SLOT + 4], "little")


def entries_by_slot(rules: Mapping[bytes, bytes], keys: Iterable[bytes] | None = None) -> dict[int, dict[bytes, bytes]]:
    out: dict[int, dict[bytes, bytes]] = {}
    items = rules.items() if keys is None else ((k, rules[k]) for k in keys if k in rules)
    for k, v in items:
        out.setdefault(slot_of_value(v), {})[k] = v
    return out


def entry_counts(rules: Mapping[bytes, bytes]) -> dict[int, int]:
    from collections import Counter

    s = slice(_RULE_VAL_SLOT, _RULE_VAL_SLOT + 4)
    return {int.from_bytes(k, "little"): n for k, n in Counter(v[s] for v in rules.values()).items()}


def assignments_from_slots(slots: Mapping[bytes, bytes], rule_ids: Iterable[str]) -> tuple[dict[str, int], dict[str, int]]:
    """(slots, order_keys) by rule id, from one generation's `pepc_slots`.

    Ids longer than layout.RULE_ID_LEN are stored truncated: such an element
    is attributed to a rule of `rule_ids` only when exactly one id has that
    prefix and length; the others simply get new slots."""
    by_ident: dict[tuple[bytes, int], list[str]] = {}
    for rid in rule_ids:
        by_ident.setdefault(identity(rid), []).append(rid)
    slot_of: dict[str, int] = {}
    key_of: dict[str, int] = {}
    for lr in decode_slots(slots).values():
        cands = by_ident.get((lr.id_bytes, lr.id_len), [])
        if len(cands) == 1 and cands[0] not in slot_of:
            slot_of[cands[0]] = lr.slot
            key_of[cands[0]] = lr.order_key
    return slot_of, key_of


# --- rule-level summary ---------------------------------------------------------


@dataclass(frozen=True)
class RuleChange:
    rule_id: str
    kind: str  # "add" | "change" | "remove"
    fields: tuple[tuple[str, object, object], ...] = ()  # (field, before, after)
    entries_before: int = 0
    entries_after: int = 0

    def to_json(self) -> dict:
        return {
            "id": self.rule_id,
            "change": self.kind,
            "fields": {f: {"before": a, "after": b} for f, a, b in self.fields},
            "entries": {"before": self.entries_before, "after": self.entries_after},
        }


@dataclass(frozen=True)
class RuleSummary:
    added: tuple[RuleChange, ...] = ()
    changed: tuple[RuleChange, ...] = ()
    removed: tuple[RuleChange, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed)

    def counts(self) -> dict[str, int]:
        return {"added": len(self.added), "changed": len(self.changed), "removed": len(self.removed)}

    def all(self) -> tuple[RuleChange, ...]:
        return self.added + self.changed + self.removed


def rule_summary(desired: Contents, live: Contents) -> RuleSummary:
    """Rules added, changed (with the fields that change) and removed when
    `live` (one generation) becomes `desired`. Both sides are decoded from
    map contents, so the summary describes exactly what the data plane will
    do differently. Only slots touched by a difference are decoded: the cost
    follows the size of the change (plus one pass over the entries)."""
    d_sl, l_sl = desired.get("pepc_slots", {}), live.get("pepc_slots", {})
    d_ru, l_ru = desired.get("pepc_rules", {}), live.get("pepc_rules", {})
    changed_keys = [k for k, v in d_ru.items() if l_ru.get(k) != v] + [k for k in l_ru if k not in d_ru]
    touched = {k for k, v in d_sl.items() if l_sl.get(k) != v} | {k for k in l_sl if k not in d_sl}
    for k in changed_keys:
        for side in (d_ru, l_ru):
            v = side.get(k)
            if v is not None:
                touched.add(u32(slot_of_value(v)))
    if not touched:
        return RuleSummary()
    d_slots = decode_slots(d_sl, touched)
    l_slots = decode_slots(l_sl, touched)

    def ident(r: LiveRule) -> tuple[bytes, int]:
        return (r.id_bytes, r.id_len)

    # a rule may have moved slot: find it on the other side by identity bytes
    def where(side: Mapping[bytes, bytes]) -> dict[bytes, bytes]:
        return {v[_IDENT]: k for k, v in side.items() if v[_FLAGS] & layout.SLOT_FLAG_USED}

    l_where, d_where = where(l_sl), where(d_sl)
    l_by_ident = {ident(r): r for r in l_slots.values()}
    for r in list(d_slots.values()):
        k = l_where.get(d_sl[u32(r.slot)][_IDENT])
        if k is not None and ident(r) not in l_by_ident:
            lr = decode_slot(k, l_sl[k])
            if lr is not None:
                l_by_ident[ident(lr)] = lr
    d_by_ident = {ident(r): r for r in d_slots.values()}
    for r in list(l_slots.values()):
        k = d_where.get(l_sl[u32(r.slot)][_IDENT])
        if k is not None and ident(r) not in d_by_ident:
            dr = decode_slot(k, d_sl[k])
            if dr is not None:
                d_by_ident[ident(dr)] = dr
                d_slots[dr.slot] = dr

    d_count, l_count = entry_counts(d_ru), entry_counts(l_ru)
    d_changed = entries_by_slot(d_ru, changed_keys)
    l_changed = entries_by_slot(l_ru, changed_keys)
    added, changed, removed = [], [], []
    for r in sorted(d_slots.values(), key=lambda r: r.id_bytes):
        old = l_by_ident.get(ident(r))
        if old is None:
            added.append(RuleChange(r.display_id, "add", entries_after=d_count.get(r.slot, 0)))
            continue
        before, after = old.fields(), r.fields()
        fields = [(f, before[f], after[f]) for f in before if before[f] != after[f]]
        de, le = d_changed.get(r.slot, {}), l_changed.get(old.slot, {})
        new_keys = {k for k in de if k not in l_ru or slot_of_value(l_ru[k]) != old.slot}
        gone_keys = {k for k in le if k not in d_ru or slot_of_value(d_ru[k]) != r.slot}
        n_before, n_after = l_count.get(old.slot, 0), d_count.get(r.slot, 0)
        if new_keys or gone_keys:
            fields.append(("match", f"{n_before} entries", f"{n_after} entries (+{len(new_keys)} -{len(gone_keys)})"))
        elif (de or le) and not any(f in ("priority", "order_key", "action", "slot") for f, _, _ in fields):
            fields.append(("rank", "", "specificity order of entries changed"))
        if fields:
            changed.append(RuleChange(r.display_id, "change", tuple(fields), n_before, n_after))
    for r in sorted(l_slots.values(), key=lambda r: r.id_bytes):
        if ident(r) not in d_by_ident:
            removed.append(RuleChange(r.display_id, "remove", entries_before=l_count.get(r.slot, 0)))
    return RuleSummary(tuple(added), tuple(changed), tuple(removed))


def slots_to_reset(desired: Contents, active: Contents) -> tuple[int, ...]:
    """Slots whose per-rule state (counters, token bucket, event budget)
    must start from zero: those that get a rule the active generation does
    not hold in that same slot."""
    d = desired.get("pepc_slots", {})
    a = active.get("pepc_slots", {})
    out = []
    for k, v in d.items():
        if not v[_FLAGS] & layout.SLOT_FLAG_USED:
            continue
        old = a.get(k)
        if old is None or not old[_FLAGS] & layout.SLOT_FLAG_USED or old[_IDENT] != v[_IDENT]:
            out.append(u32_of(k))
    return tuple(sorted(out))


# --- drift -------------------------------------------------------------------


@dataclass(frozen=True)
class Drift:
    """Elements of the active generation that differ from what its stored
    policy digest promises (written by hand, or by a foreign tool)."""

    digest_ok: bool  # the contents hash to the stored digest
    stored_digest: str | None
    contents_digest: str
    #: elements that differ from the desired program, when the stored digest
    #: is the desired one (otherwise the policy changed too and the diff is a
    #: pending change, not drift)
    delta: GenDelta = field(default_factory=GenDelta)

    @property
    def found(self) -> bool:
        return not self.digest_ok

    def to_json(self) -> dict:
        return {
            "found": self.found,
            "stored_policy_digest": self.stored_digest,
            "contents_digest": self.contents_digest,
            "elements": {m.name: m.count for m in self.delta.maps if m.count},
        }


def contents_digest(contents: Contents) -> str:
    """The policy digest that `contents` deserve (pack.policy_digest)."""
    from pepc.compiler.pack import policy_digest

    c = normalize(contents)
    g = gen_info(c)
    default_action = int(g["default_action_value"]) if g else 0
    event_cap = int(g["event_cap"]) if g else 0
    return policy_digest(c["pepc_masks"], c["pepc_rules"], c["pepc_slots"], default_action, event_cap)


def expected_gen_value(contents: Contents, digest: str | None = None) -> bytes | None:
    """The `pepc_gen` element that `contents` deserve: counts and digest
    recomputed from the other maps, settings kept."""
    c = normalize(contents)
    g = gen_info(c)
    if g is None:
        return None
    return layout.GEN.pack(
        {
            "n_masks": len(c["pepc_masks"]),
            "default_action": g["default_action_value"],
            "event_cap": g["event_cap"],
            "n_rules": len(c["pepc_slots"]),
            "policy_digest": bytes.fromhex(digest or contents_digest(c)),
        }
    )


def find_drift(
    active: Contents,
    desired: Contents | None = None,
    desired_digest: str | None = None,
    delta_to_desired: GenDelta | None = None,
) -> Drift:
    """Whether `active` holds what its stored digest promises.

    When the stored digest is the desired one, the elements that differ
    from `desired` are the drift itself (`delta_to_desired` may pass that
    diff in when the caller has it); when they are even equal, the contents
    are exactly what the compiler hashed and nothing needs hashing."""
    active = normalize(active)
    g = gen_info(active)
    stored = str(g["policy_digest"]) if g else None
    delta = GenDelta()
    if desired is not None and stored is not None and stored == desired_digest:
        delta = delta_to_desired if delta_to_desired is not None else diff_generation(desired, active)
        if delta.empty:
            return Drift(digest_ok=True, stored_digest=stored, contents_digest=stored, delta=delta)
    actual = contents_digest(active)
    gen_ok = expected_gen_value(active, actual) == active["pepc_gen"].get(u32(0))
    return Drift(digest_ok=(gen_ok and stored == actual), stored_digest=stored, contents_digest=actual, delta=delta)
