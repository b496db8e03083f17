"""The analysis split over forked workers (pepc/checker/workers.py) reports
exactly what one process reports: verdicts, witnesses, named partners,
and which suppressions were used."""

from __future__ import annotations

import os
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings

from pepc.checker import analyze, workers
from pepc.checker.anomalies import Analysis
from pepc.policy.config import Config
from pepc.policy.diagnostics import EnvironmentProblem
from pepc.policy.model import Policy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import check as bench  # noqa: E402

from test_checker_oracle import NOW, policies  # noqa: E402


@pytest.fixture(autouse=True)
def _forking():
    # a split that silently ran in one process would prove nothing
    assert workers.can_fork(), "the test process has other threads: the split would not fork"


@settings(max_examples=100, deadline=None)
@given(policies(max_rules=7))
def test_split_analysis_is_the_sequential_one(policy):
    one = analyze(policy, Config(), NOW, jobs=1)
    assert analyze(policy, Config(), NOW, jobs=2) == one
    assert analyze(policy, Config(), NOW, jobs=3) == one


def _with_suppressions(policy: Policy) -> Policy:
    """Every 7th rule suppresses some codes, every 11th acknowledges its
    neighbours: used and unused entries fall in every worker's slice."""
    rules = list(policy.rules)
    for i in range(0, len(rules), 7):
        rules[i] = replace(rules[i], suppress=("shadowed", "conflict", "correlation"))
    for i in range(3, len(rules) - 1, 11):
        rules[i] = replace(rules[i], allow_overlap=(rules[i - 1].id, rules[i + 1].id))
    return replace(policy, rules=tuple(rules))


@pytest.mark.parametrize("shape", ["a", "b", "c", "d"])
def test_split_on_the_benchmark_shapes(shape):
    policy = _with_suppressions(bench.SHAPES[shape](1500))
    one = analyze(policy, Config(), NOW, jobs=1)
    assert any(f.code == "unused-suppression" for f in one)
    assert analyze(policy, Config(), NOW, jobs=2) == one
    assert analyze(policy, Config(), NOW, jobs=4) == one


def test_a_failing_worker_is_an_error_not_a_hang(monkeypatch):
    real = Analysis.coverage

    def coverage(self, part=(0, 1)):
        if part[0] == 1:
            raise RuntimeError("boom in the worker")
        return real(self, part)

    monkeypatch.setattr(Analysis, "coverage", coverage)
    with pytest.raises(AssertionError, match="(?s)checker worker failed.*boom in the worker"):
        analyze(bench.SHAPES["d"](300), Config(), NOW, jobs=2)


def test_no_fork_while_other_threads_run(monkeypatch):
    monkeypatch.delenv("PEPC_CHECK_JOBS", raising=False)
    assert workers.jobs_for(10**6) == min(len(os.sched_getaffinity(0)), workers.MAX_JOBS)
    assert workers.jobs_for(workers.MIN_ATOMS - 1) == 1
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert workers.jobs_for(10**6) == 1
        assert workers.jobs_for(10**6, jobs=4) == 1
    finally:
        stop.set()
        t.join()


def test_the_job_count_can_be_set_from_the_environment(monkeypatch):
    monkeypatch.setenv("PEPC_CHECK_JOBS", "3")
    assert workers.jobs_for(10) == 3
    monkeypatch.setenv("PEPC_CHECK_JOBS", "1")
    assert workers.jobs_for(10**6) == 1


def test_a_killed_worker_is_an_environment_problem(monkeypatch):
    real = Analysis.coverage

    def coverage(self, part=(0, 1)):
        if part[0] == 1:
            os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
        return real(self, part)

    monkeypatch.setattr(Analysis, "coverage", coverage)
    with pytest.raises(EnvironmentProblem, match="killed by signal 9") as info:
        analyze(bench.SHAPES["d"](300), Config(), NOW, jobs=2)
    assert "--jobs 1" in info.value.hint


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_a_bad_job_count_in_the_environment_is_reported(monkeypatch, value):
    monkeypatch.setenv("PEPC_CHECK_JOBS", value)
    with pytest.raises(EnvironmentProblem, match="PEPC_CHECK_JOBS must be a whole number"):
        workers.jobs_for(10**6)
