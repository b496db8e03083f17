"""plan.json: the exact contents one data-plane generation will hold.

Deterministic by construction: keys sorted, map entries sorted by key
bytes, no timestamps, paths relative to the policy directory. Big tables
(rules, map entries) are written one row per line so that a one-rule change
is a few-line diff in review. Every map entry appears twice: as named
fields decoded through layout.py, and as the exact key/value bytes in hex.
"""

from __future__ import annotations

import ipaddress
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from pepc.compiler import layout
from pepc.compiler import pack, rule_stats
from pepc.policy.diagnostics import Finding, PolicyError
from pepc.policy.model import Location, Policy, Protocol
from pepc.compiler.program import Program
from pepc.policy.sources import relative_file

FORMAT = "pepc-plan/1"

#: u8 arrays that are digests: shown as hex strings among the named fields
_HEX_ARRAYS = {"policy_digest", "layout_digest"}


def _decoder(s: layout.Struct):
    """A fast `Struct.unpack` (same result) for the big maps."""
    try:
        packer = pack.compiled(s)
    except ValueError:
        return s.unpack
    names = [f for f in s.fields]

    def decode(data: bytes) -> dict[str, Any]:
        vals = iter(packer.unpack(data))
        out: dict[str, Any] = {}
        for f in names:
            if f.name.startswith("_pad"):
                continue  # 'x' consumes no value
            if f.ctype == "char":
                out[f.name] = next(vals).rstrip(b"\0")
            elif f.count > 1:
                out[f.name] = [next(vals) for _ in range(f.count)]
            else:
                out[f.name] = next(vals)
        return out

    return decode


def _jsonable(fields: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in fields.items():
        if isinstance(v, bytes):
            out[k] = v.decode("utf-8", "replace")
        elif isinstance(v, list) and k in _HEX_ARRAYS:
            out[k] = bytes(v).hex()
        else:
            out[k] = v
    return out


def _ip(v: int) -> str:
    return str(ipaddress.IPv4Address(v))


#: 16-byte address fields of the IPv6 maps: shown as IPv6 text
_V6_ADDRESS_FIELDS = {"pepc_rules6": ("src", "dst"), "pepc_masks6": ("src_mask", "dst_mask")}


def _v6_text(fields: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    out = dict(fields)
    for n in names:
        out[n] = str(ipaddress.IPv6Address(bytes(out[n])))
    return out


def _match_text(key: dict[str, Any]) -> str:
    """A one-line reading of a rule-map key, for reviewers."""
    parts = []
    if key["proto_plen"]:
        try:
            parts.append(Protocol(key["proto"]).name.lower())
        except ValueError:
            parts.append(f"proto {key['proto']}")
    else:
        parts.append("any")
    ip = (lambda v: v) if isinstance(key["src"], str) else _ip  # IPv6 keys arrive as text
    parts.append(f"src {ip(key['src'])}/{key['src_plen']}")
    parts.append(f"dst {ip(key['dst'])}/{key['dst_plen']}")
    if key["sport_plen"]:
        parts.append(f"sport {key['sport']}/{key['sport_plen']}")
    if key["dport_plen"]:
        parts.append(f"dport {key['dport']}/{key['dport_plen']}")
    return " ".join(parts)


def _map_rows(program: Program, contents: dict[str, dict[bytes, bytes]]) -> dict[str, list[dict]]:
    slot_ids = {s.slot: s.rule_id for s in program.slots}
    rows: dict[str, list[dict]] = {}
    for name, entries in contents.items():
        mdef = layout.map_def(name)
        kdec, vdec = _decoder(mdef.key), _decoder(mdef.value)
        out = []
        for kb in sorted(entries):
            vb = entries[kb]
            key, value = kdec(kb), vdec(vb)
            if name == "pepc_rules6":
                key = _v6_text(key, _V6_ADDRESS_FIELDS[name])
            elif name == "pepc_masks6":
                value = _v6_text(value, _V6_ADDRESS_FIELDS[name])
            row = {"key": _jsonable(key), "value": _jsonable(value), "key_hex": kb.hex(), "value_hex": vb.hex()}
            if name in ("pepc_rules", "pepc_rules6"):
                row["match"] = _match_text(key)
                row["rule"] = slot_ids.get(value["slot"])
            out.append(row)
        rows[name] = out
    return rows


def _layout_section(caps: layout.Capacities) -> dict[str, Any]:
    """layout.layout_description, with structs keyed by name so that each
    field is one row: [name, ctype, count, offset]."""
    desc = layout.layout_description(caps)
    structs = {d["name"]: {"size": d["size"], "fields": d["fields"]} for d in desc.pop("structs")}
    return {**desc, "structs": structs}


def plan_document(program: Program, policy: Policy, now: datetime | None = None) -> dict[str, Any]:
    caps = program.caps
    stats = rule_stats(policy, program)
    by_id = {r.id: r for r in policy.rules}
    rules = []
    for s in sorted(program.slots, key=lambda s: s.rule_id):
        loc = by_id[s.rule_id].loc if s.rule_id in by_id else s.loc
        st = stats[s.rule_id]
        rules.append(
            {
                "id": s.rule_id,
                "slot": s.slot,
                "action": s.action.name,
                "priority": s.priority,
                "order_key": s.order_key,
                "rate_bps": s.rate_bps,
                "burst_bytes": s.burst_bytes,
                "file": relative_file(loc.file, policy.root),
                "line": loc.line,
                "column": loc.column,
                "atoms": st.atoms,
                "entries": st.entries,
            }
        )
    live = {s.rule_id for s in program.slots}
    inactive = []
    for r in sorted(policy.rules, key=lambda r: r.id):
        if r.id in live:
            continue
        reason = "disabled" if not r.enabled else "expired"
        inactive.append({"id": r.id, "reason": reason, "file": relative_file(r.loc.file, policy.root), "line": r.loc.line})
    contents = pack.map_contents(program)
    return {
        "format": FORMAT,
        "layout_digest": program.layout_digest,
        "policy_digest": program.policy_digest,
        "default_action": program.default_action.name,
        "event_cap": program.event_cap,
        "capacities": caps.describe(),
        "usage": {
            "rules": {"used": len(program.slots), "max": caps.max_rules},
            "entries": {"used": len(program.rule_contents()), "max": caps.max_entries},
            "masks": {"used": len(program.masks), "max": caps.max_masks},
            # capacities are per family: IPv6 has maps of the same sizes
            "entries6": {"used": len(program.rule6_contents()), "max": caps.max_entries},
            "masks6": {"used": len(program.masks6), "max": caps.max_masks},
        },
        "layout": _layout_section(caps),
        "rules": rules,
        "inactive_rules": inactive,
        "maps": _map_rows(program, contents),
    }


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(", ", ": "))


def _render(value: Any, indent: int, out: list[str]) -> None:
    """JSON with sorted keys where objects are expanded (2 spaces), lists of
    scalars stay on one line and lists of objects or lists put one compact
    element per line: each table row is one line of diff."""
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        out.append("{\n")
        items = sorted(value.items())
        for i, (k, v) in enumerate(items):
            out.append(f"{pad}  {json.dumps(k)}: ")
            _render(v, indent + 2, out)
            out.append(",\n" if i < len(items) - 1 else "\n")
        out.append(pad + "}")
    elif isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        out.append("[\n")
        out.append(",\n".join(f"{pad}  {_compact(v)}" for v in value))
        out.append("\n" + pad + "]")
    else:
        out.append(_compact(value))


def render_plan(doc: dict[str, Any]) -> str:
    """The document as text: sorted keys, one row per line in tables,
    ASCII only (json escapes the rest), trailing newline."""
    out: list[str] = []
    _render(doc, 0, out)
    out.append("\n")
    return "".join(out)


def plan_json(program: Program, policy: Policy) -> str:
    return render_plan(plan_document(program, policy))


def load_plan(path: str | Path) -> dict[str, Any]:
    """A plan.json written by `pepc compile` (for --previous). Problems are
    PolicyError findings (code bad-plan) located in the file."""
    p = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise PolicyError([Finding("bad-plan", f"cannot read {p}: {getattr(err, 'strerror', None) or err}", Location(p))]) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise PolicyError([Finding("bad-plan", f"not JSON: {err.msg}", Location(p, err.lineno, err.colno))]) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise PolicyError([Finding("bad-plan", f"not a pepc plan (expected \"format\": \"{FORMAT}\")", Location(p, 1, 1))])
    return doc
