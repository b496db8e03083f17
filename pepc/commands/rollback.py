"""`pepc rollback [--to N|REV]`: re-apply a revision this instance applied before.

The target is an earlier entry of `pepc history` whose policy came from a
clean git commit: by default the newest one from another commit than the
current one; `--to N` names the entry by its number in `pepc history`;
`--to REV` names a commit (any git revision form) that was applied here.
The tree of that commit is read from the repository the entry recorded
and applied exactly as `pepc apply --revision` does: the same check gate,
instance lock, minimal atomic delta and audit line (which says which
entry it rolled back to).
"""

from __future__ import annotations

import argparse
import os
import time

from pepc.commands._common import parse_now
from pepc.commands._host import add_config_arg, add_iface_arg, add_instance_arg, add_text_json, host_config, print_json
from pepc.commands.apply import apply_checkout, open_revision, render_result
from pepc.policy.diagnostics import ExitCode, Finding, PolicyError
from pepc.policy.model import Location
from pepc.reconcile import audit
from pepc.loader.revisions import RevisionProblem, resolve_commit

NAME = "rollback"
HELP = "re-apply a policy revision this instance applied before (same gate, lock and audit as apply)"
ORDER = 43
DESCRIPTION = __doc__.split("\n\n", 1)[1].strip()

#: audit results of an apply that left the maps holding its policy
LANDED = ("applied", "unchanged")


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--to", metavar="N|REV", default=None,
        help="the `pepc history` entry number, or a git revision applied before (default: the previous applied revision)",
    )
    add_instance_arg(parser)
    add_config_arg(parser)
    add_iface_arg(parser)
    parser.add_argument("--wait", metavar="SECONDS", type=float, default=0.0, help="wait up to SECONDS for the instance lock")
    parser.add_argument("--now", metavar="RFC3339", type=parse_now, default=None, help="the clock used for expiry (default: now)")
    add_text_json(parser)


def _problem(message: str, help: str = "") -> PolicyError:
    return PolicyError([Finding("bad-revision", message, Location("<--to>"), help=help or None)])


def rollback_target(records: list[dict], to: str | None) -> tuple[int, dict]:
    """(entry number, record) to roll back to; numbers are 1-based positions
    in the audit trail, oldest first, as `pepc history` shows them."""
    numbered = list(enumerate(records, 1))

    def usable(rec: dict) -> bool:
        g = rec.get("git") or {}
        return rec.get("result") in LANDED and bool(g.get("commit")) and g.get("dirty") is False and bool(rec.get("policy_path"))

    landed = [(n, r) for n, r in numbered if r.get("result") in LANDED]
    if not landed:
        raise _problem("this instance has no applied revision in its history", "apply one with `pepc apply` first")
    current = landed[-1][1]
    cur_key = ((current.get("git") or {}).get("commit"), (current.get("git") or {}).get("path"))
    if to is None:
        for n, r in reversed(landed[:-1]):
            g = r.get("git") or {}
            if usable(r) and (g.get("commit"), g.get("path")) != cur_key:
                return n, r
        raise _problem(
            "no earlier applied revision to roll back to",
            "`pepc history` lists the applies; only those from a clean git work tree or --revision can be re-applied",
        )
    if to.isdigit():
        n = int(to)
        if not 1 <= n <= len(records):
            raise _problem(f"history has no entry #{n} (it has {len(records)})", "`pepc history` numbers the entries")
        rec = records[n - 1]
        if rec.get("result") not in LANDED:
            raise _problem(f"entry #{n} was {rec.get('result')}, not applied", "pick an entry whose result is applied")
        g = rec.get("git") or {}
        if not g.get("commit"):
            raise _problem(f"entry #{n} was not applied from git, so its policy cannot be read back", "")
        if g.get("dirty") is not False:
            raise _problem(
                f"entry #{n} was applied from a work tree with uncommitted changes: its exact policy is not in git",
                f"roll back to its commit instead: --to {g['commit'][:12]} (without those changes)",
            )
        return n, rec
    # a revision: resolved in the repository of the current policy
    where = current.get("policy_path") or "."
    try:
        commit = resolve_commit(where if os.path.isdir(where) else ".", to)
    except RevisionProblem as p:
        raise _problem(p.message, p.help) from None
    for n, r in reversed(numbered):
        if usable(r) and (r.get("git") or {}).get("commit") == commit:
            return n, r
    raise _problem(
        f"{to} ({commit[:12]}) was never applied on this instance",
        "`pepc history` lists what was; to apply a new revision use `pepc apply --revision REV PATH`",
    )


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    config = host_config(args)
    records = list(audit.read(config.state_dir, args.instance))
    n, rec = rollback_target(records, args.to)
    g = rec["git"]
    path = rec["policy_path"]
    if not os.path.isdir(path):
        raise PolicyError([Finding(
            "bad-revision", f"entry #{n} was applied from {path}, which no longer exists", Location(path),
            help="restore the policy repository there, or apply the revision by hand: pepc apply --revision REV PATH",
        )])
    args.path = path  # the settings beside the policy directory, unless --config
    source = {"commit": g["commit"], "dirty": False, "revision": g.get("revision") or g["commit"][:12],
              "path": g.get("path"), "rollback_to": n}
    with open_revision(path, g["commit"], g.get("path")) as side:
        result = apply_checkout(args, side, started, source)
    if args.format == "json":
        print_json({**result.to_json(), "rollback_to": n, "commit": g["commit"]})
    else:
        print(f"pepc rollback: instance {args.instance!r}: back to entry #{n}, commit {g['commit'][:12]} ({path})")
        print(render_result(result), end="")
    return ExitCode.OK

