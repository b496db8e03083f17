"""`pepc history`: the instance's audit trail, newest first.

One record per apply (and per refused or failed one): its number (what
`pepc rollback --to N` takes), time, result, policy digest, git commit of
the policy directory (`+`: with uncommitted changes) and the revision it
was applied as (--revision, rollback), rules added / changed / removed,
map elements written, duration.
"""

from __future__ import annotations

import argparse

from pepc.commands._host import add_config_arg, add_instance_arg, add_text_json, host_config, print_json
from pepc.policy.diagnostics import ExitCode
from pepc.reconcile import audit

NAME = "history"
HELP = "show the audit trail of applies on this host, newest first"
ORDER = 46
DESCRIPTION = __doc__.split("\n\n", 1)[1].strip()


def register(parser: argparse.ArgumentParser) -> None:
    add_instance_arg(parser)
    add_config_arg(parser)
    add_text_json(parser)
    parser.add_argument("--limit", metavar="N", type=int, default=0, help="show at most N records (default: all)")


def run(args: argparse.Namespace) -> int:
    config = host_config(args)
    recs = [{"n": n, **r} for n, r in enumerate(audit.read(config.state_dir, args.instance), 1)][::-1]
    if args.limit > 0:
        recs = recs[: args.limit]
    if args.format == "json":
        print_json(recs)
        return ExitCode.OK
    if not recs:
        print(f"no history for instance {args.instance!r} ({audit.audit_path(config.state_dir, args.instance)})")
        return ExitCode.OK
    print(f"{'#':>4} {'time':<25} {'result':<10} {'policy':<12} {'commit':<10} {'rules +/~/-':<13} {'writes':>7} {'ms':>9}")
    for r in recs:
        rules = r.get("rules") or {}
        rr = f"{rules.get('added', 0)}/{rules.get('changed', 0)}/{rules.get('removed', 0)}" if rules else "-"
        git = r.get("git") or {}
        commit = (git.get("commit") or "")[:8] + ("+" if git.get("dirty") else "") if git else "-"
        digest = (r.get("policy_digest") or "-")[:12]
        print(
            f"{r['n']:>4} {str(r.get('time', '?')):<25} {str(r.get('result', '?')):<10} {digest:<12} {commit:<10} {rr:<13} "
            f"{r.get('map_writes', 0):>7} {r.get('duration_ms', 0):>9.1f}"
        )
        if git.get("rollback_to"):
            print(f"    rollback to #{git['rollback_to']} ({git.get('path') or '.'} at {git.get('commit', '')[:12]})")
        elif git.get("revision"):
            print(f"    revision {git['revision']} ({git.get('path') or '.'} at {git.get('commit', '')[:12]})")
        if r.get("error"):
            print(f"    error: {r['error']}")
        for f in (r.get("findings") or [])[:3]:
            print(f"    {f.get('where')}: {f.get('code')}: {f.get('message')}")
        if r.get("findings_total", 0) > 3:
            print(f"    ... {r['findings_total'] - 3} more")
    return ExitCode.OK
