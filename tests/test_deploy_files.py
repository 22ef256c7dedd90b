"""The deployment files agree with the code: the systemd unit, the Kubernetes manifests and
the configuration they carry."""

from __future__ import annotations

import configparser
import tomllib
from pathlib import Path

import pytest
import yaml

from stream import cli
from stream.config import options as config

pytestmark = pytest.mark.unit

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _manifests() -> dict[tuple[str, str], dict]:
    found = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            found[(document["kind"], document["metadata"]["name"])] = document
    return found


@pytest.fixture
def k8s_settings(tmp_path) -> config.Settings:
    """The settings a pod gets from the ConfigMap's configuration file."""
    text = _manifests()[("ConfigMap", "labquake-config")]["data"]["labquake.toml"]
    assert set(tomllib.loads(text)) <= set(config.OPTIONS_BY_NAME)
    path = tmp_path / "labquake.toml"
    path.write_text(text)
    return config.resolve(None, {config.CONFIG_ENV: str(path)})


def test_the_systemd_unit_restarts_reloads_and_reads_an_environment_file():
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read(DEPLOY / "labquake-monitor.service")
    service = unit["Service"]
    assert service["ExecStart"].endswith("labquake monitor")
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2"  # a configuration error
    assert service["EnvironmentFile"].startswith("-/etc/labquake/")
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["User"] == "labquake"
    assert f"{config.CONFIG_ENV}=/etc/labquake/labquake.toml" in service["Environment"]


def test_the_kubernetes_monitor_is_a_scaled_consumer_group_with_probes_on_its_metrics(
        k8s_settings):
    manifests = _manifests()
    settings = k8s_settings
    monitor = manifests[("Deployment", "labquake-monitor")]
    assert monitor["spec"]["replicas"] > 1
    pod = monitor["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"] == ["monitor"]
    assert {"name": "LABQUAKE_CONFIG", "value": "/etc/labquake/labquake.toml"} in container["env"]
    assert container["ports"][0]["containerPort"] == settings.metrics_port
    assert settings.metrics_host == "0.0.0.0"
    assert container["livenessProbe"]["httpGet"]["path"] == "/metrics"
    assert pod["securityContext"]["runAsNonRoot"] is True
    annotations = monitor["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(settings.metrics_port)
    assert manifests[("PodDisruptionBudget", "labquake-monitor")]["spec"]["maxUnavailable"] == 1


def test_the_kubernetes_dashboard_listens_where_its_configuration_says(k8s_settings):
    settings = k8s_settings
    dashboard = _manifests()[("Deployment", "labquake-dashboard")]
    container = dashboard["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["dashboard"]
    assert container["ports"][0]["containerPort"] == settings.dashboard_port
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"


def test_every_container_runs_a_verb_the_cli_has():
    verbs = set(cli.VERB_MODULES)
    for (kind, name), manifest in _manifests().items():
        if kind == "Deployment":
            for container in manifest["spec"]["template"]["spec"]["containers"]:
                assert container["args"][0] in verbs, name
