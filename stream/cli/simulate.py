"""The ``labquake simulate`` verb: write a synthetic lab-earthquake record to a file, or a
folder of test-style segments with their true answers (:mod:`model.data.segments`).

Output: a progress bar on stderr and a one-line summary on stdout; ``--json`` prints one
JSON object on stdout instead of the summary (:func:`record_report`,
:func:`segments_report`); ``--quiet`` drops the bar, the summary and logs below WARNING.

With ``--envelope ROWS.csv`` the record is not simulated but rendered from a lab table of
AE variance per row (:mod:`model.data.envelope`): real cycles, real labels.

Example:
    labquake simulate --out data/sim.npz --seconds 60 --seed 7
    labquake simulate --segments 2624 --out test/ --seed 1
    labquake simulate --out data/sim.npz --seconds 60 --quiet --json
    labquake simulate --envelope rows.csv --fraction 0:0.7 --out first70.npz
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream.config.arguments import at_least, positive_number, span

if TYPE_CHECKING:
    from model.data.segments import WrittenSegments

VERB = "simulate"
# Default rates, repeated as literals so '--help' does not import NumPy; a unit test
# checks they equal model.data.simulate's and model.data.envelope's constants.
SIMULATOR_SAMPLE_RATE = 4e6
ENVELOPE_SAMPLE_RATE = 15_000.0
# JSON "format" of a --segments folder; a record's is its suffix without the dot.
SEGMENTS_FORMAT = "segments"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``simulate`` verb and its flags.

    Args:
        subparsers: the ``labquake`` command's sub-parsers.

    Returns:
        The verb's parser.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> _ = add_parser(parser.add_subparsers())
    """
    parser = subparsers.add_parser(
        VERB, help="write a synthetic lab-earthquake record (LANL CSV or .npz), or "
                   "one rendered from a lab table of AE variance (--envelope)",
        description="Simulate the acoustic emission of a laboratory fault in stick-slip and "
                    "write it with its time to failure: LANL CSV (.csv) or compact NumPy "
                    ".npz, chosen by the suffix of --out. With --segments N, write instead N "
                    "test segments (seg_<hex>.csv, header acoustic_data, as LANL's test/) cut "
                    "at random positions of one record, and truth.csv "
                    "(seg_id,time_to_failure). With --envelope ROWS.csv, render instead a lab "
                    "table of AE variance per row as raw samples with its labels. See "
                    "docs/simulator.md, docs/lanl.md and docs/lab-data.md.")
    parser.add_argument("--out", required=True, metavar="PATH",
                        help="output file, .csv or .npz (written atomically); with "
                             "--segments, a folder")
    parser.add_argument("--seconds", type=float, metavar="S",
                        help="length of the record in seconds (required without --segments; "
                             "with it, default: twice the segments' total length, at least 150 s)")
    parser.add_argument("--segments", type=at_least(1), metavar="N",
                        help="write N test-style segments and truth.csv into the folder --out")
    parser.add_argument("--segment-samples", type=at_least(1), default=150_000, metavar="N",
                        help="samples per segment (default 150,000, as LANL)")
    parser.add_argument("--sample-rate", type=positive_number, default=None, metavar="HZ",
                        help="samples per second (default 4e6, as LANL; with --envelope "
                             "15000)")
    parser.add_argument("--seed", type=at_least(0), default=0, metavar="N",
                        help="random seed; the same seed gives the same record (default 0)")
    parser.add_argument("--cycle-seconds", type=float, nargs=2, default=[7.0, 16.0],
                        metavar=("MIN", "MAX"),
                        help="shortest and longest stick-slip cycle (default 7 16)")
    envelope = parser.add_argument_group(
        "from a recorded envelope", "render a lab table (CSV, one row per window of AE "
        "variance) as a raw record; the table's rows set its length")
    envelope.add_argument("--envelope", metavar="ROWS.csv",
                          help="the table of AE variance per row, with a label or stress "
                               "column")
    envelope.add_argument("--variance-column", default="Var_Ch1", metavar="NAME",
                          help="the column of AE variance (default Var_Ch1)")
    envelope.add_argument("--label-column", metavar="NAME",
                          help="the column of seconds to failure (default time_to_failure, "
                               "else TimeToStartFailure, else labels found from the stress "
                               "column as 'labquake label' finds them)")
    envelope.add_argument("--time-column", default="Time", metavar="NAME",
                          help="the column of times in seconds (default Time)")
    envelope.add_argument("--stress-column", default="ShearStress", metavar="NAME",
                          help="the stress column, when there is no label column "
                               "(default ShearStress)")
    envelope.add_argument("--fraction", type=span, metavar="START:END",
                          help="keep a chronological fraction of the rows, e.g. 0:0.7 (the "
                               "first 70 %%) or 0.7:1 (the last 30 %%); the two share no row")
    envelope.add_argument("--time-range", type=span, metavar="START:END",
                          help="keep the rows with START <= time < END, in seconds of the "
                               "time column (an end may be left out, e.g. 3900:)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object on stdout instead of the summary line: "
                             "path, format (csv, npz or segments), seconds, sample_rate, "
                             "samples, failures, seed, elapsed_s (with --segments also "
                             "segments, segment_samples, truth)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar, no summary line, logs at WARNING and above "
                             "only (-v still logs debug details); errors still print")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Simulate and write the record; print a one-line summary, or one JSON object.

    Args:
        args: parsed flags of :func:`add_parser`.

    Returns:
        0 on success (errors raise ``LabquakeError``).
    """
    from tqdm import tqdm

    from model.data.records import WRITABLE_SUFFIXES, write_record
    from model.data.simulate import LabFault, record_samples
    from stream.core.errors import LabquakeError

    started = time.monotonic()
    out = Path(args.out)
    if args.envelope is not None:
        return _write_envelope(args, started)
    if args.fraction is not None or args.time_range is not None:
        raise LabquakeError("--fraction and --time-range cut an --envelope table; give "
                            "--envelope ROWS.csv or leave them out")
    if args.sample_rate is None:
        args.sample_rate = SIMULATOR_SAMPLE_RATE
    if args.segments is not None:
        return _write_segments(args, started)
    if args.seconds is None:
        raise LabquakeError("--seconds is required to write a record; give e.g. --seconds 60")
    if out.suffix.lower() not in WRITABLE_SUFFIXES:
        raise LabquakeError(f"--out {out}: unknown suffix {out.suffix!r}; "
                            f"name the file {' or '.join(WRITABLE_SUFFIXES)}")
    if not math.isfinite(args.seconds):
        raise LabquakeError(f"--seconds {args.seconds} is not a finite length; give e.g. 60")
    samples = record_samples(args.seconds, args.sample_rate)
    fault = LabFault(args.sample_rate, args.seed, tuple(args.cycle_seconds))
    with tqdm(total=samples, unit="sample", unit_scale=True, disable=args.quiet,
              file=sys.stderr, desc=out.name) as progress:
        def counted(blocks):
            for acoustic, ttf in blocks:
                yield acoustic, ttf
                progress.update(len(acoustic))

        written = write_record(out, counted(fault.blocks(0, samples)), fault.sample_rate)
    failures = len(fault.failure_samples(written))
    if args.json:
        print(json.dumps(record_report(out, written, fault.sample_rate, failures, fault.seed,
                                       time.monotonic() - started), allow_nan=False))
    elif not args.quiet:
        print(f"wrote {written:,} samples ({written / fault.sample_rate:g} s at "
              f"{fault.sample_rate:g} Hz, {failures} failure{'s' * (failures != 1)}, seed "
              f"{fault.seed}) to {out}")
    return 0


def record_report(path: Path, samples: int, sample_rate: float, failures: int, seed: int,
                  elapsed_s: float) -> dict[str, Any]:
    """What ``labquake simulate --json`` prints for a record file.

    Args:
        path: the file written.
        samples: samples written.
        sample_rate: samples per second.
        failures: failures in the record.
        seed: the simulator's seed.
        elapsed_s: wall time of the command.

    Returns:
        A JSON-ready dict of plain numbers and strings.

    Example:
        >>> record_report(Path("sim.npz"), 80_000, 4e4, 1, 7, 0.5)["seconds"]
        2.0
    """
    return {"path": str(path), "format": path.suffix.lower().lstrip("."),
            "seconds": samples / sample_rate, "sample_rate": float(sample_rate),
            "samples": int(samples), "failures": int(failures), "seed": int(seed),
            "elapsed_s": round(elapsed_s, 3)}


def segments_report(written: WrittenSegments, failures: int,
                    elapsed_s: float) -> dict[str, Any]:
    """What ``labquake simulate --segments N --json`` prints: :func:`record_report`'s fields
    (``seconds`` and ``failures`` those of the record the segments are cut from,
    ``samples`` those written in all segments) and ``segments``, ``segment_samples``,
    ``truth`` (the answers file).

    Example:
        >>> segments_report(written, 20, 3.2)["segments"]  # doctest: +SKIP
        2624
    """
    from model.data.segments import TRUTH_FILENAME

    return {"path": str(written.folder), "format": SEGMENTS_FORMAT,
            "seconds": written.record_samples / written.sample_rate,
            "sample_rate": float(written.sample_rate),
            "samples": written.count * written.segment_samples, "failures": int(failures),
            "seed": int(written.seed), "elapsed_s": round(elapsed_s, 3),
            "segments": written.count, "segment_samples": written.segment_samples,
            "truth": str(written.folder / TRUTH_FILENAME)}


def _write_segments(args: argparse.Namespace, started: float) -> int:
    from model.data.segments import TRUTH_FILENAME, write_segments
    from model.data.simulate import LabFault

    cycle_seconds = tuple(args.cycle_seconds)
    written = write_segments(args.out, args.segments, seconds=args.seconds,
                             sample_rate=args.sample_rate, seed=args.seed,
                             segment_samples=args.segment_samples,
                             cycle_seconds=cycle_seconds, progress=not args.quiet)
    if args.json:
        # The same fault plans the same cycles: its failures are the record's.
        failures = LabFault(written.sample_rate, written.seed,
                            cycle_seconds).failure_samples(written.record_samples)
        print(json.dumps(segments_report(written, len(failures), time.monotonic() - started),
                         allow_nan=False))
    elif not args.quiet:
        print(f"wrote {written.count:,} segments of {written.segment_samples:,} samples (cut "
              f"from {written.record_samples / written.sample_rate:g} s at "
              f"{written.sample_rate:g} Hz, seed {written.seed}) and {TRUTH_FILENAME} to "
              f"{written.folder}")
    return 0


def _write_envelope(args: argparse.Namespace, started: float) -> int:
    from model.data.envelope import envelope_blocks, read_envelope, select_rows
    from model.data.records import WRITABLE_SUFFIXES, write_record
    from stream.core.errors import LabquakeError

    out = Path(args.out)
    if args.seconds is not None or args.segments is not None:
        raise LabquakeError("--seconds and --segments do not apply to --envelope: the "
                            "table's rows set the record; cut it with --fraction or "
                            "--time-range")
    if out.suffix.lower() not in WRITABLE_SUFFIXES:
        raise LabquakeError(f"--out {out}: unknown suffix {out.suffix!r}; "
                            f"name the file {' or '.join(WRITABLE_SUFFIXES)}")
    fraction = args.fraction
    if fraction is not None:
        fraction = (max(fraction[0], 0.0), min(fraction[1], 1.0))
    rate = ENVELOPE_SAMPLE_RATE if args.sample_rate is None else args.sample_rate
    envelope = select_rows(
        read_envelope(args.envelope, variance_column=args.variance_column,
                      label_column=args.label_column, time_column=args.time_column,
                      stress_column=args.stress_column),
        fraction=fraction, time_range=args.time_range)
    written = write_record(out, envelope_blocks(envelope, rate, args.seed), rate)
    if args.json:
        print(json.dumps({**record_report(out, written, rate, envelope.failures, args.seed,
                                          time.monotonic() - started),
                          "envelope": str(args.envelope), "rows": len(envelope),
                          "first_row": int(envelope.rows[0]),
                          "last_row": int(envelope.rows[-1]),
                          "labels": envelope.label_origin}, allow_nan=False))
    elif not args.quiet:
        print(f"wrote {written:,} samples ({written / rate:g} s at {rate:g} Hz, "
              f"{envelope.failures} failure{'s' * (envelope.failures != 1)}, rows "
              f"{envelope.rows[0] + 1}-{envelope.rows[-1] + 1} of {args.envelope}, labels "
              f"from its {envelope.label_origin}, seed {args.seed}) to {out}")
    return 0
