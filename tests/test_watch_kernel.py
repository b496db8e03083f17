"""`pepc watch` against the real kernel, as a subprocess with its own
instance, pin root, veth pair, free port and policy directory.

What these prove, by reading the live maps (never pepc's own account):
an edit is live within a second of the write; an invalid edit leaves the
live policy alone and says so on /readyz, /status and /metrics; a git
checkout of 100 files is one apply; drift is repaired by the next resync;
a rule leaves the data plane at its expiry; SIGTERM leaves the program
attached; a restart writes nothing; SIGHUP reconciles; --unload-on-exit
removes the instance.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kernel_fixtures import veth_pair
from pepc.compiler import layout
from pepc.policy.config import Interface
from pepc.reconcile import audit
from pepc.watch.events import slot_rule_id
from reconcile_helpers import host_env, rule_doc, write_policy_dir

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parent.parent


# --- helpers ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout: float = 20.0, interval: float = 0.01, what: str = "condition"):
    """Poll `pred` until it returns a truthy value; fail after `timeout` (a hang guard, not a measurement)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def live_rule_ids(pin_dir: Path) -> set[str] | None:
    """Rule ids of the active generation, read from the pinned pepc_slots."""
    from pepc.kernel.loader import open_instance

    inst = open_instance(pin_dir)
    if inst is None:
        return None
    try:
        ctrl = layout.CTRL.unpack(inst.map("pepc_ctrl").lookup(layout.U32_KEY.pack({"v": 0})))
        gen = ctrl["active_gen"] & 1
        return {rid for _, raw in inst.map(f"pepc_slots_{gen}").items() if (rid := slot_rule_id(raw))}
    finally:
        inst.close()


def attached_prog(ifname: str) -> int | None:
    from pepc.kernel import netlink

    q = netlink.query(ifname)
    return q[0] if q else None


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Watch:
    """One `pepc watch` subprocess."""

    def __init__(self, host, policies: Path, *args: str) -> None:
        self.host, self.policies, self.args = host, policies, args
        self.port = free_port()
        self.log_path = host.config_file.parent / f"watch-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Watch":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pepc", "watch", str(self.policies), *self.host.cli(), "--listen", f"127.0.0.1:{self.port}",
             "--log-format", "json", *self.args],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )
        log.close()
        wait_for(lambda: self._up(), 60, 0.05, "the HTTP endpoint")
        return self

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"pepc watch exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return get(self.url("/healthz"))[0] == 200
        except OSError:
            return False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ready(self) -> bool:
        return get(self.url("/readyz"))[0] == 200

    def wait_ready(self) -> None:
        wait_for(self.ready, 60, 0.02, "/readyz")

    def status(self) -> dict:
        return json.loads(get(self.url("/status"))[1])

    def metrics(self) -> dict:
        code, text = get(self.url("/metrics"))
        assert code == 200
        return {f.name: f for f in text_string_to_metric_families(text)}

    def sample(self, family: str, sample: str | None = None, **labels) -> float | None:
        fam = self.metrics().get(family)
        if fam is None:
            return None
        for s in fam.samples:
            if (sample is None or s.name == sample) and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
        return None

    def reconciles(self, result: str = "ok") -> float:
        return self.sample("pepc_reconciles", "pepc_reconciles_total", result=result)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_records(self) -> list[dict]:
        return [json.loads(line) for line in self.log().splitlines() if line.startswith("{")]

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"pepc watch did not stop on {sig}:\n{self.log()}")


@contextlib.contextmanager
def watch_env(tmp_path: Path):
    """(host with a veth attached, policies dir, list of Watch to clean up)."""
    with veth_pair() as (a, _b), host_env(tmp_path, interfaces=(Interface(a),)) as h:
        policies = tmp_path / "policies.d"
        procs: list[Watch] = []
        try:
            yield h, policies, a, procs
        finally:
            for w in procs:
                with contextlib.suppress(Exception):
                    w.stop()
                if w.proc and w.proc.poll() is None:
                    w.proc.kill()
                    w.proc.wait()
                print(f"--- {w.log_path.name}\n{w.log()}")


def start(h, policies: Path, procs: list, *args: str) -> Watch:
    w = Watch(h, policies, *args)
    procs.append(w)
    return w.start()


def base_rules() -> dict[str, list[dict]]:
    return {
        "10-base.yaml": [rule_doc("allow_web", "ALLOW", dst="192.168.1.0/24", proto="TCP", dport=80, priority=100)],
        "20-block.yaml": [rule_doc("block_bad", "BLOCK", src="10.0.0.50")],
    }


# --- the acceptance scenarios ------------------------------------------------------------


def test_edit_is_live_within_a_second_invalid_is_refused_fix_is_applied(tmp_path):
    with watch_env(tmp_path) as (h, policies, iface, procs):
        write_policy_dir(policies, base_rules())
        w = start(h, policies, procs)
        w.wait_ready()
        assert live_rule_ids(h.pin_dir) == {"allow_web", "block_bad"}
        assert attached_prog(iface) is not None

        # an edit, written the way editors do: temp file, then rename over the original
        tmp = policies / ".20-block.yaml.swp"
        tmp.write_text(json.dumps({"policies": [rule_doc("block_bad", "BLOCK", src="10.0.0.50"), rule_doc("block_new", "BLOCK", src="10.0.0.51")]}))
        t0 = time.monotonic()
        os.replace(tmp, policies / "20-block.yaml")
        wait_for(lambda: "block_new" in (live_rule_ids(h.pin_dir) or ()), 10, 0.005, "block_new in the live maps")
        latency = time.monotonic() - t0
        assert latency < 1.0, f"edit took {latency:.3f} s to reach the data plane"

        # an invalid edit: the live policy stays, readiness drops, /status says why
        wait_for(lambda: w.reconciles("ok") == 2, 10, 0.01, "the edit's reconcile to finish")  # the flip is mid-apply
        ok_before = w.reconciles("ok")
        (policies / "30-bad.yaml").write_text("policies:\n  - id: broken\n    action: BLOK\n")
        wait_for(lambda: not w.ready(), 10, 0.02, "/readyz to report not ready")
        assert live_rule_ids(h.pin_dir) == {"allow_web", "block_bad", "block_new"}
        st = w.status()
        assert st["errors"] and any(e["file"].endswith("30-bad.yaml") for e in st["errors"]), st["errors"]
        assert st["watch"]["result"] == "invalid" and st["loaded"] is True
        code, body = get(w.url("/readyz"))
        assert code == 503 and json.loads(body)["result"] == "invalid"
        assert w.sample("pepc_last_reconcile_error") == 1
        assert w.sample("pepc_policy_errors") >= 1
        assert w.reconciles("invalid") >= 1 and w.reconciles("ok") == ok_before
        assert any(r["level"] == "warning" and r["fields"].get("file", "").endswith("30-bad.yaml") for r in w.log_records())

        # the fix is applied
        (policies / "30-bad.yaml").write_text(json.dumps({"policies": [rule_doc("fixed", "BLOCK", src="10.0.0.52")]}))
        wait_for(w.ready, 10, 0.02, "/readyz after the fix")
        assert live_rule_ids(h.pin_dir) == {"allow_web", "block_bad", "block_new", "fixed"}
        assert w.status()["errors"] == []

        # /metrics, parsed with prometheus-client's parser, carries live per-rule and global counters
        fams = w.metrics()
        assert {s.labels["rule"] for s in fams["pepc_rule_packets"].samples} == {"allow_web", "block_bad", "block_new", "fixed"}
        assert {s.labels["counter"] for s in fams["pepc_xdp"].samples} == set(layout.COUNTERS)
        assert fams["pepc_ready"].samples[0].value == 1
        assert fams["pepc_last_reconcile_error"].samples[0].value == 0
        assert fams["pepc_last_successful_reconcile_timestamp_seconds"].samples[0].value > time.time() - 60
        used = {s.labels["map"]: s.value for s in fams["pepc_map_entries"].samples}
        cap = {s.labels["map"]: s.value for s in fams["pepc_map_capacity"].samples}
        assert used["pepc_slots"] == 4 and cap["pepc_slots"] == h.config.capacities.max_rules
        assert {s.labels["interface"]: s.value for s in fams["pepc_attached"].samples} == {iface: 1}
        count = [s for s in fams["pepc_reconcile_duration_seconds"].samples if s.name.endswith("_count")][0].value
        assert count == sum(w.reconciles(r) for r in ("ok", "invalid", "error"))
        assert w.stop() == 0


def test_git_checkout_of_100_files_is_exactly_one_apply(tmp_path):
    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=policies, check=True, capture_output=True)

    with watch_env(tmp_path) as (h, policies, iface, procs):
        policies.mkdir()
        git("init", "-q")
        for prefix in ("a", "b"):
            for i in range(100):
                (policies / f"f{i:03d}.yaml").write_text(
                    json.dumps({"policies": [rule_doc(f"{prefix}{i:03d}", "BLOCK", src=f"10.60.{i}.0/24")]})
                )
            git("add", "-A")
            git("commit", "-q", "-m", prefix)
            git("tag", prefix)
        git("checkout", "-q", "a")
        a_ids = {f"a{i:03d}" for i in range(100)}
        b_ids = {f"b{i:03d}" for i in range(100)}

        w = start(h, policies, procs)
        w.wait_ready()
        assert live_rule_ids(h.pin_dir) == a_ids
        ok0 = w.reconciles("ok")
        applied0 = sum(1 for r in audit.read(h.config.state_dir, h.instance) if r.get("result") == "applied")

        git("checkout", "-q", "b")
        wait_for(lambda: live_rule_ids(h.pin_dir) == b_ids, 20, 0.01, "commit b in the live maps")
        time.sleep(1.5)  # longer than the debounce and the max delay: a second apply would have happened
        assert w.reconciles("ok") - ok0 == 1
        assert w.sample("pepc_reconcile_triggers", "pepc_reconcile_triggers_total", reason="change") == 1
        applied = [r for r in audit.read(h.config.state_dir, h.instance) if r.get("result") == "applied"]
        assert len(applied) - applied0 == 1
        assert w.stop() == 0


def test_drift_is_repaired_by_the_next_resync(tmp_path):
    from pepc.kernel import netlink
    from pepc.kernel.loader import open_instance

    with watch_env(tmp_path) as (h, policies, iface, procs):
        write_policy_dir(policies, base_rules())
        w = start(h, policies, procs, "--resync", "1")
        w.wait_ready()
        inst = open_instance(h.pin_dir)
        try:
            gen = layout.CTRL.unpack(inst.map("pepc_ctrl").lookup(layout.U32_KEY.pack({"v": 0})))["active_gen"] & 1
            rules = inst.map(f"pepc_rules_{gen}")
            before = dict(rules.items())
            # by hand: delete a real entry and add a foreign one
            victim = next(iter(before))
            rules.delete(victim)
            bogus = layout.RULE_KEY.pack({"src_plen": 32, "dst_plen": 0, "proto_plen": 0, "src": 0x0A636363})
            rules.update(bogus, layout.RULE_VAL.pack({"rank": 1, "slot": 0, "action": 2}))
            assert dict(rules.items()) != before
            wait_for(lambda: dict(rules.items()) == before, 10, 0.05, "the hand-made drift to be repaired")
        finally:
            inst.close()

        # the program detached behind pepc's back is re-attached
        prog = attached_prog(iface)
        assert netlink.detach(iface)
        assert attached_prog(iface) is None
        wait_for(lambda: attached_prog(iface) == prog, 10, 0.05, "the program to be re-attached")
        assert w.sample("pepc_reconcile_triggers", "pepc_reconcile_triggers_total", reason="resync") >= 1
        assert w.sample("pepc_reconcile_triggers", "pepc_reconcile_triggers_total", reason="change") == 0
        assert w.stop() == 0


def test_expired_rule_leaves_the_data_plane_on_time(tmp_path):
    with watch_env(tmp_path) as (h, policies, iface, procs):
        write_policy_dir(policies, base_rules())
        w = start(h, policies, procs)
        w.wait_ready()  # the first start loads the program (seconds): add the rule after it
        expires = int(time.time()) + 3
        (policies / "30-temp.yaml").write_text(
            json.dumps({"policies": [{**rule_doc("temp_block", "BLOCK", src="10.0.0.99"), "expires_at": expires}]})
        )
        wait_for(lambda: "temp_block" in live_rule_ids(h.pin_dir), 10, 0.01, "the temporary rule to be live")
        wait_for(lambda: w.status()["watch"]["next_expiry"], 10, 0.01, "the expiry to be scheduled")
        assert w.status()["watch"]["next_expiry"] == datetime.fromtimestamp(expires, timezone.utc).isoformat().replace("+00:00", "Z")
        gone = wait_for(
            lambda: time.time() if "temp_block" not in live_rule_ids(h.pin_dir) else None, 15, 0.005, "the rule to expire"
        )
        assert gone >= expires, "removed before its expiry"
        assert gone - expires < 1.0, f"removed {gone - expires:.3f} s after its expiry"
        assert live_rule_ids(h.pin_dir) == {"allow_web", "block_bad"}
        wait_for(lambda: w.sample("pepc_reconcile_triggers", "pepc_reconcile_triggers_total", reason="expiry") == 1, 10, 0.01, "metrics")
        assert w.stop() == 0


def test_sigterm_leaves_the_policy_live_restart_writes_nothing_sighup_reconciles(tmp_path):
    with watch_env(tmp_path) as (h, policies, iface, procs):
        write_policy_dir(policies, base_rules())
        w = start(h, policies, procs)
        w.wait_ready()
        prog = attached_prog(iface)
        assert prog is not None
        assert w.stop(signal.SIGTERM) == 0
        assert attached_prog(iface) == prog
        assert live_rule_ids(h.pin_dir) == {"allow_web", "block_bad"}

        w2 = start(h, policies, procs)
        w2.wait_ready()
        assert w2.sample("pepc_reconcile_writes", "pepc_reconcile_writes_total") == 0
        last = list(audit.read(h.config.state_dir, h.instance))[-1]
        assert last["result"] == "unchanged" and last["map_writes"] == 0
        assert attached_prog(iface) == prog

        w2.send_signal(signal.SIGHUP)
        wait_for(lambda: w2.sample("pepc_reconcile_triggers", "pepc_reconcile_triggers_total", reason="signal") == 1, 10, 0.02, "SIGHUP reconcile")
        assert w2.reconciles("ok") == 2
        assert w2.stop(signal.SIGINT) == 0
        assert attached_prog(iface) == prog


def test_unload_on_exit_removes_the_instance(tmp_path):
    with watch_env(tmp_path) as (h, policies, iface, procs):
        write_policy_dir(policies, base_rules())
        w = start(h, policies, procs, "--unload-on-exit")
        w.wait_ready()
        assert attached_prog(iface) is not None
        assert w.stop() == 0
        assert attached_prog(iface) is None
        assert not h.pin_dir.exists()


def test_events_are_logged_by_watch_and_read_by_pepc_events(tmp_path):
    from pepc.simulate.frames import IPPROTO_UDP, build_frame

    def send(n: int, dport: int = 53) -> None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind((peer, 0))
            for i in range(n):
                s.send(build_frame("10.1.2.3", "10.9.9.9", IPPROTO_UDP, 5000 + i, dport, payload=20))

    with veth_pair() as (a, peer), host_env(tmp_path, interfaces=(Interface(a),)) as h:
        policies = tmp_path / "policies.d"
        write_policy_dir(policies, {"a.yaml": [rule_doc("log_dns", "LOG_ONLY", proto="UDP", dport=53)]})
        procs: list[Watch] = []
        try:
            w = start(h, policies, procs)
            w.wait_ready()
            send(3)
            recs = wait_for(lambda: [r for r in w.log_records() if r["msg"] == "event"] or None, 10, 0.02, "events in the log")
            wait_for(lambda: len([r for r in w.log_records() if r["msg"] == "event"]) == 3, 10, 0.02, "3 events")
            ev = recs[0]["fields"]
            assert (ev["rule"], ev["proto"], ev["src"], ev["dst"], ev["dport"], ev["action"]) == (
                "log_dns", "UDP", "10.1.2.3", "10.9.9.9", 53, "LOG_ONLY"
            )
            assert w.stop() == 0
        finally:
            for p in procs:
                if p.proc.poll() is None:
                    p.proc.kill()
                print(p.log())
        # with watch stopped, `pepc events` reads the ring buffer itself
        send(2)
        r = subprocess.run([sys.executable, "-m", "pepc", "events", *h.cli(), "--format", "json"], capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert r.returncode == 0, r.stderr
        evs = [json.loads(line) for line in r.stdout.splitlines()]
        assert [(e["rule"], e["sport"], e["len"]) for e in evs] == [("log_dns", 5000, 62), ("log_dns", 5001, 62)]
