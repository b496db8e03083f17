"""`pepc apply --revision`, `pepc history` and `pepc rollback`.

The kernel test applies revision A, then B, then rolls back, on a real
instance: the live maps must be A's again, byte for byte, and the audit
trail must say so. The rest checks the target choice and the errors
without a kernel.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from pepc.cli import main
from pepc.commands.rollback import rollback_target
from pepc.policy.diagnostics import PolicyError
from pepc.reconcile import audit, diff

from reconcile_helpers import host_env, rule_doc, write_policy_dir


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout.strip()


REV_A = {"a.yaml": [
    rule_doc("web", "ALLOW", dst="172.31.1.10/32", proto="TCP", dport=[80, 443], priority=100),
    rule_doc("block_bad", "BLOCK", src="10.0.0.50/32"),
]}
REV_B = {"a.yaml": [
    rule_doc("web", "BLOCK", dst="172.31.1.10/32", proto="TCP", dport=[80, 443], priority=100),
    rule_doc("block_bad", "BLOCK", src="10.0.0.50/32"),
    rule_doc("log_dns", "LOG_ONLY", proto="UDP", dport=53),
]}


def repo_with(tmp_path: Path, *revisions: dict) -> tuple[Path, Path, list[str]]:
    repo = tmp_path / "repo"
    d = repo / "policies.d"
    repo.mkdir()
    git(repo, "init", "-q")
    commits = []
    for i, files in enumerate(revisions):
        write_policy_dir(d, files)
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", f"rev {i}")
        commits.append(git(repo, "rev-parse", "HEAD"))
    return repo, d, commits


def _active(h):
    from pepc.reconcile.apply import open_live

    inst, live = open_live(h.config, h.instance)
    inst.close()
    return live


@pytest.mark.kernel
def test_apply_a_apply_b_rollback_gives_a_again(tmp_path, capsys):
    from pepc.simulate.frames import build_frame
    from pepc.kernel.loader import open_instance
    from pepc.kernel.testrun import XDP_DROP, XDP_PASS, test_run

    repo, d, (a, b) = repo_with(tmp_path, REV_A, REV_B)
    with host_env(tmp_path) as h:
        # A by revision (the work tree holds B), then B from the work tree
        assert main(h.cli("apply", str(d), "--revision", "HEAD~1")) == 0
        live_a = _active(h)
        assert main(h.cli("apply", str(d))) == 0
        assert diff.normalize(_active(h).active) != diff.normalize(live_a.active)
        capsys.readouterr()

        assert main(h.cli("rollback")) == 0
        out = capsys.readouterr().out
        assert f"back to entry #1, commit {a[:12]}" in out
        live = _active(h)
        assert diff.normalize(live.active) == diff.normalize(live_a.active)
        assert live.gens[0] == live.gens[1]
        inst = open_instance(h.pin_dir)
        try:
            frame = build_frame("10.9.9.9", "172.31.1.10", 6, 40000, 443)
            assert test_run(inst.prog_fd, frame).retval == XDP_PASS  # web is ALLOW again
            assert test_run(inst.prog_fd, build_frame("10.0.0.50", "172.31.1.10", 6, 40000, 22)).retval == XDP_DROP
        finally:
            inst.close()

        recs = list(audit.read(h.config.state_dir, h.instance))
        assert [r["result"] for r in recs] == ["applied", "applied", "applied"]
        assert [r["git"]["commit"] for r in recs] == [a, b, a]
        assert recs[0]["git"]["revision"] == "HEAD~1" and recs[0]["git"]["path"] == "policies.d"
        assert recs[2]["git"]["rollback_to"] == 1
        assert recs[2]["policy_digest"] == recs[0]["policy_digest"]

        assert main(h.cli("history")) == 0
        text = capsys.readouterr().out
        assert "rollback to #1" in text and "revision HEAD~1" in text
        assert main(h.cli("history", "--format", "json")) == 0
        assert [r["n"] for r in json.loads(capsys.readouterr().out)] == [3, 2, 1]

        # rolling back again goes to B (the previous revision of the current A)
        assert main(h.cli("rollback", "--format", "json")) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["rollback_to"] == 2 and doc["commit"] == b
        # by revision: the commit A was applied as
        assert main(h.cli("rollback", "--to", a[:10])) == 0
        assert f"back to entry #3, commit {a[:12]}" in capsys.readouterr().out
        assert diff.normalize(_active(h).active) == diff.normalize(live_a.active)


# --- without a kernel: which entry, and every way to ask wrongly -----------------------


def rec(result: str, commit: str | None, dirty: bool | None = False, path: str = "/r/policies.d") -> dict:
    return {"result": result, "policy_path": path, "git": {"commit": commit, "dirty": dirty, "path": "policies.d"} if commit else None}


def test_the_default_target_is_the_previous_other_commit():
    records = [rec("applied", "a" * 40), rec("refused", "c" * 40), rec("applied", "b" * 40), rec("unchanged", "b" * 40)]
    assert rollback_target(records, None)[0] == 1
    assert rollback_target(records, "3")[0] == 3


@pytest.mark.parametrize(
    "records, to, message",
    [
        ([], None, "no applied revision"),
        ([rec("applied", "a" * 40)], None, "no earlier applied revision"),
        ([rec("applied", "a" * 40), rec("applied", None)], "2", "not applied from git"),
        ([rec("applied", "a" * 40, dirty=True), rec("applied", "b" * 40)], "1", "uncommitted changes"),
        ([rec("refused", "a" * 40), rec("applied", "b" * 40)], "1", "was refused"),
        ([rec("applied", "a" * 40)], "7", "no entry #7"),
        ([rec("applied", "a" * 40, dirty=True), rec("applied", "b" * 40)], None, "no earlier applied revision"),
    ],
)
def test_bad_targets(records, to, message):
    with pytest.raises(PolicyError) as e:
        rollback_target(records, to)
    assert message in e.value.findings[0].message


def test_a_revision_never_applied_is_refused(tmp_path):
    repo, d, (a, b) = repo_with(tmp_path, REV_A, REV_B)
    records = [rec("applied", b, path=str(d))]
    with pytest.raises(PolicyError) as e:
        rollback_target(records, "HEAD~1")
    assert "was never applied on this instance" in e.value.findings[0].message
    with pytest.raises(PolicyError) as e:
        rollback_target(records, "nope")
    assert "unknown revision" in e.value.findings[0].message


def test_apply_revision_outside_git_is_a_located_error(tmp_path, capsys):
    d = write_policy_dir(tmp_path / "policies.d", REV_A)
    (tmp_path / "pepc.yaml").write_text(json.dumps({"state_dir": str(tmp_path / "state"), "run_dir": str(tmp_path / "run")}))
    rc = main(["apply", str(d), "--revision", "HEAD~1", "--instance", "t-norepo"])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{d}: error:" in err and "not inside a git repository" in err and "[bad-revision]" in err
    assert not (tmp_path / "state").exists()  # nothing was tried, so nothing to audit


def test_apply_revision_errors_point_into_the_revision(tmp_path, capsys):
    repo, d, _ = repo_with(tmp_path, {"a.yaml": [{"id": "x", "action": "ALOW"}]}, REV_A)
    state = tmp_path / "state"
    (repo / "pepc.yaml").write_text(json.dumps({"state_dir": str(state), "run_dir": str(tmp_path / "run")}))
    rc = main(["apply", str(d), "--revision", "HEAD~1", "--instance", "t-badrev"])
    err = capsys.readouterr().err
    assert rc == 2 and "HEAD~1:policies.d/a.yaml:" in err and "pepc-rev-" not in err
    (r,) = audit.read(str(state), "t-badrev")
    assert r["result"] == "refused" and r["git"]["revision"] == "HEAD~1"


def test_rollback_without_history(tmp_path, capsys):
    cfg = tmp_path / "pepc.yaml"
    cfg.write_text(json.dumps({"state_dir": str(tmp_path / "state"), "run_dir": str(tmp_path / "run")}))
    assert main(["rollback", "--config", str(cfg), "--instance", "t-none"]) == 2
    assert "no applied revision" in capsys.readouterr().err
