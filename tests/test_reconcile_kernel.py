"""The reconciler against the real kernel: first apply, no-op, one-rule
deltas, file renames, layout change, drift repair, lock, kill -9 crash
safety, atomicity under concurrent BPF_PROG_TEST_RUN, and the host CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kernel_fixtures import veth_netns, veth_pair
from pepc.compiler import layout
from pepc.cli import main
from pepc.policy.config import Interface, XdpMode
from pepc.simulate.frames import build_frame
from pepc.kernel import links
from pepc.kernel.testrun import XDP_DROP, XDP_PASS, test_run
from pepc.policy.model import Action, Protocol
from pepc.reconcile import audit, diff
from pepc.reconcile.apply import ABORT_ENV, ABORT_EXIT, apply_policy, open_live, plan_policy
from pepc.reconcile.lock import InstanceLock

from reconcile_helpers import NOW, SMALL_CAPS, base_policy, hand_edit_action, host_env, policy, rule, rule_doc, write_policy_dir

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parent.parent


def _verdict(prog_fd: int, src: str, dst: str = "172.31.1.10", proto: int = 6, dport: int = 80) -> int:
    return test_run(prog_fd, build_frame(src, dst, proto, 40000, dport)).retval


def _open(h):
    from pepc.kernel.loader import open_instance

    inst = open_instance(h.pin_dir)
    assert inst is not None
    return inst


def _live(h):
    inst, live = open_live(h.config, h.instance)
    inst.close()
    return live


def program_contents(program):
    from pepc.compiler.pack import map_contents

    return map_contents(program)


def many_rules(n: int, prefix: str = "r", base: int = 0) -> list:
    """n BLOCK rules, one /32 source each (10.50.x.y)."""
    return [rule(f"{prefix}{i:05d}", Action.BLOCK, src=f"10.50.{(base + i) // 256}.{(base + i) % 256}/32") for i in range(n)]


# --- first apply, no-op, one-rule change, rename ---------------------------------------


def test_first_apply_then_noop_then_one_rule_change(tmp_path):
    with host_env(tmp_path) as h:
        pol = policy(*base_policy().rules, *many_rules(150))
        r1 = apply_policy(pol, h.config, NOW, instance=h.instance)
        assert r1.result == "applied" and r1.plan.load_reason == "no instance is loaded"
        live = _live(h)
        desired = diff.normalize(live.active)
        n = sum(len(v) for v in desired.values())
        assert r1.writes == 2 * n + 1  # both generations in full, plus the control word
        assert live.gens[0] == live.gens[1]
        assert diff.gen_info(live.active)["policy_digest"] == r1.plan.policy_digest
        assert live.layout_digest == layout.layout_digest(SMALL_CAPS)
        inst = _open(h)
        try:
            assert _verdict(inst.prog_fd, "10.0.0.50") == XDP_DROP  # block_bad
            assert _verdict(inst.prog_fd, "10.50.0.7") == XDP_DROP
            assert _verdict(inst.prog_fd, "10.9.9.9") == XDP_PASS
        finally:
            inst.close()

        # no-op: zero writes, zero syscalls
        r2 = apply_policy(pol, h.config, NOW, instance=h.instance)
        assert (r2.result, r2.writes, r2.syscalls) == ("unchanged", 0, 0)

        # one rule with 3 entries added: writes proportional to it, not to the 150 others
        new_rule = rule("zz_new", Action.BLOCK, src="10.60.0.0/16", proto=Protocol.TCP, dports=((22, 22), (80, 80), (443, 443)))
        pol2 = policy(*pol.rules, new_rule)
        r3 = apply_policy(pol2, h.config, NOW, instance=h.instance)
        assert [c.rule_id for c in r3.plan.rules.added] == ["zz_new"]
        assert r3.per_map[f"pepc_rules_{r3.generation}"] == 3
        assert r3.per_map[f"pepc_rules_{1 - r3.generation}"] == 3
        # rules 3 + slot 1 + gen 1 (+ masks that move) per generation, flip, 3 resets;
        # the derived maps: a prefilter word per new key and the marker; the
        # new keys' clusters of the direct table and its marker
        assert r3.writes == r3.plan.map_writes
        derived = {m: n for m, n in r3.per_map.items() if m.startswith(("pepc_bloom_", "pepc_direct_"))}
        for g in (0, 1):
            assert 1 <= derived[f"pepc_bloom_{g}"] <= 3 + 1
            assert 1 <= derived[f"pepc_direct_{g}"] <= 3 * 8 + 1
        assert r3.writes - sum(derived.values()) <= 2 * (3 + 1 + 1 + len(program_masks(h))) + 1 + 3
        assert r3.per_map["pepc_ctrl"] == 1
        live = _live(h)
        assert live.gens[0] == live.gens[1] and live.active_gen == r3.generation != r1.generation

        # changing that one rule's action: its 3 entries and its slot, per generation
        pol3 = policy(*pol.rules, dataclasses.replace(new_rule, action=Action.ALLOW))
        r4 = apply_policy(pol3, h.config, NOW, instance=h.instance)
        (c,) = r4.plan.rules.changed
        assert c.rule_id == "zz_new" and ("action", "BLOCK", "ALLOW") in c.fields
        assert r4.per_map[f"pepc_rules_{r4.generation}"] == 3 and r4.per_map[f"pepc_slots_{r4.generation}"] == 1
        assert "pepc_stats" not in r4.per_map  # same rule, same slot: counters kept

        recs = list(audit.read(h.config.state_dir, h.instance))
        assert [r["result"] for r in recs] == ["applied", "unchanged", "applied", "applied"]
        assert recs[2]["rules"] == {"added": 1, "changed": 0, "removed": 0}
        assert recs[2]["entries"]["added"] == 3
        assert recs[0]["layout_digest"] == layout.layout_digest(SMALL_CAPS)


def program_masks(h) -> dict:
    return _live(h).active["pepc_masks"]


def many_rules6(n: int, prefix: str = "s") -> list:
    """n IPv6 BLOCK rules, one /128 source each (2001:db8:50::x)."""
    return [rule(f"{prefix}{i:05d}", Action.BLOCK, src=f"2001:db8:50::{i:x}/128", dst="::/0") for i in range(n)]


def _verdict6(prog_fd: int, src: str, dst: str = "2001:db8:1::10", proto: int = 6, dport: int = 80) -> int:
    from pepc.simulate.frames import build_frame6

    return test_run(prog_fd, build_frame6(src, dst, proto, 40000, dport)).retval


def test_mixed_families_first_apply_noop_and_a_v6_change_writes_only_v6_entries(tmp_path):
    """Both families in one policy: the first apply writes every map of both
    generations once; a no-op writes nothing; adding or changing an IPv6
    rule writes IPv6 rule-map entries only (the IPv4 rule and mask maps are
    untouched, its prefilter and direct table only get their new marker);
    the IPv6 prefilter follows pepc_rules6 and a word cleared by hand is
    drift that apply repairs."""
    from pepc.compiler import bloom, direct

    with host_env(tmp_path) as h:
        pol = policy(*base_policy().rules, *many_rules(40), *many_rules6(40))
        r1 = apply_policy(pol, h.config, NOW, instance=h.instance)
        assert r1.result == "applied"
        live = _live(h)
        desired = diff.normalize(live.active)
        assert len(desired["pepc_rules6"]) == 40 and len(desired["pepc_masks6"]) == 1
        assert r1.writes == 2 * sum(len(v) for v in desired.values()) + 1
        assert live.gens[0] == live.gens[1]
        inst = _open(h)
        try:
            assert _verdict6(inst.prog_fd, "2001:db8:50::7") == XDP_DROP
            assert _verdict6(inst.prog_fd, "2001:db8:51::7") == XDP_PASS  # default ALLOW
            assert _verdict(inst.prog_fd, "10.50.0.7") == XDP_DROP
        finally:
            inst.close()

        r2 = apply_policy(pol, h.config, NOW, instance=h.instance)
        assert (r2.result, r2.writes, r2.syscalls) == ("unchanged", 0, 0)

        new6 = rule("zz_new6", Action.BLOCK, src="2001:db8:60::/48", dst="::/0", proto=Protocol.TCP, dports=((22, 22), (80, 80), (443, 443)))
        pol2 = policy(*pol.rules, new6)
        r3 = apply_policy(pol2, h.config, NOW, instance=h.instance)
        assert [c.rule_id for c in r3.plan.rules.added] == ["zz_new6"]
        for g in (0, 1):
            assert r3.per_map[f"pepc_rules6_{g}"] == 3
            assert f"pepc_rules_{g}" not in r3.per_map and f"pepc_masks_{g}" not in r3.per_map
            assert r3.per_map[f"pepc_bloom_{g}"] == 1 and r3.per_map[f"pepc_direct_{g}"] == 1  # the markers
            assert 1 <= r3.per_map[f"pepc_bloom6_{g}"] <= 3 + 1
            assert 1 <= r3.per_map[f"pepc_direct6_{g}"] <= 3 * 8 + 1
        inst = _open(h)
        try:
            assert _verdict6(inst.prog_fd, "2001:db8:60::1", dport=443) == XDP_DROP
            assert _verdict6(inst.prog_fd, "2001:db8:60::1", dport=444) == XDP_PASS
        finally:
            inst.close()

        r4 = apply_policy(policy(*pol.rules, dataclasses.replace(new6, action=Action.ALLOW)), h.config, NOW, instance=h.instance)
        (c,) = r4.plan.rules.changed
        assert c.rule_id == "zz_new6" and ("action", "BLOCK", "ALLOW") in c.fields
        assert r4.per_map[f"pepc_rules6_{r4.generation}"] == 3 and r4.per_map[f"pepc_slots_{r4.generation}"] == 1
        assert f"pepc_rules_{r4.generation}" not in r4.per_map

        live = _live(h)
        for g in (0, 1):
            assert live.gens[g]["pepc_bloom6"] == bloom.for_contents6(live.gens[g], live.bloom_words)
            assert live.gens[g]["pepc_direct6"] == direct.for_contents6(live.gens[g], live.direct_homes)
        inst = _open(h)
        try:
            assert _verdict6(inst.prog_fd, "2001:db8:50::7") == XDP_DROP
            key = next(k for k in live.active["pepc_rules6"] if k[8:24] == bytes.fromhex("20010db8005000000000000000000007"))
            word, _bit = bloom.position(key, live.bloom_words)
            inst.maps[f"pepc_bloom6_{r4.generation}"].update(diff.u32(word), bytes(8))  # its lookup is now skipped
            assert _verdict6(inst.prog_fd, "2001:db8:50::7") == XDP_PASS
            fix = apply_policy(policy(*pol.rules, dataclasses.replace(new6, action=Action.ALLOW)), h.config, NOW, instance=h.instance)
            assert fix.plan.drift.found and fix.plan.drift.delta.of("pepc_bloom6").count == 1
            assert _verdict6(inst.prog_fd, "2001:db8:50::7") == XDP_DROP
        finally:
            inst.close()


def test_rename_and_reorder_files_is_zero_writes(tmp_path, capsys):
    with host_env(tmp_path) as h:
        d = tmp_path / "policies.d"
        rules = [rule_doc(f"r{i}", "BLOCK", src=f"10.70.{i}.0/24") for i in range(20)]
        rules.append(rule_doc("web", "ALLOW", dst="192.168.1.0/24", proto="TCP", dport=[80, 443], priority=10))
        write_policy_dir(d, {"a.yaml": rules[:10], "b.yaml": rules[10:]})
        assert main(h.cli("apply", str(d), "--format", "json")) == 0
        first = json.loads(capsys.readouterr().out)
        assert first["result"] == "applied" and first["writes"] > 0
        (d / "z").mkdir()
        for f in d.glob("*.yaml"):
            f.unlink()
        (d / "z" / "other.yaml").write_text(json.dumps({"policies": list(reversed(rules[5:]))}))
        (d / "0-first.yaml").write_text(json.dumps({"policies": list(reversed(rules[:5]))}))
        assert main(h.cli("plan", str(d), "--exit-code")) == 0
        assert "No changes" in capsys.readouterr().out
        assert main(h.cli("apply", str(d), "--format", "json")) == 0
        second = json.loads(capsys.readouterr().out)
        assert (second["result"], second["writes"], second["syscalls"]) == ("unchanged", 0, 0)


# --- plan output and refusal ----------------------------------------------------------


def test_plan_without_instance_then_exit_codes(tmp_path, capsys):
    with host_env(tmp_path) as h:
        d = write_policy_dir(tmp_path / "p", {"a.yaml": [rule_doc("one", "BLOCK", src="10.1.0.0/16")]})
        assert main(h.cli("plan", str(d), "--exit-code")) == 1
        out = capsys.readouterr().out
        assert "load needed: no instance is loaded" in out and "+ one" in out
        assert not h.pin_dir.exists()  # plan never writes
        assert main(h.cli("plan", str(d), "--format", "json")) == 0
        j = json.loads(capsys.readouterr().out)
        assert j["changes_pending"] and j["rules"]["added"] == 1 and j["load"]["needed"]
        assert main(h.cli("apply", str(d))) == 0
        capsys.readouterr()
        assert main(h.cli("plan", str(d), "--exit-code")) == 0
        write_policy_dir(d, {"a.yaml": [rule_doc("one", "ALLOW", src="10.1.0.0/16")]})
        assert main(h.cli("plan", str(d), "--exit-code")) == 1
        out = capsys.readouterr().out
        assert "~ one" in out and "action: BLOCK -> ALLOW" in out


def test_apply_refuses_check_errors_and_leaves_live_untouched(tmp_path, capsys):
    with host_env(tmp_path, apply_gate=("shadowed", "capacity")) as h:
        d = write_policy_dir(tmp_path / "p", {"a.yaml": [rule_doc("one", "BLOCK", src="10.1.0.0/16")]})
        assert main(h.cli("apply", str(d))) == 0
        before = _live(h)
        # `all_block` at priority 100 covers `shadowed_allow` completely: a check error
        write_policy_dir(d, {"a.yaml": [rule_doc("all_block", "BLOCK", priority=100), rule_doc("shadowed_allow", "ALLOW", src="10.0.0.0/8")]})
        capsys.readouterr()
        assert main(h.cli("apply", str(d))) == 2
        err = capsys.readouterr()
        assert "shadowed" in err.err + err.out
        after = _live(h)
        assert after.gens == before.gens and after.active_gen == before.active_gen and after.prog_id == before.prog_id
        last = audit.last(h.config.state_dir, h.instance)
        assert last["result"] == "refused" and any(f["code"] == "shadowed" for f in last["findings"])
        # a policy that does not even load is refused the same way
        (d / "a.yaml").write_text("policies: [ {id: x, action: NOPE} ]\n")
        assert main(h.cli("apply", str(d))) == 2
        assert audit.last(h.config.state_dir, h.instance)["result"] == "refused"
        assert _live(h).gens == before.gens


def test_the_default_gate_lets_a_policy_with_a_shadowed_rule_go_live(tmp_path, capsys):
    """apply_gate defaults to capacity: a block list whose rules shadow
    one another is a `check` error for CI, not a reason to keep an urgent
    block out of the kernel."""
    with host_env(tmp_path) as h:
        d = write_policy_dir(tmp_path / "p", {"a.yaml": [
            rule_doc("urgent", "BLOCK", priority=100, src="10.0.0.0/8"),
            rule_doc("shadowed_block", "BLOCK", priority=50, src="10.1.0.0/16"),
        ]})
        assert main(["check", str(d), "--config", str(h.config_file)]) == 1  # still an error where CI looks
        assert "shadowed" in capsys.readouterr().out
        assert main(h.cli("apply", str(d))) == 0
        assert audit.last(h.config.state_dir, h.instance)["result"] != "refused"
        inst = _open(h)
        try:
            assert _verdict(inst.prog_fd, "10.9.9.9") == XDP_DROP
        finally:
            inst.close()


def test_a_first_apply_refused_by_the_gate_leaves_nothing_behind(tmp_path, capsys):
    """A load fills maps nobody sees yet and waits for the gate only before
    pinning them: a refusal must still leave no pins, no staged or
    prefetched set, no attachment."""
    from pepc.reconcile import prefetch

    with host_env(tmp_path, apply_gate=("shadowed",)) as h:
        d = write_policy_dir(tmp_path / "p", {"a.yaml": [rule_doc("all_block", "BLOCK", priority=100), rule_doc("shadowed_allow", "ALLOW", src="10.0.0.0/8")]})
        assert main(h.cli("apply", str(d))) == 2
        err = capsys.readouterr()
        assert "shadowed" in err.err + err.out
        assert audit.last(h.config.state_dir, h.instance)["result"] == "refused"
        root = Path(h.config.pin_root)
        assert not h.pin_dir.exists() and not prefetch.prefetch_dir(h.config, h.instance).exists()
        assert not (root.exists() and any(root.iterdir()))


# --- drift ---------------------------------------------------------------------------------


def test_drift_is_planned_and_repaired(tmp_path, capsys):
    with host_env(tmp_path) as h:
        pol = base_policy()
        apply_policy(pol, h.config, NOW, instance=h.instance)
        inst = _open(h)
        try:
            gen = _live(h).active_gen
            assert _verdict(inst.prog_fd, "10.0.0.50") == XDP_DROP  # block_bad
            # by hand: block_bad's entry in the active generation now says
            # ALLOW, in the rule map and in the direct table (which the
            # program reads first)
            hand_edit_action(inst, gen, 0x0A000032, Action.ALLOW)
            assert _verdict(inst.prog_fd, "10.0.0.50") == XDP_PASS  # the hand edit is live
            planned = plan_policy(pol, h.config, NOW, h.instance)
            try:
                assert planned.plan.drift.found and planned.plan.drift.delta.of("pepc_rules").count == 1
                assert planned.plan.drift.delta.of("pepc_direct").count == 1
                assert planned.plan.changes_pending
            finally:
                planned.close()
            assert main(h.cli("plan", "/dev/null")) == 2  # (not a directory)
            capsys.readouterr()
            r = apply_policy(pol, h.config, NOW, instance=h.instance)
            assert r.result == "applied" and r.plan.drift.found
            assert r.per_map == {"pepc_ctrl": 1, f"pepc_rules_{gen}": 1, f"pepc_direct_{gen}": 1}  # flip to the clean gen, repair the other
            assert _verdict(inst.prog_fd, "10.0.0.50") == XDP_DROP
            again = apply_policy(pol, h.config, NOW, instance=h.instance)
            assert again.writes == 0 and not again.plan.drift.found
            assert audit.last(h.config.state_dir, h.instance, "applied")["drift_repaired"] is True
        finally:
            inst.close()


def test_prefilter_is_maintained_and_a_stale_one_is_repaired(tmp_path):
    """The mask prefilter (pepc.compiler.bloom) of each generation follows its rules;
    a word cleared by hand is drift, and apply rewrites it."""
    from pepc.compiler import bloom

    with host_env(tmp_path) as h:
        apply_policy(base_policy(), h.config, NOW, instance=h.instance)
        pol2 = policy(*base_policy().rules, rule("zz_new", Action.BLOCK, src="10.60.0.0/16"))
        r = apply_policy(pol2, h.config, NOW, instance=h.instance)
        assert 1 <= r.per_map.get(f"pepc_bloom_{r.generation}", 0) <= 2  # a word for the new key, the marker
        live = _live(h)
        words = live.bloom_words
        for g in (0, 1):
            assert live.gens[g]["pepc_bloom"] == bloom.for_contents(live.gens[g], words)
        inst = _open(h)
        try:
            assert _verdict(inst.prog_fd, "10.60.1.1") == XDP_DROP
            bm = inst.maps[f"pepc_bloom_{r.generation}"]
            key = next(k for k in live.active["pepc_rules"] if layout.RULE_KEY.unpack(k)["src"] == 0x0A3C0000)
            word, _bit = bloom.position(key, words)
            bm.update(diff.u32(word), bytes(8))  # the new rule's bit is gone: its lookup is skipped
            assert _verdict(inst.prog_fd, "10.60.1.1") == XDP_PASS
            fix = apply_policy(pol2, h.config, NOW, instance=h.instance)
            assert fix.plan.drift.found and fix.plan.drift.delta.of("pepc_bloom").count == 1
            assert _verdict(inst.prog_fd, "10.60.1.1") == XDP_DROP
        finally:
            inst.close()


def test_direct_table_is_maintained_and_a_stale_one_is_repaired(tmp_path):
    """The direct table (pepc.compiler.direct) of each generation follows its rules;
    an entry changed by hand is drift (the program believes it), and apply
    rewrites it."""
    from pepc.compiler import direct

    with host_env(tmp_path) as h:
        apply_policy(base_policy(), h.config, NOW, instance=h.instance)
        pol2 = policy(*base_policy().rules, rule("zz_new", Action.BLOCK, src="10.60.0.0/16"))
        r = apply_policy(pol2, h.config, NOW, instance=h.instance)
        live = _live(h)
        homes = live.direct_homes
        assert homes == direct.homes(h.config.capacities)
        for g in (0, 1):
            assert live.gens[g]["pepc_direct"] == direct.for_contents(live.gens[g], homes)
        inst = _open(h)
        try:
            assert _verdict(inst.prog_fd, "10.60.1.1") == XDP_DROP
            dm = inst.maps[f"pepc_direct_{r.generation}"]
            key = next(k for k in live.active["pepc_rules"] if layout.RULE_KEY.unpack(k)["src"] == 0x0A3C0000)
            (pos, el), = ((p, e) for p, e in live.active["pepc_direct"].items() if e[:20] == key)
            forged = bytearray(el)
            forged[layout.DIRECT.offsets["action"]] = int(Action.ALLOW)
            dm.update(pos, bytes(forged))  # the program reads the table: the packet now passes
            assert _verdict(inst.prog_fd, "10.60.1.1") == XDP_PASS
            fix = apply_policy(pol2, h.config, NOW, instance=h.instance)
            assert fix.plan.drift.found and fix.plan.drift.delta.of("pepc_direct").count == 1
            assert _verdict(inst.prog_fd, "10.60.1.1") == XDP_DROP
        finally:
            inst.close()


def _slots(h):
    return list(diff.decode_slots(_live(h).active["pepc_slots"]).values())


# --- lock ------------------------------------------------------------------------------------


def test_lock_contention_between_processes(tmp_path):
    with host_env(tmp_path) as h:
        d = write_policy_dir(tmp_path / "p", {"a.yaml": [rule_doc("one", "BLOCK", src="10.1.0.0/16")]})
        cmd = [sys.executable, "-m", "pepc", *h.cli("apply", str(d))]
        lock = InstanceLock(h.config.run_dir, h.instance)
        lock.acquire()
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            assert r.returncode == 3
            assert f"another pepc apply is running on instance '{h.instance}' (held by pid {os.getpid()})" in r.stderr
            assert "--wait" in r.stderr
            assert not h.pin_dir.exists()
            waiting = subprocess.Popen([*cmd, "--wait", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(1.0)
            assert waiting.poll() is None  # queued behind the lock
        finally:
            lock.release()
        out, err = waiting.communicate(timeout=60)
        assert waiting.returncode == 0, err
        assert "applied" in out and h.pin_dir.exists()


# --- crash safety ------------------------------------------------------------------------------


def _crash_policies():
    """Two policies (default BLOCK) that disagree on many packets."""
    old = [rule_doc(f"old{i:03d}", "ALLOW", src=f"10.80.{i}.0/24") for i in range(40)]
    new = [rule_doc(f"new{i:03d}", "ALLOW", src=f"10.80.{i}.0/25") for i in range(20, 60)]
    new += [rule_doc(f"new{i:03d}b", "ALLOW", src=f"10.80.{i}.128/25") for i in range(20, 60)]
    return old, new


def _crash_frames():
    return [(f"10.80.{i}.{h}", i, h) for i in range(0, 60, 3) for h in (5, 200)]


def _expected(which: str, i: int) -> int:
    if which == "old":
        return XDP_PASS if i < 40 else XDP_DROP
    return XDP_PASS if 20 <= i < 60 else XDP_DROP


def test_kill9_at_random_points_leaves_old_or_new(tmp_path):
    from pepc.policy.config import Config

    with host_env(tmp_path, default=Action.BLOCK) as h:
        old, new = _crash_policies()
        d_old = write_policy_dir(tmp_path / "old", {"a.yaml": old})
        d_new = write_policy_dir(tmp_path / "new", {"a.yaml": new})
        assert main(h.cli("apply", str(d_old))) == 0
        planned = _plan_dir(h, d_new)
        total = planned.plan.map_writes
        planned.close()
        assert total > 10
        frames = _crash_frames()
        rng = random.Random(1234)
        points = sorted({1, 2, total - 1, total // 2, *(rng.randrange(1, total) for _ in range(4))})
        for n in points:
            env = {**os.environ, ABORT_ENV: str(n)}
            r = subprocess.run([sys.executable, "-m", "pepc", *h.cli("apply", str(d_new))], env=env, capture_output=True, text=True, timeout=120)
            assert r.returncode == ABORT_EXIT, (n, r.stderr)
            inst = _open(h)
            try:
                verdicts = [(_verdict(inst.prog_fd, src), i) for src, i, _ in frames]
            finally:
                inst.close()
            olds = all(v == _expected("old", i) for v, i in verdicts)
            news = all(v == _expected("new", i) for v, i in verdicts)
            assert olds or news, f"aborted after {n} of {total} writes: a mix of policies is live"
            # the next apply finishes the job
            assert main(h.cli("apply", str(d_new))) == 0
            inst = _open(h)
            try:
                assert all(_verdict(inst.prog_fd, src) == _expected("new", i) for src, i, _ in frames)
            finally:
                inst.close()
            live = _live(h)
            assert live.gens[0] == live.gens[1]
            assert main(h.cli("apply", str(d_old))) == 0


def _plan_dir(h, d):
    from pepc.loader import load_policy

    return plan_policy(load_policy(str(d)), h.config, NOW, h.instance)


def test_kill9_during_first_load_leaves_nothing_live(tmp_path):
    with host_env(tmp_path) as h:
        d = write_policy_dir(tmp_path / "p", {"a.yaml": [rule_doc("one", "BLOCK", src="10.1.0.0/16")]})
        env = {**os.environ, ABORT_ENV: "3"}
        r = subprocess.run([sys.executable, "-m", "pepc", *h.cli("apply", str(d))], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == ABORT_EXIT, r.stderr
        assert not h.pin_dir.exists()
        assert main(h.cli("apply", str(d))) == 0
        assert h.pin_dir.exists()


# --- atomicity under concurrent test runs ---------------------------------------------------------


def test_atomic_switch_under_concurrent_test_runs(tmp_path):
    """Policy A allows 10.90.i.0/24 with one /24 rule each; policy B allows
    the same addresses with two /25 rules each (other ids, other masks) and
    flips 10.91.0.0/16 from BLOCK to ALLOW. Default BLOCK. A packet of
    10.90/16 is PASS under both policies; any torn state (A's entries
    deleted before B's are written, masks of one with rules of the other)
    DROPs it. Packets of 10.91/16 tell which policy a run saw."""
    with host_env(tmp_path, default=Action.BLOCK) as h:
        k = 40
        A = policy(
            *[rule(f"a{i:03d}", Action.ALLOW, src=f"10.90.{i}.0/24") for i in range(k)],
            rule("a_block", Action.BLOCK, src="10.91.0.0/16"),
        )
        B = policy(
            *[rule(f"b{i:03d}lo", Action.ALLOW, src=f"10.90.{i}.0/25") for i in range(k)],
            *[rule(f"b{i:03d}hi", Action.ALLOW, src=f"10.90.{i}.128/25") for i in range(k)],
            rule("b_allow", Action.ALLOW, src="10.91.0.0/16"),
        )
        apply_policy(A, h.config, NOW, instance=h.instance)
        inst = _open(h)
        frames = [build_frame(f"10.90.{i}.{hst}", "192.168.1.1", 6, 1000, 80) for i in range(k) for hst in (7, 250)]
        probe = build_frame("10.91.3.3", "192.168.1.1", 6, 1000, 80)
        stop = threading.Event()
        bad: list[tuple[int, int]] = []
        seen = {XDP_PASS: 0, XDP_DROP: 0}
        runs = [0]

        def hammer():
            i = 0
            while not stop.is_set():
                f = frames[i % len(frames)]
                v = test_run(inst.prog_fd, f).retval
                if v != XDP_PASS:
                    bad.append((i % len(frames), v))
                seen[test_run(inst.prog_fd, probe).retval] += 1
                runs[0] += 2
                i += 1

        t = threading.Thread(target=hammer)
        t.start()
        try:
            for n in range(24):
                r = apply_policy(B if n % 2 == 0 else A, h.config, NOW, instance=h.instance, write_audit=False)
                assert r.result == "applied" and r.plan.flip
        finally:
            stop.set()
            t.join()
            inst.close()
        assert not bad, f"{len(bad)} of {runs[0]} runs saw a torn policy, e.g. {bad[:5]}"
        assert seen[XDP_PASS] > 0 and seen[XDP_DROP] > 0, seen  # both policies were observed live
        assert runs[0] > 1000


# --- layout change: atomic replace, counters kept ----------------------------------------------


@pytest.mark.parametrize("change", ["entries", "rules"])
def test_layout_change_replaces_atomically_and_keeps_counters(tmp_path, change):
    """`entries`: only max_entries changes, so per-rule state maps are handed
    over as they are; `rules`: max_rules changes, counters are copied."""
    with veth_pair() as (a, _b), host_env(tmp_path) as h:
        pol = base_policy()
        cfg = dataclasses.replace(h.config, interfaces=(Interface(a, XdpMode.AUTO),))
        r1 = apply_policy(pol, cfg, NOW, instance=h.instance)
        assert [i for i, _ in r1.attached] == [a]
        inst = _open(h)
        frame = build_frame("10.0.0.50", "172.31.1.1", 6, 1000, 80)  # block_bad
        for _ in range(7):
            assert test_run(inst.prog_fd, frame).retval == XDP_DROP
        slot = next(s.slot for s in _slots(h) if s.id_bytes == b"block_bad")
        old_prog = inst.prog_id
        inst.close()

        caps = SMALL_CAPS
        caps2 = dataclasses.replace(caps, max_entries=caps.max_entries * 2) if change == "entries" else dataclasses.replace(caps, max_rules=caps.max_rules * 2)
        cfg2 = dataclasses.replace(cfg, capacities=caps2)

        samples: list[int | None] = []
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                cur = [l.prog_id for l in links.xdp_links() if l.ifname == a]
                samples.append(cur[0] if cur else None)

        t = threading.Thread(target=watch)
        t.start()
        try:
            r2 = apply_policy(pol, cfg2, NOW, instance=h.instance)
        finally:
            stop.set()
            t.join()
        assert r2.plan.load_reason and "layout changed" in r2.plan.load_reason
        assert r2.prog_id != old_prog and [i for i, _ in r2.attached] == [a]
        assert None not in samples, "there was a moment without a program on the interface"
        assert set(samples) <= {old_prog, r2.prog_id}
        assert links.links_of({old_prog}) == []
        inst = _open(h)
        try:
            from pepc.kernel import dataplane

            assert inst.prog_id == r2.prog_id
            assert inst.maps["pepc_rules_0"].max_entries == caps2.max_entries
            assert dataplane.read_rule_stats(inst, slot)["packets"] == 7  # carried over
            assert test_run(inst.prog_fd, frame).retval == XDP_DROP
            assert dataplane.read_rule_stats(inst, slot)["packets"] == 8
        finally:
            inst.close()
        root = Path(h.config.pin_root)
        assert sorted(os.listdir(root)) == [h.instance]  # no staging or retired pins left
        assert _live(h).layout_digest == layout.layout_digest(caps2)
        again = apply_policy(pol, cfg2, NOW, instance=h.instance)
        assert again.writes == 0


def test_interrupted_reload_is_recovered(tmp_path):
    """A reload killed after pinning its new set but before switching: the
    next apply discards the staged set and converges."""
    from pepc.kernel import loader, pinswap

    with veth_pair() as (a, _b), host_env(tmp_path) as h:
        cfg = dataclasses.replace(h.config, interfaces=(Interface(a, XdpMode.AUTO),))
        apply_policy(base_policy(), cfg, NOW, instance=h.instance)
        inst = _open(h)
        # fake a half-done reload: a complete staged pin set whose program runs nowhere
        staged = pinswap.staging_dir(cfg.pin_root, h.instance)
        other = loader.load_object(_object(SMALL_CAPS))
        loader.pin(other, staged)
        other.close()
        r = apply_policy(base_policy(), cfg, NOW, instance=h.instance)
        assert r.recovered and "removed unused" in r.recovered[0]
        assert not staged.exists() and r.writes == 0 and r.prog_id == inst.prog_id
        # now one whose program was already switched in: the apply finishes the switch
        other = loader.load_object(_object(SMALL_CAPS))
        from pepc.kernel import dataplane

        dataplane.init_ctrl(other, layout.layout_digest(SMALL_CAPS))
        loader.pin(other, staged)
        pinswap.switch_interfaces(inst, other)
        new_id = other.prog_id
        other.close()
        inst.close()
        r = apply_policy(base_policy(), cfg, NOW, instance=h.instance)
        assert r.recovered and "finished the switch" in r.recovered[0]
        assert r.prog_id == new_id and [l.prog_id for l in links.xdp_links() if l.ifname == a] == [new_id]
        assert sorted(os.listdir(cfg.pin_root)) == [h.instance]


def _object(caps):
    from kernel_fixtures import object_for

    return object_for(caps)


# --- host CLI on real traffic: status, stats, history, unload --------------------------------------


def test_real_traffic_status_stats_history_unload(tmp_path, capsys):
    with veth_netns(prefix="10.201.0") as v, host_env(tmp_path) as h:
        d = write_policy_dir(
            tmp_path / "p",
            {
                "a.yaml": [
                    rule_doc("icmp_from_peer2", "ALLOW", src=f"{v.peer_ips[0]}/32", proto="ICMP", priority=10),
                    rule_doc("block_peer3", "BLOCK", src=f"{v.peer_ips[1]}/32"),
                ]
            },
        )
        assert main(h.cli("apply", str(d), "--iface", v.host)) == 0
        out = capsys.readouterr().out
        assert f"attached: {v.host} (native)" in out
        ok = v.run(["ping", "-c", "3", "-i", "0.2", "-W", "1", "-I", v.peer_ips[0], v.host_ip], timeout=30)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        blocked = v.run(["ping", "-c", "2", "-i", "0.2", "-W", "1", "-I", v.peer_ips[1], v.host_ip], timeout=30)
        assert blocked.returncode != 0

        assert main(h.cli("stats", "--format", "json")) == 0
        st = json.loads(capsys.readouterr().out)
        by_id = {r["id"]: r for r in st["rules"]}
        assert by_id["icmp_from_peer2"]["packets"] >= 3 and by_id["icmp_from_peer2"]["drops"] == 0
        assert by_id["block_peer3"]["drops"] >= 2 and by_id["block_peer3"]["packets"] == by_id["block_peer3"]["drops"]
        assert st["rules"][0]["packets"] >= st["rules"][-1]["packets"]  # sorted by hits
        assert st["counters"]["block"] >= 2
        assert main(h.cli("stats", "--rule", "block_peer3", "--watch", "0.2", "--count", "2")) == 0
        text = capsys.readouterr().out
        assert text.count("block_peer3") == 2 and "pkt/s" in text and "icmp_from_peer2" not in text

        assert main(h.cli("status", "--format", "json")) == 0
        s = json.loads(capsys.readouterr().out)
        assert s["loaded"] and s["interfaces"] == [{"ifname": v.host, "ifindex": s["interfaces"][0]["ifindex"], "mode": "native"}]
        assert s["usage"]["rules"] == {"used": 2, "capacity": SMALL_CAPS.max_rules}
        assert s["drift"] is False and s["generations_in_sync"] and s["last_apply"]["applied_at"]
        # the loaded layout is compared with the capacities of a pepc.yaml only when one is named
        assert s["layout_matches_this_pepc"] is True
        from pepc.reconcile.status import collect

        assert collect(h.config, h.instance)["layout_matches_this_pepc"] is None
        bigger = dataclasses.replace(h.config, capacities=dataclasses.replace(SMALL_CAPS, max_rules=2 * SMALL_CAPS.max_rules))
        assert collect(bigger, h.instance, compare_layout=True)["layout_matches_this_pepc"] is False
        assert main(h.cli("status")) == 0
        assert f"{v.host} (native)" in capsys.readouterr().out

        assert main(h.cli("history", "--format", "json")) == 0
        hist = json.loads(capsys.readouterr().out)
        assert hist[0]["result"] == "applied" and hist[0]["interfaces"] == [v.host]

        prog = s["prog_id"]
        assert main(h.cli("unload")) == 0
        out = capsys.readouterr().out
        assert f"detached from {v.host}" in out
        assert links.links_of({prog}) == [] and not h.pin_dir.exists()
        assert os.listdir(h.config.pin_root) == []
        # traffic passes again without the filter
        again = v.run(["ping", "-c", "1", "-W", "1", "-I", v.peer_ips[1], v.host_ip], timeout=30)
        assert again.returncode == 0
        assert main(h.cli("unload")) == 0
        assert "nothing to do" in capsys.readouterr().out
        assert main(h.cli("status")) == 0
        assert "loaded:          no" in capsys.readouterr().out


def test_interfaces_converge_attach_and_detach(tmp_path):
    with veth_pair() as (a, b), host_env(tmp_path) as h:
        r = apply_policy(base_policy(), h.config, NOW, instance=h.instance, iface_names=[a])
        assert [i for i, _ in r.attached] == [a]
        r = apply_policy(base_policy(), h.config, NOW, instance=h.instance, iface_names=[a, b])
        assert sorted(i for i, _ in r.attached) == sorted([a, b]) and r.writes == 0
        r = apply_policy(base_policy(), h.config, NOW, instance=h.instance, iface_names=[b])
        assert [i for i, _ in r.attached] == [b] and r.detached == (a,)
        # without any interface named, attachments are left as they are
        r = apply_policy(base_policy(), h.config, NOW, instance=h.instance)
        assert [i for i, _ in r.attached] == [b] and r.result == "unchanged"


def test_refuses_to_replace_a_foreign_program(tmp_path):
    from pepc.kernel import loader, netlink
    from pepc.policy.diagnostics import EnvironmentProblem

    with veth_pair() as (a, _b), host_env(tmp_path) as h:
        foreign = loader.load_object(_object(SMALL_CAPS))
        try:
            netlink.attach(a, foreign.prog_fd)
            with pytest.raises(EnvironmentProblem) as err:
                apply_policy(base_policy(), h.config, NOW, instance=h.instance, iface_names=[a])
            assert f"runs XDP program {foreign.prog_id}" in err.value.message
            assert [l.prog_id for l in links.xdp_links() if l.ifname == a] == [foreign.prog_id]
            assert not h.pin_dir.exists()
            assert audit.last(h.config.state_dir, h.instance)["result"] == "failed"
        finally:
            netlink.detach(a)
            foreign.close()


def test_first_apply_takes_the_program_the_child_built_while_compiling(tmp_path, monkeypatch):
    """A first apply starts pepc.reconcile.prefetch (clang + load in a child
    process) and takes its program; its pins are gone afterwards. When the
    child's program cannot be used, the apply builds and loads by itself;
    when the policy is refused, the child's pins are removed too."""
    from pepc.policy.diagnostics import PolicyError
    from pepc.reconcile import prefetch

    with host_env(tmp_path) as h:
        pre = prefetch.prefetch_dir(h.config, h.instance)
        r = apply_policy(base_policy(), h.config, NOW, instance=h.instance)
        assert "build+load wait" in r.timings and "build" not in r.timings
        assert not pre.exists()
        inst = _open(h)
        try:
            assert _verdict(inst.prog_fd, "10.0.0.50") == XDP_DROP
        finally:
            inst.close()
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    with host_env(tmp_path / "b") as h:
        monkeypatch.setattr(prefetch.Prefetch, "take", lambda self, digest: (self.discard(), None)[1])
        r = apply_policy(base_policy(), h.config, NOW, instance=h.instance)
        assert "build" in r.timings and "build+load wait" not in r.timings
        assert not prefetch.prefetch_dir(h.config, h.instance).exists()
        monkeypatch.undo()
    with host_env(tmp_path / "c") as h:
        too_many = policy(*base_policy().rules, *many_rules(SMALL_CAPS.max_rules + 1))
        with pytest.raises(PolicyError):
            apply_policy(too_many, h.config, NOW, instance=h.instance)
        assert not prefetch.prefetch_dir(h.config, h.instance).exists()
        assert not h.pin_dir.exists()
