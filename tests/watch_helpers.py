"""Test doubles for the watch loop: a fake clock and a backend that plays
pepc's load/apply functions (it records what the loop asked for). They stand
in for pepc's own code, never for the kernel."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pepc.policy.diagnostics import Finding, PolicyError
from pepc.policy.model import Action, Location, Policy, Rule
from pepc.watch.service import Loaded, Outcome

T0 = 1_800_000_000.0  # wall clock at the start of every test


class FakeClock:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = T0

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    def advance(self, s: float) -> None:
        self.mono += s
        self.wall += s


def rule(rid: str, expires: datetime | None = None) -> Rule:
    return Rule(id=rid, action=Action.BLOCK, loc=Location("p.yaml", 1, 1), expires_at=expires)


@dataclass
class FakeBackend:
    """Plays pepc's loader (the directory's current content) and apply (records calls)."""

    policy: Policy | None
    errors: list[Finding] = field(default_factory=list)
    fp: int = 0
    loads: int = 0
    applied: list[tuple[tuple[str, ...], datetime]] = field(default_factory=list)
    fail_apply: Exception | None = None

    def edit(self, policy: Policy | None, errors: list[Finding] | None = None) -> None:
        self.policy, self.errors = policy, errors or []
        self.fp += 1

    def fingerprint(self):
        return self.fp

    def load(self) -> Loaded:
        self.loads += 1
        if self.errors:
            raise PolicyError(self.errors)
        assert self.policy is not None
        return Loaded(self.policy, None, digest=",".join(r.id for r in self.policy.rules))

    def apply(self, loaded: Loaded, now: datetime) -> Outcome:
        if self.fail_apply is not None:
            raise self.fail_apply
        ids = tuple(r.id for r in loaded.policy.live_rules(now))
        writes = 0 if self.applied and self.applied[-1][0] == ids else 1
        self.applied.append((ids, now))
        return Outcome(writes=writes, generation=len(self.applied) % 2)

    def unload(self) -> None:
        pass


BAD = Finding("yaml-syntax", "mapping values are not allowed here", Location("p.yaml", 3, 7))


