"""Trial checkpoints: everything a resumed trial needs to continue exactly (model, optimiser,
scheduler, epoch, and every RNG: torch CPU/CUDA, NumPy, Python, the batch generator).

Written atomically (temp file + rename) so a crash never leaves half a checkpoint. A checkpoint
holds only tensors and plain data (dicts, lists, tuples, numbers, strings), so every file —
ours or a user's `init_from` — is read with `torch.load(weights_only=True)`, which cannot run
code from the file. NumPy's RNG state is stored as (name, uint32 keys as an int64 tensor, …)."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

FILE = "state.pt"


class CorruptCheckpoint(ValueError):
    """A checkpoint file that exists but cannot be read (truncated, overwritten, not ours)."""


def rng_state(gen: torch.Generator) -> dict:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": [str(name), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "loader": gen.get_state()}


def set_rng_state(state: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys).astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(_tuples(state["python"]))
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    gen.set_state(state["loader"])


def _tuples(x):
    """random.setstate wants the nested tuples it gave out (a load may hand back lists)."""
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def save(directory, payload: dict) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{FILE}.{os.getpid()}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, d / FILE)
    return d / FILE


def _load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:   # truncated zip, not a torch file, or a pickled object weights_only refuses
        raise CorruptCheckpoint(f"{path}: unreadable checkpoint ({type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else ''})") from e


def load(directory) -> dict | None:
    """The checkpoint in `directory`, or None if there is none yet; `CorruptCheckpoint` if unreadable."""
    if directory is None:
        return None
    path = Path(directory) / FILE
    if not path.exists():
        return None
    return _load(path)


def load_model_state(path) -> dict:
    """Model weights from a trial checkpoint directory/state.pt or a plain state_dict file."""
    p = Path(path)
    if p.is_dir():
        p = p / FILE
    if not p.is_file():
        raise ValueError(f"init_from={str(path)!r}: no checkpoint there (expected a trial checkpoint "
                         f"directory with {FILE}, or a state_dict file)")
    try:
        state = _load(p)
    except CorruptCheckpoint as e:
        raise ValueError(f"init_from={str(path)!r}: {e}; it must hold tensors and plain data "
                         f"(torch.save(model.state_dict(), path))") from e
    if isinstance(state, dict) and "method" in state:
        return state["method"]["model"]
    return state.get("model", state) if isinstance(state, dict) else state
