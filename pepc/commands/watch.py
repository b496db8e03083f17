"""`pepc watch PATH`: keep this host's XDP maps equal to PATH, as a service.

Applies once at start, then again whenever PATH or pepc.yaml changes
(debounced: an editor's save or a `git pull` of many files is one apply),
every --resync seconds to repair drift made behind pepc's back (entries
written by hand, the program detached, pins removed, an interface
re-created), and at the moment a rule's `expires_at` passes. Every
reconcile is `pepc apply`: it reads the live state and converges.

A directory that does not load or check clean is never applied: the last
good policy stays live, the errors go to the log, /status and /metrics,
and /readyz says not ready until the directory is fixed.

HTTP (default: metrics_listen of pepc.yaml, 127.0.0.1:9477): /metrics
(Prometheus), /healthz, /readyz, /status (JSON). LOG_ONLY events from the
ring buffer are logged (disable with --no-events to read them with `pepc
events --follow` instead: the ring buffer has one consumer).

Signals: SIGHUP reconciles now; SIGTERM/SIGINT stop, leaving the program
attached and the policy live (a restart reconciles with zero writes), or
unloading the instance with --unload-on-exit.
"""

from __future__ import annotations

import argparse
import logging
import os

from pepc.report import log as pepclog
from pepc.commands._host import add_iface_arg, add_instance_arg
from pepc.policy.diagnostics import EnvironmentProblem, ExitCode

NAME = "watch"
HELP = "keep the live XDP maps equal to a policy directory, as a service (metrics, health, events)"
ORDER = 45
DESCRIPTION = __doc__.split("\n\n", 1)[1].strip()

LOG = pepclog.get("watch")


def _positive(kind: type, what: str):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
        if v < 0 or (v == 0 and what == "--resync"):
            raise argparse.ArgumentTypeError(f"{what} must be {'> 0' if what == '--resync' else '>= 0'}")
        return v

    return parse


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="the policy directory (e.g. /etc/pepc/policies.d)")
    parser.add_argument(
        "--config", metavar="FILE", default=None, help="host configuration (default: pepc.yaml beside PATH, if present)"
    )
    add_iface_arg(parser)
    add_instance_arg(parser)
    parser.add_argument(
        "--resync", metavar="SECONDS", type=_positive(float, "--resync"), default=60.0,
        help="reconcile at least this often, to repair drift (default: 60)",
    )
    parser.add_argument(
        "--debounce", metavar="MS", type=_positive(float, "--debounce"), default=200.0,
        help="apply after the directory has been quiet this long (default: 200)",
    )
    parser.add_argument(
        "--max-delay", metavar="MS", type=_positive(float, "--max-delay"), default=2000.0,
        help="apply at most this long after a change even if changes keep coming (default: 2000)",
    )
    parser.add_argument(
        "--listen", metavar="ADDR", default=None,
        help="address of /metrics, /healthz, /readyz, /status: HOST:PORT, [V6]:PORT, or 'off' "
        "(default: metrics_listen of pepc.yaml, 127.0.0.1:9477)",
    )
    parser.add_argument("--log-format", choices=("text", "json"), default="text", help="log lines (default: text)")
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default="info", help="default: info"
    )
    parser.add_argument("--no-events", action="store_true", help="do not consume the LOG_ONLY event ring buffer")
    parser.add_argument(
        "--unload-on-exit", action="store_true",
        help="on SIGTERM/SIGINT, detach and remove the instance (default: leave the policy live)",
    )


class _Hooks:
    """Loop observers with side effects: re-arm the directory watch, follow the ring buffer."""

    def __init__(self, svc, backend, tree, events: bool) -> None:
        self.svc, self.backend, self.tree, self.events = svc, backend, tree, events
        self.tap = None

    def reconciled(self, result, reasons, seconds, outcome) -> None:
        self.tree.rearm()  # the directory may have been replaced
        if self.events:
            self._ensure_tap()

    def _ensure_tap(self) -> None:
        from pepc.watch.events import EventTap

        try:
            if self.tap is not None and not self.tap.stale():
                return
            self.close()
            pins = self.backend.pin_dir()
            if not os.path.exists(os.path.join(pins, "pepc_events")):
                return
            self.tap = EventTap(pins)
            self.svc.add_reader(self.tap.fileno(), self._drain)
        except Exception as err:
            LOG.warning("cannot read the event ring buffer", fields={"error": str(err)})
            self.close()

    def _drain(self) -> None:
        if self.tap is None:
            return
        for ev in self.tap.read():
            LOG.info("event", fields=ev.as_json())

    def close(self) -> None:
        if self.tap is not None:
            self.svc.remove_reader(self.tap.fileno())
            self.tap.close()
            self.tap = None


def _single_watch(run_dir: str, instance: str) -> int:
    """Refuse a second `pepc watch` of one instance: two loops would fight over the maps."""
    import fcntl

    try:
        os.makedirs(run_dir, exist_ok=True)
        fd = os.open(os.path.join(run_dir, f"{instance}.watch.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise EnvironmentProblem(
            f"cannot create the watch lock in {run_dir}: {err.strerror or err}", "set run_dir in pepc.yaml to a writable directory"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
        os.close(fd)
        raise EnvironmentProblem(
            f"another `pepc watch` runs instance {instance!r}" + (f" (pid {holder})" if holder else ""),
            "stop it first, or watch another --instance",
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def run(args: argparse.Namespace) -> int:
    from pepc.watch.backend import PepcBackend
    from pepc.watch.fs import TreeWatch
    from pepc.watch.http import Endpoints, HttpServer
    from pepc.watch.live import read_snapshot
    from pepc.watch.metrics import build_registry
    from pepc.watch.schedule import Scheduler
    from pepc.watch.service import WatchService

    pepclog.setup(args.log_format, getattr(logging, args.log_level.upper()))
    backend = PepcBackend(args.path, args.config, args.instance, args.iface)
    config, cfg_err = backend.initial_config()
    guard = _single_watch(config.run_dir, args.instance)  # held (open) until the process exits
    if cfg_err is not None:
        LOG.warning("pepc.yaml does not load; using defaults until it does", fields={"errors": len(cfg_err.findings)})
    debounce = args.debounce / 1000
    sched = Scheduler(debounce=debounce, max_delay=max(args.max_delay / 1000, debounce), resync=args.resync)
    svc = WatchService(backend, sched)

    def snapshot():
        return read_snapshot(backend.pin_dir(), backend.interfaces())

    registry, wm = build_registry(svc.state, snapshot)
    svc.observers.append(wm)

    def status() -> dict:
        try:
            st = backend.status()
        except Exception as err:  # the kernel side may be gone; /status still answers
            st = {"instance": args.instance, "loaded": None, "error": str(err)}
        w = svc.state().as_json()
        st["watch"] = w
        st["errors"] = w["errors"]
        return st

    listen = args.listen or config.metrics_listen
    http = None
    if listen.lower() != "off":
        try:
            http = HttpServer(listen, Endpoints(registry, svc.state, status, svc.alive))
        except ValueError as err:
            raise EnvironmentProblem(f"bad listen address: {err}", "use HOST:PORT, e.g. 127.0.0.1:9477") from None
        except OSError as err:
            raise EnvironmentProblem(
                f"cannot listen on {listen}: {err.strerror or err}",
                "pick another address with --listen or metrics_listen in pepc.yaml",
            ) from None
        http.start()

    tree = TreeWatch(args.path, backend.config_file, svc.notify_change)
    hooks = _Hooks(svc, backend, tree, not args.no_events)
    svc.observers.append(hooks)
    svc.install_signal_handlers()
    code = ExitCode.OK
    try:
        tree.start()
        LOG.info(
            "watching",
            fields={
                "path": args.path,
                "config": backend.config_file,
                "instance": args.instance,
                "listen": "%s:%d" % http.address if http else "off",
                "resync_s": args.resync,
                "debounce_ms": args.debounce,
                "pid": os.getpid(),
            },
        )
        svc.run()
        LOG.info("stopping", fields={"unload": args.unload_on_exit})
    finally:
        tree.stop()
        hooks.close()
        if args.unload_on_exit:
            try:
                detached, removed = backend.unload()
                LOG.info("unloaded", fields={"detached": [list(d) for d in detached], "removed": list(removed)})
            except EnvironmentProblem as err:
                LOG.error("unload failed", fields={"error": err.message})
                code = ExitCode.ENVIRONMENT
        if http is not None:
            http.stop()
        svc.close()
        os.close(guard)
    return code
