"""Token buckets and LOG_ONLY events, through BPF_PROG_TEST_RUN.

No timing thresholds except the one the issue asks for: the refill rate
within 10%. That check computes its bounds from monotonic timestamps taken
around every step (the kernel's bpf_ktime_get_ns is CLOCK_MONOTONIC too),
so a slow or preempted test run widens the bounds instead of failing.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

import pytest

from kernel_fixtures import LOC, compile_policy, pinned_instance
from pepc.compiler import layout
from pepc.simulate.frames import IPPROTO_UDP, build_frame
from pepc.policy.model import Action, PortRange, Protocol, Rule

pytestmark = pytest.mark.kernel

CAPS = layout.Capacities(max_rules=16, max_entries=64, max_masks=8, ring_bytes=4096)
LEN = 100  # every frame of this module is exactly 100 bytes


def udp_frame(dport: int, src: str = "10.9.0.1") -> bytes:
    f = build_frame(src, "10.9.0.2", IPPROTO_UDP, 5555, dport, payload=LEN - 42)
    assert len(f) == LEN
    return f


def rl_rule(rid: str, dport: int, rate: int, burst: int) -> Rule:
    return Rule(
        rid, Action.RATE_LIMIT, LOC, protocol=Protocol.UDP, dports=(PortRange(dport, dport),), rate_limit_bps=rate, burst_bytes=burst
    )


@contextlib.contextmanager
def on_cpu(cpu: int):
    """Keep the calling thread on one CPU (per-CPU budgets become exact)."""
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


def passed_and_dropped(inst, slot: int) -> tuple[int, int]:
    from pepc.kernel import dataplane

    s = dataplane.read_rule_stats(inst, slot)
    return s["packets"] - s["drops"], s["drops"]


def test_burst_passes_exactly_the_bucket_then_drops():
    from pepc.kernel import dataplane
    from pepc.kernel.testrun import test_run

    # 1 byte/s: nothing measurable refills during the test, so "exactly" is exact
    _, prog = compile_policy([rl_rule("burst", 9000, rate=1, burst=50 * LEN)], CAPS)
    slot = prog.slot_of("burst")
    with pinned_instance(CAPS) as inst:
        dataplane.load_program(inst, prog)
        frame = udp_frame(9000)
        verdicts = [test_run(inst.prog_fd, frame).retval for _ in range(60)]
        assert verdicts == [layout.XDP_PASS] * 50 + [layout.XDP_DROP] * 10
        assert passed_and_dropped(inst, slot) == (50, 10)
        c = dataplane.read_counters(inst)
        assert (c["rate_limit_pass"], c["rate_limit_drop"]) == (50, 10)
        # other traffic is not limited by this rule's bucket
        assert test_run(inst.prog_fd, udp_frame(9001)).retval == layout.XDP_PASS


def test_bucket_is_shared_by_all_cpus():
    """Two CPUs hammering one rule together pass the capacity once, not twice."""
    from pepc.kernel import dataplane
    from pepc.kernel.testrun import test_run

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    _, prog = compile_policy([rl_rule("shared", 9000, rate=1, burst=300 * LEN)], CAPS)
    slot = prog.slot_of("shared")
    with pinned_instance(CAPS) as inst:
        dataplane.load_program(inst, prog)
        frame = udp_frame(9000)
        errors: list[BaseException] = []

        def hammer(cpu: int) -> None:
            try:
                with on_cpu(cpu):
                    for _ in range(10):
                        test_run(inst.prog_fd, frame, repeat=100)
            except BaseException as e:  # surfaced below
                errors.append(e)

        threads = [threading.Thread(target=hammer, args=(c,)) for c in cpus[:2]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert passed_and_dropped(inst, slot) == (300, 2000 - 300)


def test_bucket_refills_at_the_configured_rate():
    from pepc.kernel import dataplane
    from pepc.kernel.testrun import test_run

    rate = 200_000  # bytes/s: 2,000 frames a second
    _, prog = compile_policy([rl_rule("refill", 9000, rate=rate, burst=1_000_000)], CAPS)
    slot = prog.slot_of("refill")
    with pinned_instance(CAPS) as inst:
        dataplane.load_program(inst, prog)
        frame = udp_frame(9000)
        # drain the full bucket (10,000 frames) and then some: the bucket
        # holds less than a frame after the last run
        test_run(inst.prog_fd, frame, repeat=15_000)
        bucket = dataplane.read_bucket(inst, slot)
        tokens0, last0 = bucket["tokens"], bucket["last_ns"]
        assert tokens0 < LEN and last0 <= time.monotonic_ns()
        passed0, _ = passed_and_dropped(inst, slot)

        time.sleep(1.0)
        t_start = time.monotonic_ns()
        test_run(inst.prog_fd, frame, repeat=6_000)  # far more than a second's worth
        t_end = time.monotonic_ns()
        passed = passed_and_dropped(inst, slot)[0] - passed0

        earned = passed * LEN - tokens0  # bytes the bucket gained since last0 (minus < LEN left over)
        low = rate * (t_start - last0) / 1e9 - LEN  # refill at least until the probe began
        high = rate * (t_end - last0) / 1e9  # and at most until it ended
        assert 0.9 * low <= earned <= 1.1 * high, (earned, low, high)
        # and the measured rate itself, over the pause
        measured = (earned + LEN / 2) / ((t_start + t_end) / 2 - last0) * 1e9
        assert abs(measured - rate) <= 0.1 * rate, measured


def log_rule(rid: str = "log") -> Rule:
    return Rule(rid, Action.LOG_ONLY, LOC, protocol=Protocol.UDP, dports=(PortRange(7000, 7099),))


def test_log_only_events_carry_the_packet_and_are_capped():
    from pepc.kernel import dataplane
    from pepc.kernel.ringbuf import EventReader
    from pepc.kernel.testrun import test_run

    _, prog = compile_policy([log_rule()], CAPS, event_cap=5)
    slot = prog.slot_of("log")
    cpu = sorted(os.sched_getaffinity(0))[0]
    with pinned_instance(CAPS) as inst, EventReader(inst.map("pepc_events")) as reader:
        dataplane.load_program(inst, prog)
        with on_cpu(cpu):
            t0 = time.monotonic_ns()
            verdicts = [test_run(inst.prog_fd, udp_frame(7000 + i)).retval for i in range(12)]
            t1 = time.monotonic_ns()
        assert verdicts == [layout.XDP_PASS] * 12  # LOG_ONLY passes, capped or not
        events = reader.drain()
        assert [e["dport"] for e in events] == [7000, 7001, 7002, 7003, 7004]
        for e in events:
            assert e["slot"] == slot
            assert e["src"] == 0x0A090001 and e["dst"] == 0x0A090002
            assert e["sport"] == 5555 and e["proto"] == IPPROTO_UDP
            assert e["action"] == int(Action.LOG_ONLY) and e["len"] == LEN
            assert t0 <= e["ts_ns"] <= t1
        c = dataplane.read_counters(inst)
        assert (c["events_sent"], c["events_suppressed"], c["events_lost"], c["log_only"]) == (5, 7, 0, 12)
        budget = layout.EV_BUDGET.unpack(inst.map("pepc_evbudget").lookup_percpu(dataplane.u32(slot))[cpu])
        assert (budget["count"], budget["suppressed"]) == (5, 7)

        # a new one-second window brings a new budget
        time.sleep(max(0.0, 1.05 - (time.monotonic_ns() - t0) / 1e9))
        with on_cpu(cpu):
            test_run(inst.prog_fd, udp_frame(7050))
        assert [e["dport"] for e in reader.poll(1000)] == [7050]
        assert dataplane.read_counters(inst)["events_sent"] == 6


def test_full_ring_counts_lost_events():
    from pepc.kernel import dataplane
    from pepc.kernel.ringbuf import EventReader
    from pepc.kernel.testrun import test_run

    _, prog = compile_policy([log_rule()], CAPS, event_cap=10_000)
    with pinned_instance(CAPS) as inst:
        dataplane.load_program(inst, prog)
        # nobody reads while 200 events go into a 4 KiB ring (~85 records fit)
        test_run(inst.prog_fd, udp_frame(7000), repeat=200)
        c = dataplane.read_counters(inst)
        assert c["events_lost"] > 0
        assert c["events_sent"] + c["events_lost"] == 200 and c["events_suppressed"] == 0
        with EventReader(inst.map("pepc_events")) as reader:
            assert len(reader.drain()) == c["events_sent"]


def test_huge_rates_refill_without_overflow():
    """Rates at and beyond the language's 2^40 B/s cap: the bucket refills
    in full after a short pause instead of wrapping around to nothing."""
    from pepc.kernel import dataplane
    from pepc.kernel.testrun import test_run

    _, prog = compile_policy([rl_rule("huge", 9000, rate=2**40, burst=20 * LEN)], CAPS)
    slot = prog.slot_of("huge")
    with pinned_instance(CAPS) as inst:
        dataplane.load_program(inst, prog)
        frame = udp_frame(9000)
        for rate in (2**40, 2**63 + 12345):  # the second only by writing the map directly
            if rate > 2**40:
                raw = bytearray(inst.map(f"pepc_slots_{dataplane.active_gen(inst)}").lookup(dataplane.u32(slot)))
                raw[0:8] = rate.to_bytes(8, "little")
                inst.map(f"pepc_slots_{dataplane.active_gen(inst)}").update(dataplane.u32(slot), bytes(raw))
            for _ in range(3):
                before = passed_and_dropped(inst, slot)[0]
                test_run(inst.prog_fd, frame, repeat=25)
                # a full bucket, then at most what 25 runs' worth of time earns
                assert 20 <= passed_and_dropped(inst, slot)[0] - before <= 25
                time.sleep(0.01)  # 10 ms at >= 2^40 B/s refills the 2,000-byte bucket many times over
