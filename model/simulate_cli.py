"""The ``labquake simulate`` verb: write a synthetic lab-earthquake record to a file, or a
folder of test-style segments with their true answers (:mod:`model.segments`).

Example:
    labquake simulate --out data/sim.npz --seconds 60 --seed 7
    labquake simulate --segments 2624 --out test/ --seed 1
"""

from __future__ import annotations

import argparse
import math
import sys

VERB = "simulate"


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
    # Defaults are repeated as literals so '--help' does not import NumPy; a unit test
    # checks they equal model.simulate's constants.
    parser = subparsers.add_parser(
        VERB, help="write a synthetic lab-earthquake record (LANL CSV or .npz)",
        description="Simulate the acoustic emission of a laboratory fault in stick-slip and "
                    "write it with its time to failure: LANL CSV (.csv) or compact NumPy "
                    ".npz, chosen by the suffix of --out. With --segments N, write instead N "
                    "test segments (seg_<hex>.csv, header acoustic_data, as LANL's test/) cut "
                    "at random positions of one record, and truth.csv "
                    "(seg_id,time_to_failure). See docs/simulator.md and docs/lanl.md.")
    parser.add_argument("--out", required=True, metavar="PATH",
                        help="output file, .csv or .npz (written atomically); with "
                             "--segments, a folder")
    parser.add_argument("--seconds", type=float, metavar="S",
                        help="length of the record in seconds (required without --segments; "
                             "with it, default: twice the segments' total length, at least 150 s)")
    parser.add_argument("--segments", type=int, metavar="N",
                        help="write N test-style segments and truth.csv into the folder --out")
    parser.add_argument("--segment-samples", type=int, default=150_000, metavar="N",
                        help="samples per segment (default 150,000, as LANL)")
    parser.add_argument("--sample-rate", type=float, default=4e6, metavar="HZ",
                        help="samples per second (default 4e6, as LANL)")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="random seed; the same seed gives the same record (default 0)")
    parser.add_argument("--cycle-seconds", type=float, nargs=2, default=[7.0, 16.0],
                        metavar=("MIN", "MAX"),
                        help="shortest and longest stick-slip cycle (default 7 16)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Simulate and write the record; print a one-line summary.

    Args:
        args: parsed flags of :func:`add_parser`.

    Returns:
        0 on success (errors raise ``LabquakeError``).
    """
    from pathlib import Path

    from tqdm import tqdm

    from model.records import WRITABLE_SUFFIXES, write_record
    from model.simulate import LabFault, record_samples
    from stream.errors import LabquakeError

    out = Path(args.out)
    if args.segments is not None:
        return _write_segments(args)
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
    print(f"wrote {written:,} samples ({written / fault.sample_rate:g} s at "
          f"{fault.sample_rate:g} Hz, {failures} failure{'s' * (failures != 1)}, seed "
          f"{fault.seed}) to {out}")
    return 0


def _write_segments(args: argparse.Namespace) -> int:
    from model.segments import TRUTH_FILENAME, write_segments

    written = write_segments(args.out, args.segments, seconds=args.seconds,
                             sample_rate=args.sample_rate, seed=args.seed,
                             segment_samples=args.segment_samples,
                             cycle_seconds=tuple(args.cycle_seconds), progress=not args.quiet)
    print(f"wrote {written.count:,} segments of {written.segment_samples:,} samples (cut from "
          f"{written.record_samples / written.sample_rate:g} s at {written.sample_rate:g} Hz, "
          f"seed {written.seed}) and {TRUTH_FILENAME} to {written.folder}")
    return 0
