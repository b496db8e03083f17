"""LoadCache: a cached reload equals an uncached load, whatever the edits.

The oracle is `load_policy` without a cache on the same directory after
every step: the same Policy, or a PolicyError with the same findings."""

from __future__ import annotations

import itertools
from datetime import datetime, timezone
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from pepc.policy.diagnostics import PolicyError
from pepc.loader import load_policy
from pepc.loader.cache import LoadCache

# Contents a file can take: valid sets, definitions other files use, every
# kind of load error (syntax, encoding, schema, unknown/duplicate names,
# duplicate ids across files, cycles), a legacy list and an empty document.
TEXTS: list[bytes] = [
    b"policies:\n  - id: a1\n    action: BLOCK\n    src: {ip: 10.0.0.1/32}\n",
    b"policies:\n  - id: a1\n    action: ALLOW\n    src: {ip: 10.0.0.1/32}\n",
    b"policies:\n  - id: b1\n    action: BLOCK\n    dst: {ip: lan, port: web}\n",
    b"policies:\n  - id: b2\n    action: ALLOW\n    src: {ip: [lan, 10.9.0.0/16]}\n    dst: {port: 22, protocol: TCP}\n",
    b"networks:\n  lan: 192.168.0.0/16\nservices:\n  web: [80, 443]\n",
    b"networks:\n  lan: [192.168.1.0/24, 172.16.0.0/12]\nservices:\n  web: 8080\n",
    b"networks:\n  lan: other\n  other: 10.1.0.0/16\n",
    b"networks:\n  lan: lan2\n  lan2: lan\n",  # a cycle
    b"networks:\n  lan: 10.0.0.0/8\n",  # duplicate of another file's lan (when both present)
    b"policies:\n  - id: c1\n    action: RATE_LIMIT\n    rate_limit_bps: 1000\n    dst: {ip: wan}\n",  # unknown network
    b"policies:\n  - id: c2\n    action: BLOCK\n    src: {ip: 300.1.1.1}\n",  # bad address
    b"policies:\n  - id: [\n",  # syntax
    b"\xff\xfe not utf-8\n",
    b"policies:\n  - id: d1\n    action: JUMP\n",  # schema
    b"- id: legacy1\n  action: BLOCK\n  src: 10.7.0.0/16\n",
    b"# nothing\n",
    b"policies:\n  - id: a1\n    action: BLOCK\n    dst: {ip: 10.0.0.2/32}\n  - id: e1\n    action: LOG_ONLY\n    expires_at: 2026-01-01T00:00:00Z\n",
    # three rules, the middle one edited in place (a re-parse of that rule alone)
    b"policies:\n  - id: t1\n    action: BLOCK\n    src: {ip: 10.1.0.1/32}\n  - id: t2\n    action: ALLOW\n    dst: {ip: lan, port: 22}\n  - id: t3\n    action: BLOCK\n",
    b"policies:\n  - id: t1\n    action: BLOCK\n    src: {ip: 10.1.0.1/32}\n  - id: t2\n    action: BLOCK\n    dst: {ip: wan, port: 23}\n  - id: t3\n    action: BLOCK\n",
    # the same first rule (same text, same place) before different second ones: its resolution is reused
    b"policies:\n  - id: m1\n    action: BLOCK\n    dst: {ip: lan, port: web}\n  - id: m2\n    action: ALLOW\n    src: {ip: 10.0.0.1/32}\n",
    b"policies:\n  - id: m1\n    action: BLOCK\n    dst: {ip: lan, port: web}\n  - id: m2\n    action: BLOCK\n    src: {ip: 10.0.0.3/32}\n",
    # the same text of m1, but an alias whose anchor lies outside it and differs
    b"policies:\n  - id: m0\n    action: BLOCK\n    src: {ip: &x 10.0.0.1/32}\n  - id: m1\n    action: BLOCK\n    dst: {ip: *x}\n",
    b"policies:\n  - id: m0\n    action: BLOCK\n    src: {ip: &x 10.0.0.2/32}\n  - id: m1\n    action: BLOCK\n    dst: {ip: *x}\n",
]
NAMES = ["a.yaml", "b.yaml", "sub/c.yaml", "d.yml", "e.json"]

_mtimes = itertools.count(1_600_000_000_000_000_000, 1_000_000_007)


def _write(root: Path, name: str, data: bytes) -> None:
    p = root / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    _touch(p)


def _touch(p: Path) -> None:
    # A distinct mtime per write: with racy_ns=0 the cache then trusts stat
    # keys, so stat hits, hash hits and parses are all exercised.
    t = next(_mtimes)
    os.utime(p, ns=(t, t))


_NOWS = [datetime(2025, 6, 1, tzinfo=timezone.utc), datetime(2026, 6, 1, tzinfo=timezone.utc)]


def _outcome(root: Path, cache: LoadCache | None):
    try:
        pol = load_policy(root, cache=cache)
    except PolicyError as err:
        # with the policy of the files that did load (pepc check reports on it)
        return "error", err.findings, err.without, err.partial
    # the live rules (which a cached load may hand over precomputed) are
    # the rules live by their own fields, at any time
    lives = tuple(pol.live_rules(now) for now in _NOWS)
    assert lives == tuple(tuple(r for r in pol.rules if r.is_live(now)) for now in _NOWS)
    return "ok", pol, lives


def _check_edit(before, after) -> None:
    """What Policy.edit_from says, when it says anything, is exactly how
    the rule objects changed."""
    edit = after.edit_from(before)
    if edit is None:
        return
    gone, came = map(lambda rs: set(map(id, rs)), edit)
    old, new = set(map(id, before.rules)), set(map(id, after.rules))
    assert gone <= old and came <= new and not gone & new and not came & old
    assert (old - gone) | came == new


OPS = hs.one_of(
    hs.tuples(hs.just("write"), hs.sampled_from(NAMES), hs.integers(0, len(TEXTS) - 1)),
    hs.tuples(hs.just("touch"), hs.sampled_from(NAMES), hs.just(0)),
    hs.tuples(hs.just("remove"), hs.sampled_from(NAMES), hs.just(0)),
    hs.tuples(hs.just("rename"), hs.sampled_from(NAMES), hs.integers(0, len(NAMES) - 1)),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(initial=hs.lists(hs.integers(0, len(TEXTS) - 1), min_size=1, max_size=len(NAMES)), ops=hs.lists(OPS, min_size=1, max_size=12),
       racy=hs.booleans())
def test_cached_reload_equals_uncached_load(initial, ops, racy):
    root = Path(tempfile.mkdtemp(prefix="pepc-lc-"))
    try:
        for name, t in zip(NAMES, initial):
            _write(root, name, TEXTS[t])
        cache = LoadCache(racy_ns=2_000_000_000 if racy else 0)
        first = _outcome(root, cache)
        assert first == _outcome(root, None)
        prev = first[1] if first[0] == "ok" else None
        for op, name, arg in ops:
            p = root / name
            if op == "write":
                _write(root, name, TEXTS[arg])
            elif op == "touch" and p.exists():
                _touch(p)
            elif op == "remove" and p.exists():
                p.unlink()
            elif op == "rename" and p.exists():
                dst = root / NAMES[arg]
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(p, dst)
            if not any(root.rglob("*.y*ml")) and not any(root.rglob("*.json")):
                _write(root, "a.yaml", TEXTS[0])
            cached, plain = _outcome(root, cache), _outcome(root, None)
            assert cached == plain, (op, name, arg)
            if cached[0] == "ok" and prev is not None:
                _check_edit(prev, cached[1])
            prev = cached[1] if cached[0] == "ok" else None
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _dir(tmp_path: Path, n_files: int = 20, per_file: int = 5) -> Path:
    root = tmp_path / "p"
    _write(root, "defs.yaml", TEXTS[4])
    for f in range(n_files):
        body = "policies:\n" + "".join(
            f"  - id: r{f}_{i}\n    action: BLOCK\n    src: {{ip: 10.{f}.{i}.0/24}}\n    dst: {{ip: lan, port: web}}\n" for i in range(per_file)
        )
        _write(root, f"f{f:02d}.yaml", body.encode())
    return root


def test_one_changed_file_is_the_only_one_parsed_and_resolved(tmp_path):
    root = _dir(tmp_path)
    cache = LoadCache(racy_ns=0)
    first = load_policy(root, cache=cache)
    assert cache.stats.parsed == 21 and cache.stats.rules_resolved == 100
    assert load_policy(root, cache=cache) is first and cache.stats.unchanged  # nothing changed: the same object
    _write(root, "f07.yaml", (root / "f07.yaml").read_bytes().replace(b"10.7.0.0/24", b"10.77.0.0/24"))
    second = load_policy(root, cache=cache)
    # one file re-parsed; of its rules only the edited one resolved again (the
    # others read the same, at the same place: their resolutions are reused)
    assert (cache.stats.parsed, cache.stats.hash_hits, cache.stats.stat_hits, cache.stats.rules_resolved) == (1, 0, 20, 1)
    unchanged = [r for r in second.rules if r.id != "r7_0"]
    assert all(a is b for a, b in zip(unchanged, (r for r in first.rules if r.id != "r7_0")))
    gone, came = second.edit_from(first)  # the loader tells the later stages what changed
    assert [r.id for r in gone] == [r.id for r in came] == ["r7_0"]
    assert second.edit_from(second) is None
    assert second == load_policy(root) and second != first


def test_same_bytes_new_stat_key_is_a_hash_hit(tmp_path):
    root = _dir(tmp_path, 3)
    cache = LoadCache(racy_ns=0)
    first = load_policy(root, cache=cache)
    data = (root / "f01.yaml").read_bytes()
    (root / "f01.yaml").unlink()
    _write(root, "f01.yaml", data)  # new inode, new mtime, same bytes (git checkout)
    again = load_policy(root, cache=cache)
    assert (cache.stats.parsed, cache.stats.hash_hits) == (0, 1)
    assert again is first


def test_definition_change_re_resolves_rules_only_then(tmp_path):
    root = _dir(tmp_path, 4)
    cache = LoadCache(racy_ns=0)
    load_policy(root, cache=cache)
    _write(root, "defs.yaml", TEXTS[5])  # lan and web change: every rule using them
    p = load_policy(root, cache=cache)
    assert cache.stats.parsed == 1 and cache.stats.rules_resolved == 20
    assert p == load_policy(root)
    _write(root, "defs.yaml", TEXTS[5] + b"# a comment\n")  # bytes change, tables do not
    assert load_policy(root, cache=cache) == p
    assert cache.stats.parsed == 1 and cache.stats.rules_resolved == 0


def test_racy_entries_are_verified_by_hash(tmp_path):
    """A second write in the same timestamp tick can leave the stat key
    equal: an entry read within racy_ns of its mtime/ctime is not trusted
    by stat, it is hashed again on the next load (and parsed only if the
    bytes differ)."""
    root = tmp_path / "p"
    (root).mkdir()
    (root / "a.yaml").write_bytes(TEXTS[0])  # mtime/ctime: now
    cache = LoadCache()  # the default window
    first = load_policy(root, cache=cache)
    again = load_policy(root, cache=cache)
    assert (cache.stats.stat_hits, cache.stats.hash_hits, cache.stats.parsed) == (0, 1, 0) and again is first
    (root / "a.yaml").write_bytes(TEXTS[1])  # same size; possibly the same tick
    p = load_policy(root, cache=cache)
    assert p == load_policy(root) and p.rules[0].action.name == "ALLOW"


@pytest.mark.parametrize("bad", [TEXTS[11], TEXTS[12], TEXTS[13], TEXTS[9]])
def test_invalid_edit_then_fix(tmp_path, bad):
    root = _dir(tmp_path, 3)
    cache = LoadCache(racy_ns=0)
    good = load_policy(root, cache=cache)
    _write(root, "f02.yaml", bad)
    with pytest.raises(PolicyError) as a:
        load_policy(root, cache=cache)
    with pytest.raises(PolicyError) as b:
        load_policy(root)
    assert a.value.findings == b.value.findings
    with pytest.raises(PolicyError) as c:  # unchanged and still bad: the same findings again
        load_policy(root, cache=cache)
    assert c.value.findings == b.value.findings
    original = _dir(tmp_path / "again", 3) / "f02.yaml"
    _write(root, "f02.yaml", original.read_bytes())
    assert load_policy(root, cache=cache) == good


@pytest.mark.parametrize("a, b", [(-4, -3), (-2, -1)], ids=["second-rule-edited", "alias-outside-the-rule"])
def test_a_rule_with_the_same_text_in_place_is_reused_only_when_that_pins_it_down(tmp_path, a, b):
    root = tmp_path / "p"
    _write(root, "defs.yaml", TEXTS[4])
    _write(root, "a.yaml", TEXTS[a])
    cache = LoadCache(racy_ns=0)
    first = load_policy(root, cache=cache)
    _write(root, "a.yaml", TEXTS[b])
    second = load_policy(root, cache=cache)
    assert second == load_policy(root)
    m1 = [r for r in second.rules if r.id == "m1"][0]
    if a == -4:  # m1 reads the same: not resolved again, the same object
        assert cache.stats.rules_resolved == 1 and m1 is [r for r in first.rules if r.id == "m1"][0]
    else:  # m1 reads the same but its alias names another value
        assert cache.stats.rules_resolved == 2 and str(m1.dst[0]) == "10.0.0.2/32"


_THREE = (
    "policies:\n"
    "  - id: p1\n    action: BLOCK\n    src: {ip: 10.0.0.1/32}\n"
    "  - id: p2\n    action: ALLOW\n    description: \"two\"\n    dst:\n      ip: [10.0.0.2/32, lan]\n      port: web\n"
    "  - id: p3\n    action: BLOCK\n    src: {ip: 10.0.0.3/32}\n"
)


@pytest.mark.parametrize(
    "old, new, patched",
    [
        ("10.0.0.2/32", "10.9.9.9/32", True),  # a value inside one rule
        ("action: ALLOW", "action: LOG_ONLY", True),
        ("port: web", "port: 8080", True),
        ('"two"', '"two words, changed"', True),
        ("10.0.0.2/32", "10.0.0.2/33", True),  # a wrong value: resolution reports it, as after a full parse
        ("action: ALLOW", "action: JUMP", False),  # schema
        ("port: web", "port: web\n      protocol: TCP", False),  # one line more: later rules move
        ("port: web", "port: [web,\n        22]", False),  # a line more, inside the rule
        ('"two"', '"two', False),  # an unterminated string would swallow what follows
        ("description:", "description: &d", False),  # an anchor
        ("id: p2\n", "id: p2x\n", True),
        ("- id: p2\n    action: ALLOW", "- id: p2\n  action: ALLOW", False),  # indentation: the structure changes
        ("src: {ip: 10.0.0.3/32}", "src: {ip: 10.0.0.4/32}", False),  # the last rule: its span runs to the end
    ],
)
def test_an_edit_inside_one_rule_reparses_only_that_rule(tmp_path, old, new, patched):
    root = tmp_path / "p"
    _write(root, "defs.yaml", TEXTS[4])
    _write(root, "a.yaml", _THREE.encode())
    cache = LoadCache(racy_ns=0)
    load_policy(root, cache=cache)
    assert old in _THREE
    _write(root, "a.yaml", _THREE.replace(old, new, 1).encode())
    got, want = _outcome(root, cache), _outcome(root, None)
    assert got == want
    assert cache.stats.patched == int(patched)
    if got[0] == "ok":  # locations too (Policy equality leaves out field locations)
        assert [(r.loc, r.field_locs) for r in got[1].rules] == [(r.loc, r.field_locs) for r in want[1].rules]
