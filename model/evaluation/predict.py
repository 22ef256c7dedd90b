"""The ``labquake predict`` verb: the LANL competition's protocol, a submission file.

Reads a folder of test segments (``seg_*.csv``, 150,000 samples each under the header
``acoustic_data``: LANL's ``test/``, or ``labquake simulate --segments``), predicts the
time to failure after each segment's last sample with a model bundle, and writes
``seg_id,time_to_failure``, one line per segment sorted by id, atomically. Segment files
are read and featurised in batches by worker processes; the network runs once per batch
of ``PREDICT_BATCH`` feature rows. A model whose window is shorter than a segment reads
the segment's last ``window`` samples. With ``--truth FILE`` (a ``seg_id,time_to_failure``
file, such as the ``truth.csv`` that ``simulate --segments`` writes) the submission's mean
absolute error is printed too.

Example:
    labquake predict --model lanl.lqb --segments test/ --out submission.csv
"""

from __future__ import annotations

import argparse
import time

VERB = "predict"
# Feature rows per network call.
PREDICT_BATCH = 1024


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``predict`` verb and its flags.

    Args:
        subparsers: the ``labquake`` command's sub-parsers.

    Returns:
        The verb's parser.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> _ = add_parser(parser.add_subparsers())
    """
    parser = subparsers.add_parser(
        VERB, help="predict the time to failure of test segments; write a submission CSV",
        description="Predict, with a model bundle, the time to failure after the last sample "
                    "of each test segment in a folder (seg_*.csv files of acoustic_data, as "
                    "LANL's test/) and write the competition's submission file "
                    "seg_id,time_to_failure.")
    parser.add_argument("--model", metavar="BUNDLE",
                        help="the model bundle (a NAME.lqb directory; default: the bundled "
                             "model that reads each window alone, model/bundled/segments.lqb)")
    parser.add_argument("--segments", required=True, metavar="DIR",
                        help="folder of seg_*.csv test segments")
    parser.add_argument("--out", required=True, metavar="CSV",
                        help="the submission file to write (seg_id,time_to_failure)")
    parser.add_argument("--truth", metavar="CSV",
                        help="true answers (seg_id,time_to_failure): print the MAE")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="processes reading and featurising segments (default: the "
                             "number of cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Predict every segment, write the submission, print a summary line.

    Args:
        args: parsed flags of :func:`add_parser`.

    Returns:
        0 on success (errors raise ``LabquakeError``).
    """
    from pathlib import Path

    import numpy as np

    from model.bundle import inference as bundles
    from model.data import segments
    from model.data.parallel import check_workers
    from model.evaluation.evaluate import format_value, mean_absolute_error
    from stream.core.errors import LabquakeError

    started = time.monotonic()
    workers = check_workers(args.workers)
    out = Path(args.out)
    if not out.parent.is_dir():
        raise LabquakeError(f"--out {out}: folder {out.parent} does not exist; create it first")
    files = segments.segment_files(args.segments)
    ids = segments.segment_ids(files)
    truth = segments.read_truth(args.truth) if args.truth else None
    missing = [segment_id for segment_id in ids if truth is not None and segment_id not in truth]
    if missing:
        raise LabquakeError(f"--truth {args.truth} has no answer for {missing[0]} (and "
                            f"{len(missing) - 1} more); give the truth file of these segments")
    model = bundles.load(args.model or bundles.SEGMENTS_BUNDLE_PATH)
    if model.context is not None:
        raise LabquakeError(f"model {model.path} reads each window in its stream's context, "
                            "which independent segments do not have; give a model trained "
                            "with `labquake train --no-context`")
    features = segments.segment_features(files, window=model.window,
                                         feature_names=model.feature_names, workers=workers,
                                         progress=not args.quiet)
    predicted = np.concatenate([model.predict_features(features[low:low + PREDICT_BATCH]).ttf_s
                                for low in range(0, len(features), PREDICT_BATCH)])
    segments.write_submission(out, dict(zip(ids, predicted.astype(float).tolist(),
                                            strict=True)))
    print(f"wrote {len(ids):,} predictions to {out} with model {model.version} in "
          f"{time.monotonic() - started:.1f} s")
    if truth is not None:
        true = np.array([truth[segment_id] for segment_id in ids])
        print(f"MAE {format_value(mean_absolute_error(true, predicted))} s over {len(ids):,} "
              f"segments against {args.truth}")
    return 0
