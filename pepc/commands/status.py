"""`pepc status`: what runs on this host, read from the kernel.

The instance's pinned maps give the program, layout digest, active
generation, policy digest and usage; a netlink scan of every interface
gives where the program is attached and in which mode. Only the git commit
of the policy directory and the time of the last apply come from the audit
trail.
"""

from __future__ import annotations

import argparse

from pepc.commands._host import add_config_arg, add_instance_arg, add_text_json, host_config, print_json
from pepc.policy.diagnostics import ExitCode
from pepc.reconcile.status import collect

NAME = "status"
HELP = "show the instance loaded on this host: interfaces, program, digests, usage"
ORDER = 42
DESCRIPTION = __doc__.split("\n\n", 1)[1].strip()


def register(parser: argparse.ArgumentParser) -> None:
    add_instance_arg(parser)
    add_config_arg(parser)
    add_text_json(parser)


def run(args: argparse.Namespace) -> int:
    config = host_config(args)
    # only a given pepc.yaml says which capacities are wanted
    st = collect(config, args.instance, compare_layout=bool(args.config))
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
