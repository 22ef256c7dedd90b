"""``labquake produce --realtime`` while the broker is away, on a broker of this module's
own (it is stopped): the producer either recovers, delivering every sample once, or
gives up in one line that says where to resume; its memory stays bounded either way.

``LABQUAKE_OUTAGE_S`` sets the recovering test's outage (default 30 s; the figure in
docs/reliability.md is from a run with 150)."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator

import pytest
from kafka import KafkaConsumer

from stream.core import wire
from stream.io.instrument import MAX_PENDING_BYTES
from stream.tools import services
from tests.integration.conftest import finish, kill, labquake, stderr_so_far

OUTAGE_S = float(os.environ.get("LABQUAKE_OUTAGE_S", "30"))
RATE = 1_000_000.0  # 2 MB/s of chunks: an outage of 30 s is 60 MB, more than the bound
SECONDS_BEFORE = 8.0
SECONDS_AFTER = 10.0
# Memory the producer may gain over its start: the pending chunks and kafka-python's
# copies of them, batches and buffers.
MEMORY_MARGIN_MIB = 3 * (MAX_PENDING_BYTES >> 20)
GIVE_UP_S = 10


def _rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


class _Sampler:
    """Samples a process's resident memory every 0.5 s in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            rss = _rss_mib(self.pid)
            if rss:
                self.samples.append(rss)

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join()
        return self.samples


def _messages(bootstrap: str, topic: str) -> Iterator[wire.Chunk]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=10_000)
    for record in consumer:
        yield wire.decode(record.value)
    consumer.close()


@pytest.mark.timeout(600)
def test_produce_realtime_rides_out_a_broker_outage_in_bounded_memory(own, unique_name):
    seconds = SECONDS_BEFORE + OUTAGE_S + SECONDS_AFTER
    producer = labquake("produce", "--instrument", "rig1", "--simulate", "--seconds",
                        str(seconds), "--sample-rate", str(RATE), "--realtime", "--topic",
                        unique_name, "--quiet", "--outage-timeout", str(OUTAGE_S + 120),
                        services=own)
    try:
        time.sleep(SECONDS_BEFORE / 2)  # the simulator and the first chunks started
        sampler = _Sampler(producer.pid)
        time.sleep(SECONDS_BEFORE / 2)
        assert producer.poll() is None, stderr_so_far(producer)
        assert services.stop_kafka(own.layout)
        try:
            time.sleep(OUTAGE_S)
        finally:
            services.start_kafka(own.layout)
        code, _, err = finish(producer, OUTAGE_S + 240)
    except BaseException:
        kill(producer)
        raise
    memory = sampler.stop()
    assert code == 0, err[-3000:]
    assert "sending paused" in err and "sending resumed" in err
    chunks = list(_messages(own.bootstrap, unique_name))
    total = int(seconds * RATE)
    assert [chunk.first_sample for chunk in chunks] == list(range(0, total, 4096))
    assert sum(len(chunk.samples) for chunk in chunks) == total
    growth = max(memory) - memory[0]
    print(f"outage {OUTAGE_S:g} s at {RATE / 1e6:g} MS/s: producer RSS {memory[0]:.0f} MiB "
          f"at the start, at most {max(memory):.0f} MiB (+{growth:.0f}); {len(chunks)} "
          f"chunks, each once, in order")
    assert growth <= MEMORY_MARGIN_MIB


@pytest.mark.timeout(300)
def test_produce_gives_up_after_the_outage_timeout_saying_where_to_resume(own, unique_name):
    producer = labquake("produce", "--instrument", "rig1", "--simulate", "--seconds", "600",
                        "--sample-rate", str(RATE), "--realtime", "--topic", unique_name,
                        "--quiet", "--outage-timeout", str(GIVE_UP_S), services=own)
    try:
        time.sleep(4)
        assert producer.poll() is None, stderr_so_far(producer)
        assert services.stop_kafka(own.layout)
        try:
            stopped = time.monotonic()
            code, _, err = finish(producer, 120)
            took = time.monotonic() - stopped
        finally:
            services.start_kafka(own.layout)
    except BaseException:
        kill(producer)
        raise
    last = err.strip().splitlines()[-1]
    assert code == 3 and "Traceback" not in err, err[-3000:]
    match = re.search(r"delivered up to sample (\d+): resume with --first-sample (\d+)$", last)
    assert last.startswith("labquake produce: ") and match, last
    assert match.group(1) == match.group(2) and int(match.group(1)) > 0
    assert took <= GIVE_UP_S + 30, f"gave up after {took:.0f} s"
    # Everything before the resume point is stored, in order (what the broker stored after
    # it without acknowledging is sent again on resume; the monitor skips such repeats).
    chunks = list(_messages(own.bootstrap, unique_name))
    resume = int(match.group(1))
    assert [chunk.first_sample for chunk in chunks] == list(range(0, len(chunks) * 4096, 4096))
    assert chunks[-1].end_sample >= resume
