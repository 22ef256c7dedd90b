"""Security against real servers: Kafka with SASL/SCRAM over TLS, Redis with an ACL user
over TLS, certificates made here. With credentials the producer, the monitor and the
subscriber work; without them they are refused; no secret reaches a log.

The broker and the Redis server are this module's own: the broker runs from the jars
``labquake services`` caches, with a server.properties written here (a SASL_SSL listener
for clients, PLAINTEXT only for the controller and between brokers, on loopback).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from stream.config.options import resolve
from stream.io.security import kafka_client_options, redis_client_options
from stream.tools import services
from tests.integration.conftest import (
    finish,
    kill,
    labquake,
    logged_alerts,
    monitor_args,
    replay_alerts,
    stdout_so_far,
    wait_for,
)

KAFKA_USER = "labquake-test"
KAFKA_PASSWORD = "kafka-" + uuid.uuid4().hex  # fresh each run: its presence in a log is a leak
REDIS_USER = "labquake-test"
REDIS_PASSWORD = "redis-" + uuid.uuid4().hex
SCRAM = "SCRAM-SHA-256"
READY_TIMEOUT_S = 120.0
IDLE = "4"

SASL_SSL_PROPERTIES = """process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=SASL_SSL://localhost:{port},INTERNAL://127.0.0.1:{internal_port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=SASL_SSL://localhost:{port},INTERNAL://127.0.0.1:{internal_port}
listener.security.protocol.map=SASL_SSL:SASL_SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=INTERNAL
controller.listener.names=CONTROLLER
sasl.enabled.mechanisms={mechanism}
listener.name.sasl_ssl.{mechanism_lower}.sasl.jaas.config=\\
    org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
log.dirs={data}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
"""

LOG4J = """log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={log}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@dataclasses.dataclass(frozen=True)
class Certificates:
    ca: Path
    server_certificate: Path
    server_key: Path
    other_ca: Path  # a CA that signed nothing here: trusting it alone must fail


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Certificates:
    """A throw-away CA and a server certificate for localhost and 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl program is needed to make test certificates; install it")
    folder = tmp_path_factory.mktemp("certificates")
    for name in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-keyout", f"{name}.key", "-out", f"{name}.pem",
                 "-subj", f"/CN=labquake {name}", cwd=folder)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
             "-out", "server.csr", "-subj", "/CN=localhost", cwd=folder)
    (folder / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-out", "server.pem", "-extfile", "san.cnf",
             cwd=folder)
    return Certificates(folder / "ca.pem", folder / "server.pem", folder / "server.key",
                        folder / "other-ca.pem")


def _secret_file(folder: Path, name: str, secret: str) -> Path:
    path = folder / name
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return path


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@dataclasses.dataclass(frozen=True)
class SecureServices:
    """Where the secured servers answer, and the client settings that get in."""

    bootstrap: str
    redis_url: str  # rediss://USER@localhost:PORT/0, the password in its own file
    environment: dict[str, str]


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory, certificates) -> Iterator[str]:
    """A single-node broker whose only client listener is SASL_SSL with SCRAM users."""
    java = shutil.which("java")
    if java is None:
        pytest.fail("Java is needed to run the Kafka broker; install Java 17")
    jars = services.resolve_kafka_jars(services.Layout.from_environment())
    folder = tmp_path_factory.mktemp("secure-kafka")
    keystore = folder / "keystore.pem"
    keystore.write_text(certificates.server_key.read_text()
                        + certificates.server_certificate.read_text())
    port = _free_port()
    properties = folder / "server.properties"
    properties.write_text(SASL_SSL_PROPERTIES.format(
        port=port, internal_port=_free_port(), controller_port=_free_port(),
        mechanism=SCRAM, mechanism_lower=SCRAM.lower(), keystore=keystore,
        data=folder / "data"))
    (folder / "log4j.properties").write_text(LOG4J.format(log=folder / "server.log"))
    java_command = [java, "-Xmx512m", f"-Dlog4j.configuration=file:{folder}/log4j.properties",
                    "-cp", str(jars / "*")]
    cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    subprocess.run([*java_command, "kafka.tools.StorageTool", "format", "-t", cluster,
                    "-c", str(properties), "--add-scram",
                    f"{SCRAM}=[name={KAFKA_USER},password={KAFKA_PASSWORD}]"],
                   check=True, capture_output=True)
    with open(folder / "stdout.log", "wb") as output:
        broker = subprocess.Popen([*java_command, "kafka.Kafka", str(properties)],
                                  stdout=output, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
    bootstrap = f"localhost:{port}"
    try:
        options = {"security_protocol": "SASL_SSL", "sasl_mechanism": SCRAM,
                   "sasl_plain_username": KAFKA_USER, "sasl_plain_password": KAFKA_PASSWORD,
                   "ssl_cafile": str(certificates.ca)}
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not services.kafka_ready(bootstrap, client_options=options):
            if broker.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the SASL_SSL broker did not start; see {folder}/server.log")
            time.sleep(1)
        yield bootstrap
    finally:
        _stop(broker)


@pytest.fixture(scope="module")
def secure_redis(tmp_path_factory, certificates) -> Iterator[int]:
    """redis-server with TLS only (no plain port) and one ACL user; default user off."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is needed; install Redis")
    folder = tmp_path_factory.mktemp("secure-redis")
    port = _free_port()
    with open(folder / "redis.log", "wb") as output:
        process = subprocess.Popen(
            [server, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
             "--tls-cert-file", str(certificates.server_certificate),
             "--tls-key-file", str(certificates.server_key),
             "--tls-ca-cert-file", str(certificates.ca), "--tls-auth-clients", "no",
             "--user", "default", "off",
             "--user", REDIS_USER, "on", f">{REDIS_PASSWORD}", "~*", "&*", "+@all",
             "--save", "", "--appendonly", "no", "--dir", str(folder)],
            stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    try:
        url = f"rediss://{REDIS_USER}:{REDIS_PASSWORD}@localhost:{port}/0"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not services.redis_ready(url, client_options={"ssl_ca_certs":
                                                            str(certificates.ca)}):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the TLS redis-server did not start; see {folder}/redis.log")
            time.sleep(0.2)
        yield port
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def secure(tmp_path_factory, certificates, secure_kafka, secure_redis) -> SecureServices:
    secrets = tmp_path_factory.mktemp("secrets")
    environment = {
        "LABQUAKE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "LABQUAKE_KAFKA_SASL_MECHANISM": SCRAM,
        "LABQUAKE_KAFKA_SASL_USERNAME": KAFKA_USER,
        "LABQUAKE_KAFKA_SASL_PASSWORD_FILE": str(_secret_file(secrets, "kafka", KAFKA_PASSWORD)),
        "LABQUAKE_KAFKA_SSL_CAFILE": str(certificates.ca),
        "LABQUAKE_REDIS_PASSWORD_FILE": str(_secret_file(secrets, "redis", REDIS_PASSWORD)),
        "LABQUAKE_REDIS_SSL_CAFILE": str(certificates.ca),
    }
    return SecureServices(secure_kafka, f"rediss://{REDIS_USER}@localhost:{secure_redis}/0",
                          environment)


def _changed(secure: SecureServices, **changes: str | None) -> dict[str, str]:
    """The working client environment with some variables changed (``None``: unset)."""
    environment = {**secure.environment, **changes}
    return {name: value for name, value in environment.items() if value is not None}


def _use(monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]) -> None:
    """Run the next CLI processes with exactly this security configuration."""
    for name in list(os.environ):
        if name.startswith(("LABQUAKE_KAFKA_", "LABQUAKE_REDIS_")):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)


def _redis_client(secure: SecureServices) -> redis.Redis:
    settings = resolve(None, {**secure.environment, "LABQUAKE_REDIS_URL": secure.redis_url})
    return redis.Redis.from_url(secure.redis_url, **redis_client_options(settings))


def _assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert KAFKA_PASSWORD not in text and REDIS_PASSWORD not in text, "a secret was logged"


@pytest.mark.timeout(400)
def test_with_credentials_the_producer_monitor_and_subscriber_work_and_log_no_secret(
        secure, monkeypatch, unique_name, small_record, small_bundle):
    _use(monkeypatch, secure.environment)
    # -v: every debug line of labquake and kafka-python, the most a log could leak
    code, out, err = finish(labquake("-v", "produce", "--instrument", "rig1", "--data",
                                     str(small_record), "--topic", unique_name, "--quiet",
                                     services=secure), 180)
    assert code == 0, err[-3000:]
    _assert_no_secret(out, err)
    code, out, err = finish(labquake("-v", *monitor_args(unique_name, unique_name, small_bundle,
                                                         "--stop-after-idle", IDLE),
                                     services=secure), 300)
    assert code == 0, err[-3000:]
    _assert_no_secret(out, err)
    client = _redis_client(secure)
    try:
        logged = logged_alerts(client, unique_name)
    finally:
        client.close()
    assert logged == replay_alerts(small_record, small_bundle, "rig1")
    code, out, err = finish(labquake("-v", "alerts", "--namespace", unique_name,
                                     services=secure), 60)
    assert code == 0, err[-3000:]
    assert len(out.splitlines()) == len(logged)
    _assert_no_secret(out, err)


@pytest.mark.parametrize("changes", [
    {"LABQUAKE_KAFKA_SECURITY_PROTOCOL": None, "LABQUAKE_KAFKA_SASL_MECHANISM": None,
     "LABQUAKE_KAFKA_SASL_USERNAME": None, "LABQUAKE_KAFKA_SASL_PASSWORD_FILE": None,
     "LABQUAKE_KAFKA_SSL_CAFILE": None},                                  # plain text
    {"LABQUAKE_KAFKA_SECURITY_PROTOCOL": "SSL", "LABQUAKE_KAFKA_SASL_MECHANISM": None,
     "LABQUAKE_KAFKA_SASL_USERNAME": None, "LABQUAKE_KAFKA_SASL_PASSWORD_FILE": None},  # no SASL
    {"LABQUAKE_KAFKA_SASL_PASSWORD_FILE": None,
     "LABQUAKE_KAFKA_SASL_PASSWORD": "not-the-password"},                  # wrong password
    {"LABQUAKE_KAFKA_SASL_USERNAME": "intruder"},                          # unknown user
], ids=["plaintext", "tls-without-sasl", "wrong-password", "unknown-user"])
def test_kafka_refuses_clients_without_the_credentials(secure, changes):
    settings = resolve(None, _changed(secure, **changes))
    assert not services.kafka_ready(secure.bootstrap, timeout_s=5,
                                    client_options=kafka_client_options(settings))


def test_kafka_with_the_credentials_but_an_untrusted_ca_is_refused(secure, certificates):
    settings = resolve(None, _changed(secure, LABQUAKE_KAFKA_SSL_CAFILE=str(certificates.other_ca)))
    assert not services.kafka_ready(secure.bootstrap, timeout_s=5,
                                    client_options=kafka_client_options(settings))


@pytest.mark.parametrize(("url", "changes"), [
    ("rediss://{user}@localhost:{port}/0", {"LABQUAKE_REDIS_PASSWORD_FILE": None}),
    ("rediss://{user}@localhost:{port}/0", {"LABQUAKE_REDIS_PASSWORD_FILE": None,
                                            "LABQUAKE_REDIS_PASSWORD": "not-the-password"}),
    ("rediss://localhost:{port}/0", {}),                       # the disabled default user
    ("redis://{user}@localhost:{port}/0", {"LABQUAKE_REDIS_SSL_CAFILE": None}),  # no TLS
], ids=["no-password", "wrong-password", "default-user", "plain-text"])
def test_redis_refuses_clients_without_the_credentials(secure, secure_redis, url, changes):
    url = url.format(user=REDIS_USER, port=secure_redis)
    settings = resolve(None, _changed(secure, LABQUAKE_REDIS_URL=url, **changes))
    assert not services.redis_ready(url, client_options=redis_client_options(settings))


@pytest.mark.timeout(300)
def test_refused_clients_exit_3_in_one_line_without_the_secret(secure, monkeypatch,
                                                                unique_name, small_bundle):
    wrong = "wrong-" + KAFKA_PASSWORD  # holds the real password: it must not show either
    _use(monkeypatch, _changed(secure, LABQUAKE_KAFKA_SASL_PASSWORD_FILE=None,
                               LABQUAKE_KAFKA_SASL_PASSWORD=wrong))
    code, _, err = finish(labquake("produce", "--instrument", "rig1", "--simulate",
                                   "--seconds", "1", "--topic", unique_name, "--quiet",
                                   services=secure), 120)
    assert code == 3, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("labquake produce: no Kafka broker answers")
    _assert_no_secret(err)

    _use(monkeypatch, _changed(secure, LABQUAKE_REDIS_PASSWORD_FILE=None))
    wrong_url = secure.redis_url.replace(f"{REDIS_USER}@", f"{REDIS_USER}:wrong-{REDIS_PASSWORD}@")
    code, _, err = finish(labquake(*monitor_args(unique_name, unique_name, small_bundle),
                                   services=dataclasses.replace(secure, redis_url=wrong_url)),
                          120)
    assert code == 3, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("labquake monitor: no Redis answers at rediss://labquake-test:***@")
    _assert_no_secret(err)


@pytest.mark.timeout(120)
def test_the_dashboard_reads_a_redis_with_acl_and_tls_and_is_refused_without(
        secure, monkeypatch, unique_name):
    client = _redis_client(secure)
    try:
        client.xadd(f"{unique_name}:alerts:log", {"alert": json.dumps(
            {"kind": "raised", "instrument": "rig1", "channel": "ae0", "sample": 1})})
    finally:
        client.close()
    _use(monkeypatch, secure.environment)
    dashboard = labquake("-v", "dashboard", "--namespace", unique_name, "--dashboard-port", "0",
                         services=secure)
    try:
        wait_for(lambda: re.search(r"dashboard: (http://\S+/)", stdout_so_far(dashboard)),
                 60, "the dashboard's address")
        url = re.search(r"dashboard: (http://\S+/)", stdout_so_far(dashboard)).group(1)
        with urllib.request.urlopen(url + "events", timeout=30) as feed:
            received = b""
            while b"event: health" not in received:
                received += feed.read1(65536)
        assert b"event: config" in received and b"event: alert" in received
        assert b'"instrument":"rig1"' in received
        assert b"event: problem" not in received
    finally:
        kill(dashboard)

    _use(monkeypatch, _changed(secure, LABQUAKE_REDIS_PASSWORD_FILE=None))
    wrong_url = secure.redis_url.replace(f"{REDIS_USER}@", f"{REDIS_USER}:wrong-{REDIS_PASSWORD}@")
    code, _, err = finish(labquake("dashboard", "--namespace", unique_name, "--dashboard-port",
                                   "0", services=dataclasses.replace(secure, redis_url=wrong_url)),
                          60)
    assert code == 3, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("labquake dashboard: no Redis answers at rediss://labquake-test:***@")
    _assert_no_secret(err)


def test_a_tampered_bundle_is_refused_before_it_loads(services, tmp_path, small_record,
                                                      small_bundle):
    tampered = tmp_path / "tampered.lqb"
    shutil.copytree(small_bundle, tampered)
    model_file = tampered / "model.keras"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    code, out, err = finish(labquake("replay", "--data", str(small_record), "--model",
                                     str(tampered), services=services), 120)
    lines = err.strip().splitlines()
    assert code == 2 and out == ""
    assert lines[-1].startswith("labquake replay: model bundle") and "modified" in lines[-1]


def test_an_edited_bundle_json_is_refused_until_stamped(services, tmp_path, small_record,
                                                        small_bundle):
    edited = tmp_path / "edited.lqb"
    shutil.copytree(small_bundle, edited)
    metadata = json.loads((edited / "bundle.json").read_text())
    metadata["alert_policy"]["raise_threshold"] = 0.999999
    (edited / "bundle.json").write_text(json.dumps(metadata, indent=2))
    code, out, err = finish(labquake("replay", "--data", str(small_record), "--model",
                                     str(edited), services=services), 120)
    lines = err.strip().splitlines()
    assert code == 2 and out == ""
    assert lines[-1].startswith("labquake replay: model bundle") and "modified" in lines[-1]
    assert f"labquake stamp {edited}" in lines[-1] and "Traceback" not in err
    code, out, err = finish(labquake("stamp", str(edited), services=services), 120)
    assert code == 0 and out.startswith(f"{edited}: version {metadata['version']}")
    assert json.loads((edited / "bundle.json").read_text())["alert_policy"][
        "raise_threshold"] == 0.999999
