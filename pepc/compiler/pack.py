"""Positional packing of a Program's map contents.

A thin layer over layout.Struct's precompiled packers (the one definition
of the layout): values go in positionally, without building a dict per
element. tests/test_compiler.py proves the bytes equal
`Program.map_contents()` for every map.
"""

from __future__ import annotations

import hashlib
import struct
from functools import lru_cache
from typing import Iterable

from pepc import layout
from pepc.program import Mask, Program, SlotInfo

def compiled(s: layout.Struct) -> struct.Struct:
    """The struct.Struct of `s` (layout.Struct.packer): values in field
    order, padding as 'x'. Raises ValueError for a struct that mixes byte
    orders or holds a spin lock."""
    packer = s.packer
    if packer is None or any(f.ctype == "spin_lock" for f in s.fields):
        raise ValueError(f"{s.name} mixes byte orders")
    return packer


def mask_value(m: Mask) -> bytes:
    """Mask.value_bytes()."""
    sh = m.shape
    src, dst, sp, dp, _ = sh.masks()
    return layout.MASK.pack_values(
        m.best_rank, src, dst, sp, dp, sh.src_plen, sh.dst_plen, sh.sport_plen, sh.dport_plen, sh.proto_plen
    )


def mask_fields(data: bytes) -> dict[str, int]:
    """layout.MASK.unpack(data)."""
    return layout.MASK.unpack(data)


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
