"""`pepc events`: LOG_ONLY hits from the instance's ring buffer.

Each event names the rule (from the live `pepc_slots` of the active
generation), the 5-tuple, the frame length and the time. Without --follow,
prints the events waiting in the ring buffer and exits; with --follow,
keeps printing as packets arrive (until SIGINT/SIGTERM), following the
instance across a reload.

The ring buffer has one consumer position: while `pepc watch` logs events
(its default), `pepc events --follow` on the same instance sees only the
events watch did not take. Run watch with --no-events to read them here.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import sys

from pepc.commands._host import add_config_arg, add_instance_arg, host_config
from pepc.policy.diagnostics import EnvironmentProblem, ExitCode

NAME = "events"
HELP = "print LOG_ONLY events from the ring buffer (rule, 5-tuple, length, time)"
ORDER = 46
DESCRIPTION = __doc__.split("\n\n", 1)[1].strip()

# How often --follow checks whether the instance was reloaded (a new ring buffer).
RECHECK_S = 2.0


def register(parser: argparse.ArgumentParser) -> None:
    add_instance_arg(parser)
    add_config_arg(parser)
    parser.add_argument("--follow", "-f", action="store_true", help="keep printing events as they arrive")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="text lines or one JSON object per line")


class _Stop(Exception):
    pass


def _open(pins: str):
    from pepc.watch.events import EventTap

    if not os.path.exists(os.path.join(pins, "pepc_events")):
        raise EnvironmentProblem(f"no pepc instance is loaded at {pins}", "run `pepc apply` (or `pepc watch`) first")
    return EventTap(pins)


def run(args: argparse.Namespace) -> int:
    from pepc.reconcile.apply import pin_dir

    config = host_config(args)
    pins = str(pin_dir(config, args.instance))
    tap = _open(pins)

    def emit(events) -> None:
        for ev in events:
            line = json.dumps(ev.as_json(), separators=(",", ":")) if args.format == "json" else ev.text()
            sys.stdout.write(line + "\n")
        sys.stdout.flush()

    try:
        emit(tap.read())
        if not args.follow:
            return ExitCode.OK

        def stop(*_):
            raise _Stop()

        signal.signal(signal.SIGTERM, stop)
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(tap.fileno(), selectors.EVENT_READ)
                while True:
                    if sel.select(RECHECK_S):
                        emit(tap.read())
                    elif tap.stale():  # reloaded or unloaded: follow the new ring buffer
                        sel.unregister(tap.fileno())
                        tap.close()
                        try:
                            tap = _open(pins)
                        except EnvironmentProblem:
                            tap = None
                            while tap is None:  # unloaded: wait for it to come back
                                sel.select(RECHECK_S)
                                try:
                                    tap = _open(pins)
                                except EnvironmentProblem:
                                    pass
                        sel.register(tap.fileno(), selectors.EVENT_READ)
        except (_Stop, KeyboardInterrupt):
            return ExitCode.OK
    finally:
        if tap is not None:
            tap.close()
