"""Read the alerts the monitor logged in Redis, then follow new ones (``labquake alerts``).

The monitor appends every alert to the durable stream ``labquake:alerts:log`` (one field
``alert`` holding the alert JSON; entry ids are Redis's own, increasing). A subscriber
first catches up — the whole log, the entries after a given id, or the last N — then,
with ``follow``, blocks on ``XREAD`` from the last id it has seen. Because it always
resumes from that id, a subscriber that was away, or whose connection dropped, misses
nothing that is still in the (capped) log.

Example:
    >>> import redis                                          # doctest: +SKIP
    >>> client = redis.Redis.from_url("redis://localhost:6379/0")   # doctest: +SKIP
    >>> for logged in read_alerts(client, last=10, follow=True):    # doctest: +SKIP
    ...     print(logged.entry_id, logged.alert["kind"], logged.alert["ttf_s"])
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from stream.config.arguments import at_least
from stream.config.options import add_options, resolve
from stream.core.errors import LabquakeError, ServiceUnavailable
from stream.io.redis_names import ALERT_FIELD, DEFAULT_NAMESPACE, RedisNames

log = logging.getLogger(__name__)

VERB = "alerts"
DEFAULT_BLOCK_MS = 5_000
# Entries asked of Redis per call while catching up or following.
PAGE_ENTRIES = 1_000
# Reconnection after a dropped connection: exponential backoff between these bounds.
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0
# A blocking read may take block_ms; the socket waits this much longer before giving up.
SOCKET_MARGIN_S = 10.0
CONNECT_TIMEOUT_S = 5.0
_ENTRY_ID = re.compile(r"\d+(-\d+)?")
_START = "0-0"
FORMATS = ("json", "table")

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class LoggedAlert:
    """One alert read from the log.

    Attributes:
        entry_id: the log entry's id (pass it as ``since`` to read what came after).
        alert: the alert object (DESIGN.md: ``alert_id``, ``kind``, ``instrument``, ...).
    """

    entry_id: str
    alert: dict[str, Any]


def check_entry_id(entry_id: str) -> str:
    """Check that ``entry_id`` is a Redis stream id, ``MILLISECONDS[-SEQUENCE]``.

    Raises:
        LabquakeError: it is not.

    Example:
        >>> check_entry_id("1700000000000-3")
        '1700000000000-3'
    """
    if not _ENTRY_ID.fullmatch(entry_id):
        raise LabquakeError(
            f"{entry_id!r} is not an alert-log entry id; give one as printed in the table's"
            " 'log id' column, e.g. 1700000000000-0")
    return entry_id


def read_alerts(client: Any, namespace: str = DEFAULT_NAMESPACE, *, since: str | None = None,
                last: int | None = None, follow: bool = False,
                block_ms: int = DEFAULT_BLOCK_MS, instrument: str | None = None,
                stop: threading.Event | None = None,
                sleep: Callable[[float], None] = time.sleep) -> Iterator[LoggedAlert]:
    """Alerts from the durable log: the catch-up, then (``follow``) new ones as they come.

    Catch-up: every entry (default), the entries after ``since``, or the last ``last``
    (matching ``instrument``, if given). Following ends when ``stop`` is set (seen within
    ``block_ms``) or when the caller leaves the loop.
    While following, a dropped connection is retried with exponential backoff and the
    reading resumes after the last entry seen. An entry that does not hold alert JSON
    is logged and skipped.

    Args:
        client: a redis-py client (its ``socket_timeout``, if any, must exceed ``block_ms``).
        namespace: Redis namespace of the names (:class:`~stream.io.redis_names.RedisNames`).
        since: read only entries after this id (exclusive).
        last: read only the last N entries of the catch-up (0: none, only new ones).
        follow: after the catch-up, wait for new entries forever.
        block_ms: how long one blocking read waits before it asks again.
        instrument: only alerts of this instrument.
        stop: while following, return once this event is set (e.g. from another thread).
        sleep: the function that waits between reconnection attempts.

    Returns:
        An iterator of :class:`LoggedAlert`, oldest first.

    Raises:
        LabquakeError: both ``since`` and ``last``, or a bad value.
        ServiceUnavailable: Redis cannot be reached (only when not following).

    Example:
        >>> alerts = read_alerts(client, "labquake", last=5)   # doctest: +SKIP
    """
    if since is not None and last is not None:
        raise LabquakeError("give either since (an entry id) or last (a count), not both")
    if since is not None:
        check_entry_id(since)
    if last is not None and last < 0:
        raise LabquakeError(f"last must be ≥ 0, got {last}")
    if block_ms < 1:
        raise LabquakeError(f"block_ms must be ≥ 1, got {block_ms}")
    call = _Caller(follow, sleep, stop)
    try:
        yield from _read_log(client, RedisNames(namespace).alert_log, call, since, last,
                             follow, block_ms, instrument, stop)
    except _Stopped:
        return


def _read_log(client: Any, key: str, call: _Caller, since: str | None, last: int | None,
              follow: bool, block_ms: int, instrument: str | None,
              stop: threading.Event | None) -> Iterator[LoggedAlert]:
    """The body of :func:`read_alerts`, its arguments checked."""
    if last is not None:
        newest, found = call(lambda: _last_entries(client, key, last, instrument))
        yield from found
    else:
        newest = since or _START
        while True:
            start = newest if newest == _START else f"({newest}"
            entries = call(lambda start=start: client.xrange(key, min=start, max="+",
                                                             count=PAGE_ENTRIES))
            for entry_id, fields in entries:
                newest = _text(entry_id)
                yield from _matching(newest, fields, instrument)
            if len(entries) < PAGE_ENTRIES:
                break
    while follow and not (stop is not None and stop.is_set()):
        read = call(lambda newest=newest: client.xread({key: newest}, count=PAGE_ENTRIES,
                                                       block=block_ms))
        for _stream, entries in read or ():
            for entry_id, fields in entries:
                newest = _text(entry_id)
                yield from _matching(newest, fields, instrument)


class _Stopped(Exception):
    """The follower was told to stop while it waited for Redis to come back."""


class _Caller:
    """Runs one Redis call; while following, retries a dropped connection with backoff
    until it succeeds or ``stop`` is set (then raises :class:`_Stopped`)."""

    def __init__(self, retry: bool, sleep: Callable[[float], None],
                 stop: threading.Event | None) -> None:
        self.retry = retry
        self.sleep = sleep
        self.stop = stop

    def __call__(self, function: Callable[[], T]) -> T:
        import redis

        delay = BACKOFF_START_S
        while True:
            try:
                return function()
            except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
                if not self.retry:
                    raise _unreachable(error) from None
                log.warning("Redis connection lost (%s); retrying in %.1f s", error, delay)
                self.sleep(delay)
                if self.stop is not None and self.stop.is_set():
                    raise _Stopped from None
                delay = min(delay * 2, BACKOFF_MAX_S)


def _unreachable(error: Exception, url: str | None = None) -> ServiceUnavailable:
    from stream.io.security import redact_url

    where = f" at {redact_url(url)}" if url else ""
    return ServiceUnavailable(
        f"cannot reach Redis{where} ({error}); start it ('labquake services up')"
        " or give --redis / LABQUAKE_REDIS_URL")


def _last_entries(client: Any, key: str, count: int,
                  instrument: str | None) -> tuple[str, list[LoggedAlert]]:
    """The newest entry id in the log and its last ``count`` matching alerts, oldest first."""
    newest = None
    found: list[LoggedAlert] = []
    upper = "+"
    while True:
        page = client.xrevrange(key, max=upper, min="-", count=PAGE_ENTRIES)
        for entry_id, fields in page:
            entry_id = _text(entry_id)
            newest = newest or entry_id
            if len(found) < count:
                found.extend(_matching(entry_id, fields, instrument))
        if len(found) >= count or len(page) < PAGE_ENTRIES:
            break
        upper = f"({_text(page[-1][0])}"
    return newest or _START, found[::-1]


def _matching(entry_id: str, fields: dict, instrument: str | None) -> Iterator[LoggedAlert]:
    raw = fields.get(ALERT_FIELD.encode()) or fields.get(ALERT_FIELD)
    try:
        alert = json.loads(raw)
        if not isinstance(alert, dict):
            raise ValueError("not a JSON object")
    except (TypeError, ValueError) as error:
        log.warning("alert-log entry %s holds no alert JSON (%s); skipped", entry_id, error)
        return
    if instrument is None or alert.get("instrument") == instrument:
        yield LoggedAlert(entry_id, alert)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# ---------------------------------------------------------------- output


TABLE_COLUMNS = (
    ("emitted at", 23), ("instrument/channel", 20), ("kind", 9), ("TTF s", 8),
    ("P(failure)", 10), ("failure at s", 13), ("interval s", 23), ("episode", 12),
    ("warm-up", 7), ("window end sample", 17), ("log id", 0),
)


LOG_ID_FIELD = "log_id"


def format_json(logged: LoggedAlert, with_log_id: bool = False) -> str:
    """One alert as a JSON line: the logged object, plus ``log_id`` if asked.

    Example:
        >>> format_json(LoggedAlert("5-0", {"kind": "raised"}), with_log_id=True)
        '{"kind": "raised", "log_id": "5-0"}'
    """
    alert = {**logged.alert, LOG_ID_FIELD: logged.entry_id} if with_log_id else logged.alert
    return json.dumps(alert)


def table_header() -> str:
    """The header line of the table format."""
    return _row(name for name, _ in TABLE_COLUMNS)


def format_table_row(logged: LoggedAlert) -> str:
    """One alert as a row of the table format (missing fields read ``-``).

    The episode column shows the ``window_end_sample`` of the episode's raise; warm-up
    says ``yes`` for an alert decided while the stream's context was still filling.

    Example:
        >>> format_table_row(LoggedAlert("5-0", {"kind": "raised", "instrument": "rig1",
        ...     "channel": "ae0", "ttf_s": 0.41, "p_failure": 0.9, "window_end_sample": 7,
        ...     "emitted_at": 0.0, "episode_id": "rig1/ae0@7", "failure_time": 8.41,
        ...     "failure_time_lower": 8.3, "failure_time_upper": 8.6,
        ...     "warming_up": False})).split()  # doctest: +NORMALIZE_WHITESPACE
        ['1970-01-01', '00:00:00.000', 'rig1/ae0', 'raised', '0.410', '0.900', '8.410',
         '8.300-8.600', '@7', 'no', '7', '5-0']
    """
    alert = logged.alert
    lower, upper = alert.get("failure_time_lower"), alert.get("failure_time_upper")
    episode = alert.get("episode_id")
    warming = alert.get("warming_up")
    return _row((
        _time(alert.get("emitted_at")),
        f"{alert.get('instrument', '-')}/{alert.get('channel', '-')}",
        str(alert.get("kind", "-")),
        _number(alert.get("ttf_s"), "{:.3f}"),
        _number(alert.get("p_failure"), "{:.3f}"),
        _number(alert.get("failure_time"), "{:.3f}"),
        (f"{_number(lower, '{:.3f}')}-{_number(upper, '{:.3f}')}"
         if isinstance(lower, int | float) and isinstance(upper, int | float) else "-"),
        "@" + episode.rpartition("@")[2] if isinstance(episode, str) else "-",
        ("yes" if warming else "no") if isinstance(warming, bool) else "-",
        str(alert.get("window_end_sample", "-")),
        logged.entry_id,
    ))


def _row(cells: Iterator[str] | tuple[str, ...]) -> str:
    return " ".join(cell.ljust(width) for cell, (_, width) in zip(cells, TABLE_COLUMNS,
                                                                   strict=True)).rstrip()


def _time(value: object) -> str:
    """``emitted_at`` as UTC text: epoch seconds are formatted, text is shown as it is."""
    if isinstance(value, int | float) and math.isfinite(value):
        moment = datetime.datetime.fromtimestamp(value, tz=datetime.UTC)
        return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return "-" if value is None else str(value)


def _number(value: object, pattern: str) -> str:
    return pattern.format(value) if isinstance(value, int | float) else "-"


# ---------------------------------------------------------------- labquake alerts



def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        VERB, help="print the alerts logged in Redis; --follow for new ones as they come",
        description=(
            "Print the alerts from the durable log in Redis (all, those after --since ID, "
            "or the last N), then with --follow wait for new ones. A subscriber that "
            "restarts with --since and the last log id it printed misses nothing. "
            "Output: JSON lines (the alert objects, as 'labquake replay' prints them; "
            "--log-id adds each entry's id) or a table whose last column is the log id."
        ),
    )
    parser.add_argument("--follow", action="store_true",
                        help="after the catch-up, keep printing new alerts (Ctrl-C stops)")
    catch_up = parser.add_mutually_exclusive_group()
    catch_up.add_argument("--since", type=check_entry_id, metavar="ID",
                          help="only the alerts logged after this log id")
    catch_up.add_argument("--last", type=at_least(0), metavar="N",
                          help="only the last N alerts (0 with --follow: only new ones)")
    parser.add_argument("--instrument", metavar="ID", help="only alerts of this instrument")
    parser.add_argument("--format", choices=FORMATS, default="json",
                        help="json: one alert object a line (default); table: for people")
    parser.add_argument("--log-id", action="store_true",
                        help="json: add the field log_id (the entry id, for --since)")
    add_options(parser, "redis", "namespace")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """``labquake alerts``: print the catch-up, then follow; return the exit code."""
    import redis

    from stream.io.security import redis_client_options

    settings = resolve(args)
    url = settings.redis
    client = redis.Redis.from_url(url, socket_timeout=DEFAULT_BLOCK_MS / 1000 + SOCKET_MARGIN_S,
                                  socket_connect_timeout=CONNECT_TIMEOUT_S,
                                  **redis_client_options(settings))
    try:
        client.ping()
    except (redis.RedisError, OSError) as error:
        raise _unreachable(error, url) from None
    try:
        if args.format == "table":
            print(table_header(), flush=True)
        for logged in read_alerts(client, settings.namespace, since=args.since, last=args.last,
                                  follow=args.follow, instrument=args.instrument):
            line = (format_json(logged, args.log_id) if args.format == "json"
                    else format_table_row(logged))
            # Flushed line by line: a follower is usually read through a pipe.
            print(line, flush=True)
    except BrokenPipeError:
        # The reader went away (e.g. '| head'): not an error of ours. Point stdout at
        # /dev/null so the interpreter's last flush does not report it either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        client.close()
    return 0
