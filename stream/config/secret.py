"""Secrets and the security options' values, as the configuration parses them.

A password is a :class:`Secret`: printing a configuration never shows it.

Example:
    >>> parse_kafka_protocol("sasl_ssl")
    'SASL_SSL'
    >>> parse_secret("pw")
    Secret('***')
"""

from __future__ import annotations

import hmac

KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
REDACTED = "***"


class Secret:
    """A password: its ``repr`` and ``str`` are ``***``; :meth:`reveal` gives the text.

    Args:
        value: the secret text.

    Example:
        >>> password = Secret("hunter2")
        >>> password, str(password), password.reveal()
        (Secret('***'), '***', 'hunter2')
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret text, to hand to a client library and nowhere else."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{REDACTED}')"

    def __str__(self) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(Secret)


def parse_kafka_protocol(value: str) -> str:
    """A Kafka security protocol, in capitals; ``ValueError`` for an unknown one."""
    protocol = value.strip().upper()
    if protocol not in KAFKA_PROTOCOLS:
        raise ValueError(f"must be one of {', '.join(KAFKA_PROTOCOLS)}, got {value!r}")
    return protocol


def parse_sasl_mechanism(value: str) -> str:
    """A SASL mechanism kafka-python speaks with a user and password, in capitals."""
    mechanism = value.strip().upper()
    if mechanism not in SASL_MECHANISMS:
        raise ValueError(f"must be one of {', '.join(SASL_MECHANISMS)}, got {value!r}")
    return mechanism


def parse_secret(value: str) -> Secret:
    """A password from the environment or the configuration file."""
    if not value:
        raise ValueError("must not be empty")
    return Secret(value)
