"""The ``labquake label`` verb: time-to-failure labels from a lab table's shear stress.

Reads a CSV table with a time column and a stress column, finds each failure's start and
end (:mod:`model.data.labels`), and writes the table again with two columns added:
``time_to_failure`` and ``time_to_failure_end``. Output: a one-line summary on stdout, or
one JSON object with ``--json``.

Example:
    labquake label --data rows.csv --out labelled.csv
    labquake label --data rig.csv --out labelled.csv --time-column t_s \\
        --stress-column tau_MPa --min-drop 0.2 --smooth 0.05
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from stream.config.arguments import positive_number

if TYPE_CHECKING:
    from model.data.labels import LabelledFile

VERB = "label"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``label`` verb and its flags.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> _ = add_parser(parser.add_subparsers())
    """
    # Defaults are repeated as literals so '--help' does not import NumPy; a unit test
    # checks they equal model.data.labels' constants.
    parser = subparsers.add_parser(
        VERB, help="time-to-failure labels from a lab table's shear-stress column",
        description="Find each failure (a stress drop) in a CSV table's stress column: it "
                    "starts at the peak stress and ends at the trough. Write the table "
                    "again with time_to_failure (seconds to the next start) and "
                    "time_to_failure_end (seconds to the next end); both are empty where "
                    "no next failure is known. A drop is a failure when it is at least "
                    "--min-drop, by default half the stress's swing (5th to 95th "
                    "percentile); smaller drops (slow slip, precursors) never are. See "
                    "docs/lab-data.md.")
    parser.add_argument("--data", required=True, metavar="CSV",
                        help="the table: a CSV file with a header row")
    parser.add_argument("--out", required=True, metavar="CSV",
                        help="the labelled table to write (written atomically)")
    parser.add_argument("--time-column", default="Time", metavar="NAME",
                        help="the column of times in seconds (default Time)")
    parser.add_argument("--stress-column", default="ShearStress", metavar="NAME",
                        help="the column of shear stress (default ShearStress)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--min-drop", type=positive_number, metavar="STRESS",
                      help="the smallest drop that is a failure, in the stress column's "
                           "unit (e.g. MPa); default: --drop-fraction of the swing")
    size.add_argument("--drop-fraction", type=positive_number, default=0.5, metavar="F",
                      help="the smallest failure drop as a fraction of the stress's swing, "
                           "between 0 and 1 (default 0.5)")
    parser.add_argument("--smooth", type=float, default=0.0, metavar="S",
                        help="a running median over S seconds before searching, for noisy "
                             "stress (default 0: none)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object instead of the summary line: path, "
                             "rows, unlabelled_rows, min_drop, swing, and failures (start_s, "
                             "end_s or null, drop)")
    parser.add_argument("--quiet", action="store_true",
                        help="no summary line; errors still print")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Label the table and print what was found.

    Returns:
        0 on success (errors raise ``LabquakeError``).
    """
    from model.data.labels import label_file
    from stream.core.errors import LabquakeError

    if not 0.0 < args.drop_fraction < 1.0:
        raise LabquakeError(f"--drop-fraction {args.drop_fraction} must lie between 0 and 1; "
                            "give e.g. 0.5")
    if not args.smooth >= 0.0:
        raise LabquakeError(f"--smooth {args.smooth} must be a number of seconds >= 0")
    written = label_file(args.data, args.out, time_column=args.time_column,
                         stress_column=args.stress_column, min_drop=args.min_drop,
                         drop_fraction=args.drop_fraction, smooth_s=args.smooth)
    if args.json:
        print(json.dumps(report(written), allow_nan=False))
    elif not args.quiet:
        print(summary(written))
    return 0


def summary(written: LabelledFile) -> str:
    """The one-line summary of a labelled table.

    Example:
        >>> summary(label_file("rows.csv", "out.csv"))  # doctest: +SKIP
        'found 31 failures in 299.6 s (drops 0.449-0.875, at least 0.314); wrote ...'
    """
    failures = written.failures
    seconds = float(written.time_s[-1] - written.time_s[0])
    drops = (f"drops {failures.drop.min():.3g}-{failures.drop.max():.3g}, "
             if len(failures) else "")
    unknown_end = int((failures.end < 0).sum())
    ends = f", {unknown_end} without a seen end" if unknown_end else ""
    return (f"found {len(failures)} failure{'s' * (len(failures) != 1)} in {seconds:.1f} s "
            f"({drops}at least {failures.min_drop:.3g}{ends}); wrote {written.rows:,} rows "
            f"to {written.path} ({written.unlabelled_rows:,} after the last failure "
            "left unlabelled)")


def report(written: LabelledFile) -> dict[str, Any]:
    """What ``labquake label --json`` prints.

    Example:
        >>> report(label_file("rows.csv", "out.csv"))["rows"]  # doctest: +SKIP
        3005
    """
    failures = written.failures
    return {
        "path": str(written.path), "rows": written.rows,
        "unlabelled_rows": written.unlabelled_rows,
        "min_drop": failures.min_drop, "swing": failures.swing,
        "failures": [{"start_s": float(start), "end_s": None if end != end else float(end),
                      "drop": float(drop)}
                     for start, end, drop in zip(failures.start_s.tolist(),
                                                 failures.end_s.tolist(),
                                                 failures.drop.tolist(), strict=True)],
    }
