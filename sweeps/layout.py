"""The run directory's names and where it lives, in one place: every writer (sweeps.store,
sweeps.finish, sweeps.verify) and reader (analysis.load, the report, `ncsweep status`) takes them
from here, as `pyarrow.dataset` owns partition naming so that no caller parses paths itself.

A run directory is a local path or an object-store URI (`s3://bucket/runs/x`, `gs://…`):
`Location` reaches its files through pyarrow's filesystem layer (`pyarrow.fs`), so its callers
never care which. Credentials and endpoints come from the environment as for any pyarrow/boto3
client (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL for an
S3-compatible server). No torch, no Ray.

    RUN_DIR/manifest.json, spec.json, lock.json, ray_procs.json, ncsweep.log
    RUN_DIR/trials/<trial_id>.json              one record per trial
    RUN_DIR/rows/<trial_id>/epoch-NNNN.parquet  one file per (trial, epoch) while it runs
    RUN_DIR/rows/<trial_id>/trial.parquet       the trial's epochs merged
    RUN_DIR/checkpoints/<trial_id>/, crash/<trial_id>.stderr

docs/run-directory.md describes each file.
"""
from __future__ import annotations

import hashlib
import json
import os
import posixpath
import tempfile
import uuid
from pathlib import Path

import pyarrow.fs as pafs

KEY = ("trial_id", "epoch", "split", "group")   # each row's identity: a run directory holds each once
# Terminal statuses. completed: ran all its epochs; stopped: a scheduler ended it before its max
# epochs; diverged: a non-finite loss; failed: an error after its retries; oom: out of memory.
STATUSES = ("completed", "stopped", "diverged", "failed", "oom")
RUNNING = "running"                              # a trial in progress (or interrupted: resume continues it)
LEGACY_COMPLETED = "done"                        # what older run directories called completed
TERMINAL = frozenset(STATUSES) | {LEGACY_COMPLETED}
FAILED = ("failed", "oom")
FINISHED = ("completed", "stopped", "diverged", LEGACY_COMPLETED)   # terminal, with rows to check

MANIFEST, SPEC = "manifest.json", "spec.json"
TRIALS, ROWS, CHECKPOINTS = "trials", "rows", "checkpoints"
TRIALS_TABLE = "trials.parquet"                  # the trials table, rebuilt from the records
MERGED = "trial.parquet"                         # a trial's epochs merged into one file
CHECKPOINT_FILE = "state.pt"                     # nccore.checkpoint.FILE
_EPOCH_PREFIX, _EPOCH_SUFFIX = "epoch-", ".parquet"


def epoch_file(epoch: int) -> str:
    """The name of one epoch's rows file: epoch-NNNN.parquet."""
    return f"{_EPOCH_PREFIX}{int(epoch):04d}{_EPOCH_SUFFIX}"


def is_epoch_file(path: str) -> bool:
    """Whether path names one (trial, epoch) rows file (string tests, not a regex: readers run
    this over 10^5 paths several times)."""
    name = path.rpartition(os.sep)[2]
    return name.startswith(_EPOCH_PREFIX) and name.endswith(_EPOCH_SUFFIX) and \
        name[len(_EPOCH_PREFIX):-len(_EPOCH_SUFFIX)].isdigit()


def epoch_of(path: str) -> int:
    """The epoch an epoch file's name holds (`is_epoch_file(path)` must be true)."""
    return int(path.rpartition(os.sep)[2][len(_EPOCH_PREFIX):-len(_EPOCH_SUFFIX)])


def is_remote(where) -> bool:
    """Whether `where` names an object store (a URI with a scheme), not a local path."""
    return "://" in str(where)


class Location:
    """A run directory's files through `pyarrow.fs`: `root` is its path on `fs` (for a local run
    directory, the absolute path). Names are relative to the root, '/'-separated. Writes are whole:
    locally a temporary file (leading '.', which every reader skips) renamed into place; on an
    object store one PUT, which readers see whole or not at all."""

    def __init__(self, where):
        self.remote = is_remote(where)
        if self.remote:   # s3://bucket/path, optionally ?endpoint_override=host:port&scheme=http (pyarrow's options)
            self.fs, root = pafs.FileSystem.from_uri(str(where))
            self.root = root.rstrip("/")
            base, _, self.query = str(where).partition("?")
            self.base = base.rstrip("/")
            self.uri = self.base + (f"?{self.query}" if self.query else "")
        else:
            self.fs, self.root = pafs.LocalFileSystem(), str(Path(where).resolve())
            self.uri = self.base = self.root
            self.query = ""

    def full(self, name: str = "") -> str:
        """The path of `name` on `fs`."""
        return posixpath.join(self.root, name) if name else self.root

    def url(self, name: str = "") -> str:
        """`name` as a path or URI another process can open (`nccore.checkpoint`, messages)."""
        return (posixpath.join(self.base, name) if name else self.base) + (f"?{self.query}" if self.query else "")

    def exists(self, name: str = "") -> bool:
        return self.fs.get_file_info(self.full(name)).type != pafs.FileType.NotFound

    def is_dir(self, name: str = "") -> bool:
        return self.fs.get_file_info(self.full(name)).type == pafs.FileType.Directory

    def read_bytes(self, name: str) -> bytes | None:
        """The file's bytes, or None if there is none."""
        try:
            with self.fs.open_input_stream(self.full(name)) as f:
                return f.read()
        except FileNotFoundError:
            return None

    def read_json(self, name: str):
        """The JSON in `name`, None if there is no such file; ValueError if it does not parse."""
        data = self.read_bytes(name)
        return None if data is None else json.loads(data)

    def write_bytes(self, name: str, data: bytes, before_rename=None) -> None:
        """Write `name` whole; `before_rename()` runs once the data is written but not yet visible
        (the fault-injection hook of sweeps.store)."""
        path = self.full(name)
        if self.remote:
            if before_rename:
                before_rename()
            with self.fs.open_output_stream(path) as f:
                f.write(data)
            return
        parent, base = posixpath.split(path)
        os.makedirs(parent, exist_ok=True)
        tmp = posixpath.join(parent, f".{base}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if before_rename:
                before_rename()
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def listdir(self, name: str = "") -> list[str]:
        """Names (not paths) in directory `name`, sorted; temporary files (leading '.') left out."""
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.full(name), allow_not_found=True))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(i.base_name for i in infos if not i.base_name.startswith("."))

    def delete(self, name: str) -> None:
        try:
            self.fs.delete_file(self.full(name))
        except FileNotFoundError:
            pass

    def delete_dir(self, name: str) -> None:
        try:
            self.fs.delete_dir(self.full(name))
        except FileNotFoundError:
            pass

    def mkdir(self) -> None:
        self.fs.create_dir(self.root, recursive=True)

    # ------------------------------------------------------------------ the files every reader needs
    def manifest(self) -> dict | None:
        """manifest.json, None if absent; ValueError naming the fix if it does not parse."""
        try:
            return self.read_json(MANIFEST)
        except ValueError as e:
            raise ValueError(f"{self.url(MANIFEST)}: unreadable manifest ({e}); rebuild it from the stored "
                             f"spec and trial records with `ncsweep repair {self.uri}`") from e

    def record(self, trial_id: str) -> dict | None:
        """trials/<id>.json, None if absent or unreadable (a hand-edited file should not stop a resume)."""
        try:
            rec = self.read_json(record_name(trial_id))
        except ValueError:
            return None
        return rec if isinstance(rec, dict) else None

    def records(self) -> dict[str, dict]:
        out = {}
        for name in self.listdir(TRIALS):
            if name.endswith(".json"):
                rec = self.record(name[:-len(".json")])
                if rec is not None:
                    out[name[:-len(".json")]] = rec
        return out


def record_name(trial_id: str) -> str:
    return f"{TRIALS}/{trial_id}.json"


def scratch_dir(uri: str) -> Path:
    """This machine's directory for a run directory on an object store: its node-local files (the
    driver's log, the Ray processes it started, a worker's stderr capture, Ray Tune's cache) and
    the local mirror the analysis reads (`mirror`)."""
    return Path(tempfile.gettempdir()) / "ncsweep" / hashlib.sha256(uri.encode()).hexdigest()[:16]


MIRRORED = (MANIFEST, SPEC, TRIALS_TABLE, TRIALS, ROWS)   # what an analysis reads of a run directory


def mirror(where) -> Path:
    """A local copy of what an analysis reads of a run directory on an object store (the manifest,
    spec, records and rows: not checkpoints), brought up to date file by file (a file is copied when
    its size changed; one gone from the store is removed). A local run directory is returned as is."""
    if not is_remote(where):
        return Path(where)
    loc = Location(where)
    if not loc.exists(MANIFEST):
        raise FileNotFoundError(f"{loc.uri}: no manifest.json — not an ncsweep run directory")
    local = scratch_dir(loc.uri) / "mirror"
    wanted = {}
    for name in MIRRORED:
        info = loc.fs.get_file_info(loc.full(name))
        if info.type == pafs.FileType.File:
            wanted[name] = info.size
        elif info.type == pafs.FileType.Directory:
            for f in loc.fs.get_file_info(pafs.FileSelector(loc.full(name), recursive=True)):
                rel = posixpath.relpath(f.path, loc.root)
                if f.type == pafs.FileType.File and not posixpath.basename(rel).startswith("."):
                    wanted[rel] = f.size
    for rel, size in wanted.items():
        dest = local / rel
        if not dest.is_file() or dest.stat().st_size != size:
            dest.parent.mkdir(parents=True, exist_ok=True)
            data = loc.read_bytes(rel)
            if data is not None:
                tmp = dest.with_name(f".{dest.name}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, dest)
    for sub in (TRIALS, ROWS):
        for f in (local / sub).rglob("*") if (local / sub).is_dir() else ():
            if f.is_file() and f.relative_to(local).as_posix() not in wanted:
                f.unlink()
    return local


def upload(local: Path, where, name: str) -> str:
    """Copy the local folder `local` to `name` in the run directory `where` (analysis output of a run
    directory on an object store); returns where it went."""
    loc = Location(where)
    for f in sorted(p for p in Path(local).rglob("*") if p.is_file()):
        loc.write_bytes(f"{name}/{f.relative_to(local).as_posix()}", f.read_bytes())
    return loc.url(name)
