"""Fast, equivalent packing of a Program's map contents.

`Program.map_contents()` packs through layout.Struct.pack, which is general
and slow (tens of microseconds per entry). For plans with hundreds of
thousands of entries this module builds one `struct.Struct` per layout
struct from the same layout.py field list. tests/test_compiler.py proves the
bytes equal `Program.map_contents()` for every map.
"""

from __future__ import annotations

import hashlib
import struct
from functools import lru_cache
from typing import Iterable

from pepc import layout
from pepc.program import Mask, Program, SlotInfo

_FMT = {"u8": "B", "u16": "H", "u32": "I", "u64": "Q", "be16": "H", "be32": "I"}


@lru_cache(maxsize=None)
def compiled(s: layout.Struct) -> struct.Struct:
    """A struct.Struct with the layout of `s`, padding as 'x'. All multi-byte
    fields of `s` must share one byte order (true of the hot structs)."""
    orders = {("big" if f.ctype.startswith("be") else "little") for f in s.fields if f.align > 1 and f.ctype != "char"}
    if len(orders) > 1 or any(f.ctype == "spin_lock" for f in s.fields):
        raise ValueError(f"{s.name} mixes byte orders")
    fmt = ">" if orders == {"big"} else "<"
    off = 0
    offs = s.offsets
    for f in s.fields:
        assert offs[f.name] == off
        if f.name.startswith("_pad"):
            fmt += f"{f.size}x"
        elif f.ctype == "char":
            fmt += f"{f.count}s"
        else:
            fmt += f"{f.count}{_FMT[f.ctype]}" if f.count > 1 else _FMT[f.ctype]
        off += f.size
    packer = struct.Struct(fmt)
    assert packer.size == s.size, (s.name, packer.size, s.size)
    return packer


_MASK_HEAD = struct.Struct("<Q")
_MASK_TAIL = struct.Struct(">IIHHBBBBB7x")


def _check_mask_layout() -> None:
    # MASK mixes a little-endian rank with big-endian masks: two packers
    # back to back, valid only while layout.MASK keeps this field order.
    names = [(f.name, f.ctype, f.count) for f in layout.MASK.fields]
    assert names == [
        ("best_rank", "u64", 1), ("src_mask", "be32", 1), ("dst_mask", "be32", 1), ("sport_mask", "be16", 1),
        ("dport_mask", "be16", 1), ("src_plen", "u8", 1), ("dst_plen", "u8", 1), ("sport_plen", "u8", 1),
        ("dport_plen", "u8", 1), ("proto_plen", "u8", 1), ("_pad0", "u8", 7),
    ], "layout.MASK changed: update pepc/compiler/pack.py"
    assert _MASK_HEAD.size + _MASK_TAIL.size == layout.MASK.size


_check_mask_layout()


def mask_value(m: Mask) -> bytes:
    """Mask.value_bytes(), fast."""
    sh = m.shape
    src, dst, sp, dp, _ = sh.masks()
    return _MASK_HEAD.pack(m.best_rank) + _MASK_TAIL.pack(
        src, dst, sp, dp, sh.src_plen, sh.dst_plen, sh.sport_plen, sh.dport_plen, sh.proto_plen
    )


def mask_fields(data: bytes) -> dict[str, int]:
    """layout.MASK.unpack(data), fast."""
    (rank,) = _MASK_HEAD.unpack_from(data, 0)
    src, dst, sp, dp, a, b, c, d, e = _MASK_TAIL.unpack_from(data, _MASK_HEAD.size)
    return {
        "best_rank": rank, "src_mask": src, "dst_mask": dst, "sport_mask": sp, "dport_mask": dp,
        "src_plen": a, "dst_plen": b, "sport_plen": c, "dport_plen": d, "proto_plen": e,
    }


@lru_cache(maxsize=64)
def layout_digest(caps: layout.Capacities) -> str:
    """layout.layout_digest, computed once per capacities."""
    return layout.layout_digest(caps)


def rule_key_bytes(shape_fields: tuple[int, int, int, int, int], proto: int, src: int, dst: int, sport: int, dport: int) -> bytes:
    return compiled(layout.RULE_KEY).pack(*shape_fields, proto, src, dst, sport, dport)


def map_contents(program: Program) -> dict[str, dict[bytes, bytes]]:
    """Exactly `program.map_contents()`, fast for the big maps."""
    key_pack = compiled(layout.RULE_KEY).pack
    val_pack = compiled(layout.RULE_VAL).pack
    rules = {}
    for e in program.entries:
        k, sh = e.key, e.key.shape
        rules[key_pack(sh.src_plen, sh.dst_plen, sh.sport_plen, sh.dport_plen, sh.proto_plen, k.proto, k.src, k.dst, k.sport, k.dport)] = val_pack(
            e.rank, e.slot, int(e.action)
        )
    u32 = compiled(layout.U32_KEY).pack
    return {
        "pepc_gen": {u32(0): program.gen_value()},
        "pepc_masks": {u32(i): mask_value(m) for i, m in enumerate(program.masks)},
        "pepc_rules": rules,
        "pepc_slots": slot_values(program.slots),
    }


def slot_values(slots: Iterable[SlotInfo]) -> dict[bytes, bytes]:
    """{slot index: SlotInfo.value_bytes()}, fast."""
    u32 = compiled(layout.U32_KEY).pack
    slot_pack = compiled(layout.SLOT).pack
    used, id_len = layout.SLOT_FLAG_USED, layout.RULE_ID_LEN
    out = {}
    for s in slots:
        raw = s.rule_id.encode("utf-8")
        out[u32(s.slot)] = slot_pack(
            s.rate_bps, s.burst_bytes, s.order_key, s.priority, int(s.action), used, min(len(raw), 0xFFFF), raw[:id_len]
        )
    return out


def policy_digest(masks: dict[bytes, bytes], rules: dict[bytes, bytes], slots: dict[bytes, bytes], default_action: int, event_cap: int) -> str:
    """sha256 over everything one generation holds except the digest itself
    (pepc_gen carries it): equal digests mean equal data planes."""
    h = hashlib.sha256()
    h.update(b"pepc-policy-digest-v1\0")
    h.update(struct.pack("<BI", default_action, event_cap))
    for name, content in (("pepc_masks", masks), ("pepc_rules", rules), ("pepc_slots", slots)):
        h.update(name.encode() + b"\0" + struct.pack("<Q", len(content)))
        for k in sorted(content):
            h.update(k)
            h.update(content[k])
    return h.hexdigest()
