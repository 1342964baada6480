"""Independent tables in parallel processes (fork where the platform has it: no re-import cost)."""
from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _call(fn, args, kw):
    """fn in a worker, its BLAS / OpenMP pools at one thread: there is a worker per core already
    (the environment variable alone is too late after fork: numpy's pools exist by then)."""
    from threadpoolctl import threadpool_limits

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with threadpool_limits(1):
        return fn(*args, **kw)


def run_all(calls: list[tuple], workers: int, while_waiting=None) -> list:
    """[fn(*args, **kw) for fn, args, kw in calls], in order; spread over `workers` processes when > 1.
    while_waiting(): work for this process once the workers are started (they are forked first)."""
    if workers <= 1 or len(calls) < 2:
        return [fn(*args, **kw) for fn, args, kw in calls]
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(max_workers=min(workers, len(calls)), mp_context=mp.get_context(method)) as ex:
        futures = [ex.submit(_call, fn, args, kw) for fn, args, kw in calls]
        if while_waiting is not None:
            while_waiting()
        return [f.result() for f in futures]


def import_table_libraries() -> None:
    """Import what the table workers use (SciPy, statsmodels and scikit-learn, ~1.5 s), so that
    workers forked afterwards inherit it instead of each importing it again."""
    import scipy.stats  # noqa: F401
    import sklearn.ensemble  # noqa: F401
    import statsmodels.regression.linear_model  # noqa: F401
