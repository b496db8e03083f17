"""Prebuilt XDP objects ($PEPC_OBJECT_DIR): a host without clang applies with them.

The kernel test hides clang (PEPC_CLANG names a file that does not
exist), so an apply that succeeds can only have loaded the prebuilt
object; one for other capacities is not taken, and the error says what to
prebuild.
"""

from __future__ import annotations

import dataclasses

import pytest

from pepc.compiler import layout, prebuilt
from pepc.policy.diagnostics import EnvironmentProblem
from pepc.reconcile.apply import apply_policy

from reconcile_helpers import NOW, SMALL_CAPS, base_policy, host_env


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    d = tmp_path_factory.mktemp("objects")
    cfg = d / "pepc.yaml"
    cfg.write_text(
        "capacities: {max_rules: %d, max_entries: %d, max_masks: %d, ring_bytes: %d}\n"
        % (SMALL_CAPS.max_rules, SMALL_CAPS.max_entries, SMALL_CAPS.max_masks, SMALL_CAPS.ring_bytes)
    )
    assert prebuilt.main([str(d / "out"), "--config", str(cfg)]) == 0
    return d / "out"


def test_one_object_per_layout_named_by_its_digests(objects, monkeypatch):
    names = sorted(p.name for p in objects.iterdir())
    assert names == sorted({prebuilt.object_name(layout.Capacities()), prebuilt.object_name(SMALL_CAPS)})
    assert layout.layout_digest(SMALL_CAPS) in prebuilt.object_name(SMALL_CAPS)
    monkeypatch.delenv(prebuilt.ENV, raising=False)
    assert prebuilt.find(SMALL_CAPS) is None
    monkeypatch.setenv(prebuilt.ENV, str(objects))
    assert prebuilt.find(SMALL_CAPS) == objects / prebuilt.object_name(SMALL_CAPS)
    assert prebuilt.find(dataclasses.replace(SMALL_CAPS, max_rules=512)) is None


def test_a_bad_config_is_exit_2(tmp_path, capsys):
    bad = tmp_path / "pepc.yaml"
    bad.write_text("capacities: {max_rules: many}\n")
    assert prebuilt.main([str(tmp_path / "out"), "--config", str(bad)]) == 2
    assert "bad-config" in capsys.readouterr().err


@pytest.mark.kernel
def test_apply_without_clang_uses_the_prebuilt_object(objects, tmp_path, monkeypatch):
    monkeypatch.setenv(prebuilt.ENV, str(objects))
    monkeypatch.setenv("PEPC_CLANG", str(tmp_path / "no-clang-here"))
    with host_env(tmp_path) as h:
        r = apply_policy(base_policy(), h.config, NOW, instance=h.instance)
        assert r.result == "applied" and r.plan.load_reason == "no instance is loaded"
        # other capacities need another object: not there, and no clang to build it
        bigger = dataclasses.replace(h.config, capacities=dataclasses.replace(SMALL_CAPS, max_rules=512))
        with pytest.raises(EnvironmentProblem) as e:
            apply_policy(base_policy(), bigger, NOW, instance=h.instance)
        assert prebuilt.ENV in e.value.hint and "python -m pepc.compiler.prebuilt" in e.value.hint
