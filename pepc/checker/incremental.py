"""The check gate across edits: the errors `analyze` would report, found by
looking again only at the rules an edit can have changed.

Why it is exact: every finding the gate can delegate here (shadowed,
redundant, never-matches) is decided by the rule itself, the default
action and the atoms that meet the rule's atoms (their ranks, actions and
`suppress`/`allow_overlap` entries). A rule that meets no edited rule,
neither its old nor its new version, keeps its findings. So after an edit
the checker re-decides the edited rules, every live rule meeting one of
them (old or new version), and the rules that had errors last time (to
report them again); all other rules are known to be as they were.

The space of atoms and its index are kept across calls and edited in
place: added rules append atoms, removed ones leave tombstones the index
queries skip, and ranks are integers with gaps so that an atom can be
ranked between two others without renumbering the rest. The space is
built afresh when tombstones outnumber live atoms, and whenever a full
analysis runs.

The first call decides every live rule the same way (rule by rule: no
pairwise search, which only yields warnings and infos under the default
severities). The exhaustive analysis runs instead when the config makes an
error of a code this module does not decide (pairwise codes,
unreachable-default, unused-suppression), and after a result with an
error not tied to a rule. `capacity` is the caller's: the session compiles
the same policy before its gate, and the compiler raises capacity errors
itself. `gate_errors` is the same decision in one call, for `pepc apply`.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_left, insort
from datetime import datetime
from typing import Any, Iterable, Iterator, Sequence

from pepc.policy import gcpause
from pepc.checker import CapacityCheck
from pepc.checker.anomalies import Analysis, Raw, Suppressions
from pepc.checker.geometry import atom_box
from pepc.checker.space import Space, action_key, default_key
from pepc.policy.config import Config
from pepc.policy.diagnostics import CODES, Finding, Severity
from pepc.policy.model import Policy, Rule, rule_changes
from pepc.policy.semantics import atoms_of, rank_key

#: Codes decided here; an error of any other checker code needs the full analysis.
LOCAL_CODES = frozenset({"shadowed", "redundant", "never-matches", "capacity"})
LIFECYCLE_CODES = ("expired", "disabled")
#: Rank spacing: room for 2^20 atoms ranked between two neighbours before a renumbering.
_GAP = 1 << 20


class _LiveIndex:
    """The space's index without the tombstoned atoms."""

    def __init__(self, inner, gone: set[int]) -> None:
        self.inner, self.gone = inner, gone

    def add(self, i: int) -> None:
        self.inner.add(i)

    def meeting(self, q, dst, src) -> Iterator[int]:
        gone = self.gone
        return (j for j in self.inner.meeting(q, dst, src) if j not in gone)

    def stab(self, point: tuple) -> list[int]:
        gone = self.gone
        return [j for j in self.inner.stab(point) if j not in gone]


class DynamicSpace:
    """A `Space` over a set of live rules that follows edits in place."""

    def __init__(self, rules: list[Rule]) -> None:
        s = self.space = Space.build(list(rules))
        s.index.complete()  # type: ignore[union-attr]  # edits query boxes: build it all now
        self.gone: set[int] = set()
        s.index = _LiveIndex(s.index, self.gone)  # type: ignore[assignment]
        s.ranked_lists = False  # edits add atoms out of rank order
        self.rule_idx = {r.id: i for i, r in enumerate(s.rules)}
        self.ranked = [(rank_key(s.atoms[i]), i) for i in s.order]
        for pos, (_, i) in enumerate(self.ranked):
            s.arank[i] = pos * _GAP
        s.order = []  # not kept up to date: the focused analysis does not sweep
        self.live_atoms = len(self.ranked)

    def swap(self, new: Rule) -> None:
        """The same rule but for where it is written (lines moved)."""
        self.space.rules[self.rule_idx[new.id]] = new

    def remove(self, rid: str) -> None:
        s = self.space
        ri = self.rule_idx.pop(rid)
        for a in s.rule_atoms[ri]:
            self.gone.add(a)
            pos = bisect_left(self.ranked, (rank_key(s.atoms[a]), a))
            del self.ranked[pos]
            self.live_atoms -= 1
        s.rule_atoms[ri] = []
        s.dead_atoms[ri] = 0

    def add(self, rule: Rule) -> None:
        s = self.space
        ri = len(s.rules)
        s.rules.append(rule)
        s.akeys.append(action_key(rule))
        s.dead_atoms.append(0)
        self.rule_idx[rule.id] = ri
        mine: list[int] = []
        for atom in atoms_of(rule):
            box = atom_box(atom)
            if box is None:
                s.dead_atoms[ri] += 1
                continue
            i = len(s.atoms)
            s.atoms.append(atom)
            s.boxes.append(box)
            s.items.append(box + (ri,))
            s.arule.append(ri)
            s.dsts.append(atom.dst.line)
            s.srcs.append(atom.src.line)
            s.arank.append(0)
            entry = (rank_key(atom), i)
            insort(self.ranked, entry)
            self._rank_new(bisect_left(self.ranked, entry))
            s.index.add(i)
            mine.append(i)
            self.live_atoms += 1
        s.rule_atoms.append(sorted(mine, key=s.arank.__getitem__))

    def _rank_new(self, pos: int) -> None:
        s, ranked = self.space, self.ranked
        lo = s.arank[ranked[pos - 1][1]] if pos > 0 else -_GAP
        hi = s.arank[ranked[pos + 1][1]] if pos + 1 < len(ranked) else lo + 2 * _GAP
        if hi - lo >= 2:
            s.arank[ranked[pos][1]] = (lo + hi) // 2
            return
        for p, (_, i) in enumerate(ranked):  # no room left: renumber everything
            s.arank[i] = p * _GAP
        for ri, atoms in enumerate(s.rule_atoms):
            if len(atoms) > 1:
                atoms.sort(key=s.arank.__getitem__)

    def settle(self) -> None:
        """Forget the answers the space remembered (they may name old atoms)."""
        self.space._stabs.clear()
        self.space._lists.clear()

    def neighbours(self, rule: Rule) -> Iterator[int]:
        """Indexes of the live rules whose atoms meet an atom of `rule`
        (the rule need not be in the space)."""
        s = self.space
        for atom in atoms_of(rule):
            box = atom_box(atom)
            if box is None:
                continue
            for j in s.index.meeting(box, atom.dst.line, atom.src.line):
                yield s.arule[j]


class _Gate:
    """Which codes the config makes errors, and whether all of them can be
    decided rule by rule (see the module docstring)."""

    def __init__(self, config: Config) -> None:
        from pepc.checker import CHECKER_CODES

        is_error = {c: config.severity_of(c, CODES[c].severity) >= Severity.ERROR for c in CODES}
        self.local = not any(is_error[c] for c in CHECKER_CODES - LOCAL_CODES)
        self.lifecycle = any(is_error[c] for c in LIFECYCLE_CODES)
        # a rule that wins some packet cannot be shadowed: when redundancy is
        # no error, that is all the gate needs to know about it
        self.redundant = is_error["redundant"]
        # no code the analysis decides is an error (the default apply gate:
        # capacity only, which the compiler raises): no analysis at all
        self.nothing = not any(is_error[c] for c in CHECKER_CODES - {"capacity"})


def _decide(space: Space, rule_idx: dict[str, int], by_id: Any, only: list[int], policy: Policy, config: Config,
            now: datetime, gate: _Gate) -> list[Finding]:
    """The error findings at the rules `only` (indexes into `space`), plus
    the lifecycle errors of the whole policy when the config makes any."""
    sup = Suppressions([])
    sup.by_id = by_id
    an = Analysis(space, config.default_action, default_key(config.default_action), policy.root, sup, rule_idx)
    raws: list[Raw] = an.never_matches(only) + an.coverage_of(only, gate.redundant)
    findings = [r.finding for r in raws if not sup.silence(r)]
    if gate.lifecycle:
        from pepc.loader import lifecycle_findings

        findings += list(lifecycle_findings(policy, now))
    return _errors(findings, config)


def _decide_nothing(policy: Policy, config: Config, now: datetime, gate: _Gate) -> list[Finding]:
    """The gate's errors when no checker code is one: lifecycle only."""
    if not gate.lifecycle:
        return []
    from pepc.loader import lifecycle_findings

    return _errors(lifecycle_findings(policy, now), config)


def gate_errors(policy: Policy, config: Config, now: datetime, *, capacity: CapacityCheck | None = None) -> list[Finding]:
    """The errors of `pepc check` (lifecycle + checker, severities from the
    config): decided rule by rule for every live rule when the config
    allows, else by the exhaustive analysis. `capacity`: the compiler's
    capacity check, None when the caller compiled this policy with this
    config already (the compiler raises capacity errors itself)."""
    gate = _Gate(config)
    if not gate.nothing and not gate.local:
        return _full_errors(policy, config, now, capacity=capacity)
    if gate.nothing:
        errors = _decide_nothing(policy, config, now, gate)
    else:
        with gcpause.paused():
            live = list(policy.live_rules(now))
            space = Space.build(live)
            rule_idx = {r.id: i for i, r in enumerate(live)}
            errors = _decide(space, rule_idx, {r.id: r for r in live}, list(range(len(live))), policy, config, now, gate)
    if capacity is not None:
        errors += _errors(capacity(policy, config, now), config)
    return errors


def _errors(findings: Iterable[Finding], config: Config) -> list[Finding]:
    from pepc.checker import _with_severity

    return [g for f in findings if (g := _with_severity(f, config)).severity >= Severity.ERROR]


class IncrementalChecker:
    """`errors(policy, now)`: what `gate_errors(policy, config, now,
    capacity=None)` returns, decided again only where an edit can have
    changed it (see the module docstring)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._gate = _Gate(config)
        self._dyn: DynamicSpace | None = None
        self._live: tuple[Rule, ...] = ()
        self._policy: Policy | None = None  # the last policy decided, and its clock (Policy.live_edit_from)
        self._now: datetime | None = None
        self._err_rules: set[str] = set()
        #: how the last call decided: "full" | "incremental" | "unchanged"
        #: (no rule changed); and how many rules it looked at again
        self.last_mode = ""
        self.last_focus = 0

    @property
    def local(self) -> bool:
        return self._gate.local

    @property
    def needs_baseline(self) -> bool:
        """Whether the next call decides every rule although the config lets
        this checker decide incrementally (first call, or after an error)."""
        return self.local and self._dyn is None and not self._gate.nothing

    def errors(self, policy: Policy, now: datetime) -> list[Finding]:
        with gcpause.paused():
            try:
                return self._errors(policy, now)
            except BaseException:
                self._dyn = self._policy = None  # whatever state it was left in, start afresh next time
                raise

    def _errors(self, policy: Policy, now: datetime) -> list[Finding]:
        if self._gate.nothing:
            # nothing to decide rule by rule: no space to keep either
            self.last_mode, self.last_focus = ("full" if self._policy is None else "unchanged"), 0
            self._policy = policy
            return _decide_nothing(policy, self.config, now, self._gate)
        live = policy.live_rules(now)
        if not self.local or self._dyn is None:
            return self._full_check(policy, now, live)
        dyn = self._dyn
        last = self._policy
        edit = policy.live_edit_from(last, now, self._now) if last is not None else None
        if edit is not None:  # the loader said which rules came and went
            changed_old, changed_new = self._pair(edit[0], edit[1], dyn)
        else:
            changed_old, changed_new = self._pair(*rule_changes(self._live, live), dyn)
        self._policy, self._now = policy, now
        if len(dyn.gone) > max(dyn.live_atoms, 1024):
            dyn = self._dyn = DynamicSpace(list(live))  # tombstones outweigh the space
        else:
            for r in changed_old:
                dyn.remove(r.id)
            for r in changed_new:
                dyn.add(r)
            dyn.settle()
        self._live = live
        focus = {dyn.rule_idx[r.id] for r in changed_new}  # a rule with no live atom meets nothing
        for r in (*changed_old, *changed_new):
            focus.update(dyn.neighbours(r))
        focus.update(dyn.rule_idx[rid] for rid in self._err_rules if rid in dyn.rule_idx)
        only = sorted(focus)
        errors = _decide(dyn.space, dyn.rule_idx, _RuleMap(dyn), only, policy, self.config, now, self._gate)
        self.last_mode = "incremental" if changed_old or changed_new else "unchanged"
        self.last_focus = len(only)
        self._remember(errors)
        return errors

    def _full_check(self, policy: Policy, now: datetime, live: tuple[Rule, ...]) -> list[Finding]:
        if self.local:
            # every rule decided on the space kept for the next calls
            dyn = self._dyn = DynamicSpace(list(live))
            errors = _decide(dyn.space, dyn.rule_idx, _RuleMap(dyn), list(range(len(live))), policy, self.config, now, self._gate)
            dyn.settle()  # drop the 10^5 probes' answers now, not on the first edit's clock
        else:
            errors = _full_errors(policy, self.config, now)
        self._live = live
        self._policy, self._now = policy, now
        self.last_mode, self.last_focus = "full", len(live)
        self._remember(errors)
        return errors

    @staticmethod
    def _pair(olds: Sequence[Rule], news: Sequence[Rule], dyn: DynamicSpace) -> tuple[list[Rule], list[Rule]]:
        """(old versions, new versions) of the rules among `olds` (gone) and
        `news` (come) that changed; a rule that only moved lines is swapped
        in place."""
        before = {r.id: r for r in olds}
        changed_old: list[Rule] = []
        changed_new: list[Rule] = []
        for n in news:
            r = before.pop(n.id, None)
            if r is None:
                changed_new.append(n)
            elif n is r or n == r:
                continue
            elif dataclasses.replace(n, loc=r.loc) == r:
                dyn.swap(n)
            else:
                changed_old.append(r)
                changed_new.append(n)
        changed_old += before.values()
        return changed_old, changed_new

    def _remember(self, errors: list[Finding]) -> None:
        if any(f.rule is None for f in errors):
            self._dyn = None  # an error about the whole policy: decide it in full next time
        self._err_rules = {f.rule for f in errors if f.rule is not None}


def _full_errors(policy: Policy, config: Config, now: datetime, *, capacity: CapacityCheck | None = None) -> list[Finding]:
    """The exhaustive gate: lifecycle findings and the whole analysis."""
    from pepc.checker import analyze
    from pepc.loader import lifecycle_findings

    return _errors([*lifecycle_findings(policy, now), *analyze(policy, config, now, capacity=capacity)], config)


class _RuleMap:
    """Suppressions' id -> rule lookups, answered by the space (no dict of
    every live rule built per call)."""

    def __init__(self, dyn: DynamicSpace) -> None:
        self._dyn = dyn

    def get(self, key: str, default: Rule | None = None) -> Rule | None:
        ri = self._dyn.rule_idx.get(key)
        return self._dyn.space.rules[ri] if ri is not None else default

    def __contains__(self, key: str) -> bool:
        return key in self._dyn.rule_idx
