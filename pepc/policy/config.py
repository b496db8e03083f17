"""Host settings (`pepc.yaml`), kept apart from policy.

Policy says what to filter; this file says how this host runs it. Only the
dataclasses live here; `pepc.loader.load_config` reads and validates the
file with the same diagnostics as policies.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from pepc.policy.diagnostics import Severity
from pepc.policy.model import Action


class XdpMode(enum.Enum):
    AUTO = "auto"  # native, falling back to generic (skb) where the driver has no XDP
    NATIVE = "native"
    GENERIC = "generic"
    OFFLOAD = "offload"


@dataclass(frozen=True)
class Interface:
    name: str
    mode: XdpMode = XdpMode.AUTO


@dataclass(frozen=True)
class Capacities:
    """How large the data plane's maps are: kernel memory, fixed at load."""

    max_rules: int = 16384  # slots: per-rule counters, rate-limit state
    max_entries: int = 131072  # hash entries per generation
    max_masks: int = 128  # masks per generation (per-packet cost grows with this)
    ring_bytes: int = 262144  # event ring buffer

    def describe(self) -> dict[str, int]:
        return {
            "max_rules": self.max_rules,
            "max_entries": self.max_entries,
            "max_masks": self.max_masks,
            "ring_bytes": self.ring_bytes,
        }


@dataclass(frozen=True)
class Config:
    default_action: Action = Action.ALLOW
    interfaces: tuple[Interface, ...] = ()
    pin_root: str = "/sys/fs/bpf/pepc"
    state_dir: str = "/var/lib/pepc"  # audit trail: <state_dir>/<instance>/audit.jsonl
    run_dir: str = "/run/pepc"  # locks
    capacities: Capacities = field(default_factory=Capacities)
    event_cap: int = 100  # LOG_ONLY events per rule per second (per CPU)
    metrics_listen: str = "127.0.0.1:9477"
    severity: tuple[tuple[str, Severity], ...] = ()  # per-code overrides for `check`
    #: the finding codes that refuse `pepc apply`/`watch` (besides a policy
    #: that does not load): by default only a program that does not fit
    apply_gate: tuple[str, ...] = ("capacity",)
    source: str | None = None  # the file it came from, if any

    def severity_of(self, code: str, default: Severity) -> Severity:
        for c, sev in self.severity:
            if c == code:
                return sev
        return default


def gate_config(config: Config) -> Config:
    """The config whose `check` errors are exactly the findings of the
    codes in `config.apply_gate`: what the apply gate decides with."""
    from pepc.policy.diagnostics import CODES  # (a cycle at import time otherwise: diagnostics is light, but keep it local)

    gated = set(config.apply_gate)
    sev = tuple((c, Severity.ERROR if c in gated else Severity.INFO) for c, info in CODES.items() if not info.blocks_load)
    return replace(config, severity=sev)
