"""Render the generated C header (`pepc_policy.h`) from templates/.

Struct layouts come only from pepc/compiler/layout.py. Anything that comes from a
policy file (ids, file names, descriptions) goes only into C comments and is
first reduced by `c_comment_text` to characters that cannot end a comment,
start one, splice lines or form a trigraph, so no policy can change the code.
"""

from __future__ import annotations

import jinja2

from pepc.compiler import layout
from pepc.compiler.objbuild import HEADER_NAME
from pepc.policy.model import Action, Policy
from pepc.compiler.program import Program
from pepc.policy.resources import TEMPLATES_DIR
from pepc.policy.sources import display_location

HEADER_TEMPLATE = "pepc_policy.h.j2"

# Printable ASCII that is inert inside a /* */ comment whatever it is next
# to: no '*' (so no "*/" or "/*"), no '\' (line splicing), no '?' (the "??/"
# trigraph is a backslash), no '%' (our escape character). Everything else,
# control characters, NUL and non-ASCII included, becomes %XX per UTF-8 byte.
_SAFE = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    " _-.,:;=+@()[]{}<>!&|^~$#'\"/"
)


def c_comment_text(text: str, limit: int = 200) -> str:
    """`text` made safe to place inside a C block comment on one line."""
    out = []
    for ch in text:
        if ch in _SAFE:
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    s = "".join(out)
    if len(s) > limit:
        s = s[: limit - 3].rstrip("%0123456789ABCDEF") + "..."
    return s


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=False,  # C, not HTML: escaping is c_comment_text's job
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
        lstrip_blocks=False,
    )


def _c_type_name(s: layout.Struct | None) -> str:
    """How a map's key/value type reads in C: one-field wrappers such as
    pepc_u32 are plain integers there."""
    if s is None:
        return "-"
    if len(s.fields) == 1 and s.fields[0].count == 1:
        return layout.CTYPES[s.fields[0].ctype][0]
    return s.c_name


def _struct_context(s: layout.Struct) -> dict:
    offs = s.offsets
    return {
        "name": s.name,
        "doc": c_comment_text(s.doc),
        "size": s.size,
        "fields": [
            {"name": f.name, "decl": f.c_decl, "offset": offs[f.name], "doc": c_comment_text(f.doc)}
            for f in s.fields
        ],
    }


def header_context(program: Program, policy: Policy) -> dict:
    caps = program.caps
    digest = bytes.fromhex(program.layout_digest)
    return {
        "actions": [{"name": a.name, "value": int(a)} for a in Action],
        "xdp_drop": layout.XDP_DROP,
        "xdp_pass": layout.XDP_PASS,
        "counters": [{"name": c.upper(), "index": i} for i, c in enumerate(layout.COUNTERS)],
        "caps": caps,
        "rule_id_len": layout.RULE_ID_LEN,
        "slot_flag_used": layout.SLOT_FLAG_USED,
        "rank_prio_shift": layout.RANK_PRIO_SHIFT,
        "rank_spec_shift": layout.RANK_SPEC_SHIFT,
        "order_key_bits": layout.ORDER_KEY_BITS,
        "default_action": program.default_action.name,
        "event_cap": program.event_cap,
        "layout_digest": program.layout_digest,
        "layout_digest_bytes": ", ".join(f"0x{b:02x}" for b in digest),
        "policy_digest": program.policy_digest,
        "maps": [
            {
                "name": m.name,
                "kind": m.kind,
                "key": _c_type_name(m.key),
                "value": _c_type_name(m.value),
                "entries": m.entries(caps),
                "per_generation": m.per_generation,
            }
            for m in layout.MAPS
        ],
        "structs": [_struct_context(s) for s in layout.STRUCTS],
        "rules": [
            {
                "slot": s.slot,
                "action": s.action.name,
                "priority": s.priority,
                "id": c_comment_text(s.rule_id),
                "where": c_comment_text(display_location(s.loc, policy.root)),
            }
            for s in sorted(program.slots, key=lambda s: s.slot)
        ],
        "n_entries": len(program.rule_contents()),
        "n_masks": len(program.masks),
        "n_entries6": len(program.rule6_contents()),
        "n_masks6": len(program.masks6),
    }


def render_header(program: Program, policy: Policy) -> str:
    template = _environment().get_template(HEADER_TEMPLATE)
    return template.render(**header_context(program, policy))
