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


def test_compose_runs_the_monitor_and_a_simulated_instrument_against_the_stack():
    services = _compose()["services"]
    monitor, instrument = services["monitor"], services["instrument"]
    assert monitor["command"][0] == "monitor"
    assert monitor["environment"]["LABQUAKE_KAFKA_BOOTSTRAP"] == "kafka:19092"
    assert monitor["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert "healthcheck" in monitor
    assert instrument["command"][:2] == ["produce", "--instrument"]
    assert {"--simulate", "--realtime"} <= set(instrument["command"])
    dockerfile = (COMPOSE.parent / monitor["build"]["dockerfile"]).read_text()
    assert "USER labquake" in dockerfile


def test_compose_serves_the_dashboard_and_the_monitors_metrics_on_localhost():
    services = _compose()["services"]
    dashboard, monitor = services["dashboard"], services["monitor"]
    assert dashboard["command"] == ["dashboard"]
    assert dashboard["image"] == monitor["image"]
    assert dashboard["environment"]["LABQUAKE_REDIS_URL"] == "redis://redis:6379/0"
    port = dashboard["environment"]["LABQUAKE_DASHBOARD_PORT"]
    assert f"127.0.0.1:{port}:{port}" in dashboard["ports"]
    assert dashboard["depends_on"]["redis"]["condition"] == "service_healthy"
    assert f"http://127.0.0.1:{port}/healthz" in " ".join(dashboard["healthcheck"]["test"])
    metrics_port = monitor["environment"]["LABQUAKE_METRICS_PORT"]
    assert f"127.0.0.1:{metrics_port}:{metrics_port}" in monitor["ports"]



def test_every_service_of_the_stack_but_the_instrument_has_a_healthcheck():
    services = {name: service for name, service in _compose()["services"].items()
                if "profiles" not in service}  # tools run on demand
    assert set(services) == {"kafka", "redis", "monitor", "instrument", "dashboard"}
    for name in services.keys() - {"instrument"}:
        assert services[name]["healthcheck"]["test"], name
