"""The loader: reading, validation and resolution into the IR."""

from __future__ import annotations

import textwrap
from datetime import datetime, timezone
from pathlib import Path

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pepc.policy.config import Config, XdpMode
from pepc.policy.diagnostics import PolicyError, Severity
from pepc.loader import lifecycle_findings, load_config, load_policy, parse_text
from pepc.loader.values import ValueProblem, parse_address
from pepc.policy.model import ANY4, ANY6, ANY_BOTH, ANY_PORT, ANY_PREFIX, Action, Location, PortRange, Prefix, Protocol

UTC = timezone.utc


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def load(tmp_path: Path, text: str, name: str = "p.yaml"):
    d = tmp_path / "policies.d"
    write(d, {name: text})
    return load_policy(d)


def errors(tmp_path: Path, text: str, name: str = "p.yaml", **more: str):
    d = tmp_path / "policies.d"
    write(d, {name: text, **more})
    with pytest.raises(PolicyError) as info:
        load_policy(d)
    return list(info.value.findings)


def codes(findings) -> list[str]:
    return [f.code for f in findings]


def one_rule(tmp_path: Path, body: str):
    policy = load(tmp_path, "policies:\n" + textwrap.indent(textwrap.dedent(body), "  "))
    assert len(policy.rules) == 1
    return policy.rules[0]


# --- the example directory ------------------------------------------------------


def test_examples_load(examples):
    policy = load_policy(examples)
    ids = [r.id for r in policy.rules]
    assert len(ids) == len(set(ids)) >= 10
    admins = next(n for n in policy.networks if n.name == "admins")
    assert [str(p) for p in admins.prefixes] == ["198.51.100.0/24", "2001:db8:100::/48", "100.64.0.0/16"]
    legacy = [r for r in policy.rules if r.legacy]
    assert {r.id for r in legacy} == {"legacy_backup_ssh", "legacy_ntp_replies"}
    assert all(r.rate_limit_bps == 0 for r in legacy)
    assert {r.action for r in policy.rules} == set(Action)
    assert policy.files[-1].endswith("legacy/pepctl-export.json")
    rl = policy.rule("api_rate_limit")
    assert (rl.rate_limit_bps, rl.burst_bytes) == (1048576, 262144)


def test_display_paths_join_the_path_as_given(tmp_path, monkeypatch):
    write(tmp_path / "policies.d", {"web.yaml": "policies: [{id: a, action: ALLOW}]\n"})
    monkeypatch.chdir(tmp_path)
    policy = load_policy("policies.d/")
    assert policy.root == "policies.d/"
    assert policy.rules[0].loc == Location("policies.d/web.yaml", 1, 12)
    assert policy.files == ("policies.d/web.yaml",)


def test_files_are_read_recursively_in_sorted_order_skipping_dotfiles(tmp_path):
    d = write(
        tmp_path / "p",
        {
            "b.yaml": "policies: [{id: b, action: ALLOW}]",
            "a/z.yml": "policies: [{id: az, action: ALLOW}]",
            "a.json": '[{"id": "aj", "action": "ALLOW"}]',
            ".hidden.yaml": "this is: [not read",
            "notes.txt": "ignored",
        },
    )
    policy = load_policy(d)
    assert [r.id for r in policy.rules] == ["aj", "az", "b"]


def test_multi_document_files_and_all_three_forms(tmp_path):
    policy = load(
        tmp_path,
        """\
        networks: {lan: 10.0.0.0/8}
        policies:
          - {id: native, action: ALLOW, src: {ip: lan}}
        ---
        {id: single, action: BLOCK, src: {ip: 1.2.3.4}}
        ---
        - {id: list1, action: ALLOW}
        - {id: list2, action: ALLOW}
        ---
        # an empty document is fine
        """,
    )
    assert [(r.id, r.legacy) for r in policy.rules] == [
        ("native", False),
        ("single", True),
        ("list1", True),
        ("list2", True),
    ]


# --- values -----------------------------------------------------------------------


def test_every_field(tmp_path):
    r = one_rule(
        tmp_path,
        """\
        - id: full
          description: all of it
          priority: 7
          action: rate_limit
          rate_limit_bps: 1000
          src: {ip: [10.0.0.0/8, 192.168.1.7], port: "1024-65535", protocol: udp}
          dst: {ip: 0.0.0.0, port: [53, "5353-5353"], protocol: ANY}
          created_at: 1706875200
          expires_at: "2030-01-01T01:00:00+01:00"
          enabled: true
          labels: {team: dns, tier: 1}
          suppress: [shadowed]
          allow_overlap: [other]
        """,
    )
    assert r.action is Action.RATE_LIMIT
    assert r.priority == 7
    assert r.protocol is Protocol.UDP
    assert r.src == (Prefix.parse("10.0.0.0/8"), Prefix.parse("192.168.1.7/32"))
    assert r.dst == (ANY_PREFIX,)
    assert r.sports == (PortRange(1024, 65535),)
    assert r.dports == (PortRange(53, 53), PortRange(5353, 5353))  # equal ends: a single port
    assert r.rate_limit_bps == 1000 and r.burst_bytes == 1000  # burst: one second's worth
    assert r.created_at == datetime(2024, 2, 2, 12, 0, tzinfo=UTC)
    assert r.expires_at == datetime(2030, 1, 1, 0, 0, tzinfo=UTC)
    assert r.labels == (("team", "dns"), ("tier", "1"))
    assert r.suppress == ("shadowed",) and r.allow_overlap == ("other",)
    assert r.description == "all of it"
    assert r.loc_of("src.protocol").line == 7
    assert r.loc_of("dst.port[1]").line == 8
    assert r.loc_of("expires_at").line == 10
    assert r.loc_of("protocol") == r.loc_of("src.protocol")


def test_defaults(tmp_path):
    r = one_rule(tmp_path, "- {id: d, action: ALLOW}")
    assert (r.priority, r.protocol, r.src, r.dst, r.sports, r.dports) == (
        0,
        Protocol.ANY,
        ANY_BOTH,  # no address: any of both families
        ANY_BOTH,
        (ANY_PORT,),
        (ANY_PORT,),
    )
    assert r.enabled and r.expires_at is None and not r.legacy


@pytest.mark.parametrize("port", ["0", "any", "ANY", '"0"', "[80, any]"])
def test_port_any_spellings(tmp_path, port):
    r = one_rule(tmp_path, f"- {{id: p, action: ALLOW, dst: {{port: {port}}}}}")
    assert r.dports == (ANY_PORT,)


@pytest.mark.parametrize(
    "ip, want",
    [
        ("any", ANY_BOTH),
        ("0.0.0.0", ANY_BOTH),  # the legacy "any" means any of both families
        ("[1.2.3.4, any]", ANY_BOTH),
        ("[1.2.3.4, 2001:db8::1, any]", ANY_BOTH),
        ("0.0.0.0/0", (ANY4,)),  # a family's whole space, not "any"
        ("[1.2.3.4, 0.0.0.0/0]", (ANY4,)),
        ('"::/0"', (ANY6,)),
        ('["::/0", 2001:db8::1]', (ANY6,)),
    ],
)
def test_ip_any_spellings(tmp_path, ip, want):
    r = one_rule(tmp_path, f"- {{id: p, action: ALLOW, src: {{ip: {ip}}}}}")
    assert r.src == want
    assert r.dst == want  # dst any: the families src names


def test_json_strings_stay_strings(tmp_path):
    d = write(tmp_path / "p", {"x.json": '{"id": "0", "action": "ALLOW", "dst": {"port": "0", "ip": "10.0.0.1"}}'})
    r = load_policy(d).rules[0]
    assert r.id == "0" and r.dports == (ANY_PORT,)


def test_json_syntax_errors_are_located(tmp_path):
    f = errors(tmp_path, '{"id": "a",\n "action": "ALLOW"\n "src": {}}', name="x.json")
    assert codes(f) == ["yaml-syntax"]
    assert f[0].loc.line == 3


@pytest.mark.parametrize(
    "text, scalar",
    [("yes", "yes"), ("on", "on"), ("No", "No"), ("0777", "0777"), ("1_000", "1_000"), ("2026-12-01", "2026-12-01")],
)
def test_yaml11_gotchas_stay_strings(text, scalar):
    parsed = parse_text(f"k: {text}\n", "f.yaml")
    assert parsed.docs[0].value == {"k": scalar}


@pytest.mark.parametrize(
    "text, value",
    [("true", True), ("false", False), ("~", None), ("", None), ("12", 12), ("0x1F", 31), ("0o17", 15), ("1.5", 1.5), ("-3", -3)],
)
def test_core_schema_scalars(text, value):
    assert parse_text(f"k: {text}\n", "f.yaml").docs[0].value == {"k": value}


def test_yes_is_not_a_boolean(tmp_path):
    f = errors(tmp_path, "policies:\n  - {id: a, action: ALLOW, enabled: yes}\n")
    assert codes(f) == ["schema"]
    assert "true or false" in f[0].help and f[0].loc.line == 2


def test_octal_looking_port_is_rejected(tmp_path):
    f = errors(tmp_path, "policies:\n  - {id: a, action: ALLOW, dst: {port: 0777}}\n")
    assert codes(f) == ["bad-port"] and "leading zero" in f[0].message


def test_underscored_port_is_rejected(tmp_path):
    f = errors(tmp_path, "policies:\n  - {id: a, action: ALLOW, dst: {port: 1_000}}\n")
    assert codes(f) == ["bad-port"]


@pytest.mark.parametrize(
    "value, fragment",
    [("70000", "out of range"), ('"90-80"', "empty"), ('"0-80"', "starts at port 1"), ('"80-70000"', "above 65535"), ('"http"', "undefined")],
)
def test_bad_ports(tmp_path, value, fragment):
    f = errors(tmp_path, f"policies:\n  - {{id: a, action: ALLOW, dst: {{port: {value}}}}}\n")
    assert len(f) == 1 and fragment in f[0].message
    assert f[0].loc.line == 2 and f[0].loc.column > 30


def test_host_bits_set_suggests_the_network(tmp_path):
    f = errors(tmp_path, "policies:\n  - {id: a, action: ALLOW, src: {ip: 10.1.2.3/8}}\n")
    assert codes(f) == ["bad-cidr"]
    assert "10.0.0.0/8" in f[0].help
    assert f[0].loc == Location(str(tmp_path / "policies.d" / "p.yaml"), 2, 38)


@pytest.mark.parametrize(
    "ip", ["10.0.0.256", "10.0.0.1/33", "010.0.0.1", "1::2::3", "2001:db8::/129", "2001:db8::g", "12345::", "a b"]
)
def test_bad_addresses(tmp_path, ip):
    f = errors(tmp_path, f"policies:\n  - {{id: a, action: ALLOW, src: {{ip: '{ip}'}}}}\n")
    assert codes(f) == ["bad-cidr"]


# --- IPv6 -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "ip, addr, plen",
    [
        ("2001:db8::1", 0x20010DB8 << 96 | 1, 128),
        ("2001:DB8:0:0:0:0:0:1", 0x20010DB8 << 96 | 1, 128),  # uncompressed, upper case
        ("2001:db8::/32", 0x20010DB8 << 96, 32),
        ("fe80::/10", 0xFE80 << 112, 10),
        ("::1", 1, 128),
        ("::", 0, 128),  # the unspecified address, not "any"
        ("::ffff:192.0.2.1", 0xFFFF_C0000201, 128),  # v4-mapped: an IPv6 address as written
        ("::/0", 0, 0),
    ],
)
def test_ipv6_addresses(tmp_path, ip, addr, plen):
    r = one_rule(tmp_path, f"- {{id: a, action: ALLOW, src: {{ip: '{ip}'}}}}")
    assert r.src == (Prefix(addr, plen, True),)
    assert r.dst == (ANY6,) and r.families == (6,)  # dst any: the family src names


@given(st.integers(0, 2**128 - 1), st.integers(0, 128), st.booleans())
def test_every_ipv6_spelling_of_a_prefix_is_that_prefix(addr, plen, exploded):
    net = ipaddress.IPv6Network((addr, plen), strict=False)
    text = (net.exploded if exploded else net.compressed).upper() if addr % 2 else (net.exploded if exploded else net.compressed)
    if plen == 128:
        text = text.rsplit("/", 1)[0]  # an address alone is its /128
    assert parse_address(text) == Prefix(int(net.network_address), plen, True)
    if plen < 128:  # host bits set: the error offers the network
        host = ipaddress.IPv6Address(int(net.network_address) | 1)
        with pytest.raises(ValueProblem) as err:
            parse_address(f"{host}/{plen}")
        assert err.value.code == "bad-cidr" and str(net) in (err.value.help or "")


def test_any_resolves_to_the_families_of_the_rule(tmp_path):
    policy = load(
        tmp_path,
        """\
        networks:
          web: [192.0.2.10, 2001:db8::10]
          office: [198.51.100.0/24, 2001:db8:100::/48]
        policies:
          - {id: both, action: ALLOW, dst: {ip: web, port: 443, protocol: TCP}}
          - {id: v4, action: ALLOW, dst: {ip: 192.0.2.10}}
          - {id: v6, action: ALLOW, src: {ip: "2001:db8::/32"}}
          - {id: icmp, action: ALLOW, protocol: ICMP}
          - {id: icmp6, action: ALLOW, protocol: icmpv6}
          - {id: anyany, action: BLOCK}
          - {id: narrowed, action: ALLOW, src: {ip: office}, dst: {ip: 192.0.2.10}}
        """,
    )
    r = {x.id: x for x in policy.rules}
    assert r["both"].src == ANY_BOTH and r["both"].families == (4, 6)
    assert r["both"].dst == (Prefix.parse("192.0.2.10/32"), Prefix.parse("2001:db8::10/128"))
    assert r["v4"].src == (ANY4,) and r["v4"].families == (4,)
    assert r["v6"].dst == (ANY6,) and r["v6"].families == (6,)
    assert r["icmp"].protocol is Protocol.ICMP and (r["icmp"].src, r["icmp"].dst) == ((ANY4,), (ANY4,))
    assert r["icmp6"].protocol is Protocol.ICMPV6 and (r["icmp6"].src, r["icmp6"].dst) == ((ANY6,), (ANY6,))
    assert (r["anyany"].src, r["anyany"].dst) == (ANY_BOTH, ANY_BOTH)
    # a network of both families against a v4 destination: its v6 half can pair with nothing
    assert r["narrowed"].src == (Prefix.parse("198.51.100.0/24"),)
    office = next(n for n in policy.networks if n.name == "office")
    assert [str(p) for p in office.prefixes] == ["198.51.100.0/24", "2001:db8:100::/48"]


def test_legacy_any_is_both_families(tmp_path):
    d = write(
        tmp_path / "p",
        {"x.json": '[{"id": "l", "action": "BLOCK", "src": {"ip": "0.0.0.0", "port": 0, "protocol": "TCP"},'
         ' "dst": {"ip": "0.0.0.0", "port": 22}}]'},
    )
    r = load_policy(d).rules[0]
    assert (r.src, r.dst, r.families) == (ANY_BOTH, ANY_BOTH, (4, 6))


@pytest.mark.parametrize(
    "ip, fragment, help_fragment",
    [
        ("2001:db8::1/64", "host bits set", "2001:db8::/64"),
        ("fe80::1%eth0", "zone id (%eth0)", "write fe80::1"),
        ("fe80::/64%eth0", "zone id", "write fe80::/64"),
        ("[2001:db8::1]", "without brackets", "write 2001:db8::1"),
        ("[2001:db8::1]:443", "port in the address", "port: 443"),
    ],
)
def test_bad_ipv6_addresses(tmp_path, ip, fragment, help_fragment):
    f = errors(tmp_path, f"policies:\n  - {{id: a, action: ALLOW, src: {{ip: '{ip}'}}}}\n")
    assert codes(f) == ["bad-cidr"]
    assert fragment in f[0].message and help_fragment in f[0].help
    assert (f[0].loc.line, f[0].loc.column) == (2, 38)


def test_bad_ipv6_in_a_network_is_located(tmp_path):
    f = errors(tmp_path, "networks:\n  n: [2001:db8::1, 'fe80::1%eth0']\npolicies: []\n")
    assert codes(f) == ["bad-cidr"] and (f[0].loc.line, f[0].loc.column) == (2, 20)
    assert f[0].message.startswith("network 'n': ")


@pytest.mark.parametrize(
    "body, line, column, fragment, help_fragment",
    [
        # src v4, dst v6: located at dst.ip, the other side related
        ("src: {ip: 10.0.0.1}\n    dst: {ip: 2001:db8::1}", 6, 15, "src.ip is IPv4 only (10.0.0.1/32) but dst.ip is IPv6 only", "split the rule"),
        ("src: {ip: '2001:db8::/32'}\n    dst: {ip: v4net}", 6, 15, "src.ip is IPv6 only", "split the rule"),
        # the protocol names the other family
        ("protocol: ICMP\n    dst: {ip: 2001:db8::1}", 5, 15, "protocol ICMP is IPv4's", "ICMPV6"),
        ("protocol: ICMPV6\n    src: {ip: v4net}", 5, 15, "protocol ICMPV6 is IPv6's", "protocol: ICMP"),
    ],
)
def test_family_mismatch(tmp_path, body, line, column, fragment, help_fragment):
    f = errors(tmp_path, f"networks: {{v4net: [10.0.0.0/8]}}\npolicies:\n  - id: a\n    action: ALLOW\n    {body}\n")
    assert codes(f) == ["family-mismatch"]
    assert (f[0].loc.line, f[0].loc.column) == (line, column), f[0]
    assert fragment in f[0].message and help_fragment in f[0].help
    assert f[0].rule == "a" and f[0].related


def test_family_mismatch_in_legacy_json(tmp_path):
    d = write(
        tmp_path / "p",
        {"x.json": '{"id": "l", "action": "BLOCK", "src": {"ip": "10.0.0.1"}, "dst": {"ip": "2001:db8::1"}}'},
    )
    with pytest.raises(PolicyError) as info:
        load_policy(d)
    assert [f.code for f in info.value.findings] == ["family-mismatch"]
    assert info.value.findings[0].loc.line == 1


@pytest.mark.parametrize("spelling", ["ICMPV6", "icmpv6", "IcmpV6"])
def test_icmpv6_protocol(tmp_path, spelling):
    r = one_rule(tmp_path, f"- {{id: a, action: ALLOW, protocol: {spelling}}}")
    assert r.protocol is Protocol.ICMPV6 and r.families == (6,)


def test_icmp6_spelling_gets_a_hint(tmp_path):
    f = errors(tmp_path, "policies: [{id: a, action: ALLOW, protocol: icmp6}]")
    assert codes(f) == ["bad-protocol"] and "ICMPV6" in f[0].help


def test_protocols_are_case_insensitive_and_must_agree(tmp_path):
    r = one_rule(tmp_path, "- {id: a, action: ALLOW, src: {protocol: tcp}, dst: {protocol: Any}}")
    assert r.protocol is Protocol.TCP
    f = errors(tmp_path, "policies:\n  - id: a\n    action: ALLOW\n    src: {protocol: TCP}\n    dst: {protocol: UDP}\n")
    assert codes(f) == ["protocol-mismatch"]
    assert f[0].loc.line == 5 and f[0].related[0].loc.line == 4


def test_bad_protocol(tmp_path):
    assert codes(errors(tmp_path, "policies: [{id: a, action: ALLOW, protocol: SCTP}]")) == ["bad-protocol"]


def test_icmp_with_ports_loads(tmp_path):
    r = one_rule(tmp_path, "- {id: a, action: ALLOW, protocol: ICMP, dst: {port: 80}}")
    assert r.protocol is Protocol.ICMP and r.has_port_constraint


@pytest.mark.parametrize(
    "body, fragment",
    [
        ("action: RATE_LIMIT", "needs rate_limit_bps"),
        ("action: RATE_LIMIT, rate_limit_bps: 0", "must be > 0"),
        ("action: ALLOW, rate_limit_bps: 5", "only RATE_LIMIT"),
        ("action: BLOCK, burst_bytes: 5", "burst"),
    ],
)
def test_bad_rate_limits(tmp_path, body, fragment):
    f = errors(tmp_path, f"policies:\n  - {{id: a, {body}}}\n")
    assert codes(f) == ["bad-rate-limit"] and fragment in f[0].message


def test_zero_rate_on_allow_is_fine(tmp_path):
    assert one_rule(tmp_path, "- {id: a, action: ALLOW, rate_limit_bps: 0}").rate_limit_bps == 0


@pytest.mark.parametrize(
    "value, expected",
    [
        ("1706875200", datetime(2024, 2, 2, 12, 0, tzinfo=UTC)),
        ('"1706875200"', datetime(2024, 2, 2, 12, 0, tzinfo=UTC)),
        ("1706875200.5", datetime(2024, 2, 2, 12, 0, 0, 500000, tzinfo=UTC)),
        ("2026-12-01T00:00:00Z", datetime(2026, 12, 1, tzinfo=UTC)),
        ('"2026-12-01T05:30:00.123456789+05:30"', datetime(2026, 12, 1, 0, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_timestamps(tmp_path, value, expected):
    r = one_rule(tmp_path, f"- {{id: a, action: ALLOW, expires_at: {value}}}")
    assert r.expires_at == expected and r.expires_at.tzinfo is not None


@pytest.mark.parametrize("value", ["2026-12-01", "2026-12-01T00:00:00", "tomorrow", "2026-13-01T00:00:00Z", "-5", "1e400", "true"])
def test_bad_timestamps(tmp_path, value):
    f = errors(tmp_path, f"policies:\n  - {{id: a, action: ALLOW, expires_at: {value}}}\n")
    assert codes(f) in (["bad-timestamp"], ["schema"])
    assert f[0].loc.line == 2


def test_hostile_ids_load(tmp_path):
    ids = ["*/ #include <x>", "a\nb", "nul\x00byte", "\u202eevil", "' OR 1=1; --", "{{ jinja }}"]
    body = "".join(f"  - {{id: {_dq(i)}, action: ALLOW}}\n" for i in ids)
    policy = load(tmp_path, "policies:\n" + body)
    assert [r.id for r in policy.rules] == ids


def _dq(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\x00", "\\0") + '"'


# --- names ----------------------------------------------------------------------------


def test_networks_and_services_nest(tmp_path):
    policy = load(
        tmp_path,
        """\
        networks:
          a: 10.0.0.0/8
          b: [a, 192.168.0.0/16, a]
          c: [b]
        services:
          dns: 53
          infra: [dns, "8000-8100", 22]
        policies:
          - {id: r, action: ALLOW, src: {ip: c}, dst: {port: infra}}
        """,
    )
    r = policy.rules[0]
    assert [str(p) for p in r.src] == ["10.0.0.0/8", "192.168.0.0/16"]
    assert [str(p) for p in r.dports] == ["53", "8000-8100", "22"]
    assert {n.name for n in policy.networks} == {"a", "b", "c"}


def test_names_are_global_across_files(tmp_path):
    d = write(
        tmp_path / "p",
        {"a.yaml": "networks: {lan: 10.0.0.0/8}\n", "b.yaml": "policies: [{id: r, action: ALLOW, src: {ip: lan}}]\n"},
    )
    assert load_policy(d).rules[0].src == (Prefix.parse("10.0.0.0/8"),)


def test_unknown_names_say_did_you_mean(tmp_path):
    f = errors(
        tmp_path,
        "networks: {office: 10.0.0.0/8}\nservices: {https: 443}\n"
        "policies: [{id: r, action: ALLOW, src: {ip: ofice}, dst: {port: htps}}]\n",
    )
    assert codes(f) == ["unknown-network", "unknown-service"]
    assert "office" in f[0].help and "https" in f[1].help


def test_duplicate_definitions_across_files(tmp_path):
    f = errors(tmp_path, "networks: {lan: 10.0.0.0/8}\n", **{"q.yaml": "networks: {lan: 11.0.0.0/8}\n"})
    assert codes(f) == ["duplicate-network"]
    assert f[0].loc.file.endswith("q.yaml") and f[0].related[0].loc.file.endswith("p.yaml")


def test_cyclic_networks(tmp_path):
    f = errors(tmp_path, "networks:\n  a: [b]\n  b: [c, 10.0.0.0/8]\n  c: [a]\npolicies: [{id: r, action: ALLOW, src: {ip: a}}]\n")
    assert codes(f) == ["cyclic-reference"]
    assert "a -> b -> c -> a" in f[0].message


def test_self_referencing_service(tmp_path):
    assert codes(errors(tmp_path, "services: {s: [s, 80]}\n")) == ["cyclic-reference"]


def test_duplicate_ids(tmp_path):
    f = errors(tmp_path, "policies: [{id: x, action: ALLOW}]\n", **{"q.json": '[{"id": "x", "action": "BLOCK"}]'})
    assert codes(f) == ["duplicate-id"]
    assert f[0].loc.file.endswith("q.json") and f[0].related[0].loc.file.endswith("p.yaml")


# --- shape ---------------------------------------------------------------------------


def test_unknown_keys_say_did_you_mean(tmp_path):
    f = errors(tmp_path, "policies:\n  - id: a\n    action: ALLOW\n    dts: {ip: 1.2.3.4}\n    src: {ipp: any}\n")
    assert codes(f) == ["unknown-key", "unknown-key"]
    assert "'dst'" in f[0].message and f[0].loc.line == 4 and f[0].loc.column == 5
    assert "'ip'" in f[1].message and f[1].loc.line == 5


def test_every_error_is_reported(tmp_path):
    f = errors(
        tmp_path,
        """\
        policies:
          - {id: a, action: ALLOW, priority: 70000}
          - {id: b, action: PERMIT}
          - {id: c, action: ALLOW, src: {ip: 10.0.0.1/8}}
          - {action: ALLOW}
          - {id: e, action: ALLOW, expires_at: never}
        """,
    )
    assert sorted(codes(f)) == ["bad-cidr", "bad-timestamp", "schema", "schema", "schema"]
    assert [x.loc.line for x in f] == [2, 3, 4, 5, 6]


def test_wrong_types(tmp_path):
    f = errors(tmp_path, "policies:\n  - {id: [1], action: ALLOW, src: 5, priority: high}\n")
    assert codes(f) == ["schema"] * 3
    assert all(x.loc.line == 2 for x in f)


@pytest.mark.parametrize(
    "doc",
    ["just a string", "[1, 2]", "{name: x}", "42"],
)
def test_documents_that_are_no_policy(tmp_path, doc):
    f = errors(tmp_path, doc + "\n")
    assert set(codes(f)) == {"schema"} and f[0].loc.line == 1


def test_suppress_codes_are_checked(tmp_path):
    f = errors(tmp_path, "policies: [{id: a, action: ALLOW, suppress: [shadowd, yaml-syntax]}]\n")
    assert codes(f) == ["schema", "schema"]
    assert "'shadowed'" in f[0].message


def test_unsupported_tags(tmp_path):
    f = errors(tmp_path, "policies: !!python/object:os.system [{id: a, action: ALLOW}]\n")
    assert "schema" in codes(f)


# --- lifecycle --------------------------------------------------------------------


def test_lifecycle_findings(tmp_path):
    policy = load(
        tmp_path,
        """\
        policies:
          - {id: old, action: BLOCK, expires_at: "2024-01-01T00:00:00Z"}
          - {id: off, action: BLOCK, enabled: false}
          - {id: live, action: BLOCK, expires_at: "2030-01-01T00:00:00Z"}
        """,
    )
    found = lifecycle_findings(policy, datetime(2026, 1, 1, tzinfo=UTC))
    assert [(f.code, f.rule, f.severity) for f in found] == [
        ("expired", "old", Severity.INFO),
        ("disabled", "off", Severity.INFO),
    ]
    assert found[0].loc.line == 2
    assert lifecycle_findings(policy, datetime(2023, 1, 1, tzinfo=UTC))[0].code == "disabled"


# --- configuration ------------------------------------------------------------------


def test_config_defaults_when_missing(tmp_path):
    (tmp_path / "policies.d").mkdir()
    assert load_config(None, tmp_path / "policies.d") == Config()


def test_example_config(examples):
    cfg = load_config(None, examples)
    assert cfg.default_action is Action.BLOCK
    assert cfg.interfaces[0].name == "eth0" and cfg.interfaces[0].mode is XdpMode.AUTO
    assert cfg.capacities.max_rules == 1024
    assert cfg.source and cfg.source.endswith("pepc.yaml")


def test_config_all_keys(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(
        "default_action: block\ninterfaces: [eth0, {name: eth1, mode: generic}]\npin_root: /x\nstate_dir: /s\n"
        "run_dir: /r\ncapacities: {max_rules: 10, max_entries: 20, max_masks: 3, ring_bytes: 8192}\n"
        "event_cap: 5\nmetrics_listen: '[::1]:9000'\nseverity: {conflict: error, correlation: warning}\n"
    )
    cfg = load_config(p, tmp_path)
    assert cfg.default_action is Action.BLOCK
    assert [(i.name, i.mode) for i in cfg.interfaces] == [("eth0", XdpMode.AUTO), ("eth1", XdpMode.GENERIC)]
    assert (cfg.pin_root, cfg.state_dir, cfg.run_dir, cfg.event_cap) == ("/x", "/s", "/r", 5)
    assert cfg.capacities.ring_bytes == 8192 and cfg.capacities.max_masks == 3
    assert cfg.severity_of("conflict", Severity.WARNING) is Severity.ERROR


def test_apply_gate_defaults_to_capacity_and_is_read(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("default_action: allow\n")
    assert load_config(p, tmp_path).apply_gate == ("capacity",)
    p.write_text("apply_gate: [shadowed, capacity, shadowed]\n")
    assert load_config(p, tmp_path).apply_gate == ("shadowed", "capacity")
    p.write_text("apply_gate: []\n")
    assert load_config(p, tmp_path).apply_gate == ()


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("default_action: LOG_ONLY\n", "not an action"),
        ("defualt_action: BLOCK\n", "'default_action'"),
        ("capacities: {ring_bytes: 5000}\n", "power of two"),
        ("severity: {shadowd: info}\n", "'shadowed'"),
        ("severity: {yaml-syntax: info}\n", "cannot be changed"),
        ("interfaces: [{name: eth0, mode: turbo}]\n", "turbo"),
        ("metrics_listen: nowhere\n", "host:port"),
        ("apply_gate: [shadowd]\n", "'shadowed'"),
        ("apply_gate: [yaml-syntax]\n", "always refused"),
        ("apply_gate: shadowed\n", "apply_gate"),
    ],
)
def test_bad_config(tmp_path, text, fragment):
    p = tmp_path / "pepc.yaml"
    p.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_config(p, tmp_path)
    f = info.value.findings
    assert f[0].code == "bad-config" and fragment in f[0].message, f
    assert f[0].loc.line == 1


def test_explicit_config_must_exist(tmp_path):
    with pytest.raises(PolicyError) as info:
        load_config(tmp_path / "nope.yaml", tmp_path)
    assert info.value.findings[0].code == "bad-config"


def test_docs_examples_load(tmp_path):
    """The policy and pepc.yaml examples of the docs are real: every ```yaml
    and ```json block of README.md and docs/*.md loads (a page's policy
    blocks together, as one directory; a block starting with
    `default_action` as pepc.yaml). Blocks with a title (```yaml
    title=...: CI workflows) are not policy."""
    import re

    from conftest import doc_pages

    rules: dict[str, list] = {}
    configs = []
    for page in doc_pages():
        blocks = re.findall(r"^```(yaml|json)\n(.*?)^```", page.read_text(), re.S | re.M)
        d = tmp_path / page.stem / "policies.d"
        d.mkdir(parents=True)
        n = 0
        for i, (kind, text) in enumerate(blocks):
            if text.startswith("default_action"):
                (d.parent / "pepc.yaml").write_text(text)
                configs.append((page.name, load_config(None, d)))
            else:
                (d / f"{i}.{kind}").write_text(text)
                n += 1
        if n:
            rules[page.name] = list(load_policy(d).rules)
    # the language reference shows both forms, the semantics page its worked example
    assert len(rules["language.md"]) >= 6
    assert any(r.legacy for r in rules["language.md"]) and any(not r.legacy for r in rules["language.md"])
    assert len(rules["semantics.md"]) >= 4
    # the host settings page shows a full pepc.yaml
    assert [name for name, _ in configs] == ["configuration.md"]
    assert configs[0][1].default_action is Action.BLOCK and configs[0][1].apply_gate == ("capacity",)


# --- the fast validity check agrees with jsonschema ---------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 70000),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from(["", "ALLOW", "allow", "RATE_LIMIT", "Block", "nope", "TCP", "any", "80-90", "10.0.0.0/8", "x", "1bad"]),
)
_KEYS = st.sampled_from(
    ["id", "action", "priority", "protocol", "src", "dst", "ip", "port", "rate_limit_bps", "burst_bytes",
     "created_at", "expires_at", "enabled", "description", "labels", "suppress", "allow_overlap", "networks",
     "services", "policies", "bogus", "web", "1bad"]
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_KEYS, inner, max_size=5)),
    max_leaves=12,
)
_RULES = st.fixed_dictionaries(
    {"id": st.one_of(st.text(max_size=3), st.integers())},
    optional={k: _VALUES for k in ["action", "priority", "src", "dst", "rate_limit_bps", "labels", "suppress", "enabled"]},
)


@settings(max_examples=200, deadline=None)
@given(doc=st.one_of(_RULES, st.dictionaries(_KEYS, _VALUES, max_size=4),
                     st.fixed_dictionaries({}, optional={"policies": st.lists(_RULES, max_size=2), "networks": _VALUES, "services": _VALUES})))
def test_fast_validation_agrees_with_jsonschema(doc):
    from pepc.loader.schema import is_valid_fast, validator

    for name in ("policy-set", "legacy-policy", "config"):
        slow = not any(True for _ in validator(name).iter_errors(doc))
        assert is_valid_fast(name, doc) == slow, (name, doc)


def test_duplicate_keys_do_not_hide_other_errors(tmp_path):
    f = errors(tmp_path, "policies:\n  - id: a\n    id: b\n    action: ALLOW\n    src: {ip: 10.0.0.1/8}\n")
    assert codes(f) == ["duplicate-key", "bad-cidr"]


@pytest.mark.parametrize("given, expected", [("policies.d/", "pepc.yaml"), ("policies.d", "pepc.yaml"), (".", "../pepc.yaml"), ("a/b", "a/pepc.yaml")])
def test_default_config_path(tmp_path, monkeypatch, given, expected):
    from pepc.loader import default_config_path

    monkeypatch.chdir(tmp_path)
    assert default_config_path(given) == expected
    assert default_config_path(tmp_path / "x") == str(tmp_path / "pepc.yaml")


def test_a_duplicate_id_does_not_hide_the_rules_other_errors(tmp_path):
    f = errors(
        tmp_path,
        "policies: [{id: x, action: ALLOW}]\n",
        **{"q.yaml": "policies: [{id: x, action: BLOCK, src: {ip: 10.0.0.1/8}, dst: {port: 70000}}]\n"},
    )
    assert sorted(codes(f)) == ["bad-cidr", "bad-port", "duplicate-id"]
    assert all(x.loc.file.endswith("q.yaml") and x.rule == "x" for x in f)


def test_files_that_fail_to_load_leave_a_policy_of_the_others(tmp_path):
    d = write(
        tmp_path / "policies.d",
        {
            "a.yaml": "networks: {lan: [10.0.0.0/8]}\npolicies: [{id: a, action: ALLOW, src: {ip: lan}}]\n",
            "b.yaml": "policies: [{id: b, action: ALLOW\n",  # YAML syntax
            "c.yaml": "policies: [{id: c1, action: ALLOW}, {id: c2, action: ALLOW, colour: red}]\n",  # schema
            "d.yaml": "policies: [{id: d, action: BLOCK, dst: {ip: lan}}]\n",  # uses a's network
            "e.yaml": "policies: [{id: e, action: BLOCK, dst: {ip: 1.2.3.4/8}}]\n",  # a semantic error
        },
    )
    with pytest.raises(PolicyError) as info:
        load_policy(d)
    err = info.value
    shown = lambda name: str(d / name)  # noqa: E731
    assert err.without == (shown("b.yaml"), shown("c.yaml"), shown("e.yaml"))
    assert err.partial.files == (shown("a.yaml"), shown("d.yaml"))
    assert [r.id for r in err.partial.rules] == ["a", "d"]
    assert [n.name for n in err.partial.networks] == ["lan"]


def test_no_partial_policy_when_nothing_loads(tmp_path):
    d = write(tmp_path / "policies.d", {"b.yaml": "policies: [\n"})
    with pytest.raises(PolicyError) as info:
        load_policy(d)
    assert info.value.partial is None and info.value.without == (str(d / "b.yaml"),)
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path / "nope")
    assert info.value.partial is None
