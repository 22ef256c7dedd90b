"""The ``labquake train`` verb: train the seed network on labelled records, save a bundle.

The flow, each step a function below:

1. windows and targets of each record (:mod:`model.training.dataset`: cut as the monitor cuts
   them, features extracted in batches, the raw samples never kept);
2. a validation split by whole earthquake cycles (:func:`split_by_cycles`): validation
   cycles are drawn from the seed among the cycles that end in a failure; a window goes to
   validation only if it lies entirely within validation cycles, to training only if
   entirely within training cycles, and a window that straddles the two is dropped, so no
   validation window shares a sample with a training window;
3. features standardised with the training windows' mean and standard deviation
   (:func:`model.bundle.inference.fit_scaler`);
4. the network of :func:`model.network.build_model`, fitted on the three targets (time to
   failure; time since failure, masked where unknown; TTF below the failure horizon) with
   early stopping on the validation alerts' F1 (``--stop-on alerts``, the default) or the
   validation loss (``--stop-on loss``), the best epoch's weights kept;
5. metrics on the validation windows (:func:`model.evaluation.evaluate.metrics`), saved with the
   alert policy settings and a fingerprint of the training data into the bundle.

Reproducibility: ``--seed`` seeds Python, NumPy and the backend (``keras.utils.
set_random_seed``: weight initialisation and the epoch shuffles) and picks the validation
cycles; on the TensorFlow backend its op determinism is switched on (for the whole
process), so a run repeated on the same machine
with the same library versions gives the same weights. Another CPU type or thread count
may change the last bits of float sums and so, slightly, the weights.

Output: progress bars and Keras's per-epoch lines on stderr, a one-line summary on
stdout; ``--json`` prints one JSON object on stdout instead (:func:`training_report`), the
KS-filter and cross-validation lines then going to stderr; ``--quiet`` drops the bars, the
epoch lines, those lines and the summary, and logs below WARNING.

Example:
    labquake train --simulate 1200 --out model/bundled/default.lqb
    labquake train --data train.csv --out lanl.lqb --epochs 40
    labquake train --data train.csv --out lanl.lqb --quiet --json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

# Light (NumPy only): '--help' stays fast.
from model.training.cache_arguments import (
    add_cache_arguments,
    cached_windows_options,
    check_cache_arguments,
)
from model.training.fit import (
    STOP_ON,
    fit,
    network_inputs,
    network_prediction,
    tune_policy,
)
from model.training.ks_filter import DEFAULT_ALPHA
from stream.core.errors import LabquakeError

if TYPE_CHECKING:

    from model.bundle.inference import Bundle
    from model.training.dataset import RecordWindows
    from model.training.ks_filter import Selection
    from stream.core.alert_policy import AlertPolicyConfig

VERB = "train"
# Defaults are literals here so that '--help' imports nothing heavy; the window default is
# stream.core.windows.WINDOW_SAMPLES (a unit test checks it).
DEFAULT_WINDOW = 150_000
DEFAULT_EPOCHS = 80
# Large batches: the fixed learning rate (0.008, SEED_MODEL.md) makes small ones noisy.
DEFAULT_BATCH_SIZE = 256
DEFAULT_SEED = 0
DEFAULT_VALIDATION_FRACTION = 0.2
DEFAULT_PATIENCE = 15
DEFAULT_STOP_ON = "alerts"
# Literals for a fast '--help'; model.bundle.blend and model.training.recipe define them (a unit
# test checks they agree).
MODEL_KINDS = ("seed", "blend")
DEFAULT_MODEL_KIND = "blend"
DEFAULT_CONTEXT = "auto"
DEFAULT_AVERAGE_EPOCHS = 5
def fingerprint(description: Any) -> str:
    """``"sha256:<hex>"`` of a JSON-ready description of the training data.

    Example:
        >>> fingerprint({"simulator": {"seconds": 60.0, "seed": 0}})[:7]
        'sha256:'
    """
    text = json.dumps(description, sort_keys=True)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def files_description(paths: Sequence[str]) -> list[dict[str, Any]]:
    """Each training file's name and size in bytes (what the fingerprint of files hashes).

    Example:
        >>> files_description(["train.csv"])  # doctest: +SKIP
        [{'name': 'train.csv', 'bytes': 9000000000}]
    """
    return [{"name": Path(path).name, "bytes": Path(path).stat().st_size} for path in paths]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``train`` verb and its flags.

    Args:
        subparsers: the ``labquake`` command's sub-parsers.

    Returns:
        The verb's parser.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> _ = add_parser(parser.add_subparsers())
    """
    parser = subparsers.add_parser(
        VERB, help="train the model on labelled records and save a model bundle",
        description="Train the seed network (SEED_MODEL.md) on labelled acoustic records "
                    "(LANL CSV, .zip, .npz; real LANL train.csv at full size included) or on "
                    "a simulated record streamed from the simulator, validate on whole "
                    "earthquake cycles, and save a model bundle with its metrics, alert "
                    "policy and training-data fingerprint.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", nargs="+", metavar="PATH",
                        help="labelled records: LANL .csv, .zip holding one, or .npz")
    source.add_argument("--simulate", type=float, metavar="SECONDS",
                        help="train on a simulated record of this length, streamed from the "
                             "simulator (no file)")
    parser.add_argument("--sim-seed", type=int, default=0, metavar="N",
                        help="simulator seed for --simulate (default 0)")
    parser.add_argument("--sample-rate", type=float, metavar="HZ",
                        help="samples per second of CSV records or of --simulate "
                             "(default 4e6, as LANL); an .npz carries its own")
    parser.add_argument("--out", required=True, metavar="BUNDLE",
                        help="the model bundle to write, conventionally NAME.lqb")
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW, metavar="N",
                        help=f"samples per window (default {DEFAULT_WINDOW:,})")
    parser.add_argument("--hop", type=int, metavar="N",
                        help="samples between window starts (default: the window)")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, metavar="N",
                        help=f"most passes over the training windows (default {DEFAULT_EPOCHS})")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N",
                        help=f"windows per gradient step (default {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, metavar="N",
                        help="seeds the weights, the shuffles and the validation cycles "
                             f"(default {DEFAULT_SEED})")
    parser.add_argument("--validation-fraction", type=float,
                        default=DEFAULT_VALIDATION_FRACTION, metavar="F",
                        help="share of the earthquake cycles held out for validation "
                             f"(default {DEFAULT_VALIDATION_FRACTION})")
    parser.add_argument("--patience", type=int, default=DEFAULT_PATIENCE, metavar="N",
                        help="stop after this many epochs without a better validation score "
                             f"(see --stop-on) (default {DEFAULT_PATIENCE})")
    parser.add_argument("--stop-on", choices=STOP_ON, default=DEFAULT_STOP_ON,
                        help="what early stopping watches: the F1 of the validation alerts' "
                             "recall and precision, ties to the lower loss (alerts), or the "
                             f"validation loss (loss) (default {DEFAULT_STOP_ON})")
    parser.add_argument("--raise-threshold", type=float, metavar="P",
                        help="alert policy: P(failure) at or above which windows count "
                             "towards a raise (default 0.5)")
    parser.add_argument("--clear-threshold", type=float, metavar="P",
                        help="alert policy: P(failure) below which windows count towards a "
                             "clear (default 0.3)")
    parser.add_argument("--consecutive", type=int, metavar="N",
                        help="alert policy: windows in a row needed to raise or clear "
                             "(default 2)")
    parser.add_argument("--tune-policy", action="store_true",
                        help="choose the raise threshold and run length that best announce "
                             "the validation cycles' failures (F1 of alert recall and "
                             "precision); excludes --raise-threshold and --consecutive")
    parser.add_argument("--test-segments", metavar="DIR",
                        help="a folder of test segments (seg_*.csv, LANL's test/): keep only "
                             "the features whose two-sample KS test between training windows "
                             "and these segments does not reject at --ks-alpha")
    parser.add_argument("--ks-alpha", type=float, default=DEFAULT_ALPHA, metavar="A",
                        help="significance level of the KS feature filter; a feature with a "
                             f"lower p-value is dropped (default {DEFAULT_ALPHA})")
    parser.add_argument("--kind", choices=MODEL_KINDS, default=DEFAULT_MODEL_KIND,
                        help="the model kind: the seed network alone (seed), or the "
                             "geometric mean of its time to failure and that of LightGBM "
                             "trees on the same features (blend), as the LANL winners did "
                             f"(default {DEFAULT_MODEL_KIND})")
    parser.add_argument("--context", default=DEFAULT_CONTEXT, metavar="auto|off|SECONDS",
                        help="the stream context (the window against its stream's recent "
                             "course): auto chooses off or the span of that course (1.5, 3 "
                             "or 6 s) by the error on held-out blocks of whole training "
                             "cycles; off reads each window alone; SECONDS fixes the span "
                             f"(default {DEFAULT_CONTEXT})")
    parser.add_argument("--average-epochs", type=int, default=DEFAULT_AVERAGE_EPOCHS,
                        metavar="K",
                        help="keep the mean weights of the K epochs with the best "
                             "validation alerts (checkpoint averaging; 1: the best epoch's) "
                             f"(default {DEFAULT_AVERAGE_EPOCHS})")
    parser.add_argument("--init", metavar="BUNDLE",
                        help="fine-tune this bundle's network on the new data: start from "
                             "its weights, read its features and stream context (instead "
                             "of choosing one), refit the scaler and, for a blend, the trees")
    parser.add_argument("--no-context", action="store_true",
                        help="the same as --context off: read each window alone, as "
                             "independent test segments need")
    parser.add_argument("--folds", type=int, metavar="K",
                        help="first cross-validate: K folds of whole earthquake cycles, each "
                             "held out in turn; prints and stores each fold's MAE")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object on stdout instead of the summary line: "
                             "bundle, version, n_train_windows, n_validation_windows, "
                             "validation_cycles, epochs_run, best_epoch, validation (the "
                             "bundle's validation metrics), alert_policy, policy_tuned, "
                             "cross_validation (with --folds), elapsed_s; the KS-filter and "
                             "fold lines go to stderr")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars, no per-epoch, KS-filter, fold or summary "
                             "lines, logs at WARNING and above only (-v still logs debug "
                             "details); errors still print")
    retune = parser.add_argument_group(
        "retuning", "keep a bundle's network and choose only its alert policy and countdown "
                    "interval (model/training/policy_tuning.py)")
    retune.add_argument("--retune", metavar="BUNDLE",
                        help="retune this bundle's alert policy on the records of --data, or "
                             "of --simulate with --retune-seeds, calibrate its countdown "
                             "interval on other records, and write it to --out (BUNDLE itself "
                             "to retune in place); the network is not trained")
    retune.add_argument("--retune-seeds", type=int, nargs="+", metavar="N",
                        help="simulator seeds of the tuning records (with --simulate)")
    retune.add_argument("--calibration-seeds", type=int, nargs="+", metavar="N",
                        help="simulator seeds of the interval's calibration records")
    retune.add_argument("--calibration-data", nargs="+", metavar="PATH",
                        help="labelled records to calibrate the interval on")
    retune.add_argument("--interval-coverage", type=float, default=0.8, metavar="F",
                        help="share of failures the countdown interval covers (default 0.8)")
    add_cache_arguments(parser)
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Train, validate and save the bundle; print a one-line summary, or one JSON object.

    Args:
        args: parsed flags of :func:`add_parser`.

    Returns:
        0 on success (errors raise ``LabquakeError``).
    """
    if args.retune is not None:
        return _retune(args)
    started = time.monotonic()
    config = _policy_config(args)
    _check_arguments(args)
    records, description = _read_training_data(args)
    rates = {record.sample_rate for record in records}
    if len(rates) > 1:
        raise LabquakeError(f"the records have different sample rates {sorted(rates)}; "
                            "train on records of one rate")
    from model.bundle.blend import Trees, choose_weight
    from model.training import baselines, recipe
    from model.training import selection as context_selection

    selection = None
    if args.test_segments:
        selection = _ks_filter(records, args)
        records = [record.with_features(selection.kept) for record in records]
    start = _initial_bundle(args)
    if start is None:
        prepared = recipe.prepare(records, _context_mode(args),
                                  validation_fraction=args.validation_fraction, seed=args.seed)
    else:
        prepared = recipe.prepare_with(records, start.context,
                                       validation_fraction=args.validation_fraction,
                                       seed=args.seed, feature_names=start.feature_names)
    records, split, context = prepared.records, prepared.split, prepared.context
    if prepared.choice is not None:
        scores = ", ".join(f"{label} {value:.3g} s" for label, value in
                           prepared.choice.scores.items())
        chosen = context_selection.candidate_label(prepared.choice.candidate)
        _note(args, f"stream context chosen on {prepared.choice.folds} held-out blocks of "
                    f"cycles (LightGBM MAE; span / baseline lookback: {scores}): {chosen}")
    with _keras_progress(shown=not args.quiet):
        folds = _cross_validate(records, args) if args.folds is not None else None
        model, mean, std, history = fit(split, epochs=args.epochs,
                                        batch_size=args.batch_size, patience=args.patience,
                                        seed=args.seed, stop_on=args.stop_on,
                                        policy=None if args.tune_policy else config,
                                        average_epochs=args.average_epochs,
                                        initial=None if start is None else start.model)
    from model.bundle import inference as bundle
    from model.evaluation import evaluate

    trees = Trees.fit(split.train, seed=args.seed) if args.kind == "blend" else None
    training_median = float(np.median(np.concatenate([part.ttf_s for part in split.train])))
    validation = [(part, network_prediction(model, network_inputs(part.features, mean, std)))
                  for part in split.validation]
    if trees is not None:
        trees = trees.with_weight(choose_weight([
            (part.ttf_s, prediction.ttf_s, trees.predict(part.features))
            for part, prediction in validation]))
        validation = [(part, dataclasses.replace(
            prediction, ttf_s=trees.blend(prediction.ttf_s, part.features)))
            for part, prediction in validation]
    baseline_scores = baselines.baseline_scores(split.train, split.validation, args.seed)
    _note(args, recipe.baselines_line(baseline_scores))
    if args.tune_policy:
        config = tune_policy(validation, args.clear_threshold, full=True,
                             warmup_s=0.0 if context is None else context.lookback_s)
    result = evaluate.metrics(validation, config, training_median)
    # Distinct windows: the restarted copies are the same windows with another context.
    n_train = sum(map(len, split.train)) - prepared.n_restarted
    elapsed = time.monotonic() - started
    saved = bundle.save(
        args.out, model, feature_names=records[0].feature_names, window=records[0].window,
        hop=records[0].hop, scaler_mean=mean, scaler_std=std,
        training_fingerprint=fingerprint(description),
        metrics={"validation": result, "baselines": baseline_scores}
        | ({"cross_validation": folds} if folds else {}),
        alert_policy=config.to_dict(), context=context, trees=trees,
        extra={
            "training_ttf_median_s": training_median,
            "sample_rate_hz": records[0].sample_rate,
            "training_data": description,
            "seed": args.seed,
            "validation_fraction": args.validation_fraction,
            "validation_cycles": [list(pair) for pair in split.validation_cycles],
            "policy_tuned_on_validation": bool(args.tune_policy),
            "n_train_windows": n_train,
            "n_restarted_windows": prepared.n_restarted,
            "n_validation_windows": result["n_windows"],
            "epochs": args.epochs, "batch_size": args.batch_size, "patience": args.patience,
            "epochs_run": history["epochs_run"], "best_epoch": history["best_epoch"],
            "stop_on": args.stop_on, "val_loss": history["val_loss"],
            **({"val_alert_f1": history["val_alert_f1"]} if "val_alert_f1" in history else {}),
            "training_seconds": round(elapsed, 1),
            "average_epochs": args.average_epochs,
            "initial_bundle": None if start is None else start.version,
        } | ({"ks_filter": selection.to_dict()} if selection else {})
        | ({"context_choice": prepared.choice.to_dict()} if prepared.choice else {}))
    if args.json:
        print(json.dumps(training_report(saved, elapsed), allow_nan=False))
        return 0
    if args.quiet:
        return 0
    tuned = (f"; policy tuned: raise {config.raise_threshold:g}, clear "
             f"{config.clear_threshold:g}, {config.consecutive} in a row"
             if args.tune_policy else "")
    if not result["n_detected"] and not args.tune_policy:
        tuned = "; no validation failure was warned: try --tune-policy"
    value = evaluate.format_value
    print(f"trained {saved.path} ({saved.kind}, version {saved.version}) on {n_train:,} "
          f"windows in "
          f"{elapsed:.0f} s, best epoch {history['best_epoch']}/{history['epochs_run']}; "
          f"validation on {_count(len(split.validation_cycles), 'cycle')} "
          f"({result['n_windows']:,} windows): MAE {value(result['mae'])} s (baseline "
          f"{value(result['baseline_mae'])} s), R² {value(result['r2'])}, alert recall "
          f"{value(result['alert_recall'])}, precision {value(result['alert_precision'])}"
          f"{tuned}{'' if trees is None else f'; trees weigh {trees.weight:g} in the blend'}")
    return 0


def training_report(saved: Bundle, elapsed_s: float) -> dict[str, Any]:
    """What ``labquake train --json`` prints, read from the saved bundle's metadata.

    Args:
        saved: the bundle :func:`model.bundle.inference.save` wrote.
        elapsed_s: wall time of the training.

    Returns:
        A JSON-ready dict: ``bundle`` (path), ``version``, ``n_train_windows``,
        ``n_validation_windows``, ``validation_cycles`` (count), ``epochs_run``,
        ``best_epoch``, ``validation`` (the metrics of :func:`model.evaluation.evaluate.metrics`,
        ``None`` where undefined), ``alert_policy``, ``policy_tuned``, ``elapsed_s``, and
        ``cross_validation`` when the bundle holds one.

    Example:
        >>> training_report(bundle.load("lab.lqb"), 12.5)["validation"]["mae"]  # doctest: +SKIP
        1.62
    """
    extra = saved.metadata["extra"]
    metrics = saved.metrics
    report = {"bundle": str(saved.path), "version": saved.version,
              "n_train_windows": extra["n_train_windows"],
              "n_validation_windows": extra["n_validation_windows"],
              "validation_cycles": len(extra["validation_cycles"]),
              "epochs_run": extra["epochs_run"], "best_epoch": extra["best_epoch"],
              "validation": metrics["validation"], "alert_policy": saved.alert_policy,
              "policy_tuned": extra["policy_tuned_on_validation"],
              "elapsed_s": round(elapsed_s, 3)}
    if "cross_validation" in metrics:
        report["cross_validation"] = metrics["cross_validation"]
    return report


@contextlib.contextmanager
def _keras_progress(shown: bool) -> Iterator[None]:
    """Keras's per-epoch lines as they are, or, not ``shown``, dropped.

    Keras writes them to ``sys.stdout``, which :func:`fit` points at ``sys.stderr``; not
    shown, ``sys.stderr`` is the null device while the network trains (the folds of
    cross-validation too: a Keras switch would not do, their ``clear_session`` resets it).
    Logging keeps its own handle on the real stderr, and Python warnings go to logging
    meanwhile, so warnings and errors still show.
    """
    if shown:
        yield
        return
    with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
        logging.captureWarnings(True)
        try:
            yield
        finally:
            logging.captureWarnings(False)


def _note(args: argparse.Namespace, line: str) -> None:
    """A line about the work under way: on stdout, on stderr with ``--json`` (stdout then
    holds the JSON object alone), nowhere with ``--quiet``."""
    if not args.quiet:
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)


def _policy_config(args: argparse.Namespace) -> AlertPolicyConfig:
    from stream.core.alert_policy import AlertPolicyConfig

    fixed = [flag for flag, value in (("--raise-threshold", args.raise_threshold),
                                      ("--consecutive", args.consecutive)) if value is not None]
    if args.tune_policy and fixed:
        raise LabquakeError(f"--tune-policy chooses {' and '.join(fixed)} itself; drop one "
                            "or the other")
    given = {name: getattr(args, name) for name in ("raise_threshold", "clear_threshold",
                                                    "consecutive")
             if getattr(args, name) is not None}
    if args.tune_policy:
        # Checked against each tried raise threshold instead.
        given.pop("clear_threshold", None)
    return AlertPolicyConfig.from_dict(given)


def _retune(args: argparse.Namespace) -> int:
    from model.training.policy_tuning import RecordSource, retune_command

    def sources(paths: Sequence[str] | None, seeds: Sequence[int] | None) -> list[RecordSource]:
        return ([RecordSource(path=path) for path in paths or ()]
                + [RecordSource(seconds=args.simulate, seed=seed) for seed in seeds or ()])

    if (args.retune_seeds or args.calibration_seeds) and args.simulate is None:
        raise LabquakeError("--retune-seeds and --calibration-seeds need --simulate SECONDS")
    return retune_command(args.retune, args.out, sources(args.data, args.retune_seeds),
                          sources(args.calibration_data, args.calibration_seeds),
                          args.interval_coverage, args.sample_rate, args.json, args.quiet)


def _check_arguments(args: argparse.Namespace) -> None:
    from model.training.dataset import check_window

    check_window(args.window, args.window if args.hop is None else args.hop)
    for flag, value, least in (("--epochs", args.epochs, 1), ("--batch-size", args.batch_size, 1),
                               ("--patience", args.patience, 0),
                               ("--average-epochs", args.average_epochs, 1)):
        if value < least:
            raise LabquakeError(f"{flag} {value} is below {least}; give {flag} >= {least}")
    if not 0.0 < args.validation_fraction < 1.0:
        raise LabquakeError(f"--validation-fraction {args.validation_fraction} is not between 0 "
                            f"and 1; give e.g. {DEFAULT_VALIDATION_FRACTION}")
    if args.simulate is not None and not (math.isfinite(args.simulate) and args.simulate > 0):
        raise LabquakeError(f"--simulate {args.simulate} is not a positive length in seconds; "
                            "give e.g. 600")
    for path in args.data or ():
        if not Path(path).is_file():
            raise LabquakeError(f"--data {path}: no such file; check the path")
    check_cache_arguments(args)
    if args.test_segments:
        from model.data.segments import segment_files
        from model.training.ks_filter import check_alpha

        check_alpha(args.ks_alpha)
        segment_files(args.test_segments)
        if _context_mode(args) != "off":
            raise LabquakeError("--test-segments are independent windows without a stream's "
                                "past, so the model must read each window alone: add "
                                "--no-context")
    _context_mode(args)
    if args.init is not None and (args.no_context or args.context != DEFAULT_CONTEXT):
        raise LabquakeError("--init reads the bundle's own stream context; drop --context "
                            "and --no-context")
    if args.init is not None and args.test_segments:
        raise LabquakeError("--init keeps the bundle's features; drop --test-segments")
    if args.folds is not None:
        from model.training.cross_validation import check_folds

        check_folds(args.folds)
    from model.bundle.inference import METADATA_FILENAME

    out = Path(args.out)
    # Checked now, not only when saving: training may take many minutes.
    if out.exists() and not (out / METADATA_FILENAME).is_file():
        raise LabquakeError(f"--out {out} exists and is not a model bundle; give a new "
                            "NAME.lqb path (an existing bundle is replaced)")


def _initial_bundle(args: argparse.Namespace) -> Bundle | None:
    """The bundle ``--init`` names, whose network training starts from, or None."""
    if args.init is None:
        return None
    from model.bundle import inference as bundle

    return bundle.load(args.init)


def _context_mode(args: argparse.Namespace) -> str:
    """``--context``, with ``--no-context`` meaning ``off``."""
    from model.training.recipe import CONTEXT_OFF, check_context

    if args.no_context:
        if args.context not in (DEFAULT_CONTEXT, CONTEXT_OFF):
            raise LabquakeError(f"--no-context contradicts --context {args.context}; drop one")
        return CONTEXT_OFF
    return check_context(args.context)


def _read_training_data(args: argparse.Namespace) -> tuple[list[RecordWindows], Any]:
    from model.training import dataset

    if args.simulate is not None:
        from model.data import simulate

        rate = args.sample_rate or simulate.DEFAULT_SAMPLE_RATE
        record = dataset.simulated_windows(args.simulate, seed=args.sim_seed, sample_rate=rate,
                                           window=args.window, hop=args.hop,
                                           progress=not args.quiet)
        return [record], {"simulator": {"seconds": args.simulate, "seed": args.sim_seed,
                                        "sample_rate_hz": rate}}
    records = [dataset.file_windows(path, window=args.window, hop=args.hop,
                                    sample_rate=args.sample_rate, progress=not args.quiet,
                                    **cached_windows_options(args)) for path in args.data]
    return records, {"files": files_description(args.data)}


def _ks_filter(records: Sequence[RecordWindows], args: argparse.Namespace) -> Selection:
    """Select features by the KS test against the test segments; note what was dropped."""
    from model.data import segments
    from model.data.parallel import check_workers
    from model.training import ks_filter

    names = records[0].feature_names
    files = segments.segment_files(args.test_segments)
    test_features = segments.segment_features(files, window=records[0].window,
                                              feature_names=names,
                                              workers=check_workers(args.workers),
                                              progress=not args.quiet)
    train_features = np.concatenate([
        record.features[ks_filter.independent_rows(len(record), record.window, record.hop)]
        for record in records])
    selection = ks_filter.select(train_features, test_features, names, args.ks_alpha)
    dropped = ", ".join(selection.dropped) or "none"
    _note(args, f"KS filter (alpha {selection.alpha:g}, {selection.n_train:,} training "
                f"windows, {selection.n_test:,} test segments): kept {len(selection.kept)} of "
                f"{len(names)} features; dropped: {dropped}")
    return selection


def _cross_validate(records: Sequence[RecordWindows], args: argparse.Namespace
                    ) -> dict[str, Any]:
    """Cross-validate by cycles, noting each fold's MAE as it finishes."""
    from model.evaluation.evaluate import format_value
    from model.training import cross_validation

    results = []
    for result in cross_validation.cross_validate(
            records, args.folds, seed=args.seed, epochs=args.epochs,
            batch_size=args.batch_size, patience=args.patience):
        results.append(result)
        _note(args, f"fold {result.fold}/{args.folds}: "
                    f"{_count(len(result.validation_cycles), 'cycle')} held out "
                    f"({result.n_validation:,} windows, {result.n_train:,} training): MAE "
                    f"{format_value(result.mae)} s (baseline "
                    f"{format_value(result.baseline_mae)} s), best epoch "
                    f"{result.best_epoch}/{result.epochs_run}")
    summary = cross_validation.summary(results)
    _note(args, f"cross-validation over {args.folds} folds: MAE "
                f"{format_value(summary['mae_mean'])} ± {format_value(summary['mae_std'])} s "
                f"(baseline {format_value(summary['baseline_mae_mean'])} s)")
    return summary


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'s' * (number != 1)}"
