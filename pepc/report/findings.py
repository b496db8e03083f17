"""Rendering findings: text for people, JSON for scripts, SARIF for code
scanning, GitHub workflow commands for PR annotations.

All renderers sort findings the same deterministic way and read the code
table in diagnostics.CODES for summaries and help.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import PurePath
from urllib.parse import quote

from pepc import __version__
from pepc.policy.diagnostics import CODES, Finding, Severity
from pepc.policy.model import Location

FORMATS = ("text", "json", "sarif", "github")

#: Where SARIF viewers link the tool name. pepc has no public home yet; a
#: reserved .invalid address says so honestly instead of inventing one.
INFORMATION_URI = "https://pepc.invalid/"

SARIF_SCHEMA_URI = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"


#: `--max-findings` by default: entries (a group is one) the text shows.
DEFAULT_MAX_FINDINGS = 50
#: From this many findings on, the text starts with the summary.
SUMMARY_FIRST_AT = 10


def render_findings(
    findings: list[Finding], fmt: str, *, summary: dict | None = None, max_findings: int | None = None
) -> str:
    """Render `findings` in `fmt` (text, json, sarif, github).

    `summary` may carry `files`, `rules` and `ok` from the caller; counts
    per severity are computed here. Without `ok`, ok means "no errors".
    `computed_without` lists the files that failed to load when the rule
    anomalies were computed without them: every format says so.
    `max_findings`: how many entries the text shows (None or 0: all);
    the other formats always carry every finding.
    """
    ordered = sorted(findings, key=Finding.sort_key)
    summ = _summary(ordered, summary)
    if fmt == "text":
        return _text(ordered, summ, max_findings or None)
    if fmt == "json":
        return _json(ordered, summ)
    if fmt == "sarif":
        return _sarif(ordered, summ)
    if fmt == "github":
        return _github(ordered, summ)
    raise ValueError(f"unknown format {fmt!r}")


def _summary(findings: list[Finding], given: dict | None) -> dict:
    out = {
        "errors": sum(1 for f in findings if f.severity == Severity.ERROR),
        "warnings": sum(1 for f in findings if f.severity == Severity.WARNING),
        "infos": sum(1 for f in findings if f.severity == Severity.INFO),
    }
    given = dict(given or {})
    ok = given.pop("ok", None)
    out.update(given)
    out["ok"] = (out["errors"] == 0) if ok is None else bool(ok)
    return out


# --- groups ----------------------------------------------------------------------

#: Codes whose findings are grouped even without related rules (a redundant
#: rule whose packets would all go to the default action).
_GROUP_WITHOUT_RELATED = frozenset({"redundant"})


@dataclass(frozen=True)
class Group:
    """Findings of one code caused by the same rules: members sorted, the
    first one stands for all in the text."""

    code: str
    related: tuple[str, ...]  # the causing rules' ids, sorted
    members: tuple[Finding, ...]

    @property
    def first(self) -> Finding:
        return self.members[0]

    @property
    def rules(self) -> list[str]:
        return [f.rule for f in self.members if f.rule is not None]


def group_key(f: Finding) -> tuple | None:
    """What makes findings one group: the code, the severity and the
    related rules; None: the finding stands alone (not about a rule, or
    caused by nothing a rule names)."""
    if f.rule is None:
        return None
    related = tuple(sorted({r.rule for r in f.related if r.rule is not None}))
    if not related and f.code not in _GROUP_WITHOUT_RELATED:
        return None
    # a search cut short named some of the causes only: it groups apart
    cut = "cut short" in f.message or "there may be more" in f.message
    return (f.code, f.severity, related, cut, "the default action" in f.message)


def group_findings(findings: list[Finding]) -> list[Group]:
    """`findings` (sorted) as groups, in the order of their first members."""
    groups: dict[object, list[Finding]] = {}
    for i, f in enumerate(findings):
        key = group_key(f)
        groups.setdefault(key if key is not None else ("alone", i), []).append(f)
    return [Group(m[0].code, tuple(sorted({r.rule for r in m[0].related if r.rule})), tuple(m)) for m in groups.values()]


# --- text ------------------------------------------------------------------------

_CONTROL = {i: f"\\x{i:02x}" for i in range(32)} | {0x7F: "\\x7f", ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}


def _clean(text: str) -> str:
    """No policy text may move the cursor or forge an output line."""
    return text.translate(_CONTROL)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


#: Member rule ids a group's text names before "and N more".
_GROUP_NAMES = 8


def _text(findings: list[Finding], summ: dict, max_findings: int | None = None) -> str:
    lines = []
    groups = group_findings(findings)
    counts = ", ".join(
        [_plural(summ["errors"], "error"), _plural(summ["warnings"], "warning"), _plural(summ["infos"], "info")]
    )
    where = ""
    if "files" in summ:
        where = f" in {_plural(summ['files'], 'file')}"
        if "rules" in summ:
            where += f" ({_plural(summ['rules'], 'rule')})"
    shown = groups if max_findings is None else groups[:max_findings]
    if len(findings) >= SUMMARY_FIRST_AT or len(groups) < len(findings) or len(shown) < len(groups):
        by_code: dict[str, int] = {}
        for f in findings:
            by_code[f.code] = by_code.get(f.code, 0) + 1
        per_code = ", ".join(f"{code} {n}" for code, n in sorted(by_code.items(), key=lambda kv: (-kv[1], kv[0])))
        lines.append(f"summary: {counts}{where}: {per_code}")
        if len(groups) < len(findings):
            lines.append(f"  {len(findings)} findings in {len(groups)} entries: findings of one code with the same causing rules are one entry")
        if len(shown) < len(groups):
            lines.append(f"  showing the first {len(shown)} entries (--max-findings; every finding is in --format json/sarif)")
    for g in shown:
        f = g.first
        n = len(g.members)
        message = f.message
        if n > 1:
            message = f"{n} rules like this (first `{f.rule}`): {message}"
        lines.append(f"{_clean(str(f.loc))}: {f.severity.label}: {_clean(message)} [{f.code}]")
        if n > 1:
            names = ", ".join(f"`{r}`" for r in g.rules[:_GROUP_NAMES])
            if n > _GROUP_NAMES:
                names += f" and {n - _GROUP_NAMES} more"
            lines.append(f"  = note: the {n} rules: {_clean(names)}")
        if f.help:
            lines.append(f"  = help: {_clean(f.help)}")
        for r in f.related:
            lines.append(f"  = note: related at {_clean(str(r.loc))}: {_clean(r.message)}")
        if f.witness:
            lines.append(f"  = witness: {_clean(f.witness)}")
    if len(shown) < len(groups):
        hidden = sum(len(g.members) for g in groups[len(shown):])
        lines.append(f"... {len(groups) - len(shown)} more entries ({_plural(hidden, 'finding')}) not shown; --max-findings 0 shows all")
    lines.append(counts + where)
    if summ.get("computed_without"):
        lines.append(f"note: {_clean(without_note(summ['computed_without']))}")
    return "\n".join(lines) + "\n"


def without_note(files: list[str]) -> str:
    return (
        f"rule anomalies were computed without {_plural(len(files), 'file')} that cannot be loaded "
        f"({', '.join(files)}): fix the errors there for a complete check"
    )


# --- json ------------------------------------------------------------------------


def _loc_fields(loc) -> dict:
    return {"file": loc.file, "line": loc.line or None, "column": loc.column or None}


def finding_dict(f: Finding) -> dict:
    return {
        "severity": f.severity.label,
        "code": f.code,
        "message": f.message,
        **_loc_fields(f.loc),
        "rule": f.rule,
        "related": [{"message": r.message, **_loc_fields(r.loc), "rule": r.rule} for r in f.related],
        "help": f.help or None,
        "witness": f.witness,
    }


def _json(findings: list[Finding], summ: dict) -> str:
    ok = summ.pop("ok")
    index = {id(f): i for i, f in enumerate(findings)}
    groups = [
        {
            "code": g.code,
            "count": len(g.members),
            "rules": g.rules,
            "related_rules": list(g.related),
            "findings": [index[id(f)] for f in g.members],  # indexes into "findings"
        }
        for g in group_findings(findings)
        if len(g.members) > 1
    ]
    doc = {"ok": ok, "findings": [finding_dict(f) for f in findings], "groups": groups, "summary": summ}
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


# --- sarif -----------------------------------------------------------------------

_SARIF_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def _artifact_uri(file: str) -> str:
    """A URI reference for a location: relative (to the working directory,
    which is the repository root in CI) when possible, else a file: URI."""
    p = PurePath(file)
    if p.is_absolute():
        try:
            p = PurePath(os.path.relpath(file))
            if p.parts and p.parts[0] == "..":
                return PurePath(file).as_uri()
        except ValueError:
            return PurePath(file).as_uri()
    return quote(p.as_posix(), safe="/-._~")


def _physical(loc) -> dict:
    phys: dict = {"artifactLocation": {"uri": _artifact_uri(loc.file)}}
    if loc.line:
        phys["region"] = {"startLine": loc.line, "startColumn": max(loc.column, 1)}
    return {"physicalLocation": phys}


def _related_location(i: int, r) -> dict:
    loc = {"id": i, **_physical(r.loc), "message": {"text": r.message}}
    if r.rule is not None:
        loc["properties"] = {"policyRule": r.rule}  # the same key results use for their own rule
    return loc


def _sarif(findings: list[Finding], summ: dict) -> str:
    used = sorted({f.code for f in findings})
    index = {code: i for i, code in enumerate(used)}
    rules = []
    for code in used:
        info = CODES[code]
        rule = {
            "id": code,
            "name": "".join(part.capitalize() for part in code.split("-")),
            "shortDescription": {"text": info.summary},
            "defaultConfiguration": {"level": _SARIF_LEVEL[info.severity]},
        }
        if info.help:
            rule["help"] = {"text": info.help}
        rules.append(rule)
    group_of: dict[int, int] = {}
    for gi, g in enumerate(x for x in group_findings(findings) if len(x.members) > 1):
        for f in g.members:
            group_of[id(f)] = gi
    results = []
    for f in findings:
        text = f.message
        if f.help:
            text += f"\nhelp: {f.help}"
        if f.witness:
            text += f"\nwitness: {f.witness}"
        result = {
            "ruleId": f.code,
            "ruleIndex": index[f.code],
            "level": _SARIF_LEVEL[f.severity],
            "message": {"text": text},
            "locations": [_physical(f.loc)],
        }
        if f.related:
            result["relatedLocations"] = [_related_location(i, r) for i, r in enumerate(f.related)]
        if f.rule is not None:
            result["properties"] = {"policyRule": f.rule}
            if id(f) in group_of:
                # one code, the same causing rules: viewers may fold them
                result["properties"]["findingGroup"] = group_of[id(f)]
        results.append(result)
    log = {
        "$schema": SARIF_SCHEMA_URI,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "pepc",
                        "version": __version__,
                        "semanticVersion": __version__,
                        "informationUri": INFORMATION_URI,
                        "rules": rules,
                    }
                },
                "columnKind": "unicodeCodePoints",
                "results": results,
            }
        ],
    }
    without = summ.get("computed_without")
    if without:
        run = log["runs"][0]
        run["invocations"] = [
            {
                "executionSuccessful": True,
                "toolExecutionNotifications": [
                    {
                        "level": "warning",
                        "message": {"text": without_note(without)},
                        "locations": [_physical(Location(f)) for f in without],
                    }
                ],
            }
        ]
        run["properties"] = {"computedWithout": list(without)}
    return json.dumps(log, indent=2, ensure_ascii=False) + "\n"



# --- github ----------------------------------------------------------------------

_GH_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def gh_escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def gh_escape_property(text: str) -> str:
    return gh_escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _github(findings: list[Finding], summ: dict) -> str:
    lines = []
    for f in findings:
        props = [f"file={gh_escape_property(f.loc.file)}"]
        if f.loc.line:
            props.append(f"line={f.loc.line}")
            props.append(f"col={max(f.loc.column, 1)}")
        props.append(f"title={gh_escape_property(f'pepc {f.code}')}")
        message = f.message
        if f.help:
            message += f"\nhelp: {f.help}"
        for r in f.related:
            message += f"\nrelated: {r.loc}: {r.message}"
        if f.witness:
            message += f"\nwitness: {f.witness}"
        lines.append(f"::{_GH_LEVEL[f.severity]} {','.join(props)}::{gh_escape_data(message)}")
    if summ.get("computed_without"):
        lines.append(f"::warning title=pepc::{gh_escape_data(without_note(summ['computed_without']))}")
    return "\n".join(lines) + ("\n" if lines else "")
