"""The ``labquake compare`` verb: every model and baseline, trained alike, on one held-out record.

The protocol of a real-lab benchmark: a record's first part trains (``--train``), its
chronologically later part (``--test``, never used for any choice) scores. For each seed,
``labquake train`` runs with its defaults (plus the flags given here), which choose the
stream context by cross-validation over whole cycles of the training record; then every
model is scored on the held-out record with ``labquake evaluate``'s definitions:

- ``blend``: the bundle ``train`` saved (its default kind);
- ``seed network``: the blend's network alone; ``trees``: its LightGBM trees alone;
- ``kNN``, ``LightGBM (window)``: the baselines of :mod:`model.training.baselines`,
  fitted on every training window;
- ``constant median``: the training windows' median time to failure.

Alerts come from the bundle's alert policy over the network's P(failure) (the same for the
blend and the network). One table is printed: per seed and model, R², MAE, the
constant baseline's MAE, alert recall and precision; ``--json`` writes every figure.

Example:
    labquake compare --train first70.csv --test last30.csv --sample-rate 15000 \\
        --window 15000 --hop 1500 --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

VERB = "compare"
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
MODELS = ("blend", "seed network", "trees", "kNN", "LightGBM (window)", "constant median")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``compare`` verb and its flags.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> _ = add_parser(parser.add_subparsers())
    """
    parser = subparsers.add_parser(
        VERB, help="train with train's defaults per seed and score every model and "
                   "baseline on a held-out record; print one table",
        description="Train with `labquake train`'s defaults on --train for each seed, then "
                    "score the blend, its network and trees alone, a kNN, a LightGBM on the "
                    "window features and the constant median on --test (a later, "
                    "never-seen part of the experiment), and print one table.")
    parser.add_argument("--train", required=True, metavar="PATH",
                        help="labelled training record (.csv, .zip, .npz)")
    parser.add_argument("--test", required=True, metavar="PATH",
                        help="labelled held-out record, used for scoring only")
    parser.add_argument("--sample-rate", type=float, metavar="HZ",
                        help="samples per second of CSV records (default 4e6, as LANL)")
    parser.add_argument("--window", type=int, metavar="N", help="samples per window")
    parser.add_argument("--hop", type=int, metavar="N", help="samples between windows")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS),
                        metavar="N", help="training seeds (default 0 1 2 3 4)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Train per seed, score every model on the held-out record, print the table."""
    from stream.core.errors import LabquakeError

    for path in (args.train, args.test):
        if not Path(path).is_file():
            raise LabquakeError(f"{path}: no such file; check the path")
    rows = compare(args.train, args.test, seeds=args.seeds, sample_rate=args.sample_rate,
                   window=args.window, hop=args.hop)
    for line in table_lines(rows):
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, allow_nan=False) + "\n")
    return 0


def compare(train_path: str, test_path: str, *, seeds: Sequence[int],
            sample_rate: float | None, window: int | None, hop: int | None
            ) -> list[dict[str, Any]]:
    """Every model's held-out metrics, per seed.

    Returns:
        One dict per seed and model: ``seed``, ``model``, the metrics of
        :func:`model.evaluation.evaluate.metrics`, and for the blend the context choice.
    """
    import numpy as np

    from model.bundle import inference as bundles
    from model.bundle.inference import Prediction
    from model.evaluation.evaluate import metrics
    from model.training import baselines, dataset, fit, train
    from stream.core.alert_policy import AlertPolicyConfig

    reading = {"sample_rate": sample_rate, "progress": False, "use_cache": False}
    if window is not None:
        reading["window"] = window
    if hop is not None:
        reading["hop"] = hop
    training = dataset.file_windows(train_path, **reading)
    testing = dataset.file_windows(test_path, **reading)
    knn, lgbm = _fitted_baselines(training, seeds[0])
    parser = argparse.ArgumentParser(prog="labquake")
    train.add_parser(parser.add_subparsers())
    rows = []
    for seed in seeds:
        with tempfile.TemporaryDirectory(prefix="labquake-compare-") as folder:
            flags = ["train", "--data", train_path, "--out", f"{folder}/model.lqb",
                     "--seed", str(seed), "--quiet", "--no-cache"]
            for flag, value in (("--sample-rate", sample_rate), ("--window", window),
                                ("--hop", hop)):
                if value is not None:
                    flags += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
            train.run(parser.parse_args(flags))
            model = bundles.load(f"{folder}/model.lqb")
        windows = testing if model.context is None else dataset.add_context(testing,
                                                                           model.context)
        windows = windows.with_features(model.feature_names)
        network = fit.network_prediction(model.model, model.network_inputs(windows.features))
        trees = model.trees.predict(windows.features) if model.trees else network.ttf_s
        policy = AlertPolicyConfig.from_dict(model.alert_policy)
        median = model.metadata["extra"]["training_ttf_median_s"]
        answers = {
            "blend": (model.trees.blend(network.ttf_s, windows.features) if model.trees
                      else network.ttf_s),
            "seed network": network.ttf_s, "trees": trees,
            "kNN": knn.predict(testing.with_features(baselines.KNN_FEATURES).features),
            "LightGBM (window)": lgbm.predict(testing.features),
            "constant median": np.full(len(testing), median, np.float32)}
        for name, ttf in answers.items():
            prediction = Prediction(np.asarray(ttf, np.float32), network.tsf_s,
                                    network.p_failure)
            result = metrics([(windows, prediction)], policy, median)
            if name not in ("blend", "seed network"):
                result["alert_recall"] = result["alert_precision"] = None
            rows.append({"seed": seed, "model": name, **result,
                         "context": model.metadata["extra"].get("context_choice"),
                         "trees_weight": model.trees.weight if model.trees else None})
    return rows


def _fitted_baselines(training: Any, seed: int) -> tuple[Any, Any]:
    """The kNN and the window LightGBM, fitted on every training window."""
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from model.training import baselines

    knn = make_pipeline(StandardScaler(), KNeighborsRegressor(baselines.KNN_NEIGHBOURS))
    knn.fit(*baselines.stacked([training.with_features(baselines.KNN_FEATURES)]))
    return knn, baselines.fit_boosted([training], seed=seed)


def table_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The rows as a Markdown table a person reads.

    Example:
        >>> table_lines([])[0].startswith("| model")
        True
    """
    from model.evaluation.evaluate import format_value

    lines = ["| model | seed | R² | MAE (s) | baseline MAE (s) | alert recall | "
             "alert precision |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in MODELS:
        for row in (row for row in rows if row["model"] == name):
            lines.append(f"| {name} | {row['seed']} | {format_value(row['r2'])} | "
                         f"{format_value(row['mae'])} | {format_value(row['baseline_mae'])} | "
                         f"{format_value(row['alert_recall'])} | "
                         f"{format_value(row['alert_precision'])} |")
    return lines
