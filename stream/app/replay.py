"""``labquake replay``: the streaming pipeline over a recorded file, JSON lines to stdout.

The same core as ``labquake monitor`` (``stream.engine.pipeline.Pipeline``) with a file as the
source and stdout as the sink, so a replay of a recorded experiment prints the alerts
that the live monitor logged for it (``emitted_at`` aside, which is the wall clock).

Example:
    labquake replay --data run42.npz --instrument rig1 --predictions > run42.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from stream.config.arguments import positive_number
from stream.config.options import ALERT_POLICY_OPTIONS, add_options, resolve
from stream.core import wire
from stream.core.errors import LabquakeError
from stream.core.events import AlertEvent, Event, GapEvent, PredictionEvent
from stream.engine.pipeline import Pipeline

READ_BLOCK_SAMPLES = 1 << 20


def file_chunks(path: str, instrument: str, channel: str, first_sample: int = 0,
                sample_rate: float | None = None) -> Iterator[wire.Chunk]:
    """The samples of a record file as chunks on the instrument's counter.

    Sample ``i`` of the file is sample ``first_sample + i`` on the counter, at instrument
    time ``(first_sample + i) / sample_rate``.
    """
    from model.data.record_cache import read_blocks

    for block in read_blocks(path, block_samples=READ_BLOCK_SAMPLES, sample_rate=sample_rate):
        start = first_sample + block.first_sample
        for offset in range(0, len(block.acoustic_data), wire.MAX_SAMPLES):
            samples = block.acoustic_data[offset:offset + wire.MAX_SAMPLES]
            counter = start + offset
            yield wire.Chunk(instrument, channel, counter, block.sample_rate,
                             counter / block.sample_rate, samples)


def replay(chunks: Iterator[wire.Chunk], pipeline: Pipeline) -> Iterator[Event]:
    """Every event of the pipeline over ``chunks``, in order, the last batch included."""
    for chunk in chunks:
        yield from pipeline.add(chunk)
    yield from pipeline.flush()


def write_events(events: Iterator[Event], output: TextIO, predictions: bool) -> dict[str, int]:
    """Print alerts (and predictions, gaps if asked) as JSON lines; return counts."""
    counts = {"raised": 0, "updated": 0, "withdrawn": 0, "cleared": 0, "predictions": 0,
              "gaps": 0}
    for event in events:
        if isinstance(event, AlertEvent):
            counts[event.kind] += 1
        elif isinstance(event, PredictionEvent):
            counts["predictions"] += 1
            if not predictions:
                continue
        elif isinstance(event, GapEvent):
            counts["gaps"] += 1
        output.write(json.dumps(event.to_json()) + "\n")
    return counts


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "replay", help="run the streaming pipeline over a file; JSON lines to stdout",
        description=(
            "Run the monitor's pipeline (windows, features, model, alert policy) over a "
            "recorded file (.csv, .zip, .npz) and print alerts as JSON lines: the objects "
            "the monitor writes to Redis."
        ),
    )
    parser.add_argument("--data", required=True, help="the record: .csv, .zip or .npz")
    add_options(parser, "model", "inference_threads", *ALERT_POLICY_OPTIONS)
    parser.add_argument("--instrument", default="replay", help="instrument id (default replay)")
    parser.add_argument("--channel", default="ae0", help="channel id (default ae0)")
    parser.add_argument("--first-sample", type=int, default=0,
                        help="counter index of the file's first sample (default 0)")
    parser.add_argument("--sample-rate", type=positive_number, default=None,
                        help="sample rate of a CSV file, Hz (default 4e6)")
    parser.add_argument("--predictions", action="store_true",
                        help="print every window's prediction too (kind 'prediction')")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from stream.app.monitor import load_predictor, policy_config

    if args.first_sample < 0:
        raise LabquakeError(f"--first-sample must be >= 0, got {args.first_sample}")
    for name, value in (("instrument", args.instrument), ("channel", args.channel)):
        try:
            wire.check_id(name, value)
        except wire.WireError as error:
            raise LabquakeError(f"--{name}: {error}") from error
    from model.bundle.inference import set_inference_threads

    settings = resolve(args)
    set_inference_threads(settings.inference_threads)
    predictor: Any = load_predictor(settings.model)
    pipeline = Pipeline(predictor, predictor.window, predictor.hop,
                        policy_config=policy_config(predictor, settings))
    chunks = file_chunks(args.data, args.instrument, args.channel, args.first_sample,
                         args.sample_rate)
    counts = write_events(replay(chunks, pipeline), sys.stdout, args.predictions)
    print(f"replay: {counts['predictions']} windows, {counts['raised']} alerts raised, "
          f"{counts['updated']} updated, {counts['withdrawn']} withdrawn, "
          f"{counts['cleared']} cleared, {counts['gaps']} gaps", file=sys.stderr)
    return 0
