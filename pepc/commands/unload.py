"""`pepc unload`: detach the instance from every interface and remove its pins.

Interfaces are found by scanning every interface for the instance's
program id (no file is trusted). Leftovers of an interrupted reload are
removed too. Nothing of the instance remains in the kernel afterwards.
"""

from __future__ import annotations

import argparse
import time

from pepc.commands._host import add_config_arg, add_instance_arg, host_config
from pepc.policy.diagnostics import ExitCode
from pepc.reconcile.apply import unload_instance

NAME = "unload"
HELP = "detach the XDP program from every interface and remove the instance's pins"
ORDER = 45
DESCRIPTION = __doc__.split("\n\n", 1)[1].strip()


def register(parser: argparse.ArgumentParser) -> None:
    add_instance_arg(parser)
    add_config_arg(parser)
    parser.add_argument("--wait", metavar="SECONDS", type=float, default=0.0, help="wait up to SECONDS for a running apply")


def run(args: argparse.Namespace) -> int:
    config = host_config(args)
    t = time.perf_counter()
    detached, removed = unload_instance(config, args.instance, wait=args.wait)
    if not detached and not removed:
        print(f"pepc unload: instance {args.instance!r} is not loaded; nothing to do")
        return ExitCode.OK
    for ifname, mode in detached:
        print(f"detached from {ifname} ({mode})")
    for d in removed:
        print(f"removed pins {d}")
    print(f"pepc unload: instance {args.instance!r} unloaded in {(time.perf_counter() - t) * 1000:.1f} ms")
    return ExitCode.OK
