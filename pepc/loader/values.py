"""Parsers for the value syntaxes of the policy language: addresses, ports,
protocols, timestamps. Each returns a value or raises ValueProblem with
the finding code, a message and a help text; the caller adds the location.
"""

from __future__ import annotations

import ipaddress
import math
import re
from datetime import datetime, timezone

from pepc.policy.model import ANY_BOTH, ANY_PORT, Action, PortRange, Prefix, Protocol

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")
_DOTTED = re.compile(r"[0-9./]+\Z")
#: what an IPv6 address or prefix can be made of (a v4-mapped tail has dots)
_COLONED = re.compile(r"[0-9A-Fa-f:./]+\Z")
_RANGE = re.compile(r"([0-9]+)\s*-\s*([0-9]+)\Z")
_DIGITS = re.compile(r"[0-9]+\Z")
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})\Z"
)
_NAIVE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}(?:[Tt ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?\Z")
_UNIX = re.compile(r"[0-9]+(?:\.[0-9]+)?\Z")


class ValueProblem(Exception):
    def __init__(self, code: str, message: str, help: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.help = help


class Ref(str):
    """A name that refers to a network or service definition."""


#: "any" as an address: every address of both families. The loader keeps
#: only the families the rule applies to (`pepc.loader.policy`).
ANY_ADDRESS = ANY_BOTH

Address = Prefix | Ref | tuple[Prefix, ...]

_prefix_cache: dict[str, Address | ValueProblem] = {}


def parse_address(text: str) -> Address:
    """`any` / `0.0.0.0` (ANY_ADDRESS: both families), an IPv4 or IPv6
    address or prefix (host bits zero), or a network name."""
    hit = _prefix_cache.get(text)
    if hit is None:
        hit = _parse_address(text)
        if len(_prefix_cache) < 65536:
            _prefix_cache[text] = hit
    if isinstance(hit, ValueProblem):
        raise ValueProblem(hit.code, hit.message, hit.help)  # a fresh one: raising keeps a traceback
    return hit


def _parse_address(text: str) -> Address | ValueProblem:
    t = text.strip()
    # 0.0.0.0 is the legacy format's "any" and has always meant "any" here:
    # now that rules match IPv6 too it is any address of either family
    # (docs/decisions.md). 0.0.0.0/0 and ::/0 name one family's whole space.
    if t.lower() == "any" or t == "0.0.0.0":
        return ANY_ADDRESS
    if _DOTTED.match(t):
        return _parse_net(text, t, ipaddress.IPv4Network, "IPv4")
    if ":" in t:
        return _parse_v6(text, t)
    if NAME_RE.match(t):
        return Ref(t)
    return ValueProblem("bad-cidr", f"{text!r} is not an IPv4 or IPv6 address, a prefix or a network name")


def _parse_v6(text: str, t: str) -> Prefix | ValueProblem:
    if "%" in t:
        addr = t.split("%", 1)[0] + ("/" + t.split("/", 1)[1] if "/" in t.split("%", 1)[1] else "")
        return ValueProblem(
            "bad-cidr",
            f"{text!r} has a zone id ({t[t.index('%'):].split('/')[0]})",
            f"a policy names addresses, not interfaces: write {addr}",
        )
    if t.startswith("[") and "]" in t:
        inner, rest = t[1:t.index("]")], t[t.index("]") + 1:]
        if rest.startswith(":"):
            return ValueProblem("bad-cidr", f"{text!r} has a port in the address", f"write ip: {inner} and port: {rest[1:]}")
        return ValueProblem("bad-cidr", f"{text!r}: a policy writes IPv6 addresses without brackets", f"write {inner}{rest}")
    if not _COLONED.match(t):
        return ValueProblem("bad-cidr", f"{text!r} is not a valid IPv6 address or prefix")
    return _parse_net(text, t, ipaddress.IPv6Network, "IPv6")


def _parse_net(text: str, t: str, cls: type, family: str) -> Prefix | ValueProblem:
    try:
        net = cls(t, strict=True)
        return Prefix(int(net.network_address), net.prefixlen, net.version == 6)
    except ValueError as err:
        try:
            loose = cls(t, strict=False)
        except ValueError:
            return ValueProblem("bad-cidr", f"{text!r} is not a valid {family} address or prefix ({err})")
        return ValueProblem(
            "bad-cidr",
            f"{text!r} has host bits set",
            f"did you mean {loose}? (the network address of {t})",
        )


def parse_port(value: object) -> PortRange | Ref:
    """`0`/`any`, 1-65535, "lo-hi", or a service name."""
    if isinstance(value, bool):
        raise ValueProblem("bad-port", f"{str(value).lower()} is not a port")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueProblem("bad-port", f"{value!r} is not a port")
        value = int(value)
    if isinstance(value, int):
        return _single(value, str(value))
    if not isinstance(value, str):
        raise ValueProblem("bad-port", f"{value!r} is not a port")
    t = value.strip()
    if t.lower() == "any":
        return ANY_PORT
    if _DIGITS.match(t):
        if len(t) > 1 and t[0] == "0":
            raise ValueProblem("bad-port", f"{value!r}: a port with a leading zero is ambiguous", "write the port in decimal without leading zeros")
        return _single(int(t) if len(t) <= 6 else 10**6, value)
    m = _RANGE.match(t)
    if m:
        a, b = m.group(1), m.group(2)
        for part in (a, b):
            if len(part) > 1 and part[0] == "0":
                raise ValueProblem("bad-port", f"{value!r}: a port with a leading zero is ambiguous", "write ports in decimal without leading zeros")
        lo = int(a) if len(a) <= 6 else 10**6
        hi = int(b) if len(b) <= 6 else 10**6
        if lo < 1:
            raise ValueProblem("bad-port", f"{value!r}: a range starts at port 1 or above", "for every port write any")
        if hi > 65535:
            raise ValueProblem("bad-port", f"{value!r}: port {hi} is above 65535")
        if lo > hi:
            raise ValueProblem("bad-port", f"{value!r}: the range is empty ({lo} > {hi})", f"did you mean \"{hi}-{lo}\"?")
        return PortRange(lo, hi)
    if NAME_RE.match(t):
        return Ref(t)
    raise ValueProblem("bad-port", f"{value!r} is not a port, a range \"lo-hi\" or a service name")


def _single(n: int, shown: str) -> PortRange:
    if n == 0:
        return ANY_PORT
    if not 1 <= n <= 65535:
        raise ValueProblem("bad-port", f"port {shown} is out of range 1-65535")
    return PortRange(n, n)


def parse_protocol(value: str) -> Protocol:
    try:
        return Protocol[value.strip().upper()]
    except (KeyError, AttributeError):
        hint = "ICMPv6 is written ICMPV6" if isinstance(value, str) and value.strip().upper() in ("ICMP6", "IPV6-ICMP") else None
        raise ValueProblem("bad-protocol", f"{value!r} is not a protocol: expected ANY, TCP, UDP, ICMP or ICMPV6", hint) from None


def parse_action(value: str) -> Action:
    return Action[value.strip().upper()]


def parse_time(value: object) -> datetime:
    """RFC 3339 date-time, or Unix seconds as a number or numeric string: a UTC datetime."""
    example = "write an RFC 3339 time such as 2026-12-01T00:00:00Z, or Unix seconds such as 1764547200"
    if isinstance(value, bool):
        raise ValueProblem("bad-timestamp", f"{str(value).lower()} is not a time", example)
    if isinstance(value, (int, float)):
        return _from_unix(value, repr(value))
    if not isinstance(value, str):
        raise ValueProblem("bad-timestamp", f"{value!r} is not a time", example)
    t = value.strip()
    if _UNIX.match(t):
        if len(t) > 20:
            raise ValueProblem("bad-timestamp", f"{value!r} is out of range", example)
        return _from_unix(int(t) if "." not in t else float(t), repr(value))
    m = _RFC3339.match(t)
    if m:
        frac = m.group(7)
        text = t
        if frac and len(frac) > 6:  # datetime keeps microseconds; RFC 3339 allows any precision
            text = t.replace("." + frac, "." + frac[:6], 1)
        text = text[:-1] + "+00:00" if text[-1] in "Zz" else text
        try:
            return datetime.fromisoformat(text.replace("t", "T")).astimezone(timezone.utc)
        except ValueError as err:
            raise ValueProblem("bad-timestamp", f"{value!r} is not a valid time ({err})", example) from None
    if _NAIVE_TIME.match(t):
        raise ValueProblem(
            "bad-timestamp",
            f"{value!r} has no time zone",
            "RFC 3339 needs a time and an offset: add Z for UTC (e.g. 2026-12-01T00:00:00Z) or +01:00",
        )
    raise ValueProblem("bad-timestamp", f"{value!r} is neither an RFC 3339 time nor Unix seconds", example)


def _from_unix(seconds: float, shown: str) -> datetime:
    if isinstance(seconds, float) and not math.isfinite(seconds) or seconds < 0:
        raise ValueProblem("bad-timestamp", f"{shown} is not a valid Unix time (seconds since 1970, >= 0)")
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise ValueProblem("bad-timestamp", f"{shown} is out of range for a time") from None
