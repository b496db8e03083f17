"""Evaluate packets over a compiled Program, the way the XDP program does.

The simulator does not look at rules: it reads the map contents a
generation would hold (the same bytes the kernel gets), walks the masks in
order with the same early exit, builds the same hash key and looks it up.
`explain` is the other view: every rule/atom that matches by the semantics
of docs/semantics.md, and why the winner wins. Tests hold the two to each other.

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

from pepc.compiler import layout
from pepc.compiler import pack
from pepc.policy.diagnostics import Finding, PolicyError
from pepc.policy.model import Action, Location, Policy, Protocol
from pepc.compiler.program import Program, SlotInfo
from pepc.policy.semantics import PORT_PROTOCOLS, Atom, Packet, atom_matches, atoms_of, no_match_action, rank_key, specificity, verdict_of
from pepc.policy.sources import display_location, relative_file


# --------------------------------------------------------------------------
# packet syntax

class PacketSyntaxError(ValueError):
    def __init__(self, message: str, column: int = 1):
        super().__init__(message)
        self.message = message
        self.column = column


_PROTO_NAMES = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}
_TOKEN = re.compile(r"\S+")
#: ports: must be written / may be (and are ignored) / must not be
NEED, MAY, NO = "need", "may", "no"


def _parse_addr(tok: str, col: int, ports: str, what: str) -> tuple[int, int, bool]:
    """An address token: `a.b.c.d[:port]`, `[v6]:port`, `v6` (or `[v6]`
    without a port). Returns (address, port, is IPv6)."""
    if "%" in tok:
        raise PacketSyntaxError(f"{what}: {tok!r} has a zone id; a packet's address has none (write it without `%...`)", col + tok.index("%"))
    port_text: str | None = None
    if tok.startswith("["):
        close = tok.find("]")
        if close < 0:
            raise PacketSyntaxError(f"{what}: `[` without `]`: write [IPV6]:PORT", col)
        text, tail = tok[1:close], tok[close + 1:]
        if tail:
            if not tail.startswith(":"):
                raise PacketSyntaxError(f"{what}: unexpected {tail!r} after `]`: write [IPV6]:PORT", col + close + 1)
            port_text = tail[1:]
        pcol = col + close + 2
        v6 = True
    elif tok.count(":") > 1:  # IPv6 without brackets: no port can follow
        text, v6, pcol = tok, True, col
        if ports == NEED:
            raise PacketSyntaxError(
                f"{what}: an IPv6 address with a port is written [ADDRESS]:PORT, e.g. [2001:db8::1]:443", col
            )
    else:
        text, sep, ptext = tok.partition(":")
        port_text = ptext if sep else None
        pcol = col + len(text) + 1
        v6 = False
    port = 0
    if port_text is not None:
        if ports == NO:
            raise PacketSyntaxError(f"{what}: this packet carries no ports (write an address without `:port`)", col)
        if not port_text.isdigit() or not 0 <= int(port_text) <= 0xFFFF:
            raise PacketSyntaxError(f"{what}: port {port_text!r} is not 0-65535", pcol)
        port = int(port_text)
    elif ports == NEED:
        example = "[ADDRESS]:PORT" if v6 else "ADDRESS:PORT"
        raise PacketSyntaxError(f"{what}: a tcp/udp packet needs {example} (or add `frag` for a non-first fragment)", col)
    try:
        addr = int(ipaddress.IPv6Address(text) if v6 else ipaddress.IPv4Address(text))
    except ValueError:
        family = "an IPv6" if v6 else "an IPv4 or IPv6"
        raise PacketSyntaxError(f"{what}: {text!r} is not {family} address", col + (1 if tok.startswith("[") else 0)) from None
    return addr, port, v6


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
    `icmp A > B`, `proto N A > B`; IPv6 as `tcp [2001:db8::1]:40000 >
    [2001:db8::10]:443`, `icmpv6 A > B [type=N]`, `proto N A > B`. `frag`
    is a non-first fragment (no ports are read, so written ports are
    optional and ignored). Raises PacketSyntaxError with a 1-based column."""
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
        raise PacketSyntaxError(f"unknown protocol {word!r}: expected tcp, udp, icmp, icmpv6 or `proto N`", col)
    rest = toks[i:]
    if len(rest) < 3 or rest[1][0] != ">":
        for tok, tcol in rest:
            if tok in ("->", "=>", "-->"):
                raise PacketSyntaxError(f"write `>` between source and destination, not `{tok}`", tcol)
            if ">" in tok and tok != ">":
                raise PacketSyntaxError("expected `SOURCE > DESTINATION`: put spaces around `>`", tcol + tok.index(">"))
        where = rest[1][1] if len(rest) > 1 else (rest[0][1] + len(rest[0][0]) if rest else len(text) + 1)
        raise PacketSyntaxError("expected `SOURCE > DESTINATION` (with spaces around `>`)", where)
    length, frag, icmp_type = 64, False, None
    for tok, tcol in rest[3:]:
        low = tok.lower()
        if low == "frag":
            frag = True
        elif low.startswith("len="):
            val = tok[4:]
            if not val.isdigit() or not 1 <= int(val) <= 0xFFFF:
                raise PacketSyntaxError(f"len={val}: the frame length must be 1-65535", tcol)
            length = int(val)
        elif low.startswith("type="):
            val = tok[5:]
            if proto != 58:
                raise PacketSyntaxError("type=N is the ICMPv6 type: only an icmpv6 packet takes it", tcol)
            if not val.isdigit() or int(val) > 255:
                raise PacketSyntaxError(f"type={val}: the ICMPv6 type must be 0-255", tcol)
            icmp_type = int(val)
        else:
            raise PacketSyntaxError(f"unexpected {tok!r}: expected `len=N`, `frag` or (icmpv6) `type=N`", tcol)
    ports_proto = proto in PORT_PROTOCOLS
    src_tok, dst_tok = rest[0], rest[2]
    with_port = ports_proto and not frag
    # a non-first fragment carries no L4 header: ports may be written but are not read
    ports = NEED if with_port else MAY if ports_proto else NO
    src, sport, v6 = _parse_addr(src_tok[0], src_tok[1], ports, "source")
    dst, dport, dst_v6 = _parse_addr(dst_tok[0], dst_tok[1], ports, "destination")
    if dst_v6 != v6:
        fam, dfam = ("IPv6", "IPv4") if v6 else ("IPv4", "IPv6")
        raise PacketSyntaxError(
            f"destination: the source is {fam} but the destination is {dfam}; a packet has one family", dst_tok[1]
        )
    if frag and icmp_type is not None:
        col = next(c for t, c in rest[3:] if t.lower().startswith("type="))
        raise PacketSyntaxError("a non-first fragment carries no ICMPv6 header: drop `type=` or `frag`", col)
    return Packet(
        src=src, dst=dst, proto=proto, sport=sport, dport=dport, has_ports=with_port, fragment=frag,
        length=length, v6=v6, icmp_type=icmp_type,
    )


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
            if sh.v6:
                continue  # self.rules6 below
            kb = key_pack(sh.src_plen, sh.dst_plen, sh.sport_plen, sh.dport_plen, sh.proto_plen, k.proto, k.src, k.dst, k.sport, k.dport)
            self.rules[kb] = (e.rank, e.slot, int(e.action))
        self.slots: dict[int, SlotInfo] = {s.slot: s for s in program.slots}
        # The key is the mask's five plen bytes + the rest of RULE_KEY
        # (proto, padding, masked addresses and ports), packed per packet.
        fmt = pack.compiled(layout.RULE_KEY).format
        if not fmt.startswith(">BBBBB"):
            raise AssertionError("layout.RULE_KEY no longer starts with the five plen bytes")
        self._tail = struct.Struct(">" + fmt[6:])

        # IPv6: pepc_masks6 in walk order and pepc_rules6 as the kernel gets
        # them. (best_rank, has_ports, src_mask, dst_mask, sport_mask,
        # dport_mask, proto_mask, the key's five plen bytes); the addresses
        # are 128-bit ints.
        rows6 = []
        for m6 in program.masks6:
            f = pack.mask6_fields(pack.mask_value(m6))
            plens = bytes((f["src_plen"], f["dst_plen"], f["sport_plen"], f["dport_plen"], f["proto_plen"]))
            rows6.append(
                (f["best_rank"], bool(f["sport_plen"] or f["dport_plen"]), f["src_mask"], f["dst_mask"],
                 f["sport_mask"], f["dport_mask"], 0xFF if f["proto_plen"] else 0, plens)
            )
        self._walk6 = tuple(rows6)
        unval = layout.RULE_VAL.unpack_values
        self.rules6: dict[bytes, tuple[int, int, int]] = {kb: unval(vb) for kb, vb in program.rule6_contents().items()}
        off = layout.RULE6_KEY.offsets
        if (off["proto"], off["src"], off["dst"], off["sport"], off["dport"], layout.RULE6_KEY.size) != (5, 8, 24, 40, 42, 48):
            raise AssertionError("layout.RULE6_KEY changed: update Index._key6")

    @staticmethod
    def _key6(plens: bytes, proto: int, src: int, dst: int, sport: int, dport: int) -> bytes:
        """A pepc_rule6_key: plens, proto, 2 pad, src[16], dst[16], sport, dport, 4 pad."""
        return b"".join((plens, bytes((proto, 0, 0)), src.to_bytes(16, "big"), dst.to_bytes(16, "big"), _PORTS6(sport, dport)))

    def evaluate(self, pkt: Packet) -> Decision:
        proto, src, dst = pkt.proto, pkt.src, pkt.dst
        has_ports = pkt.has_ports and proto in PORT_PROTOCOLS
        sport, dport = (pkt.sport, pkt.dport) if has_ports else (0, 0)
        best = None
        best_rank = 1 << 64
        if pkt.v6:
            lookup = self.rules6.get
            key6 = self._key6
            guarded = pkt.guarded
            for rank0, mports, smask, dmask, spmask, dpmask, pmask, plens in self._walk6:
                if rank0 >= best_rank:
                    break
                if mports and not has_ports:
                    continue
                if guarded and not pmask:
                    continue  # the lockout guard: only masks that hold the protocol
                hit = lookup(key6(plens, proto & pmask, src & smask, dst & dmask, sport & spmask, dport & dpmask))
                if hit is not None and hit[0] < best_rank:
                    best, best_rank = hit, hit[0]
        else:
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
            return Decision(None, verdict_of(None, no_match_action(pkt, default)))
        rank, slot, action_code = best
        info = self.slots.get(slot)
        action = Action(action_code)
        return Decision(
            action, verdict_of(action, default), slot, info.rule_id if info else None, rank, info.loc if info else None
        )


_PORTS6 = struct.Struct(">HH4x").pack  # sport, dport and the tail padding of pepc_rule6_key

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
            if self.packet.guarded:
                out.append("  no rule matches: the lockout guard passes this ICMPv6 type whatever the default action")
            else:
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
    total order of docs/semantics.md, with the program's decision. `now` selects
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
        if packet.guarded:  # not the default: the lockout guard decides
            return f"{packet}  ->  DEFAULT, lockout guard ({decision.verdict})"
        return f"{packet}  ->  DEFAULT {program.default_action.name} ({decision.verdict})"
    where = f" [{display_location(decision.loc, root)}]" if decision.loc else ""
    return f"{packet}  ->  {decision.action_name} ({decision.verdict}) by {decision.rule_id}{where}"
