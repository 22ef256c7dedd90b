"""The command line: verbs listed, bad flags in one line, configuration precedence."""

from __future__ import annotations

import argparse

import pytest

from stream import cli
from stream.config import options as config
from stream.core.errors import LabquakeError, ServiceUnavailable
from stream.tools import services


def test_help_lists_the_verbs_that_exist(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for verb in cli._available_verbs():
        assert verb in out
    assert "services" in out


def test_an_unknown_flag_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["services", "up", "--no-such-flag"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--no-such-flag" in err and "--help" in err


def test_a_bad_port_is_reported_in_one_line(capsys):
    assert cli.main(["services", "status", "--redis-port", "70000"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "labquake services: port='70000' is not a port; give a number from 1 to 65535"


def test_flags_override_environment_override_defaults():
    parser = argparse.ArgumentParser()
    config.add_options(parser, "bootstrap", "redis", "topic")
    environ = {"LABQUAKE_KAFKA_BOOTSTRAP": "kafka.lab:9092", "LABQUAKE_TOPIC": "rig.ae"}
    settings = config.resolve(parser.parse_args(["--topic", "flag.topic"]), environ)
    assert settings.topic == "flag.topic"
    assert settings.bootstrap == "kafka.lab:9092"
    assert settings.redis == "redis://localhost:6379/0"
    assert settings.dead_letter_topic == "flag.topic.dlq"
    assert config.resolve(None, {}) == config.Settings()


def test_inference_threads_default_to_one_and_zero_means_the_backends_default():
    assert config.resolve(None, {}).inference_threads == 1
    assert config.resolve(None, {"LABQUAKE_INFERENCE_THREADS": "0"}).inference_threads == 0
    with pytest.raises(LabquakeError, match="inference_threads must be a whole number >= 0"):
        config.resolve(None, {"LABQUAKE_INFERENCE_THREADS": "-2"})


def test_a_missing_program_names_what_to_install(monkeypatch):
    monkeypatch.setattr(services.shutil, "which", lambda name: None)
    with pytest.raises(ServiceUnavailable, match=r"'redis-server' is not installed; install Redis"):
        services._require("redis-server", "install Redis (Debian: apt-get install redis-server)")
    assert issubclass(ServiceUnavailable, LabquakeError)


def test_layout_reads_its_folders_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LABQUAKE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LABQUAKE_CACHE_DIR", str(tmp_path / "cache"))
    layout = services.Layout.from_environment(kafka_port=19092)
    assert layout.kafka_dir == tmp_path / "state" / "kafka"
    assert layout.jars_dir.parent.parent == tmp_path / "cache"
    assert layout.kafka_bootstrap == "localhost:19092"


def test_json_logs_are_one_object_a_line():
    import json
    import logging

    record = logging.LogRecord("labquake.monitor", logging.WARNING, __file__, 1,
                               "lag=%d", (42,), None)
    entry = json.loads(cli.JsonLogFormatter().format(record))
    assert entry["level"] == "WARNING" and entry["logger"] == "labquake.monitor"
    assert entry["message"] == "lag=42"


def test_ports_come_from_the_environment_and_bad_ones_are_refused(monkeypatch):
    monkeypatch.delenv("LABQUAKE_CONTROLLER_PORT", raising=False)
    monkeypatch.setenv("LABQUAKE_KAFKA_PORT", "19092")
    monkeypatch.setenv("LABQUAKE_REDIS_PORT", "16379")
    layout = services.Layout.from_environment()
    assert (layout.kafka_port, layout.redis_port, layout.controller_port) == (19092, 16379, 9093)
    monkeypatch.setenv("LABQUAKE_REDIS_PORT", "redis")
    with pytest.raises(LabquakeError, match="LABQUAKE_REDIS_PORT='redis' is not a port"):
        services.Layout.from_environment()
