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


def normalize(contents: Contents) -> dict[str, dict[bytes, bytes]]:
    """Every generation map present; zero elements of ARRAY maps dropped
    (the kernel cannot tell an unused array element from a zero one)."""
    out: dict[str, dict[bytes, bytes]] = {}
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
    out = normalize(live)
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


def decode_slots(slots: Mapping[bytes, bytes]) -> dict[int, LiveRule]:
    out = {}
    for k, v in slots.items():
        s = layout.SLOT.unpack(v)
        if not s["flags"] & layout.SLOT_FLAG_USED:
            continue
        slot = u32_of(k)
        out[slot] = LiveRule(
            slot=slot,
            id_bytes=s["id"],
            id_len=s["id_len"],
            action=s["action"],
            priority=s["priority"],
            order_key=s["order_key"],
            rate_bps=s["rate_bps"],
            burst_bytes=s["burst_bytes"],
        )
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


def entries_by_slot(rules: Mapping[bytes, bytes]) -> dict[int, dict[bytes, bytes]]:
    out: dict[int, dict[bytes, bytes]] = {}
    for k, v in rules.items():
        slot = int.from_bytes(v[_RULE_VAL_SLOT : _RULE_VAL_SLOT + 4], "little")
        out.setdefault(slot, {})[k] = v
    return out


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
    do differently."""
    d_slots = decode_slots(desired.get("pepc_slots", {}))
    l_slots = decode_slots(live.get("pepc_slots", {}))
    d_entries = entries_by_slot(desired.get("pepc_rules", {}))
    l_entries = entries_by_slot(live.get("pepc_rules", {}))

    def ident(r: LiveRule) -> tuple[bytes, int]:
        return (r.id_bytes, r.id_len)

    l_by_ident = {ident(r): r for r in l_slots.values()}
    d_idents = {ident(r) for r in d_slots.values()}
    added, changed, removed = [], [], []
    for r in sorted(d_slots.values(), key=lambda r: r.id_bytes):
        de = d_entries.get(r.slot, {})
        old = l_by_ident.get(ident(r))
        if old is None:
            added.append(RuleChange(r.display_id, "add", entries_after=len(de)))
            continue
        le = l_entries.get(old.slot, {})
        before, after = old.fields(), r.fields()
        fields = [(f, before[f], after[f]) for f in before if before[f] != after[f]]
        # The match changed when the keys differ; the value carries rank,
        # slot and action, whose changes the slot fields already name.
        if set(de) != set(le):
            fields.append(("match", f"{len(le)} entries", f"{len(de)} entries (+{len(set(de) - set(le))} -{len(set(le) - set(de))})"))
        else:
            strip = lambda v: v[:_RULE_VAL_SLOT]  # noqa: E731 - rank only
            if any(strip(de[k]) != strip(le[k]) for k in de) and not any(f in ("priority", "order_key") for f, _, _ in fields):
                fields.append(("rank", "", "specificity order of entries changed"))
        if fields:
            changed.append(RuleChange(r.display_id, "change", tuple(fields), len(le), len(de)))
    for r in sorted(l_slots.values(), key=lambda r: r.id_bytes):
        if ident(r) not in d_idents:
            removed.append(RuleChange(r.display_id, "remove", entries_before=len(l_entries.get(r.slot, {}))))
    return RuleSummary(tuple(added), tuple(changed), tuple(removed))


def slots_to_reset(desired: Contents, active: Contents) -> tuple[int, ...]:
    """Slots whose per-rule state (counters, token bucket, event budget)
    must start from zero: those that get a rule the active generation does
    not hold in that same slot."""
    d = decode_slots(desired.get("pepc_slots", {}))
    a = decode_slots(active.get("pepc_slots", {}))
    out = []
    for slot, r in d.items():
        old = a.get(slot)
        if old is None or (old.id_bytes, old.id_len) != (r.id_bytes, r.id_len):
            out.append(slot)
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


def expected_gen_value(contents: Contents) -> bytes | None:
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
            "policy_digest": bytes.fromhex(contents_digest(c)),
        }
    )


def find_drift(active: Contents, desired: Contents | None = None, desired_digest: str | None = None) -> Drift:
    g = gen_info(active)
    stored = str(g["policy_digest"]) if g else None
    actual = contents_digest(active)
    gen_ok = expected_gen_value(active) == normalize(active)["pepc_gen"].get(u32(0))
    delta = GenDelta()
    if desired is not None and stored is not None and stored == desired_digest:
        delta = diff_generation(desired, active)
    return Drift(digest_ok=(gen_ok and stored == actual), stored_digest=stored, contents_digest=actual, delta=delta)
