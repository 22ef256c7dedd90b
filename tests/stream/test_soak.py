"""The soak's bookkeeping: log problems, lag in seconds, the report and its verdict."""

from __future__ import annotations

import os

import pytest

from stream.tools.soak import (
    MAX_FINAL_LAG_S,
    MAX_RSS_GROWTH_MIB,
    Sample,
    build_report,
    count_problems,
    lag_seconds,
    rss_mib,
    summary_lines,
)

pytestmark = pytest.mark.unit

CLEAN = {"warnings": 0, "errors": 0, "tracebacks": 0}


def _samples(rss: list[float], lags: list[int | None], step_s: float = 60.0) -> list[Sample]:
    return [Sample(elapsed_s=(index + 1) * step_s, rss_mib=value, lag_messages=lag,
                   windows=10 * (index + 1), samples=4_000_000 * (index + 1) * int(step_s),
                   alerts=index, dead_letters=0)
            for index, (value, lag) in enumerate(zip(rss, lags, strict=True))]


def _report(samples: list[Sample], **changes):
    arguments = {"duration_s": 600.0, "instruments": 1, "sample_rate": 4e6,
                 "exit_codes": {"monitor": 0, "producer-0": 143}, "died_early": [],
                 "problems": {"monitor": CLEAN, "producer-0": CLEAN}, "model_version": "v1"}
    return build_report(samples, **{**arguments, **changes})


def test_a_steady_run_passes_and_reports_its_numbers():
    report = _report(_samples([700, 710, 712, 711, 713], [3, 1, 0, 2, 1]))
    assert report["verdict"] == {"passed": True, "problems": []}
    assert report["rss_mib"] == {"first": 700, "after_warmup": 700, "max": 713, "last": 713,
                                 "growth_after_warmup": 13}
    assert report["lag"]["max_messages"] == 3 and report["lag"]["final_messages"] == 1
    assert report["lag"]["final_s"] == pytest.approx(4096 / 4e6, abs=1e-3)
    assert report["input"]["processed_samples_per_s"] == 4_000_000
    assert summary_lines(report)[-1] == "verdict: passed"


def test_the_warm_up_is_not_counted_as_growth():
    # Model loading and the first batches come before the warm-up ends (60 s here).
    report = _report(_samples([200, 650, 700, 705], [None, 5, 0, 0], step_s=30.0))
    assert report["rss_mib"]["after_warmup"] == 650
    assert report["rss_mib"]["growth_after_warmup"] == 55
    assert report["verdict"]["passed"]


@pytest.mark.parametrize(("change", "reason"), [
    ({"rss": [700, 700 + MAX_RSS_GROWTH_MIB + 1]}, "memory grew"),
    ({"lags": [0, int(MAX_FINAL_LAG_S * 4e6 / 4096) + 1]}, "behind"),
    ({"lags": [None, None]}, "never reported its lag"),
    ({"exit_codes": {"monitor": 1, "producer-0": 143}}, "exit code 1"),
    ({"died_early": ["producer-0"]}, "producer-0 exited before the end"),
    ({"problems": {"monitor": {"warnings": 3, "errors": 1, "tracebacks": 0}}},
     "monitor logged 1 error"),
])
def test_each_kind_of_trouble_fails_the_run_and_says_why(change, reason):
    rss = change.pop("rss", [700, 700])
    lags = change.pop("lags", [0, 0])
    report = _report(_samples(rss, lags), **change)
    assert not report["verdict"]["passed"]
    assert any(reason in problem for problem in report["verdict"]["problems"])
    assert summary_lines(report)[-1].startswith("verdict: FAILED: ")


def test_a_monitor_that_died_at_once_still_gives_a_report():
    report = _report([], exit_codes={"monitor": 1}, died_early=["monitor"])
    assert not report["verdict"]["passed"]
    assert "the monitor was never sampled" in report["verdict"]["problems"]
    assert report["rss_mib"]["max"] is None
    assert len(summary_lines(report)) == 5


def test_log_problems_are_counted_by_level():
    log = "\n".join([
        "2026-11-26 12:00:00,001 INFO labquake.monitor: monitor started",
        "2026-11-26 12:00:01,002 WARNING kafka.cluster: No node available",
        "2026-11-26 12:00:02,003 ERROR stream.io.redis_sink: boom",
        "E0000 00:00:1795693984.059493   31855 cuda_platform.cc:52] failed call to cuInit",
        "Traceback (most recent call last):",
        "2026-11-26 12:00:03,004 CRITICAL x: y",
    ])
    assert count_problems(log) == {"warnings": 1, "errors": 2, "tracebacks": 1}


def test_lag_in_seconds_spreads_messages_over_instruments():
    assert lag_seconds(2000, 2, 4096.0) == 1000.0


def test_rss_of_this_process_is_read_from_proc():
    assert 1 < rss_mib(os.getpid()) < 100_000
