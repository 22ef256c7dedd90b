"""`labquake services` on spare ports: idempotent up, status, and a down that leaves nothing."""

from __future__ import annotations

import os
import socket

from stream.tools import services


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def services_layout(tmp_path) -> services.Layout:
    return services.Layout.from_environment(
        state_dir=tmp_path / "state", kafka_port=_free_port(),
        controller_port=_free_port(), redis_port=_free_port(),
    )


def test_up_twice_status_and_down_leave_no_process(tmp_path):
    layout = services_layout(tmp_path)
    try:
        first = services.up(layout)
        assert any("started" in line for line in first)
        again = services.up(layout)
        assert all("already running" in line for line in again)

        report = services.status(layout)
        assert report["kafka"]["answers"] and report["redis"]["answers"]
        assert report["kafka"]["version"] == services.KAFKA_VERSION
        assert report["redis"]["version"]
        pids = [report["kafka"]["pid"], report["redis"]["pid"]]
    finally:
        lines = services.down(layout)
    assert lines == ["kafka stopped", "redis stopped"]
    for pid in pids:
        assert not services._alive(pid), f"process {pid} still runs after down"
    assert not os.path.exists(layout.kafka_dir / "kafka.pid")
    report = services.status(layout)
    assert not report["kafka"]["running"] and not report["redis"]["running"]
    assert services.down(layout) == ["kafka was not running", "redis was not running"]
