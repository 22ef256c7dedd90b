"""``labquake services up|down|status``: a local Kafka broker and Redis server.

For development, tests and demos on a machine without Docker. Kafka is the real Apache
Kafka broker (KRaft, combined broker and controller), assembled from its Maven Central
artifacts into a cache folder and started with the machine's Java; Redis is the system's
``redis-server``. Both keep their data under a state folder and run detached, so they
outlive the command that started them; ``down`` stops them.

Example:
    >>> from stream import services
    >>> layout = services.Layout.from_environment()
    >>> services.up(layout)          # doctest: +SKIP
    >>> services.status(layout)      # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stream.core.errors import LabquakeError, ServiceUnavailable
from stream.io.kafka_logging import quiet_kafka_logs

KAFKA_VERSION = "3.9.1"
SCALA_VERSION = "2.13"
# Kafka 3.x logs through SLF4J 1.7 to log4j 1.x; reload4j is the maintained log4j 1.x.
SLF4J_BINDING = ("org.slf4j", "slf4j-reload4j", "1.7.36")
KAFKA_HEAP = "-Xmx768m"
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0

POM_TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>labquake</groupId>
  <artifactId>labquake-kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>{log_group}</groupId>
      <artifactId>{log_artifact}</artifactId>
      <version>{log_version}</version>
    </dependency>
  </dependencies>
</project>
"""

SERVER_PROPERTIES_TEMPLATE = """# written by labquake services; edits are overwritten at each `up`
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{kafka_port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://{host}:{kafka_port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={log_dir}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
message.max.bytes=4194304
log.retention.hours=24
log.segment.bytes=268435456
"""

LOG4J_PROPERTIES = """log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File={log_file}
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
"""


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the services keep their files, and the ports they listen on.

    Args:
        cache_dir: downloaded broker jars (kept across ``down``; safe to delete).
        state_dir: data, logs, pid files and configuration of the running services.
        kafka_port: the broker's client port.
        controller_port: the KRaft controller's port.
        redis_port: the Redis port.
        host: the host name advertised to Kafka clients.
    """

    cache_dir: Path
    state_dir: Path
    kafka_port: int = 9092
    controller_port: int = 9093
    redis_port: int = 6379
    host: str = "localhost"

    @classmethod
    def from_environment(cls, **overrides: object) -> Layout:
        """The layout from ``LABQUAKE_CACHE_DIR`` / ``LABQUAKE_STATE_DIR`` (else under
        ``~/.cache/labquake`` and ``~/.local/state/labquake``), the ports from
        ``LABQUAKE_KAFKA_PORT`` / ``LABQUAKE_CONTROLLER_PORT`` / ``LABQUAKE_REDIS_PORT``,
        and the given overrides."""
        home = Path.home()
        values: dict[str, object] = {
            "cache_dir": Path(os.environ.get("LABQUAKE_CACHE_DIR") or home / ".cache/labquake"),
            "state_dir": Path(
                os.environ.get("LABQUAKE_STATE_DIR") or home / ".local/state/labquake"
            ),
        }
        for name, variable in (("kafka_port", "LABQUAKE_KAFKA_PORT"),
                               ("controller_port", "LABQUAKE_CONTROLLER_PORT"),
                               ("redis_port", "LABQUAKE_REDIS_PORT")):
            if os.environ.get(variable):
                values[name] = _port(os.environ[variable], variable)
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)  # type: ignore[arg-type]

    @property
    def jars_dir(self) -> Path:
        return self.cache_dir / f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}" / "libs"

    @property
    def kafka_dir(self) -> Path:
        return self.state_dir / "kafka"

    @property
    def redis_dir(self) -> Path:
        return self.state_dir / "redis"

    @property
    def kafka_bootstrap(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://{self.host}:{self.redis_port}/0"


def _port(text: str, source: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise LabquakeError(f"{source}={text!r} is not a port; give a number from 1 to 65535")
    return port


# --- prerequisites ---------------------------------------------------------------------

def _require(program: str, install_hint: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise ServiceUnavailable(f"'{program}' is not installed; {install_hint}")
    return path


def _java() -> str:
    return _require(
        "java", "install Java 17 or newer (Debian: apt-get install openjdk-17-jre-headless)"
    )


# --- process bookkeeping ----------------------------------------------------------------

def _read_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive for our purposes.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _start_detached(argv: list[str], log_file: Path, pid_file: Path,
                    env: dict[str, str] | None = None) -> int:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env, close_fds=True,
        )
    pid_file.write_text(f"{process.pid}\n")
    return process.pid


def _stop(pid_file: Path, name: str) -> bool:
    """SIGTERM, wait, then SIGKILL. Returns whether a process was running."""
    pid = _read_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        print(f"{name} did not stop within {STOP_TIMEOUT_S:.0f} s; killing it", file=sys.stderr)
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.1)
    pid_file.unlink(missing_ok=True)
    return True


# --- Kafka ------------------------------------------------------------------------------

def resolve_kafka_jars(layout: Layout) -> Path:
    """Download the broker's jars and runtime dependencies from Maven Central, once.

    Returns the folder holding them. Runs ``mvn dependency:copy-dependencies`` on a
    generated POM; Maven keeps its own cache under ``~/.m2``.
    """
    marker = layout.jars_dir / ".complete"
    if marker.exists():
        return layout.jars_dir
    mvn = _require("mvn", "install Maven (Debian: apt-get install maven)")
    work = layout.cache_dir / "maven-work"
    work.mkdir(parents=True, exist_ok=True)
    group, artifact, version = SLF4J_BINDING
    (work / "pom.xml").write_text(POM_TEMPLATE.format(
        scala=SCALA_VERSION, kafka=KAFKA_VERSION,
        log_group=group, log_artifact=artifact, log_version=version,
    ))
    staging = layout.jars_dir.with_name("libs.partial")
    shutil.rmtree(staging, ignore_errors=True)
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(work / "pom.xml"), "dependency:copy-dependencies",
         f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
        raise ServiceUnavailable(
            f"could not resolve org.apache.kafka:kafka_{SCALA_VERSION}:{KAFKA_VERSION} from "
            f"Maven Central (mvn exit {result.returncode}): {' | '.join(tail)}; "
            "check that Maven Central is reachable"
        )
    shutil.rmtree(layout.jars_dir, ignore_errors=True)
    staging.rename(layout.jars_dir)
    marker.write_text(KAFKA_VERSION + "\n")
    return layout.jars_dir


def _kafka_java_command(layout: Layout, main_class: str, *args: str) -> list[str]:
    config_dir = layout.kafka_dir / "config"
    return [
        _java(), KAFKA_HEAP, "-XX:+UseG1GC", "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{config_dir / 'log4j.properties'}",
        "-cp", str(layout.jars_dir / "*"), main_class, *args,
    ]


def _write_kafka_config(layout: Layout) -> Path:
    config_dir = layout.kafka_dir / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    properties = config_dir / "server.properties"
    properties.write_text(SERVER_PROPERTIES_TEMPLATE.format(
        kafka_port=layout.kafka_port, controller_port=layout.controller_port,
        host=layout.host, log_dir=layout.kafka_dir / "data",
    ))
    (config_dir / "log4j.properties").write_text(
        LOG4J_PROPERTIES.format(log_file=layout.kafka_dir / "logs" / "server.log")
    )
    return properties


def _format_kafka_storage(layout: Layout, properties: Path) -> None:
    if (layout.kafka_dir / "data" / "meta.properties").exists():
        return
    cluster_id = _cluster_id()
    result = subprocess.run(
        _kafka_java_command(layout, "kafka.tools.StorageTool", "format",
                            "-t", cluster_id, "-c", str(properties)),
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise ServiceUnavailable(
            f"formatting the Kafka storage in {layout.kafka_dir / 'data'} failed: "
            f"{(result.stdout + result.stderr).strip().splitlines()[-1:]}"
        )


def _cluster_id() -> str:
    # The same encoding as StorageTool random-uuid: a URL-safe base64 UUID without padding.
    import base64

    # One in 64 of those starts with "-", which kafka-storage's parser takes for an option:
    # draw again until it does not.
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def kafka_ready(bootstrap: str, timeout_s: float = 2.0,
                client_options: Mapping[str, Any] | None = None) -> bool:
    """Whether a broker at ``bootstrap`` answers a metadata request.

    ``client_options``: kafka-python security options
    (``stream.io.security.kafka_client_options``); a broker that refuses them does not answer.
    """
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    with quiet_kafka_logs():
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000) + 1000,
                bootstrap_timeout_ms=int(timeout_s * 1000),
                connections_max_idle_ms=int(timeout_s * 1000) + 2000,
                group_id=None, enable_auto_commit=False, **(client_options or {}),
            )
        except (KafkaError, ValueError, OSError):
            return False
        try:
            consumer.topics()
            return True
        except (KafkaError, OSError):
            return False
        finally:
            consumer.close()


def start_kafka(layout: Layout) -> str:
    """Start the broker unless it runs; return a line saying what happened."""
    pid_file = layout.kafka_dir / "kafka.pid"
    pid = _read_pid(pid_file)
    if pid is not None and kafka_ready(layout.kafka_bootstrap):
        return f"kafka {KAFKA_VERSION} already running (pid {pid}) on {layout.kafka_bootstrap}"
    if pid is None:
        for port in (layout.kafka_port, layout.controller_port):
            if _port_open(port):
                raise ServiceUnavailable(
                    f"port {port} is taken by another program; stop it or choose other "
                    "ports with --kafka-port/--controller-port"
                )
        _java()
        resolve_kafka_jars(layout)
        properties = _write_kafka_config(layout)
        _format_kafka_storage(layout, properties)
        pid = _start_detached(
            _kafka_java_command(layout, "kafka.Kafka", str(properties)),
            layout.kafka_dir / "logs" / "stdout.log", pid_file,
        )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if not _alive(pid):
            raise ServiceUnavailable(
                f"the Kafka broker exited during start; see {layout.kafka_dir / 'logs'}"
            )
        if kafka_ready(layout.kafka_bootstrap):
            return f"kafka {KAFKA_VERSION} started (pid {pid}) on {layout.kafka_bootstrap}"
        time.sleep(0.5)
    raise ServiceUnavailable(
        f"the Kafka broker did not answer on {layout.kafka_bootstrap} within "
        f"{READY_TIMEOUT_S:.0f} s; see {layout.kafka_dir / 'logs'}"
    )


# --- Redis ------------------------------------------------------------------------------

def redis_ready(url: str, client_options: Mapping[str, Any] | None = None) -> bool:
    """Whether a Redis server at ``url`` answers PING (with ``client_options``, the
    redis-py security options of ``stream.io.security.redis_client_options``)."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0,
                                      **(client_options or {}))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


def start_redis(layout: Layout) -> str:
    """Start redis-server unless it runs; return a line saying what happened."""
    pid_file = layout.redis_dir / "redis.pid"
    pid = _read_pid(pid_file)
    if pid is not None and redis_ready(layout.redis_url):
        version = _redis_version(layout)
        return f"redis {version} already running (pid {pid}) on port {layout.redis_port}"
    if pid is None:
        server = _require("redis-server", "install Redis (Debian: apt-get install redis-server)")
        if _port_open(layout.redis_port):
            raise ServiceUnavailable(
                f"port {layout.redis_port} is taken by another program; stop it or choose "
                "another with --redis-port"
            )
        (layout.redis_dir / "data").mkdir(parents=True, exist_ok=True)
        pid = _start_detached(
            [server, "--port", str(layout.redis_port), "--bind", "127.0.0.1",
             "--dir", str(layout.redis_dir / "data"), "--daemonize", "no",
             "--appendonly", "yes", "--save", ""],
            layout.redis_dir / "redis.log", pid_file,
        )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if not _alive(pid):
            raise ServiceUnavailable(
                f"redis-server exited during start; see {layout.redis_dir / 'redis.log'}"
            )
        if redis_ready(layout.redis_url):
            return f"redis {_redis_version(layout)} started (pid {pid}) on port {layout.redis_port}"
        time.sleep(0.2)
    raise ServiceUnavailable(f"redis-server did not answer PING within {READY_TIMEOUT_S:.0f} s")


def _redis_version(layout: Layout) -> str:
    import redis

    try:
        client = redis.Redis.from_url(layout.redis_url, socket_timeout=1.0)
        try:
            return str(client.info("server").get("redis_version", "?"))
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return "?"


# --- the verbs --------------------------------------------------------------------------

def up(layout: Layout) -> list[str]:
    """Start Kafka and Redis (each only if not running); return one line per service."""
    return [start_redis(layout), start_kafka(layout)]


def stop_kafka(layout: Layout) -> bool:
    """Stop the broker cleanly (its data stays); return whether it was running.

    With :func:`start_kafka`, what the fault tests use for a broker outage.
    """
    return _stop(layout.kafka_dir / "kafka.pid", "kafka")


def stop_redis(layout: Layout) -> bool:
    """Stop redis-server cleanly (its data stays); return whether it was running."""
    return _stop(layout.redis_dir / "redis.pid", "redis")


def down(layout: Layout) -> list[str]:
    """Stop both services cleanly; return one line per service."""
    lines = []
    for name, stop in (("kafka", stop_kafka), ("redis", stop_redis)):
        lines.append(f"{name} {'stopped' if stop(layout) else 'was not running'}")
    return lines


def status(layout: Layout) -> dict[str, dict[str, object]]:
    """What runs: per service its pid, port, version and whether it answers."""
    kafka_pid = _read_pid(layout.kafka_dir / "kafka.pid")
    redis_pid = _read_pid(layout.redis_dir / "redis.pid")
    redis_answers = redis_pid is not None and redis_ready(layout.redis_url)
    return {
        "kafka": {
            "running": kafka_pid is not None,
            "answers": kafka_pid is not None and kafka_ready(layout.kafka_bootstrap),
            "pid": kafka_pid, "version": KAFKA_VERSION,
            "bootstrap": layout.kafka_bootstrap, "controller_port": layout.controller_port,
            "jars_cached": (layout.jars_dir / ".complete").exists(),
        },
        "redis": {
            "running": redis_pid is not None,
            "answers": redis_answers,
            "pid": redis_pid,
            "version": _redis_version(layout) if redis_answers else None,
            "url": layout.redis_url,
        },
        "state_dir": {"path": str(layout.state_dir)},
    }


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "services", help="start, stop or show a local Kafka broker and Redis server",
        description=(
            "A local single-node Kafka (the real broker, KRaft mode, jars from Maven "
            "Central) and redis-server, for development, tests and demos. Data lives "
            "under $LABQUAKE_STATE_DIR (default ~/.local/state/labquake), jars under "
            "$LABQUAKE_CACHE_DIR (default ~/.cache/labquake)."
        ),
    )
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--kafka-port", type=int, default=None, help="broker port (9092)")
    parser.add_argument("--controller-port", type=int, default=None,
                        help="KRaft controller port (9093)")
    parser.add_argument("--redis-port", type=int, default=None, help="Redis port (6379)")
    parser.add_argument("--json", action="store_true", help="status as one JSON object")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    for port in (args.kafka_port, args.controller_port, args.redis_port):
        if port is not None:
            _port(str(port), "port")
    layout = Layout.from_environment(
        kafka_port=args.kafka_port, controller_port=args.controller_port,
        redis_port=args.redis_port,
    )
    if args.action == "up":
        for line in up(layout):
            print(line)
    elif args.action == "down":
        for line in down(layout):
            print(line)
    else:
        report = status(layout)
        if args.json:
            print(json.dumps(report))
        else:
            for name, fields in report.items():
                details = " ".join(f"{key}={value}" for key, value in fields.items())
                print(f"{name:<9} {details}")
        if not (report["kafka"]["answers"] and report["redis"]["answers"]):
            return 1
    return 0
