"""Errors a user can meet: each carries one line that says what happened and what to do."""


class LabquakeError(Exception):
    """A problem with the user's input, files or environment.

    The CLI prints ``str(error)`` as one line on stderr and exits with ``exit_code``.
    The message says what is wrong and what to do next.
    """

    exit_code = 2


class ServiceUnavailable(LabquakeError):
    """Kafka or Redis cannot be reached (or cannot be started)."""

    exit_code = 3
