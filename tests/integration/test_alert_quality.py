"""``deploy/alert-quality``: alert quality measured end to end, through Kafka, the monitor
and Redis, equals ``labquake evaluate``'s offline score of the same simulated records, calm-
alert metrics and the countdown interval's coverage included."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.integration.conftest import TEST_SAMPLE_RATE

pytestmark = pytest.mark.integration

SECONDS, SEEDS = "40", ("5", "6")
# Every figure both report; they must agree exactly.
SHARED = ("alert_recall", "alert_precision", "n_failures", "n_detected", "n_raises",
          "lead_time_median_s", "raises_per_failure", "false_alarms_per_hour",
          "n_false_alarms", "missed_failures", "lead_time_p10_s", "lead_time_p50_s",
          "lead_time_p90_s", "withdrawn_per_hour", "n_withdrawn", "n_updated",
          "first_raise_precision", "observed_hours", "interval_coverage",
          "interval_nominal_coverage", "n_interval_failures")


def test_the_alert_log_scores_as_evaluate_scores_the_record(services, small_bundle):
    env = {**os.environ, "ALERT_QUALITY_SERVICES": "external", "ALERT_QUALITY_IDLE_S": "4",
           "LABQUAKE_KAFKA_BOOTSTRAP": services.bootstrap,
           "LABQUAKE_REDIS_URL": services.redis_url}
    measured = subprocess.run(
        ["deploy/alert-quality", SECONDS, ",".join(SEEDS), str(small_bundle),
         str(TEST_SAMPLE_RATE)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert measured.returncode == 0, measured.stderr[-3000:]
    end_to_end = json.loads(measured.stdout)
    offline = json.loads(subprocess.run(
        [sys.executable, "-m", "stream", "evaluate", "--model", str(small_bundle),
         "--simulate", SECONDS, "--sim-seed", *SEEDS, "--sample-rate", str(TEST_SAMPLE_RATE),
         "--json", "--quiet"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=True).stdout)
    # The test bundle's P(failure) hovers near its threshold: many alerts to compare.
    print("offline:", offline)
    assert offline["n_raises"] >= 2 and offline["n_failures"] >= 3
    assert offline["n_raises"] + offline["n_updated"] + offline["n_withdrawn"] >= 10
    for key in SHARED:
        assert end_to_end[key] == pytest.approx(offline[key], rel=1e-12), key
    assert set(end_to_end["per_seed"]) == set(SEEDS)
    assert end_to_end["n_alerts_logged"] >= end_to_end["n_raises"]
