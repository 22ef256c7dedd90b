"""The dashboard's event feed and HTTP routes, against a small in-memory stand-in for Redis
(the end-to-end test in a real browser is tests/integration/test_dashboard.py)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from fnmatch import fnmatch

import pytest

from stream.app import dashboard
from stream.config.options import Settings
from stream.io.redis_names import RedisNames

pytestmark = pytest.mark.unit

NAMES = RedisNames("t-dash")


class FakeRedis:
    """The read calls the feed makes, over streams and strings held in dicts."""

    def __init__(self) -> None:
        self.streams: dict[str, list[tuple[str, dict[str, str]]]] = {}
        self.strings: dict[str, str] = {}

    def add(self, key: str, entry_id: str, fields: dict[str, str]) -> None:
        self.streams.setdefault(key, []).append((entry_id, fields))

    def xrevrange(self, key, count):
        return list(reversed(self.streams.get(key, [])))[:count]

    def xread(self, streams, count, block):
        found = []
        for key, last in streams.items():
            newer = [e for e in self.streams.get(key, []) if _id(e[0]) > _id(last)][:count]
            if newer:
                found.append([key, newer])
        return found

    def scan_iter(self, match):
        return [key for key in [*self.streams, *self.strings] if fnmatch(key, match)]

    def mget(self, keys):
        return [self.strings.get(key) for key in keys]


def _id(entry_id: str) -> tuple[int, int]:
    first, second = entry_id.split("-")
    return int(first), int(second)


def _prediction(sample: int, version: str = "v1", warming_up: str | None = "0"
                ) -> dict[str, str]:
    fields = {"window_end_sample": str(sample), "window_end_time": str(sample / 100),
              "ttf_s": "3.5", "tsf_s": "0.25", "p_failure": "0.125", "model_version": version}
    # A prediction stored before the warm-up flag existed has none: it reads as warmed up.
    return fields if warming_up is None else {**fields, "warming_up": warming_up}


def _events(messages: list[bytes]) -> list[tuple[str, dict]]:
    found = []
    for message in messages:
        event, data = message.decode().strip().split("\n")
        found.append((event.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return found


def test_a_page_gets_settings_recent_alerts_history_then_only_news():
    redis = FakeRedis()
    alert = {"alert_id": "rig1/ae0@99:raised", "kind": "raised"}
    redis.add(NAMES.alert_log, "5-0", {"alert": json.dumps(alert)})
    key = NAMES.predictions("rig1", "ae0")
    redis.add(key, "99-0", _prediction(99, warming_up="1"))
    redis.add(key, "199-0", _prediction(199, warming_up=None))
    redis.strings[NAMES.heartbeat("host:1")] = json.dumps(
        {"member": "host:1", "updated_at": time.time() - 3})
    now = [0.0]
    feed = dashboard.Feed(redis, NAMES, clock=lambda: now[0])

    started = _events(feed.start())
    assert started[0] == ("config", {"namespace": "t-dash", "failure_tsf_s": 1.0})
    assert started[1] == ("alert", {**alert, "log_id": "5-0"})

    first = _events(feed.poll())
    assert first[0] == ("history", {"stream": "rig1/ae0", "instrument": "rig1",
                                    "channel": "ae0", "points": [
                                        [99, 0.99, 3.5, 0.25, 0.125, "v1", True],
                                        [199, 1.99, 3.5, 0.25, 0.125, "v1", False]]})
    health = first[1][1]
    assert first[1][0] == "health" and health["monitors"][0]["member"] == "host:1"
    assert 2.5 <= health["monitors"][0]["age_s"] <= 10
    assert len(first) == 2  # nothing is sent twice

    redis.add(key, "299-0", _prediction(299, "v2"))
    redis.add(NAMES.alert_log, "6-0", {"alert": json.dumps({**alert, "kind": "cleared"})})
    news = _events(feed.poll())
    assert ("prediction", {"stream": "rig1/ae0", "instrument": "rig1", "channel": "ae0",
                           "points": [[299, 2.99, 3.5, 0.25, 0.125, "v2", False]]}) in news
    assert ("alert", {**alert, "kind": "cleared", "log_id": "6-0"}) in news
    assert [event for event, _ in news].count("health") == 0  # not due yet

    redis.add(NAMES.predictions("rig2", "ae1"), "99-0", _prediction(99))
    now[0] = dashboard.DISCOVERY_INTERVAL_S
    later = _events(feed.poll())
    assert [(event, data.get("stream")) for event, data in later if event == "history"] == [
        ("history", "rig2/ae1")]
    assert "health" in [event for event, _ in later]


@pytest.fixture
def server(monkeypatch):
    """The dashboard on a free port, over the in-memory Redis."""
    redis = FakeRedis()
    redis.ping = lambda: True
    settings = Settings(dashboard_port=0, namespace=NAMES.namespace,
                        redis="redis://127.0.0.1:1/0")  # never dialled: the fake answers
    running = dashboard.make_server(settings)
    monkeypatch.setattr(running, "redis_client", lambda: redis)
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    yield running
    running.stop()
    running.server_close()
    thread.join(5)


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def test_the_server_serves_the_page_its_assets_and_health_and_nothing_else(server):
    status, kind, body = _get(server.url)
    assert (status, kind) == (200, "text/html; charset=utf-8")
    page = body.decode()
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in page
        assert _get(server.url.rstrip("/") + asset)[0] == 200
    assert _get(server.url + "healthz")[:2] == (200, "application/json")
    for missing in ("static/../dashboard.py", "static/nope.js", "api"):
        assert _get(server.url + missing)[0] == 404, missing


def test_the_server_binds_localhost_unless_told(server):
    assert server.server_address[0] == "127.0.0.1"
    assert Settings().dashboard_host == "127.0.0.1"
