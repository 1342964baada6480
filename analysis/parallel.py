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
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return fn(*args, **kw)


def run_all(calls: list[tuple], workers: int) -> list:
    """[fn(*args, **kw) for fn, args, kw in calls], in order; spread over `workers` processes when > 1."""
    if workers <= 1 or len(calls) < 2:
        return [fn(*args, **kw) for fn, args, kw in calls]
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(max_workers=min(workers, len(calls)), mp_context=mp.get_context(method)) as ex:
        futures = [ex.submit(_call, fn, args, kw) for fn, args, kw in calls]
        return [f.result() for f in futures]
