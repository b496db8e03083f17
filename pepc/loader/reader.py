"""Safe reading of YAML and JSON policy files, keeping every value's location.

Why not `yaml.safe_load`: it forgets where values were written, silently
keeps the last of two equal keys, expands alias bombs without limit, turns
`yes`/`on` into booleans and `2026-12-01` into dates, and the C composer
recurses on nesting depth (a file of 100,000 `[` crashes the interpreter).

So we take the *event* stream from the parser (libyaml when present: it is
a state machine and does not recurse) and build plain Python values
ourselves with an explicit stack. That gives us:

- a location for every mapping key, value and sequence item (`Marks`);
- duplicate keys as errors;
- a budget of nodes per file, counting alias expansions at their full
  expanded size (billion laughs stops at the first alias over budget), and a
  nesting-depth limit;
- our own scalar resolution, close to the YAML 1.2 core schema: `true`/
  `false` only are booleans, `null`/`~`/empty are null, decimal / `0x` / `0o`
  integers, floats; everything else -- `yes`, `on`, `0777`, `1_000`,
  `2026-12-01T00:00:00Z` -- stays a string, and validators say what they
  expected. Quoted scalars are always strings.

`*.json` files go through the same parser: JSON is (nearly) a subset of
YAML, so one code path gives JSON files the same locations and the same
duplicate-key check. The price is leniency: a `.json` file with YAML
comments or a trailing comma is accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from pepc.policy.diagnostics import Finding, Related
from pepc.policy.model import Location

try:  # libyaml: much faster, and its parser does not recurse
    _LOADER: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _LOADER = yaml.SafeLoader

LOADER_CLASS = _LOADER

DEFAULT_MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_NODES = 100_000
MAX_DEPTH = 64

# Position tuples (line, column), 1-based. Location objects are made on demand:
# most values are never reported.
Pos = tuple[int, int]


@dataclass
class Marks:
    """Where every part of a document was written.

    `keys[id(mapping)][key]` is the position of the key, `values[...]` of its
    value; `items[id(sequence)]` the positions of the items. Keyed by object
    identity: the document keeps the containers alive.
    """

    file: str
    keys: dict[int, dict[str, Pos]] = field(default_factory=dict)
    values: dict[int, dict[str, Pos]] = field(default_factory=dict)
    items: dict[int, list[Pos]] = field(default_factory=dict)

    def loc(self, pos: Pos) -> Location:
        return Location(self.file, pos[0], pos[1])

    def key_loc(self, mapping: dict, key: str, default: Pos) -> Location:
        return self.loc(self.keys.get(id(mapping), {}).get(key, default))

    def value_pos(self, mapping: dict, key: str, default: Pos) -> Pos:
        return self.values.get(id(mapping), {}).get(key, default)

    def value_loc(self, mapping: dict, key: str, default: Pos) -> Location:
        return self.loc(self.value_pos(mapping, key, default))

    def item_pos(self, seq: list, index: int, default: Pos) -> Pos:
        items = self.items.get(id(seq))
        if items is not None and 0 <= index < len(items):
            return items[index]
        return default

    def path_pos(self, root: Any, root_pos: Pos, path: list | tuple, *, key: bool = False) -> Pos:
        """The position of the value at `path` (jsonschema's absolute_path);
        with `key`, of the mapping key that names it."""
        node, pos = root, root_pos
        for i, step in enumerate(path):
            last = i == len(path) - 1
            if isinstance(node, dict) and step in node:
                if last and key:
                    return self.keys.get(id(node), {}).get(step, pos)
                pos = self.values.get(id(node), {}).get(step, pos)
                node = node[step]
            elif isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
                pos = self.item_pos(node, step, pos)
                node = node[step]
            else:
                break
        return pos


@dataclass
class Document:
    value: Any
    pos: Pos  # where the document's content starts
    index: int  # 0-based position in its file


@dataclass
class ParsedFile:
    path: str  # display path
    docs: list[Document]
    marks: Marks
    findings: list[Finding]


# --- scalar resolution ----------------------------------------------------

_NULLS = frozenset(["", "~", "null", "Null", "NULL"])
_TRUE = frozenset(["true", "True", "TRUE"])
_FALSE = frozenset(["false", "False", "FALSE"])
_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\Z")
_HEX = re.compile(r"0x[0-9a-fA-F]+\Z")
_OCT = re.compile(r"0o[0-7]+\Z")
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*|[0-9]+(?=[eE]))(?:[eE][-+]?[0-9]+)?\Z")
_INF = re.compile(r"[-+]?\.(?:inf|Inf|INF)\Z")
_NAN = re.compile(r"\.(?:nan|NaN|NAN)\Z")
# A plain scalar can only be something other than a string if it starts with one of these.
_SPECIAL_START = frozenset("0123456789-+.~nNtTfF")
_MAX_NUMBER_CHARS = 64  # beyond this a "number" is hostile; keep it a string

_TAG = "tag:yaml.org,2002:"


class _TagError(Exception):
    pass


def _resolve_plain(text: str) -> Any:
    if not text:
        return None
    if text[0] not in _SPECIAL_START or len(text) > _MAX_NUMBER_CHARS:
        return text
    if text in _NULLS:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if _INT.match(text):
        return int(text)
    if _HEX.match(text):
        return int(text, 16)
    if _OCT.match(text):
        return int(text[2:], 8)
    if _FLOAT.match(text):
        return float(text)
    if _INF.match(text):
        return float("-inf") if text[0] == "-" else float("inf")
    if _NAN.match(text):
        return float("nan")
    return text


def _resolve_tagged(tag: str, text: str) -> Any:
    if tag == _TAG + "str":
        return text
    if tag == _TAG + "null":
        return None
    if tag == _TAG + "bool":
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise _TagError(f"{text!r} is not a boolean (write true or false)")
    if tag in (_TAG + "int", _TAG + "float"):
        value = _resolve_plain(text)
        if tag.endswith("int") and type(value) is int:
            return value
        if tag.endswith("float") and type(value) in (int, float):
            return float(value)
        raise _TagError(f"{text!r} is not a valid {_short_tag(tag)}")
    raise _TagError(f"unsupported YAML tag {_short_tag(tag)}")


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_TAG):] if tag.startswith(_TAG) else tag


# --- the builder -------------------------------------------------------------

_DISCARD = object()  # the value of a duplicate key: parsed, then dropped


class _Abort(Exception):
    def __init__(self, finding: Finding):
        self.finding = finding


def _offset_to_pos(data: bytes, offset: int) -> Pos:
    """1-based line and column (in characters) of byte `offset`."""
    offset = max(0, min(offset, len(data)))
    line_start = data.rfind(b"\n", 0, offset) + 1
    line = data.count(b"\n", 0, offset) + 1
    column = len(data[line_start:offset].decode("utf-8", errors="replace")) + 1
    return line, column


def parse_text(text: str, display: str, *, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> ParsedFile:
    """Parse a YAML/JSON text into documents of plain values with marks.

    Never raises for bad input: problems come back as findings. A syntax
    error or an exceeded limit stops the file (later documents are not
    read); duplicate keys and bad tags are reported and parsing goes on.
    """
    marks = Marks(display)
    findings: list[Finding] = []
    docs: list[Document] = []

    def loc(mark) -> Location:
        return Location(display, mark.line + 1, mark.column + 1)

    try:
        _build(text, display, marks, findings, docs, loc, max_nodes, max_depth)
    except _Abort as abort:
        findings.append(abort.finding)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = loc(mark) if mark is not None else Location(display, 1, 1)
        problem = err.problem or "invalid YAML"
        if "maximum nesting depth" in problem:
            # libyaml >= 0.2.5 (in PyYAML 6.0.4's wheels) stops deep flow
            # nesting in its scanner, before pepc's own limit sees the events
            findings.append(_too_deep(max_depth, where))
            return ParsedFile(display, docs, marks, findings)
        message = f"invalid YAML: {problem}"
        if err.context and err.context_mark is not None:
            message += f" ({err.context} at line {err.context_mark.line + 1}, column {err.context_mark.column + 1})"
        findings.append(Finding("yaml-syntax", message, where))
    except yaml.reader.ReaderError as err:
        # The C reader counts bytes of the UTF-8 encoding; the pure one, characters.
        if _LOADER is yaml.SafeLoader:
            offset = len(text[: err.position].encode("utf-8"))
        else:
            offset = err.position
        pos = _offset_to_pos(text.encode("utf-8"), offset)
        char = err.character
        what = f"#x{char:04x}" if isinstance(char, int) else repr(char)
        findings.append(
            Finding(
                "yaml-syntax",
                f"invalid YAML: unacceptable character {what}: {err.reason}",
                Location(display, *pos),
                help="remove the control character; YAML and JSON files are text",
            )
        )
    except yaml.YAMLError as err:
        findings.append(Finding("yaml-syntax", f"invalid YAML: {err}", Location(display, 1, 1)))
    except RecursionError:  # belt and braces: nothing here recurses
        findings.append(Finding("alias-limit", "document nested too deeply", Location(display, 1, 1)))
    return ParsedFile(display, docs, marks, findings)


def _too_deep(max_depth: int, where: Location) -> Finding:
    return Finding(
        "alias-limit",
        f"nesting deeper than {max_depth} levels",
        where,
        help="policies never need this depth; the file is probably malformed or hostile",
    )


def _build(text, display, marks, findings, docs, loc, max_nodes, max_depth) -> None:
    ScalarEvent = yaml.ScalarEvent
    MappingStartEvent = yaml.MappingStartEvent
    MappingEndEvent = yaml.MappingEndEvent
    SequenceStartEvent = yaml.SequenceStartEvent
    SequenceEndEvent = yaml.SequenceEndEvent
    AliasEvent = yaml.AliasEvent
    DocumentStartEvent = yaml.DocumentStartEvent
    DocumentEndEvent = yaml.DocumentEndEvent
    mkeys, mvalues, mitems = marks.keys, marks.values, marks.items
    tag_map, tag_seq = _TAG + "map", _TAG + "seq"

    # Frame: [container, is_mapping, pending_key, anchor, nodes_at_start, key_pos]
    stack: list[list] = []
    anchors: dict[str, tuple[Any, int]] = {}
    nodes = 0
    doc_pos: Pos = (1, 1)
    root: list = []

    def add(value: Any, pos: Pos) -> None:
        if not stack:
            root.append((value, pos))
            return
        frame = stack[-1]
        container = frame[0]
        if frame[1]:
            key = frame[2]
            if key is None:
                # This value is a key.
                if isinstance(value, (dict, list)):
                    raise _Abort(
                        Finding("schema", "a mapping key must be a plain value, not a mapping or list", Location(display, *pos))
                    )
                if not isinstance(value, str):
                    value = _key_text(value)
                cid = id(container)
                if value in container:
                    first = mkeys[cid][value]
                    findings.append(
                        Finding(
                            "duplicate-key",
                            f"duplicate key {value!r} in this mapping",
                            Location(display, *pos),
                            related=(Related(f"first {value!r} here", Location(display, *first)),),
                        )
                    )
                    frame[2] = _DISCARD
                else:
                    frame[2] = value
                    mkeys[cid][value] = pos
            else:
                frame[2] = None
                if key is not _DISCARD:
                    container[key] = value
                    mvalues[id(container)][key] = pos
        else:
            container.append(value)
            mitems[id(container)].append(pos)

    events = yaml.parse(text, Loader=_LOADER)
    for ev in events:
        cls = ev.__class__
        if cls is ScalarEvent:
            nodes += 1
            m = ev.start_mark
            pos = (m.line + 1, m.column + 1)
            tag = ev.tag
            if tag is None or tag == "!":
                value = _resolve_plain(ev.value) if not ev.style and ev.implicit[0] else ev.value
            else:
                try:
                    value = _resolve_tagged(tag, ev.value)
                except _TagError as err:
                    findings.append(Finding("schema", str(err), Location(display, *pos)))
                    value = ev.value
            if ev.anchor is not None:
                anchors[ev.anchor] = (value, 1)
            add(value, pos)
        elif cls is MappingStartEvent or cls is SequenceStartEvent:
            nodes += 1
            m = ev.start_mark
            pos = (m.line + 1, m.column + 1)
            if len(stack) >= max_depth:
                raise _Abort(_too_deep(max_depth, Location(display, *pos)))
            tag = ev.tag
            is_map = cls is MappingStartEvent
            if tag is not None and tag != "!" and tag != (tag_map if is_map else tag_seq):
                findings.append(Finding("schema", f"unsupported YAML tag {_short_tag(tag)}", Location(display, *pos)))
            if is_map:
                container: Any = {}
                mkeys[id(container)] = {}
                mvalues[id(container)] = {}
            else:
                container = []
                mitems[id(container)] = []
            stack.append([container, is_map, None, ev.anchor, nodes, pos])
        elif cls is MappingEndEvent or cls is SequenceEndEvent:
            frame = stack.pop()
            if frame[3] is not None:
                anchors[frame[3]] = (frame[0], nodes - frame[4] + 1)
            add(frame[0], frame[5])
        elif cls is AliasEvent:
            m = ev.start_mark
            pos = (m.line + 1, m.column + 1)
            target = anchors.get(ev.anchor)
            if target is None:  # libyaml reports this itself; keep a guard for the pure parser
                raise _Abort(Finding("yaml-syntax", f"invalid YAML: unknown alias {ev.anchor!r}", Location(display, *pos)))
            nodes += target[1]
            if nodes > max_nodes:
                raise _Abort(
                    Finding(
                        "alias-limit",
                        f"the file expands to more than {max_nodes} values (aliases counted at their expanded size)",
                        Location(display, *pos),
                    )
                )
            add(target[0], pos)
        elif cls is DocumentStartEvent:
            m = ev.start_mark
            doc_pos = (m.line + 1, m.column + 1)
            root.clear()
        elif cls is DocumentEndEvent:
            if root:
                value, pos = root[0]
                docs.append(Document(value, pos if value is not None else doc_pos, len(docs)))
            else:  # pragma: no cover - every document has a root node
                docs.append(Document(None, doc_pos, len(docs)))
            anchors.clear()
        if nodes > max_nodes:
            raise _Abort(
                Finding("alias-limit", f"the file holds more than {max_nodes} values", Location(display, *doc_pos))
            )


def _key_text(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)
