"""The watch loop: one thread that owns every reconcile.

Everything that wants a reconcile — watchdog callbacks, signal handlers,
timers — only records *that* it wants one and wakes the loop through a
self-pipe; the loop sleeps in `select` until the scheduler's next deadline
or a wake-up, so an idle service costs no CPU. Reconciles are
level-triggered: each one hands the whole desired policy to the backend,
which reads the live kernel state and converges it (the same code path as
`pepc apply`); nothing here assumes what the kernel holds.

Last known good: a policy that fails to load, check or compile never
reaches the kernel. The loop keeps converging to the last policy that did
(drift repair and expiries continue) and reports the errors until the
directory is valid again.
"""

from __future__ import annotations

import os
import selectors
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Hashable, Protocol

from pepc.report import log as pepclog
from pepc.policy.diagnostics import EnvironmentProblem, Finding, PolicyError, Severity
from pepc.watch.schedule import Reason, Scheduler

LOG = pepclog.get("watch")


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def time(self) -> float: ...


class SystemClock:
    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)


@dataclass(frozen=True)
class Loaded:
    """A policy directory (and host config) that loaded and checked clean."""

    policy: Any  # pepc.policy.model.Policy
    config: Any  # pepc.policy.config.Config
    digest: str = ""  # identifies the desired policy in logs and /status

    def next_expiry(self, now: datetime) -> datetime | None:
        return self.policy.next_expiry(now)


@dataclass(frozen=True)
class Outcome:
    """What one apply did."""

    writes: int
    generation: int | None = None
    details: dict = field(default_factory=dict)


class Backend(Protocol):
    """What the loop needs from the rest of pepc (injected so tests need no root)."""

    def fingerprint(self) -> Hashable:
        """A cheap summary (stat of every policy file and pepc.yaml) that changes when a load could."""

    def load(self) -> Loaded:
        """Load, validate and check the directory; raise PolicyError when it is not usable."""

    def apply(self, loaded: Loaded, now: datetime) -> Outcome:
        """Converge the kernel to `loaded` as of `now` (the one code path `pepc apply` uses).
        PolicyError: the policy cannot be compiled (nothing written); EnvironmentProblem: the kernel
        or host refused."""

    def unload(self) -> None: ...


class Result:
    OK = "ok"  # the kernel holds the desired policy
    INVALID = "invalid"  # the directory cannot be used; the last good policy stays
    ERROR = "error"  # apply failed (kernel, interface, permissions); retried


def finding_json(f: Finding) -> dict:
    return {
        "code": f.code,
        "severity": f.severity.label if isinstance(f.severity, Severity) else str(f.severity),
        "message": f.message,
        "file": f.loc.file,
        "line": f.loc.line,
        "column": f.loc.column,
        **({"rule": f.rule} if f.rule else {}),
    }


class Observer(Protocol):
    """Listens to the loop (metrics); called on the loop thread."""

    def reconciled(self, result: str, reasons: frozenset[Reason], seconds: float, outcome: Outcome | None) -> None: ...


@dataclass
class State:
    """What /readyz, /status and /metrics report; replaced as a whole under the lock."""

    first_apply_done: bool = False
    result: str | None = None
    errors: tuple[dict, ...] = ()
    last_reconcile: float | None = None  # wall time
    last_success: float | None = None  # wall time
    last_reasons: tuple[str, ...] = ()
    last_writes: int = 0
    generation: int | None = None
    live_digest: str = ""
    next_expiry: str | None = None
    reconciles: int = 0

    @property
    def ready(self) -> bool:
        return self.first_apply_done and self.result == Result.OK

    def as_json(self) -> dict:
        return {
            "ready": self.ready,
            "first_apply_done": self.first_apply_done,
            "result": self.result,
            "errors": list(self.errors),
            "last_reconcile": _iso(self.last_reconcile),
            "last_success": _iso(self.last_success),
            "last_reasons": list(self.last_reasons),
            "last_writes": self.last_writes,
            "generation": self.generation,
            "policy_digest": self.live_digest,
            "next_expiry": self.next_expiry,
            "reconciles": self.reconciles,
        }


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


class WatchService:
    def __init__(
        self,
        backend: Backend,
        scheduler: Scheduler,
        *,
        clock: Clock | None = None,
        observers: tuple[Observer, ...] = (),
    ) -> None:
        self.backend = backend
        self.sched = scheduler
        self.clock = clock or SystemClock()
        self.observers = list(observers)
        self._lock = threading.Lock()  # guards sched and state
        self._state = State()
        self._last_good: Loaded | None = None  # the last policy the kernel took
        self._current: Loaded | None = None  # the directory as last read, when valid
        self._current_errors: tuple[dict, ...] | None = None  # ... and why not, when invalid
        self._load_fp: Hashable = None
        self._busy_since: float | None = None  # monotonic start of the running reconcile
        # Set from signal handlers: plain attribute writes and os.write only
        # (a handler runs on the loop thread, which may hold the lock).
        self._stop_requested = False
        self._hup_requested = False
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._rfd, selectors.EVENT_READ, None)

    # --- inputs, from any thread -------------------------------------------

    def wake(self) -> None:
        try:
            os.write(self._wfd, b"\0")
        except BlockingIOError:  # the pipe is full: the loop has wake-ups pending anyway
            pass

    def notify_change(self, what: str = "") -> None:
        """A relevant filesystem event (watchdog thread)."""
        with self._lock:
            self.sched.change(self.clock.monotonic())
        self.wake()

    def request_reconcile(self) -> None:
        """SIGHUP; safe in a signal handler."""
        self._hup_requested = True
        self.wake()

    def request_stop(self) -> None:
        """SIGTERM/SIGINT; safe in a signal handler."""
        self._stop_requested = True
        self.wake()

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        """Call `callback` on the loop thread whenever `fd` is readable (ring buffer epoll fd)."""
        self._selector.register(fd, selectors.EVENT_READ, callback)

    def remove_reader(self, fd: int) -> None:
        try:
            self._selector.unregister(fd)
        except (KeyError, ValueError):
            pass

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.request_stop())
        signal.signal(signal.SIGINT, lambda *_: self.request_stop())
        signal.signal(signal.SIGHUP, lambda *_: self.request_reconcile())

    # --- queries, from any thread ------------------------------------------

    def state(self) -> State:
        with self._lock:
            return self._state

    @property
    def stopping(self) -> bool:
        return self._stop_requested

    def alive(self, stuck_after: float = 300.0) -> bool:
        """For /healthz: the loop has not been asked to stop and no reconcile has hung."""
        busy = self._busy_since
        return not self._stop_requested and (busy is None or self.clock.monotonic() - busy < stuck_after)

    # --- the loop ----------------------------------------------------------

    def timeout(self) -> float | None:
        with self._lock:
            return self.sched.timeout(self.clock.monotonic(), self.clock.time())

    def tick(self) -> frozenset[Reason]:
        """Reconcile now if anything is due; returns the reasons (empty: nothing was due)."""
        if self._hup_requested:
            self._hup_requested = False
            with self._lock:
                self.sched.force()
        with self._lock:
            reasons = self.sched.take(self.clock.monotonic(), self.clock.time())
        if reasons:
            self.reconcile(reasons)
        return reasons

    def run(self) -> None:
        """Loop until request_stop(). Reconciles once at start."""
        while not self._stop_requested:
            if self._hup_requested:
                self.tick()
                continue
            timeout = self.timeout()
            if timeout is None or timeout > 0:
                for key, _ in self._selector.select(timeout):
                    if key.data is None:
                        self._drain()
                    else:
                        self._run_reader(key.data)
            if self._stop_requested:
                break
            self.tick()

    def _drain(self) -> None:
        try:
            while os.read(self._rfd, 4096):
                pass
        except BlockingIOError:
            pass

    def _run_reader(self, callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:  # a reader must never take the reconciler down
            LOG.error("event reader failed", fields={"error": traceback.format_exc(limit=3)})

    def close(self) -> None:
        self._selector.close()
        for fd in (self._rfd, self._wfd):
            try:
                os.close(fd)
            except OSError:
                pass

    # --- one reconcile -----------------------------------------------------

    def reconcile(self, reasons: frozenset[Reason]) -> str:
        t0 = self.clock.monotonic()
        self._busy_since = t0
        now_wall = self.clock.time()
        now = datetime.fromtimestamp(now_wall, timezone.utc)
        fields: dict[str, Any] = {"reasons": sorted(r.value for r in reasons)}

        target, errors = self._desired(reasons)
        outcome: Outcome | None = None
        retry = False
        if errors is not None and target is None:
            result = Result.INVALID
        elif errors is not None and reasons == {Reason.CHANGE}:
            # An edit made the directory invalid: the live policy is already
            # the last good one; nothing to converge until a timer says so.
            result = Result.INVALID
            target = None
        else:
            assert target is not None
            note = getattr(self.backend, "reconcile_reasons", None)
            if note is not None:  # lets a warm backend pick how much of the live state to read
                note(reasons)
            try:
                outcome = self.backend.apply(target, now)
            except PolicyError as err:  # loaded and checked, but does not compile (e.g. capacity)
                errors = tuple(finding_json(f) for f in err.findings)
                self._forget_load(errors)
                result = Result.INVALID
                target = None
            except EnvironmentProblem as err:
                errors = ({"code": "environment", "severity": "error", "message": err.message, "hint": err.hint},)
                result, retry = Result.ERROR, True
            except Exception as err:  # never let a bug stop the reconciler; report it and retry
                LOG.error("reconcile failed with an internal error", fields={"error": traceback.format_exc()})
                errors = ({"code": "internal", "severity": "error", "message": f"internal error: {err!r}"},)
                result, retry = Result.ERROR, True
            else:
                if errors is None:
                    result = Result.OK
                    self._last_good = target
                else:
                    result = Result.INVALID  # converged to the last good policy; the directory is still bad

        live = self._last_good
        expiry = live.next_expiry(now) if live is not None else None
        seconds = self.clock.monotonic() - t0
        with self._lock:
            self.sched.finished(
                self.clock.monotonic(), ok=result == Result.OK, next_expiry=expiry.timestamp() if expiry else None, retry=retry
            )
            st = self._state
            self._state = State(
                first_apply_done=st.first_apply_done or (outcome is not None and live is not None),
                result=result,
                errors=tuple(errors or ()),
                last_reconcile=now_wall,
                last_success=now_wall if result == Result.OK else st.last_success,
                last_reasons=tuple(sorted(r.value for r in reasons)),
                last_writes=outcome.writes if outcome else 0,
                generation=outcome.generation if outcome and outcome.generation is not None else st.generation,
                live_digest=(outcome.details.get("policy_digest") if outcome else None) or (live.digest if live else "") or st.live_digest,
                next_expiry=expiry.isoformat().replace("+00:00", "Z") if expiry else None,
                reconciles=st.reconciles + 1,
            )
        self._busy_since = None
        for obs in self.observers:
            try:
                obs.reconciled(result, reasons, seconds, outcome)
            except Exception:
                LOG.error("reconcile observer failed", fields={"error": traceback.format_exc(limit=5)})

        fields.update({"result": result, "seconds": round(seconds, 4)})
        if outcome is not None:
            fields.update({"writes": outcome.writes, **({"generation": outcome.generation} if outcome.generation is not None else {})})
            fields.update(outcome.details)
        if errors:
            fields["errors"] = len(errors)
        if result == Result.OK:
            # Quiet when nothing happened: a resync that finds no drift is the normal case.
            notable = (outcome and outcome.writes) or st.result != Result.OK or reasons & {Reason.START, Reason.SIGNAL}
            (LOG.info if notable else LOG.debug)("reconciled", fields=fields)
        elif result == Result.INVALID:
            LOG.warning(
                "policy invalid; keeping the last good policy" if self._last_good else "policy invalid; nothing applied",
                fields=fields,
            )
            for e in errors or ():
                LOG.warning(e.get("message", ""), fields={k: v for k, v in e.items() if k != "message"})
        else:
            LOG.error("apply failed; will retry", fields={**fields, "error": (errors or [{}])[0].get("message")})
        return result

    def _desired(self, reasons: frozenset[Reason]) -> tuple[Loaded | None, tuple[dict, ...] | None]:
        """(policy to converge to, current errors or None when the directory is valid).

        The directory is re-read for file-driven reasons, and for timers only
        when its fingerprint moved (a missed inotify event, a chmod): a resync
        of an unchanged 10,000-rule tree costs a stat walk, not a parse.
        """
        fp = self._safe_fingerprint()
        reload = any(r.reads_files() for r in reasons) or fp is None or fp != self._load_fp
        if reload:
            self._load_fp = fp
            try:
                self._current, self._current_errors = self.backend.load(), None
            except PolicyError as err:
                self._current, self._current_errors = None, tuple(finding_json(f) for f in err.findings)
            except EnvironmentProblem as err:  # e.g. the directory itself is unreadable
                self._current = None
                self._current_errors = ({"code": "environment", "severity": "error", "message": err.message, "hint": err.hint},)
            except Exception as err:  # a bug in pepc must not stop the loop or let a half-read policy through
                LOG.error("loading the policy failed with an internal error", fields={"error": traceback.format_exc()})
                self._current = None
                self._current_errors = ({"code": "internal", "severity": "error", "message": f"internal error: {err!r}"},)
        if self._current is not None:
            return self._current, None
        return self._last_good, self._current_errors

    def _forget_load(self, errors: tuple[dict, ...]) -> None:
        """The current load passed check but cannot be compiled: treat the directory as invalid."""
        self._current, self._current_errors = None, errors

    def _safe_fingerprint(self) -> Hashable:
        try:
            return self.backend.fingerprint()
        except Exception:
            return None
