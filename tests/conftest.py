"""Shared test fixtures: markers by folder, and the real Kafka and Redis for integration tests.

Integration tests talk to a real Kafka broker and a real redis-server. By default the
session starts them with the same code as ``labquake services up`` (and stops them at the
end if it started them). Set ``LABQUAKE_TEST_SERVICES=external`` to use services that
already run at ``LABQUAKE_KAFKA_BOOTSTRAP`` / ``LABQUAKE_REDIS_URL`` instead. A service
that cannot be reached fails the tests that need it; it never skips them.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        if "integration" in path.parts:
            item.add_marker(pytest.mark.integration)
        elif not any(mark.name == "unit" for mark in item.iter_markers()):
            item.add_marker(pytest.mark.unit)


@dataclasses.dataclass(frozen=True)
class Services:
    """Where the real services of this test session answer."""

    bootstrap: str
    redis_url: str


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    from stream.tools import services as local_services

    if os.environ.get("LABQUAKE_TEST_SERVICES") == "external":
        found = Services(
            bootstrap=os.environ.get("LABQUAKE_KAFKA_BOOTSTRAP", "localhost:9092"),
            redis_url=os.environ.get("LABQUAKE_REDIS_URL", "redis://localhost:6379/0"),
        )
        if not local_services.kafka_ready(found.bootstrap, timeout_s=10):
            pytest.fail(f"no Kafka broker answers at {found.bootstrap}")
        if not local_services.redis_ready(found.redis_url):
            pytest.fail(f"no Redis answers at {found.redis_url}")
        yield found
        return

    layout = local_services.Layout.from_environment()
    before = local_services.status(layout)
    try:
        for line in local_services.up(layout):
            print(line)
    except Exception as error:  # a missing service is a failure, never a skip
        pytest.fail(f"could not start the local Kafka and Redis: {error}")
    yield Services(bootstrap=layout.kafka_bootstrap, redis_url=layout.redis_url)
    if not (before["kafka"]["running"] or before["redis"]["running"]):
        local_services.down(layout)


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A name no other test uses: for topics, consumer groups and Redis key prefixes."""
    test = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40]
    return f"t-{test}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_topic(services: Services) -> Iterator[Callable[..., str]]:
    """Create topics for one test: ``make_topic(name, partitions=1)``; deleted afterwards."""
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=services.bootstrap)
    created: list[str] = []

    def make(name: str, partitions: int = 1) -> str:
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        created.append(name)
        return name

    yield make
    if created:
        admin.delete_topics(created)
    admin.close()


@pytest.fixture
def kafka_topic(make_topic: Callable[..., str], unique_name: str) -> str:
    """A fresh one-partition topic of this test's own."""
    return make_topic(unique_name)


@pytest.fixture
def redis_client(services: Services, unique_name: str):
    """A redis-py client; the keys under the test's prefix are deleted afterwards."""
    import redis

    client = redis.Redis.from_url(services.redis_url)
    yield client
    keys = list(client.scan_iter(match=f"{unique_name}*"))
    if keys:
        client.delete(*keys)
    client.close()
