"""Pure comparison of desired and live generation contents.

Everything here works on the `Program.map_contents()` shape: logical map
name -> {key bytes: value bytes}, with `pepc_gen` under the placeholder key
0 and ARRAY maps holding only their non-zero elements. The live reader
(live.py) produces the same shape, so a diff is a comparison of dicts and
needs no kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import compress, filterfalse
from operator import itemgetter, ne
from collections import abc
from typing import Any, Iterable, Iterator, Mapping

from pepc.compiler import layout
from pepc.policy.model import Action

#: The maps that exist once per generation, in the order apply writes them.
#: `pepc_bloom` (the mask prefilter, pepc/compiler/bloom.py) and `pepc_direct` (the
#: direct table, pepc/compiler/direct.py) are derived from the rules and the policy
#: digest rather than carried by Program, and tolerated as absent so that an
#: instance loaded by an older pepc still reads. IPv6 has its own rule and
#: mask maps and its own prefilter and direct table (`pepc_bloom6`,
#: `pepc_direct6`, derived from pepc_rules6 like their IPv4 twins).
GEN_MAPS: tuple[str, ...] = (
    "pepc_rules", "pepc_rules6", "pepc_masks", "pepc_masks6", "pepc_slots", "pepc_gen",
    "pepc_bloom", "pepc_bloom6", "pepc_direct", "pepc_direct6",
)
BLOOM = "pepc_bloom"
BLOOM6 = "pepc_bloom6"
DIRECT = "pepc_direct"
DIRECT6 = "pepc_direct6"
#: the rule maps of both families (a rule's entries may be in either)
RULE_MAPS: tuple[str, ...] = ("pepc_rules", "pepc_rules6")

Contents = Mapping[str, Mapping[bytes, bytes]]

_U32 = __import__("struct").Struct("<I")  # layout.U32_KEY, packed fast: this runs per element
assert _U32.size == layout.U32_KEY.size


def u32(v: int) -> bytes:
    return _U32.pack(v)


def u32_of(key: bytes) -> int:
    return int.from_bytes(key[:4], "little")


def is_array(name: str) -> bool:
    return layout.map_def(name).kind != "HASH"


def _nonzero(content: Mapping[bytes, bytes]) -> Mapping[bytes, bytes]:
    # One C-level scan for a zero value (all values of a map have one size);
    # a copy only when there is something to drop.
    if not content:
        return content
    if isinstance(content, Overlay):  # scan the dicts behind it (at C speed), not the view
        cur = content.cur
        if not cur:
            return {k: v for k, v in content.items() if any(v)}
        zero = bytes(len(next(iter(cur.values()))))
        if zero not in cur.values() and zero not in content.undo.values():
            return content
        return {k: v for k, v in content.items() if any(v)}
    zero = bytes(len(next(iter(content.values()))))
    if zero not in content.values():
        return content
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
        out[name] = _nonzero(c) if is_array(name) else c
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


class Derived(dict):
    """A map's contents that equal `base` except, at most, at the keys in
    `touched` (the watch session's desired contents, edited from the
    compiler's ProgramDelta). diff_map compares only the touched keys when
    `live` is `base` itself. Constructed as a copy of `base`; the session
    keeps one and edits it in place, with `base` an Overlay of what it
    held at the last apply."""

    __slots__ = ("base", "touched")

    def __init__(self, base: Mapping[bytes, bytes] | Iterable = (), touched: Iterable[bytes] = ()):
        super().__init__(base)
        self.base: Mapping[bytes, bytes] | None = base
        self.touched = set(touched)


_NOT = object()  # no undo entry
MISSING = object()  # an undo entry: the key was absent


class Overlay(abc.Mapping):
    """What the dict `cur` held when the overlay was made, while `cur` is
    edited in place: whoever edits `cur` calls record(k) first, which keeps
    the old element (or that there was none). Reads cost a dict lookup or
    two; iterating is slower than a dict's but only the slow paths do it.
    The watch session's mirror holds these instead of copies of 10^5-
    element maps."""

    __slots__ = ("cur", "undo")

    def __init__(self, cur: dict) -> None:
        self.cur = cur
        self.undo: dict[bytes, Any] = {}

    def record(self, k: bytes) -> None:
        if k not in self.undo:
            self.undo[k] = self.cur.get(k, MISSING)

    def __getitem__(self, k: bytes) -> bytes:
        u = self.undo.get(k, _NOT)
        if u is _NOT:
            return self.cur[k]
        if u is MISSING:
            raise KeyError(k)
        return u

    def get(self, k: bytes, default: Any = None) -> Any:
        u = self.undo.get(k, _NOT)
        if u is _NOT:
            return self.cur.get(k, default)
        return default if u is MISSING else u

    def __contains__(self, k: object) -> bool:
        u = self.undo.get(k, _NOT)  # type: ignore[call-overload]
        return k in self.cur if u is _NOT else u is not MISSING

    def __len__(self) -> int:
        cur = self.cur
        n = len(cur)
        for k, v in self.undo.items():
            n += (v is not MISSING) - (k in cur)
        return n

    def __iter__(self) -> Iterator[bytes]:
        undo = self.undo
        for k in list(self.cur):
            if k not in undo:
                yield k
        for k, v in list(undo.items()):
            if v is not MISSING:
                yield k


def diff_map(name: str, desired: Mapping[bytes, bytes], live: Mapping[bytes, bytes]) -> MapDelta:
    # One C-level pass (map/compress: no tuple or set per element, so no
    # allocation for the garbage collector to chase) finds the keys whose
    # value differs or is missing; Python-level work only for those. Deletes
    # need a second pass only when the sizes say live has keys desired has not.
    if desired is live:  # a session's unchanged map
        return MapDelta(name)
    first = itemgetter(0)
    if type(desired) is Derived and desired.base is live:
        get = live.get
        writes = sorted(((k, desired[k]) for k in desired.touched if k in desired and get(k) != desired[k]), key=first)
        deletes = sorted(k for k in desired.touched if k not in desired and k in live)
        return MapDelta(name, tuple(writes), tuple(deletes), sum(1 for k, _ in writes if k in live))
    if desired == live:
        return MapDelta(name)
    if not live:
        return MapDelta(name, tuple(sorted(desired.items(), key=first)), (), 0)
    differ = list(compress(desired, map(ne, desired.values(), map(live.get, desired))))
    changed = sum(1 for k in differ if k in live)
    writes = sorted(((k, desired[k]) for k in differ), key=first)
    if len(live) == len(desired) - (len(differ) - changed):
        deletes: list[bytes] = []
    else:
        deletes = sorted(filterfalse(desired.__contains__, live))
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


def used_slots(slots: Mapping[bytes, bytes]) -> int:
    from operator import itemgetter

    return sum(1 for f in map(itemgetter(_FLAGS), slots.values()) if f & layout.SLOT_FLAG_USED)


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
        "n_masks6": g["n_masks6"],
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
    """Entries per slot (C-level: map/itemgetter feed Counter)."""
    from collections import Counter
    from operator import itemgetter

    got = Counter(map(itemgetter(slice(_RULE_VAL_SLOT, _RULE_VAL_SLOT + 4)), rules.values()))
    return {int.from_bytes(k, "little"): n for k, n in got.items()}


def _identity_bytes(rule_id: str) -> bytes:
    """The id_len + id bytes of the `pepc_slots` element of `rule_id`."""
    raw, n = identity(rule_id)
    return n.to_bytes(2, "little") + raw.ljust(layout.RULE_ID_LEN, b"\0")


_ORDER_KEY = slice(_SLOT_OFF["order_key"], _SLOT_OFF["order_key"] + 8)


def assignments_from_slots(slots: Mapping[bytes, bytes], rule_ids: Iterable[str]) -> tuple[dict[str, int], dict[str, int]]:
    """(slots, order_keys) by rule id, from one generation's `pepc_slots`.

    Ids longer than layout.RULE_ID_LEN are stored truncated: such an element
    is attributed to a rule of `rule_ids` only when exactly one id has that
    prefix and length; the others simply get new slots."""
    by_ident: dict[bytes, str | None] = {}
    for rid in rule_ids:
        ib = _identity_bytes(rid)
        by_ident[ib] = None if ib in by_ident else rid  # None: ambiguous
    slot_of: dict[str, int] = {}
    key_of: dict[str, int] = {}
    for k, v in slots.items():
        rid = by_ident.get(v[_IDENT])
        if rid is None or rid in slot_of or not v[_FLAGS] & layout.SLOT_FLAG_USED:
            continue
        slot_of[rid] = u32_of(k)
        key_of[rid] = int.from_bytes(v[_ORDER_KEY], "little")
    return slot_of, key_of


# --- rule-level summary ---------------------------------------------------------


@dataclass(frozen=True)
class RuleChange:
    rule_id: str
    kind: str  # "add" | "change" | "remove"
    fields: tuple[tuple[str, object, object], ...] = ()  # (field, before, after)
    entries_added: int = 0  # map entries the rule gains (all of them for an added rule)
    entries_removed: int = 0  # map entries it loses (all of them for a removed rule)

    def to_json(self) -> dict:
        return {
            "id": self.rule_id,
            "change": self.kind,
            "fields": {f: {"before": a, "after": b} for f, a, b in self.fields},
            "entries": {"added": self.entries_added, "removed": self.entries_removed},
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


def _find_ident(side: Mapping[bytes, bytes], ident_bytes: bytes) -> bytes | None:
    for k, v in side.items():
        if v[_IDENT] == ident_bytes and v[_FLAGS] & layout.SLOT_FLAG_USED:
            return k
    return None


def rule_summary(desired: Contents, live: Contents, delta: GenDelta | None = None) -> RuleSummary:
    """Rules added, changed (with the fields that change) and removed when
    `live` (one generation) becomes `desired`. Both sides are decoded from
    map contents, so the summary describes exactly what the data plane will
    do differently. Only elements that differ are looked at in Python (the
    comparisons run in C), so the cost follows the size of the change.
    `delta` is diff_generation(desired, live) when the caller has it."""
    from operator import itemgetter

    d_sl, l_sl = desired.get("pepc_slots", {}), live.get("pepc_slots", {})
    if not l_sl:  # nothing live: every rule is new (the first load)
        counts = entry_counts(desired.get("pepc_rules", {}))
        for s, n in entry_counts(desired.get("pepc_rules6", {})).items():
            counts[s] = counts.get(s, 0) + n
        rs = sorted(decode_slots(d_sl).values(), key=lambda r: r.id_bytes)
        return RuleSummary(added=tuple(RuleChange(r.display_id, "add", entries_added=counts.get(r.slot, 0)) for r in rs))
    slot_bytes = itemgetter(slice(_RULE_VAL_SLOT, _RULE_VAL_SLOT + 4))  # a rule value's slot, as a pepc_slots key
    if delta is None:
        delta = diff_generation(desired, live)
    sd = delta.of("pepc_slots")
    new_entries: list[tuple[bytes, bytes]] = []  # (key, value) the data plane gains, both families
    old_entries: list[tuple[bytes, bytes]] = []  # and loses
    for name in RULE_MAPS:
        rd, l_ru = delta.of(name), live.get(name, {})
        new_entries += rd.writes
        old_entries += [(k, l_ru[k]) for k, _ in rd.writes if k in l_ru] + [(k, l_ru[k]) for k in rd.deletes]
    touched = {k for k, _ in sd.writes} | set(sd.deletes)
    touched.update(slot_bytes(v) for _, v in new_entries)
    touched.update(slot_bytes(v) for _, v in old_entries)
    if not touched:
        return RuleSummary()
    d_slots = decode_slots(d_sl, touched)
    l_slots = decode_slots(l_sl, touched)
    gained: dict[bytes, set[bytes]] = {}  # slot key -> entry keys
    lost: dict[bytes, set[bytes]] = {}
    for k, v in new_entries:
        gained.setdefault(slot_bytes(v), set()).add(k)
    for k, v in old_entries:
        lost.setdefault(slot_bytes(v), set()).add(k)

    def ident(r: LiveRule) -> tuple[bytes, int]:
        return (r.id_bytes, r.id_len)

    # A rule that moved slot is the same rule: look for it on the other side
    # (a C-level set of identities first; the slow search only on a hit).
    # (built on first need: a one-rule edit in place needs neither)
    idents: dict[str, set[bytes]] = {}

    def has_ident(which: str, ib: bytes) -> bool:
        if which not in idents:
            idents[which] = set(map(itemgetter(_IDENT), (l_sl if which == "l" else d_sl).values()))
        return ib in idents[which]

    l_by_ident = {ident(r): r for r in l_slots.values()}
    for r in list(d_slots.values()):
        ib = d_sl[u32(r.slot)][_IDENT]
        if ident(r) not in l_by_ident and has_ident("l", ib):
            k = _find_ident(l_sl, ib)
            lr = decode_slot(k, l_sl[k]) if k is not None else None
            if lr is not None:
                l_by_ident[ident(lr)] = lr
    d_by_ident = {ident(r): r for r in d_slots.values()}
    for r in list(l_slots.values()):
        ib = l_sl[u32(r.slot)][_IDENT]
        if ident(r) not in d_by_ident and has_ident("d", ib):
            k = _find_ident(d_sl, ib)
            dr = decode_slot(k, d_sl[k]) if k is not None else None
            if dr is not None:
                d_by_ident[ident(dr)] = dr
                d_slots[dr.slot] = dr

    added, changed, removed = [], [], []
    empty: set[bytes] = set()
    for r in sorted(d_slots.values(), key=lambda r: r.id_bytes):
        old = l_by_ident.get(ident(r))
        new_keys = gained.get(u32(r.slot), empty)
        if old is None:
            added.append(RuleChange(r.display_id, "add", entries_added=len(new_keys)))
            continue
        old_keys = lost.get(u32(old.slot), empty)
        before, after = old.fields(), r.fields()
        fields = [(f, before[f], after[f]) for f in before if before[f] != after[f]]
        plus, minus = new_keys - old_keys, old_keys - new_keys  # keys on both sides: only the value changed
        if plus or minus:
            fields.append(("match", "", f"+{len(plus)} -{len(minus)} entries"))
        elif new_keys and not any(f in ("priority", "order_key", "action", "slot") for f, _, _ in fields):
            fields.append(("rank", "", "specificity order of entries changed"))
        if fields:
            changed.append(RuleChange(r.display_id, "change", tuple(fields), len(plus), len(minus)))
    for r in sorted(l_slots.values(), key=lambda r: r.id_bytes):
        if ident(r) not in d_by_ident:
            removed.append(RuleChange(r.display_id, "remove", entries_removed=len(lost.get(u32(r.slot), empty))))
    return RuleSummary(tuple(added), tuple(changed), tuple(removed))


def slots_to_reset(desired: Contents, active: Contents, delta: GenDelta | None = None) -> tuple[int, ...]:
    """Slots whose per-rule state (counters, token bucket, event budget)
    must start from zero: those that get a rule the active generation does
    not hold in that same slot. (An unchanged element keeps its rule, so
    only elements that differ are examined.)"""
    a = active.get("pepc_slots", {})
    if delta is None:
        delta = diff_generation(desired, active)
    out = []
    for k, v in delta.of("pepc_slots").writes:
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
        # `delta` is only ever filled when the stored digest is the desired
        # one: then any difference (the prefilter included, which the digest
        # does not cover) is drift
        return not self.digest_ok or not self.delta.empty

    def to_json(self) -> dict:
        return {
            "found": self.found,
            "stored_policy_digest": self.stored_digest,
            "contents_digest": self.contents_digest,
            "elements": {m.name: m.count for m in self.delta.maps if m.count},
        }


def contents_digest(contents: Contents) -> str:
    """The policy digest that `contents` deserve: compiler.pack.policy_digest
    (an order-independent sum of per-element hashes; tests hold the two
    equal)."""
    from pepc.compiler import pack

    c = normalize(contents)
    g = gen_info(c)
    default_action = int(g["default_action_value"]) if g else 0
    event_cap = int(g["event_cap"]) if g else 0
    return pack.policy_digest(
        c["pepc_masks"], c["pepc_rules"], c["pepc_slots"], default_action, event_cap, c["pepc_masks6"], c["pepc_rules6"]
    )


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
            "n_masks6": len(c["pepc_masks6"]),
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
