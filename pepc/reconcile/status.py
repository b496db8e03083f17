"""What an instance runs on this host, read from the kernel: `pepc status`
and the service's /status both show this one dict.

The instance's pinned maps give the program, layout digest, active
generation, policy digest and usage; the attachments give the interfaces
and modes. Only the git commit of the policy directory and the time of the
last apply come from the audit trail.
"""

from __future__ import annotations

from pepc.compiler import layout
from pepc.reconcile import audit, diff
from pepc.reconcile.apply import open_live, pin_dir


def collect(config, instance: str, *, compare_layout: bool = False) -> dict:
    """The status dict. `compare_layout`: say whether the loaded layout is
    the one `config.capacities` asks for (only when the caller knows the
    config is the host's real pepc.yaml; None otherwise)."""
    d = pin_dir(config, instance)
    inst, live = open_live(config, instance)
    last = audit.last(config.state_dir, instance, "applied") or None
    last_any = audit.last(config.state_dir, instance)
    if live is None:
        return {"instance": instance, "pin_dir": str(d), "loaded": False, "last_apply": _last(last, last_any)}
    try:
        active = live.active
        info = diff.gen_info(active) or {}
        other = diff.gen_info(live.inactive) or {}
        caps = live.capacities
        drift = diff.find_drift(active)
        usage = {
            "rules": {"used": len(active.get("pepc_slots", {})), "capacity": caps.get("pepc_slots")},
            "entries": {"used": len(active.get("pepc_rules", {})), "capacity": caps.get("pepc_rules")},
            "masks": {"used": len(active.get("pepc_masks", {})), "capacity": caps.get("pepc_masks")},
            # IPv6 has maps of its own, each as large as its IPv4 twin
            "entries6": {"used": len(active.get("pepc_rules6", {})), "capacity": caps.get("pepc_rules6")},
            "masks6": {"used": len(active.get("pepc_masks6", {})), "capacity": caps.get("pepc_masks6")},
        }
        git = None
        if last and last.get("policy_digest") == info.get("policy_digest"):
            git = last.get("git")
        return {
            "instance": instance,
            "pin_dir": str(d),
            "loaded": True,
            "prog_id": live.prog_id,
            "interfaces": [{"ifname": a.ifname, "ifindex": a.ifindex, "mode": a.mode} for a in live.attachments],
            "layout_digest": live.layout_digest,
            "layout_matches_this_pepc": live.layout_digest == layout.layout_digest(config.capacities) if compare_layout else None,
            "active_gen": live.active_gen,
            "policy_digest": info.get("policy_digest"),
            "default_action": info.get("default_action"),
            "generations_in_sync": diff.diff_generation(live.inactive, active).empty,
            "inactive_policy_digest": other.get("policy_digest"),
            "drift": drift.found,
            "usage": usage,
            "policy_git": git,
            "policy_path": last.get("policy_path") if last else None,
            "last_apply": _last(last, last_any),
        }
    finally:
        if inst is not None:
            inst.close()


def _last(last: dict | None, last_any: dict | None) -> dict | None:
    if not last and not last_any:
        return None
    out = {}
    if last:
        out["applied_at"] = last.get("time")
    if last_any:
        out["last_attempt_at"] = last_any.get("time")
        out["last_result"] = last_any.get("result")
    return out
