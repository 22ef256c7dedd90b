"""The Redis side of the monitor: stores and publishes results, exactly once.

For each batch of events, in one MULTI/EXEC transaction:

- each alert is appended to the durable stream ``labquake:alerts:log`` (capped) and
  published on ``labquake:alerts`` — unless its stream already logged an alert at or
  after its ``window_end_sample`` (a re-sent alert after a restart or rebalance): a
  per-stream mark on the instrument's sample counter, checked in a Lua script, rejects
  it. Entry ids are Redis's own increasing ids, since the instruments' counters are
  unrelated to each other and a stream's ids must increase across all of them;
- the latest prediction of each instrument goes to the hash ``labquake:state:<instrument>``
  (``warming_up`` is 1 while the stream's context is still filling);
- every prediction is appended to its stream's capped history
  ``labquake:predictions:<instrument>/<channel>`` (for the dashboard's plots) under the id
  ``<window_end_sample>-0``, so a re-sent prediction is rejected there too;
- each stream's alert-policy state goes to ``labquake:policy`` so a restarted monitor
  continues where this one stopped.

A Redis outage does not lose anything: ``write`` retries with exponential backoff until
Redis takes the batch, and the monitor commits no Kafka offset meanwhile.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from stream.core.errors import ServiceUnavailable
from stream.core.events import (
    AlertEvent,
    Event,
    GapEvent,
    PredictionEvent,
    RunEvent,
    StreamId,
)
from stream.io.redis_names import RedisNames

log = logging.getLogger(__name__)

ALERT_LOG_MAXLEN = 100_000
# Predictions kept per stream: about 6 minutes of LANL-sized windows at 4 MHz.
PREDICTION_HISTORY_MAXLEN = 10_000
HEARTBEAT_TTL_S = 15
BACKOFF_START_S = 0.2
BACKOFF_MAX_S = 5.0

# KEYS: alert log, marks hash, channel.  ARGV: stream field, window_end_sample, alert JSON,
# maxlen.  Returns the new entry id, or false for a re-sent alert.
_LOG_ALERT = """
local mark = redis.call('HGET', KEYS[2], ARGV[1])
if mark and tonumber(mark) >= tonumber(ARGV[2]) then
  return false
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 'alert', ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PUBLISH', KEYS[3], ARGV[3])
return id
"""


# KEYS: the stream's predictions.  ARGV: maxlen, window_end_sample, field, value, ...
# Returns the new entry id, or false for a prediction at or before the stream's last one.
_LOG_PREDICTION = """
local reply = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], ARGV[2] .. '-0',
                          unpack(ARGV, 3))
if type(reply) == 'table' and reply.err then
  if string.find(reply.err, 'equal or smaller', 1, true) then
    return false
  end
  return redis.error_reply(reply.err)
end
return reply
"""


def stream_field(stream_id: StreamId) -> str:
    return f"{stream_id[0]}/{stream_id[1]}"


class RedisSink:
    """Writes the pipeline's events to Redis.

    Args:
        client: a redis-py client.
        namespace: prefix of every name (default ``labquake``).
    """

    def __init__(self, client: Any, namespace: str = "labquake",
                 retention_s: float = 0.0) -> None:
        self.client = client
        self.names = RedisNames(namespace)
        # A stream's state hash and predictions expire this long after their last write.
        self.retention_s = int(retention_s)
        self._log_alert = client.register_script(_LOG_ALERT)
        self._log_prediction = client.register_script(_LOG_PREDICTION)
        self.alerts_logged = 0
        self.alerts_rejected = 0
        self.errors = 0

    @classmethod
    def connect(cls, url: str, namespace: str = "labquake",
                client_options: Mapping[str, Any] | None = None,
                retention_s: float = 0.0) -> RedisSink:
        """A sink on the Redis at ``url``; a clear error if it does not answer.

        ``client_options``: redis-py security options
        (``stream.io.security.redis_client_options``); ``retention_s``: how long a stream's
        keys outlive its last write (0: forever).
        """
        import redis

        from stream.io.security import redact_url

        client = redis.Redis.from_url(url, socket_timeout=10.0, socket_connect_timeout=5.0,
                                      health_check_interval=30, **(client_options or {}))
        try:
            client.ping()
        except (redis.RedisError, OSError) as error:
            raise ServiceUnavailable(
                f"cannot reach Redis at {redact_url(url)} ({error}); start it (`labquake "
                "services up`), point --redis / LABQUAKE_REDIS_URL at it, or check the "
                "credentials (docs/security.md)"
            ) from error
        return cls(client, namespace, retention_s)

    def write(self, events: list[Event], policy_states: Mapping[StreamId, Mapping[str, Any]],
              should_stop: Callable[[], bool] = lambda: False) -> None:
        """Store one batch; retry with backoff until Redis has it.

        Raises:
            ServiceUnavailable: Redis is unreachable and ``should_stop()`` says to give up
                (the process is stopping); nothing was committed past these results.
        """
        self._retrying(lambda: self._write_once(events, policy_states), should_stop)

    def load_policy_state(self, stream_id: StreamId) -> dict[str, Any] | None:
        """The alert-policy state stored for a stream, or ``None``."""
        raw = self._retrying(lambda: self.client.hget(self.names.policy_state,
                                                      stream_field(stream_id)))
        return json.loads(raw) if raw else None

    def heartbeat(self, member: str, status: Mapping[str, Any]) -> None:
        """Refresh this monitor's heartbeat key (expires after ``HEARTBEAT_TTL_S``)."""
        import redis

        payload = json.dumps({**status, "updated_at": time.time()})
        try:
            self.client.set(self.names.heartbeat(member), payload, ex=HEARTBEAT_TTL_S)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
            self.errors += 1
            log.warning("heartbeat not written: %s", error)

    def close(self) -> None:
        self.client.close()

    def _write_once(self, events: list[Event],
                    policy_states: Mapping[StreamId, Mapping[str, Any]]) -> None:
        pipe = self.client.pipeline(transaction=True)
        latest: dict[str, PredictionEvent] = {}
        alerts: list[AlertEvent] = []
        now = time.time()
        for event in events:
            if isinstance(event, PredictionEvent):
                latest[event.instrument] = event
            elif isinstance(event, AlertEvent):
                alerts.append(event)  # the scripts' replies come first: queued first
                self._log_alert(
                    keys=[self.names.alert_log, self.names.alert_marks,
                          self.names.alerts_channel],
                    # A stream's later runs count their windows from 0 again: each run
                    # keeps its own mark, named like its alert ids.
                    args=[event.alert_id.rpartition("@")[0],
                          event.window_end_sample, json.dumps(event.to_json()),
                          ALERT_LOG_MAXLEN],
                    client=pipe,
                )
        for event in events:
            if isinstance(event, GapEvent):
                pipe.hincrby(self.names.state(event.instrument), "gaps", 1)
            elif isinstance(event, RunEvent):
                # The recent predictions plot the current run: the old run's go (their
                # entry ids, the counter, would refuse the new run's).
                pipe.delete(self.names.predictions(event.instrument, event.channel))
                pipe.hset(self.names.state(event.instrument), "run", event.run)
            elif isinstance(event, PredictionEvent):
                self._log_prediction(
                    keys=[self.names.predictions(event.instrument, event.channel)],
                    args=[PREDICTION_HISTORY_MAXLEN, event.window_end_sample,
                          "window_end_sample", event.window_end_sample,
                          "window_end_time", repr(event.window_end_time),
                          "ttf_s", repr(event.ttf_s), "tsf_s", repr(event.tsf_s),
                          "p_failure", repr(event.p_failure),
                          "model_version", event.model_version,
                          "warming_up", int(event.warming_up)],
                    client=pipe,
                )
        if self.retention_s:
            for key in {self.names.predictions(event.instrument, event.channel)
                        for event in events if isinstance(event, PredictionEvent)}:
                pipe.expire(key, self.retention_s)
        for instrument, event in latest.items():
            pipe.hset(self.names.state(instrument), mapping={
                "channel": event.channel,
                "window_end_sample": event.window_end_sample,
                "window_end_time": repr(event.window_end_time),
                "ttf_s": repr(event.ttf_s), "tsf_s": repr(event.tsf_s),
                "p_failure": repr(event.p_failure), "model_version": event.model_version,
                "warming_up": int(event.warming_up), "updated_at": repr(now),
            })
            if self.retention_s:  # after the write: it may have created the key
                pipe.expire(self.names.state(instrument), self.retention_s)
        if policy_states:
            pipe.hset(self.names.policy_state, mapping={
                stream_field(stream_id): json.dumps(dict(state))
                for stream_id, state in policy_states.items()
            })
        results = pipe.execute()
        logged = sum(1 for result in results[: len(alerts)] if result)
        self.alerts_logged += logged
        self.alerts_rejected += len(alerts) - logged
        for alert in alerts:
            log.info("alert %s: %s ttf=%.2fs p=%.3f", alert.kind, alert.alert_id,
                     alert.ttf_s, alert.p_failure)

    def _retrying(self, call: Callable[[], Any],
                  should_stop: Callable[[], bool] = lambda: False) -> Any:
        import redis

        delay = BACKOFF_START_S
        while True:
            try:
                return call()
            except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
                self.errors += 1
                if should_stop():
                    raise ServiceUnavailable(
                        f"Redis unreachable while stopping ({error}); results since the "
                        "last commit will be recomputed at the next start"
                    ) from error
                log.warning("redis call failed (%s); retrying in %.1f s", error, delay)
                time.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
