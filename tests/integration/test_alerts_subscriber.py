"""The alert subscriber against the real Redis: catch-up, follow, filters, formats, outages."""

from __future__ import annotations

import json
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from stream.app.subscriber import (
    BACKOFF_START_S,
    LoggedAlert,
    check_entry_id,
    format_json,
    format_table_row,
    read_alerts,
    table_header,
)
from stream.core.errors import LabquakeError, ServiceUnavailable
from stream.io.redis_names import ALERT_FIELD, RedisNames
from tests.integration.conftest import finish, labquake, stdout_so_far, wait_for

WAIT_S = 20.0


def alert(number: int, instrument: str = "rig1", kind: str = "raised") -> dict:
    return {
        "alert_id": f"{instrument}/ae0/{number}", "kind": kind, "instrument": instrument,
        "channel": "ae0", "window_end_sample": 150_000 * number - 1,
        "window_end_time": 0.0375 * number, "ttf_s": 0.42, "tsf_s": 8.1, "p_failure": 0.91,
        "threshold": 0.5, "model_version": "test-1", "emitted_at": 1_700_000_000.25 + number,
    }


def log(client: redis.Redis, namespace: str, *alerts: dict) -> list[str]:
    """XADD each alert the way the monitor does; returns the entry ids."""
    key = RedisNames(namespace).alert_log
    return [client.xadd(key, {ALERT_FIELD: json.dumps(item)}).decode() for item in alerts]


def numbers(logged: list[LoggedAlert]) -> list[int]:
    return [int(item.alert["alert_id"].rsplit("/", 1)[1]) for item in logged]


@pytest.fixture
def follow_in_thread() -> Iterator[Callable[..., queue.Queue]]:
    """Run a following read_alerts on a thread; what it yields lands in the queue.

    The threads are stopped (through read_alerts' stop event) when the test ends.
    """
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(client: redis.Redis, namespace: str, **kwargs) -> queue.Queue:
        found: queue.Queue = queue.Queue()

        def reader() -> None:
            for item in read_alerts(client, namespace, follow=True, stop=stop,
                                    **{"block_ms": 200, **kwargs}):
                found.put(item)

        threads.append(threading.Thread(target=reader, daemon=True))
        threads[-1].start()
        return found

    yield start
    stop.set()
    for thread in threads:
        thread.join(timeout=WAIT_S)
        assert not thread.is_alive(), "a follower did not stop when asked"


def wait_until_blocked(client: redis.Redis, name: str) -> dict:
    """The connection called ``name`` once it waits in a blocking command (flag ``b``)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        for connection in client.client_list():
            if connection["name"] == name and "b" in connection["flags"]:
                return connection
    raise AssertionError(f"connection {name} never blocked on XREAD")


def take(found: queue.Queue, count: int) -> list[LoggedAlert]:
    return [found.get(timeout=WAIT_S) for _ in range(count)]


def test_catch_up_reads_all_the_last_n_or_those_after_an_id(redis_client, unique_name):
    ids = log(redis_client, unique_name, *(alert(n) for n in range(1, 8)))
    everything = list(read_alerts(redis_client, unique_name))
    assert numbers(everything) == [1, 2, 3, 4, 5, 6, 7]
    assert [item.entry_id for item in everything] == ids
    assert everything[0].alert == alert(1)
    assert numbers(read_alerts(redis_client, unique_name, last=3)) == [5, 6, 7]
    assert numbers(read_alerts(redis_client, unique_name, last=50)) == [1, 2, 3, 4, 5, 6, 7]
    assert numbers(read_alerts(redis_client, unique_name, last=0)) == []
    assert numbers(read_alerts(redis_client, unique_name, since=ids[4])) == [6, 7]
    assert numbers(read_alerts(redis_client, unique_name, since=ids[-1])) == []
    assert list(read_alerts(redis_client, "t-nothing-logged-here")) == []


def test_the_instrument_filter_applies_to_the_catch_up_and_the_last_n(redis_client, unique_name):
    log(redis_client, unique_name, alert(1, "rig1"), alert(2, "rig2"), alert(3, "rig1"),
        alert(4, "rig2"), alert(5, "rig2"))
    only_rig1 = list(read_alerts(redis_client, unique_name, instrument="rig1"))
    assert numbers(only_rig1) == [1, 3]
    assert numbers(read_alerts(redis_client, unique_name, last=1, instrument="rig1")) == [3]


def test_an_entry_without_alert_json_is_skipped(redis_client, unique_name):
    key = RedisNames(unique_name).alert_log
    log(redis_client, unique_name, alert(1))
    redis_client.xadd(key, {ALERT_FIELD: "not json"})
    redis_client.xadd(key, {"other": "field"})
    log(redis_client, unique_name, alert(2))
    assert numbers(read_alerts(redis_client, unique_name)) == [1, 2]


def test_follow_picks_up_alerts_logged_after_it_started(redis_client, unique_name,
                                                       follow_in_thread):
    log(redis_client, unique_name, alert(1), alert(2))
    found = follow_in_thread(redis_client, unique_name, last=1, instrument="rig1")
    assert numbers(take(found, 1)) == [2]
    log(redis_client, unique_name, alert(3, "rig2"), alert(4))
    assert numbers(take(found, 1)) == [4], "rig2's alert is filtered out, rig1's comes through"


def test_last_zero_with_follow_reads_only_new_alerts(services, redis_client, unique_name,
                                                     follow_in_thread):
    log(redis_client, unique_name, alert(1))
    follower = redis.Redis.from_url(services.redis_url, client_name=unique_name)
    found = follow_in_thread(follower, unique_name, last=0)
    wait_until_blocked(redis_client, unique_name)  # past the catch-up, waiting after entry 1
    log(redis_client, unique_name, alert(2))
    assert numbers(take(found, 1)) == [2]


def test_follow_survives_a_dropped_connection_and_misses_nothing(services, redis_client,
                                                                 unique_name, follow_in_thread):
    # No retries inside redis-py: the drop reaches read_alerts, which must resume itself.
    follower = redis.Redis.from_url(services.redis_url, client_name=unique_name,
                                    retry=Retry(NoBackoff(), 0))
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        time.sleep(0.05)

    found = follow_in_thread(follower, unique_name, sleep=pause, block_ms=2000)
    log(redis_client, unique_name, alert(1))
    assert numbers(take(found, 1)) == [1]
    # Kill the connection while it waits in XREAD BLOCK: an idle pooled connection
    # would be silently replaced by redis-py, which tests nothing of ours.
    blocked = wait_until_blocked(redis_client, unique_name)
    assert redis_client.client_kill_filter(_id=blocked["id"]) == 1
    log(redis_client, unique_name, alert(2), alert(3))
    assert numbers(take(found, 2)) == [2, 3]
    assert found.empty()
    assert pauses and pauses[0] == BACKOFF_START_S, "the drop went through the backoff"


def test_bad_arguments_and_an_unreachable_redis_are_reported():
    unreachable = redis.Redis.from_url("redis://localhost:1/0", socket_connect_timeout=2)
    with pytest.raises(ServiceUnavailable, match="cannot reach Redis"):
        list(read_alerts(unreachable))
    with pytest.raises(LabquakeError, match="either since"):
        list(read_alerts(unreachable, since="1-0", last=3))
    with pytest.raises(LabquakeError, match="not an alert-log entry id"):
        check_entry_id("yesterday")


def test_a_follower_waits_out_an_unreachable_redis_and_stops_when_told():
    unreachable = redis.Redis.from_url("redis://localhost:1/0", socket_connect_timeout=2)
    stop = threading.Event()
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 4:
            stop.set()

    assert list(read_alerts(unreachable, follow=True, stop=stop, sleep=pause)) == []
    assert pauses == [0.5, 1.0, 2.0, 4.0]


def test_formats_show_the_fields_a_person_reads():
    logged = LoggedAlert("1700000000000-0", alert(2))
    row = format_table_row(logged)
    assert row.split() == ["2023-11-14", "22:13:22.250", "rig1/ae0", "raised", "0.420", "0.910",
                           "-", "-", "-", "-", "299999", "1700000000000-0"]
    episode = {**alert(2), "episode_id": "rig1/ae0@299999", "failure_time": 8.25,
               "failure_time_lower": 8.1, "failure_time_upper": 8.5, "warming_up": True}
    assert format_table_row(LoggedAlert("1-0", episode)).split()[6:10] == [
        "8.250", "8.100-8.500", "@299999", "yes"]
    assert table_header().split()[:2] == ["emitted", "at"]
    assert json.loads(format_json(logged)) == alert(2)
    assert json.loads(format_json(logged, with_log_id=True))["log_id"] == "1700000000000-0"
    odd = format_table_row(LoggedAlert("1-0", {"kind": "cleared", "emitted_at": "noon"}))
    assert odd.split() == ["noon", "-/-", "cleared", "-", "-", "-", "-", "-", "-", "-", "1-0"]


def test_the_cli_prints_a_table_of_the_last_alerts(services, redis_client, unique_name):
    ids = log(redis_client, unique_name, alert(1), alert(2, "rig2"), alert(3))
    returncode, stdout, stderr = finish(labquake(
        "alerts", "--last", "2", "--format", "table", "--namespace", unique_name,
        services=services), timeout_s=60)
    assert returncode == 0, stderr
    lines = stdout.splitlines()
    assert lines[0] == table_header()
    assert [line.split()[2] for line in lines[1:]] == ["rig2/ae0", "rig1/ae0"]
    assert lines[-1].split()[-1] == ids[-1]


def test_the_cli_follows_in_json_and_stops_on_ctrl_c(services, redis_client, unique_name):
    ids = log(redis_client, unique_name, alert(1))
    process = labquake("alerts", "--follow", "--since", ids[0], "--log-id",
                       "--namespace", unique_name, services=services)
    time.sleep(1.0)  # let it start and block
    [new_id] = log(redis_client, unique_name, alert(2))
    wait_for(lambda: stdout_so_far(process).endswith("\n"), 30, "the followed alert")
    line = stdout_so_far(process)
    process.send_signal(signal.SIGINT)
    assert finish(process, timeout_s=30)[0] == 130
    assert json.loads(line) == {**alert(2), "log_id": new_id}


def test_the_cli_says_in_one_line_when_redis_is_down(services):
    returncode, _, stderr = finish(labquake("alerts", "--redis", "redis://localhost:1/0",
                                            services=services), timeout_s=60)
    assert returncode == 3
    assert stderr.strip().startswith("labquake alerts: cannot reach Redis at redis://localhost:1/0")
    assert len(stderr.strip().splitlines()) == 1
