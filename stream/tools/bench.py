"""``labquake bench``: how fast the monitor is, measured side by side in one run.

Sections (``--only`` picks some; each prints in the table and lands in ``--json FILE``):

- ``features``: milliseconds per 150,000-sample window and MS/s (million samples per
  second) of ``model.features.extract.extract``, for the full set and for the winners' four,
  beside a reference written the way the competition's public notebooks computed the
  four (NumPy noise and median, a tsfresh-style peak count on a pandas Series, pandas
  ``rolling(50).std()``, ``librosa.feature.mfcc``), and the ratios. The reference needs
  pandas and librosa (``pip install 'labquake[bench]'``); labquake itself never imports
  them. The reference is also run once on labquake's own denoised window, to show that
  the two compute the same four numbers.
- ``inference``: the bundle's compiled network call against ``Model.predict`` at batch
  1, 64 and 1,024 (``model.bundle.inference.benchmark_inference``).
- ``ingest``: a simulated 4 MHz record is first produced to a fresh topic as fast as the
  producer goes; then one monitor (the real :class:`~stream.app.monitor.Monitor`, in this
  process) consumes it through the real Kafka, features, model and Redis included: MS/s
  from its first message to its last stored result, the same per CPU second (all of
  the process's threads), and the real-time factor (MS/s / 4). The same total of
  samples is sent by 1, 4 and 16 instruments: the cost should follow the samples.
- ``latency``: a monitor process (``labquake monitor``) while one instrument sends in
  real time at 4 MHz: for each window, from the moment the chunk holding its last sample
  went to Kafka to the moment its prediction is in Redis (the stream's prediction
  history, read with a blocking XREAD): p50, p90, p99, max.
- ``overlap``: the pipeline core (features and model, no Kafka) over the same record
  with hop = window and hop = window / 10, each the best of ``--repeats`` rounds, the
  two taking turns.
- ``memory`` (only with ``--memory-minutes``): the monitor process's resident memory
  after warm-up and at the end of a real-time run of that length.

The model: ``--model``, else the bundled default when it exists, else a bundle built
here (an untrained network with a fitted scaler: the timings do not depend on the
weights); the report says which. Wall times are best-of-N; the load average is recorded
before and after each section, since other work on the machine slows every number.

Example::

    labquake bench --only features,inference --json bench.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import logging
import math
import multiprocessing
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stream.config.options import Settings, add_options, resolve
from stream.core.errors import LabquakeError

log = logging.getLogger(__name__)

VERB = "bench"
SECTIONS = ("features", "inference", "ingest", "latency", "overlap", "memory")
DEFAULT_SECTIONS = ("features", "inference", "ingest", "latency", "overlap")
NEEDS_SERVICES = frozenset({"ingest", "latency", "memory"})
REPORT_FORMAT = 1
BENCH_EXTRA_HINT = "install with pip install 'labquake[bench]'"

REAL_TIME_RATE = 4e6  # the LANL instrument: the rate "real time" means here
SIMULATION_SEED = 2019
DEFAULT_WINDOWS = 16
DEFAULT_REPEATS = 5
DEFAULT_INGEST_SECONDS = 10.0
DEFAULT_STREAM_COUNTS = (1, 4, 16)
DEFAULT_LATENCY_SECONDS = 20.0
DEFAULT_OVERLAP_SECONDS = 4.0
OVERLAP_DIVISOR = 10
INFERENCE_BATCHES = (1, 64, 1024)
INFERENCE_REPEATS = 20
# Windows whose last sample was sent in a real-time run's first seconds are left out of
# the latency: the monitor's first batch compiles the network and fills its caches.
LATENCY_WARMUP_S = 3.0
LATENCY_PERCENTS = (50, 90, 99)
MEMORY_WARMUP_S = 60.0
MEMORY_SAMPLE_S = 10.0
# A simulated stretch this long is sent again and again by a long real-time run (the
# counter goes on): simulating 4 MHz live would take the CPU the monitor needs.
REALTIME_LOOP_SECONDS = 10.0
# The in-process monitor gives up after this long without a message (a broker gone).
INGEST_GIVE_UP_S = 30.0
MONITOR_READY_TIMEOUT_S = 180.0
CATCH_UP_TIMEOUT_S = 60.0
MONITOR_STOP_TIMEOUT_S = 60.0
XREAD_BLOCK_MS = 200
MIB = float(1 << 20)
# The monitors and producers a bench runs log every alert and topic; the table says it all.
QUIET_LOGGERS = {"labquake.monitor": logging.WARNING, "stream.io.redis_sink": logging.WARNING,
                 "stream.io.instrument": logging.WARNING, "kafka": logging.ERROR}


# ---------------------------------------------------------------- pure parts


def best_times(calls: Mapping[str, Callable[[], object]],
               repeats: int) -> dict[str, tuple[float, float]]:
    """The shortest wall and process-CPU times of each call, taken in turns.

    Each call runs once untimed (warm-up), then the calls take turns ``repeats`` times,
    so that other work on the machine weighs on each alike. The CPU time counts every
    thread of the process (a library's BLAS threads too).

    Args:
        calls: what to time, by name.
        repeats: timed rounds, >= 1.

    Returns:
        ``name -> (wall seconds, CPU seconds)``, each the minimum over the rounds.

    Example:
        >>> best_times({"nothing": lambda: None}, 3)["nothing"][0] < 0.01
        True
    """
    for call in calls.values():
        call()
    best = {name: (math.inf, math.inf) for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            wall, cpu = time.perf_counter(), time.process_time()
            call()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def throughput(samples: int, seconds: float) -> dict[str, float]:
    """MS/s and the real-time factor at 4 MHz of ``samples`` handled in ``seconds``.

    Example:
        >>> throughput(8_000_000, 0.5)
        {'ms_per_s': 16.0, 'real_time_factor': 4.0}
    """
    rate = samples / seconds / 1e6
    return {"ms_per_s": rate, "real_time_factor": rate * 1e6 / REAL_TIME_RATE}


def last_sample_send_times(chunk_ends: np.ndarray, send_times: np.ndarray,
                           window_ends: np.ndarray) -> np.ndarray:
    """When the chunk holding each window's last sample was sent.

    Args:
        chunk_ends: each sent chunk's end sample (exclusive), increasing.
        send_times: when each chunk was sent, seconds.
        window_ends: windows' last sample indices.

    Returns:
        float64 array like ``window_ends``; NaN for a sample no chunk holds.

    Example:
        >>> last_sample_send_times(np.array([4, 8]), np.array([1.0, 2.0]), np.array([3, 4, 9]))
        array([ 1.,  2., nan])
    """
    chunk_ends = np.asarray(chunk_ends)
    index = np.searchsorted(chunk_ends, np.asarray(window_ends), side="right")
    sent = np.full(len(index), np.nan)
    held = index < len(chunk_ends)
    sent[held] = np.asarray(send_times, np.float64)[index[held]]
    return sent


def latency_summary(latencies_s: Sequence[float]) -> dict[str, float | int]:
    """Percentiles of latencies, in milliseconds.

    Args:
        latencies_s: latencies in seconds.

    Returns:
        ``count`` and ``p50_ms``, ``p90_ms``, ``p99_ms``, ``max_ms`` (NaN when empty).

    Example:
        >>> latency_summary([0.010, 0.020, 0.030])["p50_ms"]
        20.0
    """
    values = np.asarray(latencies_s, np.float64) * 1000.0
    summary: dict[str, float | int] = {"count": int(values.size)}
    if values.size == 0:
        summary.update({f"p{percent}_ms": math.nan for percent in LATENCY_PERCENTS})
        summary["max_ms"] = math.nan
        return summary
    for percent, value in zip(LATENCY_PERCENTS, np.percentile(values, LATENCY_PERCENTS),
                              strict=True):
        summary[f"p{percent}_ms"] = round(float(value), 2)
    summary["max_ms"] = round(float(values.max()), 2)
    return summary


def rss_summary(elapsed_s: Sequence[float], rss_bytes: Sequence[int],
                warmup_s: float) -> dict[str, float]:
    """Resident memory after warm-up and at the end, and its trend after warm-up.

    Args:
        elapsed_s: when each sample was taken, seconds from the start.
        rss_bytes: the resident set size at each.
        warmup_s: samples before this are the warm-up.

    Returns:
        ``warm_mib`` (first sample at or after warm-up), ``end_mib``, ``growth_mib``,
        ``peak_mib`` and ``slope_mib_per_min`` (least squares after warm-up).

    Example:
        >>> rss_summary([0, 60, 120], [100 * 2**20, 200 * 2**20, 200 * 2**20], 60)["growth_mib"]
        0.0
    """
    times = np.asarray(elapsed_s, np.float64)
    sizes = np.asarray(rss_bytes, np.float64) / MIB
    warm = times >= min(warmup_s, times.max())
    slope = (float(np.polyfit(times[warm] / 60.0, sizes[warm], 1)[0])
             if warm.sum() >= 2 and np.ptp(times[warm]) > 0 else 0.0)
    first_warm = sizes[warm][0]
    return {"warm_mib": round(float(first_warm), 1), "end_mib": round(float(sizes[-1]), 1),
            "growth_mib": round(float(sizes[-1] - first_warm), 1),
            "peak_mib": round(float(sizes.max()), 1),
            "slope_mib_per_min": round(slope, 3)}


def chosen_sections(only: str | None, memory_minutes: float) -> tuple[str, ...]:
    """The sections to run, in ``SECTIONS`` order.

    Args:
        only: comma-separated section names, or None for the default ones.
        memory_minutes: the memory run's length; > 0 adds ``memory`` to the default.

    Raises:
        LabquakeError: an unknown section, or ``memory`` without a length.

    Example:
        >>> chosen_sections("latency,features", 0)
        ('features', 'latency')
    """
    if only is None:
        wanted = set(DEFAULT_SECTIONS) | ({"memory"} if memory_minutes > 0 else set())
    else:
        wanted = {name.strip() for name in only.split(",") if name.strip()}
        unknown = sorted(wanted - set(SECTIONS))
        if unknown or not wanted:
            raise LabquakeError(f"unknown section(s) {unknown or [only]}; choose from "
                                f"{', '.join(SECTIONS)}")
        if "memory" in wanted and memory_minutes <= 0:
            raise LabquakeError("the memory section needs its length: add "
                                "--memory-minutes M (e.g. 10)")
    return tuple(name for name in SECTIONS if name in wanted)


def _number(value: float, digits: int = 1) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:,.{digits}f}"


def _load_text(section: Mapping[str, Any]) -> str:
    before, after = section.get("load_before"), section.get("load_after")
    if not before or not after:
        return ""
    return f"load {before[0]:.2f} -> {after[0]:.2f}"


def _features_lines(section: Mapping[str, Any]) -> list[str]:
    lines = [f"  per {section['window']:,}-sample window, best of {section['repeats']} "
             f"rounds over {section['windows']} windows (wall, and CPU of all threads):"]
    for key, label in (("full", f"labquake, full set ({section['n_features']})"),
                       ("winners", "labquake, winners' four"),
                       ("reference", "notebook reference, four")):
        entry = section[key]
        lines.append(f"  {label:34s} {_number(entry['ms_per_window'], 2):>9s} ms"
                     f"  {_number(entry['ms_per_s']):>7s} MS/s"
                     f"   CPU {_number(entry['cpu_ms_per_window'], 2):>8s} ms")
    lines.append(f"  reference / labquake, wall: winners' four "
                 f"{_number(section['ratio_winners'])}x, full set "
                 f"{_number(section['ratio_full'])}x; CPU: winners' four "
                 f"{_number(section['cpu_ratio_winners'])}x, full set "
                 f"{_number(section['cpu_ratio_full'])}x")
    agreement = section.get("agreement")
    if agreement:
        lines.append("  same four numbers on one denoised window (reference - labquake): "
                     + ", ".join(f"{name} {difference:+.2e}"
                                 for name, difference in agreement.items()))
    return lines


def _inference_lines(section: Mapping[str, Any]) -> list[str]:
    lines = [f"  median of {section['repeats']} calls, backend {section['backend']} "
             f"({section['devices']}):"]
    for entry in section["batches"]:
        lines.append(f"  batch {entry['batch_size']:>5d}: compiled "
                     f"{_number(entry['compiled_ms'], 2):>8s} ms, Model.predict "
                     f"{_number(entry['keras_predict_ms'], 2):>8s} ms "
                     f"({_number(entry['speedup'])}x); whole {section['kind']} model "
                     f"{_number(entry['model_ms'], 2):>6s} ms")
    return lines


def _ingest_lines(section: Mapping[str, Any]) -> list[str]:
    lines = [f"  {section['seconds']:g} s of a 4 MHz record, chunks of "
             f"{section['chunk_samples']:,} samples, one monitor process:"]
    for entry in section["runs"]:
        lines.append(
            f"  {entry['streams']:>2d} instrument(s): {_number(entry['ms_per_s']):>6s} MS/s"
            f" = {_number(entry['real_time_factor'])}x real time, "
            f"{_number(entry['ms_per_cpu_s']):>6s} MS per CPU s, "
            f"{entry['windows']} windows in {_number(entry['wall_s'], 2)} s "
            f"(produced at {_number(entry['produce_ms_per_s'])} MS/s)")
    return lines


def _latency_lines(section: Mapping[str, Any]) -> list[str]:
    summary = section["latency"]
    return [f"  one instrument at 4 MHz for {section['seconds']:g} s, "
            f"{summary['count']} windows after {section['warmup_s']:g} s of warm-up:",
            f"  last sample sent -> prediction in Redis: p50 {_number(summary['p50_ms'])} ms, "
            f"p90 {_number(summary['p90_ms'])} ms, p99 {_number(summary['p99_ms'])} ms, "
            f"max {_number(summary['max_ms'])} ms",
            f"  monitor CPU: {_number(section['monitor_cpu_share'] * 100)} % of one core"]


def _overlap_lines(section: Mapping[str, Any]) -> list[str]:
    rounds = section.get("repeats", 1)
    lines = [f"  pipeline core over {section['seconds']:g} s of a 4 MHz record"
             + (f", best of {rounds} rounds:" if rounds > 1 else ":")]
    for entry in section["runs"]:
        lines.append(f"  hop {entry['hop']:>7,d}: {_number(entry['ms_per_s']):>6s} MS/s, "
                     f"{entry['windows']} windows, "
                     f"{_number(entry['ms_per_window'], 2)} ms per window")
    lines.append(f"  overlapped / plain throughput: {_number(section['ratio'], 3)}")
    return lines


def _memory_lines(section: Mapping[str, Any]) -> list[str]:
    rss = section["rss"]
    return [f"  monitor RSS over {section['minutes']:g} min at real-time load "
            f"(sampled every {section['sample_s']:g} s):",
            f"  after {section['warmup_s']:g} s warm-up {_number(rss['warm_mib'])} MiB, end "
            f"{_number(rss['end_mib'])} MiB, growth {_number(rss['growth_mib'])} MiB, "
            f"peak {_number(rss['peak_mib'])} MiB, trend "
            f"{_number(rss['slope_mib_per_min'], 3)} MiB/min",
            f"  latency over the run: p50 {_number(section['latency']['p50_ms'])} ms, "
            f"p99 {_number(section['latency']['p99_ms'])} ms"]


_SECTION_LINES: dict[str, Callable[[Mapping[str, Any]], list[str]]] = {
    "features": _features_lines, "inference": _inference_lines, "ingest": _ingest_lines,
    "latency": _latency_lines, "overlap": _overlap_lines, "memory": _memory_lines,
}


def format_table(report: Mapping[str, Any]) -> str:
    """The report as a readable table: a header, then each section's lines.

    Args:
        report: what :func:`run` writes as JSON.

    Returns:
        The text, ending in a newline.
    """
    machine = report["machine"]
    lines = [f"labquake bench, {report['date']}, {machine['cpu']} "
             f"({machine['cpus']} CPUs), Python {machine['python']}, "
             f"numpy {machine['numpy']}",
             f"model: {report['bundle']['description']}"
             + (f", inference threads {threads}"
                if (threads := report.get("inference_threads")) is not None else "")]
    for name, section in report["sections"].items():
        load = _load_text(section)
        lines.append("")
        lines.append(f"{name}" + (f"  ({load})" if load else ""))
        lines.extend(_SECTION_LINES[name](section))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the machine


def machine_info() -> dict[str, Any]:
    """What ran the benchmark: CPU model and count, memory, OS, versions."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / (1 << 20), 1)
    return {"cpu": cpu, "cpus": os.cpu_count(), "memory_gib": memory_gib,
            "system": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__, "hostname": platform.node()}


def _load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise LabquakeError(f"process {pid} reports no resident memory")


def _cpu_seconds(pid: int) -> float:
    # /proc/PID/stat: fields 14 and 15 (user, system) in clock ticks, after the name.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- data and model


def simulated_samples(seconds: float) -> np.ndarray:
    """A simulated lab-earthquake record at 4 MHz, int16."""
    from model.data import simulate

    return simulate.simulate(seconds, sample_rate=REAL_TIME_RATE,
                             seed=SIMULATION_SEED).acoustic_data


@dataclasses.dataclass
class _Model:
    predictor: Any
    path: Path
    description: str


def _bench_model(settings: Settings, workdir: Path, samples: np.ndarray) -> _Model:
    from model.bundle import inference as bundle

    if settings.model:
        loaded = bundle.load(settings.model)
        return _Model(loaded, Path(settings.model), f"{settings.model} ({loaded.version})")
    if bundle.DEFAULT_BUNDLE_PATH.exists():
        loaded = bundle.load_default()
        return _Model(loaded, bundle.DEFAULT_BUNDLE_PATH,
                      f"the bundled default ({loaded.version})")
    return _Model(*_built_bundle(workdir, samples))


def _built_bundle(workdir: Path, samples: np.ndarray) -> tuple[Any, Path, str]:
    """An untrained network with a scaler fitted on ``samples``: timings do not depend
    on the weights."""
    import keras

    from model import network
    from model.bundle import inference as bundle
    from model.features import extract as features
    from stream.core.windows import WINDOW_SAMPLES

    keras.utils.set_random_seed(SIMULATION_SEED)
    count = len(samples) // WINDOW_SAMPLES
    windows = samples[:count * WINDOW_SAMPLES].reshape(count, WINDOW_SAMPLES)
    values = features.extract(windows, np.arange(count, dtype=np.int64) * WINDOW_SAMPLES)
    mean, std = bundle.fit_scaler(values)
    path = workdir / "bench.lqb"
    saved = bundle.save(path, network.build_model(len(features.FEATURE_NAMES)),
                        feature_names=features.FEATURE_NAMES, window=WINDOW_SAMPLES,
                        hop=WINDOW_SAMPLES, scaler_mean=mean, scaler_std=std,
                        training_fingerprint="labquake-bench", metrics={}, alert_policy={})
    return saved, path, "a bundle built for the benchmark (untrained network, no default " \
                        "bundle was installed)"


# ---------------------------------------------------------------- features


def _require_bench_extras() -> None:
    import importlib.util

    missing = [name for name in ("pandas", "librosa") if importlib.util.find_spec(name) is None]
    if missing:
        raise LabquakeError(f"the features benchmark's notebook reference needs "
                            f"{' and '.join(missing)}; {BENCH_EXTRA_HINT}")


def notebook_peaks(x: Any, support: int) -> int:
    """tsfresh's ``number_peaks`` as public notebooks ran it, on a pandas Series."""
    import pandas as pd

    series = pd.Series(x)
    is_peak = pd.Series(True, index=series.index)
    for shift in range(1, support + 1):
        is_peak &= (series > series.shift(shift)) & (series > series.shift(-shift))
    return int(is_peak.sum())


def notebook_winner_features(x: np.ndarray, center: bool = True) -> list[float]:
    """The winners' four from an already denoised segment, the notebooks' way
    (``center=False``: librosa's frames lie wholly in the segment, as labquake's do)."""
    import librosa
    import pandas as pd

    from model.features import extract as features

    rolling_std = pd.Series(x).rolling(features.WINNER_ROLLING_WIDTH).std().dropna().values
    coefficients = librosa.feature.mfcc(y=x, center=center)
    return [float(notebook_peaks(x, features.PEAK_SUPPORT)),
            float(np.percentile(rolling_std, features.WINNER_ROLLING_PERCENT)),
            *(float(coefficients[index].mean()) for index in features.MFCC_COEFFICIENTS)]


def notebook_segment_features(segment: np.ndarray, rng: np.random.Generator) -> list[float]:
    """The notebooks' whole recipe for one raw segment: noise, median, the four."""
    from model.features import extract as features

    x = segment.astype(np.float64) + rng.normal(0.0, features.NOISE_STD, len(segment))
    return notebook_winner_features(x - np.median(x))


def bench_features(samples: np.ndarray, windows: int, repeats: int) -> dict[str, Any]:
    """The features section (see the module docstring)."""
    from model.features import extract as features
    from stream.core.windows import WINDOW_SAMPLES

    count = min(windows, len(samples) // WINDOW_SAMPLES)
    batch = samples[:count * WINDOW_SAMPLES].reshape(count, WINDOW_SAMPLES)
    starts = np.arange(count, dtype=np.int64) * WINDOW_SAMPLES
    rng = np.random.default_rng(SIMULATION_SEED)

    times = best_times({
        "full": lambda: features.extract(batch, starts),
        "winners": lambda: features.extract(batch, starts, names=features.WINNERS_FEATURES),
    }, repeats)
    # The reference after ours, not in turns with them: librosa's mel product runs on a
    # multi-threaded BLAS whose threads spin on after each call, on the other core.
    times.update(best_times(
        {"reference": lambda: [notebook_segment_features(row, rng) for row in batch]}, repeats))
    timed = {name: {"ms_per_window": wall / count * 1000.0,
                    "ms_per_s": count * WINDOW_SAMPLES / wall / 1e6,
                    "cpu_ms_per_window": cpu / count * 1000.0}
             for name, (wall, cpu) in times.items()}
    denoised = features.denoise(batch[:1], starts[:1])[0].astype(np.float64)
    ours = features.extract(batch[:1], starts[:1], names=features.WINNERS_FEATURES)[0]
    # The first window begins on a multiple of 512 on the counter, so labquake's frames
    # (whole, on that grid) are librosa's without centring.
    theirs = notebook_winner_features(denoised, center=False)
    agreement = {name: float(reference - value) for name, reference, value in
                 zip(features.WINNERS_FEATURES, theirs, ours.tolist(), strict=True)}
    reference = timed["reference"]
    return {"window": WINDOW_SAMPLES, "windows": count, "repeats": repeats,
            "n_features": len(features.FEATURE_NAMES), **timed,
            "ratio_winners": reference["ms_per_window"] / timed["winners"]["ms_per_window"],
            "ratio_full": reference["ms_per_window"] / timed["full"]["ms_per_window"],
            "cpu_ratio_winners": (reference["cpu_ms_per_window"]
                                  / timed["winners"]["cpu_ms_per_window"]),
            "cpu_ratio_full": (reference["cpu_ms_per_window"]
                               / timed["full"]["cpu_ms_per_window"]),
            "agreement": agreement}


# ---------------------------------------------------------------- inference


def bench_inference(predictor: Any, repeats: int = INFERENCE_REPEATS) -> dict[str, Any]:
    """The inference section: compiled call against ``Model.predict`` per batch size."""
    import keras

    from model.bundle import inference as bundle

    timings = bundle.benchmark_inference(predictor, INFERENCE_BATCHES, repeats)
    return {"backend": keras.backend.backend(), "devices": _devices(), "repeats": repeats,
            "kind": getattr(predictor, "kind", "seed"),
            "batches": [{**dataclasses.asdict(timing),
                         "speedup": timing.keras_predict_ms / timing.compiled_ms}
                        for timing in timings]}


def _devices() -> str:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return ", ".join(str(device) for device in jax.devices())
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        return ", ".join(device.name for device in gpus) or "CPU only"
    return "CPU"


# ---------------------------------------------------------------- scratch topics and keys


@dataclasses.dataclass(frozen=True)
class _RunNames:
    """One run's own topic, consumer group and Redis namespace."""

    topic: str
    group: str
    namespace: str


@contextlib.contextmanager
def _scratch(settings: Settings) -> Iterator[Callable[[str], _RunNames]]:
    """Hands out fresh run names; deletes their topics and Redis keys at the end."""
    made: list[_RunNames] = []

    def make(label: str) -> _RunNames:
        token = f"{label}-{uuid.uuid4().hex[:8]}"
        names = _RunNames(f"labquake.bench.{token}", f"labquake-bench-{token}",
                          f"labquake-bench-{token}")
        made.append(names)
        return names

    try:
        yield make
    finally:
        if made:
            _remove(settings, made)


def _remove(settings: Settings, runs: Sequence[_RunNames]) -> None:
    import redis
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    from stream.io.security import kafka_client_options, redis_client_options

    try:
        admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap.split(","),
                                 **kafka_client_options(settings))
        try:
            existing = set(admin.list_topics())
            topics = sorted({name for run in runs for name in (run.topic, f"{run.topic}.dlq")
                             if name in existing})
            if topics:
                admin.delete_topics(topics)
        finally:
            admin.close()
    except KafkaError as error:
        log.warning("bench topics not deleted (%s): %s", error,
                    ", ".join(run.topic for run in runs))
    client = redis.Redis.from_url(settings.redis, **redis_client_options(settings))
    try:
        for run in runs:
            keys = list(client.scan_iter(match=f"{run.namespace}:*"))
            if keys:
                client.delete(*keys)
    finally:
        client.close()


# ---------------------------------------------------------------- ingest

INGEST_SEND_BLOCK = 1 << 16  # samples each instrument sends in turn


def produce_record(settings: Settings, topic: str, samples: np.ndarray, streams: int,
                   chunk_samples: int) -> float:
    """Send ``samples`` as ``streams`` instruments, each its own contiguous part, in turn.

    Returns:
        Seconds from the first send until Kafka acknowledged the last chunk.
    """
    from stream.io.instrument import InstrumentProducer

    part = len(samples) // streams
    target = dataclasses.replace(settings, topic=topic)
    producers = [InstrumentProducer(f"bench{index:02d}", sample_rate=REAL_TIME_RATE,
                                    settings=target, chunk_samples=chunk_samples)
                 for index in range(streams)]
    started = time.perf_counter()
    try:
        for offset in range(0, part, INGEST_SEND_BLOCK):
            stop = min(offset + INGEST_SEND_BLOCK, part)
            for index, producer in enumerate(producers):
                producer.send(samples[index * part + offset:index * part + stop])
    finally:
        for producer in producers:
            producer.close()
    return time.perf_counter() - started


class _MonitorClock:
    """Times a monitor from the poll that brought its first message to its last write,
    and stops it (SIGTERM: it drains, stores and commits) once it has read ``expected``
    samples."""

    def __init__(self, monitor: Any, expected: int) -> None:
        self.first: tuple[float, float] | None = None  # (wall, process CPU)
        self.last: tuple[float, float] | None = None
        poll, write = monitor.source.poll, monitor.sink.write
        stopping = False

        def timed_poll(timeout_s: float) -> Any:
            nonlocal stopping
            if monitor.pipeline.counters.samples >= expected and not stopping:
                stopping = True
                os.kill(os.getpid(), signal.SIGTERM)
            messages = poll(timeout_s)
            if messages and self.first is None:
                self.first = (time.perf_counter(), time.process_time())
            return messages

        def timed_write(*args: Any, **kwargs: Any) -> None:
            write(*args, **kwargs)
            self.last = (time.perf_counter(), time.process_time())

        monitor.source.poll = timed_poll
        monitor.sink.write = timed_write


def consume_record(settings: Settings, run: _RunNames, predictor: Any,
                   expected: int) -> dict[str, Any] | None:
    """Run one monitor in this process over ``run.topic`` until it has read ``expected``
    samples; None if nothing came for ``INGEST_GIVE_UP_S``."""
    from stream.app.monitor import Monitor, MonitorOptions

    monitor = Monitor(dataclasses.replace(settings, topic=run.topic),
                      MonitorOptions(group=run.group, namespace=run.namespace,
                                     stop_after_idle_s=INGEST_GIVE_UP_S), predictor)
    clock = _MonitorClock(monitor, expected)
    monitor.run()
    counters = monitor.pipeline.counters
    if counters.samples == 0:
        return None
    if clock.first is None or clock.last is None or counters.samples != expected:
        raise LabquakeError(f"the bench monitor read {counters.samples} of {expected} samples "
                            f"from {run.topic} before {INGEST_GIVE_UP_S:g} s without "
                            "messages; check the broker")
    wall = clock.last[0] - clock.first[0]
    cpu = clock.last[1] - clock.first[1]
    return {"samples": counters.samples, "windows": counters.windows,
            "batches": counters.batches, "wall_s": wall, "cpu_s": cpu,
            **throughput(counters.samples, wall),
            "ms_per_cpu_s": counters.samples / cpu / 1e6}


def bench_ingest(settings: Settings, predictor: Any, samples: np.ndarray,
                 stream_counts: Sequence[int], chunk_samples: int,
                 scratch: Callable[[str], _RunNames]) -> dict[str, Any]:
    """The ingest section (see the module docstring)."""
    # The first call traces and compiles the network: not part of any run.
    predictor.predict(samples[np.newaxis, :predictor.window], np.zeros(1, np.int64))
    runs = []
    for streams in stream_counts:
        run = scratch(f"ingest{streams}")
        usable = len(samples) // streams * streams
        load_before = _load_average()
        produced_s = produce_record(settings, run.topic, samples[:usable], streams,
                                    chunk_samples)
        consumed = consume_record(settings, run, predictor, usable)
        if consumed is None:
            # Seen now and then on a busy machine: the consumer, whose group was formed
            # before it knew the new topic's partition, never got it. A new group reads
            # the same topic.
            log.warning("the bench monitor got nothing from %s; again with a new group",
                        run.topic)
            run = dataclasses.replace(scratch(f"ingest{streams}-again"), topic=run.topic)
            consumed = consume_record(settings, run, predictor, usable)
        if consumed is None:
            raise LabquakeError(f"the bench monitor twice read nothing from {run.topic} in "
                                f"{INGEST_GIVE_UP_S:g} s; check the broker")
        runs.append({"streams": streams, "topic": run.topic, "produce_s": produced_s,
                     "produce_ms_per_s": usable / produced_s / 1e6, **consumed,
                     "load_before": load_before, "load_after": _load_average()})
        log.info("ingest, %d instrument(s): %.1f MS/s", streams, runs[-1]["ms_per_s"])
    return {"seconds": len(samples) / REAL_TIME_RATE, "chunk_samples": chunk_samples,
            "runs": runs}


# ---------------------------------------------------------------- real-time runs

REALTIME_INSTRUMENT = "bench-rt"
REALTIME_CHANNEL = "ae0"


def paced_producer(settings: Settings, topic: str, seconds: float, chunk_samples: int,
                   results: Any) -> None:
    """Send one instrument at 4 MHz in real time; report when each chunk went out.

    Runs in its own process (started by :func:`realtime_run`), so that its pacing and
    the reading of results do not take turns on one interpreter lock. Puts
    ``("started", wall time)`` on ``results`` when sending begins, then
    ``("done", chunk end samples, wall send times)``.
    """
    from stream.io.instrument import InstrumentProducer, Pacer

    loop = simulated_samples(min(seconds, REALTIME_LOOP_SECONDS))
    loop = loop[:len(loop) // chunk_samples * chunk_samples]
    total = int(seconds * REAL_TIME_RATE) // chunk_samples * chunk_samples
    ends = np.empty(total // chunk_samples, np.int64)
    sent_at = np.empty(len(ends))
    pacer = Pacer(REAL_TIME_RATE)
    with InstrumentProducer(REALTIME_INSTRUMENT, REALTIME_CHANNEL, sample_rate=REAL_TIME_RATE,
                            settings=dataclasses.replace(settings, topic=topic),
                            chunk_samples=chunk_samples) as producer:
        results.put(("started", time.time()))
        for index in range(len(ends)):
            sent = index * chunk_samples
            start = sent % len(loop)
            pacer.wait(sent + chunk_samples)
            producer.send(loop[start:start + chunk_samples])
            ends[index] = sent + chunk_samples
            sent_at[index] = time.time()
    results.put(("done", ends, sent_at))


class _PredictionReader(threading.Thread):
    """Notes when each prediction of one stream appears in Redis (a blocking XREAD on
    the stream's prediction history, whose entry ids are the window end samples)."""

    def __init__(self, client: Any, key: str) -> None:
        super().__init__(name="bench-prediction-reader", daemon=True)
        self.arrivals: dict[int, float] = {}
        self._client = client
        self._key = key
        self._stop_requested = threading.Event()

    def run(self) -> None:
        last = "0-0"
        while not self._stop_requested.is_set():
            reply = self._client.xread({self._key: last}, block=XREAD_BLOCK_MS)
            arrived = time.time()
            for _, entries in reply or []:
                for entry_id, _fields in entries:
                    last = entry_id
                    self.arrivals.setdefault(int(entry_id.split(b"-")[0]), arrived)

    def stop(self) -> None:
        self._stop_requested.set()
        self.join()


@dataclasses.dataclass
class RealtimeResult:
    """What one real-time run measured."""

    seconds: float
    latencies_s: np.ndarray
    rss_elapsed_s: list[float]
    rss_bytes: list[int]
    monitor_cpu_s: float


def _start_monitor(settings: Settings, run: _RunNames, model_path: Path, config: str | None,
                   output: Any) -> subprocess.Popen:
    # Addresses go through the environment, not the command line that every user can read.
    repo_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "LABQUAKE_KAFKA_BOOTSTRAP": settings.bootstrap,
           "LABQUAKE_REDIS_URL": settings.redis, "PYTHONUNBUFFERED": "1",
           "LABQUAKE_INFERENCE_THREADS": str(settings.inference_threads),
           "PYTHONPATH": os.pathsep.join(filter(None, (repo_root,
                                                      os.environ.get("PYTHONPATH"))))}
    command = [sys.executable, "-m", "stream", "monitor", "--topic", run.topic,
               "--namespace", run.namespace, "--group", run.group, "--model", str(model_path)]
    if config:
        command += ["--config", config]
    return subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)


def _monitor_failure(process: subprocess.Popen, output: Any, what: str) -> LabquakeError:
    output.seek(0)
    tail = output.read()[-2000:].decode("utf-8", "replace").strip().splitlines()
    return LabquakeError(f"the bench's monitor process {what} (exit {process.poll()}); its "
                         f"last line: {tail[-1] if tail else 'none'}")


def _wait_until_assigned(client: Any, run: _RunNames, process: subprocess.Popen,
                         output: Any) -> None:
    """Until the monitor's heartbeat shows it holds the topic's partition."""
    from stream.io.redis_names import RedisNames

    pattern = RedisNames(run.namespace).heartbeat("*")
    deadline = time.monotonic() + MONITOR_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise _monitor_failure(process, output, "stopped before it was ready")
        for key in client.scan_iter(match=pattern):
            beat = client.get(key)
            if beat and any(name.startswith(run.topic)
                            for name in json.loads(beat)["lag"] or {}):
                return
        time.sleep(0.5)
    raise _monitor_failure(process, output, f"was not ready in {MONITOR_READY_TIMEOUT_S:g} s")


def _stop_monitor(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=MONITOR_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def realtime_run(settings: Settings, model: Any, model_path: Path, seconds: float,
                 chunk_samples: int, scratch: Callable[[str], _RunNames],
                 config: str | None = None) -> RealtimeResult:
    """A monitor process, one instrument sent in real time for ``seconds``; latencies
    of the windows after the warm-up and the monitor's RSS every ``MEMORY_SAMPLE_S``."""
    import redis

    from stream.io.instrument import ensure_topic
    from stream.io.redis_names import RedisNames
    from stream.io.security import kafka_client_options, redis_client_options

    run = scratch("realtime")
    ensure_topic(settings.bootstrap, run.topic, client_options=kafka_client_options(settings))
    client = redis.Redis.from_url(settings.redis, **redis_client_options(settings))
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    with tempfile.TemporaryFile() as output:
        process = _start_monitor(settings, run, model_path, config, output)
        reader = _PredictionReader(client, RedisNames(run.namespace).predictions(
            REALTIME_INSTRUMENT, REALTIME_CHANNEL))
        try:
            _wait_until_assigned(client, run, process, output)
            reader.start()
            producer = context.Process(target=paced_producer, name="bench-producer",
                                       args=(settings, run.topic, seconds, chunk_samples,
                                             results), daemon=True)
            producer.start()
            _, started = _next_result(results, producer)
            cpu_at_start = _cpu_seconds(process.pid)
            rss_elapsed, rss = [], []
            while producer.is_alive() and results.empty():
                rss_elapsed.append(time.time() - started)
                rss.append(_rss_bytes(process.pid))
                time.sleep(min(MEMORY_SAMPLE_S, seconds / 4))
            _, chunk_ends, sent_at = _next_result(results, producer)
            producer.join()
            last_end = _last_window_end(int(chunk_ends[-1]), model.window, model.hop)
            deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
            while last_end not in reader.arrivals and time.monotonic() < deadline:
                if process.poll() is not None:
                    raise _monitor_failure(process, output, "stopped during the run")
                time.sleep(0.2)
            rss_elapsed.append(time.time() - started)
            rss.append(_rss_bytes(process.pid))
            cpu = _cpu_seconds(process.pid) - cpu_at_start
        finally:
            _stop_monitor(process)
            if reader.is_alive():
                reader.stop()
            client.close()
    window_ends = np.array(sorted(reader.arrivals), np.int64)
    arrived = np.array([reader.arrivals[end] for end in window_ends])
    sent = last_sample_send_times(chunk_ends, sent_at, window_ends)
    kept = (window_ends >= LATENCY_WARMUP_S * REAL_TIME_RATE) & np.isfinite(sent)
    return RealtimeResult(seconds, arrived[kept] - sent[kept], rss_elapsed, rss, cpu)


def _next_result(results: Any, producer: Any) -> tuple[Any, ...]:
    """The producer process's next message; an error if it died without one."""
    import queue

    while True:
        try:
            return results.get(timeout=1.0)
        except queue.Empty:
            if not producer.is_alive() and results.empty():
                raise LabquakeError(f"the bench's producer process stopped (exit "
                                    f"{producer.exitcode}) before it reported") from None


def _last_window_end(samples: int, window: int, hop: int) -> int:
    """The last sample of the last complete window in ``samples`` from sample 0."""
    return (samples - window) // hop * hop + window - 1


def bench_latency(result: RealtimeResult) -> dict[str, Any]:
    """The latency section from a real-time run."""
    return {"seconds": result.seconds, "warmup_s": LATENCY_WARMUP_S,
            "latency": latency_summary(result.latencies_s),
            "monitor_cpu_s": result.monitor_cpu_s,
            "monitor_cpu_share": result.monitor_cpu_s / result.seconds}


def bench_memory(result: RealtimeResult) -> dict[str, Any]:
    """The memory section from a (long) real-time run."""
    return {"minutes": result.seconds / 60.0, "sample_s": MEMORY_SAMPLE_S,
            "warmup_s": MEMORY_WARMUP_S,
            "rss": rss_summary(result.rss_elapsed_s, result.rss_bytes, MEMORY_WARMUP_S),
            "rss_samples": [[round(elapsed, 1), round(size / MIB, 1)] for elapsed, size in
                            zip(result.rss_elapsed_s, result.rss_bytes, strict=True)],
            "latency": latency_summary(result.latencies_s),
            "monitor_cpu_share": result.monitor_cpu_s / result.seconds}


# ---------------------------------------------------------------- overlap


def bench_overlap(predictor: Any, samples: np.ndarray, chunk_samples: int,
                  repeats: int = 1) -> dict[str, Any]:
    """The pipeline core over ``samples`` with hop = window and hop = window / 10, each
    the best of ``repeats`` rounds, the two hops taking turns (so load weighs on each
    alike)."""
    from stream.engine.pipeline import Pipeline
    from stream.io.instrument import Chunker

    chunker = Chunker("bench", sample_rate=REAL_TIME_RATE, chunk_samples=chunk_samples)
    chunks = chunker.push(samples)
    predictor.predict(samples[np.newaxis, :predictor.window], np.zeros(1, np.int64))
    hops = (predictor.window, predictor.window // OVERLAP_DIVISOR)
    best: dict[int, tuple[float, int]] = {}
    for _ in range(repeats):
        for hop in hops:
            pipeline = Pipeline(predictor, window=predictor.window, hop=hop)
            started = time.perf_counter()
            for chunk in chunks:
                pipeline.add(chunk)
            pipeline.flush()
            elapsed = time.perf_counter() - started
            if hop not in best or elapsed < best[hop][0]:
                best[hop] = (elapsed, pipeline.counters.windows)
    runs = [{"hop": hop, "windows": best[hop][1], "seconds": best[hop][0],
             "ms_per_window": best[hop][0] / best[hop][1] * 1000.0,
             **throughput(len(samples), best[hop][0])} for hop in hops]
    return {"seconds": len(samples) / REAL_TIME_RATE, "repeats": repeats, "runs": runs,
            "ratio": runs[1]["ms_per_s"] / runs[0]["ms_per_s"]}


# ---------------------------------------------------------------- the verb


def _stream_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of "
                                         "whole numbers") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text}: each instrument count must be >= 1")
    return counts


def _positive(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text} must be > 0")
        return value

    return parse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        VERB, help="measure features, inference, ingest, latency, overlap and memory",
        description=(
            "Measure the monitor side by side in one run and print a table (and JSON with "
            "--json): feature extraction against a notebook-style reference, the "
            "compiled model call against Model.predict, one monitor's ingest through the "
            "real Kafka and Redis, the latency at real-time load, overlapping windows, "
            "and memory over a long run. Needs the services (labquake services up) for "
            "ingest, latency and memory, and pandas and librosa for the features "
            f"reference ({BENCH_EXTRA_HINT})."
        ),
    )
    parser.add_argument("--only", metavar="SECTIONS",
                        help=f"comma-separated sections of: {', '.join(SECTIONS)} "
                             "(default: all but memory)")
    parser.add_argument("--json", metavar="FILE",
                        help="also write the report as JSON to FILE")
    parser.add_argument("--windows", type=_positive(int), default=DEFAULT_WINDOWS,
                        help=f"windows in the features section (default {DEFAULT_WINDOWS})")
    parser.add_argument("--repeats", type=_positive(int), default=DEFAULT_REPEATS,
                        help=f"best of how many timings, in the features and overlap "
                             f"sections (default {DEFAULT_REPEATS})")
    parser.add_argument("--ingest-seconds", type=_positive(float),
                        default=DEFAULT_INGEST_SECONDS, metavar="S",
                        help="seconds of 4 MHz record per ingest run "
                             f"(default {DEFAULT_INGEST_SECONDS:g})")
    parser.add_argument("--streams", type=_stream_counts,
                        default=DEFAULT_STREAM_COUNTS, metavar="N,N,...",
                        help="instrument counts of the ingest runs (default "
                             f"{','.join(map(str, DEFAULT_STREAM_COUNTS))})")
    parser.add_argument("--latency-seconds", type=_positive(float),
                        default=DEFAULT_LATENCY_SECONDS, metavar="S",
                        help=f"length of the real-time run (default {DEFAULT_LATENCY_SECONDS:g})")
    parser.add_argument("--overlap-seconds", type=_positive(float),
                        default=DEFAULT_OVERLAP_SECONDS, metavar="S",
                        help=f"record length of the overlap section "
                             f"(default {DEFAULT_OVERLAP_SECONDS:g})")
    parser.add_argument("--memory-minutes", type=float, default=0.0, metavar="M",
                        help="run the memory section: a real-time run of M minutes "
                             "(default: not run)")
    parser.add_argument("--chunk", type=_positive(int), default=None, metavar="N",
                        help="samples per Kafka message (default: the producer's, 4096)")
    add_options(parser, "bootstrap", "redis", "model", "inference_threads")
    parser.set_defaults(handler=run)
    return parser


def _record_seconds(args: argparse.Namespace, sections: Sequence[str]) -> float:
    from stream.core.windows import WINDOW_SAMPLES

    needed = [args.windows * WINDOW_SAMPLES / REAL_TIME_RATE]
    if "ingest" in sections:
        needed.append(args.ingest_seconds)
    if "overlap" in sections:
        needed.append(args.overlap_seconds)
    return max(needed)


@contextlib.contextmanager
def _quiet(loggers: Mapping[str, int]) -> Iterator[None]:
    """Raise the named loggers' levels for a while (the monitors run here log each alert)."""
    previous = {name: logging.getLogger(name).level for name in loggers}
    for name, level in loggers.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, level in previous.items():
            logging.getLogger(name).setLevel(level)


def _plain(value: Any) -> Any:
    """``value`` as JSON: NumPy values converted, NaN and infinities as null."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run(args: argparse.Namespace) -> int:
    """``labquake bench``: run the chosen sections, print the table, write the JSON."""
    from stream.io.instrument import DEFAULT_CHUNK_SAMPLES

    sections = chosen_sections(args.only, args.memory_minutes)
    if "features" in sections:
        _require_bench_extras()
    settings = resolve(args)
    if NEEDS_SERVICES.intersection(sections):
        from stream.app.monitor import _check_services

        _check_services(settings)
    chunk_samples = args.chunk or DEFAULT_CHUNK_SAMPLES
    from model.bundle.inference import set_inference_threads

    # As the monitor does (its subprocesses take the setting from the same flags).
    set_inference_threads(settings.inference_threads)
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "date": datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat(),
        "machine": machine_info(), "inference_threads": settings.inference_threads,
        "sections": {}}
    log.info("bench: simulating %.1f s of record", _record_seconds(args, sections))
    samples = simulated_samples(_record_seconds(args, sections))
    with tempfile.TemporaryDirectory(prefix="labquake-bench-") as workdir, \
            _scratch(settings) as scratch:
        model = _bench_model(settings, Path(workdir), samples)
        report["bundle"] = {"description": model.description, "path": str(model.path),
                            "version": model.predictor.version,
                            "window": model.predictor.window, "hop": model.predictor.hop}

        def realtime(seconds: float) -> RealtimeResult:
            return realtime_run(settings, model.predictor, model.path, seconds,
                                chunk_samples, scratch, args.config)

        runners: dict[str, Callable[[], dict[str, Any]]] = {
            "features": lambda: bench_features(samples, args.windows, args.repeats),
            "inference": lambda: bench_inference(model.predictor),
            "ingest": lambda: bench_ingest(
                settings, model.predictor,
                samples[:int(args.ingest_seconds * REAL_TIME_RATE)], args.streams,
                chunk_samples, scratch),
            "latency": lambda: bench_latency(realtime(args.latency_seconds)),
            "overlap": lambda: bench_overlap(
                model.predictor, samples[:int(args.overlap_seconds * REAL_TIME_RATE)],
                chunk_samples, args.repeats),
            "memory": lambda: bench_memory(realtime(args.memory_minutes * 60.0)),
        }
        for name in sections:
            log.info("bench: %s", name)
            load_before = _load_average()
            with _quiet(QUIET_LOGGERS):
                section = runners[name]()
            report["sections"][name] = {**section, "load_before": load_before,
                                        "load_after": _load_average()}
    sys.stdout.write(format_table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(_plain(report), indent=2, allow_nan=False) + "\n",
                                   encoding="utf-8")
    return 0
