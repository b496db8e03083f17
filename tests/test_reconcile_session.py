"""ReconcileSession against the real kernel: an event-triggered reconcile
(live generations from the mirror) writes exactly what a cold apply would,
hand-written drift waits for the next full reconcile and is repaired there,
and a crash mid-session leaves the old or the new policy live and the next
reconcile (full, by rule) finishes the job."""

from __future__ import annotations

import random

import pytest

from pepc.compiler import layout
from pepc.simulate.frames import build_frame
from pepc.kernel.testrun import XDP_DROP, XDP_PASS, test_run
from pepc.policy.model import Action
from pepc.reconcile import diff
from pepc.reconcile.apply import Aborted, apply_policy, open_live, plan_policy
from pepc.reconcile.session import ReconcileSession

from reconcile_helpers import NOW, base_policy, hand_edit_action, host_env, policy, rule

pytestmark = pytest.mark.kernel


def _verdict(prog_fd: int, src: str) -> int:
    return test_run(prog_fd, build_frame(src, "172.31.1.10", 6, 40000, 80)).retval


def _open(h):
    from pepc.kernel.loader import open_instance

    inst = open_instance(h.pin_dir)
    assert inst is not None
    return inst


def _live(h):
    inst, live = open_live(h.config, h.instance)
    inst.close()
    return live


def _settled(h, pol) -> None:
    """Both generations hold `pol` exactly: a cold apply would have nothing to do."""
    live = _live(h)
    assert live.gens[0] == live.gens[1]
    cold = plan_policy(pol, h.config, NOW, h.instance)  # (a plan: it leaves the writer token alone)
    try:
        assert not cold.plan.changes_pending and cold.plan.map_writes == 0 and not cold.plan.drift.found
    finally:
        cold.close()


_fresh = iter(range(1, 60_000))


def _random_policy(rng: random.Random, base: list):
    """Remove, change or add a few rules; every new address is unique (no
    rule shadows another, so the check gate passes)."""
    rules = list(base)
    for _ in range(rng.randint(1, 3)):
        k = rng.random()
        n = next(_fresh)
        if k < 0.4 and len(rules) > 2:
            rules.pop(rng.randrange(len(rules)))
        elif k < 0.6:
            i = rng.randrange(len(rules))
            rules[i] = rule(rules[i].id, rng.choice([Action.ALLOW, Action.BLOCK, Action.LOG_ONLY]), src=f"10.62.{n // 256}.{n % 256}/32")
        elif k < 0.7:  # a rule moves to the other family: entries leave one rule map for the other
            i = rng.randrange(len(rules))
            rules[i] = rule(rules[i].id, rng.choice([Action.ALLOW, Action.BLOCK]), src=f"2001:db8:62::{n:x}/128", dst="::/0")
        elif k < 0.85:
            rules.append(rule(f"n{n:05d}", rng.choice([Action.ALLOW, Action.BLOCK]), src=f"10.61.{n // 256}.{n % 256}/32"))
        else:
            rules.append(rule(f"n{n:05d}", rng.choice([Action.ALLOW, Action.BLOCK]), src=f"2001:db8:61::{n:x}/128", dst="::/0"))
    return rules


def test_event_reconcile_writes_exactly_what_a_cold_apply_would(tmp_path):
    rng = random.Random(7)
    with host_env(tmp_path) as h:
        s = ReconcileSession(h.instance, h.config, write_audit=False)
        rules = [rule(f"r{i:03d}", Action.BLOCK, src=f"10.60.{i}.0/24") for i in range(30)]
        first = s.reconcile(policy(*rules), NOW, full=True)
        assert s.last_read == "none" and first.plan.load_reason
        for step in range(8):
            rules = _random_policy(rng, rules)
            pol = policy(*rules)
            cold = plan_policy(pol, h.config, NOW, h.instance)  # reads both generations in full
            try:
                expect = cold.plan
            finally:
                cold.close()
            r = s.reconcile(pol, NOW, full=False)
            assert s.last_read == "mirror", step
            got = r.plan
            assert (got.target_gen, got.flip, got.resets) == (expect.target_gen, expect.flip, expect.resets), step
            assert got.target == expect.target and got.sync_old == expect.sync_old, step
            assert r.writes == expect.map_writes and dict(got.rule_counts) == dict(expect.rule_counts)
            _settled(h, pol)


def test_hand_drift_waits_for_the_next_full_reconcile(tmp_path):
    with host_env(tmp_path) as h:
        pol = base_policy()
        s = ReconcileSession(h.instance, h.config, write_audit=False)
        s.reconcile(pol, NOW, full=True)
        inst = _open(h)
        try:
            gen = _live(h).active_gen
            hand_edit_action(inst, gen, 0x0A000032, Action.ALLOW)
            assert _verdict(inst.prog_fd, "10.0.0.50") == XDP_PASS  # the hand edit is live
            r = s.reconcile(pol, NOW, full=False)  # a file event: trusts the mirror
            assert s.last_read == "mirror" and r.writes == 0
            assert _verdict(inst.prog_fd, "10.0.0.50") == XDP_PASS  # not seen: level-triggered at resync granularity
            r = s.reconcile(pol, NOW, full=True)  # the resync
            assert s.last_read == "full" and r.plan.drift.found and r.writes == 3  # flip + the repaired entry (rule map, direct table)
            assert s.last_gate_skipped  # the policy passed the gate already
            assert _verdict(inst.prog_fd, "10.0.0.50") == XDP_DROP
            _settled(h, pol)
            # another apply ran (its writer token replaced the session's): not trusted
            apply_policy(policy(*base_policy().rules[:2]), h.config, NOW, instance=h.instance, write_audit=False)
            r = s.reconcile(pol, NOW, full=False)
            assert s.last_read.startswith("full (") and r.writes > 0
            assert _verdict(inst.prog_fd, "10.0.0.50") == XDP_DROP
            _settled(h, pol)
        finally:
            inst.close()


def _crash_policies():
    old = [rule(f"old{i:03d}", Action.ALLOW, src=f"10.80.{i}.0/24") for i in range(40)]
    new = [rule(f"new{i:03d}", Action.ALLOW, src=f"10.80.{i}.0/25") for i in range(20, 60)]
    new += [rule(f"new{i:03d}b", Action.ALLOW, src=f"10.80.{i}.128/25") for i in range(20, 60)]
    return policy(*old), policy(*new)


def _expected(which: str, i: int) -> int:
    if which == "old":
        return XDP_PASS if i < 40 else XDP_DROP
    return XDP_PASS if 20 <= i < 60 else XDP_DROP


def test_crash_mid_session_leaves_old_or_new_and_the_next_reconcile_is_full(tmp_path):
    frames = [(f"10.80.{i}.{host}", i) for i in range(0, 60, 3) for host in (5, 200)]
    old, new = _crash_policies()
    with host_env(tmp_path, default=Action.BLOCK) as h:
        s = ReconcileSession(h.instance, h.config, write_audit=False)
        s.reconcile(old, NOW, full=True)
        planned = plan_policy(new, h.config, NOW, h.instance)
        total = planned.plan.map_writes
        planned.close()
        rng = random.Random(99)
        for n in sorted({1, total // 2, total - 1, rng.randrange(1, total)}):
            s.reconcile(old, NOW, full=False)
            with pytest.raises(Aborted):
                s.reconcile(new, NOW, full=False, abort_after=n, abort_in_process=True)
            inst = _open(h)
            try:
                verdicts = [(_verdict(inst.prog_fd, src), i) for src, i in frames]
                assert all(v == _expected("old", i) for v, i in verdicts) or all(v == _expected("new", i) for v, i in verdicts), n
                r = s.reconcile(new, NOW, full=False)  # asked for event-triggered; must read in full
                assert s.last_read.startswith("full"), s.last_read
                assert all(_verdict(inst.prog_fd, src) == _expected("new", i) for src, i in frames)
            finally:
                inst.close()
            _settled(h, new)


def test_watch_backend_trusts_the_mirror_only_for_events(tmp_path):
    from pepc.watch.backend import PepcBackend
    from pepc.watch.schedule import Reason

    from reconcile_helpers import rule_doc, write_policy_dir

    with host_env(tmp_path) as h:
        d = write_policy_dir(tmp_path / "p", {"a.yaml": [rule_doc("a", "BLOCK", src="10.1.0.0/16")]})
        b = PepcBackend(str(d), str(h.config_file), h.instance, None)
        for reasons, edit, expect in (
            ({Reason.START}, None, "none"),
            ({Reason.CHANGE}, "10.2.0.0/16", "mirror"),
            ({Reason.RESYNC}, None, "full"),
            ({Reason.CHANGE, Reason.SIGNAL}, "10.3.0.0/16", "full"),
            ({Reason.EXPIRY}, None, "mirror"),
        ):
            if edit:
                write_policy_dir(d, {"a.yaml": [rule_doc("a", "BLOCK", src=edit)]})
            loaded = b.load()
            b.reconcile_reasons(frozenset(reasons))
            b.apply(loaded, NOW)
            assert b.session.last_read == expect, reasons
        assert b.cache.stats.parsed == 0  # the last load: nothing changed, nothing parsed


def test_an_apply_killed_behind_the_sessions_back_forces_a_full_read(tmp_path):
    """Another `pepc apply` killed after one write leaves a stray element in
    the inactive generation and the control words untouched: the writer
    token it replaced tells the session not to trust its mirror."""
    import os
    import subprocess
    import sys

    from pepc.loader import load_policy
    from pepc.reconcile.apply import ABORT_ENV, ABORT_EXIT

    from reconcile_helpers import rule_doc, write_policy_dir

    with host_env(tmp_path) as h:
        d_old = write_policy_dir(tmp_path / "old", {"a.yaml": [rule_doc(f"o{i}", "BLOCK", src=f"10.70.{i}.0/24") for i in range(10)]})
        d_new = write_policy_dir(tmp_path / "new", {"a.yaml": [rule_doc(f"n{i}", "BLOCK", src=f"10.71.{i}.0/24") for i in range(10)]})
        old = load_policy(d_old)
        s = ReconcileSession(h.instance, h.config, write_audit=False)
        s.reconcile(old, NOW, full=True)
        env = {**os.environ, ABORT_ENV: "1"}
        r = subprocess.run([sys.executable, "-m", "pepc", *h.cli("apply", str(d_new))], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == ABORT_EXIT, r.stderr
        live = _live(h)
        assert live.gens[0] != live.gens[1]  # the stray write
        s.reconcile(old, NOW, full=False)
        assert s.last_read == "full (another apply ran)"
        _settled(h, old)


def test_incremental_contents_equal_map_contents_and_bloom():
    """Pure: IncrementalContents over a sequence of edits (incremental
    compiler, so unchanged rules keep their SlotInfo objects) equals
    map_contents + bloom.for_contents + direct.for_contents of each program,
    also when a derived map misses an edit; its snapshot views
    keep showing what was "applied" while the maps are edited in place, and
    the diff of the edited maps against them is the diff of plain copies."""
    from pepc.compiler import bloom, direct
    from pepc.compiler import Assignments, IncrementalCompiler
    from pepc.compiler.pack import map_contents
    from pepc.reconcile.session import IncrementalContents

    from reconcile_helpers import config

    cfg = config()
    comp, inc, inc97 = IncrementalCompiler(cfg), IncrementalContents(), IncrementalContents()
    rng = random.Random(3)
    rules = [rule(f"r{i:03d}", Action.BLOCK, src=f"10.60.{i}.0/24") for i in range(40)]
    prev = None
    for step in range(25):
        if step:
            rules = _random_policy(rng, rules)
        program = comp.compile(policy(*rules), NOW, prev)
        prev = Assignments.from_program(program)
        want = map_contents(program)
        got = inc.map_contents(program)
        assert got == want, step
        got[diff.BLOOM] = inc.bloom(got, bloom.words(cfg.capacities))
        assert got[diff.BLOOM] == bloom.for_contents(want, bloom.words(cfg.capacities)), step
        got[diff.BLOOM6] = inc.bloom(got, bloom.words(cfg.capacities), v6=True)
        assert got[diff.BLOOM6] == bloom.for_contents6(want, bloom.words(cfg.capacities)), step
        got[diff.DIRECT] = inc.direct(got, direct.homes(cfg.capacities))
        assert got[diff.DIRECT] == direct.for_contents(want, direct.homes(cfg.capacities)), step
        got[diff.DIRECT6] = inc.direct(got, direct.homes(cfg.capacities), v6=True)
        assert got[diff.DIRECT6] == direct.for_contents6(want, direct.homes(cfg.capacities)), step
        if step:
            for name, view in views.items():
                assert dict(view) == applied[name] and len(view) == len(applied[name]), (step, name)
                assert diff.diff_map(name, got[name], view) == diff.diff_map(name, dict(got[name]), applied[name]), (step, name)
        if step % 3 != 2:  # an apply (a refused one, every third step, takes no snapshot)
            views = {k: v for k, v in inc.snapshot(got).items() if isinstance(v, diff.Overlay)}
            assert set(views) == {"pepc_rules", "pepc_rules6", "pepc_slots", diff.BLOOM, diff.BLOOM6, diff.DIRECT, diff.DIRECT6}
            applied = {k: dict(got[k]) for k in views}
        # its own contents: given another session's maps it would rebuild every time
        got97 = inc97.map_contents(program)
        assert inc97.bloom(got97, 97) == bloom.for_contents(want, 97), step  # crowded words: many keys per word
        assert inc97.bloom(got97, 97, v6=True) == bloom.for_contents6(want, 97), step
        if step % 4 != 1:  # (a step where the table is not asked for: the next one rebuilds it)
            # crowded homes: long clusters and keys left to the rule map
            assert inc97.direct(got97, 23) == direct.for_contents(want, 23), step
            assert inc97.direct(got97, 23, v6=True) == direct.for_contents6(want, 23), step
