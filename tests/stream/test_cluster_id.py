"""The Kafka cluster id that `labquake services up` formats its storage with."""

from __future__ import annotations

import base64

import pytest

from stream.tools import services

pytestmark = pytest.mark.unit


def test_cluster_ids_are_uuids_kafka_storage_takes_as_a_value(monkeypatch):
    import uuid

    # A UUID whose URL-safe base64 starts with "-" (0xf8 encodes as "-" then more):
    # kafka-storage would read it as an option; another one must be drawn.
    leading_dash = uuid.UUID(bytes=bytes([0xF8]) + bytes(15))
    assert base64.urlsafe_b64encode(leading_dash.bytes).decode().startswith("-")
    drawn = iter([leading_dash, uuid.UUID(int=1)])
    monkeypatch.setattr(services.uuid, "uuid4", lambda: next(drawn))
    cluster_id = services._cluster_id()
    assert cluster_id == base64.urlsafe_b64encode(uuid.UUID(int=1).bytes).decode().rstrip("=")

    monkeypatch.undo()
    for _ in range(2000):
        cluster_id = services._cluster_id()
        assert not cluster_id.startswith("-") and len(cluster_id) == 22
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
