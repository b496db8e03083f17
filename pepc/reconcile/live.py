"""Read an instance's live state from its pinned maps.

Everything comes from the kernel: the control word (active generation,
layout digest) and both generations of pepc_gen / pepc_masks / pepc_rules /
pepc_slots, hash maps with batch lookups. The result has the shape of
`Program.map_contents()` so that diff.py can compare the two directly.
"""

from __future__ import annotations

from typing import Any, Mapping

from pepc.compiler import layout
from pepc.reconcile import diff
from pepc.reconcile.state import Attachment, LiveState

#: Logical maps whose element shapes the reconciler must understand.
_SHAPES = {
    "pepc_ctrl": layout.CTRL,
    "pepc_gen": layout.GEN,
    "pepc_masks": layout.MASK,
    "pepc_rules": layout.RULE_VAL,
    "pepc_masks6": layout.MASK6,
    "pepc_rules6": layout.RULE_VAL,
    "pepc_slots": layout.SLOT,
}


def compatible(maps: Mapping[str, Any]) -> list[str]:
    """Why these maps cannot be read with this pepc's layout ([] when they can)."""
    problems = []
    for m in layout.MAPS:
        for name in m.kernel_names():
            bm = maps.get(name)
            if bm is None:
                problems.append(f"map {name} is missing")
                continue
            if m.key is not None and bm.key_size != m.key.size:
                problems.append(f"{name}: key is {bm.key_size} bytes, this pepc expects {m.key.size}")
            if m.value is not None and bm.value_size != m.value.size:
                problems.append(f"{name}: value is {bm.value_size} bytes, this pepc expects {m.value.size}")
    return problems


def read_ctrl(maps: Mapping[str, Any]) -> tuple[int, str, int]:
    """(active_gen, layout digest hex, flags) from pepc_ctrl[0]."""
    ctrl = maps["pepc_ctrl"]
    raw = ctrl.lookup(diff.u32(0))
    if raw is None or ctrl.value_size != layout.CTRL.size:
        return 0, "", 0
    c = layout.CTRL.unpack(raw)
    return c["active_gen"] & 1, bytes(c["layout_digest"]).hex(), c["flags"]


def _array_nonzero(bm: Any) -> dict[bytes, bytes]:
    from pepc.kernel.bulk import read_nonzero

    return read_nonzero(bm)


def _hash_all(bm: Any) -> dict[bytes, bytes]:
    from pepc.kernel.bulk import read_dict

    return read_dict(bm)


def read_generation(maps: Mapping[str, Any], gen: int) -> dict[str, dict[bytes, bytes]]:
    raw_gen = maps["pepc_gen"].lookup(diff.u32(gen))
    out = diff.empty_contents()
    if raw_gen is not None and any(raw_gen):
        out["pepc_gen"] = {diff.u32(0): raw_gen}
    out["pepc_masks"] = _array_nonzero(maps[f"pepc_masks_{gen}"])
    out["pepc_slots"] = _array_nonzero(maps[f"pepc_slots_{gen}"])
    out["pepc_rules"] = _hash_all(maps[f"pepc_rules_{gen}"])
    # IPv6 (compatible() has checked they exist with this layout's shapes)
    out["pepc_masks6"] = _array_nonzero(maps[f"pepc_masks6_{gen}"])
    out["pepc_rules6"] = _hash_all(maps[f"pepc_rules6_{gen}"])
    for name in (diff.BLOOM, diff.BLOOM6):
        bloom_map = maps.get(f"{name}_{gen}")
        if bloom_map is not None:
            out[name] = _array_nonzero(bloom_map)
    for name in (diff.DIRECT, diff.DIRECT6):
        direct_map = maps.get(f"{name}_{gen}")
        if direct_map is not None:
            out[name] = _array_nonzero(direct_map)
    return out


def bloom_words(maps: Mapping[str, Any]) -> int | None:
    """Words of the prefilter maps (both generations), None without them."""
    b0, b1 = maps.get(f"{diff.BLOOM}_0"), maps.get(f"{diff.BLOOM}_1")
    if b0 is None or b1 is None or b0.max_entries != b1.max_entries or b0.value_size != 8:
        return None
    # the IPv6 prefilter has the same size by layout (both are "bloom")
    for name in (f"{diff.BLOOM6}_0", f"{diff.BLOOM6}_1"):
        b6 = maps.get(name)
        if b6 is not None and (b6.max_entries != b0.max_entries or b6.value_size != 8):
            return None
    return b0.max_entries - 1


def direct_homes(maps: Mapping[str, Any]) -> int | None:
    """Homes of the direct-table maps (both generations), None without them."""
    from pepc.compiler import direct

    d0, d1 = maps.get(f"{diff.DIRECT}_0"), maps.get(f"{diff.DIRECT}_1")
    if d0 is None or d1 is None or d0.max_entries != d1.max_entries or d0.value_size != layout.DIRECT.size:
        return None
    for name in (f"{diff.DIRECT6}_0", f"{diff.DIRECT6}_1"):  # the IPv6 table: the same number of homes
        d6 = maps.get(name)
        if d6 is not None and (d6.max_entries != d0.max_entries or d6.value_size != layout.DIRECT6.size):
            return None
    n = direct.homes_of_map(d0.max_entries)
    return n if n >= 1 else None


def capacities(maps: Mapping[str, Any]) -> dict[str, int]:
    return {m.name: maps[m.kernel_names()[0]].max_entries for m in layout.MAPS if m.kernel_names()[0] in maps}


def read_live(
    instance: str,
    pin_dir: str,
    maps: Mapping[str, Any],
    prog_id: int | None = None,
    attachments: tuple[Attachment, ...] = (),
) -> LiveState:
    """`maps`: kernel map name -> open map (pepc.kernel.maps.BpfMap).

    When the maps do not have this pepc's element shapes (a layout from
    another version), the generations read as empty and the layout digest
    as "" so the planner takes the load path."""
    if compatible(maps):
        active, digest, _ = read_ctrl(maps) if "pepc_ctrl" in maps else (0, "", 0)
        return LiveState(
            instance=instance,
            pin_dir=pin_dir,
            layout_digest="" if digest == "" else f"incompatible:{digest}",
            active_gen=active,
            gens=(diff.empty_contents(), diff.empty_contents()),
            prog_id=prog_id,
            capacities=capacities(maps),
            attachments=attachments,
        )
    active, digest, _ = read_ctrl(maps)
    return LiveState(
        instance=instance,
        pin_dir=pin_dir,
        layout_digest=digest,
        active_gen=active,
        gens=(read_generation(maps, 0), read_generation(maps, 1)),
        prog_id=prog_id,
        capacities=capacities(maps),
        attachments=attachments,
        bloom_words=bloom_words(maps),
        direct_homes=direct_homes(maps),
    )
