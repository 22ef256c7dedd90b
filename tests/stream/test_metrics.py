"""The monitor's Prometheus metrics: what they report, and the endpoint that serves them."""

from __future__ import annotations

import socket
import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream.app import metrics as metrics_module
from stream.app.metrics import LatencyClock, MonitorMetrics, TimedPredictor, serve
from stream.core.errors import LabquakeError
from stream.core.wire import Chunk
from stream.engine.pipeline import Pipeline

pytestmark = pytest.mark.unit


def samples(metrics: MonitorMetrics) -> dict[tuple[str, tuple], float]:
    """Every sample of the exposition: (name, sorted labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(metrics.exposition()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


class Rising:
    """A predictor whose P(failure) rises then falls, so the policy raises and clears."""

    version = "v-test"
    window = 4
    hop = 4

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, windows, start_samples):
        n = len(windows)
        p = np.where(np.asarray(start_samples) < 40, 0.9, 0.0)
        self.calls += 1
        return np.full(n, 1.0), np.full(n, 5.0), p


def test_running_totals_are_read_when_scraped_and_alerts_carry_their_kind():
    metrics = MonitorMetrics()
    totals = {"windows": 3, "alerts_raised": 2, "alerts_cleared": 1, "dead_letters": 4}
    metrics.watch(lambda: totals)
    totals["windows"] = 7  # read at scrape time, not at registration
    found = samples(metrics)
    assert found[("labquake_windows_total", ())] == 7
    assert found[("labquake_alerts_total", (("kind", "raised"),))] == 2
    assert found[("labquake_alerts_total", (("kind", "cleared"),))] == 1
    assert found[("labquake_dead_letters_total", ())] == 4
    assert ("labquake_samples_total", ()) not in found  # not given, not invented


def test_a_pipeline_with_a_timed_predictor_reports_every_batch():
    metrics = MonitorMetrics()
    predictor = Rising()
    core = Pipeline(TimedPredictor(predictor, metrics), window=4, hop=4, max_batch=3)
    events = core.add(Chunk("rig1", "ae0", 0, 100.0, 0.0, np.zeros(80, np.int16)))
    events += core.flush()
    found = samples(metrics)
    assert found[("labquake_batch_size_windows_count", ())] == predictor.calls == 7
    assert found[("labquake_batch_size_windows_sum", ())] == 20 == core.counters.windows
    assert found[("labquake_inference_seconds_count", ())] == 7
    assert {event.model_version for event in events if event.kind == "prediction"} == {"v-test"}
    assert core.predictor.window == 4  # everything but predict is the wrapped predictor's


def test_a_timed_predictor_passes_the_block_cache_through():
    from tests.stream.test_pipeline import FeatureVarianceModel

    metrics = MonitorMetrics()
    model = FeatureVarianceModel(15_000)
    core = Pipeline(TimedPredictor(model, metrics), window=15_000, hop=3_000, max_batch=4)
    samples_ = np.random.default_rng(2).integers(-50, 50, 40_000).astype(np.int16)
    events = core.add(Chunk("rig1", "ae0", 0, 1000.0, 0.0, samples_)) + core.flush()
    assert model.cached_calls == 3 and sum(event.kind == "prediction" for event in events) == 9
    assert samples(metrics)[("labquake_batch_size_windows_sum", ())] == 9


def test_lag_gauges_follow_the_assignment_and_the_model_series_follows_the_reload():
    metrics = MonitorMetrics()
    metrics.set_lag({"t/0": 5, "t/1": 0})
    metrics.set_lag({"t/1": 2})
    metrics.set_model("v1")
    metrics.set_model("v2")
    found = samples(metrics)
    assert found[("labquake_consumer_lag_messages", (("partition", "t/1"),))] == 2
    assert ("labquake_consumer_lag_messages", (("partition", "t/0"),)) not in found
    assert found[("labquake_model_info", (("version", "v2"),))] == 1
    assert ("labquake_model_info", (("version", "v1"),)) not in found


def test_latency_runs_from_reading_the_windows_last_chunk():
    clock = LatencyClock()
    stream = ("rig1", "ae0")
    clock.received(stream, 0, 100, at=1.0)
    clock.received(stream, 100, 200, at=2.0)
    clock.received(stream, 0, 100, at=5.0)  # a re-delivery does not restart the clock
    assert clock.stored(stream, 99, at=3.0) == 2.0
    assert clock.stored(stream, 150, at=3.5) == 1.5
    assert clock.stored(stream, 250, at=4.0) is None  # its chunk was read before a restart
    assert clock.stored(("rig2", "ae0"), 99, at=4.0) is None
    clock.received(stream, 300, 400, at=6.0)
    clock.forget(stream)
    assert clock.stored(stream, 350, at=7.0) is None


def test_the_endpoint_serves_the_exposition_on_localhost_and_closes():
    metrics = MonitorMetrics()
    metrics.watch(lambda: {"samples": 150_000})
    server = serve(metrics, "127.0.0.1", 0)
    try:
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(server.url, timeout=10) as reply:
            body = reply.read().decode()
        assert "labquake_samples_total 150000.0" in body.splitlines()
    finally:
        server.close()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), 2):
        pass


def test_a_port_in_use_is_one_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(LabquakeError, match=rf"cannot serve metrics on 127.0.0.1:{port}"):
            serve(MonitorMetrics(), "127.0.0.1", port)


def test_every_watched_counter_has_a_labquake_name():
    for name, help_text, _ in metrics_module.WATCHED_COUNTERS.values():
        assert name.startswith("labquake_") and not name.endswith("_total")
        assert help_text.endswith(".")
