"""Bad flags, URLs and environment values: one line naming what to fix, never a traceback."""

from __future__ import annotations

import argparse
import logging

import pytest

from stream.cli import main
from stream.config.options import add_options, resolve
from stream.core.errors import LabquakeError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("environ", "words"), [
    ({"LABQUAKE_REDIS_URL": "localhost:6379"}, "must start with redis://"),
    ({"LABQUAKE_REDIS_URL": "redis://localhost:port/0"}, "port that is not a number"),
    ({"LABQUAKE_REDIS_URL": "redis://localhost:70000/0"}, "port that is not a number"),
    ({"LABQUAKE_REDIS_URL": "redis://localhost:6379/notadb"}, "names database 'notadb'"),
    ({"LABQUAKE_REDIS_URL": "redis://:6379/0"}, "names no host"),
    ({"LABQUAKE_KAFKA_BOOTSTRAP": "localhost:notaport"}, "is not HOST:PORT"),
    ({"LABQUAKE_KAFKA_BOOTSTRAP": "localhost"}, "is not HOST:PORT"),
    ({"LABQUAKE_NAMESPACE": "rt*"}, "may hold neither spaces nor *"),
    ({"LABQUAKE_NAMESPACE": "a[b]"}, "[ ]"),
    ({"LABQUAKE_NAMESPACE": "a?"}, "?"),
])
def test_a_bad_value_is_refused_in_one_line_naming_its_source(environ, words):
    with pytest.raises(LabquakeError) as caught:
        resolve(None, environ)
    message = str(caught.value)
    assert words in message and "\n" not in message
    assert message.startswith(next(iter(environ)))


@pytest.mark.parametrize("url", ["redis://localhost:6379/0", "rediss://u@redis.lab:6380/3",
                                 "unix:///run/redis.sock?db=2", "redis://localhost"])
def test_good_redis_urls_pass(url):
    assert resolve(None, {"LABQUAKE_REDIS_URL": url}).redis == url


def test_a_password_in_the_redis_flag_is_warned_about_and_not_logged(caplog):
    parser = argparse.ArgumentParser()
    add_options(parser, "redis")
    args = parser.parse_args(["--redis", "redis://:s3cret@localhost:6379/0"])
    with caplog.at_level(logging.WARNING, logger="stream.config.options"):
        assert resolve(args, {}).redis == "redis://:s3cret@localhost:6379/0"
    [record] = caplog.records
    assert "LABQUAKE_REDIS_PASSWORD_FILE" in record.getMessage()
    assert "s3cret" not in record.getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="stream.config.options"):
        resolve(None, {"LABQUAKE_REDIS_URL": "redis://:s3cret@localhost:6379/0"})
    assert not caplog.records  # the environment is not in the process list


@pytest.mark.parametrize(("argv", "words"), [
    (["alerts", "--since", "bogus"], "is not an alert-log entry id"),
    (["alerts", "--redis", "localhost:6379"], "must start with redis://"),
    (["alerts", "--namespace", "rt*"], "may hold neither"),
    (["simulate", "--out", "x.npz", "--seconds", "1", "--sample-rate", "nan"],
     "must be a finite number > 0"),
    (["replay", "--data", "x.npz", "--sample-rate", "nan"], "must be a finite number > 0"),
    (["produce", "--instrument", "r", "--simulate", "--bootstrap", "localhost:notaport"],
     "is not HOST:PORT"),
    (["produce", "--instrument", "r", "--simulate", "--first-sample",
      "9223372036854775000"], "above the counter's limit"),
    (["produce", "--instrument", "r", "--stdin", "--sample-rate", "1e300"],
     "outside 0.001 to 1e+09 Hz"),
])
def test_the_command_line_refuses_in_one_line_with_exit_2(argv, words, capsys, tmp_path,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse's own refusal of a flag's value
        code = exit_info.code
    assert code == 2
    error = capsys.readouterr().err
    assert words in error and error.count("\n") == 1 and "Traceback" not in error


def test_a_model_verb_prints_no_tensorflow_start_up_lines(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    result = subprocess.run([sys.executable, "-m", "stream", "stamp", str(tmp_path / "x.lqb")],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("labquake stamp: ")


def test_dead_letter_warnings_are_rate_limited_but_each_is_counted():
    from stream.io.kafka_source import _Throttle

    throttle = _Throttle(burst=3, interval_s=10.0)
    taken = [throttle.take(now) for now in (0.0, 0.1, 0.2, 0.3, 0.4, 5.0, 10.5)]
    assert taken == [(True, 0), (True, 0), (True, 0), (False, 1), (False, 2), (False, 3),
                     (True, 3)]
