"""One configuration object for every verb: flags, then environment, then defaults.

Each option is defined once here (name, environment variable, default, help); verbs
add the options they use to their parsers with :func:`add_options` and turn the parsed
flags into a :class:`Settings` with :func:`resolve`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class Option:
    """One configuration option: its flag, environment variable, default and help."""

    name: str
    env: str
    default: str | None
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    Option("bootstrap", "LABQUAKE_KAFKA_BOOTSTRAP", "localhost:9092",
           "Kafka bootstrap servers, HOST:PORT[,HOST:PORT...]"),
    Option("redis", "LABQUAKE_REDIS_URL", "redis://localhost:6379/0", "Redis URL"),
    Option("topic", "LABQUAKE_TOPIC", "labquake.acoustic", "Kafka topic of the acoustic chunks"),
    Option("model", "LABQUAKE_MODEL", None, "model bundle (default: the bundled model)"),
)
OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}


@dataclasses.dataclass(frozen=True)
class Settings:
    """The resolved configuration of one run."""

    bootstrap: str = "localhost:9092"
    redis: str = "redis://localhost:6379/0"
    topic: str = "labquake.acoustic"
    model: str | None = None

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.topic}.dlq"


def add_options(parser: argparse.ArgumentParser, *names: str) -> None:
    """Add the named options as flags; their default is ``None`` so ``resolve`` can tell
    a flag given from one left out."""
    for name in names:
        option = OPTIONS_BY_NAME[name]
        default = f" (env {option.env}; default {option.default or 'bundled'})"
        parser.add_argument(option.flag, dest=name, default=None, help=option.help + default)


def resolve(args: argparse.Namespace | None = None,
            environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from flags over environment over defaults."""
    environ = os.environ if environ is None else environ
    values = {}
    for option in OPTIONS:
        flag_value = getattr(args, option.name, None) if args is not None else None
        if flag_value is not None:
            values[option.name] = flag_value
        elif environ.get(option.env):
            values[option.name] = environ[option.env]
        else:
            values[option.name] = option.default
    return Settings(**values)
