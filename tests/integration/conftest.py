"""Helpers for the monitor's integration tests: a small model bundle, records, processes."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from stream.tools import services
from tests.conftest import REPO_ROOT

TEST_WINDOW = 15_000
TEST_SAMPLE_RATE = 1e5


# Short episode times (and a warm-up and interval, so that they too go through Kafka,
# the monitor and Redis): the alerts come often, and a difference between runs shows.
SMALL_BUNDLE_POLICY = {
    "withdraw_after_s": 0.0, "refractory_s": 0.0, "update_step_s": 0.05, "warmup_s": 1.0,
    "interval": {"coverage": 0.8, "ttf_edges_s": [3.0], "lower_s": [-0.5, -2.0],
                 "upper_s": [0.5, 2.0], "n_calibration": [50, 50]},
}


@pytest.fixture(scope="session")
def small_bundle(tmp_path_factory) -> Path:
    """A bundle with window 15,000 for records at 100 kHz: an untrained network with a
    fitted scaler, reading each window in its stream's context as the shipped model does
    (model/features/context.py), so restarts must carry that context too. These tests are about
    stream semantics (what reaches Redis, once), so any fixed model serves; its
    P(failure) hovers near the threshold, which makes alerts frequent and any difference
    between two runs visible."""
    import keras

    from model import network
    from model.bundle import inference as bundle
    from model.data import simulate
    from model.features import extract as features
    from model.features.context import ContextConfig, context_features

    keras.utils.set_random_seed(0)
    record = simulate.simulate(30, sample_rate=TEST_SAMPLE_RATE, seed=11)
    samples = record.acoustic_data
    count = len(samples) // TEST_WINDOW
    windows = samples[: count * TEST_WINDOW].reshape(count, TEST_WINDOW)
    values = features.extract(windows, np.arange(count, dtype=np.int64) * TEST_WINDOW)
    context = ContextConfig()
    bases = values[:, [features.FEATURE_NAMES.index(base) for base in context.bases]]
    values = np.concatenate([values, context_features(context, bases,
                                                      TEST_SAMPLE_RATE / TEST_WINDOW)], axis=1)
    names = (*features.FEATURE_NAMES, *context.names)
    mean, std = bundle.fit_scaler(values)
    path = tmp_path_factory.mktemp("bundles") / "small.lqb"
    bundle.save(path, network.build_model(len(names)),
                feature_names=names, window=TEST_WINDOW, hop=TEST_WINDOW,
                scaler_mean=mean, scaler_std=std, training_fingerprint="integration-tests",
                metrics={}, alert_policy=SMALL_BUNDLE_POLICY, context=context,
                extra={"sample_rate_hz": TEST_SAMPLE_RATE})
    return path


@pytest.fixture(scope="session")
def small_record(tmp_path_factory) -> Path:
    """40 s of simulated lab earthquakes at 100 kHz (4 million samples) as .npz."""
    from model.data import records, simulate

    path = tmp_path_factory.mktemp("records") / "sim.npz"
    record = simulate.simulate(40, sample_rate=TEST_SAMPLE_RATE, seed=5)
    records.write_record(path, [(record.acoustic_data, record.time_to_failure)],
                         sample_rate=TEST_SAMPLE_RATE)
    return path


def labquake(*args: str, services, **kwargs) -> subprocess.Popen:
    """Start ``labquake ARGS`` as its own process against the test services.

    Its output goes to temporary files, not pipes: a long-running monitor that logs
    every alert would otherwise block on a full pipe while the test waits.
    """
    env = {**os.environ, "LABQUAKE_KAFKA_BOOTSTRAP": services.bootstrap,
           "LABQUAKE_REDIS_URL": services.redis_url, "PYTHONUNBUFFERED": "1"}
    stdout = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed by finish() or kill()
    stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115
    process = subprocess.Popen([sys.executable, "-m", "stream", *args], cwd=REPO_ROOT,
                               env=env, stdout=stdout, stderr=stderr, text=True,
                               preexec_fn=_as_from_a_terminal, **kwargs)
    process.output_files = (stdout, stderr)  # type: ignore[attr-defined]
    _started.append(process)
    return process


_started: list[subprocess.Popen] = []


def _as_from_a_terminal() -> None:
    """In the child: Ctrl-C's default action, as a shell gives a command it runs.

    A test runner started in the background by a non-interactive shell inherits SIGINT
    ignored, and so would every process it starts: Python then installs no
    KeyboardInterrupt handler, and a test of what Ctrl-C does would test nothing.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test():
    """A failing test must not leave a monitor or producer running behind it."""
    yield
    while _started:
        process = _started.pop()
        if process.poll() is None:
            process.kill()
            process.wait()


def stdout_so_far(process: subprocess.Popen) -> str:
    """What a running process has written to stdout until now."""
    handle = process.output_files[0]  # type: ignore[attr-defined]
    handle.seek(0)
    return handle.read()


def stderr_so_far(process: subprocess.Popen) -> str:
    """What a running process has written to stderr until now (its logs).

    Read with ``pread``: the process writes through the same open file, and moving the
    file's offset under it would make it overwrite what it wrote.
    """
    descriptor = process.output_files[1].fileno()  # type: ignore[attr-defined]
    return os.pread(descriptor, os.fstat(descriptor).st_size, 0).decode(errors="replace")


def _output(process: subprocess.Popen) -> tuple[str, str]:
    """Read and close the process's output files. The tail of its logs is also printed:
    pytest shows a test's printed output only when the test fails, so a failing
    integration test comes with what its monitors, producers and dashboards said."""
    texts = []
    for handle in process.output_files:  # type: ignore[attr-defined]
        handle.seek(0)
        texts.append(handle.read())
        handle.close()
    command = " ".join(str(arg) for arg in process.args[3:])  # after python -m stream
    print(f"--- labquake {command} (exit {process.returncode}); its last log lines:\n"
          f"{texts[1][-4000:]}")
    return texts[0], texts[1]


def finish(process: subprocess.Popen, timeout_s: float = 180) -> tuple[int, str, str]:
    """Wait for the process (closing its stdin, if piped); return its exit code, stdout
    and stderr."""
    if process.stdin is not None:
        process.stdin.close()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired as timeout:
        process.kill()
        process.wait()
        raise AssertionError(f"process did not finish in {timeout_s} s; stderr:\n"
                             f"{_output(process)[1][-3000:]}") from timeout
    out, err = _output(process)
    return process.returncode, out, err


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()
    _output(process)


def monitor_args(topic: str, namespace: str, bundle: Path, *extra: str) -> list[str]:
    return ["monitor", "--topic", topic, "--namespace", namespace, "--model", str(bundle),
            "--group", f"{namespace}-group", *extra]


def logged_alerts(redis_client, namespace: str) -> list[dict]:
    """The durable alert log, oldest first, without the wall-clock field."""
    return [_comparable(json.loads(fields[b"alert"]))
            for _, fields in redis_client.xrange(f"{namespace}:alerts:log")]


def replay_alerts(record: Path, bundle: Path, instrument: str, channel: str = "ae0") -> list[dict]:
    process = subprocess.run(
        [sys.executable, "-m", "stream", "replay", "--data", str(record), "--model",
         str(bundle), "--instrument", instrument, "--channel", channel],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=True,
    )
    return [_comparable(json.loads(line)) for line in process.stdout.splitlines()
            if json.loads(line)["kind"] in ("raised", "updated", "withdrawn", "cleared")]


def _comparable(alert: dict) -> dict:
    return {key: value for key, value in alert.items() if key != "emitted_at"}


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@dataclasses.dataclass(frozen=True)
class OwnServices:
    """A broker and a Redis server that only one test module uses, and may stop."""

    layout: services.Layout
    bootstrap: str
    redis_url: str

    def redis(self) -> redis.Redis:
        # A fresh client: one made before a restart of Redis holds a dead connection.
        return redis.Redis.from_url(self.redis_url)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def own(tmp_path_factory) -> Iterator[OwnServices]:
    """A broker and a Redis of the test module's own, on spare ports with their own state
    folder: for the tests that stop a service (never the shared ones)."""
    layout = services.Layout.from_environment(
        state_dir=tmp_path_factory.mktemp("fault-services"), kafka_port=_free_port(),
        controller_port=_free_port(), redis_port=_free_port())
    try:
        services.up(layout)
        yield OwnServices(layout, layout.kafka_bootstrap, layout.redis_url)
    finally:
        services.down(layout)
