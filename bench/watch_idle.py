"""How much CPU `pepc watch` uses while nothing changes.

Starts `pepc watch` (its own instance, pin root, veth pair and port) on a
10,000-rule policy, waits until /readyz says ready, lets it settle, then
reads its CPU time (utime + stime of every thread, /proc/<pid>/stat) and its
context switches (wake-ups) over 30 s of idling: no file changes, no
scrapes, the default 60 s resync.

Baselines measured in the same window, so the numbers share the machine's
noise:
- an idle Python process (`time.sleep`): what "no work at all" costs;
- a Python loop waking every 100 ms: what a polling daemon would cost.

    sudo .venv/bin/python bench/watch_idle.py [--rules N] [--seconds S]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15 of proc(5)


def wakeups(pid: int) -> int:
    """Context switches of every thread of the process."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def policy_files(n: int, per_file: int = 100) -> dict[str, str]:
    """n rules that do not overlap (one /32 source each), so `check` passes:
    blocks, per-port allows and a few rate limits and logs, 100 to a file."""
    files = {}
    for f in range(0, n, per_file):
        rules = []
        for i in range(f, min(f + per_file, n)):
            src = f"10.{100 + i // 65536}.{(i // 256) % 256}.{i % 256}"
            kind = i % 10
            if kind < 5:
                rules.append({"id": f"block_{i:05d}", "action": "BLOCK", "src": {"ip": src}})
            elif kind < 8:
                rules.append({"id": f"allow_{i:05d}", "action": "ALLOW", "priority": 10, "src": {"ip": src},
                              "dst": {"port": [22, 443, "8000-8099"][i % 3], "protocol": "TCP"}})
            elif kind < 9:
                rules.append({"id": f"limit_{i:05d}", "action": "RATE_LIMIT", "rate_limit_bps": 1048576, "src": {"ip": src}})
            else:
                rules.append({"id": f"log_{i:05d}", "action": "LOG_ONLY", "src": {"ip": src}, "dst": {"protocol": "UDP"}})
        files[f"{f // per_file:03d}.yaml"] = json.dumps({"policies": rules}, indent=1)
    return files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


@contextlib.contextmanager
def veth():
    from pyroute2 import IPRoute

    tag = secrets.token_hex(3)
    a, b = f"wi{tag}a", f"wi{tag}b"
    with IPRoute() as ipr:
        ipr.link("add", ifname=a, kind="veth", peer={"ifname": b})
        try:
            for name in (a, b):
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
            yield a
        finally:
            with contextlib.suppress(Exception):
                ipr.link("del", ifname=a)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rules", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("watch_idle: needs root (loads and attaches an XDP program)", file=sys.stderr)
        return 3

    tmp = Path(tempfile.mkdtemp(prefix="pepc-watch-idle-"))
    tag = secrets.token_hex(3)
    instance, pin_root, port = f"idle{tag}", f"/sys/fs/bpf/pepc-bench-{tag}", free_port()
    procs: list[subprocess.Popen] = []
    with veth() as iface:
        try:
            pol = tmp / "policies.d"
            pol.mkdir()
            for name, text in policy_files(args.rules).items():
                (pol / name).write_text(text)
            cfg = tmp / "pepc.yaml"
            cfg.write_text(json.dumps({
                "pin_root": pin_root, "state_dir": str(tmp / "state"), "run_dir": str(tmp / "run"),
                "interfaces": [{"name": iface}], "metrics_listen": f"127.0.0.1:{port}",
            }))
            log = open(tmp / "watch.log", "wb")
            t_start = time.monotonic()
            watch = subprocess.Popen(
                [sys.executable, "-m", "pepc", "watch", str(pol), "--config", str(cfg), "--instance", instance],
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            )
            procs.append(watch)
            while http_status(f"http://127.0.0.1:{port}/readyz") != 200:
                if watch.poll() is not None or time.monotonic() - t_start > 600:
                    print((tmp / "watch.log").read_text(), file=sys.stderr)
                    print("watch_idle: pepc watch did not become ready", file=sys.stderr)
                    return 1
                time.sleep(0.2)
            t_ready = time.monotonic() - t_start
            cpu_start = cpu_seconds(watch.pid)

            sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1e6)"])
            poller = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(0.1)"])
            procs += [sleeper, poller]
            time.sleep(3)  # let the ready probe's connection and the baselines' start-up settle

            pids = {"pepc watch": watch.pid, "idle python (sleep)": sleeper.pid, "python polling every 100 ms": poller.pid}
            c0 = {k: cpu_seconds(p) for k, p in pids.items()}
            w0 = {k: wakeups(p) for k, p in pids.items()}
            time.sleep(args.seconds)
            c1 = {k: cpu_seconds(p) for k, p in pids.items()}
            w1 = {k: wakeups(p) for k, p in pids.items()}
            if watch.poll() is not None:
                print("watch_idle: pepc watch exited during the measurement", file=sys.stderr)
                return 1

            print(f"pepc watch idle: {args.rules} rules, {args.seconds:.0f} s window, clock tick {1000 / TICK:.0f} ms")
            print(f"  ready after {t_ready:.2f} s (load, check, compile, program load, first apply: {cpu_start:.2f} CPU s)")
            print(f"  {'process':<30} {'CPU s':>8} {'wake-ups':>9} {'wake-ups/s':>11}")
            for k in pids:
                cpu = c1[k] - c0[k]
                wk = w1[k] - w0[k]
                print(f"  {k:<30} {cpu:>8.3f} {wk:>9d} {wk / args.seconds:>11.2f}")
            watch_cpu = c1["pepc watch"] - c0["pepc watch"]
            for k in ("idle python (sleep)", "python polling every 100 ms"):
                base = c1[k] - c0[k]
                if base > 0:
                    print(f"  ratio pepc watch / {k}: {watch_cpu / base:.2f}")
                else:
                    print(f"  ratio pepc watch / {k}: n/a (baseline used 0 ticks; pepc watch used {round(watch_cpu * TICK)} ticks)")
            print(f"  pepc watch CPU share while idle: {watch_cpu / args.seconds * 100:.3f} % of one core")

            # For scale: one forced reconcile (SIGHUP: re-read, check, compile, diff the live maps; zero writes).
            def hist() -> tuple[float, float]:
                from prometheus_client.parser import text_string_to_metric_families

                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
                    text = r.read().decode()
                vals = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
                return vals["pepc_reconcile_duration_seconds_count"], vals["pepc_reconcile_writes_total"]

            n0, writes0 = hist()
            cpu0 = cpu_seconds(watch.pid)
            watch.send_signal(signal.SIGHUP)
            while hist()[0] == n0:
                time.sleep(0.05)
            _, writes1 = hist()
            print(f"  one forced no-op reconcile (SIGHUP) of {args.rules} rules: {cpu_seconds(watch.pid) - cpu0:.2f} CPU s, "
                  f"{int(writes1 - writes0)} map writes (a timer resync of an unchanged tree also skips the re-read)")
            return 0
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                    try:
                        p.wait(30)
                    except subprocess.TimeoutExpired:
                        p.kill()
            with contextlib.suppress(Exception):
                from pepc.policy.config import Config
                from pepc.reconcile.apply import unload_instance

                unload_instance(Config(pin_root=pin_root, state_dir=str(tmp / "state"), run_dir=str(tmp / "run")), instance, wait=30)
            with contextlib.suppress(OSError):
                os.rmdir(pin_root)
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
