"""Shared setup for the benchmarks: device, the header every benchmark prints, a timer, and the
JSON results file (bench/gpu_results.json on CUDA, bench/cpu_results.json on the CPU)."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

RESULTS_DIR = Path(__file__).resolve().parent


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def device_name() -> str:
    if device() == "cuda":
        return torch.cuda.get_device_name()
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def header(title: str, settings: dict) -> None:
    print(f"# {title}\n# device: {device_name()}; torch {torch.__version__}; {time.strftime('%Y-%m-%d %H:%M')}\n"
          f"# settings: {settings}")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def results_path() -> Path:
    return RESULTS_DIR / ("gpu_results.json" if device() == "cuda" else "cpu_results.json")


def record(section: str, values: dict, settings: dict | None = None, path: Path | None = None) -> Path:
    """Merge one benchmark's figures into the results file under `section` (other sections are
    kept), with the device, torch version and date of this run; `settings` go under
    "settings"[section]. Written atomically."""
    path = Path(path or results_path())
    out = json.loads(path.read_text()) if path.exists() else {}
    out.update({"device": device_name(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                         time.gmtime())})
    out[section] = values
    if settings is not None:
        out.setdefault("settings", {})[section] = settings
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(out, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path
