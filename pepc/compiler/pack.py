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

from pepc.compiler import layout
from pepc.compiler.program import Mask, Program, SlotInfo

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
    if sh.v6:
        return layout.MASK6.pack_values(
            m.best_rank, *src.to_bytes(16, "big"), *dst.to_bytes(16, "big"), sp, dp,
            sh.src_plen, sh.dst_plen, sh.sport_plen, sh.dport_plen, sh.proto_plen,
        )
    return layout.MASK.pack_values(
        m.best_rank, src, dst, sp, dp, sh.src_plen, sh.dst_plen, sh.sport_plen, sh.dport_plen, sh.proto_plen
    )


def mask_fields(data: bytes) -> dict[str, int]:
    """layout.MASK.unpack(data)."""
    return layout.MASK.unpack(data)


def mask6_fields(data: bytes) -> dict[str, int]:
    """layout.MASK6.unpack(data), the address masks as 128-bit ints."""
    m = layout.MASK6.unpack(data)
    m["src_mask"] = int.from_bytes(bytes(m["src_mask"]), "big")
    m["dst_mask"] = int.from_bytes(bytes(m["dst_mask"]), "big")
    return m


@lru_cache(maxsize=64)
def layout_digest(caps: layout.Capacities) -> str:
    """layout.layout_digest, computed once per capacities."""
    return layout.layout_digest(caps)


def rule_key_bytes(shape_fields: tuple[int, int, int, int, int], proto: int, src: int, dst: int, sport: int, dport: int) -> bytes:
    return compiled(layout.RULE_KEY).pack(*shape_fields, proto, src, dst, sport, dport)


def map_contents(program: Program) -> dict[str, dict[bytes, bytes]]:
    """Exactly `program.map_contents()`, positional packing for the small
    maps; the rule map is the compiler's packed contents (a copy)."""
    rules = dict(program.rule_contents())
    u32 = compiled(layout.U32_KEY).pack
    return {
        "pepc_gen": {u32(0): program.gen_value()},
        "pepc_masks": {u32(i): mask_value(m) for i, m in enumerate(program.masks)},
        "pepc_rules": rules,
        "pepc_masks6": {u32(i): mask_value(m) for i, m in enumerate(program.masks6)},
        "pepc_rules6": dict(program.rule6_contents()),
        "pepc_slots": dict(program.packed_slots) if program.packed_slots is not None else slot_values(program.slots),
    }


def slot_value(s: SlotInfo) -> bytes:
    """SlotInfo.value_bytes(), positionally."""
    raw = s.rule_id.encode("utf-8")
    return layout.SLOT.pack_values(
        s.rate_bps, s.burst_bytes, s.order_key, s.priority, int(s.action), layout.SLOT_FLAG_USED, min(len(raw), 0xFFFF), raw[: layout.RULE_ID_LEN]
    )


def slot_values(slots: Iterable[SlotInfo]) -> dict[bytes, bytes]:
    """{slot index: SlotInfo.value_bytes()}, fast."""
    u32 = layout.U32_KEY.pack_values
    return {u32(s.slot): slot_value(s) for s in slots}


# The policy digest is an order-independent multiset hash, so that the
# incremental compiler (and a reconciler tracking live contents) can update
# it in O(changes): the sum mod 2^256 of one sha256 per map element over
# (map name, key, value), finalised by sha256 together with the element
# counts, the default action and the event cap.
DIGEST_MOD = 1 << 256
_DIGEST_TAGS = {name: name.encode() + b"\0" for name in ("pepc_masks", "pepc_rules", "pepc_slots", "pepc_masks6", "pepc_rules6")}
_sha256 = hashlib.sha256
_from_bytes = int.from_bytes


def element_hash(map_name: str, key: bytes, value: bytes) -> int:
    """One map element's term of the policy digest's sum."""
    return _from_bytes(_sha256(_DIGEST_TAGS[map_name] + key + value).digest(), "little")


def contents_sum(map_name: str, content: dict[bytes, bytes]) -> int:
    """The sum (mod 2^256) of element_hash over one map's contents."""
    tag = _DIGEST_TAGS[map_name]
    return sum(_from_bytes(_sha256(tag + k + v).digest(), "little") for k, v in content.items()) % DIGEST_MOD


def finish_digest(
    total: int, n_masks: int, n_rules: int, n_slots: int, default_action: int, event_cap: int, n_masks6: int = 0, n_rules6: int = 0
) -> str:
    h = _sha256(b"pepc-policy-digest-v2\0")
    h.update(struct.pack("<BIQQQ", default_action, event_cap, n_masks, n_rules, n_slots))
    if n_masks6 or n_rules6:
        # only with IPv6 contents, so that an IPv4-only policy keeps the
        # digest it had before IPv6 existed (its IPv6 sums are zero too)
        h.update(struct.pack("<QQ", n_masks6, n_rules6))
    h.update((total % DIGEST_MOD).to_bytes(32, "little"))
    return h.hexdigest()


def policy_digest(
    masks: dict[bytes, bytes],
    rules: dict[bytes, bytes],
    slots: dict[bytes, bytes],
    default_action: int,
    event_cap: int,
    masks6: dict[bytes, bytes] | None = None,
    rules6: dict[bytes, bytes] | None = None,
) -> str:
    """The digest of everything one generation holds except the digest
    itself (pepc_gen carries it): equal digests mean equal data planes."""
    masks6, rules6 = masks6 or {}, rules6 or {}
    total = contents_sum("pepc_masks", masks) + contents_sum("pepc_rules", rules) + contents_sum("pepc_slots", slots)
    total += contents_sum("pepc_masks6", masks6) + contents_sum("pepc_rules6", rules6)
    return finish_digest(total, len(masks), len(rules), len(slots), default_action, event_cap, len(masks6), len(rules6))
