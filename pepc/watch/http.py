"""The watch service's HTTP endpoints: /metrics, /healthz, /readyz, /status.

A `ThreadingHTTPServer` in a daemon thread: scrapes never block the
reconcile loop, and the loop never waits for a scraper. Handlers only read
(the state snapshot, the live maps); they never reconcile.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from pepc.report import log as pepclog
from pepc.watch.service import State

LOG = pepclog.get("http")


def parse_listen(text: str) -> tuple[str, int]:
    """`127.0.0.1:9477`, `[::1]:9477`, `:9477` (all IPv4 interfaces) -> (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if not rest.startswith(":"):
            raise ValueError(f"{text!r}: expected [ADDRESS]:PORT")
        port_s = rest[1:]
    else:
        host, sep, port_s = text.rpartition(":")
        if not sep:
            raise ValueError(f"{text!r}: expected ADDRESS:PORT")
        host = host or "0.0.0.0"
    try:
        port = int(port_s)
    except ValueError:
        raise ValueError(f"{text!r}: the port is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{text!r}: port out of range")
    return host, port


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _server_class(host: str) -> type[_Server]:
    if ":" in host:
        return type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
    return _Server


class Endpoints:
    def __init__(
        self,
        registry: CollectorRegistry,
        state: Callable[[], State],
        status: Callable[[], dict],
        alive: Callable[[], bool],
    ) -> None:
        self.registry = registry
        self.state = state
        self.status = status
        self.alive = alive

    def handler(self) -> type[BaseHTTPRequestHandler]:
        ep = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "pepc-watch"

            def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
                LOG.debug("http " + (format % args))

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _json(self, code: int, obj: dict) -> None:
                self._send(code, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode(), "application/json")

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0].rstrip("/") or "/"
                try:
                    if path == "/metrics":
                        encoder, ctype = choose_encoder(self.headers.get("Accept", ""))
                        self._send(200, encoder(ep.registry), ctype)
                    elif path == "/healthz":
                        ok = ep.alive()
                        self._send(200 if ok else 503, b"ok\n" if ok else b"loop not running\n", "text/plain")
                    elif path == "/readyz":
                        st = ep.state()
                        body = {"ready": st.ready, "result": st.result, "first_apply_done": st.first_apply_done, "errors": len(st.errors)}
                        self._json(200 if st.ready else 503, body)
                    elif path == "/status":
                        self._json(200, ep.status())
                    elif path == "/":
                        self._send(200, b"pepc watch: /metrics /healthz /readyz /status\n", "text/plain")
                    else:
                        self._send(404, b"not found\n", "text/plain")
                except BrokenPipeError:
                    pass
                except Exception as err:  # a failing endpoint must not kill the server thread
                    LOG.error("http handler failed", fields={"path": path, "error": repr(err)})
                    try:
                        self._json(500, {"error": repr(err)})
                    except Exception:
                        pass

        return Handler


class HttpServer:
    def __init__(self, listen: str, endpoints: Endpoints) -> None:
        host, port = parse_listen(listen)
        self.server = _server_class(host)((host, port), endpoints.handler())
        # serve_forever() polls (default every 0.5 s) to notice shutdown; this
        # loop blocks until a connection or stop() instead, so idle is idle.
        self._rfd, self._wfd = os.pipe()
        self.thread = threading.Thread(target=self._serve, name="pepc-http", daemon=True)

    def _serve(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self.server.socket, selectors.EVENT_READ)
            sel.register(self._rfd, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select():
                    if key.fd == self._rfd:
                        return
                    self.server.handle_request()  # the socket is readable: accepts without waiting

    @property
    def address(self) -> tuple[str, int]:
        return self.server.server_address[:2]

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        os.write(self._wfd, b"\0")
        if self.thread.is_alive():
            self.thread.join(timeout=5)
        self.server.server_close()
        os.close(self._rfd)
        os.close(self._wfd)
