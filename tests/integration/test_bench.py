"""``labquake bench`` against the real Kafka and Redis: a tiny ingest run, end to end."""

from __future__ import annotations

import argparse
import json

from kafka.admin import KafkaAdminClient

from stream.tools import bench
from tests.integration.conftest import wait_for


def test_a_tiny_ingest_bench_reports_every_run_and_cleans_up(
        services, small_bundle, redis_client, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    bench.add_parser(parser.add_subparsers())
    report_path = tmp_path / "bench.json"
    args = parser.parse_args([
        "bench", "--only", "ingest", "--ingest-seconds", "0.5", "--streams", "1,2",
        "--model", str(small_bundle), "--bootstrap", services.bootstrap,
        "--redis", services.redis_url, "--json", str(report_path)])

    assert bench.run(args) == 0

    report = json.loads(report_path.read_text())
    runs = report["sections"]["ingest"]["runs"]
    assert [run["streams"] for run in runs] == [1, 2]
    window = report["bundle"]["window"]
    for run in runs:
        assert run["samples"] == 2_000_000  # 0.5 s at 4 MHz, all of it consumed
        assert run["windows"] == run["streams"] * (2_000_000 // run["streams"] // window)
        assert run["ms_per_s"] > 0 and run["cpu_s"] > 0
        assert run["real_time_factor"] == run["ms_per_s"] / 4
    table = capsys.readouterr().out
    assert "ingest" in table and " 2 instrument(s)" in table
    admin = KafkaAdminClient(bootstrap_servers=services.bootstrap)
    try:
        ours = {run["topic"] for run in runs}
        wait_for(lambda: not ours & set(admin.list_topics()), 20, "the bench topics deleted")
    finally:
        admin.close()
    for run in runs:
        namespace = run["topic"].removeprefix("labquake.bench.")
        assert not list(redis_client.scan_iter(match=f"labquake-bench-{namespace}:*"))
