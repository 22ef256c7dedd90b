"""The ``labquake`` command: one verb per job, each defined in the module that does it.

Each verb module exposes ``add_parser(subparsers) -> argparse.ArgumentParser`` and sets
``handler`` (a function taking the parsed ``argparse.Namespace`` and returning an exit
code) as a default on its parser. Modules import heavy libraries (TensorFlow, SciPy)
inside their handlers so that ``labquake --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import sys

from stream.core.errors import LabquakeError

# verb -> module that defines it; order is the order ``--help`` lists them in.
VERB_MODULES: dict[str, str] = {
    "simulate": "stream.cli.simulate",
    "label": "stream.cli.label",
    "train": "model.training.train",
    "evaluate": "model.evaluation.evaluate",
    "replay": "stream.app.replay",
    "produce": "stream.io.instrument",
    "monitor": "stream.app.monitor",
    "alerts": "stream.app.subscriber",
    "predict": "model.evaluation.predict",
    "stamp": "stream.cli.stamp",
    "compare": "model.evaluation.compare",
    "dashboard": "stream.app.dashboard",
    "bench": "stream.tools.bench",
    "soak": "stream.tools.soak",
    "services": "stream.tools.services",
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line and exits 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _available_verbs() -> dict[str, str]:
    """The verbs whose modules are present in this installation."""
    found = {}
    for verb, module in VERB_MODULES.items():
        if importlib.util.find_spec(module) is not None:
            found[verb] = module
    return found


class JsonLogFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="labquake",
        description="Streaming real-time monitor that warns before a laboratory fault fails.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    parser.add_argument("--log-format", choices=("text", "json"),
                        default=os.environ.get("LABQUAKE_LOG_FORMAT", "text"),
                        help="text, or one JSON object a line for log collectors "
                             "(env LABQUAKE_LOG_FORMAT; default text)")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    subparsers.required = True
    for module in _available_verbs().values():
        importlib.import_module(module).add_parser(subparsers)
    return parser


# The verbs that load a model: TensorFlow is imported before they run (see main).
MODEL_VERBS = frozenset({"train", "evaluate", "replay", "monitor", "predict", "stamp",
                         "compare"})


def _import_tensorflow_quietly() -> None:
    """Import Keras (and TensorFlow) with the process's C-level stderr closed.

    TensorFlow's C++ start-up lines (oneDNN, no CUDA driver, 'failed call to cuInit') go
    straight to file descriptor 2, some before any setting is read, and read as faults
    on a machine without a GPU. Python's own stderr is untouched; a failing import
    still raises, and ``-v`` shows the lines.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import keras  # noqa: F401 - imported here for its side effect, once
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except LabquakeError as error:  # a flag's type that checks more than argparse does
        print(f"labquake: error: {error}", file=sys.stderr)
        return 2
    # TensorFlow's C++ log (no CUDA here, CPU features) is not for operators; -v shows it.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if args.verbose else "3")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter() if args.log_format == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # --quiet (the long verbs): warnings and errors only; an explicit -v still wins.
    quiet = getattr(args, "quiet", False) and not args.verbose
    logging.basicConfig(level=logging.DEBUG if args.verbose else
                        logging.WARNING if quiet else logging.INFO,
                        handlers=[handler], force=True)
    if not args.verbose:
        # kafka-python logs every connection at INFO; an operator needs its warnings only.
        logging.getLogger("kafka").setLevel(logging.WARNING)
    try:
        if args.verb in MODEL_VERBS and not args.verbose:
            _import_tensorflow_quietly()
        return int(args.handler(args) or 0)
    except LabquakeError as error:
        print(f"labquake {args.verb}: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
