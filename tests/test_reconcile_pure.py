"""Reconciler logic that needs no kernel: deltas, plans, drift, rendering, lock, audit."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pepc.compiler import layout
from pepc.policy.diagnostics import EnvironmentProblem
from pepc.policy.model import Action, Protocol
from pepc.reconcile import audit, diff
from pepc.reconcile.lock import InstanceLock
from pepc.reconcile.planner import make_plan
from pepc.reconcile.render import render_plan
from pepc.reconcile.state import Attachment

from reconcile_helpers import base_policy, compile_, config, live_of, policy, rule

# --- deltas against a naive oracle ------------------------------------------------

_key = st.binary(min_size=4, max_size=4)
_val = st.binary(min_size=3, max_size=3)
_contents = st.fixed_dictionaries({name: st.dictionaries(_key, _val, max_size=12) for name in diff.GEN_MAPS})


@given(desired=_contents, live=_contents)
def test_delta_turns_live_into_desired(desired, live):
    delta = diff.diff_generation(desired, live)
    assert diff.apply_delta(live, delta) == diff.normalize(desired)
    # minimal: every write changes something, every delete removes something present
    nl, nd = diff.normalize(live), diff.normalize(desired)
    for m in delta.maps:
        for k, v in m.writes:
            assert nl[m.name].get(k) != v
        for k in m.deletes:
            assert k in nl[m.name] and k not in nd[m.name]
    # naive count: keys whose value differs or that exist on one side only
    naive = sum(
        1 for name in diff.GEN_MAPS for k in set(nl[name]) | set(nd[name]) if nl[name].get(k) != nd[name].get(k)
    )
    assert delta.count == naive


def test_zero_array_elements_are_absent():
    z = bytes(layout.SLOT.size)
    live = {"pepc_slots": {diff.u32(3): z}}
    assert diff.diff_generation({}, live).empty
    desired = {"pepc_rules": {b"k": bytes(16)}}  # a HASH element may be zero
    assert diff.diff_generation(desired, {}).count == 1


# --- rule summary, resets, assignments ----------------------------------------------


def test_identical_programs_need_nothing():
    p = compile_(base_policy())
    plan = make_plan("t", p.map_contents(), p.policy_digest, p.layout_digest, live_of(p))
    assert not plan.changes_pending
    assert plan.map_writes == 0 and not plan.flip and plan.rules.empty
    assert plan.drift is not None and not plan.drift.found


def test_one_rule_change_is_a_one_rule_delta():
    old = compile_(base_policy())
    pol = base_policy()
    changed = policy(*[r if r.id != "block_bad" else rule("block_bad", Action.BLOCK, src="10.0.0.51/32") for r in pol.rules])
    new = compile_(changed, previous=old)
    plan = make_plan("t", new.map_contents(), new.policy_digest, new.layout_digest, live_of(old, old, active=1))
    assert plan.flip and plan.target_gen == 0
    assert [c.rule_id for c in plan.rules.changed] == ["block_bad"]
    (c,) = plan.rules.changed
    assert [f for f, _, _ in c.fields] == ["match"]
    # one entry out, one in, and the gen element (digest) — per generation
    assert plan.target.summary()["pepc_rules"] == {"add": 1, "change": 0, "delete": 1}
    assert plan.target.count == 3 and plan.sync_old.count == 3
    assert plan.map_writes == 3 + 1 + 3
    assert plan.resets == ()


def test_added_changed_removed_rules_and_fields():
    old = compile_(base_policy())
    rules = [r for r in base_policy().rules if r.id != "log_dns"]
    rules = [r if r.id != "allow_web" else rule("allow_web", Action.BLOCK, dst="192.168.1.0/24", proto=Protocol.TCP, dports=((80, 80), (443, 443)), priority=7) for r in rules]
    rules.append(rule("new_one", Action.BLOCK, src="172.16.0.0/12"))
    new = compile_(policy(*rules), previous=old)
    s = diff.rule_summary(new.map_contents(), old.map_contents())
    assert [c.rule_id for c in s.added] == ["new_one"]
    assert [c.rule_id for c in s.removed] == ["log_dns"]
    assert [c.rule_id for c in s.changed] == ["allow_web"]
    fields = {f: (a, b) for f, a, b in s.changed[0].fields}
    assert fields["action"] == ("ALLOW", "BLOCK")
    assert fields["priority"] == (100, 7)
    # the new rule takes a slot no rule of the active generation held: reset it
    plan = make_plan("t", new.map_contents(), new.policy_digest, new.layout_digest, live_of(old))
    assert plan.resets == (new.slot_of("new_one"),)
    assert new.slot_of("new_one") not in {s.slot for s in old.slots}


def test_file_rename_and_reorder_is_no_change():
    old = compile_(base_policy())
    pol = base_policy()
    moved = policy(*[rule_ for rule_ in reversed(pol.rules)], root="/elsewhere")
    moved = policy(*[type(r)(**{**r.__dict__, "loc": type(r.loc)("z/other.yaml", 99, 3)}) for r in moved.rules], root="/elsewhere")
    new = compile_(moved, previous=old)
    assert new.policy_digest == old.policy_digest
    plan = make_plan("t", new.map_contents(), new.policy_digest, new.layout_digest, live_of(old))
    assert plan.map_writes == 0 and not plan.changes_pending


def test_assignments_from_live_slots_and_truncated_ids():
    long_a = "x" * 70 + "a"
    long_b = "x" * 70 + "b"  # same 64-byte prefix and length as long_a
    p = compile_(policy(rule("short"), rule(long_a, src="10.1.0.0/16"), rule("y" * 80, src="10.2.0.0/16")))
    slots, keys = diff.assignments_from_slots(p.map_contents()["pepc_slots"], ["short", long_a, long_b, "y" * 80])
    assert slots["short"] == p.slot_of("short") and keys["short"] == next(s.order_key for s in p.slots if s.rule_id == "short")
    assert "y" * 80 in slots  # unique prefix+length: attributed
    assert long_a not in slots and long_b not in slots  # ambiguous: new slots rather than a wrong one


# --- generations: stale inactive, load, layout change, drift --------------------------


def test_stale_inactive_generation_is_synced_without_flip():
    old = compile_(base_policy())
    new = compile_(policy(*base_policy().rules, rule("extra", src="10.9.0.0/16")), previous=old)
    # an apply died after its flip: active (1) holds new, inactive (0) still old
    live = live_of(old, new, active=1)
    plan = make_plan("t", new.map_contents(), new.policy_digest, new.layout_digest, live)
    assert not plan.flip and plan.target_gen == 0 and not plan.target.empty
    assert plan.sync_old.empty and plan.changes_pending
    assert any("out of date" in n for n in plan.notes)


def test_no_instance_means_load_both_generations():
    p = compile_(base_policy())
    plan = make_plan("t", p.map_contents(), p.policy_digest, p.layout_digest, None, [("veth0", "auto")])
    assert plan.load_reason == "no instance is loaded"
    n = sum(len(v) for v in diff.normalize(p.map_contents()).values())
    assert plan.target.count == n and plan.sync_old.count == n
    assert [c.rule_id for c in plan.rules.added] == sorted(r.id for r in base_policy().rules)
    assert plan.interfaces[0].action == "attach" and plan.attach_needed


def test_layout_change_carries_counters_of_surviving_rules():
    old = compile_(base_policy())
    bigger = config(layout.Capacities(max_rules=512, max_entries=4096, max_masks=32, ring_bytes=4096))
    new = compile_(policy(*base_policy().rules[:3]), bigger, previous=old)
    live = live_of(old)
    plan = make_plan("t", new.map_contents(), new.policy_digest, new.layout_digest, live, [("veth0", "auto")],
                     {"veth0": Attachment("veth0", 5, 7, "native")})
    assert plan.load_reason and "layout changed" in plan.load_reason
    assert len(plan.carry) == 3 and all(a == b for a, b in plan.carry)
    assert plan.interfaces[0].action == "replace"
    assert [c.rule_id for c in plan.rules.removed] == ["log_dns"]


def test_drift_is_found_and_repaired_by_the_plan():
    p = compile_(base_policy())
    active = {k: dict(v) for k, v in p.map_contents().items()}
    key, val = next(iter(active["pepc_rules"].items()))
    active["pepc_rules"][key] = val[:8] + (999).to_bytes(4, "little") + val[12:]  # slot rewritten by hand
    plan = make_plan("t", p.map_contents(), p.policy_digest, p.layout_digest, live_of(active, p.map_contents(), layout_digest=p.layout_digest))
    assert plan.drift is not None and plan.drift.found
    assert plan.drift.delta.of("pepc_rules").count == 1
    # generation 1 is correct: bring it up (nothing), flip to it, repair 0
    assert plan.flip and plan.target_gen == 1 and plan.target.empty and plan.sync_old.count == 1
    assert "Drift: the active generation was modified outside pepc (pepc_rules 1)" in render_plan(plan)


def test_hand_edited_gen_counts_are_drift():
    p = compile_(base_policy())
    active = {k: dict(v) for k, v in p.map_contents().items()}
    g = layout.GEN.unpack(active["pepc_gen"][diff.u32(0)])
    g["n_masks"] = 1
    active["pepc_gen"][diff.u32(0)] = layout.GEN.pack({**g, "policy_digest": bytes.fromhex(p.policy_digest)})
    assert diff.find_drift(active).found
    assert not diff.find_drift(p.map_contents()).found


# --- rendering ----------------------------------------------------------------------


def test_plan_text_and_json(snapshot):
    old = compile_(base_policy())
    rules = [r for r in base_policy().rules if r.id != "log_dns"] + [rule("new_one", src="172.16.0.0/12")]
    new = compile_(policy(*rules), previous=old)
    plan = make_plan("t", new.map_contents(), new.policy_digest, new.layout_digest, live_of(old), [("veth0", "auto")],
                     {"veth0": Attachment("veth0", 5, 7, "native")})
    text = render_plan(plan, "/sys/fs/bpf/pepc/t")
    # digests change with the layout and the compiler; the snapshot is about the shape
    text = text.replace(new.policy_digest[:16], "<policy>").replace(new.layout_digest, "<layout>")
    assert text == snapshot
    j = plan.to_json()
    json.dumps(j)
    assert j["rules"]["added"] == 1 and j["rules"]["removed"] == 1 and j["changes_pending"]
    assert j["maps"]["pepc_ctrl"] == {"write": 1, "delete": 0}
    assert j["map_writes"] == plan.map_writes


def test_plan_text_no_changes():
    p = compile_(base_policy())
    text = render_plan(make_plan("t", p.map_contents(), p.policy_digest, p.layout_digest, live_of(p)))
    assert "No changes: the live maps match the policy." in text


# --- lock -------------------------------------------------------------------------


def test_lock_contention_fails_clearly_then_waits(tmp_path):
    first = InstanceLock(str(tmp_path), "inst")
    first.acquire()
    try:
        with pytest.raises(EnvironmentProblem) as err:
            InstanceLock(str(tmp_path), "inst").acquire()
        assert "another pepc apply is running on instance 'inst'" in err.value.message
        assert "--wait" in err.value.hint
        # another instance is independent
        with InstanceLock(str(tmp_path), "other"):
            pass
        released = threading.Event()

        def later():
            time.sleep(0.2)
            first.release()
            released.set()

        t = threading.Thread(target=later)
        t.start()
        with InstanceLock(str(tmp_path), "inst", wait=30):
            assert released.is_set()
        t.join()
    finally:
        first.release()


# --- audit ------------------------------------------------------------------------


def test_audit_lines_newest_last_and_torn_line_skipped(tmp_path):
    audit.append(str(tmp_path), "i", {"result": "applied", "n": 1})
    with open(audit.audit_path(str(tmp_path), "i"), "a") as f:
        f.write('{"result": "app')  # a crash mid-line
        f.write("\n")
    audit.append(str(tmp_path), "i", {"result": "refused", "n": 2})
    recs = list(audit.read(str(tmp_path), "i"))
    assert [r["n"] for r in recs] == [1, 2]
    assert audit.last(str(tmp_path), "i", "applied")["n"] == 1
    assert list(audit.read(str(tmp_path), "nothing")) == []


def test_git_info(tmp_path):
    assert audit.git_info(str(tmp_path)) is None
    run = lambda *a: subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    (tmp_path / "p.yaml").write_text("policies: []\n")
    run("add", "p.yaml")
    run("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x")
    info = audit.git_info(str(tmp_path))
    assert info is not None and len(info["commit"]) == 40 and info["dirty"] is False
    (tmp_path / "p.yaml").write_text("policies: [] # edited\n")
    assert audit.git_info(str(tmp_path))["dirty"] is True


def test_contents_digest_is_the_compilers_policy_digest():
    for pol in (base_policy(), policy(rule("only")), policy()):
        p = compile_(pol)
        assert diff.contents_digest(p.map_contents()) == p.policy_digest


def test_a_rule_that_moved_slot_is_changed_not_added_and_removed():
    from pepc.compiler import Assignments

    old = compile_(base_policy())
    slots = {s.rule_id: s.slot for s in old.slots}
    keys = {s.rule_id: s.order_key for s in old.slots}
    slots["block_bad"] = 100  # as if the live maps had it elsewhere
    from reconcile_helpers import NOW, config
    from pepc.compiler import compile_program

    moved = compile_program(base_policy(), config(), NOW, Assignments(slots, keys))
    s = diff.rule_summary(moved.map_contents(), old.map_contents())
    assert not s.added and not s.removed
    (c,) = s.changed
    assert c.rule_id == "block_bad" and ("slot", old.slot_of("block_bad"), 100) in c.fields
    # a moved rule gets fresh counters in its new slot
    assert diff.slots_to_reset(moved.map_contents(), old.map_contents()) == (100,)


# --- crash safety of the plan, against a model of the kernel maps -------------------

_prefixes = st.sampled_from(["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32", "192.168.0.0/16", "192.168.1.0/24", "0.0.0.0/0"])
_rule_specs = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c", "d", "e", "f"]), st.sampled_from([Action.ALLOW, Action.BLOCK]), _prefixes, _prefixes,
              st.sampled_from([0, 10, 100])),
    max_size=6,
    unique_by=lambda t: t[0],
)


def _policy_of(specs):
    return policy(*[rule(rid, act, src=s, dst=d, priority=p) for rid, act, s, d, p in specs])


def _ops(plan):
    """The element writes apply makes, in its order (reconcile.apply.Writer):
    generation I (deletes, then writes, map by map), the flip, generation A."""

    def gen_ops(gen, delta):
        out = []
        for m in delta.maps:
            out += [(gen, m.name, k, None) for k in m.deletes] + [(gen, m.name, k, v) for k, v in m.writes]
        return out

    ops = gen_ops(plan.target_gen, plan.target)
    if plan.flip:
        ops += [("flip", plan.target_gen)] + gen_ops(1 - plan.target_gen, plan.sync_old)
    return ops


def _run(state, ops):
    gens, active = [{k: dict(v) for k, v in g.items()} for g in state[0]], state[1]
    for op in ops:
        if op[0] == "flip":
            active = op[1]
            continue
        gen, name, k, v = op
        if v is None:
            gens[gen][name].pop(k, None)
        else:
            gens[gen][name][k] = v
    return gens, active


@given(old=_rule_specs, new=_rule_specs, cut=st.integers(min_value=0, max_value=400), start=st.integers(0, 1))
def test_any_crash_point_leaves_old_or_new_and_the_next_plan_converges(old, new, cut, start):
    p_old = compile_(_policy_of(old))
    p_new = compile_(_policy_of(new), previous=p_old)
    c_old, c_new = diff.normalize(p_old.map_contents()), diff.normalize(p_new.map_contents())
    state = ([diff.normalize(p_old.map_contents()), diff.normalize(p_old.map_contents())], start)
    plan = make_plan("t", c_new, p_new.policy_digest, p_new.layout_digest, live_of(state[0][0], state[0][1], active=start, layout_digest=p_new.layout_digest))
    ops = _ops(plan)
    assert sum(1 for o in ops if o[0] != "flip") + (1 if plan.flip else 0) == plan.map_writes - 3 * len(plan.resets)
    gens, active = _run(state, ops[: min(cut, len(ops))])
    assert diff.normalize(gens[active]) in (c_old, c_new)  # never a mix
    # the next apply finishes the job
    plan2 = make_plan("t", c_new, p_new.policy_digest, p_new.layout_digest, live_of(gens[0], gens[1], active=active, layout_digest=p_new.layout_digest))
    gens, active = _run((gens, active), _ops(plan2))
    assert diff.normalize(gens[0]) == c_new and diff.normalize(gens[1]) == c_new
    # and then there is nothing left to do
    plan3 = make_plan("t", c_new, p_new.policy_digest, p_new.layout_digest, live_of(gens[0], gens[1], active=active, layout_digest=p_new.layout_digest))
    assert not plan3.changes_pending and plan3.map_writes == 0


_k = st.binary(min_size=1, max_size=2)
_v = st.binary(min_size=1, max_size=2)


@given(st.dictionaries(_k, _v, max_size=12), st.dictionaries(_k, st.one_of(st.none(), _v), max_size=6))
def test_a_derived_map_diffs_like_a_plain_one(base, changes):
    """diff_map's shortcut for a Derived map (compare only the touched keys
    against its base) gives exactly the full comparison's delta."""
    derived = diff.Derived(base, changes)
    for k, v in changes.items():
        if v is None:
            derived.pop(k, None)
        else:
            derived[k] = v
    assert diff.diff_map("pepc_rules", derived, base) == diff.diff_map("pepc_rules", dict(derived), dict(base))
    # against anything but its base, the full comparison runs
    other = dict(base)
    other[b"\xff\xff\xff"] = b"x"
    assert diff.diff_map("pepc_rules", derived, other) == diff.diff_map("pepc_rules", dict(derived), other)


def test_the_forked_gate_returns_the_childs_errors_or_none():
    """pepc apply computes its check gate in a forked child while it
    compiles: the errors come back intact; a child that fails gives None
    (the caller then runs the gate itself); discard leaves no child."""
    import os
    import threading

    from pepc.policy.diagnostics import Finding, Severity
    from pepc.policy.model import Location
    from pepc.reconcile.apply import _ForkedGate

    errors = [Finding("shadowed", "rule `x` is shadowed", Location("p/a.yaml", 3, 5), severity=Severity.ERROR, rule="x")]
    if threading.active_count() != 1:  # (another test left a thread) no fork beside threads
        assert _ForkedGate.start(lambda: errors) is None
        return
    g = _ForkedGate.start(lambda: errors)
    assert g is not None and g.result() == errors
    g.discard()

    def boom():
        raise RuntimeError("no")

    g = _ForkedGate.start(boom)
    assert g.result() is None
    g = _ForkedGate.start(lambda: __import__("time").sleep(30) or errors)
    pid = g.pid
    g.discard()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, 0)
