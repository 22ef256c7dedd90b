"""Raw records rendered from an AE-variance table: samples, labels, parts, the verb."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from model.data import envelope, labels, records, simulate, tables
from model.data.envelope import envelope_blocks, read_envelope, select_rows
from model.training import dataset
from stream.cli import main
from stream.cli import simulate as simulate_cli
from stream.core.errors import LabquakeError
from tests.conftest import SHARED_DATA

pytestmark = pytest.mark.unit

PENN_STATE_CSV = SHARED_DATA / "pennstate_ae_variance_3800_4100s.csv"
ROW_S = 0.1
RATE = 15_000.0
PER_ROW = 1_500
CYCLE_ROWS = [60, 85, 70, 95]


def write_table(path, *, with_labels: bool = True) -> dict[str, np.ndarray]:
    """A lab table of 10-Hz rows: variance ramps up through each cycle, stress saws."""
    until, variance, stress = [], [], []
    for count in CYCLE_ROWS:
        until.extend(ROW_S * np.arange(count - 1, -1, -1))
        variance.extend(np.linspace(500.0, 40_000.0, count))
        stress.extend(3.0 + 0.6 * np.arange(count) / count)
    time_s = 100.0 + ROW_S * np.arange(len(until))
    columns = {"Time": time_s, "ShearStress": np.array(stress), "Var_Ch1": np.array(variance)}
    if with_labels:
        columns["TimeToStartFailure"] = np.array(until)
    names = list(columns)
    lines = [",".join(names)] + [",".join(repr(float(columns[name][row])) for name in names)
                                 for row in range(len(time_s))]
    path.write_text("\n".join(lines) + "\n")
    return columns


def render(table: envelope.Envelope, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    pairs = list(envelope_blocks(table, RATE, seed))
    return (np.concatenate([pair[0] for pair in pairs]),
            np.concatenate([pair[1] for pair in pairs]))


def test_each_row_becomes_samples_of_its_variance_and_labels_ending_at_its_own(tmp_path):
    columns = write_table(tmp_path / "rows.csv")
    rows = read_envelope(tmp_path / "rows.csv")
    assert rows.label_origin == "column TimeToStartFailure" and len(rows) == sum(CYCLE_ROWS)
    acoustic, until = render(rows)
    assert acoustic.dtype == np.int16 and len(acoustic) == len(rows) * PER_ROW
    by_row = acoustic.astype(np.float64).reshape(-1, PER_ROW)
    # 1,500 Gaussian samples estimate a variance to about 4 %: 20 % is five deviations.
    np.testing.assert_allclose(by_row.var(axis=1), columns["Var_Ch1"], rtol=0.2)
    np.testing.assert_allclose(until[PER_ROW - 1::PER_ROW], columns["TimeToStartFailure"])
    steps = np.diff(until)
    jumps = np.flatnonzero(steps > 0)
    assert len(jumps) == len(CYCLE_ROWS) - 1 == rows.failures
    np.testing.assert_allclose(np.delete(steps, jumps), -1.0 / RATE, rtol=1e-6)


def test_same_seed_same_bytes_and_parts_are_slices_of_the_whole(tmp_path):
    write_table(tmp_path / "rows.csv")
    rows = read_envelope(tmp_path / "rows.csv")
    whole, until = render(rows, seed=3)
    np.testing.assert_array_equal(render(rows, seed=3)[0], whole)
    assert not np.array_equal(render(rows, seed=4)[0], whole)
    first, last = (render(select_rows(rows, fraction=part), seed=3)
                   for part in ((0.0, 0.7), (0.7, 1.0)))
    split = int(0.7 * len(rows)) * PER_ROW
    np.testing.assert_array_equal(first[0], whole[:split])
    np.testing.assert_array_equal(last[0], whole[split:])
    np.testing.assert_allclose(np.concatenate([first[1], last[1]]), until)


def test_time_range_keeps_rows_from_start_to_before_end(tmp_path):
    write_table(tmp_path / "rows.csv")
    rows = select_rows(read_envelope(tmp_path / "rows.csv"), time_range=(105.0, 110.0))
    np.testing.assert_allclose(rows.time_s, 105.0 + ROW_S * np.arange(50), atol=1e-9)


def test_labels_come_from_the_stress_when_the_table_has_none(tmp_path):
    columns = write_table(tmp_path / "rows.csv", with_labels=False)
    rows = read_envelope(tmp_path / "rows.csv")
    assert rows.label_origin == "stress column ShearStress"
    found = labels.find_failures(columns["Time"], columns["ShearStress"])
    expected, _ = labels.failure_labels(columns["Time"], found)
    # Rows after the last failure have no label and are left out.
    assert len(rows) == np.isfinite(expected).sum() == sum(CYCLE_ROWS[:-1])
    np.testing.assert_allclose(rows.labels, expected[:len(rows)])


@pytest.mark.parametrize(("call", "words"), [
    (lambda path: read_envelope(path, variance_column="Var_Ch9"), "no column 'Var_Ch9'"),
    (lambda path: read_envelope(path, label_column="Nope"), "no column 'Nope'"),
    (lambda path: select_rows(read_envelope(path), fraction=(0.5, 0.2)), "START < END"),
    (lambda path: select_rows(read_envelope(path), time_range=(0.0, 1.0)), "no rows"),
    (lambda path: list(envelope_blocks(read_envelope(path), 10.0)), "fewer than 2 samples"),
])
def test_bad_requests_raise_one_line_errors(tmp_path, call, words):
    write_table(tmp_path / "rows.csv")
    with pytest.raises(LabquakeError, match=words) as error:
        call(tmp_path / "rows.csv")
    assert "\n" not in str(error.value)


def test_a_negative_variance_is_refused_with_its_row(tmp_path):
    path = tmp_path / "rows.csv"
    write_table(path)
    lines = path.read_text().splitlines()
    fields = lines[5].split(",")
    fields[2] = "-3.0"
    lines[5] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LabquakeError, match=r"at row 5 is -3\.0, not a variance"):
        read_envelope(path)


# --- the verb --------------------------------------------------------------------------

def test_verb_writes_a_csv_that_needs_its_rate_and_an_npz_that_keeps_it(tmp_path, capsys):
    write_table(tmp_path / "rows.csv")
    out = tmp_path / "first70.csv"
    assert main(["simulate", "--envelope", str(tmp_path / "rows.csv"), "--fraction", "0:0.7",
                 "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith(
        "wrote 325,500 samples (21.7 s at 15000 Hz, 3 failures, rows 1-217 of ")
    # Read as LANL's 4 MHz, the labels give the rate away.
    with pytest.raises(LabquakeError, match="pass --sample-rate 15000"):
        records.read_record(out)
    record = records.read_record(out, sample_rate=RATE)
    assert len(record.acoustic_data) == int(0.7 * sum(CYCLE_ROWS)) * PER_ROW
    npz = tmp_path / "last30.npz"
    assert main(["simulate", "--envelope", str(tmp_path / "rows.csv"), "--fraction", "0.7:",
                 "--out", str(npz), "--json", "--seed", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sample_rate"] == RATE and report["first_row"] == int(0.7 * sum(CYCLE_ROWS))
    assert report["labels"] == "column TimeToStartFailure" and report["seed"] == 2
    assert records.read_record(npz).sample_rate == RATE
    windows = dataset.file_windows(npz, window=15_000, hop=1_500, progress=False)
    last_rows = sum(CYCLE_ROWS) - int(0.7 * sum(CYCLE_ROWS))
    assert windows.sample_rate == RATE
    assert len(windows) == (last_rows * PER_ROW - 15_000) // 1_500 + 1


@pytest.mark.parametrize(("flags", "words"), [
    (["--seconds", "3"], "do not apply to --envelope"),
    (["--variance-column", "Nope"], "no column 'Nope'"),
])
def test_verb_reports_bad_envelope_flags_in_one_line(tmp_path, capsys, flags, words):
    write_table(tmp_path / "rows.csv")
    assert main(["simulate", "--envelope", str(tmp_path / "rows.csv"), "--out",
                 str(tmp_path / "x.npz"), "--quiet", *flags]) == 2
    error = capsys.readouterr().err
    assert words in error and error.count("\n") == 1
    assert not (tmp_path / "x.npz").exists()


def test_verb_refuses_a_fraction_that_is_not_a_span(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_status:
        main(["simulate", "--envelope", "rows.csv", "--out", str(tmp_path / "x.npz"),
              "--fraction", "0.7"])
    assert exit_status.value.code == 2
    error = capsys.readouterr().err
    assert "'0.7' is not START:END" in error and error.count("\n") == 1


def test_verb_refuses_a_cut_without_an_envelope(tmp_path, capsys):
    assert main(["simulate", "--out", str(tmp_path / "x.npz"), "--seconds", "1",
                 "--fraction", "0:0.7"]) == 2
    assert "--envelope" in capsys.readouterr().err


def test_verb_default_rates_are_the_library_defaults():
    assert simulate_cli.SIMULATOR_SAMPLE_RATE == simulate.DEFAULT_SAMPLE_RATE
    assert simulate_cli.ENVELOPE_SAMPLE_RATE == envelope.DEFAULT_SAMPLE_RATE
    parser = simulate_cli.add_parser(argparse.ArgumentParser().add_subparsers())
    defaults = parser.parse_args(["--out", "x.npz", "--envelope", "rows.csv"])
    assert defaults.variance_column == envelope.DEFAULT_VARIANCE_COLUMN
    assert defaults.time_column == labels.DEFAULT_TIME_COLUMN
    assert defaults.stress_column == labels.DEFAULT_STRESS_COLUMN


# --- the real Penn State experiment -----------------------------------------------------

def test_penn_state_rows_render_with_their_measured_labels(tmp_path):
    if not PENN_STATE_CSV.is_file():
        pytest.skip(f"real Penn State data not found at {PENN_STATE_CSV} (the shared/ folder "
                    "beside the repository); this check needs it")
    rows = select_rows(read_envelope(PENN_STATE_CSV), fraction=(0.7, 1.0))
    measured = tables.column(tables.read_table(PENN_STATE_CSV), "TimeToStartFailure",
                             PENN_STATE_CSV)
    assert rows.rows[0] == int(0.7 * len(measured)) and rows.rows[-1] == len(measured) - 1
    out = tmp_path / "last30.npz"
    records.write_record(out, envelope_blocks(rows, RATE), RATE)
    record = records.read_record(out)
    np.testing.assert_allclose(record.time_to_failure[PER_ROW - 1::PER_ROW],
                               measured[rows.rows])
