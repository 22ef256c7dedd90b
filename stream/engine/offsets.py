"""Which Kafka offset a monitor may commit: the oldest chunk a result not yet given needs.

DESIGN.md's rule: offsets are committed only after the sink holds every result up to
them, and the committed offset is the oldest chunk an open window still needs, so a
restart rebuilds the same windows. The tracker remembers, per partition and per stream,
the offsets and sample ranges of the chunks that may still be needed, and forgets them
as the pipeline moves on. It knows nothing of Kafka's client: partitions are any
hashable key.

Example:
    >>> tracker = OffsetTracker()
    >>> tracker.record("p0", 10, ("rig1", "ae0"), first_sample=0, end_sample=4096)
    >>> tracker.record("p0", 11, ("rig1", "ae0"), first_sample=4096, end_sample=8192)
    >>> tracker.committable("p0", lambda stream: 5000)   # the window from 5000 is open
    11
    >>> tracker.committable("p0", lambda stream: None)   # nothing outstanding
    12
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable

StreamId = tuple[str, str]


class OffsetTracker:
    """Per partition: the next offset to read and the still-needed chunks of each stream."""

    def __init__(self) -> None:
        self._next: dict[Hashable, int] = {}
        self._chunks: dict[Hashable, dict[StreamId, collections.deque]] = {}
        self._seen: dict[Hashable, set[StreamId]] = {}

    def record(self, partition: Hashable, offset: int, stream_id: StreamId,
               first_sample: int, end_sample: int) -> None:
        """A chunk was read at ``offset``: samples ``[first_sample, end_sample)`` of a stream."""
        self._seen.setdefault(partition, set()).add(stream_id)
        self._chunks.setdefault(partition, {}).setdefault(
            stream_id, collections.deque()).append((offset, first_sample, end_sample))
        self.skip(partition, offset)

    def skip(self, partition: Hashable, offset: int) -> None:
        """A message was read that no result needs (a dead letter, a duplicate)."""
        self._next[partition] = max(self._next.get(partition, 0), offset + 1)

    def committable(self, partition: Hashable,
                    oldest_needed_sample: Callable[[StreamId], int | None]) -> int | None:
        """The offset to commit for ``partition``, or ``None`` if nothing was read there.

        Args:
            oldest_needed_sample: per stream, the first sample a result not yet given still
                needs (``Pipeline.oldest_needed_sample``), or ``None`` if none.
        """
        if partition not in self._next:
            return None
        oldest_offset = self._next[partition]
        streams = self._chunks.get(partition, {})
        for stream_id in list(streams):
            chunks = streams[stream_id]
            needed = oldest_needed_sample(stream_id)
            while chunks and (needed is None or chunks[0][2] <= needed):
                chunks.popleft()
            if not chunks:
                del streams[stream_id]
                continue
            oldest_offset = min(oldest_offset, chunks[0][0])
        return oldest_offset

    def forget_stream(self, partition: Hashable, stream_id: StreamId) -> None:
        """Drop the chunks recorded for one stream (its run ended: none is needed again)."""
        self._chunks.get(partition, {}).pop(stream_id, None)

    def partitions(self) -> list[Hashable]:
        """The partitions read from."""
        return list(self._next)

    def forget(self, partition: Hashable) -> list[StreamId]:
        """Drop a partition (revoked); return the streams that were read from it."""
        self._next.pop(partition, None)
        self._chunks.pop(partition, None)
        return sorted(self._seen.pop(partition, set()))
