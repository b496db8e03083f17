"""`pepc plan PATH`: what `pepc apply` would change, like `terraform plan`.

Reads the instance's live maps (nothing is written), compiles PATH with the
live slot assignments and prints rules added / changed / removed, map
elements to write and delete per map, whether a program (re)load or an
attach is needed and why, and drift found in the active generation.
"""

from __future__ import annotations

import argparse

from pepc.commands._common import add_policy_args, load_all, now_of
from pepc.commands._host import add_iface_arg, add_instance_arg, add_text_json, print_json
from pepc.policy.diagnostics import ExitCode, PolicyError
from pepc.reconcile.apply import apply_gate_errors, pin_dir, plan_policy
from pepc.reconcile.render import render_plan

NAME = "plan"
HELP = "show what `apply` would change on this host (read-only)"
ORDER = 40
DESCRIPTION = __doc__.split("\n\n", 1)[1].strip() + (
    "\n\nWith --exit-code, as `diff` does: 0 no changes, 1 changes pending "
    "(2: the policy cannot be used, 3: environment error)."
)


def register(parser: argparse.ArgumentParser) -> None:
    add_policy_args(parser)
    add_iface_arg(parser)
    add_instance_arg(parser)
    add_text_json(parser)
    parser.add_argument(
        "--exit-code", action="store_true", help="exit 1 when changes are pending, 0 when there are none"
    )


def run(args: argparse.Namespace) -> int:
    policy, config = load_all(args)
    now = now_of(args)
    errors = apply_gate_errors(policy, config, now)
    if errors:
        raise PolicyError(errors)  # apply would refuse: say why, exit 2
    planned = plan_policy(policy, config, now, args.instance, args.iface)
    try:
        plan = planned.plan
        if args.format == "json":
            out = plan.to_json()
            out["refusals"] = [p.message for p in planned.foreign]
            out["timings_ms"] = {k: round(v * 1000, 3) for k, v in planned.timings.items()}
            print_json(out)
        else:
            text = render_plan(plan, str(pin_dir(config, args.instance)))
            for p in planned.foreign:
                text += f"Refusal: {p.message}; apply will fail until it is detached\n"
            print(text, end="")
    finally:
        planned.close()
    if args.exit_code and plan.changes_pending:
        return ExitCode.FINDINGS
    return ExitCode.OK
