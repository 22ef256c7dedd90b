"""``labquake soak``: the monitor under real-time load for a long time; errors, lag and memory.

The soak runs what production runs, as separate processes: one simulated instrument per
``--instruments`` (``labquake produce --simulate --realtime``, endless, at
``--sample-rate``) into a topic of its own, and one ``labquake monitor`` reading it and
writing alerts to Redis. Every ``--interval`` seconds it samples the monitor's resident
memory (``/proc``), its heartbeat in Redis (lag, windows, alerts, dead letters) and the
processes' logs; at the end it stops them (SIGTERM: the monitor drains), writes
``report.json`` beside the processes' logs, prints a summary and exits 0 when the run
passed, 1 when it did not:

- no process died before the end, and the monitor stopped cleanly (exit 0);
- no log line at ERROR level and no traceback;
- the monitor kept up: its last lag is under ``MAX_FINAL_LAG_S`` seconds of samples;
- its memory after the warm-up grew by less than ``MAX_RSS_GROWTH_MIB``.

The soak's topics and Redis keys are deleted afterwards unless ``--keep`` (a 30-minute
soak at 4 MHz puts 14 GB into Kafka).

Example:
    labquake soak --minutes 30 --sample-rate 4e6 --output soak-30min
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from stream.config.arguments import at_least, positive_number
from stream.config.options import Settings, add_options, resolve
from stream.core.errors import LabquakeError

log = logging.getLogger(__name__)

VERB = "soak"
DEFAULT_MINUTES = 30.0
DEFAULT_SAMPLE_RATE = 4e6  # the LANL experiment's acquisition rate
DEFAULT_INSTRUMENTS = 1
DEFAULT_INTERVAL_S = 10.0
CHUNK_SAMPLES = 4096  # what `labquake produce` sends per message by default
# Verdict thresholds.
MAX_FINAL_LAG_S = 10.0
MAX_RSS_GROWTH_MIB = 100.0
# Memory is compared with its level after the warm-up (model loaded, first batches run).
WARMUP_S = 60.0
WARMUP_FRACTION = 1 / 6  # of a short soak's duration, when that is less than WARMUP_S
STOP_TIMEOUT_S = 60.0
_LEVEL = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) ", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class Sample:
    """One look at the running monitor."""

    elapsed_s: float
    rss_mib: float
    lag_messages: int | None  # None: no heartbeat yet
    windows: int
    samples: int
    alerts: int
    dead_letters: int


def rss_mib(pid: int) -> float:
    """Resident memory of a process in MiB (Linux ``/proc``).

    Raises:
        LabquakeError: the process is gone or ``/proc`` is not there.
    """
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError as error:
        raise LabquakeError(f"cannot read the memory of process {pid} ({error.strerror}); "
                            "the soak needs Linux's /proc") from None
    raise LabquakeError(f"process {pid} reports no resident memory")


def count_problems(log_text: str) -> dict[str, int]:
    """Log lines at WARNING and at ERROR (or CRITICAL) level, and tracebacks, in a text log.

    Example:
        >>> count_problems("2026-01-01 10:00:00,1 ERROR x: y\\nTraceback (most recent call last):")
        {'warnings': 0, 'errors': 1, 'tracebacks': 1}
    """
    levels = _LEVEL.findall(log_text)
    return {"warnings": levels.count("WARNING"),
            "errors": sum(level != "WARNING" for level in levels),
            "tracebacks": log_text.count("Traceback (most recent call last)")}


def lag_seconds(lag_messages: int, instruments: int, sample_rate: float) -> float:
    """How far behind the monitor is, in seconds of signal: the messages it has yet to read
    (``CHUNK_SAMPLES`` samples each), spread over the instruments.

    Example:
        >>> lag_seconds(1000, 1, 4096.0)
        1000.0
    """
    return lag_messages * CHUNK_SAMPLES / (instruments * sample_rate)


def build_report(samples: Sequence[Sample], *, duration_s: float, instruments: int,
                 sample_rate: float, exit_codes: Mapping[str, int | None],
                 died_early: Iterable[str], problems: Mapping[str, Mapping[str, int]],
                 model_version: str | None) -> dict[str, Any]:
    """The soak's report and verdict from its samples and what became of its processes.

    Args:
        samples: the looks at the monitor, in time order (none if it died at once).
        duration_s: how long the load ran.
        instruments: simulated instruments.
        sample_rate: each instrument's samples per second.
        exit_codes: process name -> exit code after the stop (``None``: had to be killed).
        died_early: names of the processes that exited before the end.
        problems: process name -> :func:`count_problems` of its log.
        model_version: the monitor's model, from its heartbeat.

    Returns:
        A JSON-ready dict; ``report["verdict"]["passed"]`` and the reasons it failed.
    """
    warmup = min(WARMUP_S, duration_s * WARMUP_FRACTION)
    warm = [s for s in samples if s.elapsed_s >= warmup] or samples[-1:]
    lags = [s.lag_messages for s in samples if s.lag_messages is not None]
    last = samples[-1] if samples else Sample(0.0, 0.0, None, 0, 0, 0, 0)
    final_lag = lags[-1] if lags else None
    rss = [s.rss_mib for s in samples]
    report: dict[str, Any] = {
        "duration_s": round(duration_s, 1),
        "instruments": instruments,
        "sample_rate_hz": sample_rate,
        "model_version": model_version,
        "input": {"nominal_samples_per_s": instruments * sample_rate,
                  "processed_samples_per_s": round(last.samples / max(last.elapsed_s, 1e-9))},
        "monitor": {"windows": last.windows, "alerts": last.alerts,
                    "dead_letters": last.dead_letters},
        "lag": {
            "max_messages": max(lags) if lags else None,
            "final_messages": final_lag,
            "max_s": round(lag_seconds(max(lags), instruments, sample_rate), 3) if lags else None,
            "final_s": (round(lag_seconds(final_lag, instruments, sample_rate), 3)
                        if final_lag is not None else None),
        },
        "rss_mib": {
            "first": rss[0] if rss else None, "after_warmup": warm[0].rss_mib if warm else None,
            "max": max(rss) if rss else None, "last": rss[-1] if rss else None,
            "growth_after_warmup": (round(max(s.rss_mib for s in warm) - warm[0].rss_mib, 1)
                                    if warm else None),
        },
        "exit_codes": dict(exit_codes),
        "log_problems": {name: dict(counts) for name, counts in problems.items()},
        "samples": [dataclasses.asdict(sample) for sample in samples],
    }
    reasons = [f"{name} exited before the end" for name in died_early]
    if not samples:
        reasons.append("the monitor was never sampled")
    if exit_codes.get("monitor") != 0:
        reasons.append(f"the monitor stopped with exit code {exit_codes.get('monitor')}, not 0")
    for name, counts in problems.items():
        if counts["errors"] or counts["tracebacks"]:
            reasons.append(f"{name} logged {counts['errors']} error(s) and "
                           f"{counts['tracebacks']} traceback(s)")
    if final_lag is None:
        reasons.append("the monitor never reported its lag")
    elif lag_seconds(final_lag, instruments, sample_rate) > MAX_FINAL_LAG_S:
        reasons.append(f"the monitor ended {report['lag']['final_s']} s behind "
                       f"(limit {MAX_FINAL_LAG_S} s)")
    if (report["rss_mib"]["growth_after_warmup"] or 0.0) > MAX_RSS_GROWTH_MIB:
        reasons.append(f"monitor memory grew {report['rss_mib']['growth_after_warmup']} MiB "
                       f"after the warm-up (limit {MAX_RSS_GROWTH_MIB} MiB)")
    report["verdict"] = {"passed": not reasons, "problems": reasons}
    return report


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """The report in a few lines for the terminal."""
    lag, rss, monitor = report["lag"], report["rss_mib"], report["monitor"]
    errors = sum(c["errors"] + c["tracebacks"] for c in report["log_problems"].values())
    warnings = sum(c["warnings"] for c in report["log_problems"].values())
    verdict = report["verdict"]
    return [
        f"soak: {report['duration_s']:.0f} s, {report['instruments']} instrument(s) at "
        f"{report['sample_rate_hz']:g} Hz; processed {report['input']['processed_samples_per_s']:,}"
        f" samples/s of {report['input']['nominal_samples_per_s']:,.0f}",
        f"monitor: {monitor['windows']} windows, {monitor['alerts']} alerts, "
        f"{monitor['dead_letters']} dead letters; lag max {lag['max_messages']} messages "
        f"({lag['max_s']} s), final {lag['final_messages']} ({lag['final_s']} s)",
        f"memory: {rss['first']} MiB at start, {rss['after_warmup']} after warm-up, max "
        f"{rss['max']}, last {rss['last']} (growth after warm-up {rss['growth_after_warmup']})",
        f"logs: {errors} error(s)/traceback(s), {warnings} warning(s); exit codes "
        f"{report['exit_codes']}",
        "verdict: passed" if verdict["passed"] else
        "verdict: FAILED: " + "; ".join(verdict["problems"]),
    ]


class _Run:
    """The soak's processes, their logs and the monitor's heartbeat."""

    def __init__(self, settings: Settings, args: argparse.Namespace, output: Path,
                 topic: str, namespace: str) -> None:
        self.settings = settings
        self.args = args
        self.output = output
        self.topic = topic
        self.namespace = namespace
        self.processes: dict[str, subprocess.Popen] = {}
        # Children read Kafka, Redis and the security options from this environment, as
        # the soak resolved them (a URL with a password never goes on a command line).
        self.environment = {**os.environ, "LABQUAKE_KAFKA_BOOTSTRAP": settings.bootstrap,
                            "LABQUAKE_REDIS_URL": settings.redis}
        if args.config:
            self.environment["LABQUAKE_CONFIG"] = args.config

    def start(self, name: str, *verb_args: str) -> None:
        with open(self.output / f"{name}.log", "wb") as log_file:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "stream", *verb_args], stdout=log_file,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.environment)

    def alive(self) -> list[str]:
        return [name for name, process in self.processes.items() if process.poll() is None]

    def stop(self) -> dict[str, int | None]:
        """SIGTERM everything (producers first: the monitor drains what they sent)."""
        codes: dict[str, int | None] = {}
        for name in sorted(self.processes, key=lambda name: name == "monitor"):
            process = self.processes[name]
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                codes[name] = process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                codes[name] = None
        return codes

    def log_problems(self) -> dict[str, dict[str, int]]:
        return {name: count_problems((self.output / f"{name}.log").read_text(errors="replace"))
                for name in self.processes}


def _heartbeat(client: Any, namespace: str) -> dict[str, Any] | None:
    import redis

    try:
        keys = list(client.scan_iter(f"{namespace}:monitor:*"))
        raw = client.get(keys[0]) if keys else None
    except (redis.RedisError, OSError) as error:
        log.warning("heartbeat not read: %s", error)
        return None
    return json.loads(raw) if raw else None


def _sample(elapsed_s: float, monitor_pid: int, beat: Mapping[str, Any] | None) -> Sample:
    beat = beat or {}
    lag = beat.get("lag")
    return Sample(
        elapsed_s=round(elapsed_s, 1), rss_mib=round(rss_mib(monitor_pid), 1),
        lag_messages=sum(lag.values()) if isinstance(lag, dict) and lag else None,
        windows=int(beat.get("windows", 0)), samples=int(beat.get("samples", 0)),
        alerts=sum(int(beat.get(f"alerts_{kind}", 0))
                   for kind in ("raised", "updated", "withdrawn", "cleared")),
        dead_letters=int(beat.get("dead_letters", 0)),
    )


def _write_json(path: Path, value: Any) -> None:
    """Write atomically: a reader never sees half a report."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(partial, path)


def _clean_up(settings: Settings, topic: str, namespace: str, redis_client: Any) -> None:
    """Delete the soak's topics and Redis keys (best effort: a failure is only logged)."""
    import redis
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    from stream.io.security import kafka_client_options

    try:
        admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap.split(","),
                                 **kafka_client_options(settings))
        try:
            existing = set(admin.list_topics())
            admin.delete_topics([t for t in (topic, f"{topic}.dlq") if t in existing])
        finally:
            admin.close()
    except KafkaError as error:
        log.warning("soak topic %s not deleted: %s", topic, error)
    try:
        keys = list(redis_client.scan_iter(f"{namespace}:*"))
        if keys:
            redis_client.delete(*keys)
    except (redis.RedisError, OSError) as error:
        log.warning("soak keys %s:* not deleted: %s", namespace, error)




def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        VERB, help="run the monitor under real-time load for a long time; errors, lag, memory",
        description=(
            "Start simulated instruments streaming in real time and a monitor reading them "
            "(separate processes, against the configured Kafka and Redis), sample the "
            "monitor's memory, lag and logs, then stop everything and write report.json. "
            "Exit 0 when no process died, nothing logged an error, the monitor kept up and "
            "its memory stayed flat; 1 otherwise."
        ),
    )
    parser.add_argument("--minutes", type=positive_number, default=DEFAULT_MINUTES,
                        help=f"how long the load runs (default {DEFAULT_MINUTES:g})")
    parser.add_argument("--instruments", type=at_least(1), default=DEFAULT_INSTRUMENTS,
                        help=f"simulated instruments, one stream each "
                             f"(default {DEFAULT_INSTRUMENTS})")
    parser.add_argument("--sample-rate", type=positive_number, default=DEFAULT_SAMPLE_RATE,
                        metavar="HZ", help=f"each instrument's rate (default "
                                           f"{DEFAULT_SAMPLE_RATE:g}, the LANL experiment's)")
    parser.add_argument("--interval", type=positive_number, default=DEFAULT_INTERVAL_S,
                        metavar="SECONDS",
                        help=f"time between samples (default {DEFAULT_INTERVAL_S:g})")
    parser.add_argument("--output", metavar="DIR", default=None,
                        help="folder for report.json and the processes' logs "
                             "(default soak-<UTC time>)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the soak's Kafka topics and Redis keys afterwards")
    add_options(parser, "bootstrap", "redis", "model")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """``labquake soak``: run, sample, stop, report; 0 when the run passed."""
    import redis

    from stream.io.instrument import ensure_topic
    from stream.io.security import (
        describe_kafka,
        kafka_client_options,
        redact_url,
        redis_client_options,
    )

    settings = resolve(args)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    output = Path(args.output or f"soak-{stamp}")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LabquakeError(f"cannot create the soak folder {output} ({error.strerror}); "
                            "choose another with --output") from None
    topic = f"labquake.soak-{stamp}".lower()
    namespace = f"labquake-soak-{stamp}".lower()
    ensure_topic(settings.bootstrap, topic, partitions=args.instruments,
                 client_options=kafka_client_options(settings))
    redis_client = redis.Redis.from_url(settings.redis, socket_timeout=10.0,
                                        **redis_client_options(settings))
    soak = _Run(settings, args, output, topic, namespace)
    model = ["--model", settings.model] if settings.model else []
    duration_s = args.minutes * 60
    samples: list[Sample] = []
    died_early: list[str] = []
    beat: dict[str, Any] | None = None
    try:
        soak.start("monitor", "monitor", "--topic", topic, "--namespace", namespace,
                   "--group", namespace, *model)
        for index in range(args.instruments):
            soak.start(f"producer-{index}", "produce", "--instrument", f"soak{index}",
                       "--simulate", "--seconds", "inf", "--seed", str(index), "--realtime",
                       "--sample-rate", repr(args.sample_rate), "--topic", topic, "--quiet")
        started = time.monotonic()
        print(f"soak: {args.minutes:g} min, {args.instruments} instrument(s) at "
              f"{args.sample_rate:g} Hz, topic {topic}; logs in {output}", flush=True)
        while (elapsed := time.monotonic() - started) < duration_s:
            time.sleep(min(args.interval, max(0.0, duration_s - elapsed)))
            elapsed = time.monotonic() - started
            died_early = [name for name in soak.processes if name not in soak.alive()]
            if "monitor" in died_early:
                break
            beat = _heartbeat(redis_client, namespace) or beat
            samples.append(_sample(elapsed, soak.processes["monitor"].pid, beat))
            last = samples[-1]
            print(f"  {last.elapsed_s:7.0f} s  rss {last.rss_mib:7.1f} MiB  lag "
                  f"{last.lag_messages} msgs  windows {last.windows}  alerts {last.alerts}",
                  flush=True)
            if died_early:
                break
        duration_s = time.monotonic() - started
    finally:
        exit_codes = soak.stop()
        if not args.keep:
            _clean_up(settings, topic, namespace, redis_client)
        redis_client.close()
    report = build_report(samples, duration_s=duration_s, instruments=args.instruments,
                          sample_rate=args.sample_rate, exit_codes=exit_codes,
                          died_early=died_early, problems=soak.log_problems(),
                          model_version=(beat or {}).get("model_version"))
    report.update(kafka=describe_kafka(settings), redis=redact_url(settings.redis), topic=topic)
    _write_json(output / "report.json", report)
    for line in summary_lines(report):
        print(line, flush=True)
    print(f"report: {output / 'report.json'}", flush=True)
    return 0 if report["verdict"]["passed"] else 1
