"""docs/alert.schema.json describes the alert objects that replay prints and the sink stores."""

from __future__ import annotations

import io
import json

import jsonschema
import numpy as np
import pytest

from stream.app.replay import replay, write_events
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
    """P(failure) high for two windows in every five, TSF resetting after: alerts of
    every reason."""

    version = "20260101T000000Z-0123abcd"

    def predict(self, windows, start_samples):
        phase = (np.asarray(start_samples) // 4) % 5
        p = np.where(phase < 2, 0.9, np.where(phase == 4, 0.1, 0.4))
        tsf = np.where(phase == 3, 0.2, 5.0)
        return np.full(len(windows), 0.3), tsf, p


def _replayed_lines() -> list[dict]:
    core = Pipeline(Cycles(), window=4, hop=4, max_batch=7)
    chunks = (Chunk("rig1", "ae0", start, 100.0, start / 100.0,
                    np.zeros(16, np.int16)) for start in range(0, 400, 16))
    output = io.StringIO()
    write_events(replay(chunks, core), output, predictions=True)
    return [json.loads(line) for line in output.getvalue().splitlines()]


def test_every_alert_replay_prints_is_valid():
    validator = alert_validator()
    alerts = [line for line in _replayed_lines() if line["kind"] in ("raised", "cleared")]
    assert {alert["kind"] for alert in alerts} == {"raised", "cleared"}
    assert {alert["reason"] for alert in alerts} >= {"probability_high", "failure_passed"}
    for alert in alerts:
        validator.validate(alert)


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
        {**alert, "alert_id": "rig1-ae0"},
        {**alert, "extra": 1},
    ]
    for candidate in broken:
        assert not validator.is_valid(candidate), candidate
