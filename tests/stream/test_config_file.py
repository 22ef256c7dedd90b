"""The TOML configuration file: every option works from it, in its place in the precedence,
and the generated reference and example file are current."""

from __future__ import annotations

import argparse
import tomllib
import types

import pytest

from stream import cli
from stream.cli import config_reference
from stream.config import options as config
from stream.core.errors import LabquakeError

pytestmark = pytest.mark.unit

# A valid value other than the default for every option, as a file would give it. A new
# option must be added here: the test below fails until it is shown to work from the file.
FILE_VALUES = {
    "bootstrap": "kafka-a.lab:9092,kafka-b.lab:9092",
    "redis": "redis://redis.lab:6380/2",
    "topic": "rig.ae",
    "model": "/srv/models/v7.lqb",
    "namespace": "lab2",
    "group": "lab2-monitors",
    "max_batch": 256,
    "max_wait": 0.2,
    "inference_threads": 2,
    "stop_after_idle": 30,
    "stream_idle_timeout": 90,
    "stream_retention": 3600,
    "metrics_host": "0.0.0.0",
    "metrics_port": 9464,
    "dashboard_host": "0.0.0.0",
    "dashboard_port": 8080,
    "kafka_security_protocol": "SASL_SSL",
    "kafka_sasl_mechanism": "SCRAM-SHA-512",
    "kafka_sasl_username": "monitor",
    "kafka_sasl_password": "s3cret",
    "kafka_sasl_password_file": "/etc/labquake/kafka-password",
    "kafka_ssl_cafile": "/etc/labquake/ca.pem",
    "kafka_ssl_certfile": "/etc/labquake/client.pem",
    "kafka_ssl_keyfile": "/etc/labquake/client.key",
    "redis_password": "r3dis",
    "redis_password_file": "/etc/labquake/redis-password",
    "redis_ssl_cafile": "/etc/labquake/redis-ca.pem",
    "redis_ssl_certfile": "/etc/labquake/redis-client.pem",
    "redis_ssl_keyfile": "/etc/labquake/redis-client.key",
    "alert_raise_threshold": 0.6,
    "alert_clear_threshold": 0.25,
    "alert_consecutive": 3,
    "alert_withdraw_after": 0.75,
    "alert_refractory": 2.5,
    "alert_update_step": 0.1,
    "alert_warmup": 4.0,
}


def _comparable(value):
    return value.reveal() if hasattr(value, "reveal") else value


def _write(path, values: dict) -> str:
    lines = [f"{key} = {value!r}" if not isinstance(value, str) else f'{key} = "{value}"'
             for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_every_option_works_from_the_file(tmp_path):
    assert set(FILE_VALUES) == set(config.OPTIONS_BY_NAME), "every option needs a file value"
    path = _write(tmp_path / "labquake.toml", FILE_VALUES)
    settings = config.resolve(None, {config.CONFIG_ENV: path})
    for option in config.OPTIONS:
        got = _comparable(getattr(settings, option.name))
        assert got == _comparable(option.parse(str(FILE_VALUES[option.name]))), option.name
        assert got != option.default, f"{option.name}: the file must change it"


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path):
    path = _write(tmp_path / "labquake.toml",
                  {"topic": "file.topic", "group": "file-group", "max_batch": 8})
    parser = argparse.ArgumentParser()
    config.add_options(parser, "topic", "group", "max_batch")
    args = parser.parse_args(["--config", path, "--topic", "flag.topic"])
    settings = config.resolve(args, {"LABQUAKE_GROUP": "env-group"})
    assert settings.topic == "flag.topic"
    assert settings.group == "env-group"
    assert settings.max_batch == 8
    assert settings.redis == config.Settings().redis


def test_the_flag_names_the_file_before_the_environment(tmp_path):
    from_flag = _write(tmp_path / "a.toml", {"namespace": "from-flag"})
    from_env = _write(tmp_path / "b.toml", {"namespace": "from-env"})
    parser = argparse.ArgumentParser()
    config.add_options(parser, "namespace")
    config.add_options(parser, "group")  # a second call keeps the one --config flag
    settings = config.resolve(parser.parse_args(["--config", from_flag]),
                              {config.CONFIG_ENV: from_env})
    assert settings.namespace == "from-flag"


@pytest.mark.parametrize(("content", "message"), [
    ("max_batch = 0\n", r"labquake.toml: max_batch must be a whole number >= 1, got 0"),
    ("metrics_port = 70000\n", r"metrics_port must be a port from 0 to 65535"),
    ("max_wait = true\n", r"max_wait must be text or a number, got True"),
    ("max_bach = 3\n", r"sets unknown options \['max_bach'\]"),
    ("max_batch = \n", r"is not valid TOML"),
])
def test_a_bad_file_is_one_line_that_says_where(tmp_path, content, message):
    path = tmp_path / "labquake.toml"
    path.write_text(content)
    with pytest.raises(LabquakeError, match=message):
        config.resolve(None, {config.CONFIG_ENV: str(path)})


def test_a_missing_file_is_named():
    with pytest.raises(LabquakeError, match=r"cannot read configuration file /no/such.toml"):
        config.resolve(None, {config.CONFIG_ENV: "/no/such.toml"})


def test_the_monitor_reads_its_options_from_the_file_and_reports_a_bad_one(tmp_path, capsys):
    path = _write(tmp_path / "monitor.toml", {"max_batch": -1})
    assert cli.main(["monitor", "--config", path]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"labquake monitor: {path}: max_batch must be a whole number >= 1, got -1; "
                   "see docs/configuration.md")


def test_the_example_file_sets_every_option_to_its_default():
    text = config_reference.EXAMPLE_PATH.read_text()
    assert config.resolve(None, {config.CONFIG_ENV: str(config_reference.EXAMPLE_PATH)}) == \
        config.Settings()
    # The options without a default are there too, commented out with an example value.
    every = tomllib.loads("\n".join(line.removeprefix("# ") for line in text.splitlines()
                                    if " = " in line))
    assert set(every) == set(config.OPTIONS_BY_NAME)


def test_the_generated_reference_and_example_are_current():
    for path, text in config_reference.generated().items():
        assert path.read_text() == text, (
            f"{path.name} is out of date: run `python -m stream.cli.config_reference`")
    assert config_reference.main(["--check"]) == 0


def test_the_reference_lists_every_option_with_its_variable():
    reference = config_reference.reference_markdown()
    for option in config.OPTIONS:
        assert f"| `{option.name}` | `{option.env}` |" in reference
    assert "`--max-batch` (`monitor`)" in reference
    assert "`--dashboard-port` (`dashboard`)" in reference


def test_the_alert_options_override_the_bundle_policy(tmp_path):
    from stream.app.monitor import policy_config
    from stream.core.alert_policy import AlertPolicyConfig

    bundle = types.SimpleNamespace(alert_policy={"raise_threshold": 0.4,
                                                 "clear_threshold": 0.2, "refractory_s": 9.0})
    path = _write(tmp_path / "labquake.toml", {"alert_refractory": 1.5, "alert_warmup": 4.0})
    settings = config.resolve(None, {config.CONFIG_ENV: path,
                                     "LABQUAKE_ALERT_RAISE_THRESHOLD": "0.45"})
    assert policy_config(bundle, settings) == AlertPolicyConfig(
        raise_threshold=0.45, clear_threshold=0.2, refractory_s=1.5, warmup_s=4.0)
    assert policy_config(bundle).refractory_s == 9.0
    with pytest.raises(LabquakeError, match="above raise_threshold"):
        policy_config(bundle, config.resolve(None, {"LABQUAKE_ALERT_CLEAR_THRESHOLD": "0.5"}))
