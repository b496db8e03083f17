"""Rendering findings: text for people, JSON for scripts, SARIF for code
scanning, GitHub workflow commands for PR annotations.

All renderers sort findings the same deterministic way and read the code
table in diagnostics.CODES for summaries and help.
"""

from __future__ import annotations

import json
import os
from pathlib import PurePath
from urllib.parse import quote

from pepc import __version__
from pepc.diagnostics import CODES, Finding, Severity
from pepc.model import Location

FORMATS = ("text", "json", "sarif", "github")

#: Where SARIF viewers link the tool name. pepc has no public home yet; a
#: reserved .invalid address says so honestly instead of inventing one.
INFORMATION_URI = "https://pepc.invalid/"

SARIF_SCHEMA_URI = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"


def render_findings(findings: list[Finding], fmt: str, *, summary: dict | None = None) -> str:
    """Render `findings` in `fmt` (text, json, sarif, github).

    `summary` may carry `files`, `rules` and `ok` from the caller; counts
    per severity are computed here. Without `ok`, ok means "no errors".
    `computed_without` lists the files that failed to load when the rule
    anomalies were computed without them: every format says so.
    """
    ordered = sorted(findings, key=Finding.sort_key)
    summ = _summary(ordered, summary)
    if fmt == "text":
        return _text(ordered, summ)
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


# --- text ------------------------------------------------------------------------

_CONTROL = {i: f"\\x{i:02x}" for i in range(32)} | {0x7F: "\\x7f", ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}


def _clean(text: str) -> str:
    """No policy text may move the cursor or forge an output line."""
    return text.translate(_CONTROL)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _text(findings: list[Finding], summ: dict) -> str:
    lines = []
    for f in findings:
        lines.append(f"{_clean(str(f.loc))}: {f.severity.label}: {_clean(f.message)} [{f.code}]")
        if f.help:
            lines.append(f"  = help: {_clean(f.help)}")
        for r in f.related:
            lines.append(f"  = note: related at {_clean(str(r.loc))}: {_clean(r.message)}")
        if f.witness:
            lines.append(f"  = witness: {_clean(f.witness)}")
    counts = ", ".join(
        [_plural(summ["errors"], "error"), _plural(summ["warnings"], "warning"), _plural(summ["infos"], "info")]
    )
    where = ""
    if "files" in summ:
        where = f" in {_plural(summ['files'], 'file')}"
        if "rules" in summ:
            where += f" ({_plural(summ['rules'], 'rule')})"
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
        "related": [{"message": r.message, **_loc_fields(r.loc)} for r in f.related],
        "help": f.help or None,
        "witness": f.witness,
    }


def _json(findings: list[Finding], summ: dict) -> str:
    ok = summ.pop("ok")
    doc = {"ok": ok, "findings": [finding_dict(f) for f in findings], "summary": summ}
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
            result["relatedLocations"] = [
                {"id": i, **_physical(r.loc), "message": {"text": r.message}} for i, r in enumerate(f.related)
            ]
        if f.rule is not None:
            result["properties"] = {"policyRule": f.rule}
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
