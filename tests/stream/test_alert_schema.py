"""docs/alert.schema.json describes the alert objects that replay prints and the sink stores."""

from __future__ import annotations

import io
import json

import jsonschema
import numpy as np
import pytest

from stream.app.replay import replay, write_events
from stream.core.alert_policy import AlertPolicyConfig
from stream.core.countdown import CountdownInterval
from stream.core.wire import Chunk
from stream.engine.pipeline import Pipeline
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.unit

SCHEMA_PATH = REPO_ROOT / "docs" / "alert.schema.json"


def alert_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


class Cycles:
    """P(failure) high for two windows in every five, TSF resetting in some cycles and the
    TTF jumping in others: alerts of every kind."""

    version = "20260101T000000Z-0123abcd"

    def predict(self, windows, start_samples):
        starts = np.asarray(start_samples)
        phase, cycle = (starts // 4) % 5, starts // 20
        p = np.where(phase < 2, 0.9, np.where(phase >= 3, 0.1, 0.4))
        tsf = np.where((phase == 3) & (cycle % 2 == 0), 0.2, 5.0)
        ttf = np.where(phase == 1, 2.0, 0.3)
        return ttf, tsf, p


EPISODES = AlertPolicyConfig(consecutive=1, withdraw_after_s=0.0, refractory_s=0.0,
                             update_step_s=0.5, warmup_s=0.05,
                             interval=CountdownInterval(0.8, (), (-0.1,), (0.2,), (50,)))


def _replayed_lines(policy: AlertPolicyConfig = EPISODES) -> list[dict]:
    core = Pipeline(Cycles(), window=4, hop=4, max_batch=7, policy_config=policy)
    chunks = (Chunk("rig1", "ae0", start, 100.0, start / 100.0,
                    np.zeros(16, np.int16)) for start in range(0, 400, 16))
    output = io.StringIO()
    write_events(replay(chunks, core), output, predictions=True)
    return [json.loads(line) for line in output.getvalue().splitlines()]


def test_every_alert_replay_prints_is_valid():
    validator = alert_validator()
    for policy in (EPISODES, AlertPolicyConfig()):
        lines = _replayed_lines(policy)
        alerts = [line for line in lines if line["kind"] != "prediction"]
        for alert in alerts:
            validator.validate(alert)
    alerts = [line for line in _replayed_lines() if line["kind"] != "prediction"]
    assert {alert["kind"] for alert in alerts} == {"raised", "updated", "withdrawn", "cleared"}
    assert any(line["warming_up"] for line in _replayed_lines() if line["kind"] == "prediction")


def test_the_schema_rejects_what_is_not_an_alert():
    validator = alert_validator()
    lines = _replayed_lines()
    alert = next(line for line in lines if line["kind"] == "raised")
    prediction = next(line for line in lines if line["kind"] == "prediction")
    broken = [
        prediction,
        {key: value for key, value in alert.items() if key != "model_version"},
        {**alert, "p_failure": 1.5},
        {**alert, "reason": "failure_passed"},  # a raise never has a clearing reason
        {**alert, "failure_time": None},  # a raise always has a countdown
        {**alert, "episode_id": "rig1/ae0"},
        {key: value for key, value in alert.items() if key != "warming_up"},
        {**alert, "alert_id": "rig1-ae0"},
        {**alert, "extra": 1},
    ]
    for candidate in broken:
        assert not validator.is_valid(candidate), candidate
