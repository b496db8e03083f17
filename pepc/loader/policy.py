"""From a policy directory to a validated `Policy`, or every reason why not.

Phases, each reporting every problem it finds before the next one runs on
whatever is still sound:

1. discover and read files, parse YAML/JSON with locations (reader.py);
2. classify each document (policy set, legacy object, legacy list) and
   validate its shape against the JSON Schemas in `schema/`;
3. collect network and service definitions (global names), resolve their
   references with cycle detection;
4. resolve each rule: addresses, ports, protocols, rate limits, times;
5. check rule ids for uniqueness.

A rule whose shape is wrong is not resolved further (the schema finding says
what is wrong; resolving it would only add noise), but its id still counts
for duplicate detection. A rule whose id is taken is resolved all the same,
so that its other errors are reported, and then left out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pepc.policy import gcpause
from pepc.policy.diagnostics import CODES, Finding, PolicyError, Related
from pepc.loader.files import discover, read_and_parse
from pepc.loader.reader import DEFAULT_MAX_FILE_BYTES, Marks, ParsedFile, Pos
from pepc.loader.schema import did_you_mean, findings_for
from pepc.loader.values import (
    ANY_ADDRESS,
    Ref,
    ValueProblem,
    parse_action,
    parse_address,
    parse_port,
    parse_protocol,
    parse_time,
)
from pepc.policy.model import (
    ANY_PORT,
    Action,
    Location,
    Network,
    Policy,
    PortRange,
    Prefix,
    Protocol,
    Rule,
    Service,
)

SET_KEYS = ("networks", "services", "policies")
_PARSE_STOPPERS = frozenset(["yaml-syntax", "alias-limit", "encoding", "file-too-large", "io-error"])


@dataclass
class _Def:
    """A network or service definition before resolution."""

    name: str
    value: Any  # str | int | list, as written
    marks: Marks
    container: dict  # the networks:/services: mapping it was written in
    broken: bool  # the schema already rejected it

    @property
    def loc(self) -> Location:
        return self.marks.key_loc(self.container, self.name, (1, 1))

    def items(self) -> list[tuple[Any, Pos]]:
        vpos = self.marks.value_pos(self.container, self.name, (1, 1))
        if isinstance(self.value, list):
            return [(v, self.marks.item_pos(self.value, i, vpos)) for i, v in enumerate(self.value)]
        return [(self.value, vpos)]


@dataclass
class _RawRule:
    obj: dict
    marks: Marks
    pos: Pos
    legacy: bool
    broken: bool
    #: (cache entry, index) when the file came through a LoadCache
    cached: Any = None


@dataclass
class _State:
    findings: list[Finding] = field(default_factory=list)
    networks: dict[str, list[_Def]] = field(default_factory=dict)
    services: dict[str, list[_Def]] = field(default_factory=dict)
    rules: list[_RawRule] = field(default_factory=list)

    def add(self, code: str, message: str, loc: Location, *, help: str | None = None, rule: str | None = None, related=()) -> None:
        self.findings.append(Finding(code, message, loc, rule=rule, help=help, related=tuple(related)))


def load_policy(path: str | os.PathLike, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES, cache: Any = None) -> Policy:
    """Load and validate a policy directory. Raises PolicyError with every
    finding that blocks loading. `cache` (pepc.loader.cache.LoadCache) makes
    a reload re-read and re-parse only the files that changed; the result is
    the same as without it."""
    root = os.fspath(path)
    with gcpause.paused():
        files, findings = discover(root)
        if cache is not None:
            return cache.load(root, files, findings, max_file_bytes)
        st = _State(findings=list(findings))
        displays = []
        for sf in files:
            parsed = read_and_parse(sf.path, sf.display, max_file_bytes=max_file_bytes)
            displays.append(sf.display)
            _merge(st, file_state(parsed))
        return _finish(root, st, displays)


def file_state(parsed: ParsedFile) -> _State:
    """What one file contributes before names are resolved: its findings,
    definitions and raw rules (phases 1-2, which look at that file only)."""
    fst = _State(findings=list(parsed.findings))
    if any(f.code in _PARSE_STOPPERS for f in parsed.findings):
        # A file whose parse stopped is not interpreted: its documents
        # may be truncated, and errors in them would mislead. (Duplicate
        # keys and bad tags do not stop the parse: the rest is checked.)
        return fst
    _classify(parsed, fst)
    return fst


def _merge(st: _State, fst: _State) -> None:
    st.findings.extend(fst.findings)
    for name, defs in fst.networks.items():
        st.networks.setdefault(name, []).extend(defs)
    for name, defs in fst.services.items():
        st.services.setdefault(name, []).extend(defs)
    st.rules.extend(fst.rules)


def _finish(root: str, st: _State, displays: list[str], resolve_rules: Any = None, tables_hook: Any = None) -> Policy:
    """Phases 3-5 on the merged files. `resolve_rules(st, networks,
    services)` replaces _resolve_rules and `tables_hook(networks, services)`
    sees the resolved name tables first (the cache's memo of both)."""
    networks = _resolve_defs(st, st.networks, "network")
    services = _resolve_defs(st, st.services, "service")
    if tables_hook is not None:
        networks, services = tables_hook(networks, services)
    rules = (resolve_rules or _resolve_rules)(st, networks, services)
    blocking = [f for f in st.findings if f.blocks_load]

    def policy(rules: list[Rule], files: list[str]) -> Policy:
        return Policy(
            root=root,
            rules=tuple(rules),
            networks=tuple(
                Network(n, tuple(p), defs[0].loc) for n, defs in st.networks.items() if (p := networks.get(n)) is not None
            ),
            services=tuple(
                Service(n, tuple(p), defs[0].loc) for n, defs in st.services.items() if (p := services.get(n)) is not None
            ),
            files=tuple(files),
        )

    if blocking:
        # The files with no load error still make a policy, so that `pepc
        # check` can report their rule anomalies (marked as computed without
        # the others); none when the directory itself is the problem.
        without = sorted({f.loc.file for f in blocking})
        broken = set(without)
        sound = [d for d in displays if d not in broken]
        partial = None
        if sound and root not in broken:
            partial = policy([r for r in rules if r.loc.file not in broken], sound)
        raise PolicyError(st.findings, partial=partial, without=tuple(without))
    return policy(rules, displays)


# --- phase 2: classify and validate -----------------------------------------------


def _classify(parsed: ParsedFile, st: _State) -> None:
    marks = parsed.marks
    for doc in parsed.docs:
        value = doc.value
        here = marks.loc(doc.pos)
        if value is None:
            continue  # an empty document (only comments, or a stray ---)
        if isinstance(value, dict):
            if any(k in value for k in SET_KEYS):
                _policy_set(value, doc.pos, marks, st)
            elif "id" in value or "action" in value:
                _legacy_rule(value, doc.pos, marks, st, prefix=(), root=value, root_pos=doc.pos)
            else:
                guesses = sorted({g for k in value if (g := did_you_mean(k, SET_KEYS + ("id", "action")))})
                hint = f"did you mean {', '.join(repr(g) for g in guesses)}? " if guesses else ""
                st.add(
                    "schema",
                    "this document is not a policy: expected a policy set (networks, services, policies) "
                    "or a legacy policy object (id, action, src, dst)",
                    here,
                    help=hint + "see docs/language.md",
                )
        elif isinstance(value, list):
            for i, item in enumerate(value):
                ipos = marks.item_pos(value, i, doc.pos)
                if isinstance(item, dict):
                    _legacy_rule(item, ipos, marks, st, prefix=(i,), root=value, root_pos=doc.pos)
                else:
                    st.add(
                        "schema",
                        f"[{i}]: expected a legacy policy object (a mapping with id and action), got {_kind(item)}",
                        marks.loc(ipos),
                    )
        else:
            st.add(
                "schema",
                f"this document is {_kind(value)}, not a policy: expected a policy set (networks, services, "
                "policies), a legacy policy object, or a list of them",
                here,
            )


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return "empty"


def _policy_set(doc: dict, pos: Pos, marks: Marks, st: _State) -> None:
    errors = findings_for("policy-set", doc, marks, pos)
    bad_paths = set()
    for path, finding in errors:
        st.findings.append(finding)
        bad_paths.add(path[:2])
    for kind, table in (("networks", st.networks), ("services", st.services)):
        defs = doc.get(kind)
        if not isinstance(defs, dict):
            continue
        for name, value in defs.items():
            table.setdefault(name, []).append(
                _Def(name, value, marks, defs, broken=(kind, name) in bad_paths or not isinstance(name, str))
            )
    rules = doc.get("policies")
    if isinstance(rules, list):
        rpos = marks.value_pos(doc, "policies", pos)
        for i, r in enumerate(rules):
            if isinstance(r, dict):
                st.rules.append(_RawRule(r, marks, marks.item_pos(rules, i, rpos), False, ("policies", i) in bad_paths))


def _legacy_rule(obj: dict, pos: Pos, marks: Marks, st: _State, *, prefix: tuple, root: Any, root_pos: Pos) -> None:
    errors = findings_for("legacy-policy", obj, marks, pos)
    for _, finding in errors:
        st.findings.append(finding)
    st.rules.append(_RawRule(obj, marks, pos, True, bool(errors)))


# --- phase 3: named networks and services ---------------------------------------


def _resolve_defs(st: _State, table: dict[str, list[_Def]], kind: str) -> dict[str, list | None]:
    """Resolve every definition to a list of Prefix / PortRange. Broken ones
    (and ones depending on broken ones) resolve to None: silently, since the
    problem was already reported where it is."""
    parse = parse_address if kind == "network" else parse_port
    unknown_code = f"unknown-{kind}"
    # Duplicates: the first definition counts, later ones are errors.
    for name, defs in table.items():
        for d in defs[1:]:
            st.add(
                f"duplicate-{kind}",
                f"{kind} {name!r} is defined twice",
                d.loc,
                related=[Related(f"first definition of {name!r}", defs[0].loc)],
            )
    # Parse items once: a value, a reference, or a problem.
    parsed: dict[str, list[tuple[Any, Pos]] | None] = {}
    for name, defs in table.items():
        d = defs[0]
        if d.broken:
            parsed[name] = None
            continue
        items: list[tuple[Any, Pos]] = []
        ok = True
        for raw, ipos in d.items():
            try:
                items.append((parse(raw), ipos))
            except ValueProblem as p:
                st.add(p.code, f"{kind} {name!r}: {p.message}", d.marks.loc(ipos), help=p.help)
                ok = False
        parsed[name] = items if ok else None

    resolved: dict[str, list | None] = {}
    DONE, ACTIVE = 1, 2
    state: dict[str, int] = {}
    failed: set[str] = set()
    for start in table:
        if start in state:
            continue
        # Iterative DFS: definitions may chain arbitrarily long.
        stack: list[tuple[str, int]] = [(start, 0)]
        state[start] = ACTIVE
        while stack:
            name, i = stack[-1]
            items = parsed[name]
            if items is None:
                resolved[name] = None
                state[name] = DONE
                stack.pop()
                continue
            if i < len(items):
                stack[-1] = (name, i + 1)
                value, ipos = items[i]
                if isinstance(value, Ref):
                    ref = str(value)
                    d = table[name][0]
                    if ref not in table:
                        guess = did_you_mean(ref, table)
                        st.add(
                            unknown_code,
                            f"{kind} {name!r} refers to undefined {kind} {ref!r}",
                            d.marks.loc(ipos),
                            help=f"did you mean {guess!r}?" if guess else f"define it under {kind}s:",
                        )
                        failed.add(name)
                    elif state.get(ref) == ACTIVE:
                        cycle = [n for n, _ in stack]
                        cycle = cycle[cycle.index(ref):]
                        st.add(
                            "cyclic-reference",
                            f"{kind} {name!r} refers to {ref!r}, which refers back to it: "
                            + " -> ".join(cycle + [ref]),
                            d.marks.loc(ipos),
                            related=[Related(f"{kind} {n!r} defined here", table[n][0].loc) for n in cycle if n != name],
                        )
                        failed.update(cycle)
                    elif ref not in state:
                        state[ref] = ACTIVE
                        stack.append((ref, 0))
                continue
            # All items visited: assemble.
            out: list = []
            seen = set()
            ok = True
            for value, _ in items:
                if isinstance(value, Ref):
                    sub = resolved.get(str(value))
                    if sub is None:
                        ok = False
                        break
                    vals = sub
                else:
                    vals = (value,)
                for v in vals:
                    if v not in seen:
                        seen.add(v)
                        out.append(v)
            resolved[name] = out if ok and name not in failed else None
            state[name] = DONE
            stack.pop()
    return resolved


# --- phase 4: rules -------------------------------------------------------------

_NO_POS: Pos = (0, 0)


def _id_loc(raw: _RawRule) -> Location:
    return raw.marks.value_loc(raw.obj, "id", raw.pos)


def rule_id(raw: _RawRule) -> str | None:
    """The id that counts for duplicate detection (None: no usable id)."""
    rid = raw.obj.get("id")
    return rid if isinstance(rid, str) and rid else None


def _resolve_rules(st: _State, networks: dict, services: dict, resolve: Any = None) -> list[Rule]:
    resolve = resolve or _resolve_rule
    rules: list[Rule] = []
    first_id: dict[str, _RawRule] = {}  # locations made only for a duplicate
    for raw in st.rules:
        rid = rule_id(raw)
        duplicate = rid is not None and rid in first_id
        if duplicate:
            st.add(
                "duplicate-id",
                f"rule id {rid!r} is used twice",
                _id_loc(raw),
                rule=rid,
                related=[Related(f"first rule {rid!r}", _id_loc(first_id[rid]))],
            )
        elif rid is not None:
            first_id[rid] = raw
        if raw.broken:
            continue
        # a duplicate is still resolved, for its other errors (bad-cidr, ...)
        rule = resolve(raw, st, networks, services)
        if rule is not None and not duplicate:
            rules.append(rule)
    return rules


def _resolve_rule(raw: _RawRule, st: _State, networks: dict, services: dict) -> Rule | None:
    obj, marks = raw.obj, raw.marks
    rid: str = obj["id"]
    loc = marks.loc(raw.pos)
    ok = True
    mvalues = marks.values.get(id(obj), {})
    locs: list[tuple[str, Location]] = []

    def vloc(container: dict, key: str) -> Location:
        p = marks.values.get(id(container), {}).get(key)
        return marks.loc(p) if p else loc

    def problem(p: ValueProblem, where: Location) -> None:
        nonlocal ok
        ok = False
        st.add(p.code, p.message, where, help=p.help, rule=rid)

    for key in ("id", "action", "priority", "rate_limit_bps", "burst_bytes", "created_at", "expires_at",
                "enabled", "description", "labels", "suppress", "allow_overlap"):
        p = mvalues.get(key)
        if p is not None:
            locs.append((key, marks.loc(p)))

    action = parse_action(obj["action"])
    priority = int(obj.get("priority", 0))  # the schema admits 100.0 as an integer

    # Protocol: on the rule, on src, on dst; all that are not ANY must agree.
    proto = Protocol.ANY
    proto_from: tuple[str, Location] | None = None
    sides: dict[str, dict] = {}
    for side in ("src", "dst"):
        ep = obj.get(side)
        sides[side] = ep if isinstance(ep, dict) else {}
    candidates = [("protocol", obj, "protocol")] + [(f"{s}.protocol", sides[s], "protocol") for s in ("src", "dst")]
    for label, container, key in candidates:
        if key not in container:
            continue
        where = vloc(container, key)
        locs.append((label, where))
        try:
            pr = parse_protocol(container[key])
        except ValueProblem as p:
            problem(p, where)
            continue
        if pr is Protocol.ANY:
            continue
        if proto is Protocol.ANY:
            proto, proto_from = pr, (label, where)
        elif pr is not proto:
            assert proto_from is not None
            ok = False
            st.add(
                "protocol-mismatch",
                f"{label} is {pr.name} but {proto_from[0]} is {proto.name}",
                where,
                rule=rid,
                related=[Related(f"{proto_from[0]} here", proto_from[1])],
            )
    if proto_from is not None:
        locs.append(("protocol", proto_from[1]))
    elif "protocol" in obj:
        locs.append(("protocol", vloc(obj, "protocol")))

    # Addresses and ports.
    resolved: dict[str, tuple] = {}
    for side in ("src", "dst"):
        ep = sides[side]
        for key, table, kind, any_value in (
            ("ip", networks, "network", ANY_ADDRESS),
            ("port", services, "service", (ANY_PORT,)),
        ):
            label = f"{side}.{key}"
            if key not in ep:
                resolved[label] = any_value
                continue
            raw_value = ep[key]
            vpos = marks.values.get(id(ep), {}).get(key, raw.pos)
            locs.append((label, marks.loc(vpos)))
            if isinstance(raw_value, list):
                items = [(v, marks.item_pos(raw_value, i, vpos)) for i, v in enumerate(raw_value)]
                for i, (_, ipos) in enumerate(items):
                    locs.append((f"{label}[{i}]", marks.loc(ipos)))
            else:
                items = [(raw_value, vpos)]
            out: list = []
            seen: set = set()
            for value, ipos in items:
                try:
                    parsed = parse_address(value) if kind == "network" else parse_port(value)
                except ValueProblem as p:
                    problem(p, marks.loc(ipos))
                    continue
                if isinstance(parsed, Ref):
                    name = str(parsed)
                    if name not in table:
                        guess = did_you_mean(name, table)
                        ok = False
                        hint = f"did you mean {guess!r}?" if guess else f"define it under {kind}s: in any file of the directory"
                        if kind == "service" and name.lower() in ("tcp", "udp", "icmp"):
                            hint = "a protocol goes in protocol:, not in port:"
                        st.add(f"unknown-{kind}", f"{label}: undefined {kind} {name!r}", marks.loc(ipos), help=hint, rule=rid)
                        continue
                    sub = table[name]
                    if sub is None:  # broken definition, reported where it is
                        ok = False
                        continue
                    vals = sub
                else:
                    vals = parsed if isinstance(parsed, tuple) else (parsed,)
                for v in vals:
                    if v not in seen:
                        seen.add(v)
                        out.append(v)
            # "any" next to something else is still any (of that family):
            # keep the written items minimal so atoms are not multiplied
            # for nothing.
            for whole in any_value:
                if whole in seen:
                    out = [v for v in out if v == whole or getattr(v, "v6", None) != getattr(whole, "v6", None)]
            resolved[label] = tuple(out) if out else any_value
    if ok:
        families = _families(resolved["src.ip"], resolved["dst.ip"], proto, proto_from, dict(locs), loc, st, rid)
        if families is None:
            ok = False
        else:
            # "any" (and a network of both families) on one side means the
            # families the rule applies to: drop the prefixes of the other
            # family, which could only pair with nothing.
            for label in ("src.ip", "dst.ip"):
                resolved[label] = tuple(p for p in resolved[label] if p.family in families)

    # Rate limit.
    rate = obj.get("rate_limit_bps")
    burst = obj.get("burst_bytes")
    rate_bps = 0
    burst_bytes = 0
    if action is Action.RATE_LIMIT:
        if not rate:
            ok = False
            where = vloc(obj, "rate_limit_bps") if "rate_limit_bps" in obj else vloc(obj, "action")
            st.add(
                "bad-rate-limit",
                "RATE_LIMIT needs rate_limit_bps > 0 (bytes per second)" if rate is None else "rate_limit_bps must be > 0 for RATE_LIMIT",
                where,
                rule=rid,
            )
        else:
            rate_bps = int(rate)
            burst_bytes = int(burst) if burst is not None else rate_bps
    else:
        if rate:
            ok = False
            st.add(
                "bad-rate-limit",
                f"rate_limit_bps is {rate} but the action is {action.name}; only RATE_LIMIT rules take a rate",
                vloc(obj, "rate_limit_bps"),
                rule=rid,
                help="remove rate_limit_bps (or write 0), or make the action RATE_LIMIT",
            )
        if burst is not None:
            ok = False
            st.add(
                "bad-rate-limit",
                f"burst_bytes is set but the action is {action.name}; only RATE_LIMIT rules take a burst",
                vloc(obj, "burst_bytes"),
                rule=rid,
            )

    # Times.
    times: dict[str, datetime | None] = {"created_at": None, "expires_at": None}
    for key in times:
        if key in obj:
            try:
                times[key] = parse_time(obj[key])
            except ValueProblem as p:
                problem(p, vloc(obj, key))

    # Suppressions.
    suppress = obj.get("suppress") or []
    spos = marks.values.get(id(obj), {}).get("suppress", raw.pos)
    for i, code in enumerate(suppress):
        if code not in CODES:
            ok = False
            guess = did_you_mean(code, CODES)
            st.add(
                "schema",
                f"suppress: {code!r} is not a finding code" + (f"; did you mean {guess!r}?" if guess else ""),
                marks.loc(marks.item_pos(suppress, i, spos)),
                rule=rid,
                help="the codes are listed in docs/cli.md (pepc check --format json shows them too)",
            )
        elif CODES[code].blocks_load:
            ok = False
            st.add(
                "schema",
                f"suppress: {code!r} is a load error and cannot be suppressed",
                marks.loc(marks.item_pos(suppress, i, spos)),
                rule=rid,
            )

    if not ok:
        return None
    labels = obj.get("labels") or {}
    return Rule(
        id=rid,
        action=action,
        loc=loc,
        priority=priority,
        protocol=proto,
        src=resolved["src.ip"],
        dst=resolved["dst.ip"],
        sports=resolved["src.port"],
        dports=resolved["dst.port"],
        rate_limit_bps=rate_bps,
        burst_bytes=burst_bytes,
        created_at=times["created_at"],
        expires_at=times["expires_at"],
        enabled=obj.get("enabled", True),
        description=obj.get("description", "") or "",
        labels=tuple((str(k), _label_text(v)) for k, v in labels.items()),
        suppress=tuple(dict.fromkeys(suppress)),
        allow_overlap=tuple(dict.fromkeys(obj.get("allow_overlap") or [])),
        legacy=raw.legacy,
        field_locs=tuple(locs),
    )


_FAMILY_NAMES = {(4,): "IPv4 only", (6,): "IPv6 only", (4, 6): "IPv4 and IPv6"}


def _families(
    src: tuple[Prefix, ...],
    dst: tuple[Prefix, ...],
    proto: Protocol,
    proto_from: tuple[str, Location] | None,
    field_locs: dict[str, Location],
    loc: Location,
    st: _State,
    rid: str,
) -> tuple[int, ...] | None:
    """The address families a rule applies to: those both sides name and
    the protocol allows. None (after a located `family-mismatch`) when they
    leave none: such a rule could match no packet, which is a mistake."""

    def fams(prefixes: tuple[Prefix, ...]) -> tuple[int, ...]:
        return tuple(sorted({p.family for p in prefixes}))

    def shown(prefixes: tuple[Prefix, ...]) -> str:
        text = ", ".join(str(p) for p in prefixes[:3])
        return text + (", ..." if len(prefixes) > 3 else "")

    sf, df = fams(src), fams(dst)
    both = tuple(f for f in sf if f in df)
    common = tuple(f for f in both if f in proto.families)
    if common:
        return common
    src_loc = field_locs.get("src.ip", loc)
    dst_loc = field_locs.get("dst.ip", loc)
    if not both:
        # point at the side written last (usually the narrower one)
        where, other, here_label, other_label = (dst_loc, src_loc, "dst.ip", "src.ip") if "dst.ip" in field_locs else (src_loc, dst_loc, "src.ip", "dst.ip")
        here, there = (dst, src) if here_label == "dst.ip" else (src, dst)
        st.add(
            "family-mismatch",
            f"{other_label} is {_FAMILY_NAMES[fams(there)]} ({shown(there)}) but {here_label} is "
            f"{_FAMILY_NAMES[fams(here)]} ({shown(here)}): the rule can match no packet",
            where,
            rule=rid,
            related=[Related(f"{other_label} here", other)],
            help="a packet has a source and a destination of one family: split the rule into an IPv4 rule "
            "and an IPv6 rule, or use addresses of one family on both sides",
        )
        return None
    proto_loc = proto_from[1] if proto_from else loc
    addr_label = "dst.ip" if "dst.ip" in field_locs else "src.ip"
    fix = {
        Protocol.ICMP: "for ICMP over IPv6 write protocol: ICMPV6",
        Protocol.ICMPV6: "for ICMP over IPv4 write protocol: ICMP",
    }.get(proto, "")
    st.add(
        "family-mismatch",
        f"protocol {proto.name} is IPv{proto.families[0]}'s but the rule's addresses are "
        f"{_FAMILY_NAMES[both]}: the rule can match no packet",
        proto_loc,
        rule=rid,
        related=[Related(f"{addr_label} here", field_locs.get(addr_label, loc))],
        help=fix or None,
    )
    return None


def _label_text(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)


# --- lifecycle -----------------------------------------------------------------


def lifecycle_findings(policy: Policy, now: datetime) -> list[Finding]:
    """`disabled` and `expired` info findings: rules that are written but not live."""
    out = []
    for r in policy.rules:
        if not r.enabled:
            out.append(Finding("disabled", f"rule {r.id!r} is disabled", r.loc_of("enabled"), rule=r.id))
        elif r.is_expired(now):
            assert r.expires_at is not None
            out.append(
                Finding(
                    "expired",
                    f"rule {r.id!r} expired at {r.expires_at.strftime('%Y-%m-%dT%H:%M:%SZ')}",
                    r.loc_of("expires_at"),
                    rule=r.id,
                )
            )
    return out
