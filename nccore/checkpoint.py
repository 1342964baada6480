"""Trial checkpoints: everything a resumed trial needs to continue exactly (model, optimiser,
scheduler, epoch, and every RNG: torch CPU/CUDA, NumPy, Python, the batch generator).

Written atomically (temp file + rename; on an object store, one PUT) so a crash never leaves half
a checkpoint. A checkpoint directory is a local path or a URI (`s3://bucket/run/checkpoints/<id>`,
a run directory on object storage), reached through `pyarrow.fs`. A checkpoint
holds only tensors and plain data (dicts, lists, tuples, numbers, strings), so every file —
ours or a user's `init_from` — is read with `torch.load(weights_only=True)`, which cannot run
code from the file. NumPy's RNG state is stored as (name, uint32 keys as an int64 tensor, …)."""
from __future__ import annotations

import io
import os
import posixpath
import random
import uuid
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


# ---------------------------------------------------------------------- files, local or on an object store
def _remote(path) -> bool:
    return "://" in str(path)


def join(path, *parts) -> str | Path:
    """`path` / parts, for a local path (a Path) or a URI (a string; its ?options kept at the end)."""
    if not _remote(path):
        return Path(path).joinpath(*parts)
    base, _, query = str(path).partition("?")
    return posixpath.join(base, *parts) + (f"?{query}" if query else "")


def parent(path) -> str | Path:
    if not _remote(path):
        return Path(path).parent
    base, _, query = str(path).partition("?")
    return base.rstrip("/").rsplit("/", 1)[0] + (f"?{query}" if query else "")


def _on_store(uri):
    """(filesystem, path on it) of a URI (pyarrow.fs: imported only for a run directory on a store)."""
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(str(uri))


def read_file(path) -> bytes | None:
    """The file's bytes, or None if there is none."""
    if not _remote(path):
        p = Path(path)
        return p.read_bytes() if p.is_file() else None
    fs, p = _on_store(path)
    try:
        with fs.open_input_stream(p) as f:
            return f.read()
    except FileNotFoundError:
        return None


def write_file(path, data: bytes) -> None:
    """Write the file whole: a temporary file renamed into place, or one PUT on an object store."""
    if _remote(path):
        fs, p = _on_store(path)
        with fs.open_output_stream(p) as f:
            f.write(data)
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.parent / f".{p.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, p)


def set_aside(directory) -> None:
    """An unreadable checkpoint renamed to state.pt.corrupt (kept for a post-mortem, never loaded)."""
    data = read_file(join(directory, FILE))
    if data is None:
        return
    write_file(join(directory, f"{FILE}.corrupt"), data)
    if _remote(directory):
        fs, p = _on_store(join(directory, FILE))
        fs.delete_file(p)
    else:
        Path(join(directory, FILE)).unlink(missing_ok=True)


def save(directory, payload: dict):
    buf = io.BytesIO()
    torch.save(payload, buf)
    path = join(directory, FILE)
    write_file(path, buf.getvalue())
    return path


def _load(path, data: bytes | None = None):
    try:
        data = read_file(path) if data is None else data
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:   # truncated zip, not a torch file, or a pickled object weights_only refuses
        raise CorruptCheckpoint(f"{path}: unreadable checkpoint ({type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else ''})") from e


def load(directory) -> dict | None:
    """The checkpoint in `directory`, or None if there is none yet; `CorruptCheckpoint` if unreadable."""
    if directory is None:
        return None
    path = join(directory, FILE)
    data = read_file(path)
    return None if data is None else _load(path, data)


def load_model_state(path) -> dict:
    """Model weights from a trial checkpoint directory/state.pt or a plain state_dict file."""
    if _remote(path):   # a directory on a store is only a prefix: its state.pt, else the object itself
        candidates = [join(path, FILE), path]
    else:
        candidates = [join(path, FILE) if Path(path).is_dir() else Path(path)]
    p, data = next(((c, d) for c in candidates if (d := read_file(c)) is not None), (None, None))
    if data is None:
        raise ValueError(f"init_from={str(path)!r}: no checkpoint there (expected a trial checkpoint "
                         f"directory with {FILE}, or a state_dict file)")
    try:
        state = _load(p, data)
    except CorruptCheckpoint as e:
        raise ValueError(f"init_from={str(path)!r}: {e}; it must hold tensors and plain data "
                         f"(torch.save(model.state_dict(), path))") from e
    if isinstance(state, dict) and "method" in state:
        return state["method"]["model"]
    return state.get("model", state) if isinstance(state, dict) else state
