"""Findings: the one shape in which every stage reports a problem.

A Finding is what a compiler calls a diagnostic: a severity, a stable
kebab-case code, a message, where, and related places. Codes are declared
once in CODES with their default severity and a help text, so that the
text, JSON, SARIF and GitHub renderers and the docs all read one table.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from pepc.policy.model import Location


class Severity(enum.IntEnum):
    INFO = 1
    WARNING = 2
    ERROR = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> "Severity":
        return cls[text.upper()]


class ExitCode(enum.IntEnum):
    OK = 0
    FINDINGS = 1  # findings at or above --fail-on; `plan --exit-code`: changes pending; `test`: failures
    INVALID = 2  # the policy cannot be loaded, or bad usage
    ENVIRONMENT = 3  # missing tool, no permission, kernel refused


@dataclass(frozen=True)
class CodeInfo:
    code: str
    severity: Severity
    summary: str
    help: str = ""
    #: A finding of a "load" code means the policy cannot be used at all (exit 2).
    blocks_load: bool = False


def _c(code: str, sev: Severity, summary: str, help: str = "", blocks_load: bool = False) -> CodeInfo:
    return CodeInfo(code, sev, summary, help, blocks_load)


E, W, I = Severity.ERROR, Severity.WARNING, Severity.INFO

#: Every code pepc can emit. Stable: renaming one is a breaking change.
CODES: dict[str, CodeInfo] = {
    c.code: c
    for c in [
        # --- input: the policy cannot be loaded ---------------------------
        _c("io-error", E, "a file or directory cannot be read", "check the path and its permissions", True),
        _c("not-a-directory", E, "the policy path is not a directory", "pass the policies.d directory", True),
        _c("empty-directory", E, "the policy directory holds no policy files", "add *.yaml, *.yml or *.json files", True),
        _c("file-too-large", E, "a policy file is larger than the size limit", "split it into several files", True),
        _c("symlink-loop", E, "a symbolic link loops back into the tree", "remove the link", True),
        _c("encoding", E, "a file is not valid UTF-8", "save the file as UTF-8", True),
        _c("yaml-syntax", E, "the file is not valid YAML or JSON", "", True),
        _c("duplicate-key", E, "a mapping has the same key twice", "remove one of the keys", True),
        _c("alias-limit", E, "too many YAML aliases or too deep nesting", "policies need no anchors/aliases at this scale", True),
        _c("schema", E, "a document does not have the shape of a policy", "", True),
        _c("unknown-key", E, "a key pepc does not know", "", True),
        _c("bad-cidr", E, "an address or prefix is not valid IPv4 or IPv6", "write a.b.c.d, a.b.c.d/len, 2001:db8::1 or 2001:db8::/32 with host bits zero", True),
        _c("bad-port", E, "a port or port range is not valid", "ports are 1-65535, ranges \"lo-hi\" with lo <= hi", True),
        _c("bad-protocol", E, "a protocol is not one of ANY, TCP, UDP, ICMP, ICMPV6", "", True),
        _c("protocol-mismatch", E, "src and dst name different protocols", "name the protocol once, or make them agree", True),
        _c("family-mismatch", E, "src, dst and protocol leave no address family (IPv4/IPv6) in common", "split the rule into an IPv4 and an IPv6 rule", True),
        _c("bad-timestamp", E, "a time is neither RFC 3339 nor Unix seconds", "write 2026-12-01T00:00:00Z or 1764547200", True),
        _c("bad-rate-limit", E, "rate_limit_bps/burst_bytes do not fit the action", "RATE_LIMIT needs rate_limit_bps > 0; other actions take none (or 0)", True),
        _c("unknown-network", E, "a network name is used but not defined", "", True),
        _c("unknown-service", E, "a service name is used but not defined", "", True),
        _c("duplicate-network", E, "a network name is defined twice", "names are global across the directory", True),
        _c("duplicate-service", E, "a service name is defined twice", "names are global across the directory", True),
        _c("cyclic-reference", E, "network or service definitions refer to each other in a cycle", "", True),
        _c("duplicate-id", E, "two rules have the same id", "rule ids are unique across the directory", True),
        _c("bad-config", E, "the host configuration (pepc.yaml) is not valid", "", True),
        _c("bad-plan", E, "a previous plan (--previous) is not a plan.json pepc wrote", "pass the plan.json of an earlier `pepc compile`", True),
        _c("bad-packet", E, "a packet for `pepc simulate`/`pepc test` is not valid", "write e.g. `tcp 10.0.0.1:1234 > 192.168.1.100:80`, `tcp [2001:db8::1]:40000 > [2001:db8::10]:443`, `icmp A > B`, `icmpv6 A > B type=135`, `proto 47 A > B`, optional `len=N` and `frag`", True),
        _c("bad-revision", E, "a git revision form (REV:PATH, --revision, rollback --to) cannot be resolved", "name a commit of the repository holding the policy directory", True),
        _c("bad-test", E, "a policy test file is not valid", "see docs/cli.md: pepc test", True),
        # --- lifecycle (info) ---------------------------------------------
        _c("expired", I, "the rule has expired and is not in the data plane", "remove the rule or move expires_at"),
        _c("disabled", I, "the rule is disabled and is not in the data plane", ""),
        # --- anomalies (checker) -------------------------------------------
        _c("shadowed", E, "the rule can never win for any packet", "raise its priority or remove it"),
        _c("redundant", W, "removing the rule changes no packet's action", "remove it"),
        _c("conflict", W, "overlapping rules with different actions are decided only by tie-breaks", "give one rule an explicit higher priority"),
        _c("correlation", I, "rules partially overlap with different actions, resolved by priority", ""),
        _c("generalization", I, "a rule generalizes a higher-ranked rule with a different action", ""),
        _c("never-matches", E, "the rule cannot match any packet", ""),
        _c("capacity", E, "the compiled program does not fit the configured maps", "raise the capacities in pepc.yaml"),
        _c("unreachable-default", I, "no packet reaches the default action", ""),
        _c("unused-suppression", I, "a suppression no longer suppresses anything", "remove it so suppressions don't rot"),
    ]
}


@dataclass(frozen=True)
class Related:
    message: str
    loc: Location
    rule: str | None = None  # the related rule's id, when the place is a rule (for tools: no message parsing)


@dataclass(frozen=True)
class Finding:
    code: str
    message: str
    loc: Location
    severity: Severity | None = None  # None: the code's default
    rule: str | None = None
    related: tuple[Related, ...] = ()
    help: str | None = None  # None: the code's default help
    witness: str | None = None  # a packet in `pepc simulate` syntax that shows the problem

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"unregistered finding code {self.code!r}")
        if self.severity is None:
            object.__setattr__(self, "severity", CODES[self.code].severity)
        if self.help is None:
            object.__setattr__(self, "help", CODES[self.code].help)

    @property
    def blocks_load(self) -> bool:
        return CODES[self.code].blocks_load

    def sort_key(self) -> tuple:
        return (self.loc.file, self.loc.line, self.loc.column, self.code, self.message)


class PolicyError(Exception):
    """The policy cannot be loaded or compiled; carries every finding.

    From the loader it may also carry `partial`: the Policy of the files
    that loaded cleanly, `without` the files (paths as displayed) that did
    not, so `pepc check` can still report the rule anomalies of the rest.
    """

    def __init__(
        self,
        findings: list[Finding] | tuple[Finding, ...],
        *,
        partial: Any = None,
        without: tuple[str, ...] = (),
    ):
        self.findings = tuple(sorted(findings, key=Finding.sort_key))
        self.partial = partial
        self.without = tuple(without)
        super().__init__("; ".join(f"{f.loc}: {f.message}" for f in self.findings[:3]))


class EnvironmentProblem(Exception):
    """Something outside the policy is wrong (permissions, missing tool,
    kernel refused). Exit code 3; the message says how to fix it."""

    def __init__(self, message: str, hint: str = ""):
        self.message = message
        self.hint = hint
        super().__init__(message)


@dataclass
class Report:
    """Findings collected by a run, plus counts for the summary."""

    findings: list[Finding] = field(default_factory=list)
    files: int = 0
    rules: int = 0

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)

    def sorted(self) -> list[Finding]:
        return sorted(self.findings, key=Finding.sort_key)

    def count(self, severity: Severity) -> int:
        return sum(1 for f in self.findings if f.severity == severity)

    def worst(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)
