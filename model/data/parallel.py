"""Feature extraction spread over worker processes, with one progress bar.

Feature extraction is NumPy/SciPy work that holds the GIL about 40 % of its time (NumPy's
cumulative sums and the Python around many short calls, ``py-spy --gil``), so threads
scale it only in part; processes do. Workers are started with ``spawn``: the parent may
already run TensorFlow, whose threads do not survive a ``fork``. Each job reads its own
input (a stretch of a cached record, a few segment files) and returns small results,
so no samples are pickled between processes.

Example:
    >>> run_jobs(abs, [-1, -2], workers=1, units=lambda job: 1, progress=False)
    [1, 2]
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from stream.core.errors import LabquakeError

# How often a worker checks that its parent still runs.
PARENT_CHECK_SECONDS = 1.0


def default_workers() -> int:
    """Worker processes by default: the cores this process may run on.

    Example:
        >>> default_workers() >= 1
        True
    """
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


def check_workers(workers: int | None) -> int:
    """``workers``, or the default for ``None``; refuses a count below 1.

    Example:
        >>> check_workers(2)
        2
    """
    if workers is None:
        return default_workers()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise LabquakeError(f"--workers {workers!r} is not a positive whole number; give e.g. "
                            f"{default_workers()}")
    return workers


def run_jobs(function: Callable[[Any], Any], jobs: Sequence[Any], *, workers: int,
             units: Callable[[Any], int], progress: bool, description: str = "",
             unit: str = "window") -> list[Any]:
    """``[function(job) for job in jobs]``, computed by ``workers`` processes.

    Args:
        function: a module-level function (picklable), called once per job.
        jobs: its arguments, picklable.
        workers: processes; 1 runs the jobs here, in order, without a pool.
        units: how much work a job is, for the progress bar (e.g. its windows).
        progress: show a progress bar on stderr.
        description: the bar's label.
        unit: the bar's unit.

    Returns:
        The results, in the order of ``jobs``.

    Example:
        >>> run_jobs(len, ["ab", "c"], workers=1, units=len, progress=False)
        [2, 1]
    """
    from tqdm import tqdm

    results: list[Any] = [None] * len(jobs)
    with tqdm(total=sum(units(job) for job in jobs), unit=unit, unit_scale=True,
              file=sys.stderr, desc=description, disable=not progress, leave=False) as bar:
        if workers <= 1 or len(jobs) <= 1:
            for index, job in enumerate(jobs):
                results[index] = function(job)
                bar.update(units(job))
            return results
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context,
                                 initializer=_exit_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(function, job): index for index, job in enumerate(jobs)}
            try:
                for future in as_completed(futures):
                    index = futures[future]
                    results[index] = future.result()
                    bar.update(units(jobs[index]))
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    return results


def _exit_with_parent(parent: int) -> None:
    """In a worker: exit when the parent process is gone (killed, crashed).

    A worker holds both ends of its job queue, so it would otherwise wait for jobs
    forever after its parent died; the jobs it finished are already saved. The workers
    share the cores already, so each extracts features on one thread unless
    ``LABQUAKE_FEATURE_THREADS`` says otherwise.
    """
    os.environ.setdefault("LABQUAKE_FEATURE_THREADS", "1")

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
