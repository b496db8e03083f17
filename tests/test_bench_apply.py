"""bench/apply.py's warm rows write the benchmark policy as a directory of
YAML files and expect the loaded policy to compile to what the in-memory
one compiled to (the session's restart then writes nothing). Checked here
for the synthetic rules and every bench/check.py shape, and for the edits
the benchmark makes (no kernel needed)."""

from __future__ import annotations

import importlib.util
from datetime import datetime, timezone

import pytest

from conftest import ROOT
from pepc.compiler import compile_program
from pepc.policy.config import Config
from pepc.loader import load_policy
from pepc.policy.model import Policy

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"pepc_bench_{name}", ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bench = _module("apply")
SHAPES = bench.load_shapes()


def _contents(policy: Policy, caps) -> tuple:
    p = compile_program(policy, Config(capacities=caps), NOW)
    return p.rule_contents(), p.rule6_contents(), p.masks, p.masks6, p.packed_slots


@pytest.mark.parametrize("shape", ["synth", "a", "b", "c", "d"])
def test_written_directory_compiles_to_the_same_program(shape, tmp_path):
    n = 400
    policy = Policy("/bench", tuple(bench.rules(n))) if shape == "synth" else SHAPES[shape](n)
    caps = bench.caps_for(n) if shape == "synth" else bench.CAP_CEILING
    bench.write_dir(tmp_path, list(policy.rules))
    loaded = load_policy(tmp_path)
    assert [r.id for r in loaded.rules] == [r.id for r in policy.rules]
    assert _contents(loaded, caps) == _contents(policy, caps)


@pytest.mark.parametrize("shape", ["a", "b", "c", "d"])
def test_edits_change_one_rule_and_round_trip(shape, tmp_path):
    policy = SHAPES[shape](400)
    for i in (0, 7, 200, 399):
        old = policy.rules[i]
        new = bench.edit_rule(old, 2)
        assert new != old and new.id == old.id
        assert bench._rule_doc(new) != bench._rule_doc(old)
    rs = list(policy.rules)
    rs[7] = bench.edit_rule(rs[7], 0)
    bench.write_dir(tmp_path, rs)
    loaded = {r.id: r for r in load_policy(tmp_path).rules}
    assert len(loaded) == len(rs)
    changed = [f for f in ("src", "dst", "dports", "priority") if getattr(rs[7], f) != getattr(policy.rules[7], f)]
    assert len(changed) == 1
    assert getattr(loaded[rs[7].id], changed[0]) == getattr(rs[7], changed[0])
