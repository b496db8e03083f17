"""A warm reconciler for long-running callers (`pepc watch`).

`pepc apply` is a fresh process: it reads both generations in full, compiles
from scratch and runs the check gate. A watch service converges the same
instance again and again; `ReconcileSession` keeps what it learnt between
reconciles so that an event-triggered one costs what the change costs:

- the compiler state (``pepc.compiler.IncrementalCompiler`` when there is
  one, else ``compile_program`` with the live assignments, behind the same
  call), with the last program compiled;
- a MIRROR: the contents it last wrote to both generations (after every
  complete apply both hold the desired contents; views of the maps the
  session edits in place, see IncrementalContents), the active
  generation, the ``pepc_gen`` element of each generation (policy digest,
  counts), the layout digest and the program id;
- the check gate's state (``pepc.checker.incremental.IncrementalChecker``).

The trust rule (also in the package docstring): a `full` reconcile reads
the live state in full, exactly as `pepc apply`; an event-triggered one
reads only ``pepc_ctrl`` and ``pepc_gen`` and, when they, the program id and
the writer token (no other apply ran since) equal the mirror, takes the
generations from the mirror. Anything else is
a full read. The writes, flip, barriers, counter resets, crash safety and
audit are `apply.converge`, the code of `pepc apply`.
"""

from __future__ import annotations

import gc
import importlib
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Mapping, Sequence

from pepc.policy.config import Config
from pepc.policy.diagnostics import Finding
from pepc.policy.model import Policy, Rule, rule_changes
from pepc.compiler.program import Program
from pepc.reconcile import apply as _apply
from pepc.reconcile import diff
from pepc.reconcile.state import LiveState


@dataclass(frozen=True)
class Mirror:
    """What the session last wrote: both generations hold `contents`."""

    layout_digest: str
    active_gen: int
    gen_value: bytes | None  # the pepc_gen element of both generations
    contents: Mapping[str, Mapping[bytes, bytes]]
    prog_id: int


class _Compiler:
    """compile_desired with warm state: `pepc.compiler.IncrementalCompiler`
    when pepc has one (same results as compile_program for the same
    arguments), else compile_program. Either way with the live assignments,
    exactly as `pepc apply`."""

    def __init__(self, config: Config):
        self.config = config
        cls = getattr(importlib.import_module("pepc.compiler"), "IncrementalCompiler", None)
        self._inc = cls(config) if cls is not None else None
        self.incremental = False  # whether the last compile went through the incremental compiler
        self._contents = IncrementalContents()
        #: (live slots object, live rules, their Assignments, the policy, its clock)
        self._assign_memo: tuple[Any, tuple[Rule, ...], Any, Policy | None, datetime | None] | None = None

    def _assignments(self, policy: Policy, live: LiveState | None, now: datetime) -> Any:
        """apply.assignments_for, memoised on (the live slots object, the
        live rule ids): a mirror-read reconcile of an edit that keeps the
        ids reuses them."""
        if live is None:
            return None
        slots = live.active.get("pepc_slots", {})
        rules = policy.live_rules(now)
        m = self._assign_memo
        if m is not None and m[0] is slots:
            edit = policy.live_edit_from(m[3], now, m[4]) if m[3] is not None else None
            gone, came = edit if edit is not None else rule_changes(m[1], rules)
            if sorted(r.id for r in gone) == sorted(r.id for r in came):  # the same ids
                self._assign_memo = (slots, rules, m[2], policy, now)
                return m[2]
        from pepc.compiler import Assignments

        ids = tuple(r.id for r in rules)
        s, k = diff.assignments_from_slots(slots, ids)
        a = Assignments(slots=s, order_keys=k)
        self._assign_memo = (slots, rules, a, policy, now)
        return a

    def snapshot(self, contents: Mapping[str, Mapping[bytes, bytes]]) -> dict[str, Mapping[bytes, bytes]]:
        return self._contents.snapshot(contents)

    def carry_over(self, program: Program, slots: Mapping[bytes, bytes]) -> None:
        """After a complete apply: `slots` (the mirror's pepc_slots) is what
        the next trusted reconcile sees as live. When `program` kept every
        memoised assignment and gave no rule a new one (an edit that adds or
        removes no rule), the assignments read from `slots` are the memoised
        ones: re-key the memo to it, so the next edit skips the O(rules)
        reading of slot elements (and the compiler sees the same object)."""
        m = self._assign_memo
        if m is None or m[2] is None:
            return
        _, rules, a, pol, now = m
        if len(a.slots) != len(rules) or len(program.slots) != len(rules):
            self._assign_memo = None  # some rule got a fresh slot
            return
        self._assign_memo = (slots, rules, a, pol, now)

    def __call__(self, policy: Policy, config: Config, now: datetime, live: LiveState | None) -> tuple[Program, dict]:
        from pepc.reconcile.apply import derived_sizes

        previous = self._assignments(policy, live, now)
        self.incremental = self._inc is not None
        if self._inc is not None:
            program = self._inc.compile(policy, now, previous)
        else:
            from pepc.compiler import compile_program

            program = compile_program(policy, config, now, previous)
        contents = self._contents.map_contents(program)
        words, homes = derived_sizes(program, live)
        if words:
            contents[diff.BLOOM] = self._contents.bloom(contents, words)
            contents[diff.BLOOM6] = self._contents.bloom(contents, words, v6=True)
        if homes:
            contents[diff.DIRECT] = self._contents.direct(contents, homes)
            contents[diff.DIRECT6] = self._contents.direct(contents, homes, v6=True)
        return program, contents


class IncrementalContents:
    """`compiler.pack.map_contents(program)`, `bloom.for_contents(...)` and
    `direct.for_contents(...)`, equal to them, kept from one call to the
    next: the rule and slot maps, the prefilter words and the direct table
    are dicts edited in place from the compiler's
    ProgramDelta (`diff.Derived`: they also say which keys an edit touched),
    so an edit costs what it changed, not a copy of 10^5-element maps.
    Without a delta (the first call, a compiler reset) everything is packed
    again.

    `snapshot()` gives, after an apply, views (`diff.Overlay`) of what the
    maps hold at that moment, for the session's mirror of the live state:
    each later edit records the old element in them before changing a key,
    so they keep showing what was applied, and the planner's diff of the
    desired map against the view compares the touched keys only."""

    BIG = ("pepc_rules", "pepc_rules6", "pepc_slots", diff.BLOOM, diff.BLOOM6, diff.DIRECT, diff.DIRECT6)

    def __init__(self) -> None:
        self._last: tuple[int, int] | None = None  # (delta source, serial) of the last program
        self._cur: dict[str, diff.Derived] = {}  # the big maps, edited in place
        self._views: dict[str, diff.Overlay] = {}  # handed out by snapshot(), recording old elements
        #: the rule-map changes of the last map_contents() (None: unknown, the
        #: derived maps are rebuilt), and the derived maps not yet given them
        self._delta: Mapping[bytes, bytes | None] | None = None
        self._delta6: Mapping[bytes, bytes | None] | None = None  # the same for pepc_rules6
        self._unfed: set[str] = set()
        #: (words, members per word) of each prefilter, by its map name
        self._blooms: dict[str, tuple[int, dict[int, dict[bytes, int]]] | None] = {}
        self._tables: dict[str, Any] = {}  # pepc.compiler.direct.Table of the last direct() call, by map name

    def _edit(self, name: str, changes: Mapping[bytes, bytes | None]) -> diff.Derived:
        cur = self._cur[name]
        view = self._views.get(name)
        if view is not None and view.cur is cur:
            rec = view.record
            for k in changes:
                rec(k)
        else:
            view = None
        for k, v in changes.items():
            if v is None:
                cur.pop(k, None)
            else:
                cur[k] = v
        cur.touched.update(changes)
        cur.base = view  # what was applied: the diff against it looks at the touched keys only
        return cur

    def _fresh(self, name: str, contents: Mapping[bytes, bytes]) -> diff.Derived:
        cur = self._cur[name] = diff.Derived(contents)
        cur.base = None
        self._views.pop(name, None)
        return cur

    def snapshot(self, contents: Mapping[str, Mapping[bytes, bytes]]) -> dict[str, Mapping[bytes, bytes]]:
        """`contents` (what map_contents/bloom returned, now applied) with
        the big maps replaced by views that keep showing them as they are."""
        out = dict(contents)
        for name in self.BIG:
            cur = self._cur.get(name)
            if cur is not None and contents.get(name) is cur:
                view = self._views[name] = diff.Overlay(cur)
                cur.base, cur.touched = None, set()
                out[name] = view
        return out

    def map_contents(self, program: Program) -> dict[str, dict[bytes, bytes]]:
        from pepc.compiler.pack import mask_value

        d = getattr(program, "delta", None)
        u32 = diff.u32
        # a derived map that missed the last edit is rebuilt next time
        for name in (diff.BLOOM, diff.BLOOM6):
            if name in self._unfed:
                self._blooms[name] = None
        for name in (diff.DIRECT, diff.DIRECT6):
            if name in self._unfed:
                self._tables[name] = None
        self._unfed = {diff.BLOOM, diff.BLOOM6, diff.DIRECT, diff.DIRECT6}
        if (
            d is not None and d.rules is not None and d.slots is not None and d.rules6 is not None
            and self._last == (d.source, d.serial - 1)
            and "pepc_rules" in self._cur and "pepc_slots" in self._cur and "pepc_rules6" in self._cur
        ):
            self._delta, self._delta6 = d.rules, d.rules6
            out = {
                "pepc_gen": {u32(0): program.gen_value()},
                "pepc_masks": {u32(i): mask_value(m) for i, m in enumerate(program.masks)},
                "pepc_rules": self._edit("pepc_rules", d.rules),
                "pepc_masks6": {u32(i): mask_value(m) for i, m in enumerate(program.masks6)},
                "pepc_rules6": self._edit("pepc_rules6", d.rules6),
                "pepc_slots": self._edit("pepc_slots", d.slots),
            }
        else:
            from pepc.compiler.pack import map_contents

            plain = map_contents(program)  # (no delta: the first call, or the compiler started afresh)
            self._delta = self._delta6 = None
            out = {**plain, "pepc_rules": self._fresh("pepc_rules", plain["pepc_rules"]),
                   "pepc_rules6": self._fresh("pepc_rules6", plain["pepc_rules6"]),
                   "pepc_slots": self._fresh("pepc_slots", plain["pepc_slots"])}
        self._last = (d.source, d.serial) if d is not None else None
        return out

    def _take_delta(self, name: str, rules: Mapping[bytes, bytes]) -> Mapping[bytes, bytes | None] | None:
        """The rule-map changes derived map `name` has not seen; None when
        it must be rebuilt from `rules`. (The IPv6 prefilter follows
        pepc_rules6, the others pepc_rules.)"""
        self._unfed.discard(name)
        source, delta = ("pepc_rules6", self._delta6) if name in (diff.BLOOM6, diff.DIRECT6) else ("pepc_rules", self._delta)
        if delta is None or self._cur.get(name) is None or rules is not self._cur.get(source):
            return None
        return delta

    def bloom(self, contents: Mapping[str, Mapping[bytes, bytes]], n_words: int, v6: bool = False) -> dict[bytes, bytes]:
        """The prefilter (with v6, the IPv6 one over pepc_rules6)."""
        from pepc.compiler import bloom

        name = diff.BLOOM6 if v6 else diff.BLOOM
        rules = contents["pepc_rules6" if v6 else "pepc_rules"]
        gen_value = contents["pepc_gen"][diff.u32(0)]
        prev = self._blooms.get(name)
        delta = self._take_delta(name, rules)
        if prev is None or prev[0] != n_words or delta is None:
            members: dict[int, dict[bytes, int]] = {}
            for k in rules:
                i, bit = bloom.position(k, n_words)
                members.setdefault(i, {})[k] = bit
            self._blooms[name] = (n_words, members)
            return self._fresh(name, bloom.contents(rules, gen_value, n_words, v6=v6))
        _, members = prev
        touched: set[int] = set()
        for k in delta:
            i, bit = bloom.position(k, n_words)
            was, now_in = k in members.get(i, ()), k in rules
            if was == now_in:
                continue
            if now_in:
                members.setdefault(i, {})[k] = bit
            else:
                del members[i][k]
            touched.add(i)
        changes: dict[bytes, bytes | None] = {}
        for i in touched:
            acc = 0
            for bit in members[i].values():
                acc |= bit
            changes[i.to_bytes(4, "little")] = acc.to_bytes(8, "little") if acc else None
            if not acc:
                del members[i]
        changes[n_words.to_bytes(4, "little")] = bloom.marker(bloom.gen_digest(gen_value), v6).to_bytes(8, "little")
        return self._edit(name, changes)

    def direct(self, contents: Mapping[str, Mapping[bytes, bytes]], n_homes: int, v6: bool = False) -> dict[bytes, bytes]:
        """The direct table (with v6, the IPv6 one over pepc_rules6)."""
        from pepc.compiler import direct

        name = diff.DIRECT6 if v6 else diff.DIRECT
        rules = contents["pepc_rules6" if v6 else "pepc_rules"]
        gen_value = contents["pepc_gen"][diff.u32(0)]
        mark = (n_homes + direct.DEPTH).to_bytes(4, "little")
        table = self._tables.get(name)
        delta = self._take_delta(name, rules)
        if table is None or table.n != n_homes or delta is None:
            table = self._tables[name] = direct.Table(rules, n_homes, v6=v6)
            elements = dict(table.elements())
            elements[mark] = direct.marker_element(gen_value, v6)
            return self._fresh(name, elements)
        changes = table.update(delta)
        changes[mark] = direct.marker_element(gen_value, v6)
        return self._edit(name, changes)


def settle_heap(collect: bool) -> None:
    """For the long-running process that holds a session (and a LoadCache):
    move everything alive now out of the cyclic GC's reach (gc.freeze), so
    that no later collection rescans the policy, its parse and the mirror —
    at 10^5 rules one full collection costs seconds, and the first one
    after a reconcile would land on the next event's path. Frozen objects
    are still freed by reference counting; cyclic garbage among them is
    reclaimed when `collect` (call it with True on full reconciles: the
    resync timer bounds what can accumulate)."""
    if collect:
        gc.unfreeze()
        gc.collect()
    gc.freeze()


class ReconcileSession:
    """Held by `pepc watch` across reconciles; see the module docstring."""

    def __init__(
        self,
        instance: str,
        config: Config,
        *,
        iface_names: Sequence[str] | None = None,
        wait: float = 0.0,
        policy_path: str | None = None,
        write_audit: bool = True,
    ) -> None:
        self.instance = _apply.check_instance_name(instance)
        self.config = config
        self.iface_names = list(iface_names) if iface_names else None
        self.wait = wait
        self.policy_path = policy_path
        self.write_audit = write_audit
        self._checker = self._new_checker(config)  # the gate, incremental
        self._compiler = _Compiler(config)
        self.mirror: Mirror | None = None
        self._token: str | None = None  # the writer token of the session's last apply
        self._must_read = True  # the first reconcile, and after any error
        #: how the last reconcile got the live state: "full" | "mirror" |
        #: "full (mirror disagreed: ...)" | "none" (no instance)
        self.last_read = ""
        self.last_gate_skipped = False  # the last gate found no rule changed

    # --- state ----------------------------------------------------------

    def invalidate(self) -> None:
        """Trust nothing remembered about the kernel: the next reconcile
        reads everything. (The compiler's state is kept: its results do not
        depend on it, only its cost does; it resets itself on its own errors.)"""
        self.mirror = None
        self._token = None
        self._must_read = True

    def _use_config(self, config: Config | None) -> Config:
        if config is not None and config != self.config:
            self.config = config
            self._compiler = _Compiler(config)
            self._checker = self._new_checker(config)
            self.invalidate()
        return self.config

    # --- the gate -------------------------------------------------------

    @staticmethod
    def _new_checker(config: Config) -> Any:
        from pepc.checker.incremental import IncrementalChecker
        from pepc.policy.config import gate_config

        return IncrementalChecker(gate_config(config))  # the codes of apply_gate, see apply.apply_gate_errors

    def _gate(self, policy: Policy, now: datetime) -> list[Finding]:
        errors = self._checker.errors(policy, now)  # an unchanged policy costs it next to nothing
        self.last_gate_skipped = self._checker.last_mode == "unchanged"
        return errors

    # --- the live state ---------------------------------------------------

    def _live_from_mirror(self, inst: Any) -> tuple[LiveState | None, str]:
        """(LiveState taken from the mirror, "") or (None, why not)."""
        from pepc.reconcile.live import bloom_words, capacities, compatible, direct_homes, read_ctrl

        m = self.mirror
        if m is None:
            return None, "no mirror"
        if inst.prog_id != m.prog_id:
            return None, f"program {inst.prog_id} is not {m.prog_id}"
        if compatible(inst.maps):
            return None, "incompatible maps"
        active, digest, _ = read_ctrl(inst.maps)
        if active != m.active_gen or digest != m.layout_digest:
            return None, "pepc_ctrl changed"
        g = inst.maps["pepc_gen"]
        for gen in (0, 1):
            raw = g.lookup(diff.u32(gen))
            if (raw if raw is not None and any(raw) else None) != m.gen_value:
                return None, f"pepc_gen[{gen}] changed"
        d = _apply.pin_dir(self.config, self.instance)
        return (
            LiveState(
                instance=self.instance,
                pin_dir=str(d),
                layout_digest=digest,
                active_gen=active,
                gens=(m.contents, m.contents),
                prog_id=inst.prog_id,
                capacities=capacities(inst.maps),
                attachments=_apply.instance_links(inst.prog_id),
                bloom_words=bloom_words(inst.maps),
                direct_homes=direct_homes(inst.maps),
            ),
            "",
        )

    def _planner(self, policy: Policy, now: datetime, full: bool) -> Callable[[Sequence[str]], _apply.Planned]:
        from pepc.kernel.loader import open_instance
        from pepc.reconcile.live import read_live

        def plan(recovered: Sequence[str], writer: str | None) -> _apply.Planned:
            timings: dict[str, float] = {}
            t = time.perf_counter()
            d = _apply.pin_dir(self.config, self.instance)
            inst = open_instance(d)
            live: LiveState | None = None
            trusted = False
            try:
                if inst is None:
                    self.last_read = "none"
                else:
                    why = (
                        "full" if full
                        else "pins recovered" if recovered
                        else "another apply ran" if writer is None or writer != self._token
                        else ""
                    )
                    if not why:
                        live, why = self._live_from_mirror(inst)
                        trusted = live is not None
                    if live is None:
                        live = read_live(self.instance, str(d), inst.maps, inst.prog_id, _apply.instance_links(inst.prog_id))
                        self.last_read = "full" if why == "full" else f"full ({why})"
                    else:
                        self.last_read = "mirror"
            except BaseException:
                if inst is not None:
                    inst.close()
                raise
            timings["read"] = time.perf_counter() - t
            return _apply.plan_against(
                policy, self.config, now, self.instance, self.iface_names, inst, live, timings,
                compile_fn=self._compiler, trusted=trusted,
            )

        return plan

    # --- reconcile ----------------------------------------------------------

    def reconcile(
        self,
        policy: Policy,
        now: datetime,
        *,
        full: bool,
        config: Config | None = None,
        abort_after: int | None = None,
        abort_in_process: bool = False,
    ) -> _apply.ApplyResult:
        """Converge the instance to `policy`. `full`: read the live state in
        full (first reconcile, resync timer, SIGHUP); it is forced after any
        error and on the first call. Raises what `apply_policy` raises."""
        cfg = self._use_config(config)
        full = full or self._must_read or self.mirror is None
        # A watch process holds the policy, its parse and the mirror: the
        # cyclic GC would rescan that heap on every collection the
        # reconcile's allocations trigger (as the compiler, it runs without).
        enabled = gc.isenabled()
        gc.disable()
        try:
            result = _apply.converge(
                policy,
                cfg,
                now,
                planner=self._planner(policy, now, full),
                gate=lambda planned: self._gate(policy, now),
                instance=self.instance,
                wait=self.wait,
                policy_path=self.policy_path,
                write_audit=self.write_audit,
                abort_after=abort_after,
                abort_in_process=abort_in_process,
            )
        except BaseException:
            # Refused, failed or killed midway: what the kernel holds is no
            # longer known, so the next reconcile reads it in full.
            self.invalidate()
            raise
        finally:
            if enabled:
                gc.enable()
        # the mirror keeps views of the session's maps, not copies
        contents = diff.normalize(self._compiler.snapshot(result.contents or {}))
        self.mirror = Mirror(
            layout_digest=result.plan.layout_digest,
            active_gen=result.generation,
            gen_value=contents["pepc_gen"].get(diff.u32(0)),
            contents=contents,
            prog_id=result.prog_id,
        )
        self._token = result.writer_token
        if result.program is not None:
            self._compiler.carry_over(result.program, contents["pepc_slots"])
        self._must_read = False
        if self._checker.needs_baseline:
            # A reconcile with nothing to write runs no gate; the incremental
            # gate needs every rule decided once to start from. Paid here (a
            # restart) rather than on the first edit, whose latency counts.
            self._checker.errors(policy, now)
        return result
