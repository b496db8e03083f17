"""`pepc status`: what runs on this host, read from the kernel.

The instance's pinned maps give the program, layout digest, active
generation, policy digest and usage; a netlink scan of every interface
gives where the program is attached and in which mode. Only the git commit
of the policy directory and the time of the last apply come from the audit
trail.
"""

from __future__ import annotations

import argparse

from pepc import layout
from pepc.commands._host import add_config_arg, add_instance_arg, add_text_json, host_config, print_json
from pepc.diagnostics import ExitCode
from pepc.reconcile import audit, diff
from pepc.reconcile.apply import open_live, pin_dir

NAME = "status"
HELP = "show the instance loaded on this host: interfaces, program, digests, usage"
ORDER = 42
DESCRIPTION = __doc__.split("\n\n", 1)[1].strip()


def register(parser: argparse.ArgumentParser) -> None:
    add_instance_arg(parser)
    add_config_arg(parser)
    add_text_json(parser)


def collect(config, instance: str) -> dict:
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
            "layout_matches_this_pepc": None,
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


def run(args: argparse.Namespace) -> int:
    config = host_config(args)
    st = collect(config, args.instance)
    if st["loaded"] and args.config:  # only a given pepc.yaml says which capacities are wanted
        st["layout_matches_this_pepc"] = st["layout_digest"] == layout.layout_digest(config.capacities)
    if args.format == "json":
        print_json(st)
        return ExitCode.OK
    print(render(st), end="")
    return ExitCode.OK


def render(st: dict) -> str:
    out = [f"instance:        {st['instance']} ({st['pin_dir']})"]
    if not st["loaded"]:
        out.append("loaded:          no (run `pepc apply`)")
        if st.get("last_apply"):
            out.append(f"last attempt:    {st['last_apply'].get('last_attempt_at')} ({st['last_apply'].get('last_result')})")
        return "\n".join(out) + "\n"
    ifs = ", ".join(f"{i['ifname']} ({i['mode']})" for i in st["interfaces"]) or "none"
    out.append(f"program:         id {st['prog_id']}")
    out.append(f"interfaces:      {ifs}")
    out.append(f"layout digest:   {st['layout_digest']}" + ("" if st.get("layout_matches_this_pepc") in (None, True) else "  (differs from this pepc.yaml: the next apply reloads)"))
    out.append(f"active gen:      {st['active_gen']}" + ("" if st["generations_in_sync"] else "  (inactive generation out of date: the next apply syncs it)"))
    out.append(f"policy digest:   {st['policy_digest']}")
    g = st.get("policy_git")
    if g:
        out.append(f"policy commit:   {g.get('commit')}" + (" (dirty work tree)" if g.get("dirty") else "") + (f"  {st['policy_path']}" if st.get("policy_path") else ""))
    out.append(f"default action:  {st['default_action']}")
    u = st["usage"]
    for k, label in (("rules", "rules"), ("entries", "entries"), ("masks", "masks"), ("entries6", "entries (v6)"), ("masks6", "masks (v6)")):
        if k not in u:
            continue
        used, cap = u[k]["used"], u[k]["capacity"]
        pct = f" ({100 * used / cap:.1f}%)" if cap else ""
        out.append(f"{label + ':':<17}{used} / {cap}{pct}")
    out.append(f"drift:           {'YES: the active generation was modified outside pepc' if st['drift'] else 'none'}")
    la = st.get("last_apply") or {}
    out.append(f"last apply:      {la.get('applied_at') or 'unknown (no audit trail)'}")
    if la.get("last_result") and la.get("last_result") not in ("applied", "unchanged"):
        out.append(f"last attempt:    {la.get('last_attempt_at')} ({la.get('last_result')})")
    return "\n".join(out) + "\n"
