"""``deploy/alert-quality``: alert quality measured end to end, through Kafka, the monitor
and Redis, equals ``labquake evaluate``'s offline score of the same simulated record."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.integration.conftest import TEST_SAMPLE_RATE

pytestmark = pytest.mark.integration

SECONDS, SEED = "40", "5"


def test_the_alert_log_scores_as_evaluate_scores_the_record(services, small_bundle):
    env = {**os.environ, "ALERT_QUALITY_SERVICES": "external", "ALERT_QUALITY_IDLE_S": "4",
           "LABQUAKE_KAFKA_BOOTSTRAP": services.bootstrap,
           "LABQUAKE_REDIS_URL": services.redis_url}
    measured = subprocess.run(
        ["deploy/alert-quality", SECONDS, SEED, str(small_bundle), str(TEST_SAMPLE_RATE)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert measured.returncode == 0, measured.stderr[-3000:]
    end_to_end = json.loads(measured.stdout)
    offline = json.loads(subprocess.run(
        [sys.executable, "-m", "stream", "evaluate", "--model", str(small_bundle),
         "--simulate", SECONDS, "--sim-seed", SEED, "--sample-rate", str(TEST_SAMPLE_RATE),
         "--json", "--quiet"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=True).stdout)
    # The test bundle's P(failure) hovers near its threshold: many raises to compare.
    assert offline["n_raises"] >= 5 and offline["n_failures"] >= 3
    for key in ("alert_recall", "alert_precision", "n_failures", "n_raises"):
        assert end_to_end[key] == offline[key], key
    assert end_to_end["n_alerts_logged"] >= end_to_end["n_raises"]
