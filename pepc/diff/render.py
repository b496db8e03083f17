"""`pepc diff` reports: text for a terminal, JSON for tools, Markdown for a PR comment.

Pure: a PolicyDiff and how each side names its files in, a string out.
Deterministic (sorted, no times), so reports can be snapshot-tested.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from pepc.checker.geometry import (
    ADDR_MAX, ICMP, ICMPV6, ICMPV6_GUARD, OTHER, PORT_MAX, TCP_FRAG, TCP_PORTS, UDP_FRAG, UDP_PORTS, V4_MAX, Box,
)
from pepc.policy.model import V6_BASE
from pepc.policy.model import Location, Rule
from pepc.diff.semantic import Kind, Outcome, PolicyDiff, Region, RuleChange
from pepc.policy.sources import relative_file

#: More prefixes than this for one address range are shown as `first-last`.
_MAX_PREFIXES = 4


@dataclass(frozen=True)
class Side:
    """How one side is named: its label, and where its files are shown."""

    label: str
    root: str
    shown: Callable[[str], str]
    commit: str | None = None

    def where(self, loc: Location) -> str:
        f = self.shown(loc.file)
        if f == loc.file:
            f = relative_file(loc.file, self.root)
            f = f"{self.label.rstrip('/')}/{f}" if self.label not in ("", ".") else f
        return f"{f}:{loc.line}" if loc.line else f


# --- fields of a region --------------------------------------------------------


def protocol_text(lo: int, hi: int, v6: bool = False) -> str:
    cls = set(range(lo, hi + 1))
    fam = "ipv6 " if v6 else ""
    if set(range(0, ICMPV6 + 1)) <= cls:
        return fam + "any" + (" (with the guarded icmpv6 types)" if ICMPV6_GUARD in cls else "")
    parts = []
    # with ports (fragments or not) it reads as the protocol; fragments
    # alone are said so
    if TCP_PORTS in cls:
        parts.append("tcp")
    elif TCP_FRAG in cls:
        parts.append("tcp fragments")
    if UDP_PORTS in cls:
        parts.append("udp")
    elif UDP_FRAG in cls:
        parts.append("udp fragments")
    if ICMP in cls:
        parts.append("icmp")
    if OTHER in cls:
        parts.append("other protocols")
    if ICMPV6 in cls:
        parts.append("icmpv6" if v6 else "proto 58")
    if ICMPV6_GUARD in cls:
        parts.append("icmpv6 guarded types (neighbour discovery, MLD, packet too big)")
    return fam + ", ".join(parts)


def addr_items(lo: int, hi: int) -> list[str]:
    """An address range of the unified line (IPv4 below 2^32, IPv6 from
    V6_BASE) as prefixes, or `first-last` when it takes many."""
    if (lo, hi) in ((0, V4_MAX), (V6_BASE, ADDR_MAX)):
        return ["any"]
    first: ipaddress.IPv4Address | ipaddress.IPv6Address
    if lo >= V6_BASE:
        first, last = ipaddress.IPv6Address(lo - V6_BASE), ipaddress.IPv6Address(hi - V6_BASE)
    else:
        first, last = ipaddress.IPv4Address(lo), ipaddress.IPv4Address(hi)
    nets = list(ipaddress.summarize_address_range(first, last))
    if len(nets) > _MAX_PREFIXES:
        return [f"{first}-{last}"]
    return [str(n) for n in nets]


def port_text(lo: int, hi: int) -> str:
    if lo == 0 and hi == PORT_MAX:
        return "any"
    return str(lo) if lo == hi else f"{lo}-{hi}"


def region_fields(b: Box) -> dict[str, str]:
    ports = b[0] >= TCP_PORTS and b[1] <= UDP_PORTS  # only classes that carry ports
    return {
        "protocol": protocol_text(b[0], b[1], b[2] >= V6_BASE),
        "src": ", ".join(addr_items(b[2], b[3])),
        "dst": ", ".join(addr_items(b[4], b[5])),
        "sport": port_text(b[6], b[7]) if ports else "any",
        "dport": port_text(b[8], b[9]) if ports else "any",
    }


def match_text(b: Box) -> str:
    f = region_fields(b)
    out = [f["protocol"], f"src {f['src']}"]
    if f["sport"] != "any":
        out.append(f"sport {f['sport']}")
    out.append(f"dst {f['dst']}")
    if f["dport"] != "any":
        out.append(f"dport {f['dport']}")
    return " ".join(out[:1]) + " " + ", ".join(out[1:])


def outcome_text(o: Outcome, side: Side) -> str:
    if o.rule is None:
        return o.action_text
    return f"{o.action_text} by {o.rule.id} ({side.where(o.rule.loc)})"


def _outcome_json(o: Outcome, side: Side) -> dict:
    return {
        "action": o.action.name if o.rule is not None else "DEFAULT",
        "effective_action": o.action.name,
        "verdict": o.verdict,
        "rule": o.rule_id,
        "rate_limit_bps": o.rule.rate_limit_bps if o.rule is not None and o.rule.rate_limit_bps else None,
        "where": side.where(o.rule.loc) if o.rule is not None else None,
    }


# --- rule changes -----------------------------------------------------------------


def _value(rule: Rule, name: str) -> str:
    v = getattr(rule, name)
    if isinstance(v, tuple):
        if name == "labels":
            return ", ".join(f"{k}={x}" for k, x in v) or "-"
        return ", ".join(str(x) for x in v) or "-"
    if isinstance(v, datetime):
        return v.isoformat().replace("+00:00", "Z")
    if hasattr(v, "name"):
        return v.name
    if v is None or v == "":
        return "-"
    return str(v)


_FIELD_NAMES = {"src": "src.ip", "dst": "dst.ip", "sports": "src.port", "dports": "dst.port"}


def change_items(c: RuleChange) -> list[tuple[str, str, str]]:
    assert c.old is not None and c.new is not None
    return [(_FIELD_NAMES.get(n, n), _value(c.old, n), _value(c.new, n)) for n in c.fields]


def rule_lines(d: PolicyDiff, old: Side, new: Side, item: Callable[[str, str, str], str]) -> list[tuple[RuleChange, str, str]]:
    """(change, what, where) per rule change: an added or removed rule's
    action and priority, a changed one's fields through `item`."""
    out = []
    for c in d.rules:
        if c.change == "changed":
            assert c.new is not None
            out.append((c, "; ".join(item(n, a, b) for n, a, b in change_items(c)), new.where(c.new.loc)))
        else:
            r, side = (c.new, new) if c.change == "added" else (c.old, old)
            assert r is not None
            out.append((c, f"{r.action.name}, priority {r.priority}", side.where(r.loc)))
    return out


# --- renderers ---------------------------------------------------------------------


def _summary(d: PolicyDiff) -> str:
    v, a, r = d.count(Kind.VERDICT), d.count(Kind.ACTION), d.count(Kind.RULE)
    added = sum(1 for c in d.rules if c.change == "added")
    removed = sum(1 for c in d.rules if c.change == "removed")
    changed = sum(1 for c in d.rules if c.change == "changed")
    return (
        f"{v} region{'s' * (v != 1)} change verdict, {a} change action only, {r} change the deciding rule only; "
        f"rules: {added} added, {removed} removed, {changed} changed"
    )


def _kind_text(r: Region) -> str:
    if r.kind is Kind.VERDICT:
        return f"verdict {r.old.verdict} -> {r.new.verdict}"
    if r.kind is Kind.ACTION:
        return f"action ({r.old.verdict})"
    return "rule"


#: regions listed by the text and markdown reports unless --max-regions says otherwise
DEFAULT_MAX_REGIONS = 50


def listing(d: PolicyDiff, level: Kind, limit: int | None) -> tuple[tuple[Region, ...], list[str]]:
    """The regions a report lists (at most `limit`; 0 or None: all) and the
    notes on what it leaves out."""
    at = d.shown(level)
    listed = at[:limit] if limit else at
    notes = []
    if len(at) > len(listed):
        n = len(at) - len(listed)
        notes.append(f"{n} more region{'s' * (n != 1)} not listed (--max-regions 0 lists all; --format json has every one)")
    below = len(d.regions) - len(at)
    if below:
        what = "only the deciding rule" if level is Kind.ACTION else "only the action or the deciding rule"
        notes.append(f"{below} region{'s' * (below != 1)} where {what} changes not listed (--level rule lists them)")
    return listed, notes


def render_text(d: PolicyDiff, old: Side, new: Side, level: Kind, limit: int | None = DEFAULT_MAX_REGIONS) -> str:
    out = [f"pepc diff: {old.label} -> {new.label}", f"  {_summary(d)}"]
    shown, notes = listing(d, level, limit)
    for r in shown:
        out.append("")
        out.append(f"{_kind_text(r)}: {match_text(r.box)}")
        out.append(f"    old: {outcome_text(r.old, old)}")
        out.append(f"    new: {outcome_text(r.new, new)}")
        out.append(f"    witness: {r.witness}")
    for note in notes:
        out.append("")
        out.append(f"({note})")
    if d.rules:
        out.append("")
        out.append("rules:")
        sign = {"added": "+", "removed": "-", "changed": "~"}
        for c, what, where in rule_lines(d, old, new, lambda n, a, b: f"{n}: {a} -> {b}"):
            out.append(f"  {sign[c.change]} {c.id}  {what}  ({where})")
    if not d.regions and not d.rules:
        out.append("  no differences")
    return "\n".join(out) + "\n"


def to_json(d: PolicyDiff, old: Side, new: Side, level: Kind) -> dict:
    def side(s: Side, default) -> dict:
        return {"source": s.label, "commit": s.commit, "default_action": default.name}

    return {
        "old": side(old, d.old_default),
        "new": side(new, d.new_default),
        "summary": {
            "verdict": d.count(Kind.VERDICT),
            "action": d.count(Kind.ACTION),
            "rule": d.count(Kind.RULE),
            "rules_added": sum(1 for c in d.rules if c.change == "added"),
            "rules_removed": sum(1 for c in d.rules if c.change == "removed"),
            "rules_changed": sum(1 for c in d.rules if c.change == "changed"),
        },
        "level": level.label,
        "regions": [
            {
                "kind": r.kind.label,
                **region_fields(r.box),
                "box": list(r.box),
                "old": _outcome_json(r.old, old),
                "new": _outcome_json(r.new, new),
                "witness": str(r.witness),
            }
            for r in d.shown(level)
        ],
        "rules": [
            {
                "id": c.id,
                "change": c.change,
                "old": old.where(c.old.loc) if c.old else None,
                "new": new.where(c.new.loc) if c.new else None,
                **({"fields": {n: [a, b] for n, a, b in change_items(c)}} if c.change == "changed" else {}),
            }
            for c in d.rules
        ],
    }


def render_json(d: PolicyDiff, old: Side, new: Side, level: Kind, limit: int | None = None) -> str:
    """Every region at `level` (a tool reads them all; `limit` is for people)."""
    return json.dumps(to_json(d, old, new, level), indent=2) + "\n"


def _md(text: str) -> str:
    """Table cell text: no pipes or newlines, code-spans for values."""
    return text.replace("|", "\\|").replace("\n", " ")


def _md_outcome(o: Outcome, side: Side) -> str:
    if o.rule is None:
        return f"**{o.action_text}**"
    return f"**{o.action_text}** `{_md(o.rule.id)}` ({_md(side.where(o.rule.loc))})"


def render_markdown(d: PolicyDiff, old: Side, new: Side, level: Kind, limit: int | None = DEFAULT_MAX_REGIONS) -> str:
    """A PR comment: a summary line, a table of regions (the first `limit`:
    a comment has a size limit), the rule changes."""
    out = [f"### pepc diff: `{_md(old.label)}` → `{_md(new.label)}`", ""]
    v = d.count(Kind.VERDICT)
    icon = ":warning:" if v else ":white_check_mark:"
    out.append(f"{icon} {_summary(d)}")
    shown, notes = listing(d, level, limit)
    if shown:
        out += ["", "| change | protocol | src | sport | dst | dport | old | new | witness |", "|---|---|---|---|---|---|---|---|---|"]
        for r in shown:
            f = region_fields(r.box)
            change = f"**{r.old.verdict} → {r.new.verdict}**" if r.kind is Kind.VERDICT else r.kind.label
            out.append(
                "| " + " | ".join(
                    [change, f["protocol"], f"`{f['src']}`", f["sport"], f"`{f['dst']}`", f["dport"],
                     _md_outcome(r.old, old), _md_outcome(r.new, new), f"`{r.witness}`"]
                ) + " |"
            )
    for note in notes:
        out += ["", f"_{_md(note)}._"]
    if d.rules:
        out += ["", "<details><summary>Rules changed</summary>", ""]
        for c, what, where in rule_lines(d, old, new, lambda n, a, b: f"{n}: `{_md(a)}` → `{_md(b)}`"):
            out.append(f"- {c.change} `{_md(c.id)}`: {what} ({_md(where)})")
        out += ["", "</details>"]
    return "\n".join(out) + "\n"


RENDERERS = {"text": render_text, "json": render_json, "markdown": render_markdown}
