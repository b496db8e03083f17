"""Reading the host configuration, `pepc.yaml`.

Where: `--config FILE` if given (it must exist), else `pepc.yaml` beside the
policy directory (`policies.d/../pepc.yaml`); a missing default file means
all defaults. Read with the same safe reader as policies and validated by
`schema/config.schema.json`; every problem is a `bad-config` finding (or a
syntax code) at its location.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from pepc.policy.config import Config, Interface, XdpMode
from pepc.policy.diagnostics import CODES, Finding, PolicyError, Severity
from pepc.policy.config import Capacities
from pepc.loader.files import read_and_parse
from pepc.loader.schema import did_you_mean, findings_for
from pepc.policy.model import Action, Location

CONFIG_NAME = "pepc.yaml"


def default_config_path(policy_dir: str | os.PathLike) -> str:
    """`pepc.yaml` beside the policy directory, shown relative if the
    directory was given relative (`policies.d/` -> `pepc.yaml`, `.` -> `../pepc.yaml`)."""
    given = os.fspath(policy_dir)
    path = os.path.join(os.path.dirname(os.path.abspath(given)), CONFIG_NAME)
    return path if os.path.isabs(given) else os.path.relpath(path)


def load_config(path: str | os.PathLike | None, policy_dir: str | os.PathLike | None = None) -> Config:
    """The host configuration; raises PolicyError with every problem."""
    explicit = path is not None
    if path is None:
        if policy_dir is None:
            return Config()
        path = default_config_path(policy_dir)
        if not os.path.lexists(path):
            return Config()
    display = os.fspath(path)
    if explicit and not os.path.exists(display):
        raise PolicyError([Finding("bad-config", f"configuration file {display} does not exist", Location(display))])
    if os.path.isdir(display):
        raise PolicyError([Finding("bad-config", f"{display} is a directory, not a configuration file", Location(display))])
    parsed = read_and_parse(display, display)
    if parsed.findings:
        raise PolicyError(parsed.findings)
    if len(parsed.docs) > 1:
        raise PolicyError(
            [Finding("bad-config", "pepc.yaml holds one document, this file has several", parsed.marks.loc(parsed.docs[1].pos))]
        )
    doc = parsed.docs[0] if parsed.docs else None
    data = doc.value if doc else None
    pos = doc.pos if doc else (1, 1)
    marks = parsed.marks
    findings = [f for _, f in findings_for("config", data, marks, pos, code="bad-config", unknown_code="bad-config")]
    if findings:
        raise PolicyError(findings)
    data = data or {}

    def at(*path: str | int):
        return marks.loc(marks.path_pos(data, pos, list(path)))

    problems: list[Finding] = []
    interfaces = []
    seen_if: dict[str, Location] = {}
    for i, item in enumerate(data.get("interfaces") or []):
        name, mode = (item, "auto") if isinstance(item, str) else (item["name"], item.get("mode", "auto"))
        if name in seen_if:
            problems.append(Finding("bad-config", f"interface {name!r} is listed twice", at("interfaces", i)))
            continue
        seen_if[name] = at("interfaces", i)
        if "/" in name or name in (".", "..") or any(c.isspace() for c in name):
            problems.append(Finding("bad-config", f"{name!r} is not a valid interface name", at("interfaces", i)))
            continue
        interfaces.append(Interface(name, XdpMode(mode)))

    caps_data = data.get("capacities") or {}
    caps = Capacities(**caps_data)
    ring = caps.ring_bytes
    if ring & (ring - 1):
        problems.append(
            Finding(
                "bad-config",
                f"capacities.ring_bytes {ring} is not a power of two",
                at("capacities", "ring_bytes"),
                help="BPF ring buffers are a power of two bytes, at least one page (4096)",
            )
        )

    listen = data.get("metrics_listen", Config.metrics_listen)
    if "metrics_listen" in data and not _valid_listen(listen):
        problems.append(
            Finding("bad-config", f"metrics_listen {listen!r} is not host:port", at("metrics_listen"), help="e.g. 127.0.0.1:9477 or [::1]:9477")
        )

    severity = []
    for code, level in (data.get("severity") or {}).items():
        if code not in CODES:
            guess = did_you_mean(code, CODES)
            problems.append(
                Finding(
                    "bad-config",
                    f"severity: {code!r} is not a finding code" + (f"; did you mean {guess!r}?" if guess else ""),
                    marks.loc(marks.path_pos(data, pos, ["severity", code], key=True)),
                )
            )
            continue
        if CODES[code].blocks_load:
            problems.append(
                Finding(
                    "bad-config",
                    f"severity: {code!r} is a load error; its severity cannot be changed",
                    marks.loc(marks.path_pos(data, pos, ["severity", code], key=True)),
                )
            )
            continue
        severity.append((code, Severity.parse(level)))
    gate = []
    for i, code in enumerate(data.get("apply_gate", Config.apply_gate) or []):
        where = marks.loc(marks.path_pos(data, pos, ["apply_gate", i]))
        if code not in CODES:
            guess = did_you_mean(code, CODES)
            problems.append(
                Finding("bad-config", f"apply_gate: {code!r} is not a finding code" + (f"; did you mean {guess!r}?" if guess else ""), where)
            )
        elif CODES[code].blocks_load:
            problems.append(
                Finding("bad-config", f"apply_gate: {code!r} is a load error; a policy with one is always refused", where,
                        help="list only codes of findings about a policy that loads (shadowed, capacity, ...)")
            )
        elif code not in gate:
            gate.append(code)
    if problems:
        raise PolicyError(problems)

    return Config(
        default_action=Action[data.get("default_action", "ALLOW").upper()],
        interfaces=tuple(interfaces),
        pin_root=data.get("pin_root", Config.pin_root),
        state_dir=data.get("state_dir", Config.state_dir),
        run_dir=data.get("run_dir", Config.run_dir),
        capacities=caps,
        event_cap=data.get("event_cap", Config.event_cap),
        metrics_listen=listen,
        severity=tuple(severity),
        apply_gate=tuple(gate),
        source=display,
    )


def _valid_listen(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return False
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
            return True
        except ValueError:
            return False
    return bool(host) and " " not in host
