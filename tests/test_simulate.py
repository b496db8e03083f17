"""`pepc simulate`: packet syntax, evaluation over the compiled program,
--explain, output formats and located errors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compile_helpers import NOW, Action, Protocol, policy, rule
from conftest import ROOT
from pepc.cli import main
from pepc.compiler import compile_program
from pepc.policy.config import Config
from pepc.policy.semantics import Packet
from pepc.simulate.evaluate import PacketSyntaxError, evaluate, explain, parse_packet, parse_packet_lines

T = "--now=2026-11-23T00:00:00Z"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


# --- syntax ---------------------------------------------------------------------------


def test_packet_forms():
    p = parse_packet("tcp 10.0.0.1:1234 > 192.168.1.100:80")
    assert (p.proto, p.src, p.sport, p.dst, p.dport, p.has_ports, p.fragment, p.length) == (
        6, 0x0A000001, 1234, 0xC0A80164, 80, True, False, 64,
    )
    assert parse_packet("UDP 1.2.3.4:53 > 5.6.7.8:5353 len=1500").length == 1500
    icmp = parse_packet("icmp 1.2.3.4 > 5.6.7.8")
    assert icmp.proto == 1 and not icmp.has_ports
    gre = parse_packet("proto 47 1.2.3.4 > 5.6.7.8")
    assert gre.proto == 47 and parse_packet("proto47 1.2.3.4 > 5.6.7.8") == gre
    frag = parse_packet("tcp 1.2.3.4 > 5.6.7.8 frag")
    assert frag.fragment and not frag.has_ports
    assert not parse_packet("tcp 1.2.3.4:1 > 5.6.7.8:2 frag").has_ports  # written ports are not read
    assert parse_packet("proto 6 1.2.3.4:1 > 5.6.7.8:2").has_ports


@given(
    st.sampled_from([6, 17, 1, 47, 0, 255]),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 65535),
    st.integers(0, 65535),
    st.booleans(),
    st.integers(1, 65535),
)
def test_str_of_a_packet_parses_back(proto, src, dst, sport, dport, frag, length):
    ports = proto in (6, 17) and not frag
    pkt = Packet(src, dst, proto, sport if ports else 0, dport if ports else 0, ports, frag and proto in (6, 17), length)
    assert parse_packet(str(pkt)) == pkt


def test_ipv6_packet_forms():
    p = parse_packet("tcp [2001:db8::1]:40000 > [2001:db8::10]:443")
    assert (p.v6, p.proto, p.src, p.sport, p.dst, p.dport, p.has_ports) == (
        True, 6, 0x20010DB8 << 96 | 1, 40000, 0x20010DB8 << 96 | 0x10, 443, True,
    )
    assert parse_packet("UDP [::1]:53 > [2001:DB8::A]:5353 len=1500").length == 1500
    ns = parse_packet("icmpv6 fe80::1 > ff02::1:ff00:10 type=135")
    assert (ns.v6, ns.proto, ns.icmp_type, ns.guarded, ns.has_ports) == (True, 58, 135, True, False)
    echo = parse_packet("icmpv6 2001:db8::1 > 2001:db8::2 type=128")
    assert echo.icmp_type == 128 and not echo.guarded
    assert parse_packet("icmpv6 [2001:db8::1] > [2001:db8::2]") == parse_packet("icmpv6 2001:db8::1 > 2001:db8::2")
    assert parse_packet("icmpv6 2001:db8::1 > 2001:db8::2").icmp_type is None
    gre = parse_packet("proto 47 2001:db8::1 > 2001:db8::2")
    assert gre.v6 and gre.proto == 47 and parse_packet("proto47 2001:db8::1 > 2001:db8::2") == gre
    frag = parse_packet("tcp 2001:db8::1 > 2001:db8::2 frag")
    assert frag.v6 and frag.fragment and not frag.has_ports
    assert not parse_packet("udp [2001:db8::1]:1 > [2001:db8::2]:2 frag").has_ports  # written ports are not read
    # a v4-mapped address is an IPv6 address, as written
    mapped = parse_packet("tcp [::ffff:192.0.2.1]:1 > [::ffff:192.0.2.2]:2")
    assert mapped.v6 and mapped.src == 0xFFFF_C0000201
    assert not parse_packet("tcp 10.0.0.1:1 > 10.0.0.2:2").v6


@given(
    st.sampled_from([6, 17, 1, 58, 47, 0, 255]),
    st.integers(0, 2**128 - 1),
    st.integers(0, 2**128 - 1),
    st.integers(0, 65535),
    st.integers(0, 65535),
    st.booleans(),
    st.integers(1, 65535),
    st.one_of(st.none(), st.integers(0, 255)),
)
def test_str_of_an_ipv6_packet_parses_back(proto, src, dst, sport, dport, frag, length, icmp_type):
    ports = proto in (6, 17) and not frag
    frag = frag and proto in (6, 17, 58)
    icmp_type = icmp_type if proto == 58 and not frag else None
    pkt = Packet(src, dst, proto, sport if ports else 0, dport if ports else 0, ports, frag, length, v6=True, icmp_type=icmp_type)
    assert parse_packet(str(pkt)) == pkt


@pytest.mark.parametrize(
    "text, column, words",
    [
        ("tcp 2001:db8::1:40000 > [2001:db8::2]:443", 5, "[ADDRESS]:PORT"),
        ("tcp [2001:db8::1]:1 > [2001:db8::2]", 23, "[ADDRESS]:PORT"),
        ("tcp [2001:db8::1:1 > [2001:db8::2]:2", 5, "without `]`"),
        ("tcp [2001:db8::1]x > [2001:db8::2]:2", 18, "after `]`"),
        ("tcp [2001:db8::1]:70000 > [::2]:2", 19, "0-65535"),
        ("tcp [2001:db8::zz]:1 > [::2]:2", 6, "not an IPv6 address"),
        ("tcp 10.0.0.1:1 > [2001:db8::2]:2", 18, "source is IPv4 but the destination is IPv6"),
        ("icmpv6 2001:db8::1 > 10.0.0.2", 22, "source is IPv6 but the destination is IPv4"),
        ("icmpv6 fe80::1%eth0 > fe80::2", 15, "zone id"),
        ("icmpv6 [fe80::1]:7 > fe80::2", 8, "no ports"),
        ("icmpv6 ::1 > ::2 type=256", 18, "0-255"),
        ("icmpv6 ::1 > ::2 type=x", 18, "0-255"),
        ("icmp 10.0.0.1 > 10.0.0.2 type=8", 26, "only an icmpv6 packet"),
        ("icmpv6 ::1 > ::2 type=135 frag", 18, "non-first fragment"),
        ("icmp6 ::1 > ::2", 1, "icmpv6"),
    ],
)
def test_bad_ipv6_packets_say_where(text, column, words):
    with pytest.raises(PacketSyntaxError) as err:
        parse_packet(text)
    assert err.value.column == column, err.value.message
    assert words in err.value.message


@pytest.mark.parametrize(
    "text, column, words",
    [
        ("", 1, "empty"),
        ("sctp 1.2.3.4 > 5.6.7.8", 1, "unknown protocol"),
        ("tcp 1.2.3.4 > 5.6.7.8:80", 5, "ADDRESS:PORT"),
        ("tcp 1.2.3.4:80 > 5.6.7.8", 18, "ADDRESS:PORT"),
        ("icmp 1.2.3.4:7 > 5.6.7.8", 6, "no ports"),
        ("tcp 1.2.3.4:65536 > 5.6.7.8:1", 13, "0-65535"),
        ("tcp 1.2.3.400:1 > 5.6.7.8:1", 5, "IPv4"),
        ("tcp 1.2.3.4:1 -> 5.6.7.8:1", 15, "not `->`"),
        ("tcp 1.2.3.4:1>5.6.7.8:1", 14, "spaces around"),
        ("tcp 1.2.3.4:1 >5.6.7.8:1", 15, "spaces around"),
        ("tcp 1.2.3.4:1", 14, "SOURCE > DESTINATION"),
        ("tcp 1.2.3.4:1 > 5.6.7.8:1 len=0", 27, "1-65535"),
        ("tcp 1.2.3.4:1 > 5.6.7.8:1 fragment", 27, "unexpected"),
        ("proto 300 1.2.3.4 > 5.6.7.8", 7, "0-255"),
        ("proto", 6, "protocol number"),
    ],
)
def test_bad_packets_say_where(text, column, words):
    with pytest.raises(PacketSyntaxError) as err:
        parse_packet(text)
    assert err.value.column == column
    assert words in err.value.message


def test_packet_files_skip_comments_and_locate_errors():
    lines = ["# header\n", "\n", "tcp 1.1.1.1:1 > 2.2.2.2:2  # trailing\n", "udp 1.1.1.1 > 2.2.2.2\n"]
    it = parse_packet_lines(lines, "pk.txt")
    assert next(it)[0] == 3
    with pytest.raises(Exception) as err:
        next(it)
    (f,) = err.value.findings
    assert f.code == "bad-packet" and (f.loc.file, f.loc.line, f.loc.column) == ("pk.txt", 4, 5)


# --- evaluation -------------------------------------------------------------------------


def _pol():
    return policy(
        rule("allow_web", priority=100, protocol=Protocol.TCP, dst=["10.0.0.10/32"], dports=[80, 443]),
        rule("block_net", Action.BLOCK, priority=100, src=["192.0.2.0/24"], line=5),
        rule("a_tie", Action.LOG_ONLY, priority=100, src=["192.0.2.0/24"], line=7),
        rule("rl", Action.RATE_LIMIT, dst=["10.0.0.20/32"], rate_limit_bps=1000, line=9),
    )


def test_evaluate_and_explain_agree():
    pol = _pol()
    program = compile_program(pol, Config(default_action=Action.BLOCK), NOW)
    pkt = parse_packet("tcp 192.0.2.7:1000 > 10.0.0.10:80")
    d = evaluate(program, pkt)
    assert (d.rule_id, d.action, d.verdict) == ("allow_web", Action.ALLOW, "PASS")  # 32+16+8 beats 24
    ex = explain(pol, program, pkt)
    assert [m.rule_id for m in ex.matches] == ["allow_web", "a_tie", "block_net"]
    text = "\n".join(ex.lines("p"))
    assert "equal priority, specificity 24 < 56" in text
    # equal priority and specificity: the smaller id wins
    pkt = parse_packet("udp 192.0.2.7:1 > 10.0.0.99:2")
    d = evaluate(program, pkt)
    assert (d.rule_id, d.action_name, d.verdict) == ("a_tie", "LOG_ONLY", "PASS")
    text = "\n".join(explain(pol, program, pkt).lines("p"))
    assert "equal priority and specificity, id 'block_net' sorts after 'a_tie'" in text
    assert "winner a_tie (LOG_ONLY, priority 100, specificity 24) at rules.yaml:7" in text
    # RATE_LIMIT is shown within its rate
    assert evaluate(program, parse_packet("icmp 8.8.8.8 > 10.0.0.20")).verdict == "PASS"
    # no match: the default
    d = evaluate(program, parse_packet("icmp 8.8.8.8 > 10.0.0.99"))
    assert (d.action, d.action_name, d.verdict, d.rule_id) == (None, "DEFAULT", "DROP", None)


def test_explain_shows_the_first_losers_of_each_reason_and_counts_the_rest():
    wide = [rule(f"w{i:02d}", Action.LOG_ONLY, priority=10, line=3 + i) for i in range(20)]  # lose on priority
    ties = [  # the winner's twins: the id decides
        rule(f"t{i:02d}", Action.BLOCK, priority=100, protocol=Protocol.TCP, src=["192.0.2.0/24"], dst=["10.0.0.10/32"], line=40 + i)
        for i in range(6)
    ]
    pol = policy(
        rule("a_win", priority=100, protocol=Protocol.TCP, src=["192.0.2.0/24"], dst=["10.0.0.10/32"], line=1),
        rule("spec", Action.BLOCK, priority=100, dst=["10.0.0.10/32"], line=2),  # specificity
        *wide, *ties,
    )
    program = compile_program(pol, Config(), NOW)
    pkt = parse_packet("tcp 192.0.2.7:1000 > 10.0.0.10:80")
    ex = explain(pol, program, pkt)
    assert len(ex.matches) == 28
    lines = ex.lines("p")
    assert lines[0].startswith("  winner a_win ")
    loses = [line for line in lines if line.startswith("  loses ")]
    assert [line.split()[1] for line in loses] == ["w00", "w01", "w02", "spec", "t00", "t01", "t02"]
    assert "  and 17 more rules lose on priority (--format json lists every match)" in lines
    assert "  and 3 more rules lose on the id tie-break (--format json lists every match)" in lines
    assert not any("more rules lose on specificity" in line for line in lines)
    assert len([line for line in ex.lines("p", per_reason=None) if line.startswith("  loses ")]) == 27


def test_fragments_and_other_protocols_skip_port_rules():
    program = compile_program(_pol(), Config(), NOW)
    assert evaluate(program, parse_packet("tcp 8.8.8.8 > 10.0.0.10 frag")).rule_id is None
    assert evaluate(program, parse_packet("proto 6 8.8.8.8:1 > 10.0.0.10:80")).rule_id == "allow_web"


# --- the command --------------------------------------------------------------------------


def test_cli_text_and_explain(capsys, examples):
    rc, out, _ = run(capsys, "simulate", str(examples), T, "tcp 203.0.113.77:5 > 203.0.113.10:443", "--explain", "icmp 8.8.8.8 > 203.0.113.99")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == "tcp 203.0.113.77:5 > 203.0.113.10:443  ->  BLOCK (DROP) by block_abuser [20-blocklist.yaml:4]"
    assert "because priority 100 < 1000" in out
    assert "icmp 8.8.8.8 > 203.0.113.99  ->  DEFAULT BLOCK (DROP)" in out


def test_cli_ipv6_and_the_lockout_guard(capsys, examples):
    rc, out, _ = run(
        capsys, "simulate", str(examples), T, "--explain",
        "tcp [2001:db8:bad::5]:40000 > [2001:db8::10]:443",
        "icmpv6 fe80::1 > ff02::1:ff00:10 type=135",
        "icmpv6 fe80::1 > ff02::1:ff00:10 type=128",
    )
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == "tcp [2001:db8:bad::5]:40000 > [2001:db8::10]:443  ->  BLOCK (DROP) by block_abuser_v6 [20-blocklist.yaml:13]"
    # the default is BLOCK, yet a neighbour solicitation no rule matches passes
    assert "icmpv6 fe80::1 > ff02::1:ff00:10 type=135  ->  DEFAULT, lockout guard (PASS)" in lines
    assert "  no rule matches: the lockout guard passes this ICMPv6 type whatever the default action" in lines
    assert "icmpv6 fe80::1 > ff02::1:ff00:10 type=128  ->  DEFAULT BLOCK (DROP)" in lines  # echo is not guarded


def test_cli_json_one_object_per_packet(capsys, examples):
    rc, out, _ = run(
        capsys, "simulate", "--format", "json", str(examples), T,
        "tcp 8.8.8.8:40000 > 203.0.113.10:8443 len=1500", "udp 8.8.8.8:1 > 203.0.113.10:1",
    )
    assert rc == 0
    objs = [json.loads(line) for line in out.splitlines()]
    assert objs == [
        {"packet": "tcp 8.8.8.8:40000 > 203.0.113.10:8443 len=1500", "action": "RATE_LIMIT", "verdict": "PASS",
         "rule": "api_rate_limit", "file": "10-web.yaml", "line": 18},
        {"packet": "udp 8.8.8.8:1 > 203.0.113.10:1", "action": "DEFAULT", "verdict": "DROP", "rule": None, "file": None, "line": None},
    ]


def test_cli_packets_file(capsys, examples, tmp_path):
    f = tmp_path / "packets.txt"
    f.write_text("# probes\ntcp 8.8.8.8:1 > 203.0.113.10:25\n\nicmp 8.8.8.8 > 203.0.113.10\n")
    rc, out, _ = run(capsys, "simulate", str(examples), T, "--packets", str(f), "--format", "json")
    assert rc == 0
    assert [json.loads(x)["rule"] for x in out.splitlines()] == ["log_smtp_probes", "icmp"]


def test_cli_bad_packet_argument_is_located(capsys, examples):
    rc, _, err = run(capsys, "simulate", str(examples), "tcp 1.1.1.1:1 > 2.2.2.2:2", "tcp 1.1.1.1 > 2.2.2.2:2")
    assert rc == 2
    assert "<argument 2>:1:5: error:" in err and "[bad-packet]" in err


def test_cli_bad_packet_file_is_located(capsys, examples, tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("tcp 1.1.1.1:1 > 2.2.2.2:2\nudp 1.1.1.1:1 > 2.2.2.2:99999\n")
    rc, out, err = run(capsys, "simulate", str(examples), "--packets", str(f))
    assert rc == 2 and out == ""  # nothing is printed before the whole input is valid
    assert f"{f}:2:25: error:" in err


def test_cli_usage_errors(capsys, examples, tmp_path):
    assert run(capsys, "simulate", str(examples))[0] == 2
    rc, _, err = run(capsys, "simulate", str(examples), "--packets", str(tmp_path / "missing.txt"))
    assert rc == 3 and "cannot read" in err


_BAD_OCTETS = ["00", "01", "256", "999", "1e1", "", " 1"]
_BAD_PORTS = ["00", "065535", "65536", "99999", "-1", "+1"]
# mostly valid, so that both parsers are compared on accepted lines too
_octet = st.integers(0, 300).map(lambda i: str(i) if i < 256 else _BAD_OCTETS[i % len(_BAD_OCTETS)])
_port_text = st.integers(0, 70000).map(lambda i: str(i) if i < 65536 else _BAD_PORTS[i % len(_BAD_PORTS)])


@given(
    st.sampled_from(["tcp", "udp", "TCP", "icmp", "proto 6"]),
    st.lists(_octet, min_size=8, max_size=8),
    _port_text,
    _port_text,
    st.sampled_from(["", " len=1500", " len=0", " len=65536", " len=070", " frag", "  ", " len=64 frag"]),
    st.sampled_from([" ", "  ", "\t"]),
)
@settings(max_examples=500)
def test_fast_path_parses_exactly_like_the_general_parser(proto, octets, sport, dport, tail, sep):
    from pepc.simulate.evaluate import _parse_packet

    text = f"{proto}{sep}{'.'.join(octets[:4])}:{sport} > {'.'.join(octets[4:])}:{dport}{tail}"
    try:
        want = _parse_packet(text)
    except PacketSyntaxError:
        want = None
    try:
        got = parse_packet(text)
    except PacketSyntaxError:
        got = None
    assert got == want
