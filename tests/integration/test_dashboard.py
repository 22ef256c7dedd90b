"""The dashboard end to end in real headless Chromium: instruments → Kafka → monitor → Redis →
dashboard → page. The page loads, live data arrives for several instruments, the plot moves,
the alert timeline holds the alert log, and a screenshot is taken. A second test writes
one alert episode through the Redis sink and follows the stream's badge and countdown.

Chromium is Debian's package (``apt-get install chromium``), driven over the Chrome DevTools
Protocol with ``websocket-client``. Set ``LABQUAKE_SCREENSHOT=PATH`` to keep the screenshot
(docs/dashboard.png is made that way).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import websocket

from stream.core import events
from stream.core.events import AlertEvent, PredictionEvent
from stream.io.redis_sink import RedisSink
from tests.integration.conftest import (
    TEST_SAMPLE_RATE,
    kill,
    labquake,
    monitor_args,
    stdout_so_far,
    wait_for,
)

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--remote-debugging-port=0", "--window-size=1400,1000")
INSTRUMENTS = ("rig1", "rig2")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Page:
    """One Chromium tab, driven over the DevTools protocol."""

    def __init__(self, socket_url: str) -> None:
        self._socket = websocket.create_connection(socket_url, timeout=60,
                                                   suppress_origin=True)
        self._ids = itertools.count(1)

    def call(self, method: str, **params) -> dict:
        message_id = next(self._ids)
        self._socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self._socket.recv())
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        self._socket.close()


@pytest.fixture
def chromium(tmp_path):
    """Headless Chromium with a fresh profile; yields a function that opens a page."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Chromium is not installed; install it (Debian: apt-get install chromium)")
    profile = tmp_path / "chromium-profile"
    # Its own process group: the browser's helper processes end with it.
    process = subprocess.Popen([executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                "about:blank"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    pages: list[Page] = []

    def open_page(url: str) -> Page:
        port_file = profile / "DevToolsActivePort"
        wait_for(lambda: port_file.exists() and port_file.read_text().count("\n") >= 1, 60,
                 "Chromium's DevTools port")
        port = int(port_file.read_text().splitlines()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as reply:
            targets = [t for t in json.load(reply) if t["type"] == "page"]
        page = Page(targets[0]["webSocketDebuggerUrl"])
        pages.append(page)
        page.call("Page.enable")
        page.call("Page.navigate", url=url)
        wait_for(lambda: page.evaluate("document.readyState") == "complete", 30, "the page load")
        return page

    yield open_page
    for page in pages:
        page.close()
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _dashboard_url(process) -> str | None:
    match = re.search(r"labquake dashboard: (http://\S+/)", stdout_so_far(process))
    return match.group(1) if match else None


def test_the_dashboard_shows_live_predictions_alerts_and_health_in_chromium(
        services, kafka_topic, unique_name, redis_client, small_record, small_bundle,
        chromium, tmp_path):
    processes = [
        labquake(*monitor_args(kafka_topic, unique_name, small_bundle), services=services),
        labquake("dashboard", "--namespace", unique_name, "--dashboard-port", "0",
                 services=services),
    ]
    try:
        dashboard = processes[1]
        wait_for(lambda: _dashboard_url(dashboard) is not None, 60, "the dashboard's address")
        processes.extend(
            labquake("produce", "--instrument", name, "--data", str(small_record), "--topic",
                     kafka_topic, "--rate", str(TEST_SAMPLE_RATE), "--quiet", services=services)
            for name in INSTRUMENTS)
        page = chromium(_dashboard_url(dashboard))
        assert page.evaluate("document.title") == "labquake — live"

        def snapshot() -> dict:
            return page.evaluate("window.labquake.snapshot()")

        streams = [f"{name}/ae0" for name in INSTRUMENTS]
        def drawn(stream: str, view: dict) -> bool:
            found = view["streams"].get(stream, {})
            return found.get("points", 0) >= 3 and found.get("xEnd") is not None

        try:
            wait_for(lambda: all(drawn(s, snapshot()) for s in streams), 120,
                     "predictions of both instruments on the page")
        except AssertionError:
            print("the page's state:", json.dumps(snapshot()))
            stored = {key.decode(): redis_client.xlen(key) for key in
                      redis_client.scan_iter(match=f"{unique_name}:predictions:*")}
            print("predictions stored in Redis:", stored)
            raise
        # The monitor's heartbeat reaches the page every 2 s, the predictions as they come.
        wait_for(lambda: snapshot()["monitors"] == 1, 30, "the monitor's health on the page")
        first = snapshot()
        assert first["connected"]
        canvas = f'document.querySelector(\'[data-stream="{streams[0]}"] canvas\').toDataURL()'
        first_image = hashlib.sha256(page.evaluate(canvas).encode()).hexdigest()

        wait_for(lambda: snapshot()["streams"][streams[0]]["points"]
                 >= first["streams"][streams[0]]["points"] + 5, 60, "more live predictions")
        time.sleep(0.5)  # one draw interval, so the new points are on the canvas
        later = snapshot()
        for stream in streams:
            assert later["streams"][stream]["lastSample"] > first["streams"][stream]["lastSample"]
            assert later["streams"][stream]["xEnd"] > first["streams"][stream]["xEnd"], \
                "the time axis must move with the data"
        assert later["draws"] > first["draws"]
        assert hashlib.sha256(page.evaluate(canvas).encode()).hexdigest() != first_image

        # Each live point is the very prediction the sink stored.
        stored = {int(entry_id.split(b"-")[0]) for entry_id, _ in
                  redis_client.xrange(f"{unique_name}:predictions:{streams[0]}")}
        shown = page.evaluate(f'window.labquake.snapshot().streams["{streams[0]}"].lastSample')
        assert shown in stored

        logged = redis_client.xlen(f"{unique_name}:alerts:log")
        assert logged > 0, "the small model raises alerts within seconds"
        wait_for(lambda: snapshot()["alerts"] >= logged, 30, "the alert timeline")
        items = page.evaluate("document.querySelectorAll('#alerts li').length")
        assert items == snapshot()["alerts"]
        health = page.evaluate("document.querySelector('#health tbody tr td').textContent")
        assert health.endswith(f":{processes[0].pid}")

        shot = base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"])
        assert shot.startswith(PNG_SIGNATURE) and len(shot) > 20_000
        Path(os.environ.get("LABQUAKE_SCREENSHOT", tmp_path / "dashboard.png")).write_bytes(shot)
    finally:
        for process in processes:
            kill(process)


RATE = 100_000.0
HOP = 10_000


def _prediction(window: int, p_failure: float, warming_up: bool) -> PredictionEvent:
    end = (window + 1) * HOP
    return PredictionEvent("rig9", "ae0", end, end / RATE, ttf_s=2.0 - 0.1 * window,
                           tsf_s=0.1 * window, p_failure=p_failure, model_version="v-test",
                           warming_up=warming_up)


def _alert(kind: str, prediction: PredictionEvent, raise_sample: int,
           failure_time: float) -> AlertEvent:
    return AlertEvent(
        alert_id=events.alert_id("rig9", "ae0", prediction.window_end_sample, kind),
        kind=kind, instrument="rig9", channel="ae0",
        window_end_sample=prediction.window_end_sample,
        window_end_time=prediction.window_end_time, ttf_s=prediction.ttf_s,
        tsf_s=prediction.tsf_s, p_failure=prediction.p_failure, threshold=0.5,
        model_version="v-test", emitted_at=time.time(), reason="p_failure",
        episode_id=events.episode_id("rig9", "ae0", raise_sample), failure_time=failure_time,
        failure_time_lower=failure_time - 0.2, failure_time_upper=failure_time + 0.3,
        interval_coverage=0.8, warming_up=False)


def test_the_badge_and_countdown_follow_warm_up_and_an_alert_episode_in_chromium(
        services, unique_name, redis_client, chromium):
    """An episode as the sink stores it: warming up, quiet, raised, updated, withdrawn."""
    dashboard = labquake("dashboard", "--namespace", unique_name, "--dashboard-port", "0",
                         services=services)
    sink = RedisSink(redis_client, unique_name)
    stream = "rig9/ae0"
    try:
        wait_for(lambda: _dashboard_url(dashboard) is not None, 60, "the dashboard's address")
        page = chromium(_dashboard_url(dashboard))

        def card(selector: str) -> str:
            return page.evaluate(
                f'document.querySelector(\'[data-stream="{stream}"] {selector}\').textContent')

        def shows(badge: str, windows: int) -> bool:
            view = page.evaluate("window.labquake.snapshot()")["streams"].get(stream, {})
            return view.get("points") == windows and view.get("badge") == badge

        warming = [_prediction(window, 0.1, warming_up=True) for window in range(3)]
        sink.write(warming, {})
        wait_for(lambda: shows("warming up", 3), 30, "the warming-up badge")
        assert card(".countdown") == "–"

        quiet = [_prediction(window, 0.2, warming_up=False) for window in range(3, 6)]
        sink.write(quiet, {})
        wait_for(lambda: shows("quiet", 6), 30, "the quiet badge after the warm-up")

        raised_at = _prediction(6, 0.9, warming_up=False)
        sink.write([raised_at, _alert("raised", raised_at, raised_at.window_end_sample, 1.5)],
                   {})
        wait_for(lambda: shows("ALERT", 7), 30, "the raised badge")
        assert "failure at 1.50 s (1.30–1.80, 80 %)" in card(".countdown")

        updated_at = _prediction(7, 0.95, warming_up=False)
        sink.write([updated_at,
                    _alert("updated", updated_at, raised_at.window_end_sample, 1.2)], {})
        wait_for(lambda: shows("ALERT", 8) and "failure at 1.20 s" in card(".countdown"), 30,
                 "the updated countdown")

        withdrawn_at = _prediction(8, 0.05, warming_up=False)
        sink.write([withdrawn_at,
                    _alert("withdrawn", withdrawn_at, raised_at.window_end_sample, 1.2)], {})
        wait_for(lambda: shows("quiet", 9), 30, "the quiet badge after the withdrawal")
        assert card(".countdown") == "–"
        kinds = page.evaluate("[...document.querySelectorAll('#alerts li span')]"
                              ".map((kind) => kind.className)")
        assert kinds == ["withdrawn", "updated", "raised"]  # the newest first
        episode = events.episode_id("rig9", "ae0", raised_at.window_end_sample)
        items = page.evaluate("[...document.querySelectorAll('#alerts li')]"
                              ".map((item) => item.textContent)")
        assert all(f"episode {episode}" in item for item in items)
    finally:
        kill(dashboard)
