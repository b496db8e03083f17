"""The compiled program: exactly what one generation of the data plane holds.

`compile` produces a Program; `plan` serialises it; the simulator walks it
the way the XDP program does; the reconciler diffs its map contents against
the live maps. Map contents are produced here, in one place, with the
structs of layout.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from pepc.compiler import layout
from pepc.policy.model import Action, Location


def prefix_mask(plen: int, bits: int) -> int:
    return ((1 << bits) - 1) ^ ((1 << (bits - plen)) - 1) if plen else 0


@dataclass(frozen=True, order=True)
class MaskShape:
    """Which bits of each field a tuple-space mask keeps."""

    src_plen: int
    dst_plen: int
    sport_plen: int
    dport_plen: int
    proto_plen: int  # 8 or 0
    v6: bool = False  # an IPv6 mask (pepc_masks6 / pepc_rules6): 128-bit addresses

    @property
    def bits(self) -> int:
        return 128 if self.v6 else 32

    @property
    def has_ports(self) -> bool:
        return bool(self.sport_plen or self.dport_plen)

    def fields(self) -> dict[str, int]:
        return {
            "src_plen": self.src_plen,
            "dst_plen": self.dst_plen,
            "sport_plen": self.sport_plen,
            "dport_plen": self.dport_plen,
            "proto_plen": self.proto_plen,
        }

    def masks(self) -> tuple[int, int, int, int, int]:
        """(src, dst, sport, dport, proto) bit masks in host integers."""
        return (
            prefix_mask(self.src_plen, self.bits),
            prefix_mask(self.dst_plen, self.bits),
            prefix_mask(self.sport_plen, 16),
            prefix_mask(self.dport_plen, 16),
            0xFF if self.proto_plen else 0,
        )


@dataclass(frozen=True)
class Mask:
    shape: MaskShape
    best_rank: int

    def value_bytes(self) -> bytes:
        src, dst, sp, dp, _ = self.shape.masks()
        if self.shape.v6:
            return layout.MASK6.pack(
                {
                    "best_rank": self.best_rank,
                    "src_mask": src.to_bytes(16, "big"),
                    "dst_mask": dst.to_bytes(16, "big"),
                    "sport_mask": sp,
                    "dport_mask": dp,
                    **self.shape.fields(),
                }
            )
        return layout.MASK.pack(
            {
                "best_rank": self.best_rank,
                "src_mask": src,
                "dst_mask": dst,
                "sport_mask": sp,
                "dport_mask": dp,
                **self.shape.fields(),
            }
        )


@dataclass(frozen=True, order=True)
class EntryKey:
    shape: MaskShape
    proto: int
    src: int
    dst: int
    sport: int
    dport: int

    def key_bytes(self) -> bytes:
        if self.shape.v6:
            return rule6_key_bytes(self.shape, self.proto, self.src, self.dst, self.sport, self.dport)
        return layout.RULE_KEY.pack(
            {**self.shape.fields(), "proto": self.proto, "src": self.src, "dst": self.dst, "sport": self.sport, "dport": self.dport}
        )


_KEY6_PACK = layout.RULE6_KEY.pack_values
_KEY6_UNPACK = layout.RULE6_KEY.unpack_values
#: the size of an IPv6 rule key: the compiler keeps both families' keys in
#: one table and tells them apart by length (the IPv4 key is shorter)
KEY6_SIZE = layout.RULE6_KEY.size
assert layout.RULE_KEY.size != KEY6_SIZE


def rule6_key_bytes(shape: MaskShape, proto: int, src: int, dst: int, sport: int, dport: int) -> bytes:
    """The packed pepc_rule6_key (addresses as 128-bit host ints)."""
    return _KEY6_PACK(
        shape.src_plen, shape.dst_plen, shape.sport_plen, shape.dport_plen, shape.proto_plen, proto,
        *src.to_bytes(16, "big"), *dst.to_bytes(16, "big"), sport, dport,
    )


def unpack_rule6_key(kb: bytes) -> tuple[int, int, int, int, int, int, int, int, int, int]:
    """(src_plen, dst_plen, sport_plen, dport_plen, proto_plen, proto, src,
    dst, sport, dport) of a packed pepc_rule6_key, addresses as ints."""
    v = _KEY6_UNPACK(kb)
    return (*v[:6], int.from_bytes(bytes(v[6:22]), "big"), int.from_bytes(bytes(v[22:38]), "big"), v[38], v[39])  # type: ignore[return-value]


@dataclass(frozen=True)
class Entry:
    key: EntryKey
    rank: int
    slot: int
    action: Action
    rule_id: str  # for reports; not in the map

    def value_bytes(self) -> bytes:
        return layout.RULE_VAL.pack({"rank": self.rank, "slot": self.slot, "action": int(self.action)})


@dataclass(frozen=True)
class SlotInfo:
    slot: int
    rule_id: str
    action: Action
    priority: int
    order_key: int
    rate_bps: int
    burst_bytes: int
    loc: Location

    def value_bytes(self) -> bytes:
        raw = self.rule_id.encode("utf-8")
        return layout.SLOT.pack(
            {
                "rate_bps": self.rate_bps,
                "burst_bytes": self.burst_bytes,
                "order_key": self.order_key,
                "priority": self.priority,
                "action": int(self.action),
                "flags": layout.SLOT_FLAG_USED,
                "id_len": min(len(raw), 0xFFFF),
                "id": raw[: layout.RULE_ID_LEN],
            }
        )


_new = object.__new__
_set = object.__setattr__


class _LazyEntries:
    """`Program.entries`: given, or decoded from the packed rule contents on
    first use (most users of a 10^5-rule program never look at it). A data
    descriptor, so the dataclass machinery (init, eq, hash, repr,
    dataclasses.replace) sees an ordinary field."""

    def __get__(self, obj, owner=None):
        if obj is None:
            return None  # the field's default: derive from packed_rules
        entries = obj.__dict__.get("_entries")
        if entries is None:
            entries = _decode_entries(obj.__dict__["packed_rules"], obj.slots, obj.__dict__.get("packed_rules6") or {})
            obj.__dict__["_entries"] = entries
        return entries

    def __set__(self, obj, value):
        obj.__dict__["_entries"] = value


@dataclass(frozen=True)
class ProgramDelta:
    """How a Program differs from the one the same compiler returned just
    before it (`source`, `serial` - 1): every rule-map and slot-map key
    whose element may have changed, with its new packed value (None: gone).
    Keys not listed hold the same element in both. Lets a caller that kept
    the previous contents update them, and diff them, in O(change).
    `rules`/`slots` are None when the compiler started afresh (no base)."""

    source: int  # the compiler's identity (a new one after each of its resets)
    serial: int  # this Program's number from that compiler; the base is serial - 1
    rules: Mapping[bytes, bytes | None] | None
    slots: Mapping[bytes, bytes | None] | None
    rules6: Mapping[bytes, bytes | None] | None = None  # the same for pepc_rules6


@dataclass(frozen=True)
class Program:
    """One compiled generation. The compiler hands over the packed rule-map
    contents (`packed_rules`, key bytes -> value bytes: what the reconciler
    and the digest need) and leaves `entries` to be decoded on demand; a
    Program built from `entries` packs them on demand instead."""

    caps: layout.Capacities
    default_action: Action
    event_cap: int
    masks: tuple[Mask, ...]  # ascending best_rank: the order the data plane walks (IPv4)
    entries: tuple[Entry, ...] = _LazyEntries()  # type: ignore[assignment]  # IPv4 sorted by key, then IPv6 sorted by key
    slots: tuple[SlotInfo, ...] = ()  # sorted by slot
    policy_digest: str = ""  # 64 hex digits
    layout_digest: str = ""  # 32 hex digits
    packed_rules: dict[bytes, bytes] | None = field(default=None, compare=False, repr=False)
    masks6: tuple[Mask, ...] = ()  # the IPv6 masks, ascending best_rank
    #: the pepc_rules6 contents, packed (with packed_rules; None: none or from entries)
    packed_rules6: dict[bytes, bytes] | None = field(default=None, compare=False, repr=False)
    # Set by the compiler after construction (not init fields: a
    # dataclasses.replace of a Program must not carry them over):
    #: how it differs from the compiler's previous Program
    delta: ProgramDelta | None = field(default=None, init=False, compare=False, repr=False)
    #: the pepc_slots contents, packed, when the compiler had them at hand
    #: (a one-shot compile hands over its own table); else packed on demand
    packed_slots: dict[bytes, bytes] | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        given = self.__dict__.get("_entries")
        if given is not None:
            _set(self, "packed_rules", None)  # entries are authoritative (dataclasses.replace keeps both)
            _set(self, "packed_rules6", None)
        elif self.packed_rules is None:
            raise TypeError("a Program takes entries or packed_rules")

    @property
    def n_entries(self) -> int:
        """IPv4 and IPv6 rule-map entries together."""
        return len(self.rule_contents()) + len(self.rule6_contents())

    def rule6_contents(self) -> dict[bytes, bytes]:
        """The pepc_rules6 contents, packed. Shared: do not modify."""
        rules = self.packed_rules6
        if rules is None:
            if "_entries" not in self.__dict__ and self.packed_rules is not None:
                rules = {}  # compiled without IPv6 entries
            else:
                pack_val = layout.RULE_VAL.pack_values
                rules = {e.key.key_bytes(): pack_val(e.rank, e.slot, int(e.action)) for e in self.entries if e.key.shape.v6}
            _set(self, "packed_rules6", rules)
        return rules

    def rule_contents(self) -> dict[bytes, bytes]:
        """The pepc_rules contents (IPv4), packed. Shared: do not modify."""
        rules = self.packed_rules
        if rules is None:
            pack_key, pack_val = layout.RULE_KEY.pack_values, layout.RULE_VAL.pack_values
            rules = {}
            for e in self.entries:
                k, sh = e.key, e.key.shape
                if sh.v6:
                    continue
                rules[pack_key(sh.src_plen, sh.dst_plen, sh.sport_plen, sh.dport_plen, sh.proto_plen, k.proto, k.src, k.dst, k.sport, k.dport)] = pack_val(
                    e.rank, e.slot, int(e.action)
                )
            _set(self, "packed_rules", rules)
        return rules

    def gen_value(self) -> bytes:
        return layout.GEN.pack(
            {
                "n_masks": len(self.masks),
                "default_action": int(self.default_action),
                "event_cap": self.event_cap,
                "n_rules": len(self.slots),
                "policy_digest": bytes.fromhex(self.policy_digest),
                "n_masks6": len(self.masks6),
            }
        )

    def map_contents(self) -> dict[str, dict[bytes, bytes]]:
        """Contents of one generation, by logical map name (layout.MAPS).

        `pepc_gen` has a single entry whose key is the placeholder index 0:
        the reconciler writes it at the index of the generation it fills.
        Unused array slots are zero in the kernel and absent here.
        """
        u32 = layout.U32_KEY.pack
        return {
            "pepc_gen": {u32({"v": 0}): self.gen_value()},
            "pepc_masks": {u32({"v": i}): m.value_bytes() for i, m in enumerate(self.masks)},
            "pepc_rules": dict(self.rule_contents()),
            "pepc_masks6": {u32({"v": i}): m.value_bytes() for i, m in enumerate(self.masks6)},
            "pepc_rules6": dict(self.rule6_contents()),
            "pepc_slots": {u32({"v": s.slot}): s.value_bytes() for s in self.slots},
        }

    def slot_of(self, rule_id: str) -> int | None:
        for s in self.slots:
            if s.rule_id == rule_id:
                return s.slot
        return None


def _decode_entries(rules: dict[bytes, bytes], slots: tuple[SlotInfo, ...], rules6: Mapping[bytes, bytes] = {}) -> tuple[Entry, ...]:
    """Entries for packed rule contents, sorted by key. The packed key is
    big-endian in field order, so sorting by its bytes is sorting by
    EntryKey. Built without the frozen-dataclass __init__ (one
    object.__setattr__ per field): the same objects at half the cost;
    tests/test_compiler.py checks equality with the constructor."""
    ids = {s.slot: s.rule_id for s in slots}
    unkey, unval = layout.RULE_KEY.unpack_values, layout.RULE_VAL.unpack_values
    actions = {int(a): a for a in Action}
    shapes: dict[bytes, MaskShape] = {}
    out = []
    for kb in sorted(rules):
        sh = kb[:5]
        shape = shapes.get(sh)
        if shape is None:
            shape = shapes[sh] = MaskShape(*sh)
        _, _, _, _, _, proto, src, dst, sport, dport = unkey(kb)
        rank, slot, action = unval(rules[kb])
        key = _new(EntryKey)
        _set(key, "__dict__", {"shape": shape, "proto": proto, "src": src, "dst": dst, "sport": sport, "dport": dport})
        entry = _new(Entry)
        _set(entry, "__dict__", {"key": key, "rank": rank, "slot": slot, "action": actions[action], "rule_id": ids.get(slot, "")})
        out.append(entry)
    for kb in sorted(rules6):
        sp, dp, spl, dpl, ppl, proto, src, dst, sport, dport = unpack_rule6_key(kb)
        rank, slot, action = unval(rules6[kb])
        out.append(Entry(EntryKey(MaskShape(sp, dp, spl, dpl, ppl, True), proto, src, dst, sport, dport), rank, slot, actions[action], ids.get(slot, "")))
    return tuple(out)
