"""stream.tools.bench: the pure parts (timing arithmetic, latency mapping, summaries, the table)."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

from stream.core.errors import LabquakeError
from stream.tools import bench

pytestmark = pytest.mark.unit


def test_throughput_and_real_time_factor():
    assert bench.throughput(40_000_000, 2.0) == {"ms_per_s": 20.0, "real_time_factor": 5.0}


def test_best_times_warm_up_then_take_turns_and_keep_the_fastest(monkeypatch):
    calls = []
    # (start, end) of each timed call, in turns a, b, a, b: a takes 20 then 5 ms of wall,
    # b 10 then 30 ms; the CPU clock runs at half the wall's pace.
    walls = iter([0.0, 0.020, 1.0, 1.010, 2.0, 2.005, 3.0, 3.030])
    cpus = iter([0.0, 0.010, 1.0, 1.005, 2.0, 2.0025, 3.0, 3.015])
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(walls))
    monkeypatch.setattr(bench.time, "process_time", lambda: next(cpus))
    best = bench.best_times({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 2)
    assert calls == ["a", "b", "a", "b", "a", "b"]  # one warm-up each, then two rounds
    assert best["a"] == pytest.approx((0.005, 0.0025))
    assert best["b"] == pytest.approx((0.010, 0.005))


class _CountingPredictor:
    """Any object with .version, .window, .hop and .predict runs in the pipeline core."""

    version, window, hop = "stub", 4_000, 4_000

    def __init__(self) -> None:
        self.windows = 0

    def predict(self, windows, start_samples):
        self.windows += len(windows)
        n = len(windows)
        return np.full(n, 1.0), np.full(n, 1.0), np.zeros(n)


def test_overlap_takes_turns_and_keeps_each_hops_fastest_round(monkeypatch):
    # Rounds of (plain, overlapped): plain 4 then 2 s, overlapped 9 then 10 s of wall.
    walls = iter([0.0, 4.0, 10.0, 19.0, 20.0, 22.0, 30.0, 40.0])
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(walls))
    predictor = _CountingPredictor()
    samples = np.zeros(40_960, np.int16)  # ten whole chunks of 4,096
    section = bench.bench_overlap(predictor, samples, 4_096, repeats=2)
    plain, overlapped = section["runs"]
    assert (plain["hop"], overlapped["hop"]) == (4_000, 400)
    assert (plain["windows"], overlapped["windows"]) == (10, 93)
    assert (plain["seconds"], overlapped["seconds"]) == (2.0, 9.0)
    assert section["ratio"] == pytest.approx(2.0 / 9.0)
    assert section["repeats"] == 2
    assert predictor.windows == 1 + 2 * (10 + 93)  # a warm-up window, then every round
    assert "best of 2 rounds" in "\n".join(bench._overlap_lines(section))


def test_each_window_is_timed_from_the_chunk_that_holds_its_last_sample():
    chunk_ends = np.array([4096, 8192, 12288])
    sent = np.array([10.0, 10.001, 10.002])
    # Sample 4095 is the last of the first chunk, 4096 the first of the second.
    ends = np.array([4095, 4096, 12287, 12288])
    times = bench.last_sample_send_times(chunk_ends, sent, ends)
    np.testing.assert_array_equal(times[:3], [10.0, 10.001, 10.002])
    assert math.isnan(times[3])  # never sent


def test_latency_summary_percentiles_in_milliseconds():
    latencies = np.arange(1, 101) / 1000.0  # 1 ms .. 100 ms
    summary = bench.latency_summary(latencies)
    assert summary["count"] == 100
    assert summary["p50_ms"] == pytest.approx(50.5)
    assert summary["p99_ms"] == pytest.approx(99.01)
    assert summary["max_ms"] == 100.0


def test_latency_summary_of_nothing_is_not_a_number():
    summary = bench.latency_summary([])
    assert summary["count"] == 0 and math.isnan(summary["p99_ms"])


def test_rss_summary_flat_after_warm_up_has_no_trend():
    elapsed = [0, 30, 60, 120, 180, 240]
    mib = [80, 150, 200, 200, 201, 200]
    summary = bench.rss_summary(elapsed, [m * 2**20 for m in mib], warmup_s=60)
    assert summary["warm_mib"] == 200.0 and summary["end_mib"] == 200.0
    assert summary["growth_mib"] == 0.0 and summary["peak_mib"] == 201.0
    assert abs(summary["slope_mib_per_min"]) < 0.5


def test_rss_summary_sees_a_leak():
    elapsed = np.arange(0, 601, 60)
    rss = (100 + 2.0 * elapsed / 60) * 2**20  # 2 MiB a minute
    summary = bench.rss_summary(elapsed, rss, warmup_s=60)
    assert summary["slope_mib_per_min"] == pytest.approx(2.0)
    assert summary["growth_mib"] == pytest.approx(18.0)


@pytest.mark.parametrize(("only", "minutes", "expected"), [
    (None, 0, bench.DEFAULT_SECTIONS),
    (None, 10, (*bench.DEFAULT_SECTIONS, "memory")),
    ("overlap, features", 0, ("features", "overlap")),
    ("memory", 1, ("memory",)),
])
def test_chosen_sections(only, minutes, expected):
    assert bench.chosen_sections(only, minutes) == expected


@pytest.mark.parametrize(("only", "minutes", "message"), [
    ("features,speed", 0, "unknown section"),
    (",", 0, "unknown section"),
    ("memory", 0, "--memory-minutes"),
])
def test_chosen_sections_refuses(only, minutes, message):
    with pytest.raises(LabquakeError, match=message):
        bench.chosen_sections(only, minutes)


def test_last_window_end_on_the_hop_grid():
    assert bench._last_window_end(450_000, 150_000, 150_000) == 449_999
    assert bench._last_window_end(449_999, 150_000, 150_000) == 299_999
    assert bench._last_window_end(300_000, 150_000, 15_000) == 299_999


def _report() -> dict:
    return {
        "date": "2026-11-26T12:00:00+00:00",
        "machine": {"cpu": "Test CPU", "cpus": 2, "python": "3.11.7", "numpy": "2.4.6"},
        "bundle": {"description": "the bundled default (v1)"},
        "sections": {
            "features": {
                "window": 150_000, "windows": 16, "repeats": 5, "n_features": 33,
                "full": {"ms_per_window": 4.0, "ms_per_s": 37.5, "cpu_ms_per_window": 4.0},
                "winners": {"ms_per_window": 2.5, "ms_per_s": 60.0, "cpu_ms_per_window": 2.5},
                "reference": {"ms_per_window": 40.0, "ms_per_s": 3.75,
                              "cpu_ms_per_window": 50.0},
                "ratio_winners": 16.0, "ratio_full": 10.0,
                "cpu_ratio_winners": 20.0, "cpu_ratio_full": 12.5,
                "agreement": {"num_peaks_2": 0.0},
                "load_before": [1.0, 1.0, 1.0], "load_after": [1.5, 1.0, 1.0]},
            "latency": {
                "seconds": 20.0, "warmup_s": 3.0, "monitor_cpu_share": 0.3,
                "latency": {"count": 453, "p50_ms": 12.0, "p90_ms": 15.0, "p99_ms": math.nan,
                            "max_ms": 40.0}},
            "overlap": {"seconds": 4.0, "ratio": 0.11, "runs": [
                {"hop": 150_000, "windows": 106, "ms_per_s": 30.0, "ms_per_window": 5.0},
                {"hop": 15_000, "windows": 1060, "ms_per_s": 3.3, "ms_per_window": 4.5}]},
        },
    }


def test_table_shows_every_section_and_its_numbers():
    table = bench.format_table(_report())
    assert table.startswith("labquake bench, 2026-11-26T12:00:00+00:00, Test CPU (2 CPUs)")
    assert "model: the bundled default (v1)" in table
    assert "features  (load 1.00 -> 1.50)" in table
    assert "labquake, full set (33)" in table and "37.5 MS/s" in table
    assert "wall: winners' four 16.0x, full set 10.0x; CPU: winners' four 20.0x" in table
    assert "p50 12.0 ms" in table and "p99 n/a ms" in table
    assert "hop  15,000" in table and "overlapped / plain throughput: 0.110" in table
    assert table.endswith("\n")


def test_report_json_has_no_nan():
    text = json.dumps(bench._plain(_report()), allow_nan=False)
    assert json.loads(text)["sections"]["latency"]["latency"]["p99_ms"] is None


def test_missing_reference_libraries_give_one_line_with_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *rest: None if name == "librosa" else real(name, *rest))
    with pytest.raises(LabquakeError) as raised:
        bench._require_bench_extras()
    message = str(raised.value)
    assert "librosa" in message and "pip install 'labquake[bench]'" in message
    assert "\n" not in message


def test_notebook_peak_count_matches_the_feature_definition():
    from model.features import extract as features

    rng = np.random.default_rng(4)
    x = rng.normal(size=5000).astype(np.float32)
    ours = features._peak_flags(x[np.newaxis], 2, 2).sum()
    assert bench.notebook_peaks(x, 2) == ours
    assert bench.notebook_peaks(np.array([0, 1, 2, 1, 0, 5, 0], np.float32), 2) == 1


def test_parser_defaults_and_bad_values():
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    bench.add_parser(subparsers)
    args = parser.parse_args(["bench"])
    assert args.streams == bench.DEFAULT_STREAM_COUNTS and args.memory_minutes == 0.0
    assert parser.parse_args(["bench", "--streams", "2,8"]).streams == (2, 8)
    for bad in (["--streams", "0,4"], ["--streams", "a"], ["--repeats", "0"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["bench", *bad])
