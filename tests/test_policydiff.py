"""`pepc diff`: exact regions against a brute-force oracle, revisions, reports.

The oracle is the cell enumeration of test_checker_oracle.py: cut every
dimension at both policies' interval endpoints, take one packet per
elementary cell and protocol kind, and decide it on each side with the
naive winner function written from docs/semantics.md. Inside a cell both sides'
rules match all packets or none, so the cells decide exactly which
packets change.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pepc.checker.geometry import ICMPV6_GUARD, contains_point
from pepc.policy.model import V6_BASE
from pepc.policy.semantics import Packet
from pepc.cli import main
from pepc.policy.model import Action, Policy
from pepc.diff.semantic import Kind, diff_policies, merge_boxes

from test_checker_oracle import NOW, akey, cells, fallback, naive_winner, policies

# (ip protocol, carries ports) -> the geometry's protocol class
CLASS = {(6, True): 1, (17, True): 2, (6, False): 0, (17, False): 3, (1, False): 4, (47, False): 5, (58, False): 6}


def live(policy: Policy):
    return [r for r in policy.rules if r.enabled and not (r.expires_at and r.expires_at <= NOW)]


def naive_outcome(rules, pkt, default):
    w = naive_winner(rules, pkt)
    action = w.action if w is not None else fallback(pkt, default)
    return ("DROP" if action == Action.BLOCK else "PASS", akey(w) if w is not None else (action,), w.id if w else None)


def naive_kind(o, n):
    for k, (a, b) in zip((Kind.VERDICT, Kind.ACTION, Kind.RULE), zip(o, n)):
        if a != b:
            return k
    return None


def point(pkt):
    """The geometry's point of an oracle cell (family-local addresses)."""
    v6, proto, ports, guarded, src, dst, sport, dport = pkt
    base = V6_BASE if v6 else 0
    cls = ICMPV6_GUARD if guarded else CLASS[(proto, ports)]
    return (cls, base + src, base + dst, sport, dport)


def cell_of(w: Packet):
    return (w.v6, w.proto, w.has_ports, w.guarded, w.src, w.dst, w.sport, w.dport)


@settings(max_examples=400, deadline=None)
@given(policies(), policies(), st.sampled_from([Action.ALLOW, Action.BLOCK]), st.sampled_from([Action.ALLOW, Action.BLOCK]))
def test_regions_are_exactly_the_changed_cells(old, new, old_default, new_default):
    d = diff_policies(old, old_default, new, new_default, NOW)
    lo, ln = live(old), live(new)
    for pkt in cells(lo + ln):
        o, n = naive_outcome(lo, pkt, old_default), naive_outcome(ln, pkt, new_default)
        want = naive_kind(o, n)
        p = point(pkt)
        inside = [r for r in d.regions if contains_point(r.box, p)]
        assert len(inside) <= 1, "regions overlap"
        if want is None:
            assert not inside, (pkt, inside)
            continue
        assert inside, (pkt, o, n)
        r = inside[0]
        assert r.kind is want
        assert (r.old.rule_id, r.new.rule_id) == (o[2], n[2])
        assert (r.old.verdict, r.new.verdict) == (o[0], n[0])
    for r in d.regions:  # the witness is in its region and shows its change
        pkt = cell_of(r.witness)
        assert contains_point(r.box, point(pkt))
        assert naive_outcome(lo, pkt, old_default)[2] == r.old.rule_id
        assert naive_outcome(ln, pkt, new_default)[2] == r.new.rule_id


@settings(max_examples=200, deadline=None)
@given(policies(), st.sampled_from([Action.ALLOW, Action.BLOCK]))
def test_a_policy_does_not_differ_from_itself(policy, default):
    d = diff_policies(policy, default, policy, default, NOW)
    assert d.regions == () and d.rules == ()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(*[st.integers(0, 6)] * 5), min_size=1, max_size=12))
def test_merging_keeps_the_union(corners):
    # unit boxes on a 7^5 grid: merged boxes hold exactly the same points
    boxes = [(a, a, b, b, c, c, e, e, f, f) for a, b, c, e, f in corners]
    merged = merge_boxes(boxes)
    pts = {(a, b, c, e, f) for a, b, c, e, f in corners}
    got = set()
    for m in merged:
        for a in range(m[0], m[1] + 1):
            for b in range(m[2], m[3] + 1):
                for c in range(m[4], m[5] + 1):
                    for e in range(m[6], m[7] + 1):
                        for f in range(m[8], m[9] + 1):
                            assert (a, b, c, e, f) not in got
                            got.add((a, b, c, e, f))
    assert got == pts
    assert len(merged) <= len(pts)


# --- the command, on a git repository ---------------------------------------------

OBJECTS = """\
networks:
  web_host: [203.0.113.10]
  office: [198.51.100.0/24]
services:
  web: [80, 443]
"""

REV1 = """\
policies:
  - id: web_public
    priority: 100
    action: ALLOW
    dst: {ip: web_host, port: web, protocol: TCP}
  - id: ssh_office
    priority: 200
    action: ALLOW
    src: {ip: office}
    dst: {ip: web_host, port: 22, protocol: TCP}
  - id: log_smtp
    priority: 100
    action: LOG_ONLY
    dst: {ip: web_host, port: 25, protocol: TCP}
"""

REV2 = """\
policies:
  - id: web_public
    priority: 100
    action: ALLOW
    dst: {ip: web_host, port: [80, 443, 8080], protocol: TCP}
  - id: log_smtp
    priority: 100
    action: BLOCK
    dst: {ip: web_host, port: 25, protocol: TCP}
  - id: icmp_office
    priority: 50
    action: ALLOW
    src: {ip: office}
    dst: {ip: web_host, protocol: ICMP}
"""


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
           "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    (r / "policies.d").mkdir(parents=True)
    (r / "pepc.yaml").write_text("default_action: BLOCK\n")
    (r / "policies.d" / "00-objects.yaml").write_text(OBJECTS)
    (r / "policies.d" / "10-web.yaml").write_text(REV1)
    git(r, "init", "-q", "-b", "main")
    git(r, "add", ".")
    git(r, "commit", "-qm", "one")
    (r / "policies.d" / "10-web.yaml").write_text(REV2)
    git(r, "commit", "-qam", "two")
    return r


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def load_dir(path: Path) -> Policy:
    from pepc.loader import load_policy

    return load_policy(str(path))


def test_revisions_report_exactly_the_regions_of_the_trees(capsys, repo, monkeypatch, tmp_path):
    monkeypatch.chdir(repo)
    rc, out, _ = run(capsys, "diff", "HEAD~1:policies.d", "HEAD:policies.d", "--format", "json", "--level", "rule", "--now", "2026-06-01T00:00:00Z")
    assert rc == 0
    doc = json.loads(out)
    # the same trees checked out by hand, diffed directly
    for rev, name in (("HEAD~1", "a"), ("HEAD", "b")):
        d = tmp_path / name / "policies.d"
        d.mkdir(parents=True)
        for f in ("00-objects.yaml", "10-web.yaml"):
            (d / f).write_text(git(repo, "show", f"{rev}:policies.d/{f}"))
    want = diff_policies(load_dir(tmp_path / "a" / "policies.d"), Action.BLOCK, load_dir(tmp_path / "b" / "policies.d"), Action.BLOCK, NOW)
    assert [tuple(r["box"]) for r in doc["regions"]] == [r.box for r in want.regions]
    assert doc["old"]["default_action"] == "BLOCK"  # from pepc.yaml as of the revision
    assert doc["old"]["commit"] == git(repo, "rev-parse", "HEAD~1").strip()
    kinds = {(r["kind"], r["old"]["rule"], r["new"]["rule"]) for r in doc["regions"]}
    assert kinds == {
        ("verdict", "log_smtp", "log_smtp"),  # LOG_ONLY -> BLOCK
        ("verdict", None, "web_public"),  # port 8080: default BLOCK -> ALLOW
        ("verdict", "ssh_office", None),  # removed: ALLOW -> default BLOCK
        ("verdict", None, "icmp_office"),
    }
    assert {(r["id"], r["change"]) for r in doc["rules"]} == {
        ("icmp_office", "added"), ("ssh_office", "removed"), ("log_smtp", "changed"), ("web_public", "changed"),
    }
    where = {r["old"]["rule"]: r["old"]["where"] for r in doc["regions"] if r["old"]["rule"]}
    assert where["ssh_office"] == "HEAD~1:policies.d/10-web.yaml:6"


def test_exit_code_only_when_verdicts_change(capsys, repo, monkeypatch):
    monkeypatch.chdir(repo)
    assert run(capsys, "diff", "HEAD~1", "HEAD", "--exit-code")[0] == 1
    assert run(capsys, "diff", "HEAD~1", "HEAD")[0] == 0
    assert run(capsys, "diff", "HEAD", "policies.d", "--exit-code")[0] == 0
    # a change of the deciding rule only: a rule renamed
    (repo / "policies.d" / "10-web.yaml").write_text(REV2.replace("icmp_office", "icmp_from_office"))
    rc, out, _ = run(capsys, "diff", "policies.d", "--exit-code", "--format", "json", "--level", "rule")
    doc = json.loads(out)
    assert rc == 0 and doc["summary"] == {**doc["summary"], "verdict": 0, "action": 0, "rule": 1}
    rc, out, _ = run(capsys, "diff", "policies.d")
    assert "only the deciding rule changes" in out


def test_max_regions_cuts_the_listing_not_the_json(capsys, repo, monkeypatch):
    monkeypatch.chdir(repo)
    rc, out, _ = run(capsys, "diff", "HEAD~1", "HEAD", "--max-regions", "1")
    assert rc == 0 and out.count("witness:") == 1 and "(3 more regions not listed" in out
    rc, out, _ = run(capsys, "diff", "HEAD~1", "HEAD", "--max-regions", "1", "--format", "markdown")
    assert out.count("\n| **") == 1 and "3 more regions not listed" in out
    rc, out, _ = run(capsys, "diff", "HEAD~1", "HEAD", "--max-regions", "1", "--format", "json")
    assert len(json.loads(out)["regions"]) == 4
    rc, out, _ = run(capsys, "diff", "HEAD~1", "HEAD", "--max-regions", "0")
    assert out.count("witness:") == 4 and "not listed" not in out
    with pytest.raises(SystemExit) as e:
        main(["diff", "HEAD~1", "HEAD", "--max-regions", "-1"])
    assert e.value.code == 2 and "--max-regions" in capsys.readouterr().err


def test_markdown_report(capsys, repo, monkeypatch, snapshot):
    monkeypatch.chdir(repo)
    rc, out, _ = run(capsys, "diff", "HEAD~1", "HEAD", "--format", "markdown", "--now", "2026-06-01T00:00:00Z")
    assert rc == 0
    assert out == snapshot


def test_text_report(capsys, repo, monkeypatch, snapshot):
    monkeypatch.chdir(repo / "policies.d")  # ./ forms are relative to the working directory, as in git
    rc, out, _ = run(capsys, "diff", "HEAD~1:./", ".", "--now", "2026-06-01T00:00:00Z")
    assert rc == 0
    assert out == snapshot


def test_directories_and_a_changed_default(capsys, tmp_path):
    for name, default in (("a", "ALLOW"), ("b", "BLOCK")):
        (tmp_path / name / "policies.d").mkdir(parents=True)
        (tmp_path / name / "pepc.yaml").write_text(f"default_action: {default}\n")
        (tmp_path / name / "policies.d" / "p.yaml").write_text(
            "policies:\n  - id: web\n    action: ALLOW\n    dst: {ip: 10.0.0.0/8, port: 443, protocol: TCP}\n"
        )
    rc, out, _ = run(capsys, "diff", str(tmp_path / "a" / "policies.d"), str(tmp_path / "b" / "policies.d"), "--format", "json")
    doc = json.loads(out)
    assert rc == 0 and doc["summary"]["verdict"] >= 1 and doc["rules"] == []
    assert all(r["old"]["action"] == "DEFAULT" and r["new"]["action"] == "DEFAULT" for r in doc["regions"])


def test_revision_outside_git_is_a_located_error(capsys, tmp_path, monkeypatch):
    (tmp_path / "policies.d").mkdir()
    (tmp_path / "policies.d" / "p.yaml").write_text("policies: []\n")
    monkeypatch.chdir(tmp_path)
    rc, _, err = run(capsys, "diff", "HEAD~1:policies.d", "policies.d")
    assert rc == 2
    assert "<OLD>:1:1: error:" in err and "not inside a git repository" in err and "[bad-revision]" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (("diff", "HEAD~7:policies.d", "policies.d"), "unknown revision 'HEAD~7'"),
        (("diff", "HEAD:nowhere", "policies.d"), "HEAD:nowhere does not exist"),
        (("diff", "HEAD:pepc.yaml", "policies.d"), "is a file, not a directory"),
        (("diff", "no-such-dir", "policies.d"), "neither a directory nor a git revision"),
        (("diff", "HEAD:policies.d", "HEAD:../outside"), "outside the repository"),
    ],
)
def test_bad_revisions(capsys, repo, monkeypatch, argv, message):
    monkeypatch.chdir(repo)
    rc, _, err = run(capsys, *argv)
    assert rc == 2 and message in err


def test_errors_in_an_old_revision_point_at_it(capsys, repo, monkeypatch):
    monkeypatch.chdir(repo)
    (repo / "policies.d" / "10-web.yaml").write_text("policies:\n  - id: x\n    action: ALOW\n")
    git(repo, "commit", "-qam", "broken")
    (repo / "policies.d" / "10-web.yaml").write_text(REV2)
    rc, _, err = run(capsys, "diff", "HEAD:policies.d", "policies.d")
    assert rc == 2
    assert "HEAD:policies.d/10-web.yaml:3:" in err
    assert "pepc-rev-" not in err  # never the temporary directory


def test_the_temporary_tree_is_removed(capsys, repo, monkeypatch, tmp_path):
    import tempfile

    monkeypatch.chdir(repo)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    assert run(capsys, "diff", "HEAD~1", "HEAD")[0] == 0
    assert list((tmp_path / "tmp").iterdir()) == []


def test_help_lists_diff(capsys):
    with pytest.raises(SystemExit):
        main(["diff", "--help"])
    out = capsys.readouterr().out
    assert "REV:PATH" in out and "--exit-code" in out and textwrap.dedent(out)


# --- the same oracle through the command, on two commits of a repository ------------


def rule_doc_of(r) -> dict:
    def ip(ps):
        items = ["any" if p.plen == 0 else str(p) for p in ps]
        return "any" if "any" in items else items

    def ports(rs):
        items = ["any" if p.is_any else (p.lo if p.is_single else f"{p.lo}-{p.hi}") for p in rs]
        return "any" if "any" in items else items

    d = {"id": r.id, "action": r.action.name, "priority": r.priority, "enabled": r.enabled,
         "src": {"ip": ip(r.src), "port": ports(r.sports)},
         "dst": {"ip": ip(r.dst), "port": ports(r.dports), "protocol": r.protocol.name}}
    if r.rate_limit_bps:
        d["rate_limit_bps"] = r.rate_limit_bps
    if r.expires_at is not None:
        d["expires_at"] = r.expires_at.isoformat().replace("+00:00", "Z")
    return d


@settings(max_examples=25, deadline=None)
@given(policies(), policies(), st.sampled_from([Action.ALLOW, Action.BLOCK]), st.sampled_from([Action.ALLOW, Action.BLOCK]))
def test_the_command_on_two_commits_reports_exactly_the_changed_cells(tmp_path_factory, old, new, old_default, new_default):
    import contextlib
    import io

    from pepc.loader import load_policy

    r = tmp_path_factory.mktemp("repo")
    (r / "policies.d").mkdir()
    git(r, "init", "-q")
    loaded = []
    for pol, default in ((old, old_default), (new, new_default)):
        (r / "pepc.yaml").write_text(f"default_action: {default.name}\n")
        (r / "policies.d" / "p.yaml").write_text(json.dumps({"policies": [rule_doc_of(x) for x in pol.rules]}))
        # the oracle decides on what the files say (`any` in a list absorbs its other items)
        loaded.append(load_policy(str(r / "policies.d")))
        git(r, "add", "-A")
        git(r, "commit", "-qm", "x", "--allow-empty")
    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(r)
    try:
        with contextlib.redirect_stdout(out):
            rc = main(["diff", "HEAD~1", "HEAD", "--format", "json", "--level", "rule", "--now", NOW.isoformat()])
    finally:
        os.chdir(cwd)
    assert rc == 0
    regions = json.loads(out.getvalue())["regions"]
    lo, ln = live(loaded[0]), live(loaded[1])
    for pkt in cells(lo + ln):
        o, n = naive_outcome(lo, pkt, old_default), naive_outcome(ln, pkt, new_default)
        inside = [x for x in regions if contains_point(tuple(x["box"]), point(pkt))]
        want = naive_kind(o, n)
        assert len(inside) == (0 if want is None else 1), (pkt, o, n, inside)
        if inside:
            (x,) = inside
            assert x["kind"] == want.label
            assert (x["old"]["rule"], x["new"]["rule"]) == (o[2], n[2])
            assert (x["old"]["verdict"], x["new"]["verdict"]) == (o[0], n[0])
