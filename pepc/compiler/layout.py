"""The data-plane binary layout, defined once.

The header template renders these structs into C (with _Static_asserts on
every size and offset), the plan encoder packs values with them, and the
kernel layer decodes live map contents with them. Changing anything here
changes the layout digest, which forces a program reload on apply.

Byte order: fields typed `be16`/`be32` hold packet-order (network) bytes so
the XDP program can compare them with header fields directly; everything
else is little-endian, the byte order of the hosts pepc supports (x86_64,
arm64) and therefore of their BPF programs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import struct as _struct
from dataclasses import dataclass, field
from typing import Any, Mapping

# Capacities are a host setting (pepc.yaml `capacities:`); the layout sizes
# its maps from them, and its callers keep naming them `layout.Capacities`.
from pepc.policy.config import Capacities

# ctype name -> (C spelling, struct format char, size)
CTYPES: dict[str, tuple[str, str, int]] = {
    "u8": ("__u8", "B", 1),
    "u16": ("__u16", "H", 2),
    "u32": ("__u32", "I", 4),
    "u64": ("__u64", "Q", 8),
    "be16": ("__be16", "H", 2),
    "be32": ("__be32", "I", 4),
    "char": ("char", "s", 1),
    "spin_lock": ("struct bpf_spin_lock", "I", 4),
}


@dataclass(frozen=True)
class Field:
    name: str
    ctype: str
    count: int = 1  # > 1: an array (chars: a fixed-size string)
    doc: str = ""

    @property
    def size(self) -> int:
        return CTYPES[self.ctype][2] * self.count

    @property
    def align(self) -> int:
        return CTYPES[self.ctype][2]

    @property
    def c_decl(self) -> str:
        ctype = CTYPES[self.ctype][0]
        return f"{ctype} {self.name}[{self.count}]" if self.count > 1 else f"{ctype} {self.name}"


@dataclass(frozen=True)
class Struct:
    """A C struct laid out by the C rules (natural alignment, no packing).

    Every declared field is explicit, padding included, so the C compiler
    has nothing to insert and hashing keys see no uninitialised bytes.
    """

    name: str
    fields: tuple[Field, ...]
    doc: str = ""

    # Offsets, size and packers depend only on the (frozen) fields: they are
    # computed once per struct and cached in the instance __dict__
    # (functools.cached_property writes there directly, which a frozen
    # dataclass allows). Packing is then one precompiled struct.Struct call
    # per byte-order run instead of a per-field walk.

    @functools.cached_property
    def _offsets(self) -> dict[str, int]:
        out, off = {}, 0
        for f in self.fields:
            if off % f.align:
                raise ValueError(f"{self.name}.{f.name} is misaligned at {off}: add explicit padding")
            out[f.name] = off
            off += f.size
        return out

    @property
    def offsets(self) -> dict[str, int]:
        return dict(self._offsets)

    @functools.cached_property
    def size(self) -> int:
        last = self.fields[-1]
        end = self._offsets[last.name] + last.size
        align = max(f.align for f in self.fields)
        if end % align:
            raise ValueError(f"{self.name} needs tail padding to {align}")
        return end

    @property
    def c_name(self) -> str:
        return f"struct {self.name}"

    @functools.cached_property
    def _segments(self) -> tuple[tuple[_struct.Struct, int], ...]:
        """The struct as runs of fields sharing a byte order: (packer, number
        of values it takes). Padding is 'x' (no value), chars 'Ns' (one
        bytes value), arrays N values."""
        segs: list[tuple[str, str, int]] = []  # (order, format, values)
        for f in self.fields:
            ch = CTYPES[f.ctype][1]
            if f.name.startswith("_pad"):
                order, fmt, n = None, f"{f.size}x", 0
            elif f.ctype == "char":
                order, fmt, n = None, f"{f.count}s", 1
            else:
                order = ">" if f.ctype.startswith("be") else "<"
                if f.align == 1:
                    order = None  # single bytes have no byte order
                fmt, n = (f"{f.count}{ch}" if f.count > 1 else ch), f.count
            if segs and (order is None or segs[-1][0] in (None, order)):
                o, s, k = segs[-1]
                segs[-1] = (o if order is None else order, s + fmt, k + n)
            else:
                segs.append((order, fmt, n))
        out = tuple((_struct.Struct((o or "<") + s), n) for o, s, n in segs)
        if sum(p.size for p, _ in out) != self.size:
            raise AssertionError(f"{self.name}: packers disagree with the layout")
        return out

    @functools.cached_property
    def packer(self) -> _struct.Struct | None:
        """One struct.Struct for the whole struct (values in field order,
        padding skipped, arrays flattened, chars as bytes) when all its
        multi-byte fields share one byte order; None otherwise."""
        segs = self._segments
        return segs[0][0] if len(segs) == 1 else None

    @functools.cached_property
    def pack_values(self):
        """pack_values(*values) -> bytes: positional fast path, values in
        field order as for `packer` (padding skipped, arrays flattened)."""
        segs = self._segments
        if len(segs) == 1:
            return segs[0][0].pack
        parts = []
        i = 0
        for p, n in segs:
            parts.append((p.pack, i, i + n))
            i += n

        def pack_values(*values: Any) -> bytes:
            return b"".join([f(*values[a:b]) for f, a, b in parts])

        return pack_values

    @functools.cached_property
    def unpack_values(self):
        """unpack_values(data) -> tuple: the inverse of pack_values."""
        segs = self._segments
        if len(segs) == 1:
            return segs[0][0].unpack_from
        parts = []
        off = 0
        for p, _ in segs:
            parts.append((p.unpack_from, off))
            off += p.size

        def unpack_values(data: bytes) -> tuple:
            out: tuple = ()
            for f, o in parts:
                out += f(data, o)
            return out

        return unpack_values

    @functools.cached_property
    def _value_fields(self) -> tuple[tuple[str, int, bool], ...]:
        """(name, count, is_char) of every field that takes values."""
        return tuple((f.name, f.count, f.ctype == "char") for f in self.fields if not f.name.startswith("_pad"))

    def pack(self, values: Mapping[str, Any]) -> bytes:
        """Pack named field values (missing fields and padding are zero).
        Arrays take a sequence (chars take bytes); be* fields take host ints."""
        flat: list[Any] = []
        get = values.get
        for name, count, is_char in self._value_fields:
            v = get(name)
            if is_char:
                flat.append(b"" if v is None else bytes(v))
            elif count > 1:
                if v is None:
                    flat.extend([0] * count)
                else:
                    v = list(v)
                    if len(v) != count:
                        raise _struct.error(f"{self.name}.{name} takes {count} values")
                    flat.extend(v)
            else:
                flat.append(0 if v is None else v)
        return self.pack_values(*flat)

    def unpack(self, data: bytes) -> dict[str, Any]:
        if len(data) < self.size:
            raise ValueError(f"{self.name}: {len(data)} bytes, need {self.size}")
        vals = self.unpack_values(data)
        out: dict[str, Any] = {}
        i = 0
        for name, count, is_char in self._value_fields:
            if is_char:
                out[name] = bytes(vals[i]).rstrip(b"\0")
                i += 1
            elif count > 1:
                out[name] = list(vals[i : i + count])
                i += count
            else:
                out[name] = vals[i]
                i += 1
        return out

    def describe(self) -> dict:
        return {
            "name": self.name,
            "size": self.size,
            "fields": [[f.name, f.ctype, f.count, self._offsets[f.name]] for f in self.fields],
        }


def _pad(n: int, idx: int = 0) -> Field:
    return Field(f"_pad{idx}", "u8", n)


U32_KEY = Struct("pepc_u32", (Field("v", "u32"),), "an array index")
U64_VALUE = Struct("pepc_u64", (Field("v", "u64"),), "a counter")

CTRL = Struct(
    "pepc_ctrl",
    (
        Field("active_gen", "u32", doc="0 or 1: which generation of rules/masks/slots/gen the program reads"),
        Field("flags", "u32"),
        Field("layout_digest", "u8", 16, doc="digest of this layout, written at load"),
    ),
    "the single control word; flipping active_gen is the atomic switch",
)

GEN = Struct(
    "pepc_gen",
    (
        Field("n_masks", "u32", doc="masks in use in this generation's masks map"),
        Field("default_action", "u8"),
        Field("_pad0", "u8", 3),
        Field("event_cap", "u32", doc="LOG_ONLY events per rule per second per CPU"),
        Field("n_rules", "u32"),
        Field("policy_digest", "u8", 32),
        Field("n_masks6", "u32", doc="masks in use in this generation's IPv6 masks map"),
        Field("_pad1", "u8", 4),
    ),
    "per-generation settings",
)

MASK = Struct(
    "pepc_mask",
    (
        Field("best_rank", "u64", doc="smallest rank of any entry under this mask"),
        Field("src_mask", "be32"),
        Field("dst_mask", "be32"),
        Field("sport_mask", "be16"),
        Field("dport_mask", "be16"),
        Field("src_plen", "u8"),
        Field("dst_plen", "u8"),
        Field("sport_plen", "u8"),
        Field("dport_plen", "u8"),
        Field("proto_plen", "u8", doc="8: the protocol is part of the key; 0: wildcard"),
        Field("_pad0", "u8", 7),
    ),
    "one tuple-space mask; masks are stored in ascending best_rank",
)

RULE_KEY = Struct(
    "pepc_rule_key",
    (
        Field("src_plen", "u8"),
        Field("dst_plen", "u8"),
        Field("sport_plen", "u8"),
        Field("dport_plen", "u8"),
        Field("proto_plen", "u8"),
        Field("proto", "u8"),
        Field("_pad0", "u8", 2),
        Field("src", "be32"),
        Field("dst", "be32"),
        Field("sport", "be16"),
        Field("dport", "be16"),
    ),
    "the mask's shape plus the packet fields under that mask",
)

# IPv6 has its own masks and rule maps (pepc_masks6_<gen>, pepc_rules6_<gen>)
# rather than one key wide enough for both: the IPv4 key stays 20 bytes, so
# IPv4 pays nothing for IPv6. Addresses and their masks are 16 network-order
# bytes at 8-aligned offsets (the program reads them as two u64 words).
MASK6 = Struct(
    "pepc_mask6",
    (
        Field("best_rank", "u64", doc="smallest rank of any entry under this mask"),
        Field("src_mask", "u8", 16),
        Field("dst_mask", "u8", 16),
        Field("sport_mask", "be16"),
        Field("dport_mask", "be16"),
        Field("src_plen", "u8"),
        Field("dst_plen", "u8"),
        Field("sport_plen", "u8"),
        Field("dport_plen", "u8"),
        Field("proto_plen", "u8", doc="8: the protocol is part of the key; 0: wildcard"),
        Field("_pad0", "u8", 7),
    ),
    "one IPv6 tuple-space mask; masks are stored in ascending best_rank",
)

RULE6_KEY = Struct(
    "pepc_rule6_key",
    (
        Field("src_plen", "u8"),
        Field("dst_plen", "u8"),
        Field("sport_plen", "u8"),
        Field("dport_plen", "u8"),
        Field("proto_plen", "u8"),
        Field("proto", "u8"),
        Field("_pad0", "u8", 2),
        Field("src", "u8", 16),
        Field("dst", "u8", 16),
        Field("sport", "be16"),
        Field("dport", "be16"),
        Field("_pad1", "u8", 4),
    ),
    "the IPv6 mask's shape plus the packet fields under that mask",
)

RULE_VAL = Struct(
    "pepc_rule_val",
    (
        Field("rank", "u64", doc="position in the total order: smaller wins"),
        Field("slot", "u32"),
        Field("action", "u8"),
        Field("_pad0", "u8", 3),
    ),
)

#: entries the program probes past a key's home in the direct table (pepc/compiler/direct.py)
DIRECT_DEPTH = 3

DIRECT = Struct(
    "pepc_direct",
    (
        Field("key_shape", "u64", doc="the rule-map key's bytes 0-7, as the program reads them"),
        Field("key_addrs", "u64", doc="key bytes 8-15"),
        Field("key_ports", "u32", doc="key bytes 16-19"),
        Field("flags", "u8", doc="bit 0: in use; bit 1: a key with this home is in the rule map only"),
        Field("_pad0", "u8", 3),
        # the rule-map value, verbatim (struct pepc_rule_val)
        Field("rank", "u64"),
        Field("slot", "u32"),
        Field("action", "u8"),
        Field("_pad1", "u8", 3),
    ),
    "one entry of the direct table (pepc/compiler/direct.py): a rule-map key and its value",
)

DIRECT6 = Struct(
    "pepc_direct6",
    (
        Field("key_shape", "u64", doc="the IPv6 rule-map key's bytes 0-7, as the program reads them"),
        Field("key_src", "u64", 2, doc="key bytes 8-23"),
        Field("key_dst", "u64", 2, doc="key bytes 24-39"),
        Field("key_ports", "u64", doc="key bytes 40-47 (ports, padding)"),
        Field("flags", "u8", doc="bit 0: in use; bit 1: a key with this home is in the rule map only"),
        Field("_pad0", "u8", 7),
        Field("rank", "u64"),
        Field("slot", "u32"),
        Field("action", "u8"),
        Field("_pad1", "u8", 3),
    ),
    "one entry of the IPv6 direct table (pepc/compiler/direct.py): an IPv6 rule-map key and its value",
)

RULE_ID_LEN = 64

SLOT = Struct(
    "pepc_slot",
    (
        Field("rate_bps", "u64"),
        Field("burst_bytes", "u64"),
        Field("order_key", "u64", doc="the id's place in string order (low bits of rank)"),
        Field("priority", "u32"),
        Field("action", "u8"),
        Field("flags", "u8", doc="bit 0: slot in use"),
        Field("id_len", "u16", doc="length of the full id in bytes (id is truncated to 64)"),
        Field("id", "char", RULE_ID_LEN),
    ),
    "per-generation, per-rule settings, indexed by slot",
)

RULE_STATS = Struct(
    "pepc_rule_stats",
    (Field("packets", "u64"), Field("bytes", "u64"), Field("drops", "u64")),
    "per-CPU per-rule counters, indexed by slot",
)

RL_STATE = Struct(
    "pepc_rl_state",
    (
        Field("lock", "spin_lock"),
        Field("_pad0", "u8", 4),
        Field("tokens", "u64", doc="bytes available"),
        Field("last_ns", "u64", doc="bpf_ktime_get_ns() of the last refill; 0: full bucket"),
    ),
    "token bucket of a RATE_LIMIT rule, shared by all CPUs, indexed by slot",
)

EV_BUDGET = Struct(
    "pepc_evbudget",
    (Field("window_ns", "u64"), Field("count", "u32"), Field("suppressed", "u32")),
    "per-CPU per-rule event budget for the current one-second window",
)

EVENT = Struct(
    "pepc_event",
    (
        Field("ts_ns", "u64"),
        Field("slot", "u32"),
        Field("src", "be32", doc="IPv4 source (0 for IPv6)"),
        Field("dst", "be32", doc="IPv4 destination (0 for IPv6)"),
        Field("sport", "be16"),
        Field("dport", "be16"),
        Field("proto", "u8"),
        Field("action", "u8"),
        Field("family", "u8", doc="4 or 6: which of src/dst or src6/dst6 hold the addresses"),
        Field("_pad0", "u8"),
        Field("len", "u32"),
        Field("src6", "u8", 16, doc="IPv6 source, network order (zero for IPv4)"),
        Field("dst6", "u8", 16, doc="IPv6 destination, network order (zero for IPv4)"),
    ),
    "a ring-buffer record for a LOG_ONLY hit",
)

STRUCTS: tuple[Struct, ...] = (CTRL, GEN, MASK, RULE_KEY, MASK6, RULE6_KEY, RULE_VAL, DIRECT, DIRECT6, SLOT, RULE_STATS, RL_STATE, EV_BUDGET, EVENT)

#: Global counters (per-CPU array indexed by these). Order is ABI.
COUNTERS: tuple[str, ...] = (
    "packets",
    "pass",
    "drop",
    "allow",
    "block",
    "log_only",
    "rate_limit_pass",
    "rate_limit_drop",
    "default_pass",
    "default_drop",
    "guard_pass",  # a guarded ICMPv6 packet no rule matched (semantics.GUARDED_ICMPV6_TYPES)
    "non_ip",  # neither IPv4 nor IPv6 (ARP, LLDP, a third VLAN tag, ...): passed untouched
    "ipv4",  # frames with the IPv4 ethertype, malformed ones included
    "ipv6",  # frames with the IPv6 ethertype, malformed ones included
    "err_eth_truncated",
    "err_vlan_truncated",
    "err_ip_truncated",
    "err_ip_bad_header",
    "err_ip6_truncated",  # shorter than the fixed IPv6 header: passed
    "err_ip6_bad_header",  # version != 6: passed
    "err_ip6_ext",  # an extension-header chain the parser cannot walk to its end: dropped
    "err_l4_truncated",
    "fragments",
    "events_sent",
    "events_suppressed",
    "events_lost",
)

XDP_DROP = 1
XDP_PASS = 2

SLOT_FLAG_USED = 1

# The rank is a u64: 16 bits (65535 - priority), 9 bits (511 - specificity:
# an IPv6 atom's reaches 296), 39 bits order key of the rule id. Positions in a dense order would change
# for every rule behind an inserted one; these keys change only for the
# rules that change, so a one-rule edit is a one-rule delta.
RANK_PRIO_SHIFT = 48
RANK_SPEC_SHIFT = 39
ORDER_KEY_BITS = 39


@dataclass(frozen=True)
class MapDef:
    name: str  # kernel map name (<= 15 chars)
    kind: str  # BPF_MAP_TYPE_* suffix
    key: Struct | None
    value: Struct | None
    max_entries: str  # capacity attribute name, or a literal
    per_generation: bool = False  # exists as name_0 and name_1
    doc: str = ""

    def entries(self, caps: Capacities) -> int:
        if self.max_entries.isdigit():
            return int(self.max_entries)
        if self.max_entries == "counters":
            return len(COUNTERS)
        if self.max_entries == "bloom":
            return caps.max_entries + 1  # one u64 word per rule entry, then the marker
        if self.max_entries == "direct":
            return 2 * caps.max_entries + DIRECT_DEPTH + 1  # pepc/compiler/direct.py: 2 homes per entry, DEPTH past the last, the marker
        return getattr(caps, self.max_entries)

    def kernel_names(self) -> tuple[str, ...]:
        if self.per_generation:
            return (f"{self.name}_0", f"{self.name}_1")
        return (self.name,)


MAPS: tuple[MapDef, ...] = (
    MapDef("pepc_ctrl", "ARRAY", U32_KEY, CTRL, "1", doc="active generation"),
    MapDef("pepc_gen", "ARRAY", U32_KEY, GEN, "2", doc="per-generation settings, indexed by generation"),
    MapDef("pepc_masks", "ARRAY", U32_KEY, MASK, "max_masks", True, "masks in ascending best rank"),
    MapDef("pepc_rules", "HASH", RULE_KEY, RULE_VAL, "max_entries", True, "(mask shape, masked fields) -> rank, slot, action"),
    MapDef("pepc_masks6", "ARRAY", U32_KEY, MASK6, "max_masks", True, "IPv6 masks in ascending best rank"),
    MapDef("pepc_rules6", "HASH", RULE6_KEY, RULE_VAL, "max_entries", True, "IPv6 (mask shape, masked fields) -> rank, slot, action"),
    MapDef("pepc_slots", "ARRAY", U32_KEY, SLOT, "max_rules", True, "per-rule settings by slot"),
    MapDef(
        "pepc_bloom",
        "ARRAY",
        U32_KEY,
        U64_VALUE,
        "bloom",
        True,
        "mask prefilter: Bloom words over the rule keys, then a marker (contents derived, pepc/compiler/bloom.py)",
    ),
    MapDef(
        "pepc_bloom6",
        "ARRAY",
        U32_KEY,
        U64_VALUE,
        "bloom",
        True,
        "IPv6 mask prefilter over the IPv6 rule keys, then a marker (contents derived, pepc/compiler/bloom.py)",
    ),
    MapDef(
        "pepc_direct",
        "ARRAY",
        U32_KEY,
        DIRECT,
        "direct",
        True,
        "the rule map as an open-addressing table the program reads inline, then a marker (contents derived, pepc/compiler/direct.py)",
    ),
    MapDef(
        "pepc_direct6",
        "ARRAY",
        U32_KEY,
        DIRECT6,
        "direct",
        True,
        "the IPv6 rule map as an open-addressing table the program reads inline, then a marker (contents derived, pepc/compiler/direct.py)",
    ),
    MapDef("pepc_stats", "PERCPU_ARRAY", U32_KEY, RULE_STATS, "max_rules", doc="per-rule counters by slot"),
    MapDef("pepc_rl", "ARRAY", U32_KEY, RL_STATE, "max_rules", doc="token buckets by slot"),
    MapDef("pepc_evbudget", "PERCPU_ARRAY", U32_KEY, EV_BUDGET, "max_rules", doc="event budgets by slot"),
    MapDef("pepc_counters", "PERCPU_ARRAY", U32_KEY, U64_VALUE, "counters", doc="global counters"),
    MapDef("pepc_events", "RINGBUF", None, None, "ring_bytes", doc="LOG_ONLY events"),
)


def map_def(name: str) -> MapDef:
    for m in MAPS:
        if m.name == name:
            return m
    raise KeyError(name)


@functools.lru_cache(maxsize=1)
def program_source_digest() -> str:
    """sha256 of the XDP program's source: a changed program must be reloaded
    even when no struct changed, so its source is part of the layout digest."""
    from pepc.policy.resources import BPF_DIR

    try:
        return hashlib.sha256((BPF_DIR / "pepc_xdp.c").read_bytes()).hexdigest()
    except OSError:
        return "absent"


def layout_description(caps: Capacities) -> dict:
    """Everything a program's binary interface depends on."""
    return {
        "program": program_source_digest(),
        "structs": [s.describe() for s in STRUCTS],
        "maps": [
            [m.name, m.kind, m.key.name if m.key else None, m.value.name if m.value else None, m.entries(caps), m.per_generation]
            for m in MAPS
        ],
        "counters": list(COUNTERS),
        "rank": [RANK_PRIO_SHIFT, RANK_SPEC_SHIFT, ORDER_KEY_BITS],
        "capacities": caps.describe(),
    }


def layout_digest(caps: Capacities) -> str:
    """32 hex digits; equal digests mean a live program can take a plan as is."""
    blob = json.dumps(layout_description(caps), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def rank_of(priority: int, specificity: int, order_key: int) -> int:
    return ((0xFFFF - priority) << RANK_PRIO_SHIFT) | ((0x1FF - specificity) << RANK_SPEC_SHIFT) | order_key
