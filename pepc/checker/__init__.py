"""The conflict checker: every rule anomaly of a policy, exactly.

`analyze(policy, config, now)` returns the anomaly findings of the rules
live at `now` (enabled, not expired), sorted. The geometry is exact (see
geometry.py and regions.py); witnesses are confirmed by `pepc.semantics`.

Intentional overlaps are acknowledged where they are written:

- `suppress: [code, ...]` on a rule silences findings of those codes that
  are *on* the rule: shadowed, redundant and never-matches are on the rule
  they name; conflict, correlation and generalization are on both rules of
  the pair; unreachable-default is on the catch-all rule that causes it;
  capacity on the rule the compiler names, if any.
- `allow_overlap: [rule-id, ...]` on rule A acknowledges every rule listed
  (either side may list the other). It silences conflict, correlation and
  generalization between A and a listed rule, and shadowed/redundant
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

from pepc.checker.anomalies import Analysis, Raw, checker_codes
from pepc.checker.space import Space, default_key
from pepc.config import Config
from pepc.diagnostics import CODES, Finding, PolicyError
from pepc.model import Policy, Rule

__all__ = ["analyze"]


def analyze(
    policy: Policy,
    config: Config,
    now: datetime,
    *,
    capacity: bool = True,
    naive_index: bool = False,
) -> list[Finding]:
    """The anomaly findings of `policy` at `now`, sorted.

    `capacity=False` skips the compiler run behind the `capacity` check;
    `naive_index=True` replaces the candidate index by the all-pairs scan
    (the benchmark's baseline; same results).
    """
    live = list(policy.live_rules(now))
    space = Space.build(live, naive=naive_index)
    an = Analysis(space, config.default_action, default_key(config.default_action), policy.root)
    raws: list[Raw] = []
    raws += an.never_matches()
    raws += an.coverage()
    raws += an.pairs()
    raws += an.unreachable_default()
    ran_capacity = False
    if capacity:
        found = _capacity(policy, config, now)
        if found is not None:
            ran_capacity = True
            raws += [Raw(f, on=(f.rule,) if f.rule else ()) for f in found]
    findings = _suppress(raws, live, ran_capacity)
    findings = [_with_severity(f, config) for f in findings]
    return sorted(findings, key=Finding.sort_key)


def _capacity(policy: Policy, config: Config, now: datetime) -> list[Finding] | None:
    """The compiler's `capacity` findings; None when there is no compiler."""
    try:
        from pepc.compiler import compile_program
    except ImportError:
        return None
    try:
        compile_program(policy, config, now)
    except PolicyError as err:
        return [f for f in err.findings if f.code == "capacity"]
    return []


def _with_severity(f: Finding, config: Config) -> Finding:
    sev = config.severity_of(f.code, CODES[f.code].severity)
    return f if sev == f.severity else dataclasses.replace(f, severity=sev)


def _suppress(raws: list[Raw], live: list[Rule], ran_capacity: bool) -> list[Finding]:
    by_id = {r.id: r for r in live}
    used: set[tuple[str, str]] = set()  # (rule id, "code:<c>" | "id:<rule>")

    def acks(a: str, b: str) -> list[tuple[str, str]]:
        out = []
        ra, rb = by_id.get(a), by_id.get(b)
        if ra is not None and b in ra.allow_overlap:
            out.append((a, "id:" + b))
        if rb is not None and a in rb.allow_overlap:
            out.append((b, "id:" + a))
        return out

    kept: list[Finding] = []
    for raw in raws:
        f = raw.finding
        silencing = [(rid, "code:" + f.code) for rid in raw.on if rid in by_id and f.code in by_id[rid].suppress]
        if raw.pair is not None:
            silencing += acks(*raw.pair)
        elif raw.partners and not raw.via_default and f.rule is not None:
            per_partner = [acks(f.rule, p) for p in raw.partners]
            if all(per_partner):
                silencing += [e for entries in per_partner for e in entries]
        if silencing:
            used.update(silencing)
        else:
            kept.append(f)

    judged = checker_codes() if ran_capacity else checker_codes() - {"capacity"}
    for rule in live:
        for code in rule.suppress:
            if code == "unused-suppression" or (rule.id, "code:" + code) in used:
                continue
            if code not in CODES:
                msg = f"`suppress: [{code}]` on rule `{rule.id}` names no finding code"
            elif code in judged:
                msg = f"`suppress: [{code}]` on rule `{rule.id}` no longer silences any finding; remove it"
            else:
                continue  # another stage owns that code
            if "unused-suppression" not in rule.suppress:
                kept.append(Finding("unused-suppression", msg, rule.loc_of("suppress"), rule=rule.id))
        for other in rule.allow_overlap:
            if (rule.id, "id:" + other) in used:
                continue
            if other not in by_id:
                msg = f"`allow_overlap: [{other}]` on rule `{rule.id}` names no live rule"
            else:
                msg = f"`allow_overlap: [{other}]` on rule `{rule.id}` no longer silences any finding; remove it"
            if "unused-suppression" not in rule.suppress:
                kept.append(Finding("unused-suppression", msg, rule.loc_of("allow_overlap"), rule=rule.id))
    return kept
