"""Whole-generation writes and counter reads on an Instance.

`write_generation` writes a compiled Program into one generation in full
(clear, then batch-write): what tests and a fresh load need. The reconciler
writes minimal deltas instead, through the same BpfMap calls.
"""

from __future__ import annotations

import struct

from pepc.compiler import bloom, direct, layout
from pepc.compiler import pack
from pepc.kernel.loader import Instance
from pepc.compiler.program import Program

_U32 = struct.Struct("<I").pack  # layout.U32_KEY, without the per-call field lookup
assert layout.U32_KEY.size == 4


def u32(i: int) -> bytes:
    return _U32(i)


def read_ctrl(inst: Instance) -> dict:
    raw = inst.map("pepc_ctrl").lookup(u32(0))
    return layout.CTRL.unpack(raw or bytes(layout.CTRL.size))


def init_ctrl(inst: Instance, layout_digest: str, active_gen: int = 0) -> None:
    """Write the control word of a freshly loaded object."""
    inst.map("pepc_ctrl").update(
        u32(0), layout.CTRL.pack({"active_gen": active_gen & 1, "layout_digest": bytes.fromhex(layout_digest)})
    )


def active_gen(inst: Instance) -> int:
    return read_ctrl(inst)["active_gen"] & 1


def set_active(inst: Instance, gen: int) -> None:
    """Flip the data plane to generation `gen` with one map write.

    The write rewrites the whole 24-byte control value, but only the low
    byte of active_gen differs between the old and the new value, so a
    packet reading concurrently sees either generation, never a torn value.
    """
    ctrl = read_ctrl(inst)
    ctrl["active_gen"] = gen & 1
    inst.map("pepc_ctrl").update(u32(0), layout.CTRL.pack(ctrl))


def write_generation(inst: Instance, gen: int, program: Program) -> None:
    """Make generation `gen` hold exactly `program` (full rewrite), mask
    prefilter (pepc.compiler.bloom) and direct table (pepc.compiler.direct) included when the
    loaded program has them."""
    if gen not in (0, 1):
        raise ValueError("a generation is 0 or 1")
    contents = pack.map_contents(program)
    masks = inst.map(f"pepc_masks_{gen}")
    rules = inst.map(f"pepc_rules_{gen}")
    slots = inst.map(f"pepc_slots_{gen}")
    bloom_map = inst.maps.get(f"{bloom.MAP_NAME}_{gen}")

    direct_map = inst.maps.get(f"{direct.MAP_NAME}_{gen}")
    # invalidate the old prefilter and table first: until the new ones are
    # complete, the program does plain hash-map lookups
    for derived in (bloom_map, direct_map):
        if derived is not None:
            derived.update(u32(derived.max_entries - 1), bytes(derived.value_size))

    # masks: rewrite the whole array (n_masks bounds the walk, but stale
    # rows would still be confusing in dumps)
    mask_vals = [contents["pepc_masks"].get(u32(i), bytes(masks.value_size)) for i in range(masks.max_entries)]
    masks.update_batch([u32(i) for i in range(masks.max_entries)], mask_vals)

    rules.clear()
    r = contents["pepc_rules"]
    if r:
        rules.update_batch(list(r), list(r.values()))

    # IPv6 (an object built before IPv6 has no such maps)
    masks6 = inst.maps.get(f"pepc_masks6_{gen}")
    rules6 = inst.maps.get(f"pepc_rules6_{gen}")
    bloom6_map = inst.maps.get(f"{bloom.MAP_NAME6}_{gen}")
    direct6_map = inst.maps.get(f"{direct.MAP_NAME6}_{gen}")
    if bloom6_map is not None:
        bloom6_map.update(u32(bloom6_map.max_entries - 1), bytes(bloom6_map.value_size))
    if direct6_map is not None:
        direct6_map.update(u32(direct6_map.max_entries - 1), bytes(direct6_map.value_size))
    if masks6 is not None:
        vals6 = [contents["pepc_masks6"].get(u32(i), bytes(masks6.value_size)) for i in range(masks6.max_entries)]
        masks6.update_batch([u32(i) for i in range(masks6.max_entries)], vals6)
    r6 = contents["pepc_rules6"]
    if rules6 is not None:
        rules6.clear()
        if r6:
            rules6.update_batch(list(r6), list(r6.values()))

    slot_vals = [contents["pepc_slots"].get(u32(i), bytes(slots.value_size)) for i in range(slots.max_entries)]
    slots.update_batch([u32(i) for i in range(slots.max_entries)], slot_vals)

    gen_value = contents["pepc_gen"][u32(0)]
    inst.map("pepc_gen").update(u32(gen), gen_value)

    if bloom_map is not None:
        write_derived(bloom_map, bloom.contents(r, gen_value, bloom_map.max_entries - 1))
    if bloom6_map is not None:
        write_derived(bloom6_map, bloom.contents(r6, gen_value, bloom6_map.max_entries - 1, v6=True))
    if direct6_map is not None:
        write_derived(direct6_map, direct.contents(r6, gen_value, direct.homes_of_map(direct6_map.max_entries), v6=True))
    if direct_map is not None:
        write_derived(direct_map, direct.contents(r, gen_value, direct.homes_of_map(direct_map.max_entries)))


def write_derived(array_map, elements: dict[bytes, bytes]) -> None:
    """Write a whole marker-guarded array (pepc.compiler.bloom.contents,
    pepc.compiler.direct.contents): every element, absent ones as zeros, and the
    marker (the last element) last."""
    n = array_map.max_entries - 1
    marker_key = u32(n)
    keys = [u32(i) for i in range(n)]
    zero = bytes(array_map.value_size)
    array_map.update_batch(keys, [elements.get(k, zero) for k in keys])
    array_map.update(marker_key, elements.get(marker_key, zero))


def reset_rule_state(inst: Instance, slots: list[int] | None = None) -> None:
    """Zero per-rule counters, token buckets and event budgets (all slots
    when `slots` is None)."""
    for name in ("pepc_stats", "pepc_rl", "pepc_evbudget"):
        m = inst.map(name)
        keys = [u32(s) for s in slots] if slots is not None else m.keys()
        if not keys:
            continue
        if m.percpu:
            m.update_batch_percpu(keys, [m.zero_value()] * len(keys))  # type: ignore[list-item]
        else:
            m.update_batch(keys, [bytes(m.value_size)] * len(keys))


def load_program(inst: Instance, program: Program, gen: int | None = None) -> int:
    """Write `program` into the inactive generation (or `gen`) and make it
    active; returns the generation now active."""
    target = (1 - active_gen(inst)) if gen is None else gen
    write_generation(inst, target, program)
    set_active(inst, target)
    return target


def read_counters(inst: Instance) -> dict[str, int]:
    """Global counters by layout.COUNTERS name, summed over CPUs."""
    out = {name: 0 for name in layout.COUNTERS}
    for key, vals in inst.map("pepc_counters").items_percpu():
        i = int.from_bytes(key, "little")
        if i < len(layout.COUNTERS):
            out[layout.COUNTERS[i]] = sum(int.from_bytes(v[:8], "little") for v in vals)
    return out


_STATS = struct.Struct("<QQQ")  # layout.RULE_STATS, unpacked often: keep it cheap
assert _STATS.size == layout.RULE_STATS.size and list(layout.RULE_STATS.offsets) == ["packets", "bytes", "drops"]


def _sum_stats(vals: list[bytes]) -> dict[str, int]:
    p = b = d = 0
    for v in vals:
        vp, vb, vd = _STATS.unpack_from(v)
        p, b, d = p + vp, b + vb, d + vd
    return {"packets": p, "bytes": b, "drops": d}


def read_rule_stats(inst: Instance, slot: int) -> dict[str, int]:
    """packets/bytes/drops of one rule slot, summed over CPUs."""
    vals = inst.map("pepc_stats").lookup_percpu(u32(slot))
    return _sum_stats(vals or [])


def read_all_rule_stats(inst: Instance) -> dict[int, dict[str, int]]:
    """Every slot with a non-zero counter, summed over CPUs (one batch read)."""
    out = {}
    for key, vals in inst.map("pepc_stats").items_percpu():
        tot = _sum_stats(vals)
        if any(tot.values()):
            out[int.from_bytes(key, "little")] = tot
    return out


def read_bucket(inst: Instance, slot: int) -> dict:
    raw = inst.map("pepc_rl").lookup(u32(slot))
    return layout.RL_STATE.unpack(raw or bytes(layout.RL_STATE.size))
