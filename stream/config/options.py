"""One configuration object for every verb: flags, then environment, then a file, then defaults.

Each option is defined once here (name, environment variable, default, help); verbs
add the options they use to their parsers with :func:`add_options` and turn the parsed
flags into a :class:`Settings` with :func:`resolve`. The configuration file is TOML with
one top-level key per option (``max_batch = 64``), named by ``--config FILE`` or
``LABQUAKE_CONFIG``; ``deploy/labquake.toml.example`` lists every option and
``docs/configuration.md`` is the reference, both generated from :data:`OPTIONS` by
``python -m stream.cli.config_reference``.

Example:
    >>> settings = resolve(None, {"LABQUAKE_MAX_BATCH": "128"})
    >>> settings.max_batch, settings.topic
    (128, 'labquake.acoustic')
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import os
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from stream.config.secret import Secret, parse_kafka_protocol, parse_sasl_mechanism, parse_secret
from stream.core.errors import LabquakeError

log = logging.getLogger(__name__)

CONFIG_ENV = "LABQUAKE_CONFIG"
BUNDLE_POLICY = "the model bundle's"
CONFIG_FLAG = "--config"
# Defaults that other layers read from here, so each is defined once.
DEFAULT_NAMESPACE = "labquake"
DEFAULT_MAX_BATCH = 64
DEFAULT_MAX_WAIT_S = 0.05


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"must be a whole number >= 1, got {number}")
    return number


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(f"must be a whole number >= 0, got {number}")
    return number


def _non_negative_float(value: str) -> float:
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"must be a finite number >= 0, got {number}")
    return number


def _probability(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"must be a probability from 0 to 1, got {number}")
    return number


def _port(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 65535:
        raise ValueError(f"must be a port from 0 to 65535 (0: any free port), got {number}")
    return number


REDIS_SCHEMES = ("redis", "rediss", "unix")
# SCAN patterns are built from the namespace: these would match other namespaces' keys.
NAMESPACE_FORBIDDEN = "*?[]\\"


def _redis_url(value: str) -> str:
    """A Redis URL redis-py reads as meant: a known scheme, a port, a numeric database."""
    try:
        parsed = urllib.parse.urlsplit(value.strip())
    except ValueError as error:
        raise ValueError(f"is malformed ({error})") from None
    if parsed.scheme not in REDIS_SCHEMES:
        raise ValueError("is not a Redis URL: it must start with redis://, rediss:// or "
                         "unix://, e.g. redis://localhost:6379/0")
    try:
        parsed.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        raise ValueError("has a port that is not a number from 0 to 65535") from None
    if parsed.scheme != "unix" and not parsed.hostname:
        raise ValueError("names no host, e.g. redis://localhost:6379/0")
    database = parsed.path.strip("/")
    if parsed.scheme != "unix" and database and not database.isdigit():
        raise ValueError(f"names database {database!r}: a Redis database is a number, "
                         "e.g. redis://localhost:6379/0")
    return value.strip()


def _bootstrap(value: str) -> str:
    """Kafka bootstrap servers: ``HOST:PORT[,HOST:PORT...]``."""
    for server in value.split(","):
        host, _, port = server.strip().rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"{server.strip()!r} is not HOST:PORT with a port from 1 to "
                             "65535, e.g. localhost:9092")
    return value


def _namespace(value: str) -> str:
    value = _text(value)
    bad = sorted({character for character in value if character in NAMESPACE_FORBIDDEN})
    if bad or not value.isprintable() or " " in value:
        raise ValueError(f"{value!r} may hold neither spaces nor {' '.join(bad) or '*?[]'} "
                         "(the names of other namespaces would match it); e.g. lab2")
    return value


@dataclasses.dataclass(frozen=True)
class Option:
    """One configuration option: its flag, environment variable, default and help.

    Args:
        name: the option's name: the ``Settings`` field and the key in the file.
        env: its environment variable.
        default: its value when no flag, variable or file sets it (``None``: off/unset).
        help: one line for ``--help`` and the reference.
        parse: text to value; raises ``ValueError`` with what is wrong.
        example: a value to show in the example file for an option without default.
        unset: what a ``None`` default means, in words.
    """

    name: str
    env: str
    default: Any
    help: str
    parse: Callable[[str], Any] = _text
    example: Any = None
    unset: str = "off"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def default_text(self) -> str:
        """The default as ``--help`` and the reference show it."""
        return self.unset if self.default is None else str(self.default)

    def convert(self, value: object, source: str) -> Any:
        """The option's value from a flag, variable or file entry named by ``source``.

        Raises:
            LabquakeError: the value is not valid for this option.
        """
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise LabquakeError(f"{source}: {self.name} must be text or a number, "
                                f"got {value!r}; see docs/configuration.md")
        try:
            return self.parse(str(value))
        except ValueError as error:
            raise LabquakeError(f"{source}: {self.name} {error}; "
                                "see docs/configuration.md") from error


OPTIONS: tuple[Option, ...] = (
    Option("bootstrap", "LABQUAKE_KAFKA_BOOTSTRAP", "localhost:9092",
           "Kafka bootstrap servers, HOST:PORT[,HOST:PORT...]", parse=_bootstrap),
    Option("redis", "LABQUAKE_REDIS_URL", "redis://localhost:6379/0",
           "Redis URL (a password goes in LABQUAKE_REDIS_PASSWORD_FILE, not here)",
           parse=_redis_url),
    Option("topic", "LABQUAKE_TOPIC", "labquake.acoustic", "Kafka topic of the acoustic chunks"),
    Option("model", "LABQUAKE_MODEL", None, "model bundle (a .lqb directory)",
           example="/var/lib/labquake/models/current.lqb", unset="the bundled model"),
    Option("namespace", "LABQUAKE_NAMESPACE", DEFAULT_NAMESPACE,
           "prefix of every Redis name; keeps deployments on one Redis apart (no spaces, "
           "no * ? [ ])", parse=_namespace),
    Option("group", "LABQUAKE_GROUP", "labquake-monitor",
           "Kafka consumer group; monitors in one group share the topic's partitions"),
    Option("max_batch", "LABQUAKE_MAX_BATCH", DEFAULT_MAX_BATCH,
           "largest inference batch, windows", parse=_positive_int),
    Option("max_wait", "LABQUAKE_MAX_WAIT", DEFAULT_MAX_WAIT_S,
           "longest a window waits for its batch, seconds", parse=_non_negative_float),
    Option("inference_threads", "LABQUAKE_INFERENCE_THREADS", 1,
           "threads TensorFlow runs each batch of the model on (0: its default, one per "
           "core); one is the fastest for batches up to 64 windows",
           parse=_non_negative_int),
    Option("stop_after_idle", "LABQUAKE_STOP_AFTER_IDLE", None,
           "exit after this many seconds without messages (batch jobs, tests)",
           parse=_non_negative_float, example=600.0, unset="run forever"),
    # The alert policy: each overrides the model bundle's setting of the same name.
    Option("alert_raise_threshold", "LABQUAKE_ALERT_RAISE_THRESHOLD", None,
           "P(failure) at or above which windows count towards raising an alert",
           parse=_probability, example=0.5, unset=BUNDLE_POLICY),
    Option("alert_clear_threshold", "LABQUAKE_ALERT_CLEAR_THRESHOLD", None,
           "P(failure) below which windows count towards withdrawing an alert",
           parse=_probability, example=0.3, unset=BUNDLE_POLICY),
    Option("alert_consecutive", "LABQUAKE_ALERT_CONSECUTIVE", None,
           "windows in a row at or above the raise threshold needed to raise",
           parse=_positive_int, example=2, unset=BUNDLE_POLICY),
    Option("alert_withdraw_after", "LABQUAKE_ALERT_WITHDRAW_AFTER", None,
           "seconds P(failure) must stay below the clear threshold before an alert is "
           "withdrawn", parse=_non_negative_float, example=0.5, unset=BUNDLE_POLICY),
    Option("alert_refractory", "LABQUAKE_ALERT_REFRACTORY", None,
           "seconds after a withdrawal before the next raise", parse=_non_negative_float,
           example=1.0, unset=BUNDLE_POLICY),
    Option("alert_update_step", "LABQUAKE_ALERT_UPDATE_STEP", None,
           "an updated alert goes out when the predicted failure time moves by more than "
           "this many seconds", parse=_non_negative_float, example=0.25, unset=BUNDLE_POLICY),
    Option("alert_warmup", "LABQUAKE_ALERT_WARMUP", None,
           "seconds at a stream's start (and after a gap) whose predictions are marked "
           "warming up", parse=_non_negative_float, example=5.0, unset=BUNDLE_POLICY),
    Option("stream_idle_timeout", "LABQUAKE_STREAM_IDLE_TIMEOUT", 600.0,
           "the monitor forgets a stream after this many seconds without a chunk, freeing "
           "its memory (its stored state continues it if it comes back; 0: never)",
           parse=_non_negative_float),
    Option("stream_retention", "LABQUAKE_STREAM_RETENTION", 604800.0,
           "Redis keeps a stream's latest prediction and recent predictions this many "
           "seconds after its last window (0: forever)", parse=_non_negative_float),
    Option("metrics_host", "LABQUAKE_METRICS_HOST", "127.0.0.1",
           "address the monitor's Prometheus endpoint binds to (0.0.0.0: every interface)"),
    Option("metrics_port", "LABQUAKE_METRICS_PORT", None,
           "port of the monitor's Prometheus endpoint /metrics (0: any free port)",
           parse=_port, example=9464),
    Option("dashboard_host", "LABQUAKE_DASHBOARD_HOST", "127.0.0.1",
           "address the dashboard binds to (0.0.0.0: every interface)"),
    Option("dashboard_port", "LABQUAKE_DASHBOARD_PORT", 8050,
           "port of the dashboard (0: any free port)", parse=_port),
    # Client security (stream.io.security turns these into client options). No verb adds
    # them as flags: passwords never go on a command line, where every user can read them.
    Option("kafka_security_protocol", "LABQUAKE_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT",
           "Kafka security protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
           parse=parse_kafka_protocol),
    Option("kafka_sasl_mechanism", "LABQUAKE_KAFKA_SASL_MECHANISM", None,
           "Kafka SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
           parse=parse_sasl_mechanism, example="SCRAM-SHA-256"),
    Option("kafka_sasl_username", "LABQUAKE_KAFKA_SASL_USERNAME", None,
           "Kafka SASL user", example="labquake-monitor"),
    Option("kafka_sasl_password", "LABQUAKE_KAFKA_SASL_PASSWORD", None,
           "Kafka SASL password (environment or file only; prefer the password file)",
           parse=parse_secret),
    Option("kafka_sasl_password_file", "LABQUAKE_KAFKA_SASL_PASSWORD_FILE", None,
           "file whose first line is the Kafka SASL password",
           example="/etc/labquake/kafka-password"),
    Option("kafka_ssl_cafile", "LABQUAKE_KAFKA_SSL_CAFILE", None,
           "PEM file of the CA that signed the Kafka brokers' certificates (default: the "
           "system's)", example="/etc/labquake/kafka-ca.pem"),
    Option("kafka_ssl_certfile", "LABQUAKE_KAFKA_SSL_CERTFILE", None,
           "PEM client certificate for Kafka mutual TLS"),
    Option("kafka_ssl_keyfile", "LABQUAKE_KAFKA_SSL_KEYFILE", None,
           "PEM private key of the Kafka client certificate"),
    Option("redis_password", "LABQUAKE_REDIS_PASSWORD", None,
           "Redis password when not in the URL (environment or file only)",
           parse=parse_secret),
    Option("redis_password_file", "LABQUAKE_REDIS_PASSWORD_FILE", None,
           "file whose first line is the Redis password (the user goes in the URL)",
           example="/etc/labquake/redis-password"),
    Option("redis_ssl_cafile", "LABQUAKE_REDIS_SSL_CAFILE", None,
           "PEM file of the CA that signed the Redis server's certificate (rediss:// URLs; "
           "default: the system's)", example="/etc/labquake/redis-ca.pem"),
    Option("redis_ssl_certfile", "LABQUAKE_REDIS_SSL_CERTFILE", None,
           "PEM client certificate for Redis mutual TLS"),
    Option("redis_ssl_keyfile", "LABQUAKE_REDIS_SSL_KEYFILE", None,
           "PEM private key of the Redis client certificate"),
)
OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}
# Option name -> the alert policy setting it overrides (stream.alert_policy).
ALERT_POLICY_OPTIONS = {
    "alert_raise_threshold": "raise_threshold", "alert_clear_threshold": "clear_threshold",
    "alert_consecutive": "consecutive", "alert_withdraw_after": "withdraw_after_s",
    "alert_refractory": "refractory_s", "alert_update_step": "update_step_s",
    "alert_warmup": "warmup_s",
}


def _default(name: str) -> Any:
    return dataclasses.field(default=OPTIONS_BY_NAME[name].default)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The resolved configuration of one run: one field per option of :data:`OPTIONS`."""

    bootstrap: str = _default("bootstrap")
    redis: str = _default("redis")
    topic: str = _default("topic")
    model: str | None = _default("model")
    namespace: str = _default("namespace")
    group: str = _default("group")
    max_batch: int = _default("max_batch")
    max_wait: float = _default("max_wait")
    inference_threads: int = _default("inference_threads")
    stop_after_idle: float | None = _default("stop_after_idle")
    alert_raise_threshold: float | None = _default("alert_raise_threshold")
    alert_clear_threshold: float | None = _default("alert_clear_threshold")
    alert_consecutive: int | None = _default("alert_consecutive")
    alert_withdraw_after: float | None = _default("alert_withdraw_after")
    alert_refractory: float | None = _default("alert_refractory")
    alert_update_step: float | None = _default("alert_update_step")
    alert_warmup: float | None = _default("alert_warmup")
    stream_idle_timeout: float = _default("stream_idle_timeout")
    stream_retention: float = _default("stream_retention")
    metrics_host: str = _default("metrics_host")
    metrics_port: int | None = _default("metrics_port")
    dashboard_host: str = _default("dashboard_host")
    dashboard_port: int = _default("dashboard_port")
    kafka_security_protocol: str = _default("kafka_security_protocol")
    kafka_sasl_mechanism: str | None = _default("kafka_sasl_mechanism")
    kafka_sasl_username: str | None = _default("kafka_sasl_username")
    kafka_sasl_password: Secret | None = _default("kafka_sasl_password")  # noqa: RUF009 - Secret is immutable
    kafka_sasl_password_file: str | None = _default("kafka_sasl_password_file")
    kafka_ssl_cafile: str | None = _default("kafka_ssl_cafile")
    kafka_ssl_certfile: str | None = _default("kafka_ssl_certfile")
    kafka_ssl_keyfile: str | None = _default("kafka_ssl_keyfile")
    redis_password: Secret | None = _default("redis_password")  # noqa: RUF009 - Secret is immutable
    redis_password_file: str | None = _default("redis_password_file")
    redis_ssl_cafile: str | None = _default("redis_ssl_cafile")
    redis_ssl_certfile: str | None = _default("redis_ssl_certfile")
    redis_ssl_keyfile: str | None = _default("redis_ssl_keyfile")

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.topic}.dlq"

    @property
    def alert_policy_overrides(self) -> dict[str, Any]:
        """The alert policy settings this configuration sets, by policy name."""
        return {setting: getattr(self, name) for name, setting in ALERT_POLICY_OPTIONS.items()
                if getattr(self, name) is not None}


def add_options(parser: argparse.ArgumentParser, *names: str) -> None:
    """Add the named options as flags, and ``--config FILE`` once; their default is
    ``None`` so ``resolve`` can tell a flag given from one left out."""
    # A second call on the same parser finds --config there already.
    with contextlib.suppress(argparse.ArgumentError):
        parser.add_argument(CONFIG_FLAG, dest="config", default=None, metavar="FILE",
                            help=f"TOML configuration file (env {CONFIG_ENV}); flags and "
                                 "environment override it")
    for name in names:
        option = OPTIONS_BY_NAME[name]
        parser.add_argument(option.flag, dest=name, default=None, metavar=name.upper(),
                            help=f"{option.help} (env {option.env}; "
                                 f"default {option.default_text})")


def read_config_file(path: str) -> dict[str, Any]:
    """The options set in a TOML configuration file, by name.

    Raises:
        LabquakeError: the file is missing or not TOML, or names an unknown option.
    """
    try:
        with open(path, "rb") as handle:
            values = tomllib.load(handle)
    except OSError as error:
        raise LabquakeError(f"cannot read configuration file {path} ({error.strerror}); "
                            f"fix {CONFIG_FLAG} / {CONFIG_ENV}") from error
    except tomllib.TOMLDecodeError as error:
        raise LabquakeError(f"configuration file {path} is not valid TOML ({error}); "
                            "see deploy/labquake.toml.example") from error
    unknown = sorted(set(values) - set(OPTIONS_BY_NAME))
    if unknown:
        raise LabquakeError(f"configuration file {path} sets unknown options {unknown}; "
                            "the options are listed in docs/configuration.md")
    return values


def resolve(args: argparse.Namespace | None = None,
            environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from flags over environment over the configuration file over defaults.

    Raises:
        LabquakeError: the file cannot be read, or a value is not valid for its option.
    """
    environ = os.environ if environ is None else environ
    path = (getattr(args, "config", None) if args is not None else None) or environ.get(
        CONFIG_ENV)
    from_file = read_config_file(path) if path else {}
    values = {}
    for option in OPTIONS:
        flag_value = getattr(args, option.name, None) if args is not None else None
        if flag_value is not None:
            values[option.name] = option.convert(flag_value, option.flag)
            if option.name == "redis" and urllib.parse.urlsplit(flag_value).password:
                log.warning("%s holds a password, which every user of this machine can read "
                            "in the process list; put it in a file named by "
                            "LABQUAKE_REDIS_PASSWORD_FILE (or in LABQUAKE_REDIS_URL, or the "
                            "configuration file) instead (docs/security.md)", option.flag)
        elif environ.get(option.env):
            values[option.name] = option.convert(environ[option.env], option.env)
        elif option.name in from_file:
            values[option.name] = option.convert(from_file[option.name], path)
        else:
            values[option.name] = option.default
    return Settings(**values)
