"""Renderers: JSON shape, SARIF 2.1.0 validity, GitHub escaping, text layout."""

from __future__ import annotations

import json

import jsonschema
import pytest

from pepc.policy.diagnostics import CODES, Finding, Related, Severity
from pepc.policy.model import Location
from pepc.report.findings import gh_escape_data, gh_escape_property, render_findings
from pepc.policy.resources import SCHEMA_DIR

FINDINGS = [
    Finding(
        "duplicate-id",
        "rule id 'web' is used twice",
        Location("policies.d/b.yaml", 4, 9),
        rule="web",
        related=(Related("first rule 'web'", Location("policies.d/a.yaml", 2, 9)),),
    ),
    Finding("expired", "rule 'old' expired at 2024-01-01T00:00:00Z", Location("policies.d/a.yaml", 9, 17), rule="old"),
    Finding(
        "conflict",
        "rules 'x' and 'y' overlap",
        Location("policies.d/a.yaml", 5, 5),
        rule="x",
        witness="tcp 10.0.0.1:1234 > 10.0.0.2:80",
    ),
    Finding("file-too-large", "the file is 9 bytes, over the limit", Location("policies.d/big.yaml")),
    Finding("disabled", "rule 'z' is disabled", Location("/abs/elsewhere/p.yaml", 1, 1), severity=Severity.WARNING),
]


def test_json_shape():
    doc = json.loads(render_findings(FINDINGS, "json", summary={"files": 3, "rules": 7}))
    assert set(doc) == {"ok", "findings", "groups", "summary"}
    assert doc["ok"] is False  # there are errors
    keys = {"severity", "code", "message", "file", "line", "column", "rule", "related", "help", "witness"}
    assert all(set(f) == keys for f in doc["findings"])
    first = doc["findings"][0]
    assert (first["file"], first["line"], first["column"]) == ("/abs/elsewhere/p.yaml", 1, 1)
    dup = next(f for f in doc["findings"] if f["code"] == "duplicate-id")
    assert dup["related"] == [{"message": "first rule 'web'", "file": "policies.d/a.yaml", "line": 2, "column": 9, "rule": None}]
    assert dup["severity"] == "error" and dup["rule"] == "web" and dup["help"]
    big = next(f for f in doc["findings"] if f["code"] == "file-too-large")
    assert big["line"] is None and big["column"] is None
    assert doc["summary"] == {"errors": 2, "warnings": 2, "infos": 1, "files": 3, "rules": 7}


def test_json_ok_follows_the_caller():
    assert json.loads(render_findings(FINDINGS[1:2], "json"))["ok"] is True
    assert json.loads(render_findings(FINDINGS[1:2], "json", summary={"ok": False}))["ok"] is False


def _sarif_validator():
    schema = json.loads((SCHEMA_DIR / "sarif-2.1.0.schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@pytest.mark.parametrize("findings", [FINDINGS, []])
def test_sarif_validates(findings):
    log = json.loads(render_findings(findings, "sarif"))
    errors = list(_sarif_validator().iter_errors(log))
    assert not errors, [e.message for e in errors]
    assert log["version"] == "2.1.0"
    run = log["runs"][0]
    assert run["tool"]["driver"]["name"] == "pepc"
    assert len(run["results"]) == len(findings)


def test_sarif_content():
    run = json.loads(render_findings(FINDINGS, "sarif"))["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == sorted({f.code for f in FINDINGS})
    for r in rules:
        assert r["shortDescription"]["text"] == CODES[r["id"]].summary
    levels = {r["ruleId"]: r["level"] for r in run["results"]}
    assert levels == {
        "duplicate-id": "error",
        "expired": "note",
        "conflict": "warning",
        "file-too-large": "error",
        "disabled": "warning",
    }
    dup = next(r for r in run["results"] if r["ruleId"] == "duplicate-id")
    loc = dup["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"]["uri"] == "policies.d/b.yaml"
    assert loc["region"] == {"startLine": 4, "startColumn": 9}
    assert dup["relatedLocations"][0]["physicalLocation"]["region"]["startLine"] == 2
    assert rules[dup["ruleIndex"]]["id"] == "duplicate-id"
    big = next(r for r in run["results"] if r["ruleId"] == "file-too-large")
    assert "region" not in big["locations"][0]["physicalLocation"]
    far = next(r for r in run["results"] if r["ruleId"] == "disabled")
    assert far["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].startswith("file:///abs/")


def test_github_escaping():
    assert gh_escape_data("50% a\r\nb") == "50%25 a%0D%0Ab"
    assert gh_escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"


def test_github_commands():
    hostile = Finding(
        "schema",
        "bad value\n::error::forged, 100%",
        Location("dir,x/a:b.yaml", 3, 4),
    )
    out = render_findings([hostile, FINDINGS[1], FINDINGS[3]], "github")
    lines = out.splitlines()
    assert len(lines) == 3  # no policy text can start a line of its own
    assert lines[0].startswith("::error file=dir%2Cx/a%3Ab.yaml,line=3,col=4,title=pepc schema::bad value%0A::error::forged, 100%25")
    assert lines[1].startswith("::notice file=policies.d/a.yaml,line=9,col=17,title=pepc expired::")
    assert lines[2].startswith("::error file=policies.d/big.yaml,title=pepc file-too-large::")


def test_text_snapshot(snapshot):
    assert render_findings(FINDINGS, "text", summary={"files": 3, "rules": 7}) == snapshot


def test_text_escapes_control_characters():
    f = Finding("schema", "id 'a\nb\x1b[31m'", Location("p.yaml", 1, 1))
    out = render_findings([f], "text")
    assert "\x1b" not in out and out.count("\n") == 2  # the finding and the summary, nothing forged


def test_text_is_sorted_and_counts():
    out = render_findings(list(reversed(FINDINGS)), "text")
    assert out == render_findings(FINDINGS, "text")
    assert out.rstrip().endswith("2 errors, 2 warnings, 1 info")


def test_unknown_format():
    with pytest.raises(ValueError):
        render_findings([], "xml")


# --- groups, the cap, related rules -------------------------------------------------

from pepc.policy.diagnostics import Related  # noqa: E402
from pepc.report.findings import group_findings  # noqa: E402


def _shadowed(rid: str, line: int, by: tuple[str, ...]) -> Finding:
    related = tuple(Related(f"`{b}` wins packets of `{rid}`", Location("p/feed.yaml", 1 + i, 5), b) for i, b in enumerate(by))
    return Finding("shadowed", f"rule `{rid}` can never win", Location("p/a.yaml", line, 5), rule=rid, related=related,
                   witness="tcp 198.51.100.7:40000 > 203.0.113.10:443")


def _block_list(n: int) -> list[Finding]:
    """n rules under one /16, 3 under another pair of rules, one alone."""
    out = [_shadowed(f"b{i:04d}", 10 + i, ("net16",)) for i in range(n)]
    out += [_shadowed(f"c{i}", 5000 + i, ("x", "y")) for i in range(3)]
    out += [_shadowed("d", 6000, ("y", "x"))]  # the same causes, named in another order: same group
    out.append(Finding("never-matches", "rule `e` can never match", Location("p/a.yaml", 7000, 5), rule="e"))
    out.append(Finding("never-matches", "rule `f` can never match", Location("p/a.yaml", 7001, 5), rule="f"))
    return out


def test_findings_of_one_code_with_the_same_causes_are_one_group():
    findings = sorted(_block_list(200), key=Finding.sort_key)
    groups = group_findings(findings)
    sizes = sorted((g.code, g.related, len(g.members)) for g in groups)
    # never-matches names no causing rule: each stands alone
    assert sizes == [("never-matches", (), 1), ("never-matches", (), 1), ("shadowed", ("net16",), 200), ("shadowed", ("x", "y"), 4)]
    assert [f for g in groups for f in g.members] != [] and sum(len(g.members) for g in groups) == len(findings)
    text = render_findings(findings, "text")
    lines = text.splitlines()
    assert lines[0].startswith("summary: 206 errors, 0 warnings, 0 infos: shadowed 204, never-matches 2")
    assert "206 findings in 4 entries" in lines[1]
    entry = next(line for line in lines if "[shadowed]" in line and "200 rules" in line)
    assert entry.startswith("p/a.yaml:10:5: error: 200 rules like this (first `b0000`): rule `b0000` can never win")
    assert "  = note: the 200 rules: `b0000`, `b0001`, `b0002`, `b0003`, `b0004`, `b0005`, `b0006`, `b0007` and 192 more" in lines
    assert text.count("[shadowed]") == 2 and text.count("[never-matches]") == 2
    assert lines[-1] == "206 errors, 0 warnings, 0 infos"


def test_json_and_sarif_keep_every_member_of_a_group():
    findings = _block_list(30)
    doc = json.loads(render_findings(findings, "json"))
    assert len(doc["findings"]) == len(findings)
    big = next(g for g in doc["groups"] if g["count"] == 30)
    assert big["code"] == "shadowed" and big["related_rules"] == ["net16"] and len(big["rules"]) == 30
    assert {doc["findings"][i]["rule"] for i in big["findings"]} == set(big["rules"])
    assert all(g["count"] > 1 for g in doc["groups"])  # a finding alone is no group
    sarif = json.loads(render_findings(findings, "sarif"))
    results = sarif["runs"][0]["results"]
    assert len(results) == len(findings)
    grouped = [r["properties"].get("findingGroup") for r in results]
    assert grouped.count(grouped[0]) == 30 and grouped[0] is not None
    assert "findingGroup" not in next(r for r in results if r["ruleId"] == "never-matches")["properties"]


def test_max_findings_caps_the_text_and_says_how_many_are_left_out():
    findings = [_shadowed(f"r{i:03d}", 10 + i, (f"cover{i}",)) for i in range(120)]  # 120 groups of one
    text = render_findings(findings, "text", max_findings=50)
    assert text.count("[shadowed]") == 50
    assert "showing the first 50 entries" in text.splitlines()[1]
    assert "... 70 more entries (70 findings) not shown; --max-findings 0 shows all" in text
    assert render_findings(findings, "text", max_findings=0).count("[shadowed]") == 120
    assert render_findings(findings, "text").count("[shadowed]") == 120  # the renderer's default: all
    small = render_findings(findings[:3], "text", max_findings=50)
    assert not small.startswith("summary:")  # a short report needs no summary on top


def test_related_entries_carry_the_rule_id():
    f = _shadowed("a", 3, ("x", "y"))
    doc = json.loads(render_findings([f], "json"))
    assert [r["rule"] for r in doc["findings"][0]["related"]] == ["x", "y"]
    sarif = json.loads(render_findings([f], "sarif"))
    rel = sarif["runs"][0]["results"][0]["relatedLocations"]
    assert [r["properties"]["policyRule"] for r in rel] == ["x", "y"]
    assert "`x`" in rel[0]["message"]["text"]
