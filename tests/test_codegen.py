"""Generated files: snapshots, the C compilers' view of the header, and
policy text that tries to escape the header's comments."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

from compile_helpers import NOW, policy as make_policy, rule
from pepc.compiler import layout
from pepc.compiler.codegen import c_comment_text, render_header
from pepc.compiler import compile_program
from pepc.loader import load_config, load_policy
from pepc.policy.config import Config
from pepc.policy.model import ANY4, ANY6, Action, Protocol
from pepc.compiler.plan import plan_json
from pepc.compiler.program import Program

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "compile"
def mixed_families():
    """A dual-stack host's policy, built as the loader builds it (`any` is
    the /0 of each family the rule applies to): rules of one family, rules
    naming both, ICMP and ICMPv6, port ranges on IPv6."""
    both = (ANY4, ANY6)
    rules = (
        rule("web6", src=["::/0"], dst=["2001:db8::10/128"], dports=[443, (8000, 8099)], protocol=Protocol.TCP, priority=100, line=1),
        rule("bad_nets", Action.BLOCK, src=["10.66.0.0/16", "2001:db8:bad::/48"], dst=["0.0.0.0/0", "::/0"], priority=200, line=2),
        rule("ping", line=3, protocol=Protocol.ICMP, dst=["192.0.2.10/32"]),
        rule("nd", line=4, protocol=Protocol.ICMPV6, src=["fe80::/10"], dst=["::/0"]),
        dataclasses.replace(rule("dns", line=5, dports=[53], priority=50), src=both, dst=both),
        rule("web4", src=["0.0.0.0/0"], dst=["192.0.2.10/32"], dports=[443], protocol=Protocol.TCP, priority=100, line=6),
    )
    return make_policy(*rules), Config(default_action=Action.BLOCK)


CASES = {
    "examples": ROOT / "policies.d",
    "ranges": FIXTURES / "ranges" / "policies.d",
    "priorities": FIXTURES / "priorities" / "policies.d",
    "hostile": FIXTURES / "hostile" / "policies.d",
    "mixed": mixed_families,
}
CLANG = shutil.which("clang")
needs_clang = pytest.mark.skipif(CLANG is None, reason="clang is not installed (make setup installs it)")


class HeaderSnapshot(SingleFileSnapshotExtension):
    _write_mode = WriteMode.TEXT
    file_extension = "h"


class JsonSnapshot(SingleFileSnapshotExtension):
    _write_mode = WriteMode.TEXT
    file_extension = "json"


def build(path):
    if callable(path):  # a policy built in Python (the loader's families are v6a's)
        policy, config = path()
    else:
        policy = load_policy(path)
        config = load_config(None, path)
    return policy, compile_program(policy, config, NOW)


@pytest.mark.parametrize("case", sorted(CASES))
def test_header_snapshot(case, snapshot):
    policy, program = build(CASES[case])
    assert render_header(program, policy) == snapshot(extension_class=HeaderSnapshot)


@pytest.mark.parametrize("case", sorted(CASES))
def test_plan_snapshot(case, snapshot):
    policy, program = build(CASES[case])
    assert plan_json(program, policy) == snapshot(extension_class=JsonSnapshot)


def test_outputs_do_not_depend_on_how_the_directory_is_named(tmp_path, monkeypatch):
    src = CASES["examples"]
    policy_a, program_a = build(src)
    copy = tmp_path / "elsewhere" / "policies.d"
    shutil.copytree(src, copy)
    shutil.copy(ROOT / "pepc.yaml", copy.parent / "pepc.yaml")
    monkeypatch.chdir(tmp_path)
    policy_b, program_b = build(Path("elsewhere/policies.d"))  # relative this time
    assert render_header(program_a, policy_a) == render_header(program_b, policy_b)
    assert plan_json(program_a, policy_a) == plan_json(program_b, policy_b)


# --- the compilers' view -------------------------------------------------------------


def _include_flags() -> list[str]:
    import platform

    triple = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}.get(platform.machine(), "")
    return [f"-I/usr/include/{triple}"] if triple else []


def _write_header(tmp: Path, program: Program, policy) -> Path:
    (tmp / "pepc_policy.h").write_text(render_header(program, policy))
    return tmp


@needs_clang
@pytest.mark.parametrize("case", ["examples", "hostile", "mixed"])
def test_header_compiles_for_bpf(case, tmp_path):
    policy, program = build(CASES[case])
    _write_header(tmp_path, program, policy)
    (tmp_path / "t.c").write_text(
        '#include "pepc_policy.h"\n'
        "#if defined(pwned)\n#error policy text defined a macro\n#endif\n"
        "static const unsigned char digest[16] = PEPC_LAYOUT_DIGEST_BYTES;\n"
        "struct pepc_rule_key k; struct pepc_rule_val v; struct pepc_mask m; struct pepc_slot s;\n"
        "struct pepc_rl_state rl; struct pepc_event ev; struct pepc_gen g; struct pepc_ctrl c;\n"
        "struct pepc_rule6_key k6; struct pepc_mask6 m6;\n"
        "int counters = PEPC_CNT__MAX + PEPC_DEFAULT_ACTION + PEPC_MAX_RULES + PEPC_MAX_ENTRIES + PEPC_MAX_MASKS\n"
        "  + PEPC_RING_BYTES + PEPC_RULE_ID_LEN + PEPC_SLOT_FLAG_USED + PEPC_RANK_PRIO_SHIFT + PEPC_RANK_SPEC_SHIFT;\n"
        "const char *ld = PEPC_LAYOUT_DIGEST;\n"
        "int f(void) { return digest[0]; }\n"
    )
    r = subprocess.run(
        [CLANG, "-O2", "-target", "bpf", "-Wall", "-Werror", "-Wno-unused-variable", "-trigraphs", *_include_flags(),
         "-c", "t.c", "-o", "t.o"],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr


def _host_compilers() -> list[str]:
    return [c for c in ("gcc", "clang") if shutil.which(c)]


@pytest.mark.parametrize("compiler", _host_compilers() or [pytest.param("cc", marks=pytest.mark.skip(reason="no C compiler"))])
def test_host_compiler_layout_equals_plan_and_layout_py(compiler, tmp_path):
    """A host C program prints sizeof/offsetof of every struct field as the
    compiler laid it out; that must be what plan.json says pepc packs."""
    policy, program = build(CASES["examples"])
    plan = json.loads(plan_json(program, policy))
    structs = plan["layout"]["structs"]
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include "pepc_policy.h"', "int main(void) {"]
    for name, desc in sorted(structs.items()):
        lines.append(f'  printf("{name} size %zu\\n", sizeof(struct {name}));')
        for fname, *_ in desc["fields"]:
            lines.append(f'  printf("{name} {fname} %zu\\n", offsetof(struct {name}, {fname}));')
    lines += ["  return 0;", "}"]
    _write_header(tmp_path, program, policy)
    (tmp_path / "p.c").write_text("\n".join(lines) + "\n")
    r = subprocess.run([compiler, "-std=c11", "-Wall", "-Werror", "p.c", "-o", "p"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = subprocess.run([str(tmp_path / "p")], capture_output=True, text=True, check=True).stdout.split("\n")
    seen = {}
    for line in filter(None, out):
        name, what, value = line.split()
        seen[(name, what)] = int(value)
    for s in layout.STRUCTS:
        assert seen[(s.name, "size")] == s.size == structs[s.name]["size"]
        for fname, _, _, off in structs[s.name]["fields"]:
            assert seen[(s.name, fname)] == s.offsets[fname] == off


@pytest.mark.parametrize("case", ["ranges", "mixed"])
def test_plan_bytes_are_the_named_fields_packed(case):
    import ipaddress

    policy, program = build(CASES[case])
    plan = json.loads(plan_json(program, policy))
    assert plan["layout_digest"] == layout.layout_digest(program.caps)
    v6_text = {"pepc_rules6": ("src", "dst"), "pepc_masks6": ("src_mask", "dst_mask")}
    for name, rows in plan["maps"].items():
        mdef = layout.map_def(name)
        for row in rows:
            key = dict(row["key"])
            value = {k: (bytes.fromhex(v) if k in ("policy_digest",) else v) for k, v in row["value"].items()}
            side = key if name == "pepc_rules6" else value
            for f in v6_text.get(name, ()):  # IPv6 text in the plan, 16 bytes in the map
                side[f] = ipaddress.IPv6Address(side[f]).packed
            if "id" in value:
                value["id"] = value["id"].encode()
            assert mdef.key.pack(key).hex() == row["key_hex"]
            assert mdef.value.pack(value).hex() == row["value_hex"]
    n6 = sum(e.key.shape.v6 for e in program.entries)
    assert plan["usage"]["entries"] == {"used": len(program.entries) - n6, "max": program.caps.max_entries}
    assert plan["usage"]["entries6"] == {"used": n6, "max": program.caps.max_entries}
    if case == "mixed":
        assert n6 and len(plan["maps"]["pepc_masks6"]) == len(program.masks6) > 0
    assert plan["policy_digest"] == program.policy_digest


# --- hostile text ---------------------------------------------------------------------

HOSTILE = ["*/", "/*", "//", "\\", "\n", "\r", "\0", "??/", "??=", "é", "\u2028", "%", "#define x 1", '"', "'"]


@pytest.mark.parametrize("text", HOSTILE)
def test_comment_text_is_inert(text):
    out = c_comment_text(f"a{text}b")
    assert out.isascii() and out.isprintable()
    for bad in ("*/", "/*", "\\", "??", "\n"):
        assert bad not in out


@needs_clang
def test_hostile_file_names_cannot_escape(tmp_path):
    """A directory named `x*` makes the relative path `x*/f.yaml`: a `*/`."""
    d = tmp_path / "policies.d" / "x*"
    d.mkdir(parents=True)
    (d / "f #define pwned.yaml").write_text("policies:\n  - id: ok\n    action: BLOCK\n    src: {ip: 10.0.0.1}\n")
    policy = load_policy(tmp_path / "policies.d")
    program = compile_program(policy, load_config(None, tmp_path / "policies.d"), NOW)
    header = render_header(program, policy)
    assert "x%2A/f #define pwned.yaml:2" in header
    out = tmp_path / "out"
    out.mkdir()
    (out / "pepc_policy.h").write_text(header)
    (out / "t.c").write_text('#include "pepc_policy.h"\n#ifdef pwned\n#error injected\n#endif\nint x;\n')
    r = subprocess.run([CLANG, "-target", "bpf", *_include_flags(), "-Werror", "-c", "t.c", "-o", "t.o"], cwd=out, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_hostile_ids_are_escaped_in_the_header():
    policy, program = build(CASES["hostile"])
    header = render_header(program, policy)
    body = header.split("Rules of this plan")[1]
    assert "%2A/ #define pwned 1 /%2A" in body
    assert "line%0Abreak%0A#define pwned 2" in body
    assert "nul%00byte" in body and "tri%3F%3F/graph" in body
    # every line of the table is a comment line
    table = body.split("*/")[0].splitlines()[1:]
    assert all(line.startswith(" *") for line in table if line.strip())
    # and the long id is there in full (the slot map truncates at 64 bytes, the comment does not)
    assert "long-0123456789012345678901234567890123456789012345678901234567890123456789-%C3%BC" in body


# --- the command ----------------------------------------------------------------------


def _run(capsys, *argv):
    from pepc.cli import main

    rc = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def test_compile_twice_is_byte_identical(capsys, examples, tmp_path):
    for out in ("a", "b"):
        rc, text, _ = _run(capsys, "compile", str(examples), "-o", str(tmp_path / out), "--now", "2026-11-23T00:00:00Z", "--no-object")
        assert rc == 0
    assert "13 live rules (2 inactive)" in text and "policy digest" in text
    for name in ("pepc_policy.h", "plan.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert not (tmp_path / "a" / "pepc_xdp.o").exists()


@needs_clang
def test_compile_builds_the_object(capsys, examples, tmp_path):
    rc, text, err = _run(capsys, "compile", str(examples), "-o", str(tmp_path), "--now", "2026-11-23T00:00:00Z")
    assert rc == 0, err
    obj = tmp_path / "pepc_xdp.o"
    assert obj.read_bytes()[:4] == b"\x7fELF" and "wrote " + str(obj) in text


def test_compile_previous_keeps_slots(capsys, tmp_path):
    src = tmp_path / "policies.d"
    src.mkdir()
    rules = "".join(f"  - {{id: r{i}, action: BLOCK, src: {{ip: 10.0.0.{i}}}}}\n" for i in range(1, 6))
    (src / "a.yaml").write_text("policies:\n" + rules)
    assert _run(capsys, "compile", str(src), "-o", str(tmp_path / "v1"), "--no-object")[0] == 0
    (src / "a.yaml").write_text("policies:\n  - {id: r0, action: ALLOW, src: {ip: 10.0.0.99}}\n" + rules.replace("  - {id: r2,", "  - {id: r2x,"))
    prev = tmp_path / "v1" / "plan.json"
    assert _run(capsys, "compile", str(src), "-o", str(tmp_path / "v2"), "--no-object", "--previous", str(prev))[0] == 0
    v1 = {r["id"]: r for r in json.loads(prev.read_text())["rules"]}
    v2 = {r["id"]: r for r in json.loads((tmp_path / "v2" / "plan.json").read_text())["rules"]}
    for rid in ("r1", "r3", "r4", "r5"):
        assert (v2[rid]["slot"], v2[rid]["order_key"]) == (v1[rid]["slot"], v1[rid]["order_key"])
    # the new rules take never-used slots first; r2's freed slot waits
    assert {v2["r0"]["slot"], v2["r2x"]["slot"]} == {5, 6}
    assert v2["r0"]["order_key"] < v2["r1"]["order_key"] and v1["r1"]["order_key"] < v2["r2x"]["order_key"] < v1["r3"]["order_key"]


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("{not json", 1, "not JSON"),
        ('{"format": "something-else"}', 1, "not a pepc plan"),
        ('{"format": "pepc-plan/1", "rules": [{"id": 1}]}', 0, "rule table"),
    ],
)
def test_compile_bad_previous_plan(capsys, examples, tmp_path, text, line, words):
    plan = tmp_path / "old.json"
    plan.write_text(text)
    rc, _, err = _run(capsys, "compile", str(examples), "-o", str(tmp_path / "o"), "--no-object", "--previous", str(plan))
    assert rc == 2 and "[bad-plan]" in err and words in err
    assert f"{plan}:{line}:" in err if line else f"{plan}: error" in err


def test_compile_over_capacity_is_a_located_error(capsys, examples, tmp_path):
    cfg = tmp_path / "small.yaml"
    cfg.write_text("capacities: {max_rules: 16, max_entries: 8, max_masks: 64}\n")
    rc, out, err = _run(capsys, "compile", str(examples), "--config", str(cfg), "-o", str(tmp_path / "o"), "--no-object")
    assert rc == 2 and out == ""
    assert f"{cfg}:1:29: error: the policy needs" in err and "[capacity]" in err  # at max_entries
    assert not (tmp_path / "o").exists()  # nothing written
