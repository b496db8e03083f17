"""Small builders shared by the compiler, codegen, simulator and oracle tests."""

from __future__ import annotations

from datetime import datetime, timezone

from pepc.policy.model import Action, ANY_PORT, ANY_PREFIX, Location, Policy, PortRange, Prefix, Protocol, Rule

NOW = datetime(2026, 11, 23, tzinfo=timezone.utc)


def P(text: str) -> Prefix:
    return Prefix.parse(text)


def ports(*items) -> tuple[PortRange, ...]:
    out = []
    for it in items:
        if it == "any":
            out.append(ANY_PORT)
        elif isinstance(it, tuple):
            out.append(PortRange(*it))
        else:
            out.append(PortRange(it, it))
    return tuple(out)


def rule(rid: str, action: Action = Action.ALLOW, *, line: int = 1, file: str = "p/rules.yaml", src=None, dst=None,
         sports=None, dports=None, **kw) -> Rule:
    return Rule(
        id=rid,
        action=action,
        loc=Location(file, line, 5),
        src=tuple(P(s) for s in src) if src else (ANY_PREFIX,),
        dst=tuple(P(d) for d in dst) if dst else (ANY_PREFIX,),
        sports=ports(*sports) if sports else (ANY_PORT,),
        dports=ports(*dports) if dports else (ANY_PORT,),
        **kw,
    )


def policy(*rules: Rule, root: str = "p") -> Policy:
    return Policy(root=root, rules=tuple(rules))


__all__ = ["NOW", "P", "ports", "rule", "policy", "Action", "Protocol"]
