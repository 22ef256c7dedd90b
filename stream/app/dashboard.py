"""``labquake dashboard``: a live web page of every stream's predictions, alerts and monitors.

A small HTTP server (the standard library's, one thread per page) serves a static page
(``stream/app/dashboard_static/``) and one server-sent-events feed per open page, read from
the Redis that the monitors write:

| event        | data                                                              |
| ------------ | ----------------------------------------------------------------- |
| ``config``   | namespace and the alert policy's ``failure_tsf_s`` (first)        |
| ``history``  | a newly seen stream's recent predictions (``<ns>:predictions:*``) |
| ``prediction`` | a stream's new predictions, as they are stored                  |
| ``alert``    | an alert from the durable log (the recent ones first, then live)  |
| ``health``   | every monitor's heartbeat (``<ns>:monitor:*``) and its age        |
| ``problem``  | Redis did not answer; the feed retries                            |

A prediction is sent as ``[window_end_sample, window_end_time, ttf_s, tsf_s, p_failure,
model_version, warming_up]`` (``warming_up``: the stream's context is still filling, so no
alert is raised from it). A stream's card shows its alert episode: the countdown to the
predicted failure time and its interval, updated as ``updated`` alerts come.
``GET /healthz`` answers 200 while Redis answers, 503 otherwise.

The server binds ``127.0.0.1`` unless told otherwise: it has no authentication, so put
it behind the lab's reverse proxy before opening it to a network.

Example:
    labquake dashboard --dashboard-port 8050     # then open http://127.0.0.1:8050/
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from stream.config.options import Settings, add_options, resolve
from stream.core.errors import LabquakeError, ServiceUnavailable
from stream.io.redis_names import ALERT_FIELD, RedisNames

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().with_name("dashboard_static")
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8"}
HISTORY_POINTS = 5_000  # per stream, sent when a page connects or a stream appears
ALERT_BACKLOG = 200  # recent alerts sent when a page connects
READ_COUNT = 1_000  # entries per stream per read
BLOCK_MS = 1_000  # longest a feed waits for news before it looks for streams and monitors
DISCOVERY_INTERVAL_S = 2.0
HEALTH_INTERVAL_S = 2.0
RETRY_AFTER_PROBLEM_S = 1.0
RECONNECT_MS = 2_000  # how soon a page's EventSource reconnects after losing the feed
FIRST_ID = "0-0"


def sse(event: str, data: Any) -> bytes:
    """One server-sent event.

    Example:
        >>> sse("alert", {"kind": "raised"})
        b'event: alert\\ndata: {"kind":"raised"}\\n\\n'
    """
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class Feed:
    """What one open page is sent: the Redis outputs as server-sent events.

    Args:
        client: a redis-py client with ``decode_responses=True``.
        names: the Redis names of the deployment.
        clock: monotonic clock, for the discovery and health intervals.
    """

    def __init__(self, client: Any, names: RedisNames,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._names = names
        self._clock = clock
        self._last_ids: dict[str, str] = {}  # predictions key or alert log -> last id sent
        self._next_discovery = self._next_health = 0.0

    def start(self) -> list[bytes]:
        """The first messages: settings, then the recent alerts, oldest first."""
        from stream.core.alert_policy import AlertPolicyConfig

        entries = self._client.xrevrange(self._names.alert_log, count=ALERT_BACKLOG)
        self._last_ids[self._names.alert_log] = entries[0][0] if entries else FIRST_ID
        config = {"namespace": self._names.namespace,
                  "failure_tsf_s": AlertPolicyConfig().failure_tsf_s}
        return [sse("config", config),
                *(_alert_message(entry_id, fields) for entry_id, fields in reversed(entries))]

    def poll(self) -> list[bytes]:
        """The news since the last poll; waits up to ``BLOCK_MS`` when there is none."""
        messages: list[bytes] = []
        now = self._clock()
        if now >= self._next_discovery:
            messages.extend(self._discover())
            self._next_discovery = now + DISCOVERY_INTERVAL_S
        if now >= self._next_health:
            messages.append(sse("health", self.health()))
            self._next_health = now + HEALTH_INTERVAL_S
        block = None if messages else BLOCK_MS
        for key, entries in self._client.xread(self._last_ids, count=READ_COUNT,
                                               block=block) or []:
            self._last_ids[key] = entries[-1][0]
            if key == self._names.alert_log:
                messages.extend(_alert_message(entry_id, fields) for entry_id, fields in entries)
            else:
                messages.append(sse("prediction", self._points(key, entries)))
        return messages

    def health(self) -> dict[str, Any]:
        """Every live monitor's last heartbeat, with its age in seconds."""
        keys = sorted(self._client.scan_iter(match=self._names.heartbeat_pattern))
        now = time.time()
        monitors = []
        for raw in self._client.mget(keys) if keys else []:
            if raw is None:
                continue  # expired between SCAN and MGET: that monitor is gone
            beat = json.loads(raw)
            beat["age_s"] = round(now - float(beat.get("updated_at", now)), 1)
            monitors.append(beat)
        return {"monitors": monitors, "server_time": now}

    def _discover(self) -> list[bytes]:
        messages = []
        for key in sorted(self._client.scan_iter(match=self._names.predictions_pattern)):
            if key in self._last_ids:
                continue
            entries = list(reversed(self._client.xrevrange(key, count=HISTORY_POINTS)))
            if not entries:
                continue
            self._last_ids[key] = entries[-1][0]
            messages.append(sse("history", self._points(key, entries)))
        return messages

    def _points(self, key: str, entries: Iterable[tuple[str, dict[str, str]]]) -> dict[str, Any]:
        instrument, channel = self._names.stream_of_predictions(key)
        return {"stream": f"{instrument}/{channel}", "instrument": instrument,
                "channel": channel, "points": [_point(fields) for _, fields in entries]}


def _point(fields: dict[str, str]) -> list[Any]:
    return [int(fields["window_end_sample"]), float(fields["window_end_time"]),
            float(fields["ttf_s"]), float(fields["tsf_s"]), float(fields["p_failure"]),
            fields["model_version"], fields.get("warming_up") == "1"]


def _alert_message(entry_id: str, fields: dict[str, str]) -> bytes:
    return sse("alert", {**json.loads(fields[ALERT_FIELD]), "log_id": entry_id})


class DashboardServer(ThreadingHTTPServer):
    """The HTTP server: the page, its assets, the event feed and ``/healthz``.

    Args:
        address: ``(host, port)`` to bind; port 0 picks a free one.
        redis_url: the Redis the monitors write to.
        names: their Redis names.
        redis_options: redis-py options for that Redis (password, TLS files), as
            :func:`stream.io.security.redis_client_options` gives them.
    """

    daemon_threads = True  # an open page must not keep the process alive

    def __init__(self, address: tuple[str, int], redis_url: str, names: RedisNames,
                 redis_options: dict[str, Any] | None = None) -> None:
        import redis

        # Reads block up to BLOCK_MS: the socket timeout must be longer.
        self.redis_pool = redis.ConnectionPool.from_url(
            redis_url, decode_responses=True, socket_timeout=BLOCK_MS / 1000 + 10,
            socket_connect_timeout=5, **(redis_options or {}))
        self.names = names
        self.stopping = threading.Event()
        self.assets = {path.name: path for path in STATIC_DIR.iterdir() if path.is_file()}
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def redis_client(self) -> Any:
        import redis

        return redis.Redis(connection_pool=self.redis_pool)

    def stop(self) -> None:
        """End the feeds and ``serve_forever`` (call from another thread than it)."""
        self.stopping.set()
        self.shutdown()


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/":
            self._asset("index.html")
        elif path.startswith("/static/"):
            self._asset(path.removeprefix("/static/"))
        elif path == "/events":
            self._events()
        elif path == "/healthz":
            self._healthz()
        else:
            self.send_error(HTTPStatus.NOT_FOUND)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _asset(self, name: str) -> None:
        path = self.server.assets.get(name)
        if path is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        body = path.read_bytes()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", CONTENT_TYPES.get(path.suffix, "application/octet-stream"))
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.write(body)

    def _healthz(self) -> None:
        import redis

        try:
            self.server.redis_client().ping()
            status, body = HTTPStatus.OK, {"redis": "ok"}
        except (redis.RedisError, OSError) as error:
            status, body = HTTPStatus.SERVICE_UNAVAILABLE, {"redis": str(error)}
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _events(self) -> None:
        import redis

        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Accel-Buffering", "no")  # a reverse proxy must not hold events
        self.end_headers()
        feed = Feed(self.server.redis_client(), self.server.names)
        started = False
        try:
            self._send([f"retry: {RECONNECT_MS}\n\n".encode()])
            while not self.server.stopping.is_set():
                try:
                    if not started:
                        self._send(feed.start())
                        started = True
                    self._send(feed.poll() or [b": keepalive\n\n"])
                except (redis.ConnectionError, redis.TimeoutError) as error:
                    self._send([sse("problem", {"redis": str(error)})])
                    time.sleep(RETRY_AFTER_PROBLEM_S)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("page %s closed its feed", self.address_string())

    def _send(self, messages: list[bytes]) -> None:
        self.wfile.write(b"".join(messages))
        self.wfile.flush()


def make_server(settings: Settings) -> DashboardServer:
    """The dashboard bound to ``settings.dashboard_host:dashboard_port``.

    Raises:
        LabquakeError: the address cannot be bound.
    """
    from stream.io.security import redis_client_options

    names = RedisNames(settings.namespace)
    try:
        return DashboardServer((settings.dashboard_host, settings.dashboard_port),
                               settings.redis, names, redis_client_options(settings))
    except OSError as error:
        raise LabquakeError(
            f"cannot serve the dashboard on {settings.dashboard_host}:"
            f"{settings.dashboard_port} ({error.strerror}); choose another --dashboard-port "
            "/ LABQUAKE_DASHBOARD_PORT or free that one") from error


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "dashboard", help="a live web page of predictions, alerts and monitor health",
        description=(
            "Serve a web page that shows, for every instrument stream, the predicted time "
            "to failure and P(failure) over the last minutes, the failures, the alert "
            "timeline and the monitors' health, updated live from Redis."
        ),
    )
    add_options(parser, "redis", "namespace", "dashboard_host", "dashboard_port")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from stream.io.security import redact_url, redis_client_options
    from stream.tools.services import redis_ready

    settings = resolve(args)
    if not redis_ready(settings.redis, client_options=redis_client_options(settings)):
        raise ServiceUnavailable(
            f"no Redis answers at {redact_url(settings.redis)}; start one (`labquake "
            "services up`), point --redis / LABQUAKE_REDIS_URL at it, or check its "
            "password and TLS settings")
    server = make_server(settings)

    def stop(signum: int, frame: object) -> None:
        log.info("signal %s: stopping the dashboard", signal.Signals(signum).name)
        # shutdown() waits for serve_forever(), which runs in this (the main) thread.
        threading.Thread(target=server.stop, name="dashboard-stop").start()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    print(f"labquake dashboard: {server.url} (namespace {settings.namespace})", flush=True)
    try:
        server.serve_forever()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.server_close()
    return 0
