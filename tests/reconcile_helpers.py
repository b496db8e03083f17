"""Policies and programs for the reconciler tests (pure and kernel)."""

from __future__ import annotations

from datetime import datetime, timezone

from pepc.compiler import Assignments, compile_program
from pepc.config import Config
from pepc.layout import Capacities
from pepc.model import Action, Location, Policy, Prefix, PortRange, Protocol, Rule
from pepc.program import Program
from pepc.reconcile import diff
from pepc.reconcile.state import LiveState

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
SMALL_CAPS = Capacities(max_rules=256, max_entries=4096, max_masks=32, ring_bytes=4096)


def rule(rid: str, action: Action = Action.BLOCK, src: str = "0.0.0.0/0", dst: str = "0.0.0.0/0", *, proto: Protocol = Protocol.ANY,
         dports: tuple[tuple[int, int], ...] = (), priority: int = 0, rate: int = 0, file: str = "a.yaml", line: int = 1) -> Rule:
    return Rule(
        id=rid,
        action=action,
        loc=Location(file, line, 1),
        priority=priority,
        protocol=proto,
        src=(Prefix.parse(src),),
        dst=(Prefix.parse(dst),),
        dports=tuple(PortRange(a, b) for a, b in dports) or (PortRange(0, 0xFFFF),),
        rate_limit_bps=rate,
    )


def policy(*rules: Rule, root: str = "/p") -> Policy:
    return Policy(root=root, rules=tuple(rules))


def config(caps: Capacities = SMALL_CAPS, default: Action = Action.ALLOW) -> Config:
    return Config(default_action=default, capacities=caps)


def compile_(pol: Policy, cfg: Config | None = None, previous: Program | None = None) -> Program:
    prev = Assignments.from_program(previous) if previous else None
    return compile_program(pol, cfg or config(), NOW, prev)


def live_of(gen0: Program | dict, gen1: Program | dict | None = None, active: int = 0, layout_digest: str | None = None) -> LiveState:
    def c(x):
        if x is None:
            return diff.empty_contents()
        return x.map_contents() if isinstance(x, Program) else x

    g0 = c(gen0)
    g1 = c(gen1 if gen1 is not None else gen0)
    digest = layout_digest or (gen0.layout_digest if isinstance(gen0, Program) else "0" * 32)
    return LiveState(instance="t", pin_dir="/x", layout_digest=digest, active_gen=active, gens=(g0, g1), prog_id=7)


def base_policy() -> Policy:
    return policy(
        rule("allow_web", Action.ALLOW, dst="192.168.1.0/24", proto=Protocol.TCP, dports=((80, 80), (443, 443)), priority=100),
        rule("block_bad", Action.BLOCK, src="10.0.0.50/32"),
        rule("limit_api", Action.RATE_LIMIT, dst="192.168.1.200/32", proto=Protocol.TCP, dports=((8000, 8099),), rate=1_000_000),
        rule("log_dns", Action.LOG_ONLY, proto=Protocol.UDP, dports=((53, 53),)),
    )
