"""Prometheus metrics of `pepc watch`.

Two kinds: the loop's own history (reconciles by result, their duration,
writes), kept in prometheus-client instruments as it happens; and the data
plane (per-rule and global counters, generation, map usage), which a custom
collector reads from the live maps at scrape time — a scrape always shows
the kernel's truth, not a cached copy, and an idle service does no work
until somebody asks.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pepc.report import log as pepclog
from pepc.watch.schedule import Reason
from pepc.watch.service import Outcome, Result, State

LOG = pepclog.get("metrics")

PREFIX = "pepc"


@dataclass(frozen=True)
class RuleCounters:
    rule: str
    slot: int
    packets: int
    bytes: int
    drops: int


@dataclass(frozen=True)
class LiveSnapshot:
    """What the data plane holds right now (read from the pinned maps)."""

    active_gen: int
    rules: tuple[RuleCounters, ...] = ()
    counters: dict[str, int] = field(default_factory=dict)  # layout.COUNTERS names -> sum over CPUs
    usage: dict[str, tuple[int, int]] = field(default_factory=dict)  # map -> (in use, capacity)
    attached: dict[str, bool] = field(default_factory=dict)  # interface -> our program attached
    policy_digest: str = ""


class WatchMetrics:
    """The loop's instruments; registered as an Observer of the WatchService."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.reconciles = Counter(
            f"{PREFIX}_reconciles", "Reconciles by result (ok, invalid: last good kept, error: apply failed)",
            ["result"], registry=registry,
        )
        self.reasons = Counter(f"{PREFIX}_reconcile_triggers", "What triggered reconciles", ["reason"], registry=registry)
        self.duration = Histogram(
            f"{PREFIX}_reconcile_duration_seconds", "Time to load, diff and apply",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0), registry=registry,
        )
        self.writes = Counter(f"{PREFIX}_reconcile_writes", "Map writes made by reconciles", registry=registry)
        for r in (Result.OK, Result.INVALID, Result.ERROR):
            self.reconciles.labels(r)  # present at 0 so rate() works from the first scrape
        for reason in Reason:
            self.reasons.labels(reason.value)

    def reconciled(self, result: str, reasons: frozenset[Reason], seconds: float, outcome: Outcome | None) -> None:
        self.reconciles.labels(result).inc()
        for r in reasons:
            self.reasons.labels(r.value).inc()
        self.duration.observe(seconds)
        if outcome is not None:
            self.writes.inc(outcome.writes)


class StateCollector(Collector):
    """Gauges derived from the loop's current state at scrape time."""

    def __init__(self, state: Callable[[], State]) -> None:
        self._state = state

    def collect(self) -> Iterable[Metric]:
        st = self._state()
        yield GaugeMetricFamily(f"{PREFIX}_ready", "1 when the first apply is done and the last reconcile was good", value=int(st.ready))
        yield GaugeMetricFamily(
            f"{PREFIX}_last_reconcile_error", "1 when the last reconcile did not converge to the directory",
            value=int(st.result not in (None, Result.OK)),
        )
        yield GaugeMetricFamily(f"{PREFIX}_policy_errors", "Current errors of the policy directory or of the apply", value=len(st.errors))
        if st.last_success is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_last_successful_reconcile_timestamp_seconds", "Unix time of the last good reconcile", value=st.last_success
            )
        if st.last_reconcile is not None:
            yield GaugeMetricFamily(f"{PREFIX}_last_reconcile_timestamp_seconds", "Unix time of the last reconcile", value=st.last_reconcile)
        if st.generation is not None:
            yield GaugeMetricFamily(f"{PREFIX}_policy_generation", "Generation written by the last apply", value=st.generation)
        if st.next_expiry is not None:
            from datetime import datetime

            ts = datetime.fromisoformat(st.next_expiry.replace("Z", "+00:00")).timestamp()
            yield GaugeMetricFamily(f"{PREFIX}_next_expiry_timestamp_seconds", "When the next rule expires", value=ts)


class LiveCollector(Collector):
    """Data-plane metrics, read from the pinned maps at every scrape."""

    def __init__(self, read: Callable[[], LiveSnapshot | None]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        try:
            snap = self._read()
        except Exception as err:  # the maps may be gone (unloaded, pins removed): say so, keep serving
            LOG.debug("cannot read live maps", fields={"error": repr(err), "trace": traceback.format_exc(limit=2)})
            snap = None
        yield GaugeMetricFamily(f"{PREFIX}_live_readable", "1 when the pinned maps could be read at this scrape", value=int(snap is not None))
        if snap is None:
            return
        yield GaugeMetricFamily(f"{PREFIX}_active_generation", "Generation the XDP program reads (0 or 1)", value=snap.active_gen)

        pk = CounterMetricFamily(f"{PREFIX}_rule_packets", "Packets that matched the rule", labels=["rule"])
        by = CounterMetricFamily(f"{PREFIX}_rule_bytes", "Bytes of packets that matched the rule", labels=["rule"])
        dr = CounterMetricFamily(f"{PREFIX}_rule_drops", "Packets the rule dropped", labels=["rule"])
        for rc in snap.rules:
            pk.add_metric([rc.rule], rc.packets)
            by.add_metric([rc.rule], rc.bytes)
            dr.add_metric([rc.rule], rc.drops)
        yield pk
        yield by
        yield dr

        xdp = CounterMetricFamily(
            f"{PREFIX}_xdp", "Global data-plane counters: every verdict, action and parse error", labels=["counter"]
        )
        for name, v in snap.counters.items():
            xdp.add_metric([name], v)
        yield xdp
        yield CounterMetricFamily(
            f"{PREFIX}_events_suppressed", "LOG_ONLY events dropped by the per-rule rate cap",
            value=snap.counters.get("events_suppressed", 0),
        )
        yield CounterMetricFamily(
            f"{PREFIX}_events_lost", "Events lost because the ring buffer was full", value=snap.counters.get("events_lost", 0)
        )

        used = GaugeMetricFamily(f"{PREFIX}_map_entries", "Entries in use in the active generation", labels=["map"])
        cap = GaugeMetricFamily(f"{PREFIX}_map_capacity", "Capacity of the map", labels=["map"])
        for name, (u, c) in sorted(snap.usage.items()):
            used.add_metric([name], u)
            cap.add_metric([name], c)
        yield used
        yield cap

        if snap.attached:
            at = GaugeMetricFamily(f"{PREFIX}_attached", "1 when pepc's program is attached to the interface", labels=["interface"])
            for iface, ok in sorted(snap.attached.items()):
                at.add_metric([iface], int(ok))
            yield at


def build_registry(
    state: Callable[[], State], live: Callable[[], LiveSnapshot | None] | None
) -> tuple[CollectorRegistry, WatchMetrics]:
    from prometheus_client import disable_created_metrics
    from prometheus_client.process_collector import ProcessCollector

    disable_created_metrics()  # *_created series double the output and say nothing here

    # auto_describe off: describing a custom collector would read the maps at registration.
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)  # process_cpu_seconds_total & co: the idle cost is visible too
    wm = WatchMetrics(registry)
    registry.register(StateCollector(state))
    if live is not None:
        registry.register(LiveCollector(live))
    return registry, wm
