"""The watch service's HTTP endpoints and metrics, served for real on a free
port, with the loop driven by an injected backend (no kernel: the kernel
path is tests/kernel/test_watch_kernel.py)."""

from __future__ import annotations

import ipaddress

import json
import os
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pepc.policy.model import Policy
from pepc.watch.events import Event, slot_rule_id
from pepc.watch.fs import event_relevant, fingerprint, relevant
from pepc.watch.http import Endpoints, HttpServer, parse_listen
from pepc.watch.metrics import LiveSnapshot, RuleCounters, build_registry
from pepc.watch.schedule import Scheduler
from pepc.watch.service import WatchService

from watch_helpers import BAD, FakeBackend, FakeClock, rule


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def served():
    clock = FakeClock()
    be = FakeBackend(Policy("d", (rule("a"), rule("b"))))
    svc = WatchService(be, Scheduler(), clock=clock)
    snap = LiveSnapshot(
        active_gen=1,
        rules=(RuleCounters("a", 0, 10, 1000, 0), RuleCounters('we"ird\\id', 1, 3, 180, 3)),
        counters={"packets": 13, "drop": 3, "events_suppressed": 7},
        usage={"pepc_rules": (2, 131072), "pepc_slots": (2, 16384)},
        attached={"veth0": True},
    )
    registry, wm = build_registry(svc.state, lambda: snap)
    svc.observers.append(wm)
    http = HttpServer("127.0.0.1:0", Endpoints(registry, svc.state, lambda: {"instance": "t", "watch": svc.state().as_json()}, lambda: True))
    http.start()
    host, port = http.address
    try:
        yield svc, be, clock, f"http://{host}:{port}"
    finally:
        http.stop()
        svc.close()


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_readyz_follows_the_loop(served):
    svc, be, clock, base = served
    code, body = get(base + "/readyz")
    assert code == 503 and json.loads(body)["ready"] is False
    svc.tick()
    assert get(base + "/readyz")[0] == 200
    be.edit(None, [BAD])
    svc.notify_change()
    clock.advance(1)
    svc.tick()
    code, body = get(base + "/readyz")
    assert code == 503 and json.loads(body)["result"] == "invalid"
    code, body = get(base + "/status")
    st = json.loads(body)["watch"]
    assert code == 200 and st["errors"][0]["code"] == "yaml-syntax" and st["errors"][0]["line"] == 3
    assert get(base + "/healthz")[0] == 200
    assert get(base + "/nope")[0] == 404


def test_metrics_parse_and_carry_loop_and_live_values(served):
    svc, be, clock, base = served
    svc.tick()
    be.edit(None, [BAD])
    svc.notify_change()
    clock.advance(1)
    svc.tick()
    code, text = get(base + "/metrics")
    assert code == 200
    fams = families(text)
    rec = {s.labels["result"]: s.value for s in fams["pepc_reconciles"].samples if s.name == "pepc_reconciles_total"}
    assert rec == {"ok": 1.0, "invalid": 1.0, "error": 0.0}
    hist = [s for s in fams["pepc_reconcile_duration_seconds"].samples if s.name.endswith("_count")]
    assert hist[0].value == 2
    assert fams["pepc_last_reconcile_error"].samples[0].value == 1
    assert fams["pepc_last_successful_reconcile_timestamp_seconds"].samples[0].value == pytest.approx(clock.wall - 1)
    pk = {s.labels["rule"]: s.value for s in fams["pepc_rule_packets"].samples}
    assert pk == {"a": 10, 'we"ird\\id': 3}
    drops = {s.labels["rule"]: s.value for s in fams["pepc_rule_drops"].samples}
    assert drops['we"ird\\id'] == 3
    xdp = {s.labels["counter"]: s.value for s in fams["pepc_xdp"].samples}
    assert xdp["drop"] == 3
    assert fams["pepc_events_suppressed"].samples[0].value == 7
    use = {s.labels["map"]: s.value for s in fams["pepc_map_entries"].samples}
    cap = {s.labels["map"]: s.value for s in fams["pepc_map_capacity"].samples}
    assert use["pepc_rules"] == 2 and cap["pepc_rules"] == 131072
    assert fams["pepc_active_generation"].samples[0].value == 1
    assert "process_cpu_seconds" in fams


def test_metrics_survive_unreadable_maps():
    svc = WatchService(FakeBackend(Policy("d", (rule("a"),))), Scheduler(), clock=FakeClock())

    def gone():
        raise OSError("no such pin")

    registry, _ = build_registry(svc.state, gone)
    from prometheus_client import generate_latest

    fams = families(generate_latest(registry).decode())
    assert fams["pepc_live_readable"].samples[0].value == 0
    assert "pepc_rule_packets" not in fams
    svc.close()


@pytest.mark.parametrize(
    "text,expect",
    [("127.0.0.1:9477", ("127.0.0.1", 9477)), (":9", ("0.0.0.0", 9)), ("[::1]:80", ("::1", 80))],
)
def test_parse_listen(text, expect):
    assert parse_listen(text) == expect


@pytest.mark.parametrize("text", ["9477", "host:port", "1.2.3.4:70000", "[::1]80"])
def test_parse_listen_rejects(text):
    with pytest.raises(ValueError):
        parse_listen(text)


# --- filesystem relevance -----------------------------------------------------------


@pytest.mark.parametrize(
    "path,is_dir,expect",
    [
        ("/p/a.yaml", False, True),
        ("/p/sub/b.JSON", False, True),
        ("/p/x.yml", False, True),
        ("/p/.a.yaml.swp", False, False),
        ("/p/a.yaml~", False, False),
        ("/p/4913", False, False),
        ("/p/.git/index", False, False),
        ("/p/.git", True, False),
        ("/p/sub", True, True),
        ("/p", True, True),
        ("/etc/pepc.yaml", False, True),
        ("/etc/other.yaml", False, False),
        ("/q/a.yaml", False, False),
    ],
)
def test_relevant(path, is_dir, expect):
    assert relevant(path, is_dir, "/p", "/etc/pepc.yaml") is expect


def test_rename_into_place_is_relevant():
    from watchdog.events import DirModifiedEvent, FileMovedEvent

    assert event_relevant(FileMovedEvent("/p/.a.yaml.tmp", "/p/a.yaml"), "/p", None)
    assert not event_relevant(FileMovedEvent("/p/.a.tmp", "/p/.b.tmp"), "/p", None)
    assert not event_relevant(DirModifiedEvent("/p"), "/p", None)


def test_fingerprint_moves_with_what_the_loader_reads(tmp_path):
    (tmp_path / "a.yaml").write_text("policies: []\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yaml").write_text("policies: []\n")
    cfg = tmp_path.parent / "pepc-test.yaml"
    fp0 = fingerprint(str(tmp_path), str(cfg))
    assert fingerprint(str(tmp_path), str(cfg)) == fp0
    (tmp_path / ".swp").write_text("x")
    (tmp_path / "notes.txt").write_text("x")
    assert fingerprint(str(tmp_path), str(cfg)) == fp0  # the loader reads neither
    (tmp_path / "sub" / "b.yaml").write_text("policies: [] # edited\n")
    fp1 = fingerprint(str(tmp_path), str(cfg))
    assert fp1 != fp0
    (tmp_path / "sub" / "b.yaml").chmod(0o000)
    assert fingerprint(str(tmp_path), str(cfg)) != fp1
    cfg.write_text("default_action: ALLOW\n")
    try:
        assert fingerprint(str(tmp_path), str(cfg)) != fp1
    finally:
        cfg.unlink()


# --- events --------------------------------------------------------------------------


def test_event_rendering():
    from pepc.compiler import layout

    raw = layout.SLOT.pack({"flags": layout.SLOT_FLAG_USED, "id_len": 7, "id": b"log_ssh", "action": 3})
    assert slot_rule_id(raw) == "log_ssh"
    assert slot_rule_id(bytes(layout.SLOT.size)) is None
    long_id = "x" * 80
    raw = layout.SLOT.pack({"flags": 1, "id_len": 80, "id": long_id.encode()})
    assert slot_rule_id(raw) == "x" * 64 + "…"
    rec = {"ts_ns": 0, "slot": 4, "src": 0x0A000001, "dst": 0xC0A80101, "sport": 40000, "dport": 22, "proto": 6, "action": 3, "len": 74}
    ev = Event.from_record(rec, "log_ssh", wall=1_800_000_000.5)
    assert ev.text() == "2027-01-15T08:00:00.500000Z LOG_ONLY rule=log_ssh TCP 10.0.0.1:40000 -> 192.168.1.1:22 len=74"
    assert ev.as_json()["src"] == "10.0.0.1" and ev.as_json()["dport"] == 22
    icmp = Event.from_record({**rec, "proto": 1, "sport": 0, "dport": 0}, None, wall=1_800_000_000.0)
    assert icmp.text().endswith("LOG_ONLY rule=<slot 4> ICMP 10.0.0.1 -> 192.168.1.1 len=74")

    # an IPv6 record, through the ring-buffer decoder
    from pepc.kernel.ringbuf import decode_event

    src6, dst6 = ipaddress.IPv6Address("2001:db8::1"), ipaddress.IPv6Address("fd00::10")
    raw = layout.EVENT.pack({"slot": 4, "sport": 40000, "dport": 443, "proto": 6, "action": 3, "len": 94, "family": 6,
                             "src6": src6.packed, "dst6": dst6.packed})
    v6 = Event.from_record(decode_event(raw), "log_https", wall=1_800_000_000.0)
    assert v6.text().endswith("LOG_ONLY rule=log_https TCP [2001:db8::1]:40000 -> [fd00::10]:443 len=94")
    assert v6.as_json()["src"] == "2001:db8::1" and v6.as_json()["dst"] == "fd00::10"
    nd = Event.from_record({**decode_event(raw), "proto": 58, "sport": 0, "dport": 0}, None, wall=1_800_000_000.0)
    assert nd.text().endswith("ICMPV6 2001:db8::1 -> fd00::10 len=94")
    # an IPv4 record through the decoder keeps its family
    raw4 = layout.EVENT.pack({**rec, "family": 4})
    assert Event.from_record(decode_event(raw4), "log_ssh", wall=1_800_000_000.5).text() == ev.text()


# --- the directory watch, on a real inotify ----------------------------------------------


def test_tree_watch_sees_renames_and_ignores_dotfiles(tmp_path):
    """Ordering proves absence: a later sentinel event arrives after any
    event the ignored writes would have caused."""
    import threading

    from pepc.watch.fs import TreeWatch

    root = tmp_path / "policies.d"
    root.mkdir()
    (root / ".git").mkdir()
    seen: list[str] = []
    cond = threading.Condition()

    def on_change(path: str) -> None:
        with cond:
            seen.append(os.path.relpath(path, root))
            cond.notify_all()

    def wait_seen(name: str) -> None:
        with cond:
            assert cond.wait_for(lambda: name in seen, timeout=20), seen

    tw = TreeWatch(str(root), str(tmp_path / "pepc.yaml"), on_change)
    tw.start()
    try:
        (root / ".git" / "index").write_text("x")
        (root / ".a.yaml.swp").write_text("x")
        (root / "notes.txt").write_text("x")
        (root / "sentinel.yaml").write_text("x")
        wait_seen("sentinel.yaml")
        assert not any(p.startswith(".") or p.endswith(".txt") for p in seen), seen

        tmp = root / ".b.yaml.tmp"
        tmp.write_text("policies: []\n")
        os.replace(tmp, root / "b.yaml")  # an editor's save
        wait_seen("b.yaml")

        (root / "sub").mkdir()
        (root / "sub" / "c.yml").write_text("x")  # a new directory is watched too
        wait_seen(os.path.join("sub", "c.yml"))

        (tmp_path / "pepc.yaml").write_text("x")  # the host config beside the directory
        wait_seen(os.path.join("..", "pepc.yaml"))

        # the directory replaced by a new one (a deploy swapping directories): watched again
        new = tmp_path / "new.d"
        new.mkdir()
        os.rename(root, tmp_path / "old.d")
        os.rename(new, root)
        wait_seen(".")
        assert tw.rearm() is False  # already re-armed from the parent's event
        (root / "d.yaml").write_text("x")
        wait_seen("d.yaml")
    finally:
        tw.stop()


# --- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["watch", "p", "--resync", "0"],
        ["watch", "p", "--debounce", "-1"],
        ["watch", "p", "--resync", "soon"],
        ["watch", "p", "--instance", "../x"],
        ["watch", "p", "--log-format", "xml"],
        ["events", "--format", "sarif"],
    ],
)
def test_bad_options_are_usage_errors(argv, capsys):
    from pepc.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "error" in capsys.readouterr().err


def test_bad_listen_address_is_an_environment_error(tmp_path, capsys):
    from pepc.cli import main

    (tmp_path / "p").mkdir()
    rc = main(["watch", str(tmp_path / "p"), "--listen", "nowhere", "--config", str(tmp_path / "missing.yaml")])
    assert rc == 3
    assert "bad listen address" in capsys.readouterr().err


def test_a_second_watch_of_one_instance_is_refused(tmp_path):
    from pepc.commands.watch import _single_watch
    from pepc.policy.diagnostics import EnvironmentProblem

    fd = _single_watch(str(tmp_path / "run"), "web")
    try:
        with pytest.raises(EnvironmentProblem, match=rf"another `pepc watch` runs instance 'web' \(pid {os.getpid()}\)"):
            _single_watch(str(tmp_path / "run"), "web")
        os.close(_single_watch(str(tmp_path / "run"), "other"))
    finally:
        os.close(fd)
    os.close(_single_watch(str(tmp_path / "run"), "web"))  # released with its holder


def test_healthz_turns_unhealthy_when_a_reconcile_hangs():
    clock = FakeClock()
    svc = WatchService(FakeBackend(Policy("d", (rule("a"),))), Scheduler(), clock=clock)
    assert svc.alive()
    svc._busy_since = clock.mono  # as if a reconcile started and never returned
    clock.advance(299)
    assert svc.alive()
    clock.advance(2)
    assert not svc.alive()
    svc.request_stop()
    svc._busy_since = None
    assert not svc.alive()
    svc.close()
