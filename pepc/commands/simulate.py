"""`pepc simulate PATH [PACKET ...]`: what happens to these packets?

Packets are evaluated over the compiled program -- the masks and entries
the kernel would hold, walked the way the XDP program walks them -- not
over the rule list. --explain adds every matching rule and why the winner
wins. RATE_LIMIT shows verdict PASS: the packet is within the rule's rate.
"""

from __future__ import annotations

import argparse
import json
import sys

from pepc.commands._common import add_policy_args, load_all, now_of
from pepc.compiler import compile_program
from pepc.policy.diagnostics import EnvironmentProblem, ExitCode
from pepc.policy.model import Location
from pepc.simulate.evaluate import (
    PacketSyntaxError,
    decision_json,
    decision_text,
    explain,
    index_of,
    packet_error,
    parse_packet,
    parse_packet_lines,
)
from pepc.policy.sources import relative_file

NAME = "simulate"
HELP = "show the action and verdict for packets, evaluated over the compiled program"
ORDER = 30
DESCRIPTION = (
    "Evaluate packets against the compiled policy exactly as the XDP program would. "
    "Packet syntax: 'tcp 10.0.0.1:1234 > 192.168.1.100:80', 'udp A:P > B:P', 'icmp A > B', "
    "'proto 47 A > B'; IPv6 with brackets around an address with a port: "
    "'tcp [2001:db8::1]:40000 > [2001:db8::10]:443', 'icmpv6 A > B type=135' (the ICMPv6 type; "
    "neighbour discovery and similar types are guarded, see docs/semantics.md); optionally followed by "
    "'len=N' (frame length) and 'frag' (a non-first fragment, which carries no ports). "
    "RATE_LIMIT is reported as PASS: within the rule's rate."
)


def allow_intermixed(parser: argparse.ArgumentParser) -> None:
    """Let positionals follow options (`pepc simulate PATH --now T PACKET`).

    Plain argparse binds every positional in the first run of positionals,
    so PACKETs after an option would be "unrecognized". The subcommand
    parser has no sub-parsers of its own, so argparse's intermixed parsing
    applies; it calls parse_known_args itself, hence the re-entry guard.
    """
    plain = parser.parse_known_args
    busy = []

    def parse_known_args(args=None, namespace=None):
        if busy:
            return plain(args, namespace)
        busy.append(True)
        try:
            return parser.parse_known_intermixed_args(args, namespace)
        finally:
            busy.pop()

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def register(parser: argparse.ArgumentParser) -> None:
    allow_intermixed(parser)
    add_policy_args(parser)
    parser.add_argument("packets", metavar="PACKET", nargs="*", help="a packet, quoted, e.g. 'tcp 10.0.0.1:1234 > 192.168.1.100:80'")
    parser.add_argument("--packets", dest="packets_file", metavar="FILE", default=None, help="read packets from FILE, one per line ('-': stdin; '#' starts a comment)")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="text, or json: one object per packet per line")
    parser.add_argument("--explain", action="store_true", help="list every matching rule and why the winner wins")


def _packets(args: argparse.Namespace):
    for i, text in enumerate(args.packets, 1):
        try:
            yield parse_packet(text)
        except PacketSyntaxError as err:
            raise packet_error(f"packet argument {i}: {err.message}", Location(f"<argument {i}>", 1, err.column)) from None
    if args.packets_file is not None:
        name = args.packets_file
        if name == "-":
            yield from (p for _, p in parse_packet_lines(sys.stdin, "<stdin>"))
            return
        try:
            fh = open(name, encoding="utf-8")
        except OSError as err:
            raise EnvironmentProblem(f"cannot read {name}: {err.strerror or err}", "check the path and its permissions") from None
        with fh:
            try:
                yield from (p for _, p in parse_packet_lines(fh, name))
            except UnicodeDecodeError:
                raise EnvironmentProblem(f"{name} is not UTF-8 text") from None


def run(args: argparse.Namespace) -> int:
    if not args.packets and args.packets_file is None:
        print("pepc simulate: error: give packets as arguments or with --packets FILE", file=sys.stderr)
        return ExitCode.INVALID
    policy, config = load_all(args)
    now = now_of(args)
    program = compile_program(policy, config, now)
    index = index_of(program)
    root = policy.root
    # Parse everything first: a bad packet is an error before any output.
    packets = list(_packets(args))
    out = sys.stdout
    for pkt in packets:
        decision = index.evaluate(pkt)
        if args.format == "json":
            obj = decision_json(pkt, decision, root)
            if args.explain:
                ex = explain(policy, program, pkt)
                obj["matches"] = [
                    {
                        "rule": m.rule_id,
                        "action": m.atom.rule.action.name,
                        "priority": m.atom.rule.priority,
                        "specificity": m.specificity,
                        "file": relative_file(m.atom.rule.loc.file, root),
                        "line": m.atom.rule.loc.line,
                    }
                    for m in ex.matches
                ]
            out.write(json.dumps(obj, sort_keys=False) + "\n")
        else:
            out.write(decision_text(pkt, decision, program, root) + "\n")
            if args.explain:
                for line in explain(policy, program, pkt).lines(root):
                    out.write(line + "\n")
    return ExitCode.OK
