"""The compose file parses and names the services, images and healthchecks it should."""

from pathlib import Path

import yaml

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_runs_kafka_in_kraft_mode_from_the_official_image():
    kafka = _compose()["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    environment = kafka["environment"]
    assert environment["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "CONTROLLER" in environment["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert environment["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 1
    assert "kafka-topics.sh" in " ".join(kafka["healthcheck"]["test"])


def test_compose_runs_redis_with_a_healthcheck():
    redis = _compose()["services"]["redis"]
    assert redis["image"].startswith("redis:")
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_compose_binds_published_ports_to_localhost():
    for name, service in _compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"
