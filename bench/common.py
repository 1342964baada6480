"""Shared setup for the benchmarks: device, the header every benchmark prints, a timer."""
from __future__ import annotations

import platform
import time

import torch


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def header(title: str, settings: dict) -> None:
    dev = device()
    name = torch.cuda.get_device_name(0) if dev == "cuda" else f"CPU ({platform.processor() or platform.machine()}, " \
                                                                 f"{torch.get_num_threads()} threads)"
    print(f"# {title}\n# device: {name}; torch {torch.__version__}; {time.strftime('%Y-%m-%d %H:%M')}\n# settings: {settings}")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
