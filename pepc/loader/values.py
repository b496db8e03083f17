"""Parsers for the value syntaxes of the policy language: addresses, ports,
protocols, timestamps. Each returns a value or raises ValueProblem with
the finding code, a message and a help text; the caller adds the location.
"""

from __future__ import annotations

import ipaddress
import math
import re
from datetime import datetime, timezone

from pepc.model import ANY_PORT, ANY_PREFIX, Action, PortRange, Prefix, Protocol

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")
_DOTTED = re.compile(r"[0-9./]+\Z")
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


_prefix_cache: dict[str, Prefix | Ref | ValueProblem] = {}


def parse_address(text: str) -> Prefix | Ref:
    """`any`, `0.0.0.0`, an IPv4 address or CIDR (host bits zero), or a name."""
    hit = _prefix_cache.get(text)
    if hit is None:
        hit = _parse_address(text)
        if len(_prefix_cache) < 65536:
            _prefix_cache[text] = hit
    if isinstance(hit, ValueProblem):
        raise ValueProblem(hit.code, hit.message, hit.help)  # a fresh one: raising keeps a traceback
    return hit


def _parse_address(text: str) -> Prefix | Ref | ValueProblem:
    t = text.strip()
    if t.lower() == "any" or t == "0.0.0.0":
        return ANY_PREFIX
    if _DOTTED.match(t):
        try:
            net = ipaddress.IPv4Network(t, strict=True)
            return Prefix(int(net.network_address), net.prefixlen)
        except ValueError as err:
            try:
                loose = ipaddress.IPv4Network(t, strict=False)
            except ValueError:
                return ValueProblem("bad-cidr", f"{text!r} is not a valid IPv4 address or CIDR ({err})")
            return ValueProblem(
                "bad-cidr",
                f"{text!r} has host bits set",
                f"did you mean {loose}? (the network address of {t})",
            )
    if NAME_RE.match(t):
        return Ref(t)
    if ":" in t:
        return ValueProblem("bad-cidr", f"{text!r} is not an IPv4 address", "pepc filters IPv4; IPv6 frames always pass")
    return ValueProblem("bad-cidr", f"{text!r} is not an IPv4 address, a CIDR or a network name")


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
        raise ValueProblem("bad-protocol", f"{value!r} is not a protocol: expected ANY, TCP, UDP or ICMP") from None


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
