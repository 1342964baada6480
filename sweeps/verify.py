"""Check and repair a run directory: every finished trial's rows present, whole and counted once.

The driver finishes each trial (`sweeps.finish.finish_trial`) by recording its merged rows' count and
SHA-256 before the record says `completed`. So a record that says a trial finished is proof its rows
were there; `verify` re-checks that proof, and a trial whose file is missing or damaged is
re-planned (`sweeps.finish.replan`: its rows and checkpoint are removed and it runs again from
scratch) — never left `completed` with rows missing.

    ncsweep verify DIR     what is wrong, and what `repair` would do (exit 1 if anything)
    ncsweep repair DIR     do it: rebuild the manifest from spec.json and the trial records,
                           re-plan damaged trials, delete temporary files, rebuild trials.parquet
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


from . import lock, procs
from .finish import replan
from .plan import planned_configs
from .spec import parse_spec
from .layout import FINISHED
from .store import RunDir


# ---------------------------------------------------------------------- checking a directory
def check_trial(store: RunDir, tid: str, rec: dict, footers: bool = True) -> str | None:
    """What is wrong with a finished trial's rows, or None. footers=False: of a trial recorded before
    checksums only the merged file's footer is read, not its epoch files' (10^5 of them take a minute)."""
    if rec.get("status") not in FINISHED:
        return None
    merged = store.merged_path(tid)
    if rec.get("rows_sha256"):
        if not store.exists(merged):
            return f"{store.rel(merged)} is missing ({rec.get('rows')} rows)"
        if store.sha256(merged) != rec["rows_sha256"]:
            return f"{store.rel(merged)} does not match its recorded checksum (damaged)"
    else:   # a record from before checksums: the files must at least read
        for f in ([merged] if store.exists(merged) else []) + (store.epoch_files(tid) if footers else []):
            try:
                store.read_metadata(f)
            except Exception as e:
                return f"{store.rel(f)} is unreadable ({type(e).__name__})"
        if not store.exists(merged) and not store.epoch_files(tid) and rec.get("epochs_done"):
            return f"rows of trial {tid} are missing"
    if rec.get("rows_sha256") and store.epoch_files(tid):
        return f"rows/{tid} has epoch files beside its merged file (they would count twice)"
    return None


def unmerged(store: RunDir, records: dict[str, dict]) -> dict[str, int]:
    """{trial_id: epoch files} of finished trials whose rows were never merged into one file (a run
    directory written before ncsweep merged them): readers open every one of those files."""
    out = {}
    for tid, rec in records.items():
        if rec.get("status") in FINISHED and not rec.get("rows_sha256"):
            n = len(store.epoch_files(tid))
            if n:
                out[tid] = n
    return out


def merge_unmerged(store: RunDir, records: dict[str, dict]) -> list[str]:
    """Merge each `unmerged` finished trial's epoch files into its trial.parquet and record the
    merged file's row count and checksum, as a trial finished today is recorded."""
    done = []
    for tid, n in unmerged(store, records).items():
        info = store.compact(tid)
        store.update_record(tid, rows=info["rows"], rows_sha256=info["sha256"])
        done.append(f"merged {n} epoch files of finished trial {tid} into {store.rel(store.merged_path(tid))}")
    return done


def replan_damaged(store: RunDir) -> dict[str, str]:
    """Re-plan every finished trial whose rows fail `check_trial`; returns {trial_id: reason}."""
    out = {}
    for tid, rec in store.records().items():
        why = check_trial(store, tid, rec)
        if why:
            replan(store, tid, why)
            out[tid] = why
    return out


def _temp_files(store: RunDir) -> list[Path]:
    """Our writers' temporary files (`.NAME.PID.HEX.tmp`), outside Ray Tune's `_tune` cache (an
    object store has none: its writes are single PUTs)."""
    out = []
    if store.remote:
        return out
    for root, dirs, files in os.walk(store.path):
        if root == str(store.path):
            dirs[:] = [d for d in dirs if d != "_tune"]
        out += [Path(root) / f for f in files if f.startswith(".") and f.endswith(".tmp")]
    return sorted(out)


def remove_temp_files(store: RunDir) -> list[Path]:
    """Delete the temporary files a killed writer left (call only with the lock held, before any
    worker of this run starts: then no writer of this directory is alive)."""
    gone = _temp_files(store)
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def verify(run_dir, records: dict[str, dict] | None = None, footers: bool = True) -> list[dict]:
    """Problems of a run directory: [{"what", "detail", "fix"}] (empty when all is well).
    records: the trial records, if the caller has read them already; footers: see `check_trial`
    (`ncsweep status` passes False: reading 10^5 footers takes a minute)."""
    store = RunDir(run_dir)
    if not store.loc.is_dir():
        raise FileNotFoundError(f"{store.uri}: no such directory")
    problems = []

    def add(what, detail, fix):
        problems.append({"what": what, "detail": detail, "fix": fix})

    try:
        if store.read_manifest() is None:
            add("manifest", "manifest.json is missing", "rebuild from spec.json and the trial records"
                if store.read_spec() else "none: no spec.json either (is this an ncsweep run directory?)")
    except ValueError as e:
        add("manifest", str(e).split(";")[0], "rebuild from spec.json and the trial records"
            if store.read_spec() else "none: spec.json is missing too")
    if store.read_spec() is None:
        add("spec", "spec.json is missing or unreadable", "rewrite from the manifest")
    records = store.records() if records is None else records
    for tid in store.record_files():
        if tid not in records:
            add("record", f"{store.rel(store.record_path(tid))} is unreadable", "delete it: the trial runs again on resume")
    for tid, rec in records.items():
        why = check_trial(store, tid, rec, footers)
        if why:
            add("rows", f"trial {tid} ({rec.get('status')}): {why}", "re-plan the trial (runs again on resume)")
    loose = unmerged(store, records) if footers else {}   # `status` lists no files per trial
    if loose:
        add("unmerged", f"{len(loose)} finished trials keep their rows in {sum(loose.values())} epoch files "
            "(written before ncsweep merged them; every analysis opens each one)",
            "merge each trial's files into its trial.parquet and record its checksum")
    held = lock.read(store)   # a live driver's lock is no problem; a dead one's is
    if held is not None and (not held or lock.stale(held)):
        add("lock", f"lock of a driver that is gone ({lock.describe(held) if held else 'unreadable lock file'})",
            "taken over by the next run, resume or repair")
    if held and not lock.stale(held):
        return problems   # a driver is writing: its temporary files and trials table are work in progress
    tmp = _temp_files(store)
    if tmp:
        add("temp", f"{len(tmp)} temporary files left by a crash (e.g. {tmp[0].relative_to(store.path)})", "delete them")
    if records and _trials_table_stale(store, records):
        add("trials.parquet", "missing, unreadable or out of date", "rebuild from the trial records")
    return problems


def _trials_table_stale(store: RunDir, records: dict[str, dict]) -> bool:
    try:
        t = store.read_table(store.trials_table_path(), columns=["trial_id", "status"])
    except Exception:
        return True
    return dict(zip(t.column("trial_id").to_pylist(), t.column("status").to_pylist())) != {
        k: r.get("status") for k, r in records.items()}


# ---------------------------------------------------------------------- repairing it
def repair(run_dir) -> list[str]:
    """Fix what `verify` finds, under the directory's lock; returns what was done."""
    store = RunDir(run_dir)
    done = []
    with lock.RunLock(store):
        killed = procs.cleanup(store.path)
        if killed:
            done.append(f"ended {len(killed)} Ray processes left by a driver that died")
        for p in remove_temp_files(store):
            done.append(f"deleted {p.relative_to(store.path)}")
        for tid in store.record_files():
            if store.read_record(tid) is None:
                store.delete(store.record_path(tid))
                done.append(f"deleted unreadable record {store.rel(store.record_path(tid))} (the trial runs again on resume)")
        for tid, why in replan_damaged(store).items():
            done.append(f"re-planned trial {tid}: {why}")
        done += merge_unmerged(store, store.records())
        done += _repair_manifest(store)
        if store.records():
            store.write_trials_table()
            done.append("rebuilt trials.parquet")
    return done


def _repair_manifest(store: RunDir) -> list[str]:
    try:
        manifest = store.read_manifest()
    except ValueError:
        manifest = None
    saved = store.read_spec()
    if manifest is not None:
        if saved is None:
            store.write_spec(manifest["name"], manifest["digest"], manifest["spec"], manifest.get("resources"))
            return ["rewrote spec.json from the manifest"]
        return []
    if saved is None:
        raise ValueError(f"{store.uri}: neither manifest.json nor spec.json is readable; the spec cannot be "
                         f"recovered — rerun it with `ncsweep run SPEC --out {store.uri}`")
    store.write_manifest(rebuild_manifest(store, saved))
    return ["rebuilt manifest.json from spec.json and the trial records"]


def build_manifest(spec, planned: list[dict] | None, res: dict, created_at: float) -> dict:
    return {"name": spec.name, "digest": spec.digest, "spec": spec.raw, "algorithm": spec.search["algorithm"],
            "num_samples": spec.search["num_samples"],
            "swept": spec.swept_axes(),   # the axes analyses use (sweeps.spec.swept_axes)
            "planned": [c["trial_id"] for c in planned] if planned is not None else None,
            "planned_count": len(planned) if planned is not None else spec.search["num_samples"],
            "resources": res, "created_at": created_at, "python": sys.version.split()[0]}


def rebuild_manifest(store: RunDir, saved: dict) -> dict:
    spec = parse_spec(saved["spec"], default_name=saved["name"])
    planned = None if spec.search["algorithm"] == "optuna" else planned_configs(spec)
    started = [r.get("started_at") for r in store.records().values() if r.get("started_at")]
    res = {**spec.resources, **(saved.get("resources") or {})}
    return {**build_manifest(spec, planned, res, min(started, default=time.time())), "rebuilt_at": time.time()}


def report(problems: list[dict]) -> str:
    if not problems:
        return "ok: every finished trial's rows are present and match their checksums"
    return "\n".join(f"- {p['what']}: {p['detail']}\n    repair: {p['fix']}" for p in problems)


def summary_json(problems: list[dict]) -> str:
    return json.dumps(problems, indent=1)


# ---------------------------------------------------------------------- CLI (`ncsweep verify|repair DIR`)
def cmd_verify(a) -> int:
    problems = verify(a.dir)
    print(summary_json(problems) if a.json else f"{a.dir}: {report(problems)}")
    return 1 if problems else 0


def cmd_repair(a) -> int:
    for line in repair(a.dir) or ["nothing to repair"]:
        print(f"repair: {line}")
    left = verify(a.dir)
    if left:
        print(f"{a.dir}: still wrong after repair:\n{report(left)}")
        return 1
    print(f"{a.dir}: ok — `ncsweep resume {a.dir}` re-runs any re-planned trials")
    return 0


def add_parser(sub) -> None:
    v = sub.add_parser("verify", help="check that every finished trial's rows are present and whole")
    v.add_argument("dir")
    v.add_argument("--json", action="store_true", help="the problems as JSON")
    v.set_defaults(fn=cmd_verify)
    r = sub.add_parser("repair", help="fix what verify finds: rebuild the manifest, re-plan damaged trials")
    r.add_argument("dir")
    r.set_defaults(fn=cmd_repair)
