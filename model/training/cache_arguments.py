"""The flags of the record cache, the feature cache and the worker processes, shared by
``labquake train`` and ``labquake evaluate``."""

from __future__ import annotations

import argparse
from typing import Any

from stream.core.errors import LabquakeError


def add_cache_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the record cache, the feature cache and the worker processes (also used by
    ``labquake evaluate``).

    Example:
        >>> add_cache_arguments(argparse.ArgumentParser())
    """
    parser.add_argument("--cache", metavar="DIR",
                        help="record cache root: CSV/.zip/.npz records are converted there "
                             "once (raw int16 samples, float32 labels) and read from there "
                             "after (default $LABQUAKE_CACHE_DIR/records, i.e. "
                             "~/.cache/labquake/records, for files of 256 MiB or more)")
    parser.add_argument("--no-cache", action="store_true",
                        help="parse the record files every time; no record or feature cache")
    parser.add_argument("--feature-cache", metavar="DIR",
                        help="where window features are saved as they are computed, so a run "
                             "that stops resumes (default: inside the record cache)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="processes extracting features of cached records and test "
                             "segments (default: the number of cores)")


def check_cache_arguments(args: argparse.Namespace) -> None:
    """Refuse cache flags that contradict each other or the data source.

    Example:
        >>> check_cache_arguments(argparse.Namespace(no_cache=False, cache=None,
        ...                                          feature_cache=None, workers=None))
    """
    from model.data.parallel import check_workers

    check_workers(args.workers)
    given = [flag for flag, value in (("--cache", args.cache),
                                      ("--feature-cache", args.feature_cache)) if value]
    if args.no_cache and given:
        raise LabquakeError(f"--no-cache contradicts {' and '.join(given)}; drop one or the "
                            "other")
    if getattr(args, "simulate", None) is not None and given:
        raise LabquakeError(f"{' and '.join(given)} apply to --data files; a --simulate "
                            "record is streamed from the simulator")


def cached_windows_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`model.training.dataset.file_windows` from the cache flags.

    Example:
        >>> cached_windows_options(args)["use_cache"]  # doctest: +SKIP
        True
    """
    from model.data.parallel import check_workers

    return {"use_cache": not args.no_cache, "cache_root": args.cache,
            "convert_any_size": bool(args.cache or args.feature_cache),
            "feature_cache": args.feature_cache, "workers": check_workers(args.workers)}
