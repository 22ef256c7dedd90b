"""kafka-python's own log lines, silenced where its errors are expected.

Example:
    >>> import logging
    >>> with quiet_kafka_logs():
    ...     logging.getLogger("kafka").level == logging.CRITICAL
    True
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_kafka_logs() -> Iterator[None]:
    """Hide kafka-python's log lines below CRITICAL inside the block.

    A probe of a broker that is still starting, or a retried send, fails by design; its
    errors are noise for an operator.
    """
    kafka_logger = logging.getLogger("kafka")
    previous = kafka_logger.level
    kafka_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        kafka_logger.setLevel(previous)
