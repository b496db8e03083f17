"""When `pepc watch` reconciles: a pure state machine over two clocks.

The watch loop sleeps until `timeout()` and then reconciles for whatever
`take()` says is due. Keeping this free of threads and real clocks lets the
tests drive it with a fake clock.

- Filesystem changes are debounced: a reconcile is due once the tree has been
  quiet for `debounce` seconds, or `max_delay` seconds after the first
  unapplied change, so continuous churn still gets applied.
- A resync is due `resync` seconds after the last reconcile, whatever
  happened: it repairs drift made behind pepc's back.
- An expiry is due at the wall-clock time the next rule expires. Expiry
  times are wall-clock (they are written as dates); every other deadline is
  monotonic so a clock step cannot starve or flood the loop.
- A failed apply (the kernel refused, an interface is missing) is retried
  with exponential backoff, capped at the resync interval.

Triggers are consumed when a reconcile starts (`take`), not when it ends, so
a change that lands while a reconcile runs gets a reconcile of its own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Reason(enum.Enum):
    START = "start"
    CHANGE = "change"  # the policy directory or pepc.yaml changed
    RESYNC = "resync"  # the periodic drift repair
    EXPIRY = "expiry"  # a rule's expires_at passed
    SIGNAL = "signal"  # SIGHUP or an explicit request
    RETRY = "retry"  # the previous apply failed

    def reads_files(self) -> bool:
        """Whether this reason must reload the directory (the others may reuse an unchanged load)."""
        return self in (Reason.START, Reason.CHANGE, Reason.SIGNAL)


# Expiry wake-ups land a little after the expiry so the rule is certainly
# expired by the time the reconcile compiles (clocks and sleeps are coarse).
EXPIRY_SLACK = 0.005


@dataclass
class Scheduler:
    debounce: float = 0.2
    max_delay: float = 2.0
    resync: float = 60.0
    retry_min: float = 0.5
    _started: bool = False
    _first_change: float | None = None
    _last_change: float | None = None
    _forced: bool = False
    _next_resync: float | None = None
    _expiry_at: float | None = None  # wall clock
    _retry_at: float | None = None
    _failures: int = 0
    _in_flight: set[Reason] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.debounce < 0 or self.max_delay < self.debounce or self.resync <= 0:
            raise ValueError("need 0 <= debounce <= max_delay and resync > 0")

    # --- inputs -------------------------------------------------------------

    def change(self, now: float) -> None:
        """A relevant filesystem event at monotonic time `now`."""
        if self._first_change is None:
            self._first_change = now
        self._last_change = now

    def force(self) -> None:
        """Reconcile as soon as possible (SIGHUP)."""
        self._forced = True

    # --- queries ------------------------------------------------------------

    def _change_deadline(self) -> float | None:
        if self._first_change is None or self._last_change is None:
            return None
        return min(self._last_change + self.debounce, self._first_change + self.max_delay)

    def due(self, now: float, wall: float) -> frozenset[Reason]:
        out: set[Reason] = set()
        if not self._started:
            out.add(Reason.START)
        if self._forced:
            out.add(Reason.SIGNAL)
        cd = self._change_deadline()
        if cd is not None and now >= cd:
            out.add(Reason.CHANGE)
        if self._next_resync is not None and now >= self._next_resync:
            out.add(Reason.RESYNC)
        if self._expiry_at is not None and wall >= self._expiry_at + EXPIRY_SLACK:
            out.add(Reason.EXPIRY)
        if self._retry_at is not None and now >= self._retry_at:
            out.add(Reason.RETRY)
        return frozenset(out)

    def pending_change(self) -> bool:
        return self._first_change is not None

    def timeout(self, now: float, wall: float) -> float | None:
        """Seconds until something is due (0: now), None: nothing is ever due."""
        if self.due(now, wall):
            return 0.0
        waits = []
        for deadline in (self._change_deadline(), self._next_resync, self._retry_at):
            if deadline is not None:
                waits.append(deadline - now)
        if self._expiry_at is not None:
            waits.append(self._expiry_at + EXPIRY_SLACK - wall)
        return max(0.0, min(waits)) if waits else None

    # --- reconcile bracket --------------------------------------------------

    def take(self, now: float, wall: float) -> frozenset[Reason]:
        """The reasons due now, consumed: a reconcile starts."""
        reasons = self.due(now, wall)
        if not reasons:
            return reasons
        self._started = True
        self._forced = False
        if Reason.CHANGE in reasons:
            self._first_change = self._last_change = None
        if Reason.EXPIRY in reasons:
            self._expiry_at = None
        self._retry_at = None
        self._next_resync = None
        return reasons

    def finished(self, now: float, *, ok: bool, next_expiry: float | None, retry: bool = False) -> None:
        """A reconcile ended at monotonic `now`.

        `next_expiry`: wall time of the next rule expiry of the policy now
        live. `retry`: the failure is worth retrying without a file change
        (the kernel refused); an invalid policy is not — it waits for an edit.
        """
        self._next_resync = now + self.resync
        self._expiry_at = next_expiry
        if ok:
            self._failures = 0
            self._retry_at = None
        elif retry:
            delay = min(self.retry_min * (2**self._failures), self.resync)
            self._failures += 1
            self._retry_at = now + delay
        else:
            self._retry_at = None
