"""SIGHUP swaps the model bundle of a running monitor without losing or doubling a window.

The new bundle is a copy of the old one under another version, so it predicts exactly what
the old one does: the alert log must then equal a replay's, whatever window the swap lands
on, and the version must change from old to new at one window boundary. The monitor reads
every setting from its configuration file, and the swap is asked for by editing the file.
"""

from __future__ import annotations

import json
import shutil
import signal

from tests.integration.conftest import (
    TEST_SAMPLE_RATE,
    TEST_WINDOW,
    finish,
    labquake,
    replay_alerts,
    wait_for,
)
from tests.stream.test_alert_schema import alert_validator

RECORD_SECONDS = 40
NEW_VERSION = "20990101T000000Z-feedbeef"


def _stderr_so_far(process) -> str:
    handle = process.output_files[1]
    handle.seek(0)
    return handle.read()


def _copy(bundle, path, **metadata_changes):
    """A copy of ``bundle`` whose metadata says otherwise (the network is the same)."""
    from model.bundle.inference import stamp  # TensorFlow, only for the tests that copy bundles

    shutil.copytree(bundle, path)
    metadata = json.loads((path / "bundle.json").read_text())
    (path / "bundle.json").write_text(json.dumps({**metadata, **metadata_changes}))
    stamp(path)  # a deliberate edit, recorded
    return path


def _write_config(path, topic: str, namespace: str, model) -> None:
    path.write_text(f'topic = "{topic}"\nnamespace = "{namespace}"\n'
                    f'group = "{namespace}-group"\nmodel = "{model}"\nstop_after_idle = 4\n'
                    "max_batch = 16\n")


def test_sighup_swaps_the_bundle_at_one_window_boundary_and_loses_no_window(
        services, kafka_topic, unique_name, redis_client, small_record, small_bundle, tmp_path):
    old_version = json.loads((small_bundle / "bundle.json").read_text())["version"]
    new_bundle = _copy(small_bundle, tmp_path / "new.lqb", version=NEW_VERSION)
    refused = [  # bundles a running monitor must not switch to, and why
        (tmp_path / "missing.lqb", "it does not load"),
        (_copy(small_bundle, tmp_path / "wide.lqb", window=2 * TEST_WINDOW,
               hop=2 * TEST_WINDOW), f"it cuts windows of {2 * TEST_WINDOW} samples"),
        (_copy(small_bundle, tmp_path / "strict.lqb", alert_policy={"consecutive": 5}),
         "it brings another alert policy"),
    ]
    config = tmp_path / "labquake.toml"
    _write_config(config, kafka_topic, unique_name, small_bundle)

    producer = labquake("produce", "--instrument", "rig1", "--data", str(small_record),
                        "--topic", kafka_topic, "--realtime", "--quiet",
                        services=services)
    monitor = labquake("monitor", "--config", str(config), services=services)
    predictions = f"{unique_name}:predictions:rig1/ae0"
    wait_for(lambda: redis_client.xlen(predictions) >= 30, 120, "the first windows")

    for count, (bundle, why) in enumerate(refused, start=1):
        _write_config(config, kafka_topic, unique_name, bundle)
        monitor.send_signal(signal.SIGHUP)
        wait_for(lambda count=count: _stderr_so_far(monitor).count("model reload refused")
                 == count, 60, f"refusal {count}")
        assert why in _stderr_so_far(monitor)
    _write_config(config, kafka_topic, unique_name, new_bundle)
    monitor.send_signal(signal.SIGHUP)

    assert finish(producer)[0] == 0
    code, _, err = finish(monitor)
    assert code == 0, err[-3000:]
    assert f"model reloaded: {old_version} -> {NEW_VERSION}" in err

    entries = redis_client.xrange(predictions)
    windows = RECORD_SECONDS * int(TEST_SAMPLE_RATE) // TEST_WINDOW
    ends = [int(fields[b"window_end_sample"]) for _, fields in entries]
    assert ends == [k * TEST_WINDOW + TEST_WINDOW - 1 for k in range(windows)]
    versions = [fields[b"model_version"].decode() for _, fields in entries]
    switch = versions.index(NEW_VERSION)
    assert 30 <= switch < windows - 10, "the swap must land mid-record"
    assert versions == [old_version] * switch + [NEW_VERSION] * (windows - switch)
    assert redis_client.hget(f"{unique_name}:state:rig1", "model_version").decode() == NEW_VERSION

    logged = [json.loads(fields[b"alert"])
              for _, fields in redis_client.xrange(f"{unique_name}:alerts:log")]
    validator = alert_validator()
    version_at = dict(zip(ends, versions, strict=True))
    for alert in logged:
        validator.validate(alert)
        assert alert["model_version"] == version_at[alert["window_end_sample"]]
    assert {alert["model_version"] for alert in logged} == {old_version, NEW_VERSION}

    def without_version(alerts):
        return [{k: v for k, v in a.items() if k not in ("model_version", "emitted_at")}
                for a in alerts]

    assert without_version(logged) == without_version(
        replay_alerts(small_record, small_bundle, "rig1"))
