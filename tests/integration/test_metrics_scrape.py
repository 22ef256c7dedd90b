"""Prometheus scrapes a running monitor: the numbers match what reached Redis and Kafka."""

from __future__ import annotations

import json
import signal
import time
import urllib.request

import pytest
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from stream.core import wire
from tests.integration.conftest import (
    TEST_SAMPLE_RATE,
    TEST_WINDOW,
    finish,
    labquake,
    monitor_args,
    wait_for,
)

RECORD_SECONDS = 40


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_a_scrape_reports_what_the_monitor_did(
        services, make_topic, unique_name, redis_client, small_record, small_bundle):
    topic = make_topic(unique_name)
    make_topic(f"{unique_name}.dlq")
    code, _, err = finish(labquake("produce", "--instrument", "rig1", "--data",
                                   str(small_record), "--topic", topic, "--quiet",
                                   services=services))
    assert code == 0, err
    producer = KafkaProducer(bootstrap_servers=services.bootstrap, acks="all")
    producer.send(topic, key=wire.message_key("rig1", "ae0"), value=b"not a chunk")
    producer.flush()
    producer.close()

    monitor = labquake(*monitor_args(topic, unique_name, small_bundle, "--metrics-port", "0"),
                       services=services)
    heartbeat_key = None

    def metrics_url() -> str | None:
        nonlocal heartbeat_key
        keys = list(redis_client.scan_iter(match=f"{unique_name}:monitor:*"))
        if not keys:
            return None
        heartbeat_key = keys[0]
        return json.loads(redis_client.get(heartbeat_key))["metrics_url"]

    try:
        wait_for(lambda: metrics_url() is not None, 120, "the monitor's heartbeat")
        url = metrics_url()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        windows = RECORD_SECONDS * int(TEST_SAMPLE_RATE) // TEST_WINDOW
        wait_for(lambda: scrape(url).get(("labquake_windows_total", ())) == windows, 120,
                 "every window in the metrics")
        # The lag gauge is refreshed with the heartbeat.
        partition = (("partition", f"{topic}/0"),)
        wait_for(lambda: scrape(url).get(("labquake_consumer_lag_messages", partition)) == 0,
                 30, "the lag to reach 0")
        found = scrape(url)
        assert abs(time.time() - found[("labquake_last_poll_timestamp_seconds", ())]) < 10
    finally:
        monitor.send_signal(signal.SIGTERM)
        code, _, err = finish(monitor)
    assert code == 0, err[-2000:]

    alerts = [json.loads(fields[b"alert"])
              for _, fields in redis_client.xrange(f"{unique_name}:alerts:log")]
    assert sum(alert["kind"] == "raised" for alert in alerts) > 0
    assert found[("labquake_samples_total", ())] == RECORD_SECONDS * TEST_SAMPLE_RATE
    for kind in ("raised", "updated", "withdrawn", "cleared"):
        assert found[("labquake_alerts_total", (("kind", kind),))] == sum(
            alert["kind"] == kind for alert in alerts), kind
    assert found[("labquake_alerts_logged_total", ())] == len(alerts)
    assert found[("labquake_dead_letters_total", ())] == 1
    assert found[("labquake_messages_total", ())] == found[("labquake_chunks_total", ())] + 1
    assert found[("labquake_gaps_total", ())] == 0
    assert found[("labquake_redis_errors_total", ())] == 0
    assert found[("labquake_kafka_errors_total", ())] == 0
    batches = found[("labquake_batches_total", ())]
    assert found[("labquake_batch_size_windows_count", ())] == batches > 0
    assert found[("labquake_batch_size_windows_sum", ())] == windows
    assert found[("labquake_inference_seconds_count", ())] == batches
    assert found[("labquake_inference_seconds_sum", ())] > 0
    # Every window's result latency is measured, and none took longer than a minute.
    assert found[("labquake_result_latency_seconds_count", ())] == windows
    assert found[("labquake_result_latency_seconds_bucket", (("le", "30.0"),))] == windows
    # From the producer's Kafka timestamps: the record was sent before the monitor started,
    # so each window waited longer end to end than inside the monitor.
    assert found[("labquake_end_to_end_latency_seconds_count", ())] == windows
    assert (found[("labquake_end_to_end_latency_seconds_sum", ())]
            > found[("labquake_result_latency_seconds_sum", ())])
    assert found[("labquake_streams", ())] == 1
    version = json.loads((small_bundle / "bundle.json").read_text())["version"]
    assert found[("labquake_model_info", (("version", version),))] == 1
    with pytest.raises(OSError):  # the endpoint closes with the monitor
        urllib.request.urlopen(url, timeout=5)
