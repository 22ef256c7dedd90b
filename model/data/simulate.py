"""A synthetic laboratory-earthquake record: acoustic emission (AE) of a stick-slip fault.

The output imitates the LANL competition data (int16 AE at 4 MHz with a ``time_to_failure``
label in bins of 4,096 samples) and is calibrated against the AE-variance-versus-time-to-
failure behaviour of a real Penn State experiment (see ``docs/simulator.md``).

What a record holds:

- aperiodic stick-slip cycles; each cycle ends in a failure (a labquake);
- a quiet background (a few counts) that is quietest just after a failure and recovers as
  the fault reloads;
- impulsive precursor events (decaying oscillatory bursts from microslip on asperities)
  whose rate and size grow as failure nears; each cycle draws its own strength, so some
  cycles have weak precursors, but every cycle's AE energy rises in its last seconds;
- at each failure a co-seismic burst of thousands of counts lasting milliseconds to tens
  of milliseconds, saturating at the digitiser's full scale (about +/-5,500 counts);
- a slowly drifting offset around a mean of about 4.5 counts.

Failures fall on bin boundaries: a failure at sample ``F`` means the co-seismic burst starts
at ``F`` and ``F`` is a multiple of :data:`BIN_SAMPLES`. ``time_to_failure`` is constant
within each bin of 4,096 samples, as in LANL: the seconds from the bin's last sample to the
next failure, so the last bin before a failure reads ``1 / sample_rate`` and the label
jumps to the next cycle's length at the failure. The fault's cycles are planned beyond the
end of any record, so after a record's last failure ``time_to_failure`` counts down to a
failure that lies past the record's end (:attr:`SimulatedRecord.next_failure_sample`).

Every sample is a function of its index and the seed alone: the same seed gives identical
bytes whatever block size is asked for, and :meth:`LabFault.render` reads any sample range.

Example:
    >>> record = simulate(30.0, sample_rate=4e4, seed=1)
    >>> record.acoustic_data.dtype, len(record.failure_samples) >= 1
    (dtype('int16'), True)
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import math
from collections.abc import Iterator

import numpy as np

from model.data.records import LANL_SAMPLE_RATE
from stream.core.errors import LabquakeError

# LANL's acquisition delivers samples in bins of this many; the label steps between bins.
BIN_SAMPLES = 4096
DEFAULT_SAMPLE_RATE = LANL_SAMPLE_RATE
DEFAULT_CYCLE_SECONDS = (7.0, 16.0)
# Noise is drawn in tiles of this many samples, each from its own seeded generator, so the
# output does not depend on how a caller cuts it into blocks. A whole number of bins.
TILE_SAMPLES = 256 * BIN_SAMPLES
DEFAULT_BLOCK_SAMPLES = TILE_SAMPLES
# simulate() holds the record in memory (10 bytes a sample); longer records use blocks.
MAX_IN_MEMORY_SAMPLES = 1 << 28
# A cycle shorter than this many bins would have a label coarser than its own precursors.
MIN_BINS_PER_CYCLE = 8
# The slowly varying envelope (background level, drift) is evaluated at about this spacing.
ENVELOPE_STEP_SECONDS = 1e-3
# Cycle lengths are planned in batches of this many, each batch from its own generator.
_CYCLE_BATCH = 64
# Events are cut off after this many decay times (amplitude e^-5, under 1 %).
_EVENT_SUPPORT_DECAYS = 5.0
# An oscillation is kept below this fraction of the sample rate so it is never aliased.
_MAX_FREQUENCY_FRACTION = 0.25
# Points of the grid on which a cycle's event intensity is integrated.
_INTENSITY_GRID_POINTS = 2048
# Levels of the inverse-CDF table that turns random 16-bit integers into Gaussian noise.
_NORMAL_TABLE_LEVELS = 1 << 16

# Independent random streams, one per purpose: (seed, stream, index) seeds a generator.
_STREAM_PHASE = 1
_STREAM_CYCLE_LENGTHS = 2
_STREAM_CYCLE = 3
_STREAM_NOISE = 4
_STREAM_DRIFT = 5


@dataclasses.dataclass(frozen=True)
class FaultPhysics:
    """The numbers that shape a simulated record; the defaults are the calibrated ones.

    Variances are in counts squared, times in seconds, rates in events per second. A cycle's
    AE variance is ``loaded_variance * gain * recovery(tsf) * (1 + precursor(ttf))``:

    - ``gain``: the cycle's own level, log-normal with ``cycle_gain_sigma``;
    - ``recovery(tsf) = 1 - (1 - recovery_floor) * exp(-(tsf / recovery_seconds)^2)``: quiet
      just after a failure, back to the loaded level as the fault reloads;
    - ``precursor(ttf) = p * (1 / (1 + exp((ttf - onset) / width))
      + late_precursor_gain * exp(-ttf / late_precursor_seconds))``: ``p`` the cycle's
      precursor gain (log-normal around ``precursor_gain_median``, or, for a
      ``weak_precursor_fraction`` of cycles, uniform in ``weak_precursor_gain``), ``onset``
      drawn in ``precursor_onset_seconds``, ``width = precursor_width_fraction * onset``.
      The real ramp steepens a few seconds before failure (the logistic) and keeps growing
      into the failure: the Penn State rows, 1-s trailing variances, still rise from
      3.0x to 3.9x the mid-cycle level over the last 1.5 s, which a logistic that levels off
      does not give (the late exponential term does).

    A ``background_share`` of the variance is Gaussian background, which takes a
    ``background_growth`` fraction of the precursor growth; the rest is carried by impulsive
    events (rate ``event_rate_hz``, growing by ``event_rate_growth`` times the precursor term,
    Pareto sizes of exponent ``event_size_exponent`` capped at ``event_max_counts``, decay
    and frequency drawn log-uniformly), which grow faster so the total grows as above.
    Each failure starts with a main shock of ``coseismic_peak_fraction`` of
    ``full_scale_counts`` followed for ``coseismic_seconds`` by a coda of sub-events
    (``coda_rate_hz``, ``coda_ratio`` of the main amplitude, decaying). The digitiser
    saturates at ``full_scale_counts``. A sum of ``drift_terms`` slow sinusoids of total
    amplitude ``drift_counts`` moves the offset around ``mean_counts``.

    Example:
        >>> FaultPhysics().mean_counts
        4.5
    """

    mean_counts: float = 4.5
    drift_counts: float = 0.4
    drift_period_seconds: tuple[float, float] = (20.0, 400.0)
    drift_terms: int = 3
    loaded_variance: float = 10.0
    background_share: float = 0.7
    background_growth: float = 0.6
    cycle_gain_sigma: float = 0.3
    recovery_floor: float = 0.55
    recovery_seconds: float = 3.5
    precursor_gain_median: float = 3.0
    precursor_gain_sigma: float = 0.4
    weak_precursor_fraction: float = 0.2
    weak_precursor_gain: tuple[float, float] = (1.0, 1.8)
    precursor_onset_seconds: tuple[float, float] = (1.8, 3.0)
    precursor_width_fraction: float = 0.3
    late_precursor_gain: float = 0.8
    late_precursor_seconds: float = 0.5
    event_rate_hz: float = 60.0
    event_rate_growth: float = 1.0
    event_decay_seconds: tuple[float, float] = (10e-6, 60e-6)
    event_frequency_hz: tuple[float, float] = (80e3, 300e3)
    event_size_exponent: float = 3.5
    event_max_counts: float = 1500.0
    full_scale_counts: float = 5500.0
    coseismic_peak_fraction: tuple[float, float] = (0.75, 1.0)
    coseismic_decay_seconds: float = 0.15e-3
    coseismic_frequency_hz: tuple[float, float] = (30e3, 80e3)
    coseismic_seconds: tuple[float, float] = (10e-3, 40e-3)
    coda_rate_hz: float = 2000.0
    coda_ratio: float = 0.1
    coda_decay_seconds: tuple[float, float] = (0.1e-3, 0.5e-3)
    # A cycle's precursor onset and recovery time never exceed this fraction of its length.
    max_time_fraction_of_cycle: float = 0.4


@dataclasses.dataclass(frozen=True)
class SimulatedRecord:
    """A simulated record held in memory, with where its failures are.

    Attributes:
        acoustic_data: int16 AE samples.
        time_to_failure: float64 seconds from each sample's bin to the next failure.
        sample_rate: samples per second.
        failure_samples: indices of the samples where failures (co-seismic bursts) start.
        next_failure_sample: the first planned failure after the record's end.
    """

    acoustic_data: np.ndarray
    time_to_failure: np.ndarray
    sample_rate: float
    failure_samples: tuple[int, ...]
    next_failure_sample: int

    @property
    def failure_times(self) -> tuple[float, ...]:
        """Seconds from the record's first sample to each failure."""
        return tuple(sample / self.sample_rate for sample in self.failure_samples)


@dataclasses.dataclass(frozen=True)
class _Events:
    """Decaying oscillations ``a * exp(-n * decay) * sin(omega * n + phase)`` from ``start``."""

    start: np.ndarray  # int64, absolute sample index
    length: np.ndarray  # int64, samples
    amplitude: np.ndarray
    decay: np.ndarray  # per sample
    omega: np.ndarray  # radians per sample
    phase: np.ndarray

    @staticmethod
    def empty() -> _Events:
        return _Events(*(np.empty(0, np.int64) if field.name in ("start", "length")
                         else np.empty(0) for field in dataclasses.fields(_Events)))

    @staticmethod
    def concatenate(parts: list[_Events]) -> _Events:
        return _Events(*(np.concatenate([getattr(part, field.name) for part in parts])
                         for field in dataclasses.fields(_Events)))

    def overlapping(self, start: int, stop: int) -> _Events:
        keep = (self.start < stop) & (self.start + self.length > start)
        return _Events(*(getattr(self, field.name)[keep] for field in dataclasses.fields(_Events)))


@dataclasses.dataclass(frozen=True)
class _Cycle:
    """One planned stick-slip cycle: it starts with a failure at ``start``."""

    start: int
    stop: int
    gain: float
    precursor_gain: float
    precursor_onset: float
    recovery_seconds: float
    events: _Events


def record_samples(seconds: float, sample_rate: float) -> int | None:
    """How many samples a record of ``seconds`` holds; ``None`` for an endless one.

    Args:
        seconds: record length; ``math.inf`` for an endless stream.
        sample_rate: samples per second.

    Returns:
        The sample count (at least 1), or ``None`` when ``seconds`` is infinite.

    Example:
        >>> record_samples(2.5, 4e6)
        10000000
    """
    if not seconds > 0:
        raise LabquakeError(f"record length {seconds} s is not positive; give --seconds > 0")
    if math.isinf(seconds):
        return None
    return max(1, round(seconds * sample_rate))


@functools.cache
def _normal_table() -> np.ndarray:
    """Gaussian quantiles at evenly spaced probabilities: indexing it with uniform 16-bit
    integers draws normal noise about three times faster than ``standard_normal``."""
    from scipy.special import ndtri

    levels = (np.arange(_NORMAL_TABLE_LEVELS) + 0.5) / _NORMAL_TABLE_LEVELS
    return ndtri(levels).astype(np.float32)


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float], size: int) -> np.ndarray:
    low, high = bounds
    return np.exp(rng.uniform(math.log(low), math.log(high), size))


class LabFault:
    """A simulated fault: its planned stick-slip cycles and the AE it emits.

    Any sample range can be rendered, in any order; the result depends only on the sample
    indices, the seed and the physics.

    Args:
        sample_rate: samples per second (default 4 MHz, as LANL). Physics is in seconds, so
            a lower rate gives the same cycles, ramps and variances in seconds.
        seed: non-negative integer; the same seed gives the same record.
        cycle_seconds: (shortest, longest) cycle; lengths are drawn between them from a
            Beta(2, 2) distribution, so cycles are aperiodic but cluster mid-range.
        physics: the numbers that shape the signal.

    Example:
        >>> fault = LabFault(sample_rate=4e4, seed=3)
        >>> acoustic, ttf = fault.render(0, 8192)
        >>> acoustic.shape, ttf.dtype
        ((8192,), dtype('float64'))
    """

    def __init__(self, sample_rate: float = DEFAULT_SAMPLE_RATE, seed: int = 0,
                 cycle_seconds: tuple[float, float] = DEFAULT_CYCLE_SECONDS,
                 physics: FaultPhysics | None = None) -> None:
        shortest, longest = (float(value) for value in cycle_seconds)
        if not (math.isfinite(sample_rate) and sample_rate > 0):
            raise LabquakeError(f"sample rate {sample_rate} is not a positive number of Hz; "
                                "give --sample-rate > 0, e.g. 4e6")
        if not (0 < shortest <= longest < math.inf):
            raise LabquakeError(f"cycle lengths ({shortest}, {longest}) s are not 0 < MIN <= MAX;"
                                " give --cycle-seconds MIN MAX, e.g. 7 16")
        if shortest * sample_rate < MIN_BINS_PER_CYCLE * BIN_SAMPLES:
            raise LabquakeError(
                f"a {shortest} s cycle at {sample_rate:g} Hz spans fewer than "
                f"{MIN_BINS_PER_CYCLE} bins of {BIN_SAMPLES} samples; raise --sample-rate "
                "or the shortest --cycle-seconds")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise LabquakeError(f"seed {seed!r} is not a non-negative integer; give --seed N")
        self.sample_rate = float(sample_rate)
        self.seed = int(seed)
        self.cycle_seconds = (shortest, longest)
        self.physics = physics or FaultPhysics()
        self._envelope_step = self._pick_envelope_step()
        self._length_batch: tuple[int, np.ndarray] = (-1, np.empty(0, np.int64))
        phase_rng = np.random.default_rng([self.seed, _STREAM_PHASE])
        first_bins = self._cycle_bins(0)
        # The record starts part-way into its first cycle, as LANL's does; the phase is a
        # fraction of the cycle so it is the same in seconds at any sample rate.
        phase_bins = max(1, int(phase_rng.random() * first_bins))
        self._cycle_starts = [-BIN_SAMPLES * phase_bins]
        self._cycles: dict[int, _Cycle] = {}
        self._drift = self._plan_drift()
        self._cached_tile: tuple[int, np.ndarray, np.ndarray] | None = None

    # --- planning --------------------------------------------------------------------

    def _pick_envelope_step(self) -> int:
        """Largest power of two samples within ENVELOPE_STEP_SECONDS; it divides a bin."""
        step = 1
        while step * 2 <= min(BIN_SAMPLES, self.sample_rate * ENVELOPE_STEP_SECONDS):
            step *= 2
        return step

    def _cycle_bins(self, cycle: int) -> int:
        """Length of cycle ``cycle`` in bins; drawn in batches, each from its own generator."""
        batch = cycle // _CYCLE_BATCH
        if self._length_batch[0] != batch:
            rng = np.random.default_rng([self.seed, _STREAM_CYCLE_LENGTHS, batch])
            shortest, longest = self.cycle_seconds
            seconds = shortest + (longest - shortest) * rng.beta(2.0, 2.0, _CYCLE_BATCH)
            bins = np.rint(seconds * self.sample_rate / BIN_SAMPLES).astype(np.int64)
            self._length_batch = (batch, np.maximum(bins, MIN_BINS_PER_CYCLE))
        return int(self._length_batch[1][cycle % _CYCLE_BATCH])

    def _append_cycle(self) -> None:
        cycle = len(self._cycle_starts) - 1
        self._cycle_starts.append(self._cycle_starts[-1] + BIN_SAMPLES * self._cycle_bins(cycle))

    def _extend_cycles_past(self, sample: int) -> None:
        while self._cycle_starts[-1] <= sample:
            self._append_cycle()

    def _cycle_of(self, sample: int) -> int:
        """Index of the cycle holding ``sample`` (cycle 0 holds sample 0)."""
        self._extend_cycles_past(sample)
        return bisect.bisect_right(self._cycle_starts, sample) - 1

    def failure_samples(self, stop: int) -> list[int]:
        """Sample indices in ``[0, stop)`` where failures start.

        Example:
            >>> LabFault(sample_rate=4e4, seed=0).failure_samples(0)
            []
        """
        self._extend_cycles_past(stop)
        first = bisect.bisect_left(self._cycle_starts, 0)
        last = bisect.bisect_left(self._cycle_starts, stop)
        return self._cycle_starts[first:last]

    def next_failure_sample(self, sample: int) -> int:
        """The first failure strictly after ``sample``."""
        return self._cycle_starts[self._cycle_of(sample) + 1]

    def _plan_drift(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, _STREAM_DRIFT])
        terms = self.physics.drift_terms
        periods = _log_uniform(rng, self.physics.drift_period_seconds, terms)
        weights = rng.dirichlet(np.ones(terms))
        phases = rng.uniform(0.0, 2 * math.pi, terms)
        return 2 * math.pi / periods, self.physics.drift_counts * weights, phases

    def _drift_at(self, seconds: np.ndarray) -> np.ndarray:
        angular, amplitude, phase = self._drift
        return self.physics.mean_counts + (
            amplitude * np.sin(np.multiply.outer(seconds, angular) + phase)).sum(axis=-1)

    def _cycle(self, cycle: int) -> _Cycle:
        if cycle not in self._cycles:
            self._cycles[cycle] = self._plan_cycle(cycle)
        return self._cycles[cycle]

    def _plan_cycle(self, cycle: int) -> _Cycle:
        """Draw one cycle's character and its events, from a generator of its own."""
        physics = self.physics
        while len(self._cycle_starts) < cycle + 2:
            self._append_cycle()
        start, stop = self._cycle_starts[cycle], self._cycle_starts[cycle + 1]
        longest_time = physics.max_time_fraction_of_cycle * (stop - start) / self.sample_rate
        rng = np.random.default_rng([self.seed, _STREAM_CYCLE, cycle])
        if rng.random() < physics.weak_precursor_fraction:
            precursor_gain = rng.uniform(*physics.weak_precursor_gain)
        else:
            precursor_gain = physics.precursor_gain_median * math.exp(
                rng.normal(0.0, physics.precursor_gain_sigma))
        shape = _Cycle(
            start=start, stop=stop,
            gain=math.exp(rng.normal(0.0, physics.cycle_gain_sigma)),
            precursor_gain=float(precursor_gain),
            precursor_onset=min(rng.uniform(*physics.precursor_onset_seconds), longest_time),
            recovery_seconds=min(physics.recovery_seconds, longest_time),
            events=_Events.empty())
        events = _Events.concatenate([self._plan_coseismic(rng, start),
                                      self._plan_precursors(rng, shape)])
        return dataclasses.replace(shape, events=events)

    def _envelope(self, since: np.ndarray, until: np.ndarray, gain: np.ndarray,
                  precursor_gain: np.ndarray, precursor_onset: np.ndarray,
                  recovery_seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Background variance, event variance and event rate at times since / until failure.

        The fault recovers from a quiet floor after a failure as it reloads, and both the
        background and the precursor events grow before the next failure (the logistic of
        :class:`FaultPhysics`), the events faster; together the variance grows by exactly
        that factor.
        """
        physics = self.physics
        recovery = 1.0 - (1.0 - physics.recovery_floor) * np.exp(-(since / recovery_seconds) ** 2)
        width = physics.precursor_width_fraction * precursor_onset
        # p / (1 + e^x) written as p * e^-log(1 + e^x), which cannot overflow.
        precursor = precursor_gain * (
            np.exp(-np.logaddexp(0.0, (until - precursor_onset) / width))
            + physics.late_precursor_gain * np.exp(-until / physics.late_precursor_seconds))
        loaded = physics.loaded_variance * gain * recovery
        share = physics.background_share
        event_growth = (1.0 - share * physics.background_growth) / (1.0 - share)
        background = loaded * share * (1.0 + physics.background_growth * precursor)
        events = loaded * (1.0 - share) * (1.0 + event_growth * precursor)
        rate = physics.event_rate_hz * recovery * (1.0 + physics.event_rate_growth * precursor)
        return background, events, rate

    def _events(self, start: np.ndarray, energy: np.ndarray, decay_seconds: np.ndarray,
                frequency_hz: np.ndarray, phase: np.ndarray, max_amplitude: float) -> _Events:
        """Events of given energy (counts squared times seconds), whatever the sample rate.

        The amplitude is set so the sampled event carries ``energy``: the same variance in
        seconds at 4 MHz as at 40 kHz.
        """
        decay_samples = decay_seconds * self.sample_rate
        per_sample = 1.0 / decay_samples
        amplitude = np.sqrt(2.0 * energy * self.sample_rate * -np.expm1(-2.0 * per_sample))
        frequency = np.minimum(frequency_hz, _MAX_FREQUENCY_FRACTION * self.sample_rate)
        return _Events(
            start=start.astype(np.int64),
            length=np.ceil(_EVENT_SUPPORT_DECAYS * decay_samples).astype(np.int64),
            amplitude=np.minimum(amplitude, max_amplitude),
            decay=per_sample,
            omega=2 * math.pi * frequency / self.sample_rate,
            phase=phase)

    def _plan_coseismic(self, rng: np.random.Generator, failure: int) -> _Events:
        """The burst at a failure: one main shock and a decaying coda of sub-events."""
        physics = self.physics
        peak = physics.full_scale_counts * rng.uniform(*physics.coseismic_peak_fraction)
        duration = rng.uniform(*physics.coseismic_seconds)
        coda = int(rng.poisson(physics.coda_rate_hz * duration))
        offsets = np.concatenate([[0.0], rng.uniform(0.0, duration, coda)])
        nominal = peak * np.concatenate([
            [1.0], physics.coda_ratio * np.exp(-2.0 * offsets[1:] / duration)
            * rng.lognormal(0.0, 0.5, coda)])
        decay = np.concatenate([[physics.coseismic_decay_seconds],
                                _log_uniform(rng, physics.coda_decay_seconds, coda)])
        # A decaying oscillation of amplitude a and decay time d carries a^2 d / 4.
        energy = nominal ** 2 * decay / 4.0
        return self._events(
            start=failure + np.floor(offsets * self.sample_rate), energy=energy,
            decay_seconds=decay,
            frequency_hz=_log_uniform(rng, physics.coseismic_frequency_hz, coda + 1),
            phase=rng.uniform(0.0, 2 * math.pi, coda + 1),
            max_amplitude=physics.full_scale_counts)

    def _plan_precursors(self, rng: np.random.Generator, cycle: _Cycle) -> _Events:
        """Precursor events over a cycle: a Poisson process whose rate and sizes follow the
        envelope, sizes heavy-tailed (Pareto) as in acoustic-emission catalogues."""
        physics = self.physics
        seconds = (cycle.stop - cycle.start) / self.sample_rate
        since = np.linspace(0.0, seconds, _INTENSITY_GRID_POINTS)
        _, variance, rate = self._envelope(
            since, seconds - since, cycle.gain, cycle.precursor_gain, cycle.precursor_onset,
            cycle.recovery_seconds)
        cumulative = np.concatenate([[0.0], np.cumsum(np.diff(since) * (rate[1:] + rate[:-1]) / 2)])
        count = int(rng.poisson(cumulative[-1]))
        times = np.sort(np.interp(rng.uniform(0.0, cumulative[-1], count), cumulative, since))
        exponent = physics.event_size_exponent
        size_squared = rng.random(count) ** (-2.0 / exponent)
        mean_size_squared = exponent / (exponent - 2.0)
        # Energy per event so that rate x mean energy = the envelope's event variance.
        energy = (np.interp(times, since, variance) / np.interp(times, since, rate)
                  * size_squared / mean_size_squared)
        return self._events(
            start=cycle.start + np.floor(times * self.sample_rate), energy=energy,
            decay_seconds=_log_uniform(rng, physics.event_decay_seconds, count),
            frequency_hz=_log_uniform(rng, physics.event_frequency_hz, count),
            phase=rng.uniform(0.0, 2 * math.pi, count),
            max_amplitude=physics.event_max_counts)

    # --- rendering -------------------------------------------------------------------

    def _render_tile(self, tile: int) -> tuple[np.ndarray, np.ndarray]:
        first = tile * TILE_SAMPLES
        first_cycle, last_cycle = self._cycle_of(first), self._cycle_of(first + TILE_SAMPLES - 1)
        starts = np.array(self._cycle_starts[first_cycle:last_cycle + 2], dtype=np.int64)
        cycles = [self._cycle(index) for index in range(first_cycle, last_cycle + 1)]
        step = self._envelope_step
        middles = first + step // 2 + step * np.arange(TILE_SAMPLES // step, dtype=np.int64)
        which = np.searchsorted(starts, middles, side="right") - 1
        background, _, _ = self._envelope(
            (middles - starts[which]) / self.sample_rate,
            (starts[which + 1] - middles) / self.sample_rate,
            *(np.array([getattr(cycle, name) for cycle in cycles])[which]
              for name in ("gain", "precursor_gain", "precursor_onset", "recovery_seconds")))

        rng = np.random.default_rng([self.seed, _STREAM_NOISE, tile])
        signal = _normal_table()[rng.integers(0, _NORMAL_TABLE_LEVELS, TILE_SAMPLES,
                                              dtype=np.uint16)]
        by_step = signal.reshape(-1, step)
        by_step *= np.sqrt(background).astype(np.float32)[:, None]
        by_step += self._drift_at(middles / self.sample_rate).astype(np.float32)[:, None]
        # The previous cycle's last events may ring on into this tile.
        if first_cycle > 0:
            cycles.insert(0, self._cycle(first_cycle - 1))
        _add_events(signal, first, _Events.concatenate([cycle.events for cycle in cycles]))
        full_scale = self.physics.full_scale_counts
        np.clip(signal, -full_scale, full_scale, out=signal)
        acoustic = np.rint(signal, out=signal).astype(np.int16)

        bin_starts = first + BIN_SAMPLES * np.arange(TILE_SAMPLES // BIN_SAMPLES, dtype=np.int64)
        bin_cycle = np.searchsorted(starts, bin_starts, side="right") - 1
        bin_ttf = (starts[bin_cycle + 1] - (bin_starts + BIN_SAMPLES - 1)) / self.sample_rate
        for index in [index for index in self._cycles if index < first_cycle - 1]:
            del self._cycles[index]
        return acoustic, np.repeat(bin_ttf, BIN_SAMPLES)

    def _tile(self, tile: int) -> tuple[np.ndarray, np.ndarray]:
        """A tile, kept for the next call: blocks that do not match tiles share them."""
        if self._cached_tile is None or self._cached_tile[0] != tile:
            self._cached_tile = (tile, *self._render_tile(tile))
        return self._cached_tile[1], self._cached_tile[2]

    def render(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Samples ``[start, stop)``: int16 AE and float64 time to failure (seconds).

        Args:
            start: first sample index, >= 0.
            stop: one past the last sample index, >= start.

        Returns:
            ``(acoustic_data, time_to_failure)``, arrays the caller owns.

        Example:
            >>> fault = LabFault(sample_rate=4e4, seed=2)
            >>> bool((fault.render(100, 200)[0] == fault.render(0, 300)[0][100:200]).all())
            True
        """
        if not 0 <= start <= stop:
            raise ValueError(f"sample range [{start}, {stop}) is not 0 <= start <= stop")
        acoustic_pieces, ttf_pieces = [], []
        for tile in range(start // TILE_SAMPLES, -(-stop // TILE_SAMPLES)):
            tile_first = tile * TILE_SAMPLES
            low, high = max(start, tile_first) - tile_first, min(stop, tile_first + TILE_SAMPLES)
            high -= tile_first
            if low == 0 and high == TILE_SAMPLES:
                acoustic, ttf = self._render_tile(tile)
            else:
                acoustic, ttf = (array[low:high].copy() for array in self._tile(tile))
            acoustic_pieces.append(acoustic)
            ttf_pieces.append(ttf)
        if len(acoustic_pieces) == 1:
            return acoustic_pieces[0], ttf_pieces[0]
        if not acoustic_pieces:
            return np.empty(0, np.int16), np.empty(0, np.float64)
        return np.concatenate(acoustic_pieces), np.concatenate(ttf_pieces)

    def blocks(self, start: int = 0, stop: int | None = None,
               block_samples: int = DEFAULT_BLOCK_SAMPLES
               ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Consecutive blocks of ``block_samples`` from ``start`` to ``stop`` (None: endless).

        Example:
            >>> fault = LabFault(sample_rate=4e4, seed=0)
            >>> [len(a) for a, _ in fault.blocks(0, 10_000, block_samples=4_000)]
            [4000, 4000, 2000]
        """
        position = start
        while stop is None or position < stop:
            end = position + block_samples if stop is None else min(position + block_samples, stop)
            yield self.render(position, end)
            position = end


def _add_events(signal: np.ndarray, first: int, events: _Events) -> None:
    """Add every event's samples that fall in ``signal`` (whose first index is ``first``)."""
    events = events.overlapping(first, first + len(signal))
    low = np.maximum(events.start, first)
    counts = np.minimum(events.start + events.length, first + len(signal)) - low
    owner = np.repeat(np.arange(len(counts)), counts)
    # n: each value's sample number within its own event.
    n = (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
         + (low - events.start)[owner])
    values = (events.amplitude[owner] * np.exp(-n * events.decay[owner])
              * np.sin(events.omega[owner] * n + events.phase[owner]))
    np.add.at(signal, events.start[owner] + n - first, values.astype(np.float32))


def simulate_blocks(seconds: float, sample_rate: float = DEFAULT_SAMPLE_RATE, seed: int = 0,
                    cycle_seconds: tuple[float, float] = DEFAULT_CYCLE_SECONDS,
                    block_samples: int = DEFAULT_BLOCK_SAMPLES
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """A simulated record as consecutive blocks, in bounded memory at any length.

    Args:
        seconds: record length (``math.inf``: an endless stream).
        sample_rate: samples per second.
        seed: non-negative integer; the same seed gives identical bytes for any block size.
        cycle_seconds: (shortest, longest) stick-slip cycle.
        block_samples: samples per block (the last block may be shorter).

    Returns:
        An iterator of ``(acoustic_data int16, time_to_failure float64)`` pairs.

    Example:
        >>> blocks = simulate_blocks(1.0, sample_rate=4e4, block_samples=30_000)
        >>> [len(acoustic) for acoustic, _ in blocks]
        [30000, 10000]
    """
    if not (isinstance(block_samples, int | np.integer) and block_samples >= 1):
        raise LabquakeError(f"block size {block_samples!r} is not a positive whole number")
    fault = LabFault(sample_rate, seed, cycle_seconds)
    return fault.blocks(0, record_samples(seconds, sample_rate), int(block_samples))


def simulate(seconds: float, sample_rate: float = DEFAULT_SAMPLE_RATE, seed: int = 0,
             cycle_seconds: tuple[float, float] = DEFAULT_CYCLE_SECONDS) -> SimulatedRecord:
    """A simulated record held in memory, with its failure positions (for small records).

    Args:
        seconds: record length, finite; at most MAX_IN_MEMORY_SAMPLES samples.
        sample_rate: samples per second.
        seed: non-negative integer.
        cycle_seconds: (shortest, longest) stick-slip cycle.

    Returns:
        A :class:`SimulatedRecord`.

    Example:
        >>> record = simulate(20.0, sample_rate=4e4, seed=0)
        >>> len(record.acoustic_data), record.sample_rate
        (800000, 40000.0)
    """
    fault = LabFault(sample_rate, seed, cycle_seconds)
    samples = record_samples(seconds, sample_rate)
    if samples is None or samples > MAX_IN_MEMORY_SAMPLES:
        raise LabquakeError(
            f"a {seconds} s record at {sample_rate:g} Hz is too long to hold in memory; "
            "use simulate_blocks() or 'labquake simulate --out FILE'")
    acoustic, ttf = fault.render(0, samples)
    return SimulatedRecord(acoustic_data=acoustic, time_to_failure=ttf,
                           sample_rate=fault.sample_rate,
                           failure_samples=tuple(fault.failure_samples(samples)),
                           next_failure_sample=fault.next_failure_sample(samples - 1))
