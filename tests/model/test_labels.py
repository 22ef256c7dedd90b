"""Failures from a shear-stress series: synthetic series, the real Penn State rows, the verb."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from model.data import labels, tables
from model.data.labels import failure_labels, find_failures
from stream.cli import label as label_cli
from stream.cli import main
from stream.core.errors import LabquakeError
from tests.conftest import SHARED_DATA

pytestmark = pytest.mark.unit

PENN_STATE_CSV = SHARED_DATA / "pennstate_ae_variance_3800_4100s.csv"
ROW_S = 0.01
LOADING_RATE = 0.1  # stress units a second
BASE_STRESS = 3.0


def sawtooth(cycles_s: list[float], drop_s: float = 0.3, tail_s: float = 2.0):
    """Times and stress of cycles that load linearly and drop all they loaded in ``drop_s``.

    Returns the times, the stress, and each failure's true start and end times.
    """
    pieces, starts, ends = [], [], []
    clock = 0.0
    for cycle_s in cycles_s:
        load = np.arange(0.0, cycle_s, ROW_S)
        pieces.append(BASE_STRESS + LOADING_RATE * load)
        starts.append(clock + load[-1])
        fall = np.arange(ROW_S, drop_s + ROW_S / 2, ROW_S)
        peak = BASE_STRESS + LOADING_RATE * load[-1]
        pieces.append(peak - (peak - BASE_STRESS) * fall / drop_s)
        ends.append(clock + load[-1] + fall[-1])
        clock += load[-1] + fall[-1] + ROW_S
    pieces.append(BASE_STRESS + LOADING_RATE * np.arange(ROW_S, tail_s, ROW_S))
    stress = np.concatenate(pieces)
    return np.arange(len(stress)) * ROW_S, stress, np.array(starts), np.array(ends)


CYCLES_S = [8.0, 10.5, 7.2, 12.0, 9.1]


def test_clean_sawtooth_every_failure_found_at_its_peak_and_trough():
    time_s, stress, starts, ends = sawtooth(CYCLES_S)
    found = find_failures(time_s, stress)
    np.testing.assert_allclose(found.start_s, starts, atol=1e-9)
    np.testing.assert_allclose(found.end_s, ends, atol=1e-9)
    assert found.min_drop == pytest.approx(labels.DROP_FRACTION * found.swing)


def test_noise_neither_adds_nor_moves_failures_beyond_a_few_rows():
    time_s, stress, starts, ends = sawtooth(CYCLES_S)
    rng = np.random.default_rng(4)
    # Noise of 0.5 % of a typical 0.9 drop: a clean lab signal.
    noisy = stress + rng.normal(0.0, 0.0045, len(stress))
    found = find_failures(time_s, noisy)
    assert len(found) == len(starts)
    assert np.abs(found.start_s - starts).max() <= 0.1
    assert np.abs(found.end_s - ends).max() <= 0.1


def test_heavy_noise_is_refused_raw_and_handled_once_smoothed():
    time_s, stress, starts, ends = sawtooth(CYCLES_S)
    rng = np.random.default_rng(5)
    # Noise of 5 % of a typical drop, 45 times what the stress loads from row to row.
    noisy = stress + rng.normal(0.0, 0.045, len(stress))
    with pytest.raises(LabquakeError, match=r"noise .* smooth it"):
        find_failures(time_s, noisy)
    smooth_s = 0.3
    found = find_failures(time_s, noisy, smooth_s=smooth_s)
    assert len(found) == len(starts)
    # The peak is then known to about the filter's width, no better.
    assert np.abs(found.start_s - starts).max() <= 1.5 * smooth_s
    assert np.abs(found.end_s - ends).max() <= 1.5 * smooth_s


def test_slow_slip_that_the_fault_recovers_from_is_no_failure():
    time_s, stress, starts, ends = sawtooth(CYCLES_S)
    # In the third cycle, 3 s before failure, slow slip releases a fifth of the cycle's
    # load over 1 s; loading then carries on from the lower level until the failure.
    slip = np.flatnonzero((time_s > starts[2] - 3.0) & (time_s <= ends[2]))
    released = 0.2 * LOADING_RATE * CYCLES_S[2] * np.clip(
        (time_s[slip] - time_s[slip[0]]) / 1.0, 0.0, 1.0)
    stress[slip] -= released
    found = find_failures(time_s, stress)
    np.testing.assert_allclose(found.start_s, starts, atol=1e-9)


def test_a_small_precursory_drop_before_a_failure_starts_the_failure():
    time_s, stress, starts, ends = sawtooth(CYCLES_S)
    # In the second cycle the stress peaks 1.2 s before the failure, sags by 0.1 (a
    # precursor well below the minimum drop) and never regains the peak.
    precursor = np.flatnonzero((time_s >= starts[1] - 1.2) & (time_s <= ends[1]))
    peak = stress[precursor[0]]
    sag = 0.1 * np.sin(np.linspace(0.0, np.pi, len(precursor))) ** 2
    stress[precursor] = np.minimum(stress[precursor], peak - sag)
    found = find_failures(time_s, stress)
    expected = starts.copy()
    expected[1] = time_s[precursor[0]]
    np.testing.assert_allclose(found.start_s, expected, atol=1e-9)
    assert len(found) == len(starts)


def test_a_record_that_stops_mid_failure_has_no_end_and_no_labels_after_it():
    time_s, stress, starts, _ = sawtooth([8.0, 10.5, 12.0], tail_s=0.0)
    stop = np.searchsorted(time_s, starts[2] + 0.2)  # two thirds down the last drop
    found = find_failures(time_s[:stop], stress[:stop])
    np.testing.assert_allclose(found.start_s, starts, atol=1e-9)
    assert found.end.tolist()[-1] == -1 and np.isnan(found.end_s[-1])
    until_start, until_end = failure_labels(time_s[:stop], found)
    last_start = found.start[-1]
    assert np.isnan(until_start[last_start + 1:]).all()
    assert np.isnan(until_end[found.end[-2] + 1:]).all()
    assert np.isfinite(until_end[:found.end[-2] + 1]).all()


def test_labels_count_down_to_each_start_and_end():
    time_s, stress, starts, ends = sawtooth(CYCLES_S)
    until_start, until_end = failure_labels(time_s, find_failures(time_s, stress))
    row = np.searchsorted(time_s, 5.0)
    assert until_start[row] == pytest.approx(starts[0] - time_s[row])
    assert until_end[row] == pytest.approx(ends[0] - time_s[row])
    during = np.searchsorted(time_s, starts[0] + 0.1)
    assert until_start[during] == pytest.approx(starts[1] - time_s[during])
    assert until_end[during] == pytest.approx(ends[0] - time_s[during])
    assert np.isnan(until_start[time_s > starts[-1]]).all()


def test_an_absolute_minimum_drop_overrides_the_fraction():
    time_s, stress, starts, _ = sawtooth(CYCLES_S)
    assert len(find_failures(time_s, stress, min_drop=0.5)) == len(starts)
    # Larger than every drop (at most 1.2): nothing is a failure.
    assert len(find_failures(time_s, stress, min_drop=2.0)) == 0


@pytest.mark.parametrize(("change", "words"), [
    (lambda t, s: (t[:5], s[:5]), "at least 8 are needed"),
    (lambda t, s: (t[::-1].copy(), s), "times must increase"),
    (lambda t, s: (t, np.where(np.arange(len(s)) == 7, np.nan, s)), "row 8"),
    (lambda t, s: (t, np.ones_like(s)), "does not vary"),
])
def test_bad_series_raise_one_line_errors(change, words):
    time_s, stress, _, _ = sawtooth(CYCLES_S)
    with pytest.raises(LabquakeError, match=words) as error:
        find_failures(*change(time_s, stress))
    assert "\n" not in str(error.value)


# --- the real Penn State experiment -----------------------------------------------------

def measured_failure_rows(until: np.ndarray) -> np.ndarray:
    """Rows whose measured label is 0 s and jumps up after: the failures the lab marked.

    The file's first row reads 0 s to failure, an artefact of its processing (no drop
    follows it), and its last rows count down to the end of the file, not to a failure.
    """
    rows = np.flatnonzero(np.diff(until) > 1.0)
    return rows[rows > 0]


@pytest.fixture(scope="module")
def penn_state():
    if not PENN_STATE_CSV.is_file():
        pytest.skip(f"real Penn State data not found at {PENN_STATE_CSV} (the shared/ folder "
                    "beside the repository); the label check needs it")
    table = tables.read_table(PENN_STATE_CSV)
    return {name: tables.column(table, name, PENN_STATE_CSV)
            for name in ("Time", "ShearStress", "TimeToStartFailure", "TimeToEndFailure")}


def test_penn_state_every_measured_failure_found_none_extra_starts_within_a_row(penn_state):
    time_s = penn_state["Time"]
    found = find_failures(time_s, penn_state["ShearStress"])
    measured_starts = time_s[measured_failure_rows(penn_state["TimeToStartFailure"])]
    measured_ends = time_s[measured_failure_rows(penn_state["TimeToEndFailure"])]
    assert len(found) == len(measured_starts) == 31
    assert np.abs(found.start_s - measured_starts).max() <= 0.1
    assert np.abs(found.end_s - measured_ends).max() <= 0.1
    # The rule has room on both sides: the smallest failure drops well above the
    # threshold, the largest precursory sag stays well below it.
    assert found.drop.min() >= 1.3 * found.min_drop
    stress = penn_state["ShearStress"]
    sags = [np.max(np.maximum.accumulate(stress[end:start + 1]) - stress[end:start + 1])
            for end, start in zip(found.end[:-1], found.start[1:], strict=True)]
    assert max(sags) <= 0.5 * found.min_drop
    # Nor is the default fraction a knife edge: anywhere from 0.3 to 0.7 finds the same.
    for fraction in (0.3, 0.7):
        again = find_failures(time_s, stress, drop_fraction=fraction)
        np.testing.assert_array_equal(again.start, found.start)


def test_penn_state_labels_match_the_measured_ones(penn_state):
    time_s = penn_state["Time"]
    found = find_failures(time_s, penn_state["ShearStress"])
    until_start, until_end = failure_labels(time_s, found)
    rows = np.arange(1, found.start[-1] + 1)
    # The measured labels count rows of 0.1 s; a few rows are closer together (gaps of
    # 0.05 s in the recording), so the two differ by those gaps' worth at most.
    assert np.abs(until_start[rows] - penn_state["TimeToStartFailure"][rows]).max() <= 0.1
    rows = np.arange(1, found.end[-1] + 1)
    assert np.abs(until_end[rows] - penn_state["TimeToEndFailure"][rows]).max() <= 0.1


# --- the verb --------------------------------------------------------------------------

def write_rows(path, time_s, stress):
    path.write_text("Time,ShearStress,Other\n" + "".join(
        f"{t!r},{s!r},x\n" for t, s in zip(time_s.tolist(), stress.tolist(), strict=True)))
    return path


def test_verb_writes_every_row_with_the_two_labels(tmp_path, capsys):
    time_s, stress, starts, _ = sawtooth(CYCLES_S)
    source = write_rows(tmp_path / "rows.csv", time_s, stress)
    out = tmp_path / "labelled.csv"
    assert main(["label", "--data", str(source), "--out", str(out)]) == 0
    summary = capsys.readouterr().out
    assert summary.startswith(f"found {len(starts)} failures in ")
    table = tables.read_table(out)
    assert table.column_names == ["Time", "ShearStress", "Other", labels.TTF_COLUMN,
                                  labels.TTE_COLUMN]
    assert table.column("Other").to_pylist() == ["x"] * len(time_s)
    written = tables.column(table, labels.TTF_COLUMN, out)
    expected, _ = failure_labels(time_s, find_failures(time_s, stress))
    np.testing.assert_allclose(written, expected, equal_nan=True)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["labelled.csv", "rows.csv"]


def test_verb_json_lists_the_failures(tmp_path, capsys):
    time_s, stress, starts, _ = sawtooth(CYCLES_S)
    source = write_rows(tmp_path / "rows.csv", time_s, stress)
    assert main(["label", "--data", str(source), "--out", str(tmp_path / "o.csv"),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [round(item["start_s"], 6) for item in report["failures"]] == \
        [round(start, 6) for start in starts.tolist()]
    assert report["rows"] == len(time_s)


@pytest.mark.parametrize(("flags", "words"), [
    (["--stress-column", "Stress"], "no column 'Stress'"),
    (["--time-column", "Other"], "holds text"),
    (["--drop-fraction", "1.5"], "between 0 and 1"),
])
def test_verb_reports_bad_input_in_one_line(tmp_path, capsys, flags, words):
    time_s, stress, _, _ = sawtooth(CYCLES_S)
    source = write_rows(tmp_path / "rows.csv", time_s, stress)
    assert main(["label", "--data", str(source), "--out", str(tmp_path / "o.csv"),
                 *flags]) == 2
    error = capsys.readouterr().err
    assert error.startswith("labquake label: ") and words in error
    assert error.count("\n") == 1
    assert not (tmp_path / "o.csv").exists()


def test_verb_defaults_are_the_library_defaults():
    parser = label_cli.add_parser(argparse.ArgumentParser().add_subparsers())
    defaults = parser.parse_args(["--data", "x.csv", "--out", "y.csv"])
    assert defaults.time_column == labels.DEFAULT_TIME_COLUMN
    assert defaults.stress_column == labels.DEFAULT_STRESS_COLUMN
    assert defaults.drop_fraction == labels.DROP_FRACTION
