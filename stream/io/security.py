"""Client security for Kafka and Redis: credentials and TLS from the configuration.

The one place that turns the resolved configuration (:class:`~stream.config.options.Settings`:
flags, environment, configuration file) into the security options of kafka-python and
redis-py clients. Every verb that talks to Kafka or Redis asks here.

Kafka (each option also has the environment variable ``LABQUAKE_<NAME in capitals>``):

| option                       | kafka-python            | values                            |
| ---------------------------- | ----------------------- | --------------------------------- |
| ``kafka_security_protocol``  | ``security_protocol``   | PLAINTEXT (default), SSL,         |
|                              |                         | SASL_PLAINTEXT, SASL_SSL          |
| ``kafka_sasl_mechanism``     | ``sasl_mechanism``      | PLAIN, SCRAM-SHA-256/512          |
| ``kafka_sasl_username``      | ``sasl_plain_username`` | the user                          |
| ``kafka_sasl_password``      | ``sasl_plain_password`` | environment or file only          |
| ``kafka_sasl_password_file`` | ``sasl_plain_password`` | a file holding the password       |
| ``kafka_ssl_cafile``         | ``ssl_cafile``          | PEM CA that signed the brokers    |
| ``kafka_ssl_certfile``       | ``ssl_certfile``        | PEM client certificate (mTLS)     |
| ``kafka_ssl_keyfile``        | ``ssl_keyfile``         | PEM client key (mTLS)             |

Redis: the URL says it: ``rediss://`` for TLS, ``rediss://USER:PASSWORD@host:6380/0``
for an ACL user. The password may come instead from ``redis_password`` (environment or
file only) or ``redis_password_file``; ``redis_ssl_cafile``, ``redis_ssl_certfile`` and
``redis_ssl_keyfile`` name the CA bundle and a client certificate for ``rediss://``.
Host names are checked against the server certificates on both.

Secrets: passwords are :class:`Secret` objects, whose ``repr`` and ``str`` are ``***``,
so printing a configuration never shows them; a password file holds the password on its
first line. :func:`redact_url` hides the password of a URL in messages. Passwords are
never flags: a command line is visible to every user of the machine.

Example:
    >>> from stream.config.options import Settings
    >>> settings = Settings(kafka_security_protocol="SASL_SSL",
    ...                     kafka_sasl_mechanism="SCRAM-SHA-256", kafka_sasl_username="rig",
    ...                     kafka_sasl_password=Secret("pw"))
    >>> options = kafka_client_options(settings)
    >>> options["security_protocol"], options["sasl_plain_password"]
    ('SASL_SSL', 'pw')
    >>> settings.kafka_sasl_password
    Secret('***')
    >>> redact_url("rediss://alice:pw@redis.lab:6380/0")
    'rediss://alice:***@redis.lab:6380/0'
"""

from __future__ import annotations

import logging
import os
import stat
import urllib.parse
from typing import TYPE_CHECKING, Any

from stream.config.secret import REDACTED, Secret
from stream.core.errors import LabquakeError

if TYPE_CHECKING:
    from stream.config.options import Settings

log = logging.getLogger(__name__)

# A password file is small; anything larger is the wrong file.
MAX_SECRET_FILE_BYTES = 4096


def read_secret_file(path: str, what: str) -> Secret:
    """The secret on the first line of ``path`` (the line break dropped).

    A file that others may read is used, with a warning: the secret is only as safe as
    the file.

    Args:
        path: the file.
        what: the option's name, for messages.

    Raises:
        LabquakeError: the file cannot be read, is too large or holds no secret.
    """
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            data = handle.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as error:
        raise LabquakeError(f"{what}: cannot read {path} ({error.strerror}); "
                            "give a file this user can read") from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise LabquakeError(f"{what}: {path} is larger than {MAX_SECRET_FILE_BYTES} bytes; "
                            "a password file holds the password on one line")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise LabquakeError(f"{what}: {path} is not UTF-8 text") from None
    lines = text.splitlines()
    if not lines or not lines[0]:
        raise LabquakeError(f"{what}: {path} is empty; write the password on its first line")
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("%s: %s can be read by other users; chmod 600 it", what, path)
    return Secret(lines[0])


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs).

    Example:
        >>> redact_url("redis://:pw@localhost:6379/0"), redact_url("redis://localhost")
        ('redis://:***@localhost:6379/0', 'redis://localhost')
    """
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL we can take apart: show none of it
        return REDACTED
    if password is None:
        return url
    user_info, _, host = parts.netloc.rpartition("@")
    user = user_info.partition(":")[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{host}"))


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """kafka-python keyword options for the configured security protocol and credentials.

    Args:
        settings: the resolved configuration.

    Returns:
        Options for ``KafkaConsumer``, ``KafkaProducer`` and ``KafkaAdminClient``.

    Raises:
        LabquakeError: an incomplete or contradictory security configuration, or a file
            that cannot be read.
    """
    protocol = settings.kafka_security_protocol
    sasl = protocol.startswith("SASL_")
    tls = protocol in ("SSL", "SASL_SSL")
    password = _one_password(settings.kafka_sasl_password, settings.kafka_sasl_password_file,
                             "kafka_sasl_password")
    sasl_given = {"kafka_sasl_mechanism": settings.kafka_sasl_mechanism,
                  "kafka_sasl_username": settings.kafka_sasl_username,
                  "kafka_sasl_password": password}
    tls_files = {"kafka_ssl_cafile": settings.kafka_ssl_cafile,
                 "kafka_ssl_certfile": settings.kafka_ssl_certfile,
                 "kafka_ssl_keyfile": settings.kafka_ssl_keyfile}
    if sasl:
        missing = [name for name, value in sasl_given.items() if value is None]
        if missing:
            raise LabquakeError(f"Kafka security protocol {protocol} needs "
                                f"{_names(missing)}; set them or choose another protocol")
    else:
        _refuse_unused(sasl_given, f"Kafka security protocol {protocol}",
                       "SASL_PLAINTEXT or SASL_SSL")
    if not tls:
        _refuse_unused(tls_files, f"Kafka security protocol {protocol}", "SSL or SASL_SSL")
    if settings.kafka_ssl_keyfile and not settings.kafka_ssl_certfile:
        raise LabquakeError(f"{_names(['kafka_ssl_keyfile'])} needs "
                            f"{_names(['kafka_ssl_certfile'])}, the certificate of that key")
    options: dict[str, Any] = {"security_protocol": protocol}
    if sasl:
        if protocol == "SASL_PLAINTEXT":
            log.warning("Kafka credentials go to the broker without TLS (SASL_PLAINTEXT); "
                        "use SASL_SSL outside a trusted network")
        options.update(sasl_mechanism=settings.kafka_sasl_mechanism,
                       sasl_plain_username=settings.kafka_sasl_username,
                       sasl_plain_password=password.reveal())  # type: ignore[union-attr]
    for name, option in (("kafka_ssl_cafile", "ssl_cafile"),
                         ("kafka_ssl_certfile", "ssl_certfile"),
                         ("kafka_ssl_keyfile", "ssl_keyfile")):
        if tls_files[name]:
            options[option] = _readable_file(tls_files[name], name)
    return options


def redis_client_options(settings: Settings) -> dict[str, Any]:
    """redis-py keyword options for ``redis.Redis.from_url(settings.redis, **options)``.

    Args:
        settings: the resolved configuration.

    Returns:
        The password (when not in the URL) and the TLS files of a ``rediss://`` URL.

    Raises:
        LabquakeError: a password given twice, TLS files for a URL without TLS, or a
            file that cannot be read.
    """
    try:
        parts = urllib.parse.urlsplit(settings.redis)
        url_password = parts.password
    except ValueError as error:
        raise LabquakeError(f"Redis URL {redact_url(settings.redis)} is malformed ({error}); "
                            "write it as redis[s]://[USER:PASSWORD@]HOST:PORT/DB") from None
    password = _one_password(settings.redis_password, settings.redis_password_file,
                             "redis_password")
    options: dict[str, Any] = {}
    if password is not None:
        if url_password is not None:
            raise LabquakeError(f"the Redis password is in the URL and in "
                                f"{_names(['redis_password', 'redis_password_file'])}; "
                                "give it once")
        options["password"] = password.reveal()
    tls_files = {"redis_ssl_cafile": settings.redis_ssl_cafile,
                 "redis_ssl_certfile": settings.redis_ssl_certfile,
                 "redis_ssl_keyfile": settings.redis_ssl_keyfile}
    if parts.scheme != "rediss":
        _refuse_unused(tls_files, f"the Redis URL {redact_url(settings.redis)}",
                       "a rediss:// URL (Redis over TLS)")
        return options
    if settings.redis_ssl_keyfile and not settings.redis_ssl_certfile:
        raise LabquakeError(f"{_names(['redis_ssl_keyfile'])} needs "
                            f"{_names(['redis_ssl_certfile'])}, the certificate of that key")
    options["ssl_check_hostname"] = True
    for name, option in (("redis_ssl_cafile", "ssl_ca_certs"),
                         ("redis_ssl_certfile", "ssl_certfile"),
                         ("redis_ssl_keyfile", "ssl_keyfile")):
        if tls_files[name]:
            options[option] = _readable_file(tls_files[name], name)
    return options


def describe_kafka(settings: Settings) -> str:
    """How the clients reach Kafka, for messages: servers, protocol and user, no secret.

    Example:
        >>> from stream.config.options import Settings
        >>> describe_kafka(Settings())
        'localhost:9092 (PLAINTEXT)'
    """
    user = f", user {settings.kafka_sasl_username}" if settings.kafka_sasl_username else ""
    return f"{settings.bootstrap} ({settings.kafka_security_protocol}{user})"


def _one_password(password: Secret | None, password_file: str | None,
                  name: str) -> Secret | None:
    if password is not None and password_file is not None:
        raise LabquakeError(f"{_names([name, name + '_file'])} are both set; give the "
                            "password once")
    if password_file is not None:
        return read_secret_file(password_file, _names([name + "_file"]))
    return password


def _refuse_unused(given: dict[str, object], context: str, needed: str) -> None:
    unused = [name for name, value in given.items() if value is not None]
    if unused:
        raise LabquakeError(f"{_names(unused)} set, but {context} does not use them; "
                            f"they go with {needed}")


def _readable_file(path: str, name: str) -> str:
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise LabquakeError(f"{_names([name])}: {path} is not a readable file; check the path")
    return path


def _names(names: list[str]) -> str:
    """Options as the user sets them: the environment variables (the configuration file
    key is the option's name in lower case)."""
    from stream.config.options import OPTIONS_BY_NAME

    return ", ".join(OPTIONS_BY_NAME[name].env for name in names)
