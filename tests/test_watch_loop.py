"""The watch loop without a kernel: scheduler timing on a fake clock, and the
service's last-known-good logic with an injected backend.

The backend here is a test double of pepc's load/apply *functions*, not of
the kernel: it records what the loop asked for. The kernel path is proven by
tests/kernel/test_watch_kernel.py.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import pytest

from pepc.report import log as pepclog
from pepc.policy.diagnostics import EnvironmentProblem, Finding, PolicyError
from pepc.policy.model import Location, Policy
from pepc.watch.schedule import EXPIRY_SLACK, Reason, Scheduler
from pepc.watch.service import Result, WatchService
from watch_helpers import BAD, T0, FakeBackend, FakeClock, rule

# --- scheduler --------------------------------------------------------------


def test_start_is_due_immediately_then_nothing_until_resync():
    s = Scheduler(debounce=0.2, max_delay=2, resync=60)
    assert s.take(0, T0) == {Reason.START}
    s.finished(0.1, ok=True, next_expiry=None)
    assert s.take(1, T0) == frozenset()
    assert s.timeout(1, T0) == pytest.approx(59.1)
    assert s.take(60.1, T0) == {Reason.RESYNC}


def test_burst_of_changes_collapses_into_one_reconcile():
    s = Scheduler(debounce=0.2, max_delay=2, resync=60)
    s.take(0, T0)
    s.finished(0, ok=True, next_expiry=None)
    t = 10.0
    for i in range(100):  # 100 events 1 ms apart: a git checkout
        s.change(t + i * 0.001)
        assert s.take(t + i * 0.001, T0) == frozenset()
    last = t + 0.099
    assert s.timeout(last, T0) == pytest.approx(0.2)
    assert s.take(last + 0.19, T0) == frozenset()
    assert s.take(last + 0.2, T0) == {Reason.CHANGE}
    s.finished(last + 0.3, ok=True, next_expiry=None)
    assert s.take(last + 1, T0) == frozenset()


def test_continuous_churn_is_applied_by_the_max_delay_cap():
    s = Scheduler(debounce=0.2, max_delay=1.0, resync=60)
    s.take(0, T0)
    s.finished(0, ok=True, next_expiry=None)
    fired = []
    for step in range(100, 130):  # an event every 100 ms, never quiet for 200 ms
        t = step / 10
        s.change(t)
        if s.take(t, T0):
            fired.append(t)
            s.finished(t, ok=True, next_expiry=None)
    assert fired == [11.0, 12.1]  # first change + 1 s, then again after the next first change + 1 s


def test_change_during_reconcile_gets_its_own_reconcile():
    s = Scheduler(debounce=0.2, max_delay=2, resync=60)
    s.change(0)
    assert Reason.CHANGE in s.take(0.3, T0)
    s.change(0.35)  # lands while the reconcile runs
    s.finished(0.5, ok=True, next_expiry=None)
    assert s.take(0.55, T0) == {Reason.CHANGE}


def test_expiry_is_scheduled_on_the_wall_clock():
    s = Scheduler(debounce=0.2, max_delay=2, resync=60)
    s.take(0, T0)
    s.finished(0, ok=True, next_expiry=T0 + 5)
    assert s.timeout(0, T0) == pytest.approx(5 + EXPIRY_SLACK)
    assert s.take(4.9, T0 + 4.9) == frozenset()
    assert s.take(5 + EXPIRY_SLACK, T0 + 5 + EXPIRY_SLACK) == {Reason.EXPIRY}


def test_failed_apply_is_retried_with_backoff_capped_at_resync():
    s = Scheduler(debounce=0.2, max_delay=2, resync=5, retry_min=1)
    s.take(0, T0)
    now, delays = 0.0, []
    for _ in range(6):
        s.finished(now, ok=False, next_expiry=None, retry=True)
        delays.append(s.timeout(now, T0))
        now += delays[-1]
        assert s.take(now, T0) & {Reason.RETRY, Reason.RESYNC}
    assert delays == [1, 2, 4, 5, 5, 5]


def test_invalid_policy_is_not_retried_without_a_change():
    s = Scheduler(debounce=0.2, max_delay=2, resync=60)
    s.take(0, T0)
    s.finished(0, ok=False, next_expiry=None, retry=False)
    assert s.timeout(0, T0) == 60


def test_force_is_due_now():
    s = Scheduler()
    s.take(0, T0)
    s.finished(0, ok=True, next_expiry=None)
    s.force()
    assert s.take(0.01, T0) == {Reason.SIGNAL}


# --- service ------------------------------------------------------------------


def make(policy: Policy, **kw):
    clock = FakeClock()
    backend = FakeBackend(policy)
    svc = WatchService(backend, Scheduler(debounce=0.2, max_delay=2, resync=kw.get("resync", 60)), clock=clock)
    return svc, backend, clock


def test_service_applies_at_start_and_is_ready():
    svc, be, clock = make(Policy("d", (rule("a"),)))
    assert svc.tick() == {Reason.START}
    assert be.applied[-1][0] == ("a",)
    st = svc.state()
    assert st.ready and st.result == Result.OK and st.errors == ()
    assert svc.tick() == frozenset()


def test_burst_of_edits_is_one_load_and_one_apply():
    svc, be, clock = make(Policy("d", (rule("a"),)))
    svc.tick()
    loads, applies = be.loads, len(be.applied)
    for i in range(100):
        be.edit(Policy("d", tuple(rule(f"r{j}") for j in range(i + 1))))
        svc.notify_change()
        clock.advance(0.001)
        assert svc.tick() == frozenset()
    clock.advance(0.2)
    assert svc.tick() == {Reason.CHANGE}
    assert (be.loads - loads, len(be.applied) - applies) == (1, 1)
    assert len(be.applied[-1][0]) == 100


def test_invalid_edit_keeps_last_good_and_reports_until_fixed():
    svc, be, clock = make(Policy("d", (rule("a"),)))
    svc.tick()
    be.edit(None, [BAD])
    svc.notify_change()
    clock.advance(0.3)
    svc.tick()
    st = svc.state()
    assert st.result == Result.INVALID and not st.ready
    assert st.errors[0]["code"] == "yaml-syntax" and st.errors[0]["line"] == 3
    assert [a[0] for a in be.applied] == [("a",)]  # nothing applied on the invalid edit

    # a resync while invalid repairs drift toward the last good policy, still not ready
    clock.advance(60)
    assert svc.tick() == {Reason.RESYNC}
    assert be.applied[-1][0] == ("a",)
    assert not svc.state().ready and svc.state().errors

    be.edit(Policy("d", (rule("a"), rule("b"))))
    svc.notify_change()
    clock.advance(0.3)
    svc.tick()
    st = svc.state()
    assert st.ready and st.errors == () and be.applied[-1][0] == ("a", "b")


def test_invalid_at_start_applies_nothing_and_waits_for_a_fix():
    svc, be, clock = make(Policy("d", (rule("a"),)))
    be.edit(None, [BAD])
    svc.tick()
    assert be.applied == [] and not svc.state().ready and not svc.state().first_apply_done
    clock.advance(60)
    svc.tick()  # resync: still nothing to apply, and no reload of an unchanged tree
    assert be.applied == [] and be.loads == 1
    be.edit(Policy("d", (rule("a"),)))
    svc.notify_change()
    clock.advance(0.3)
    svc.tick()
    assert svc.state().ready and be.applied[-1][0] == ("a",)


def test_resync_of_unchanged_tree_reuses_the_load():
    svc, be, clock = make(Policy("d", (rule("a"),)))
    svc.tick()
    clock.advance(60)
    assert svc.tick() == {Reason.RESYNC}
    assert be.loads == 1 and len(be.applied) == 2
    be.fp += 1  # a change inotify missed: the fingerprint notices
    clock.advance(60)
    svc.tick()
    assert be.loads == 2


def test_expiry_removes_the_rule_without_a_file_change():
    clock = FakeClock()
    exp = datetime.fromtimestamp(T0 + 30, timezone.utc)
    be = FakeBackend(Policy("d", (rule("a"), rule("tmp", exp))))
    svc = WatchService(be, Scheduler(resync=3600), clock=clock)
    svc.tick()
    assert be.applied[-1][0] == ("a", "tmp")
    assert svc.timeout() == pytest.approx(30 + EXPIRY_SLACK)
    assert svc.state().next_expiry == "2027-01-15T08:00:30Z"
    clock.advance(30 + EXPIRY_SLACK)
    assert svc.tick() == {Reason.EXPIRY}
    assert be.applied[-1][0] == ("a",) and be.applied[-1][1] >= exp
    assert svc.state().next_expiry is None
    assert svc.timeout() == pytest.approx(3600)


def test_sighup_forces_a_reconcile():
    svc, be, clock = make(Policy("d", (rule("a"),)))
    svc.tick()
    svc.request_reconcile()
    assert svc.tick() == {Reason.SIGNAL}
    assert len(be.applied) == 2 and be.loads == 2  # a forced reconcile re-reads the directory


def test_kernel_refusal_is_an_error_and_retried():
    svc, be, clock = make(Policy("d", (rule("a"),)))
    be.fail_apply = EnvironmentProblem("interface veth9 does not exist", "create it")
    svc.tick()
    st = svc.state()
    assert st.result == Result.ERROR and not st.ready and "veth9" in st.errors[0]["message"]
    assert svc.timeout() == pytest.approx(0.5)
    be.fail_apply = None
    clock.advance(0.5)
    assert svc.tick() == {Reason.RETRY}
    assert svc.state().ready


def test_a_bug_in_apply_does_not_stop_the_loop():
    svc, be, clock = make(Policy("d", (rule("a"),)))
    be.fail_apply = ZeroDivisionError("boom")
    svc.tick()
    assert svc.state().result == Result.ERROR and svc.state().errors[0]["code"] == "internal"


def test_compile_failure_is_treated_as_invalid_and_keeps_last_good():
    svc, be, clock = make(Policy("d", (rule("a"),)))
    svc.tick()
    be.edit(Policy("d", (rule("huge"),)))
    be.fail_apply = PolicyError([Finding("capacity", "too many masks", Location("p.yaml"))])
    svc.notify_change()
    clock.advance(0.3)
    svc.tick()
    assert svc.state().result == Result.INVALID and svc.state().errors[0]["code"] == "capacity"
    be.fail_apply = None
    clock.advance(60)
    svc.tick()  # resync: converges to the last good policy, not to the one that cannot compile
    assert be.applied[-1][0] == ("a",) and not svc.state().ready


def test_run_loop_stops_on_request_and_wakes_from_another_thread():
    import threading

    be = FakeBackend(Policy("d", (rule("a"),)))
    svc = WatchService(be, Scheduler(debounce=0.0, max_delay=0.0, resync=3600))
    t = threading.Thread(target=svc.run)
    t.start()
    try:
        be.edit(Policy("d", (rule("a"), rule("b"))))
        svc.notify_change()
        for _ in range(200):  # wait for the effect, not for a duration
            if be.applied and be.applied[-1][0] == ("a", "b"):
                break
            threading.Event().wait(0.01)
        assert be.applied[-1][0] == ("a", "b")
    finally:
        svc.request_stop()
        t.join(10)
    assert not t.is_alive()


# --- logs -----------------------------------------------------------------------


def test_json_logs_are_one_object_per_line():
    buf = io.StringIO()
    logger = pepclog.setup("json", stream=buf)
    try:
        svc, be, clock = make(Policy("d", (rule("a"),)))
        svc.tick()
        be.edit(None, [BAD])
        svc.notify_change()
        clock.advance(0.3)
        svc.tick()
    finally:
        pepclog.setup("text")
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert {"ts", "level", "msg", "fields"} <= set(lines[0])
    assert any(l["msg"] == "reconciled" and l["fields"]["writes"] == 1 for l in lines)
    warn = [l for l in lines if l["level"] == "warning"]
    assert warn[0]["fields"]["result"] == "invalid"
    assert any(l["fields"].get("code") == "yaml-syntax" for l in warn)


def test_text_logs_have_logfmt_fields():
    buf = io.StringIO()
    pepclog.setup("text", stream=buf)
    try:
        pepclog.get("t").info("hello", fields={"n": 3, "s": "a b"})
    finally:
        pepclog.setup("text")
    line = buf.getvalue().strip()
    assert line.endswith('info    hello n=3 s="a b"')
