"""Trial checkpoints: everything a resumed trial needs to continue exactly (model, optimiser,
scheduler, epoch, and every RNG: torch CPU/CUDA, NumPy, Python, the batch generator).
Written atomically (temp file + rename) so a crash never leaves half a checkpoint."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

FILE = "state.pt"


def rng_state(gen: torch.Generator) -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "loader": gen.get_state()}


def set_rng_state(state: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    gen.set_state(state["loader"])


def save(directory, payload: dict) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{FILE}.{os.getpid()}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, d / FILE)
    return d / FILE


def load(directory) -> dict | None:
    """The checkpoint in `directory`, or None if there is none yet."""
    if directory is None:
        return None
    path = Path(directory) / FILE
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def load_model_state(path) -> dict:
    """Model weights from a trial checkpoint directory/state.pt or a plain state_dict file."""
    p = Path(path)
    if p.is_dir():
        p = p / FILE
    if not p.is_file():
        raise ValueError(f"init_from={str(path)!r}: no checkpoint there (expected a trial checkpoint "
                         f"directory with {FILE}, or a state_dict file)")
    state = torch.load(p, map_location="cpu", weights_only=False)
    if isinstance(state, dict) and "method" in state:
        return state["method"]["model"]
    return state.get("model", state) if isinstance(state, dict) else state
