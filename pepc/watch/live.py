"""Reading the data-plane snapshot that /metrics reports, from the pins.

Opened afresh at every scrape: a reload swaps the pinned maps, and a
scrape must describe what the kernel runs now, not what it ran when the
service started.
"""

from __future__ import annotations

import os
from typing import Iterable

from pepc.compiler import layout
from pepc.watch.events import slot_rule_id
from pepc.watch.metrics import LiveSnapshot, RuleCounters


def read_snapshot(pin_dir: str | os.PathLike, interfaces: Iterable[str] = ()) -> LiveSnapshot | None:
    """None when no instance is pinned at `pin_dir`."""
    from pepc.kernel import dataplane, loader

    inst = loader.open_instance(pin_dir)
    if inst is None:
        return None
    try:
        ctrl = dataplane.read_ctrl(inst)
        gen = ctrl["active_gen"] & 1
        names: dict[int, str] = {}
        for key, raw in inst.map(f"pepc_slots_{gen}").items():
            rid = slot_rule_id(raw)
            if rid is not None:
                names[int.from_bytes(key, "little")] = rid
        stats = dataplane.read_all_rule_stats(inst)
        zero = {"packets": 0, "bytes": 0, "drops": 0}
        rules = tuple(
            RuleCounters(rid, slot, **stats.get(slot, zero)) for slot, rid in sorted(names.items(), key=lambda kv: kv[1])
        )
        raw_gen = inst.map("pepc_gen").lookup(dataplane.u32(gen))
        g = layout.GEN.unpack(raw_gen) if raw_gen else {"n_masks": 0, "n_masks6": 0, "n_rules": 0, "policy_digest": b""}
        rules_map = inst.map(f"pepc_rules_{gen}")
        rules6_map = inst.map(f"pepc_rules6_{gen}")
        usage = {
            "pepc_rules": (len(rules_map.keys()), rules_map.max_entries),
            "pepc_masks": (g["n_masks"], inst.map(f"pepc_masks_{gen}").max_entries),
            "pepc_rules6": (len(rules6_map.keys()), rules6_map.max_entries),
            "pepc_masks6": (g["n_masks6"], inst.map(f"pepc_masks6_{gen}").max_entries),
            "pepc_slots": (len(names), inst.map(f"pepc_slots_{gen}").max_entries),
        }
        attached = {}
        if interfaces:
            from pepc.kernel import netlink

            for ifname in interfaces:
                try:
                    q = netlink.query(ifname)
                except Exception:
                    q = None
                attached[ifname] = q is not None and q[0] == inst.prog_id
        return LiveSnapshot(
            active_gen=gen,
            rules=rules,
            counters=dataplane.read_counters(inst),
            usage=usage,
            attached=attached,
            policy_digest=bytes(g["policy_digest"]).hex(),
        )
    finally:
        inst.close()
