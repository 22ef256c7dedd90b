"""The Redis names of labquake's outputs, defined once for the sink, the subscriber and tools.

Under a namespace (default ``labquake``):

| name                          | type    | holds                                          |
| ----------------------------- | ------- | ---------------------------------------------- |
| ``<ns>:alerts``               | pub/sub | each alert as JSON, as it happens              |
| ``<ns>:alerts:log``           | stream  | each alert, durably: one field ``alert``, JSON |
| ``<ns>:alerts:marks``         | hash    | per stream, the last logged alert's sample     |
| ``<ns>:state:<instrument>``   | hash    | the instrument's latest prediction             |
| ``<ns>:predictions:<i>/<c>``  | stream  | a stream's recent predictions (capped); entry  |
|                               |         | id ``<window_end_sample>-0``                   |
| ``<ns>:policy``               | hash    | per stream, the alert policy's saved state     |
| ``<ns>:monitor:<member>``     | string  | a monitor's heartbeat (expires)                |

Another namespace keeps two deployments (or two tests) apart on one Redis server.

Example:
    >>> ALERT_LOG, state_key("rig1")
    ('labquake:alerts:log', 'labquake:state:rig1')
    >>> RedisNames("t-run7").alert_log
    't-run7:alerts:log'
"""

from __future__ import annotations

import dataclasses

from stream.config.options import DEFAULT_NAMESPACE
from stream.core.errors import LabquakeError

# The one field of each alert-log entry; its value is the alert JSON.
ALERT_FIELD = "alert"


@dataclasses.dataclass(frozen=True)
class RedisNames:
    """The key and channel names under one namespace.

    Args:
        namespace: prefix of every name; non-empty, no spaces.

    Raises:
        LabquakeError: an empty namespace or one with whitespace.

    Example:
        >>> RedisNames().alerts_channel
        'labquake:alerts'
    """

    namespace: str = DEFAULT_NAMESPACE

    def __post_init__(self) -> None:
        if not self.namespace or any(c.isspace() for c in self.namespace):
            raise LabquakeError(
                f"Redis namespace {self.namespace!r} must be non-empty text without spaces")

    @property
    def alerts_channel(self) -> str:
        """Pub/sub channel: every alert as it is emitted."""
        return f"{self.namespace}:alerts"

    @property
    def alert_log(self) -> str:
        """Stream: every alert, kept (capped) so a subscriber that was away can catch up."""
        return f"{self.namespace}:alerts:log"

    @property
    def alert_marks(self) -> str:
        """Hash: per stream ``instrument/channel``, the ``window_end_sample`` of its last
        logged alert (a re-sent alert at or before it is rejected)."""
        return f"{self.namespace}:alerts:marks"

    @property
    def policy_state(self) -> str:
        """Hash: per stream, the alert policy's state, so a restarted monitor continues."""
        return f"{self.namespace}:policy"

    def state(self, instrument: str) -> str:
        """Hash: the latest prediction of ``instrument``."""
        return f"{self.namespace}:state:{instrument}"

    def heartbeat(self, member: str) -> str:
        """String with a time to live: the heartbeat of monitor ``member``."""
        return f"{self.namespace}:monitor:{member}"

    @property
    def heartbeat_pattern(self) -> str:
        """SCAN pattern of every monitor's heartbeat."""
        return self.heartbeat("*")

    def predictions(self, instrument: str, channel: str) -> str:
        """Stream: the recent predictions of one stream, for plots (capped; entry ids
        ``<window_end_sample>-0``, so a re-sent prediction is rejected)."""
        return f"{self.namespace}:predictions:{instrument}/{channel}"

    @property
    def predictions_pattern(self) -> str:
        """SCAN pattern of every stream's predictions."""
        return f"{self.namespace}:predictions:*"

    def stream_of_predictions(self, key: str) -> tuple[str, str]:
        """``(instrument, channel)`` of a :meth:`predictions` key."""
        prefix = f"{self.namespace}:predictions:"
        if not key.startswith(prefix) or "/" not in key[len(prefix):]:
            raise ValueError(f"{key!r} is not a predictions key under {self.namespace!r}")
        instrument, channel = key[len(prefix):].rsplit("/", 1)
        return instrument, channel


DEFAULT_NAMES = RedisNames()
ALERTS_CHANNEL = DEFAULT_NAMES.alerts_channel
ALERT_LOG = DEFAULT_NAMES.alert_log


def state_key(instrument: str, namespace: str = DEFAULT_NAMESPACE) -> str:
    """The hash of ``instrument``'s latest prediction, ``<namespace>:state:<instrument>``."""
    return RedisNames(namespace).state(instrument)
