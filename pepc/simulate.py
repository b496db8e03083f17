"""Evaluate packets over a compiled Program, the way the XDP program does.

The simulator does not look at rules: it reads the map contents a
generation would hold (the same bytes the kernel gets), walks the masks in
order with the same early exit, builds the same hash key and looks it up.
`explain` is the other view: every rule/atom that matches by the semantics
of DESIGN.md, and why the winner wins. Tests hold the two to each other.

RATE_LIMIT is reported with verdict PASS: the simulator shows what happens
to a packet while the rule's traffic is within its rate (above the rate the
data plane drops it).
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass
from typing import Iterable, Iterator

from pepc import layout
from pepc.compiler import pack
from pepc.diagnostics import Finding, PolicyError
from pepc.model import Action, Location, Policy, Protocol
from pepc.program import Program, SlotInfo
from pepc.semantics import PORT_PROTOCOLS, Atom, Packet, atom_matches, atoms_of, rank_key, specificity, verdict_of
from pepc.sources import display_location, relative_file


# --------------------------------------------------------------------------
# packet syntax

class PacketSyntaxError(ValueError):
    def __init__(self, message: str, column: int = 1):
        super().__init__(message)
        self.message = message
        self.column = column


_PROTO_NAMES = {"tcp": 6, "udp": 17, "icmp": 1}
_TOKEN = re.compile(r"\S+")


def _parse_addr(tok: str, col: int, with_port: bool, what: str) -> tuple[int, int]:
    port = 0
    text = tok
    if ":" in tok:
        if not with_port:
            raise PacketSyntaxError(f"{what}: this packet carries no ports (write an address without `:port`)", col)
        text, _, ptext = tok.rpartition(":")
        if not ptext.isdigit() or not 0 <= int(ptext) <= 0xFFFF:
            raise PacketSyntaxError(f"{what}: port {ptext!r} is not 0-65535", col + len(text) + 1)
        port = int(ptext)
    elif with_port:
        raise PacketSyntaxError(f"{what}: a tcp/udp packet needs ADDRESS:PORT (or add `frag` for a non-first fragment)", col)
    try:
        addr = int(ipaddress.IPv4Address(text))
    except ValueError:
        raise PacketSyntaxError(f"{what}: {text!r} is not an IPv4 address", col) from None
    return addr, port


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"({_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET})"
_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}|0)"
# The common shape of a tcp/udp line, strictly (no leading zeros, values in
# range); anything else takes the general parser, which also explains errors.
_FAST = re.compile(rf"\s*(tcp|udp) +{_IPV4}:{_PORT} +> +{_IPV4}:{_PORT}(?: +len=([1-9][0-9]{{0,4}}))?\s*")
_FAST_PROTO = {"tcp": 6, "udp": 17}


def _ip_int(text: str) -> int:
    a, b, c, d = text.split(".")
    return (int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d)


def parse_packet(text: str) -> Packet:
    m = _FAST.fullmatch(text)
    if m is not None and (m.group(6) is None or int(m.group(6)) <= 0xFFFF):
        proto, src, sport, dst, dport, length = m.groups()
        return Packet(
            src=_ip_int(src), dst=_ip_int(dst), proto=_FAST_PROTO[proto], sport=int(sport), dport=int(dport),
            has_ports=True, fragment=False, length=int(length) if length else 64,
        )
    return _parse_packet(text)


def _parse_packet(text: str) -> Packet:
    """`tcp 10.0.0.1:1234 > 192.168.1.100:80 [len=N] [frag]`, `udp A:P > B:P`,
    `icmp A > B`, `proto N A > B`. `frag` is a non-first fragment (no ports
    are read, so written ports are optional and ignored). Raises
    PacketSyntaxError with a 1-based column."""
    toks = [(m.group(0), m.start() + 1) for m in _TOKEN.finditer(text)]
    if not toks:
        raise PacketSyntaxError("empty packet: write e.g. `tcp 10.0.0.1:1234 > 192.168.1.100:80`", 1)
    i = 0
    word, col = toks[0]
    m = re.fullmatch(r"proto(\d+)", word.lower())
    if m:  # the compact form str(Packet) writes
        toks[0:1] = [("proto", col), (m.group(1), col + 5)]
        word = "proto"
    if word.lower() == "proto":
        if len(toks) < 2:
            raise PacketSyntaxError("`proto` needs an IP protocol number 0-255", col + len(word))
        num, ncol = toks[1]
        if not num.isdigit() or int(num) > 255:
            raise PacketSyntaxError(f"{num!r} is not an IP protocol number 0-255", ncol)
        proto, i = int(num), 2
    elif word.lower() in _PROTO_NAMES:
        proto, i = _PROTO_NAMES[word.lower()], 1
    else:
        raise PacketSyntaxError(f"unknown protocol {word!r}: expected tcp, udp, icmp or `proto N`", col)
    rest = toks[i:]
    if len(rest) < 3 or rest[1][0] != ">":
        for tok, tcol in rest:
            if tok in ("->", "=>", "-->"):
                raise PacketSyntaxError(f"write `>` between source and destination, not `{tok}`", tcol)
            if ">" in tok and tok != ">":
                raise PacketSyntaxError("expected `SOURCE > DESTINATION`: put spaces around `>`", tcol + tok.index(">"))
        where = rest[1][1] if len(rest) > 1 else (rest[0][1] + len(rest[0][0]) if rest else len(text) + 1)
        raise PacketSyntaxError("expected `SOURCE > DESTINATION` (with spaces around `>`)", where)
    length, frag = 64, False
    for tok, tcol in rest[3:]:
        low = tok.lower()
        if low == "frag":
            frag = True
        elif low.startswith("len="):
            val = tok[4:]
            if not val.isdigit() or not 1 <= int(val) <= 0xFFFF:
                raise PacketSyntaxError(f"len={val}: the frame length must be 1-65535", tcol)
            length = int(val)
        else:
            raise PacketSyntaxError(f"unexpected {tok!r}: expected `len=N` or `frag`", tcol)
    ports_proto = proto in PORT_PROTOCOLS
    src_tok, dst_tok = rest[0], rest[2]
    with_port = ports_proto and not frag
    if ports_proto and frag:
        # a non-first fragment carries no L4 header: ports may be written but are not read
        src, sport = _parse_addr(src_tok[0], src_tok[1], ":" in src_tok[0], "source")
        dst, dport = _parse_addr(dst_tok[0], dst_tok[1], ":" in dst_tok[0], "destination")
    else:
        src, sport = _parse_addr(src_tok[0], src_tok[1], with_port, "source")
        dst, dport = _parse_addr(dst_tok[0], dst_tok[1], with_port, "destination")
    return Packet(src=src, dst=dst, proto=proto, sport=sport, dport=dport, has_ports=with_port, fragment=frag, length=length)


def packet_error(message: str, loc: Location) -> PolicyError:
    return PolicyError([Finding("bad-packet", message, loc)])


def parse_packet_lines(lines: Iterable[str], file: str) -> Iterator[tuple[int, Packet]]:
    """Packets of a file, one per line; blank lines and `#` comments are
    skipped. Yields (line number, packet); raises PolicyError at the first
    bad line with file:line:column."""
    for n, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].rstrip("\r\n")
        if not line.strip():
            continue
        try:
            yield n, parse_packet(line)
        except PacketSyntaxError as err:
            raise packet_error(err.message, Location(file, n, err.column)) from None


# --------------------------------------------------------------------------
# evaluation over the compiled program

@dataclass(frozen=True)
class Decision:
    action: Action | None  # None: no rule matched, the default action applies
    verdict: str  # "PASS" | "DROP" (RATE_LIMIT: within the rate)
    slot: int | None = None
    rule_id: str | None = None
    rank: int | None = None
    loc: Location | None = None

    @property
    def action_name(self) -> str:
        return self.action.name if self.action is not None else "DEFAULT"


@dataclass(frozen=True)
class _MaskRow:
    best_rank: int
    src_mask: int
    dst_mask: int
    sport_mask: int
    dport_mask: int
    plens: tuple[int, int, int, int, int]
    proto_mask: int
    has_ports: bool


class Index:
    """A program's maps decoded once: masks in walk order and the rule hash."""

    def __init__(self, program: Program):
        self.program = program
        u32 = pack.compiled(layout.U32_KEY).pack
        masks = {u32(i): pack.mask_value(m) for i, m in enumerate(program.masks)}
        rows = []
        for i in range(len(masks)):
            m = pack.mask_fields(masks[u32(i)])
            rows.append(
                _MaskRow(
                    m["best_rank"], m["src_mask"], m["dst_mask"], m["sport_mask"], m["dport_mask"],
                    (m["src_plen"], m["dst_plen"], m["sport_plen"], m["dport_plen"], m["proto_plen"]),
                    0xFF if m["proto_plen"] else 0, bool(m["sport_plen"] or m["dport_plen"]),
                )
            )
        self.masks = tuple(rows)
        # The hot loop reads plain tuples: (best_rank, has_ports, src_mask,
        # dst_mask, sport_mask, dport_mask, proto_mask, the key's five plen bytes).
        self._walk = tuple(
            (m.best_rank, m.has_ports, m.src_mask, m.dst_mask, m.sport_mask, m.dport_mask, m.proto_mask, bytes(m.plens))
            for m in rows
        )
        # Keys are the exact bytes the kernel map holds (pack.map_contents
        # builds them the same way); values are kept decoded.
        key_pack = pack.compiled(layout.RULE_KEY).pack
        self.rules: dict[bytes, tuple[int, int, int]] = {}
        for e in program.entries:
            k, sh = e.key, e.key.shape
            kb = key_pack(sh.src_plen, sh.dst_plen, sh.sport_plen, sh.dport_plen, sh.proto_plen, k.proto, k.src, k.dst, k.sport, k.dport)
            self.rules[kb] = (e.rank, e.slot, int(e.action))
        self.slots: dict[int, SlotInfo] = {s.slot: s for s in program.slots}
        # The key is the mask's five plen bytes + the rest of RULE_KEY
        # (proto, padding, masked addresses and ports), packed per packet.
        fmt = pack.compiled(layout.RULE_KEY).format
        if not fmt.startswith(">BBBBB"):
            raise AssertionError("layout.RULE_KEY no longer starts with the five plen bytes")
        self._tail = struct.Struct(">" + fmt[6:])

    def evaluate(self, pkt: Packet) -> Decision:
        proto, src, dst = pkt.proto, pkt.src, pkt.dst
        has_ports = pkt.has_ports and proto in PORT_PROTOCOLS
        sport, dport = (pkt.sport, pkt.dport) if has_ports else (0, 0)
        best = None
        best_rank = 1 << 64
        lookup = self.rules.get
        tail = self._tail.pack
        for rank0, mports, smask, dmask, spmask, dpmask, pmask, plens in self._walk:
            if rank0 >= best_rank:
                break  # masks are in ascending best rank: no later one can win
            if mports and not has_ports:
                continue  # a port constraint never matches a packet without ports
            hit = lookup(plens + tail(proto & pmask, src & smask, dst & dmask, sport & spmask, dport & dpmask))
            if hit is not None and hit[0] < best_rank:
                best, best_rank = hit, hit[0]
        default = self.program.default_action
        if best is None:
            return Decision(None, verdict_of(None, default))
        rank, slot, action_code = best
        info = self.slots.get(slot)
        action = Action(action_code)
        return Decision(
            action, verdict_of(action, default), slot, info.rule_id if info else None, rank, info.loc if info else None
        )


_CACHE: list = [None, None]


def index_of(program: Program) -> Index:
    if _CACHE[0] is not program:
        _CACHE[0], _CACHE[1] = program, Index(program)
    return _CACHE[1]


def evaluate(program: Program, packet: Packet) -> Decision:
    """The decision of the data plane holding `program` for `packet`."""
    return index_of(program).evaluate(packet)


# --------------------------------------------------------------------------
# explanation over the rules

#: Losing rules `explain`'s text shows per reason before "and N more".
LOSERS_PER_REASON = 3


@dataclass(frozen=True)
class Match:
    atom: Atom
    specificity: int

    @property
    def rule_id(self) -> str:
        return self.atom.rule.id


@dataclass(frozen=True)
class Explanation:
    packet: Packet
    decision: Decision
    matches: tuple[Match, ...]  # best atom per matching rule, winner first

    def lines(self, root: str, per_reason: int | None = LOSERS_PER_REASON) -> list[str]:
        """The winner, then the losers grouped by why they lose (lower
        priority; equal priority, lower specificity; the id tie-break), at
        most `per_reason` of each (None: all) and "and N more"."""
        out = []
        if not self.matches:
            out.append("  no rule matches: the default action applies")
            return out
        win = self.matches[0]
        out.append(self._line("winner", win, root))
        by_reason: dict[int, list[Match]] = {}
        for m in self.matches[1:]:
            by_reason.setdefault(_reason(win, m), []).append(m)
        for reason in sorted(by_reason):
            losers = by_reason[reason]
            shown = losers if per_reason is None else losers[:per_reason]
            for m in shown:
                out.append(self._line("loses ", m, root))
                out.append(f"         because {_why(win, m)}")
            if len(shown) < len(losers):
                out.append(f"  and {len(losers) - len(shown)} more {_REASONS[reason]} (--format json lists every match)")
        return out

    @staticmethod
    def _line(head: str, m: Match, root: str) -> str:
        r = m.atom.rule
        return (
            f"  {head} {r.id} ({r.action.name}, priority {r.priority}, specificity {m.specificity}) "
            f"at {display_location(r.loc, root)}: {_atom_text(m.atom)}"
        )


_REASONS = {
    0: "rules lose on priority",
    1: "rules lose on specificity at equal priority",
    2: "rules lose on the id tie-break",
}


def _reason(win: Match, lose: Match) -> int:
    if win.atom.rule.priority != lose.atom.rule.priority:
        return 0
    return 1 if win.specificity != lose.specificity else 2


def _atom_text(a: Atom) -> str:
    parts = [f"src {a.src}", f"dst {a.dst}"]
    if not a.sport.is_any:
        parts.append(f"sport {a.sport}")
    if not a.dport.is_any:
        parts.append(f"dport {a.dport}")
    parts.append(f"protocol {a.protocol.name}")
    return ", ".join(parts)


def _why(win: Match, lose: Match) -> str:
    wr, lr = win.atom.rule, lose.atom.rule
    if wr.priority != lr.priority:
        return f"priority {lr.priority} < {wr.priority}"
    if win.specificity != lose.specificity:
        return f"equal priority, specificity {lose.specificity} < {win.specificity}"
    return f"equal priority and specificity, id {lr.id!r} sorts after {wr.id!r}"


def explain(policy: Policy, program: Program, packet: Packet, now=None) -> Explanation:
    """Every live rule that matches `packet` (its best matching atom), in the
    total order of DESIGN.md, with the program's decision. `now` selects
    the live rules; by default those that compiled into `program`."""
    live_ids = {s.rule_id for s in program.slots}
    rules = [r for r in policy.rules if r.id in live_ids] if now is None else list(policy.live_rules(now))
    matches = []
    for r in rules:
        best = None
        for a in atoms_of(r):
            if atom_matches(a, packet) and (best is None or rank_key(a) < rank_key(best)):
                best = a
        if best is not None:
            matches.append(Match(best, specificity(best)))
    matches.sort(key=lambda m: rank_key(m.atom))
    return Explanation(packet, evaluate(program, packet), tuple(matches))


def decision_json(packet: Packet, decision: Decision, root: str) -> dict:
    return {
        "packet": str(packet),
        "action": decision.action_name,
        "verdict": decision.verdict,
        "rule": decision.rule_id,
        "file": relative_file(decision.loc.file, root) if decision.loc else None,
        "line": decision.loc.line if decision.loc else None,
    }


def decision_text(packet: Packet, decision: Decision, program: Program, root: str) -> str:
    if decision.action is None:
        return f"{packet}  ->  DEFAULT {program.default_action.name} ({decision.verdict})"
    where = f" [{display_location(decision.loc, root)}]" if decision.loc else ""
    return f"{packet}  ->  {decision.action_name} ({decision.verdict}) by {decision.rule_id}{where}"
