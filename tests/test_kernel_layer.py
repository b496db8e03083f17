"""The kernel layer against the real kernel: the loaded object's maps are
layout.MAPS, pins round-trip, map calls (element, batch, per-CPU) behave,
and kernel errors become clear EnvironmentProblems."""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

import pytest

from kernel_fixtures import compile_policy, object_for, pinned_instance
from pepc.compiler import bloom, direct, layout
from pepc.policy.diagnostics import EnvironmentProblem
from pepc.policy.model import Action, Prefix, Rule
from kernel_fixtures import LOC

pytestmark = pytest.mark.kernel

SMALL = layout.Capacities(max_rules=64, max_entries=256, max_masks=16, ring_bytes=4096 * 4)


def test_loaded_maps_equal_layout_maps():
    """C (the header + pepc_xdp.c) and Python (layout.py) agree on every map."""
    for caps in (layout.Capacities(), SMALL):
        with pinned_instance(caps) as inst:
            expected = {}
            for m in layout.MAPS:
                for name in m.kernel_names():
                    expected[name] = (
                        m.kind,
                        m.key.size if m.key else 0,
                        m.value.size if m.value else 0,
                        m.entries(caps),
                    )
            live = {n: (bm.map_type, bm.key_size, bm.value_size, bm.max_entries) for n, bm in inst.maps.items()}
            assert live == expected
            assert inst.prog_name == "pepc_xdp"


def test_pin_and_open_instance_round_trip():
    from pepc.kernel import dataplane, loader

    with pinned_instance(SMALL) as inst:
        pin_dir = inst.pin_dir
        assert sorted(os.listdir(pin_dir)) == sorted(["prog", *inst.maps])
        dataplane.set_active(inst, 1)
        opened = loader.open_instance(pin_dir)
        assert opened is not None
        try:
            assert opened.prog_id == inst.prog_id
            assert {n: m.id for n, m in opened.maps.items()} == {n: m.id for n, m in inst.maps.items()}
            ctrl = dataplane.read_ctrl(opened)
            assert ctrl["active_gen"] == 1
            assert bytes(ctrl["layout_digest"]).hex() == layout.layout_digest(SMALL)
        finally:
            opened.close()
    assert not pin_dir.exists()
    assert loader.open_instance(pin_dir) is None


def test_pin_replace_swaps_each_pin():
    from pepc.kernel import loader

    with pinned_instance(SMALL) as inst:
        other = loader.load_object(object_for(SMALL))
        try:
            with pytest.raises(EnvironmentProblem):
                loader.pin(other, inst.pin_dir)  # pins exist: refused without replace
            loader.pin(other, inst.pin_dir, replace=True)
            opened = loader.open_instance(inst.pin_dir)
            try:
                assert opened.prog_id == other.prog_id != inst.prog_id
                assert opened.maps["pepc_stats"].id == other.maps["pepc_stats"].id
            finally:
                opened.close()
            assert not [e for e in os.listdir(inst.pin_dir) if e.endswith(loader.TMP_SUFFIX)]
        finally:
            other.close()


def test_reuse_keeps_maps_across_reload():
    from pepc.kernel import dataplane, loader

    with pinned_instance(SMALL) as inst:
        stats = inst.map("pepc_stats")
        new = loader.load_object(object_for(SMALL), reuse={"pepc_stats": stats, "pepc_rl": inst.map("pepc_rl").fd})
        try:
            assert new.maps["pepc_stats"].id == stats.id
            assert new.maps["pepc_rl"].id == inst.map("pepc_rl").id
            assert new.maps["pepc_counters"].id != inst.map("pepc_counters").id
            stats.update_percpu(dataplane.u32(5), [layout.RULE_STATS.pack({"packets": 7})] + [bytes(24)] * (len(stats.zero_value()) - 1))
            assert dataplane.read_rule_stats(new, 5)["packets"] == 7
        finally:
            new.close()
        # a map of another shape cannot be reused
        with pytest.raises(EnvironmentProblem):
            loader.load_object(object_for(SMALL), reuse={"pepc_stats": inst.map("pepc_rl")})


def test_map_element_batch_and_percpu_calls():
    with pinned_instance(SMALL) as inst:
        rules = inst.map("pepc_rules_0")
        keys = [layout.RULE_KEY.pack({"src_plen": 32, "src": i}) for i in range(200)]
        vals = [layout.RULE_VAL.pack({"rank": i, "slot": i % 64, "action": 1}) for i in range(200)]
        assert rules.update_batch(keys, vals) == 200
        assert dict(rules.items()) == dict(zip(keys, vals))
        assert sorted(rules.keys()) == sorted(keys)
        assert rules.lookup(keys[3]) == vals[3]
        assert rules.delete(keys[3]) is True
        assert rules.delete(keys[3]) is False
        assert rules.lookup(keys[3]) is None
        assert rules.delete_batch(keys[4:10]) == 6
        assert len(rules.items()) == 193
        # the hash holds 256: a batch past capacity stops with E2BIG and says how far it got
        more = [layout.RULE_KEY.pack({"dst_plen": 32, "dst": i}) for i in range(100)]
        with pytest.raises(EnvironmentProblem) as err:
            rules.update_batch(more, vals[:100])
        assert err.value.errno == errno.E2BIG
        assert err.value.applied == 256 - 193
        assert "capacities" in err.value.hint
        rules.clear()
        assert rules.items() == []

        masks = inst.map("pepc_masks_1")
        items = masks.items()
        assert len(items) == SMALL.max_masks and all(v == bytes(layout.MASK.size) for _, v in items)

        counters = inst.map("pepc_counters")
        with pytest.raises(TypeError):
            counters.lookup(bytes(4))
        per_cpu = counters.lookup_percpu(bytes(4))
        assert per_cpu is not None and len(per_cpu) >= 1 and all(len(v) == 8 for v in per_cpu)
        n = len(per_cpu)
        counters.update_percpu(bytes(4), [(i + 1).to_bytes(8, "little") for i in range(n)])
        assert [int.from_bytes(v, "little") for v in counters.lookup_percpu(bytes(4))] == list(range(1, n + 1))
        from pepc.kernel import dataplane

        assert dataplane.read_counters(inst)["packets"] == n * (n + 1) // 2
        dataplane.reset_rule_state(inst)
        counters.clear()
        assert dataplane.read_counters(inst)["packets"] == 0


def test_write_generation_and_flip():
    from pepc.kernel import dataplane

    _, prog = compile_policy(
        [Rule("a", Action.BLOCK, LOC, src=(Prefix.parse("10.0.0.0/8"), Prefix.parse("192.168.0.0/16")))], SMALL
    )
    with pinned_instance(SMALL) as inst:
        assert dataplane.load_program(inst, prog) == 1
        assert dataplane.active_gen(inst) == 1
        assert len(inst.map("pepc_rules_1").items()) == len(prog.entries) == 2
        assert inst.map("pepc_rules_0").items() == []
        gen = layout.GEN.unpack(inst.map("pepc_gen").lookup(dataplane.u32(1)))
        assert gen["n_masks"] == len(prog.masks) and gen["n_rules"] == 1
        # rewriting a generation removes what the previous program put there
        _, empty = compile_policy([], SMALL)
        dataplane.write_generation(inst, 1, empty)
        assert inst.map("pepc_rules_1").items() == []


def test_errors_are_clear():
    from pepc.kernel import loader, maps

    missing = Path(f"/sys/fs/bpf/pepc-test-missing-{secrets.token_hex(3)}")
    assert loader.open_instance(missing) is None
    with pytest.raises(EnvironmentProblem) as err:
        maps.open_pinned(missing / "pepc_ctrl")
    assert "instance not loaded" in err.value.message
    with pytest.raises(EnvironmentProblem) as err:
        loader.load_object(missing / "nothing.o")
    assert "does not exist" in err.value.message


def test_verifier_rejection_carries_the_log(tmp_path):
    """A program the verifier refuses: the error holds the verifier's words."""
    import subprocess

    src = tmp_path / "bad.c"
    src.write_text(
        "#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n"
        'SEC("xdp") int bad(struct xdp_md *ctx) {\n'
        "  unsigned char *p = (unsigned char *)(long)ctx->data;\n"
        "  return p[100]; /* no bounds check */\n}\n"
        'char LICENSE[] SEC("license") = "GPL";\n'
    )
    obj = tmp_path / "bad.o"
    subprocess.run(
        ["clang", "-O2", "-g", "-target", "bpf", f"-I/usr/include/{os.uname().machine}-linux-gnu", "-c", str(src), "-o", str(obj)],
        check=True,
    )
    from pepc.kernel import loader

    with pytest.raises(EnvironmentProblem) as err:
        loader.load_object(obj)
    assert "refused" in err.value.message
    assert "invalid access to packet" in err.value.message


def test_objbuild_reports_compiler_errors(tmp_path):
    from pepc.compiler.objbuild import build_object

    with pytest.raises(EnvironmentProblem) as err:
        build_object(tmp_path, tmp_path / "x.o")
    assert "pepc_policy.h" in err.value.message
    (tmp_path / "pepc_policy.h").write_text("#error this header is broken\n")
    with pytest.raises(EnvironmentProblem) as err:
        build_object(tmp_path, tmp_path / "x.o")
    assert "this header is broken" in err.value.message
    assert not (tmp_path / "x.o").exists()
    assert not list(tmp_path.glob(".*tmp"))


def test_bloom_constants_match_the_c_source():
    import re

    from pepc.policy.resources import BPF_DIR

    src = (BPF_DIR / "pepc_xdp.c").read_text()
    consts = {m.group(1): int(m.group(2), 16) for m in re.finditer(r"#define PEPC_BLOOM_(\w+) (0x[0-9A-Fa-f]+)ULL", src)}
    assert consts == {
        "SCHEME": bloom.SCHEME, "K1": bloom.K1, "K2": bloom.K2, "K3": bloom.K3, "K4": bloom.K4,
        "K5": bloom.K5, "K6": bloom.K6, "K7": bloom.K7,
    }
    (scheme6,) = re.findall(r"#define PEPC_BLOOM6_SCHEME (0x[0-9A-Fa-f]+)ULL", src)
    assert int(scheme6, 16) == bloom.SCHEME6 != bloom.SCHEME
    assert "#define PEPC_BLOOM_WORDS PEPC_MAX_ENTRIES" in src


def test_bloom_filter_is_used_exactly_and_only_when_its_marker_is_current():
    """The kernel computes the same word and bit as pepc.compiler.bloom; it skips a
    lookup when the bit is clear, and ignores a filter whose marker is not
    the generation's."""
    from pepc.simulate.frames import build_frame
    from pepc.kernel import dataplane
    from pepc.kernel.testrun import test_run
    from pepc.compiler import pack

    _, prog = compile_policy([Rule("blk", Action.BLOCK, LOC, src=(Prefix.parse("10.0.0.7/32"),))], SMALL)
    frame = build_frame("10.0.0.7", "10.0.0.8")
    with pinned_instance(SMALL) as inst:
        dataplane.load_program(inst, prog, gen=0)
        bm = inst.map("pepc_bloom_0")
        n = bm.max_entries - 1
        contents = pack.map_contents(prog)
        (key,) = contents["pepc_rules"]
        gen_value = contents["pepc_gen"][dataplane.u32(0)]
        full = bloom.contents([key], gen_value, n)
        assert test_run(inst.prog_fd, frame).retval == layout.XDP_DROP

        word, bit = bloom.position(key, n)
        marker_key = dataplane.u32(n)
        # only the marker, no bits: the kernel trusts the filter and skips the lookup
        dataplane.write_derived(bm, {marker_key: full[marker_key]})
        assert test_run(inst.prog_fd, frame).retval == layout.XDP_PASS
        # every bit but the right one: still skipped
        others = {dataplane.u32(i): (~bit & (2**64 - 1)).to_bytes(8, "little") if i == word else (2**64 - 1).to_bytes(8, "little") for i in range(n)}
        dataplane.write_derived(bm, {**others, marker_key: full[marker_key]})
        assert test_run(inst.prog_fd, frame).retval == layout.XDP_PASS
        # just the right bit: looked up
        dataplane.write_derived(bm, {dataplane.u32(word): bit.to_bytes(8, "little"), marker_key: full[marker_key]})
        assert test_run(inst.prog_fd, frame).retval == layout.XDP_DROP
        # an empty filter whose marker is stale (another policy digest): ignored
        dataplane.write_derived(bm, {marker_key: (bloom.marker(bytes(32)) ^ 1).to_bytes(8, "little")})
        assert test_run(inst.prog_fd, frame).retval == layout.XDP_DROP


def test_direct_constants_match_the_c_source():
    import re

    from pepc.policy.resources import BPF_DIR

    src = (BPF_DIR / "pepc_xdp.c").read_text()
    consts = dict(re.findall(r"#define PEPC_DIRECT_(\w+) (.+)", src))
    assert consts == {
        "SCHEME": f"{direct.SCHEME:#x}ULL",
        "HOMES": "(2 * PEPC_MAX_ENTRIES)",
        "DEPTH": str(direct.DEPTH),
        "USED": str(direct.USED),
        "OVERFLOW": str(direct.OVERFLOW),
    }
    assert direct.homes(SMALL) == 2 * SMALL.max_entries
    (scheme6,) = re.findall(r"#define PEPC_DIRECT6_SCHEME (0x[0-9A-Fa-f]+)ULL", src)
    assert int(scheme6, 16) == direct.SCHEME6 != direct.SCHEME


def test_direct_table_is_read_inline_and_trusted_only_with_its_marker():
    """The kernel finds a key where pepc.compiler.direct puts it and takes the value
    from the table (not the rule map); an empty home means no entry; a home
    marked OVERFLOW sends it to the rule map; a stale marker disables the
    table."""
    from pepc.simulate.frames import build_frame
    from pepc.kernel import dataplane
    from pepc.kernel.testrun import test_run
    from pepc.compiler import pack

    _, prog = compile_policy([Rule("blk", Action.BLOCK, LOC, src=(Prefix.parse("10.0.0.7/32"),))], SMALL)
    frame = build_frame("10.0.0.7", "10.0.0.8")
    with pinned_instance(SMALL) as inst:
        dataplane.load_program(inst, prog, gen=0)
        dm = inst.map("pepc_direct_0")
        n = direct.homes_of_map(dm.max_entries)
        assert n == direct.homes(SMALL)
        contents = pack.map_contents(prog)
        ((key, value),) = contents["pepc_rules"].items()
        gen_value = contents["pepc_gen"][dataplane.u32(0)]
        full = direct.contents(contents["pepc_rules"], gen_value, n)
        mark = dataplane.u32(n + direct.DEPTH)
        h = direct.home(key, n)
        assert set(full) == {dataplane.u32(h), mark}
        assert test_run(inst.prog_fd, frame).retval == layout.XDP_DROP

        allow = layout.RULE_VAL.pack({**layout.RULE_VAL.unpack(value), "action": int(Action.ALLOW)})
        # the entry says ALLOW while the rule map says BLOCK: the table is what the program reads
        dataplane.write_derived(dm, {dataplane.u32(h): direct.entry(key, allow, direct.USED), mark: full[mark]})
        assert test_run(inst.prog_fd, frame).retval == layout.XDP_PASS
        # ... found DEPTH entries after its home, behind other keys
        filler = [direct.entry(bytes([0xEE, j]) + bytes(18), value, direct.USED) for j in range(direct.DEPTH)]
        row = {dataplane.u32(h + j): e for j, e in enumerate(filler)}
        dataplane.write_derived(dm, {**row, dataplane.u32(h + direct.DEPTH): direct.entry(key, allow, direct.USED), mark: full[mark]})
        assert test_run(inst.prog_fd, frame).retval == layout.XDP_PASS
        # an empty home: no entry (the rule map is not asked)
        dataplane.write_derived(dm, {mark: full[mark]})
        assert test_run(inst.prog_fd, frame).retval == layout.XDP_PASS
        # a full run without the key, its home marked OVERFLOW: the rule map decides
        over = {dataplane.u32(h + j): direct.entry(bytes([0xEE, j]) + bytes(18), allow, direct.USED) for j in range(direct.DEPTH + 1)}
        over[dataplane.u32(h)] = direct.entry(bytes([0xEE, 0]) + bytes(18), allow, direct.USED | direct.OVERFLOW)
        dataplane.write_derived(dm, {**over, mark: full[mark]})
        assert test_run(inst.prog_fd, frame).retval == layout.XDP_DROP
        over[dataplane.u32(h)] = direct.entry(bytes([0xEE, 0]) + bytes(18), allow, direct.USED)
        dataplane.write_derived(dm, {**over, mark: full[mark]})
        assert test_run(inst.prog_fd, frame).retval == layout.XDP_PASS
        # a stale marker: the table is ignored, the rule map answers
        stale = bytearray(full[mark])
        stale[0] ^= 1
        dataplane.write_derived(dm, {dataplane.u32(h): direct.entry(key, allow, direct.USED), mark: bytes(stale)})
        assert test_run(inst.prog_fd, frame).retval == layout.XDP_DROP


def test_ipv6_hits_are_read_from_the_ipv6_direct_table_and_prefilter():
    """The IPv6 walk finds a key where pepc.compiler.direct puts it in pepc_direct6
    (the table, not pepc_rules6, answers), an empty home means no entry, a
    stale marker disables the table; a clear pepc_bloom6 bit skips the key."""
    from pepc.simulate.frames import build_frame6
    from pepc.kernel import dataplane
    from pepc.kernel.testrun import test_run
    from pepc.compiler import pack

    rule = Rule("blk6", Action.BLOCK, LOC, src=(Prefix.parse("2001:db8::7/128"),), dst=(Prefix.parse("::/0"),))
    _, prog = compile_policy([rule], SMALL)
    frame = build_frame6("2001:db8::7", "2001:db8::8")
    with pinned_instance(SMALL) as inst:
        dataplane.load_program(inst, prog, gen=0)
        dm, bm = inst.map("pepc_direct6_0"), inst.map("pepc_bloom6_0")
        n = direct.homes_of_map(dm.max_entries)
        contents = pack.map_contents(prog)
        ((key, value),) = contents["pepc_rules6"].items()
        gen_value = contents["pepc_gen"][dataplane.u32(0)]
        full = direct.contents(contents["pepc_rules6"], gen_value, n, v6=True)
        mark = dataplane.u32(n + direct.DEPTH)
        h = direct.home(key, n)
        assert set(full) == {dataplane.u32(h), mark}
        assert test_run(inst.prog_fd, frame).retval == layout.XDP_DROP

        allow = layout.RULE_VAL.pack({**layout.RULE_VAL.unpack(value), "action": int(Action.ALLOW)})
        dataplane.write_derived(dm, {dataplane.u32(h): direct.entry(key, allow, direct.USED), mark: full[mark]})
        assert test_run(inst.prog_fd, frame).retval == layout.XDP_PASS
        filler = [direct.entry(bytes([0xEE, j]) + bytes(46), value, direct.USED) for j in range(direct.DEPTH)]
        row = {dataplane.u32(h + j): e for j, e in enumerate(filler)}
        dataplane.write_derived(dm, {**row, dataplane.u32(h + direct.DEPTH): direct.entry(key, allow, direct.USED), mark: full[mark]})
        assert test_run(inst.prog_fd, frame).retval == layout.XDP_PASS
        dataplane.write_derived(dm, {mark: full[mark]})  # an empty home: no entry
        assert test_run(inst.prog_fd, frame).retval == layout.XDP_PASS
        stale = bytearray(full[mark])
        stale[0] ^= 1
        dataplane.write_derived(dm, {dataplane.u32(h): direct.entry(key, allow, direct.USED), mark: bytes(stale)})
        assert test_run(inst.prog_fd, frame).retval == layout.XDP_DROP  # the table ignored: pepc_rules6 answers

        nb = bm.max_entries - 1
        bfull = bloom.contents([key], gen_value, nb, v6=True)
        word, bit = bloom.position(key, nb)
        bmark = dataplane.u32(nb)
        dataplane.write_derived(bm, {bmark: bfull[bmark]})  # the marker, no bits: skipped
        assert test_run(inst.prog_fd, frame).retval == layout.XDP_PASS
        dataplane.write_derived(bm, {dataplane.u32(word): bit.to_bytes(8, "little"), bmark: bfull[bmark]})
        assert test_run(inst.prog_fd, frame).retval == layout.XDP_DROP
        # the IPv4 filter's marker is not the IPv6 one's
        dataplane.write_derived(bm, {bmark: bloom.marker(bloom.gen_digest(gen_value)).to_bytes(8, "little")})
        assert test_run(inst.prog_fd, frame).retval == layout.XDP_DROP


def test_ipv6_walk_goes_past_the_unrolled_masks_in_both_generations():
    """12 IPv6 masks: a packet only the last one matches is found by the
    bpf_loop part of the IPv6 walk (the first 8 are unrolled), from either
    generation's maps."""
    from pepc.simulate.frames import build_frame6
    from pepc.kernel import dataplane
    from pepc.kernel.testrun import test_run

    rules = [
        Rule(f"r{plen:03d}", Action.ALLOW, LOC, src=(Prefix.parse(f"2001:db8:ffff::/{plen}"),), dst=(Prefix.parse("::/0"),))
        for plen in (128, 124, 120, 112, 104, 96, 88, 80, 72, 64, 56)
    ] + [Rule("last", Action.BLOCK, LOC, src=(Prefix.parse("2001:db8::/32"),), dst=(Prefix.parse("::/0"),))]
    _, prog = compile_policy(rules, SMALL)
    assert len(prog.masks6) == 12 and prog.masks6[-1].shape.src_plen == 32
    with pinned_instance(SMALL) as inst:
        for gen in (0, 1):
            dataplane.load_program(inst, prog, gen=gen)
            assert test_run(inst.prog_fd, build_frame6("2001:db8:1::1", "2001:db8::2")).retval == layout.XDP_DROP
            assert test_run(inst.prog_fd, build_frame6("2001:db8:ffff::1", "2001:db8::2")).retval == layout.XDP_PASS
            assert test_run(inst.prog_fd, build_frame6("2001:db9::1", "2001:db8::2")).retval == layout.XDP_PASS


def test_without_privileges_the_message_says_what_is_needed():
    """As an unprivileged user (setpriv to nobody), loading fails with the
    EPERM message, not a traceback or a bare errno."""
    import shutil
    import subprocess
    import sys

    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is not installed")
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="pepc-test-nobody-"))  # pytest's tmp dirs are root-only
    d.chmod(0o755)
    obj = d / "pepc_xdp.o"
    shutil.copy(object_for(SMALL), obj)
    obj.chmod(0o644)
    script = (
        "from pepc.kernel.loader import load_object\n"
        "from pepc.policy.diagnostics import EnvironmentProblem\n"
        "try:\n"
        f"    load_object({str(obj)!r})\n"
        "except EnvironmentProblem as e:\n"
        "    print(e.message)\n"
    )
    try:
        r = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", script],
            capture_output=True, text=True, timeout=60, cwd=str(Path(__file__).resolve().parent.parent),
        )
    finally:
        shutil.rmtree(d)
    assert r.returncode == 0, r.stderr
    assert "needs root or CAP_BPF+CAP_NET_ADMIN" in r.stdout
