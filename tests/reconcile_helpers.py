"""Policies and programs for the reconciler tests (pure and kernel)."""

from __future__ import annotations

from datetime import datetime, timezone

from pepc.compiler import Assignments, compile_program
from pepc.policy.config import Config
from pepc.compiler.layout import Capacities
from pepc.policy.model import Action, Location, Policy, Prefix, PortRange, Protocol, Rule
from pepc.compiler.program import Program
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


# --- files and hosts for kernel tests ------------------------------------------------

import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import secrets  # noqa: E402
from pathlib import Path  # noqa: E402


def rule_doc(rid: str, action: str = "ALLOW", src: str | None = None, dst: str | None = None, *, proto: str | None = None,
             dport=None, priority: int | None = None, rate: int | None = None) -> dict:
    d: dict = {"id": rid, "action": action}
    if priority is not None:
        d["priority"] = priority
    if rate is not None:
        d["rate_limit_bps"] = rate
    s: dict = {}
    if src:
        s["ip"] = src
    t: dict = {}
    if dst:
        t["ip"] = dst
    if dport is not None:
        t["port"] = dport
    if proto:
        t["protocol"] = proto
    if s:
        d["src"] = s
    if t:
        d["dst"] = t
    return d


def write_policy_dir(path: Path, files: dict[str, list[dict]]) -> Path:
    """A policies.d with one policy-set document per file (JSON is YAML)."""
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.yaml"):
        old.unlink()
    for name, rules in files.items():
        (path / name).write_text(json.dumps({"policies": rules}, indent=1))
    return path


@dataclasses.dataclass
class Host:
    """One test's pepc host settings: its own pin root, state and run dirs, instance."""

    config: Config
    instance: str
    config_file: Path

    @property
    def pin_dir(self) -> Path:
        return Path(self.config.pin_root) / self.instance

    def cli(self, *args: str) -> list[str]:
        return [*args, "--config", str(self.config_file), "--instance", self.instance]


def make_host(
    tmp: Path, caps: Capacities = SMALL_CAPS, default: Action = Action.ALLOW, interfaces: tuple = (), apply_gate: tuple = ("capacity",)
) -> Host:
    tag = secrets.token_hex(3)
    cfg = Config(
        default_action=default,
        capacities=caps,
        pin_root=f"/sys/fs/bpf/pepc-rt-{tag}",
        state_dir=str(tmp / "state"),
        run_dir=str(tmp / "run"),
        interfaces=interfaces,
        apply_gate=apply_gate,
    )
    f = tmp / "pepc.yaml"
    f.write_text(config_yaml(cfg))
    return Host(cfg, f"t{tag}", f)


def config_yaml(cfg: Config) -> str:
    c = cfg.capacities
    return json.dumps(
        {
            "default_action": cfg.default_action.name,
            "pin_root": cfg.pin_root,
            "state_dir": cfg.state_dir,
            "run_dir": cfg.run_dir,
            "interfaces": [{"name": i.name, "mode": i.mode.value} for i in cfg.interfaces],
            "capacities": {"max_rules": c.max_rules, "max_entries": c.max_entries, "max_masks": c.max_masks, "ring_bytes": c.ring_bytes},
            "apply_gate": list(cfg.apply_gate),
        }
    )


@contextlib.contextmanager
def host_env(tmp: Path, **kw):
    from pepc.reconcile.apply import unload_instance

    h = make_host(tmp, **kw)
    try:
        yield h
    finally:
        with contextlib.suppress(Exception):
            unload_instance(h.config, h.instance, wait=30)
        with contextlib.suppress(OSError):
            Path(h.config.pin_root).rmdir()


def hand_edit_action(inst, gen: int, src: int, action) -> None:
    """By hand, as an operator with bpftool would: the rule-map entry whose
    source is `src` gets `action`, in the rule map and in the direct table
    (which the program reads first), in generation `gen`."""
    from pepc.compiler import layout

    rules = inst.maps[f"pepc_rules_{gen}"]
    (key, val), = [(k, v) for k, v in rules.items() if layout.RULE_KEY.unpack(k)["src"] == src]
    rules.update(key, layout.RULE_VAL.pack({**layout.RULE_VAL.unpack(val), "action": int(action)}))
    table = inst.maps[f"pepc_direct_{gen}"]
    (pos, el), = [(p, e) for p, e in table.items() if e[:20] == key]
    at = layout.DIRECT.offsets["action"]
    table.update(pos, el[:at] + bytes([int(action)]) + el[at + 1:])
