"""The conflict checker: every rule anomaly of a policy, exactly.

Takes: a `Policy` and `Config` (pepc.policy), a time, and optionally the
compiler's capacity check (it runs before the compiler in the pipeline, so
the caller passes `pepc.compiler.capacity_findings` in).
Gives: the anomaly findings (shadowed, redundant, conflict, correlation,
generalization, never-matches, unreachable-default, capacity,
unused-suppression), sorted; `incremental.py` decides the apply gate's
errors again only where an edit can change them.
Start with: anomalies.py (geometry.py: rules as boxes; space.py and
index.py: finding the boxes that meet; regions.py: exact searches;
workers.py: the split over CPUs).

`analyze(policy, config, now)` returns the anomaly findings of the rules
live at `now` (enabled, not expired), sorted. The geometry is exact (see
geometry.py and regions.py); witnesses are confirmed by `pepc.policy.semantics`.

Intentional overlaps are acknowledged where they are written:

- `suppress: [code, ...]` on a rule silences the findings of those codes
  reported at that rule: shadowed, redundant and never-matches at the rule
  they are about; conflict, correlation and generalization at the rule that
  loses the overlap (the one whose packets the others take);
  unreachable-default at the catch-all rule that causes it; capacity at the
  rule the compiler names, if any.
- `allow_overlap: [rule-id, ...]` on rule A acknowledges every rule listed
  (either side may list the other). It removes the listed rule from A's
  conflict, correlation and generalization findings and A from the listed
  rule's (a finding left naming no rule is dropped), and it silences shadowed/redundant
  findings of A (or of the listed rule) when *every* rule named as covering
  it / taking over its packets is acknowledged; a redundancy that involves
  the default action can only be silenced with `suppress: [redundant]`.
- Every entry that silenced nothing is reported as `unused-suppression`
  (info) at the rule: a `suppress` code the checker emits (or an unknown
  code), or an `allow_overlap` id, so suppressions do not rot. Codes other
  stages own (expired, disabled, ...) are not judged here. A rule's own
  `suppress: [unused-suppression]` silences those reports on it.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Callable, Sequence

from pepc.policy import gcpause
from pepc.checker import workers
from pepc.checker.anomalies import PAIR_CODES, Analysis, Raw, Suppressions
from pepc.checker.space import Space, default_key
from pepc.policy.config import Config
from pepc.policy.diagnostics import CODES, Finding, PolicyError
from pepc.policy.model import Policy

__all__ = ["analyze", "CHECKER_CODES", "CapacityCheck"]

#: The compiler's `capacity` findings of a policy under a config (pepc.compiler.capacity_findings).
#: The checker runs before the compiler in the pipeline, so whoever holds both passes it in.
CapacityCheck = Callable[[Policy, Config, datetime], Sequence[Finding]]

#: The codes `analyze` emits (and so can judge suppressions of).
CHECKER_CODES = frozenset(
    {"shadowed", "redundant", *PAIR_CODES, "never-matches", "unreachable-default", "capacity", "unused-suppression"}
)


def analyze(
    policy: Policy,
    config: Config,
    now: datetime,
    *,
    capacity: CapacityCheck | None = None,
    naive_index: bool = False,
    jobs: int | None = None,
) -> list[Finding]:
    """The anomaly findings of `policy` at `now`, sorted.

    `capacity`: the compiler's capacity check (pepc.compiler.capacity_findings),
    whose findings are reported, suppressed and judged like the others;
    None leaves `capacity` out (and its suppressions unjudged);
    `naive_index=True` replaces the candidate index by a scan of every
    atom (the benchmark's all-pairs baseline; same results as long as no
    finding hits its cap of named rules); `jobs`: processes to split the
    analysis over (workers.py; None: as many CPUs as pay, 1: none).
    """
    with gcpause.paused():
        return _analyze(policy, config, now, capacity, naive_index, jobs)


def _analyze(policy: Policy, config: Config, now: datetime, capacity: CapacityCheck | None, naive_index: bool, jobs: int | None) -> list[Finding]:
    live = list(policy.live_rules(now))
    space = Space.build(live, naive=naive_index)
    jobs = workers.jobs_for(len(space.boxes), jobs)
    sup = Suppressions(live)
    an = Analysis(space, config.default_action, default_key(config.default_action), policy.root, sup)
    raws: list[Raw] = []
    raws += an.never_matches()
    raws += workers.split(an, an.coverage, jobs)
    raws += an.unreachable_default()
    if capacity is not None:
        raws += [Raw(f, on=(f.rule,) if f.rule else ()) for f in capacity(policy, config, now)]
    findings = [r.finding for r in raws if not sup.silence(r)]
    findings += workers.split(an, an.pairs, jobs)
    findings += _unused(an, sup, live, ran_capacity=capacity is not None)
    findings = [_with_severity(f, config) for f in findings]
    return sorted(findings, key=Finding.sort_key)


def _with_severity(f: Finding, config: Config) -> Finding:
    sev = config.severity_of(f.code, CODES[f.code].severity)
    return f if sev == f.severity else dataclasses.replace(f, severity=sev)


def _unused(an: Analysis, sup: Suppressions, live: list, ran_capacity: bool) -> list[Finding]:
    judged = CHECKER_CODES if ran_capacity else CHECKER_CODES - {"capacity"}
    out: list[Finding] = []
    for rule in live:
        quiet = "unused-suppression" in rule.suppress
        for code in rule.suppress:
            if code == "unused-suppression" or (rule.id, "code:" + code) in sup.used:
                continue
            if code not in CODES:
                msg = f"`suppress: [{code}]` on rule `{rule.id}` names no finding code"
            elif code in judged:
                msg = f"`suppress: [{code}]` on rule `{rule.id}` no longer silences any finding; remove it"
            else:
                continue  # another stage owns that code
            if not quiet:
                out.append(Finding("unused-suppression", msg, rule.loc_of("suppress"), rule=rule.id))
        for other in rule.allow_overlap:
            if (rule.id, "id:" + other) in sup.used:
                continue
            if other in sup.by_id and an.acknowledged_pair_exists(rule.id, other):
                continue  # silences a pair the capped search did not get to
            if other not in sup.by_id:
                msg = f"`allow_overlap: [{other}]` on rule `{rule.id}` names no live rule"
            else:
                msg = f"`allow_overlap: [{other}]` on rule `{rule.id}` no longer silences any finding; remove it"
            if not quiet:
                out.append(Finding("unused-suppression", msg, rule.loc_of("allow_overlap"), rule=rule.id))
    return out
