"""The simulator: determinism, LANL-like statistics and labels, cycles, precursors, the
calibration against the real Penn State experiment, and the ``labquake simulate`` verb.

Most tests run at 20-40 kHz: the physics is in seconds, so a low rate shows the same
cycles and variances in seconds at a fraction of the cost of 4 MHz.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from model.data.records import read_record
from model.data.simulate import (
    BIN_SAMPLES,
    DEFAULT_CYCLE_SECONDS,
    DEFAULT_SAMPLE_RATE,
    TILE_SAMPLES,
    LabFault,
    record_samples,
    simulate,
    simulate_blocks,
)
from stream.cli import main
from stream.cli import simulate as simulate_cli
from stream.core.errors import LabquakeError

pytestmark = pytest.mark.unit

LOW_RATE = 2e4
PENN_STATE_CSV = (Path(__file__).resolve().parents[2].parent / "shared" / "data"
                  / "pennstate_ae_variance_3800_4100s.csv")


@pytest.fixture(scope="module")
def long_record():
    """Five minutes at 20 kHz with the default cycles: about 25 failures."""
    return simulate(300.0, sample_rate=LOW_RATE, seed=11)


def window_variance(acoustic: np.ndarray, window: int) -> np.ndarray:
    """Variance of consecutive windows of ``window`` samples."""
    usable = len(acoustic) // window * window
    return acoustic[:usable].astype(np.float64).reshape(-1, window).var(axis=1)


# --- determinism ---------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_whatever_the_block_size():
    seconds, rate = 60.0, 4e4
    reference = simulate(seconds, sample_rate=rate, seed=5)
    for block_samples in (TILE_SAMPLES, 100_003, 3 * BIN_SAMPLES + 7, 2 * TILE_SAMPLES + 1):
        blocks = list(simulate_blocks(seconds, sample_rate=rate, seed=5,
                                      block_samples=block_samples))
        assert all(len(acoustic) <= block_samples for acoustic, _ in blocks)
        acoustic = np.concatenate([acoustic for acoustic, _ in blocks])
        ttf = np.concatenate([ttf for _, ttf in blocks])
        assert acoustic.tobytes() == reference.acoustic_data.tobytes()
        assert ttf.tobytes() == reference.time_to_failure.tobytes()


def test_any_sample_range_renders_the_same_samples():
    fault = LabFault(sample_rate=4e4, seed=9)
    whole_acoustic, whole_ttf = fault.render(0, 3 * TILE_SAMPLES)
    for start, stop in ((TILE_SAMPLES - 5, TILE_SAMPLES + 5), (123_457, 2_500_000), (7, 7)):
        acoustic, ttf = LabFault(sample_rate=4e4, seed=9).render(start, stop)
        np.testing.assert_array_equal(acoustic, whole_acoustic[start:stop])
        np.testing.assert_array_equal(ttf, whole_ttf[start:stop])


def test_different_seeds_give_different_records():
    first = simulate(5.0, sample_rate=4e4, seed=1).acoustic_data
    second = simulate(5.0, sample_rate=4e4, seed=2).acoustic_data
    assert not np.array_equal(first, second)


# --- LANL-like statistics ------------------------------------------------------------


def test_amplitude_statistics_are_lanl_like(long_record):
    acoustic = long_record.acoustic_data
    assert acoustic.dtype == np.int16
    assert 4.2 < acoustic.mean() < 4.8  # LANL: about 4.5
    assert 8.5 < acoustic.std() < 13.0  # LANL: about 10.7 over the record
    # Quiet background: a few counts. 37.5 ms windows, as LANL's 150k segments.
    segment_std = np.sqrt(window_variance(acoustic, int(0.0375 * LOW_RATE)))
    assert 2.0 < np.median(segment_std) < 5.0


def test_offset_drifts_slowly(long_record):
    """The offset moves (what the winners removed with the median) but only slowly."""
    ten_seconds = int(10 * LOW_RATE)
    usable = len(long_record.acoustic_data) // ten_seconds * ten_seconds
    medians = np.median(long_record.acoustic_data[:usable].reshape(-1, ten_seconds)
                        .astype(np.float64), axis=1)
    means = long_record.acoustic_data[:usable].reshape(-1, ten_seconds).mean(axis=1)
    assert np.ptp(means) > 0.1
    assert np.abs(np.diff(means)).max() < 1.0
    assert np.all(np.abs(medians - 4.5) <= 2.0)


def test_failures_carry_thousands_of_counts_and_quiet_times_do_not(long_record):
    acoustic = long_record.acoustic_data
    burst = int(0.05 * LOW_RATE)
    near_failure = np.zeros(len(acoustic), bool)
    for failure in long_record.failure_samples:
        peak = np.abs(acoustic[failure:failure + burst].astype(np.int32)).max()
        assert peak > 2_000
        near_failure[failure:failure + burst] = True
    assert np.abs(acoustic[~near_failure].astype(np.int32)).max() < 2_000
    assert np.abs(acoustic.astype(np.int32)).max() <= 5_500


def test_coseismic_extremes_at_4_mhz_reach_about_5500():
    """At LANL's rate the bursts reach the digitiser's full scale on both sides."""
    fault = LabFault(DEFAULT_SAMPLE_RATE, seed=0)
    failures = fault.failure_samples(int(120 * DEFAULT_SAMPLE_RATE))[:4]
    highs, lows = [], []
    for failure in failures:
        acoustic, _ = fault.render(failure - BIN_SAMPLES, failure + int(0.05 * DEFAULT_SAMPLE_RATE))
        highs.append(int(acoustic.max()))
        lows.append(int(acoustic.min()))
    assert 4_000 < max(highs) <= 5_500
    assert -5_500 <= min(lows) < -4_000
    assert all(high > 2_500 for high in highs) and all(low < -2_500 for low in lows)


# --- labels, bins and cycles ---------------------------------------------------------


def test_time_to_failure_is_constant_in_bins_of_4096_and_steps_between_them(long_record):
    ttf = long_record.time_to_failure
    whole = len(ttf) // BIN_SAMPLES * BIN_SAMPLES
    by_bin = ttf[:whole].reshape(-1, BIN_SAMPLES)
    assert np.all(by_bin == by_bin[:, :1])
    steps = np.diff(by_bin[:, 0])
    bin_seconds = BIN_SAMPLES / LOW_RATE
    jumps = np.flatnonzero(steps > 0)
    np.testing.assert_allclose(np.delete(steps, jumps), -bin_seconds, rtol=1e-9)
    assert np.all(ttf > 0)


def test_time_to_failure_counts_down_to_each_failure_and_jumps_there(long_record):
    ttf, rate = long_record.time_to_failure, long_record.sample_rate
    failures = long_record.failure_samples
    assert len(failures) >= 15
    assert np.flatnonzero(np.diff(ttf) > 0).tolist() == [f - 1 for f in failures]
    for failure in failures:
        assert failure % BIN_SAMPLES == 0
        assert ttf[failure - 1] == pytest.approx(1 / rate)
        assert ttf[failure] > DEFAULT_CYCLE_SECONDS[0] - 1
    # After the last failure the label counts to the failure planned past the record's end.
    last_bin_end = (len(ttf) - 1) // BIN_SAMPLES * BIN_SAMPLES + BIN_SAMPLES - 1
    assert long_record.next_failure_sample >= len(ttf)
    assert ttf[-1] == pytest.approx((long_record.next_failure_sample - last_bin_end) / rate)
    assert long_record.failure_times[0] == pytest.approx(failures[0] / rate)


@pytest.mark.parametrize("cycle_seconds", [DEFAULT_CYCLE_SECONDS, (3.0, 5.0)])
def test_cycle_lengths_are_aperiodic_within_the_configured_range(cycle_seconds):
    fault = LabFault(LOW_RATE, seed=4, cycle_seconds=cycle_seconds)
    lengths = np.diff(fault.failure_samples(int(3000 * LOW_RATE))) / LOW_RATE
    shortest, longest = cycle_seconds
    bin_seconds = BIN_SAMPLES / LOW_RATE  # lengths are whole bins
    assert len(lengths) > 150
    assert lengths.min() >= shortest - bin_seconds and lengths.max() <= longest + bin_seconds
    spread = longest - shortest
    assert lengths.min() < shortest + 0.25 * spread and lengths.max() > longest - 0.25 * spread
    assert np.std(lengths) > 0.15 * spread


def test_physics_is_in_seconds_whatever_the_sample_rate():
    seconds, fast_rate = 150.0, 6e4
    slow, fast = (LabFault(rate, seed=3) for rate in (LOW_RATE, fast_rate))
    slow_times = np.array(slow.failure_samples(int(seconds * LOW_RATE))) / LOW_RATE
    fast_times = np.array(fast.failure_samples(int(seconds * fast_rate))) / fast_rate
    assert len(slow_times) == len(fast_times) >= 10
    assert np.abs(slow_times - fast_times).max() < 2 * BIN_SAMPLES / LOW_RATE
    slow_std = slow.render(0, int(seconds * LOW_RATE))[0].std()
    fast_std = fast.render(0, int(seconds * fast_rate))[0].std()
    assert fast_std == pytest.approx(slow_std, rel=0.15)


# --- precursors ----------------------------------------------------------------------


def cycle_ramps(record, row_seconds: float = 0.1) -> np.ndarray:
    """Per full cycle: median 0.1-s variance in the last second over that mid-cycle."""
    rate = record.sample_rate
    row = int(row_seconds * rate)
    ratios = []
    for start, stop in zip(record.failure_samples[:-1], record.failure_samples[1:], strict=True):
        variance = window_variance(record.acoustic_data[start:stop], row)
        rows = len(variance)
        middle = variance[int(0.4 * rows):int(0.6 * rows)]
        last_second = variance[rows - int(1.0 / row_seconds):]
        ratios.append(np.median(last_second) / np.median(middle))
    return np.array(ratios)


def test_ae_energy_rises_before_every_failure_with_varying_strength(long_record):
    ratios = cycle_ramps(long_record)
    assert len(ratios) >= 15
    assert ratios.min() > 1.3  # every cycle warns, weakly or strongly
    assert np.median(ratios) > 2.0
    assert ratios.max() / ratios.min() > 1.8  # some cycles have much weaker precursors


def test_precursor_events_grow_in_rate_and_size_near_failure(long_record):
    """Impulsive events (well above the background) are more and larger near failure."""
    acoustic, rate = long_record.acoustic_data.astype(np.int32), long_record.sample_rate
    threshold = 40
    early, late = [], []
    for start, stop in zip(long_record.failure_samples[:-1], long_record.failure_samples[1:],
                           strict=True):
        middle = np.abs(acoustic[start + (stop - start) // 3:start + (stop - start) // 2] - 4)
        last = np.abs(acoustic[stop - int(1.0 * rate):stop] - 4)
        early.append(((middle > threshold).sum() / len(middle), middle.max()))
        late.append(((last > threshold).sum() / len(last), last.max()))
    early, late = np.array(early), np.array(late)
    assert np.median(late[:, 0]) > 3 * np.median(early[:, 0])
    assert np.median(late[:, 1]) > 1.3 * np.median(early[:, 1])


# --- calibration against the Penn State experiment -----------------------------------

ROW_SECONDS = 0.1
WINDOW_SECONDS = 1.0
TTF_BIN_EDGES = (0.0, 0.3, 0.6, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)


def ramp_statistics(variance, ttf, since_failure, cycle) -> dict[str, np.ndarray]:
    """The comparison made identically on the real and the simulated series.

    Rows are AE variances over trailing 1-s windows every 0.1 s (what the Penn State
    file holds: one burst raises exactly ten consecutive rows). Per full cycle, every row
    is divided by the cycle's mid-cycle level (the median row with TTF in 40-60 % of the
    cycle), leaving out rows whose window still holds the failure's burst.

    Returns: ``ramp`` (median over cycles of the normalised variance in each TTF bin of
    ``TTF_BIN_EDGES``), and per cycle ``last`` (last-second level over mid), ``burst``
    (co-seismic peak over mid), ``mid`` (mid-cycle level) and ``length`` (seconds).
    """
    curves, last, burst, mid, length = [], [], [], [], []
    for index in np.unique(cycle):
        rows = cycle == index
        v, until, since = variance[rows], ttf[rows], since_failure[rows]
        seconds = until[0] + since[0]
        quiet = since >= WINDOW_SECONDS + ROW_SECONDS
        level = np.median(v[quiet & (until > 0.4 * seconds) & (until < 0.6 * seconds)])
        curve = []
        for low, high in itertools.pairwise(TTF_BIN_EDGES):
            in_bin = quiet & (until >= low) & (until < high)
            curve.append(np.median(v[in_bin]) / level if in_bin.any() else np.nan)
        curves.append(curve)
        last.append(np.median(v[quiet & (until < 1.0)]) / level)
        burst.append(v[since < WINDOW_SECONDS].max() / level)
        mid.append(level)
        length.append(seconds)
    return {"ramp": np.nanmedian(np.array(curves), axis=0), "last": np.array(last),
            "burst": np.array(burst), "mid": np.array(mid), "length": np.array(length)}


def penn_state_rows():
    """Rows of both AE channels of the real experiment, full cycles only."""
    header = PENN_STATE_CSV.read_text().splitlines()[0].split(",")
    table = np.loadtxt(PENN_STATE_CSV, delimiter=",", skiprows=1)
    column = {name: table[:, i] for i, name in enumerate(header)}
    until = column["TimeToStartFailure"]
    starts = np.flatnonzero(np.diff(until) > 2 * ROW_SECONDS) + 1
    # The file's first row reads 0 s to failure, an artefact of the processing (no burst
    # follows it): the jump after it is not a failure.
    starts = starts[starts > 1]
    row = np.arange(len(until))
    cycle = np.searchsorted(starts, row, side="right")
    since = (row - starts[np.maximum(cycle - 1, 0)]) * ROW_SECONDS
    full = (cycle >= 1) & (cycle < len(starts))
    parts = [(column[channel][full], until[full], since[full], cycle[full] + 1000 * number)
             for number, channel in enumerate(("Var_Ch1", "Var_Ch2"))]
    return [np.concatenate(arrays) for arrays in zip(*parts, strict=True)]


def simulated_rows(record):
    """The simulated record turned into the same rows as the Penn State file."""
    rate = record.sample_rate
    row, rows_per_window = int(ROW_SECONDS * rate), round(WINDOW_SECONDS / ROW_SECONDS)
    usable = len(record.acoustic_data) // row * row
    by_row = record.acoustic_data[:usable].astype(np.float64).reshape(-1, row)
    kernel = np.ones(rows_per_window)
    sums = np.convolve(by_row.sum(axis=1), kernel, "valid")
    squares = np.convolve((by_row ** 2).sum(axis=1), kernel, "valid")
    window = row * rows_per_window
    variance = squares / window - (sums / window) ** 2
    last_sample = (np.arange(len(variance)) + rows_per_window) * row - 1
    failures = np.array(record.failure_samples)
    cycle = np.searchsorted(failures, last_sample, side="right")
    since = (last_sample - failures[np.maximum(cycle - 1, 0)]) / rate
    full = (cycle >= 1) & (cycle < len(failures))
    return variance[full], record.time_to_failure[last_sample][full], since[full], cycle[full]


@pytest.fixture(scope="module")
def calibration():
    if not PENN_STATE_CSV.is_file():
        pytest.skip(f"real Penn State data not found at {PENN_STATE_CSV} (the shared/ folder "
                    "beside the repository); the calibration needs it")
    real = ramp_statistics(*penn_state_rows())
    shortest, longest = float(real["length"].min()), float(real["length"].max())
    record = simulate(400.0, sample_rate=LOW_RATE, seed=0, cycle_seconds=(shortest, longest))
    simulated = ramp_statistics(*simulated_rows(record))
    return real, simulated


def test_calibration_variance_ramp_has_the_real_shape(calibration):
    real, simulated = calibration
    ratio = simulated["ramp"] / real["ramp"]
    print("\nTTF bin (s)      ", TTF_BIN_EDGES[:-1])
    print("Penn State ramp  ", np.round(real["ramp"], 2))
    print("simulated ramp   ", np.round(simulated["ramp"], 2))
    assert np.all((ratio > 0.75) & (ratio < 1.33)), ratio
    assert np.median(simulated["last"]) == pytest.approx(np.median(real["last"]), rel=0.3)


def test_calibration_every_cycle_rises_like_nearly_all_real_ones(calibration):
    real, simulated = calibration
    print(f"\nlast-second / mid-cycle: real median {np.median(real['last']):.2f} "
          f"(q10 {np.percentile(real['last'], 10):.2f}), simulated median "
          f"{np.median(simulated['last']):.2f} (min {simulated['last'].min():.2f})")
    assert np.mean(real["last"] > 1.5) > 0.9
    assert simulated["last"].min() > 1.5
    assert np.percentile(simulated["last"], 10) == pytest.approx(
        np.percentile(real["last"], 10), rel=0.35)


def test_calibration_coseismic_jump_matches(calibration):
    real, simulated = calibration
    real_q = np.percentile(real["burst"], [10, 50, 90])
    simulated_q = np.percentile(simulated["burst"], [10, 50, 90])
    print(f"\nco-seismic / mid-cycle q10,q50,q90: real {np.round(real_q)}, "
          f"simulated {np.round(simulated_q)}")
    assert simulated_q[1] == pytest.approx(real_q[1], rel=0.3)
    assert simulated_q[2] / simulated_q[0] == pytest.approx(real_q[2] / real_q[0], rel=0.5)


def test_calibration_cycle_statistics_match(calibration):
    real, simulated = calibration
    real_cv = real["length"].std() / real["length"].mean()
    simulated_cv = simulated["length"].std() / simulated["length"].mean()
    print(f"\ncycle length mean/CV: real {real['length'].mean():.2f} s / {real_cv:.2f}, "
          f"simulated {simulated['length'].mean():.2f} s / {simulated_cv:.2f}")
    assert simulated["length"].mean() == pytest.approx(real["length"].mean(), rel=0.12)
    assert 0.5 * real_cv < simulated_cv < 1.6 * real_cv
    # Cycle-to-cycle variation of the AE level (real: 0.32 on channel 2, 0.87 on channel 1
    # where one cycle's mid-level is ten times the others).
    mid_cv = simulated["mid"].std() / simulated["mid"].mean()
    assert 0.15 < mid_cv < real["mid"].std() / real["mid"].mean()


# --- errors and the verb -------------------------------------------------------------


@pytest.mark.parametrize(("call", "words"), [
    (lambda: simulate(-1.0), "not positive"),
    (lambda: simulate(0.0), "not positive"),
    (lambda: simulate(1.0, sample_rate=0.0), "sample rate"),
    (lambda: simulate(1.0, sample_rate=math.nan), "sample rate"),
    (lambda: simulate(1.0, cycle_seconds=(9.0, 3.0)), "MIN <= MAX"),
    (lambda: simulate(1.0, sample_rate=1e3), "fewer than 8 bins"),
    (lambda: simulate(1.0, sample_rate=4e4, seed=-1), "seed"),
    (lambda: simulate(math.inf, sample_rate=4e4), "too long"),
    (lambda: simulate_blocks(1.0, block_samples=0), "block size"),
])
def test_bad_values_raise_one_line_errors(call, words):
    with pytest.raises(LabquakeError, match=words) as error:
        call()
    assert "\n" not in str(error.value)


def test_endless_stream_and_record_length():
    assert record_samples(2.5, 4e6) == 10_000_000
    assert record_samples(math.inf, 4e6) is None
    blocks = simulate_blocks(math.inf, sample_rate=4e4, block_samples=50_000)
    assert [len(next(blocks)[0]) for _ in range(30)] == [50_000] * 30


def test_verb_writes_the_record_and_prints_a_summary(tmp_path, capsys):
    out = tmp_path / "sim.npz"
    code = main(["simulate", "--out", str(out), "--seconds", "20", "--sample-rate", "4e4",
                 "--seed", "3", "--cycle-seconds", "5", "8"])
    assert code == 0
    expected = simulate(20.0, sample_rate=4e4, seed=3, cycle_seconds=(5.0, 8.0))
    written = read_record(out)
    np.testing.assert_array_equal(written.acoustic_data, expected.acoustic_data)
    np.testing.assert_array_equal(written.time_to_failure, expected.time_to_failure)
    assert written.sample_rate == 4e4
    summary = capsys.readouterr().out.strip()
    assert summary == (f"wrote 800,000 samples (20 s at 40000 Hz, "
                       f"{len(expected.failure_samples)} failures, seed 3) to {out}")
    assert [path.name for path in tmp_path.iterdir()] == ["sim.npz"]


def test_verb_writes_csv_with_a_progress_bar_on_stderr(tmp_path, capsys):
    out = tmp_path / "sim.csv"
    assert main(["simulate", "--out", str(out), "--seconds", "2", "--sample-rate", "4e4"]) == 0
    captured = capsys.readouterr()
    assert "sample" in captured.err and "80.0k" in captured.err
    assert out.read_text().splitlines()[0] == "acoustic_data,time_to_failure"
    assert len(read_record(out).acoustic_data) == 80_000


@pytest.mark.parametrize(("flags", "words"), [
    (["--out", "x.txt", "--seconds", "1"], "unknown suffix '.txt'"),
    (["--out", "x.csv", "--seconds", "-1"], "not positive"),
    (["--out", "x.csv", "--seconds", "inf"], "not a finite length"),
    (["--out", "x.csv", "--seconds", "1", "--cycle-seconds", "5", "2"], "MIN <= MAX"),
])
def test_verb_reports_bad_values_in_one_line(tmp_path, capsys, monkeypatch, flags, words):
    monkeypatch.chdir(tmp_path)
    assert main(["simulate", *flags, "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("labquake simulate: ") and words in error
    assert error.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_verb_defaults_are_the_simulator_defaults():
    import argparse

    parser = simulate_cli.add_parser(argparse.ArgumentParser().add_subparsers())
    defaults = parser.parse_args(["--out", "x.npz", "--seconds", "1"])
    # No rate given: the simulator's, or the envelope's with --envelope.
    assert defaults.sample_rate is None
    assert simulate_cli.SIMULATOR_SAMPLE_RATE == DEFAULT_SAMPLE_RATE
    assert tuple(defaults.cycle_seconds) == DEFAULT_CYCLE_SECONDS
    assert defaults.seed == 0
