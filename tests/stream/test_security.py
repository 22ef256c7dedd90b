"""Client security options: from the configuration to kafka-python and redis-py, secrets hidden."""

from __future__ import annotations

import logging

import pytest

from stream.config.options import resolve
from stream.core.errors import LabquakeError
from stream.io.security import (
    Secret,
    kafka_client_options,
    read_secret_file,
    redact_url,
    redis_client_options,
)

pytestmark = pytest.mark.unit

PASSWORD = "pa55-w0rd-not-for-logs"


def _secret_file(tmp_path, text: str = PASSWORD + "\n", mode: int = 0o600) -> str:
    path = tmp_path / "password"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def _pem(tmp_path, name: str) -> str:
    path = tmp_path / name
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return str(path)


def test_a_secret_shows_as_stars_everywhere_but_reveal():
    secret = Secret(PASSWORD)
    assert PASSWORD not in repr(secret) and PASSWORD not in str(secret)
    assert PASSWORD not in f"{secret} {secret!r} {[secret]}"
    assert secret.reveal() == PASSWORD
    assert secret == Secret(PASSWORD) and secret != Secret("other")


def test_the_resolved_settings_hide_passwords_from_the_environment():
    settings = resolve(None, {"LABQUAKE_KAFKA_SASL_PASSWORD": PASSWORD,
                              "LABQUAKE_REDIS_PASSWORD": PASSWORD})
    assert PASSWORD not in repr(settings)
    assert settings.kafka_sasl_password.reveal() == PASSWORD


def test_plaintext_kafka_needs_no_options():
    assert kafka_client_options(resolve(None, {})) == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_with_scram_and_a_password_file(tmp_path):
    cafile = _pem(tmp_path, "ca.pem")
    settings = resolve(None, {
        "LABQUAKE_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "LABQUAKE_KAFKA_SASL_MECHANISM": "scram-sha-512",
        "LABQUAKE_KAFKA_SASL_USERNAME": "rig1",
        "LABQUAKE_KAFKA_SASL_PASSWORD_FILE": _secret_file(tmp_path),
        "LABQUAKE_KAFKA_SSL_CAFILE": cafile,
    })
    assert kafka_client_options(settings) == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "rig1", "sasl_plain_password": PASSWORD, "ssl_cafile": cafile,
    }


def test_mutual_tls_passes_the_client_certificate(tmp_path):
    files = {name: _pem(tmp_path, f"{name}.pem") for name in ("ca", "cert", "key")}
    settings = resolve(None, {
        "LABQUAKE_KAFKA_SECURITY_PROTOCOL": "SSL", "LABQUAKE_KAFKA_SSL_CAFILE": files["ca"],
        "LABQUAKE_KAFKA_SSL_CERTFILE": files["cert"], "LABQUAKE_KAFKA_SSL_KEYFILE": files["key"],
    })
    assert kafka_client_options(settings) == {
        "security_protocol": "SSL", "ssl_cafile": files["ca"],
        "ssl_certfile": files["cert"], "ssl_keyfile": files["key"],
    }


@pytest.mark.parametrize(("environ", "message"), [
    ({"LABQUAKE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "LABQUAKE_KAFKA_SASL_USERNAME": "u"},
     "needs LABQUAKE_KAFKA_SASL_MECHANISM, LABQUAKE_KAFKA_SASL_PASSWORD"),
    ({"LABQUAKE_KAFKA_SASL_USERNAME": "u"},
     "LABQUAKE_KAFKA_SASL_USERNAME set, but Kafka security protocol PLAINTEXT does not use"),
    ({"LABQUAKE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
      "LABQUAKE_KAFKA_SASL_MECHANISM": "PLAIN", "LABQUAKE_KAFKA_SASL_USERNAME": "u",
      "LABQUAKE_KAFKA_SASL_PASSWORD": PASSWORD, "LABQUAKE_KAFKA_SSL_CAFILE": "/ca.pem"},
     "LABQUAKE_KAFKA_SSL_CAFILE set, but Kafka security protocol SASL_PLAINTEXT"),
    ({"LABQUAKE_KAFKA_SECURITY_PROTOCOL": "SSL",
      "LABQUAKE_KAFKA_SSL_CAFILE": "/no/such/ca.pem"},
     "LABQUAKE_KAFKA_SSL_CAFILE: /no/such/ca.pem is not a readable file"),
])
def test_an_incomplete_or_contradictory_kafka_configuration_says_what_to_fix(environ, message):
    with pytest.raises(LabquakeError, match=message) as caught:
        kafka_client_options(resolve(None, environ))
    assert PASSWORD not in str(caught.value)


def test_an_unknown_protocol_or_mechanism_is_refused_when_resolving():
    with pytest.raises(LabquakeError, match="kafka_security_protocol must be one of"):
        resolve(None, {"LABQUAKE_KAFKA_SECURITY_PROTOCOL": "TLS"})
    with pytest.raises(LabquakeError, match="kafka_sasl_mechanism must be one of"):
        resolve(None, {"LABQUAKE_KAFKA_SASL_MECHANISM": "GSSAPI"})


def test_a_password_given_twice_is_refused(tmp_path):
    settings = resolve(None, {"LABQUAKE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                              "LABQUAKE_KAFKA_SASL_PASSWORD": PASSWORD,
                              "LABQUAKE_KAFKA_SASL_PASSWORD_FILE": _secret_file(tmp_path)})
    with pytest.raises(LabquakeError, match="are both set; give the password once"):
        kafka_client_options(settings)


def test_a_password_file_gives_its_first_line(tmp_path):
    assert read_secret_file(_secret_file(tmp_path, PASSWORD + "\r\nignored\n"),
                            "X").reveal() == PASSWORD
    assert read_secret_file(_secret_file(tmp_path, PASSWORD), "X").reveal() == PASSWORD


@pytest.mark.parametrize(("text", "message"), [
    ("", "is empty"), ("\n" + PASSWORD, "is empty"), ("x" * 5000, "larger than 4096 bytes"),
])
def test_a_bad_password_file_is_refused_without_showing_it(tmp_path, text, message):
    with pytest.raises(LabquakeError, match=message) as caught:
        read_secret_file(_secret_file(tmp_path, text), "LABQUAKE_REDIS_PASSWORD_FILE")
    assert PASSWORD not in str(caught.value)


def test_a_missing_password_file_names_the_file(tmp_path):
    with pytest.raises(LabquakeError, match=r"cannot read .*missing \(No such file"):
        read_secret_file(str(tmp_path / "missing"), "LABQUAKE_REDIS_PASSWORD_FILE")


def test_a_password_file_others_can_read_is_used_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="stream.io.security"):
        assert read_secret_file(_secret_file(tmp_path, mode=0o644), "X").reveal() == PASSWORD
    assert "can be read by other users" in caplog.text
    assert PASSWORD not in caplog.text


def test_redis_password_from_a_file_with_the_user_in_the_url(tmp_path):
    settings = resolve(None, {"LABQUAKE_REDIS_URL": "redis://alice@redis.lab:6379/0",
                              "LABQUAKE_REDIS_PASSWORD_FILE": _secret_file(tmp_path)})
    assert redis_client_options(settings) == {"password": PASSWORD}


def test_redis_over_tls_checks_the_host_against_the_given_ca(tmp_path):
    cafile = _pem(tmp_path, "ca.pem")
    settings = resolve(None, {"LABQUAKE_REDIS_URL": "rediss://alice:pw@redis.lab:6380/0",
                              "LABQUAKE_REDIS_SSL_CAFILE": cafile})
    assert redis_client_options(settings) == {"ssl_check_hostname": True,
                                              "ssl_ca_certs": cafile}


@pytest.mark.parametrize(("environ", "message"), [
    ({"LABQUAKE_REDIS_URL": "redis://:pw@localhost:6379/0", "LABQUAKE_REDIS_PASSWORD": "pw"},
     "in the URL and in LABQUAKE_REDIS_PASSWORD"),
    ({"LABQUAKE_REDIS_SSL_CAFILE": "/ca.pem"},
     "LABQUAKE_REDIS_SSL_CAFILE set, but the Redis URL redis://localhost:6379/0 does not"),
    ({"LABQUAKE_REDIS_URL": "rediss://localhost:6380/0", "LABQUAKE_REDIS_SSL_KEYFILE": "/k"},
     "LABQUAKE_REDIS_SSL_KEYFILE needs LABQUAKE_REDIS_SSL_CERTFILE"),
    ({"LABQUAKE_REDIS_URL": f"redis://u:{PASSWORD}@[::1:6379/0"}, "is malformed"),
])
def test_a_contradictory_redis_configuration_says_what_to_fix(environ, message):
    with pytest.raises(LabquakeError, match=message) as caught:
        redis_client_options(resolve(None, environ))
    assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://localhost:6379/0", "redis://localhost:6379/0"),
    (f"rediss://alice:{PASSWORD}@redis.lab:6380/0", "rediss://alice:***@redis.lab:6380/0"),
    (f"redis://:{PASSWORD}@localhost", "redis://:***@localhost"),
    ("rediss://al%40ice:p%3Aw@h:1/2?ssl_cert_reqs=none",
     "rediss://al%40ice:***@h:1/2?ssl_cert_reqs=none"),
    (f"redis://u:{PASSWORD}@[::1:6379", "***"),
])
def test_redact_url_hides_the_password_only(url, shown):
    assert redact_url(url) == shown
