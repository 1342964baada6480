"""Storage checked before any trial starts: every node of the cluster writes a probe file under the
run directory and the driver reads each one back, so that a `--out` which is not shared storage
(a node's local disk, a mount missing on some nodes, a volume the Ray user cannot write) stops the
sweep at once with the node named, instead of being found at each trial's end.

    problems = check_storage(run_dir)      # after ray.init(address=...); [] when every node is fine

Each alive node runs `node_probe` (a zero-CPU Ray task pinned to it): it creates the run directory's
`.probe-<token>/` folder, writes `<node id>.json` naming its host, and fsyncs it. The driver then reads
every file: a node whose write failed, whose file the driver cannot see, or that did not answer within
`timeout_s` is a problem. Nodes that join later (an autoscaler's) are not probed: for them the check
stays the one at each trial's end (sweeps.finish.finish_trial). A local Ray (no --address) is one
machine and is not probed. Tests make one node fail by starting it with NCSWEEP_FAULT=probe.write:raise
in its environment (Ray's workers inherit their node's environment).
"""
from __future__ import annotations

import json
import os
import socket
import uuid

import pyarrow.fs as pafs

from . import faults, lock
from .layout import Location, is_remote

FIX = ("mount the same shared file system (NFS, EFS, Lustre, GPFS, CephFS, a ReadWriteMany volume) at {dir} "
       "on every node, writable by the user Ray runs as, or pass an --out that is on one")


def node_probe(run_dir: str, token: str, node_id: str) -> dict:
    """On one node: write RUN_DIR/.probe-<token>/<node_id>.json. Returns what it did, never raises."""
    out = {"node_id": node_id, "host": socket.gethostname(), "uid": os.getuid(), "error": None}
    try:
        faults.fault("probe.write")
        Location(run_dir).write_bytes(f".probe-{token}/{node_id}.json",
                                      json.dumps({"node_id": node_id, "host": out["host"]}).encode())
    except Exception as e:   # reported by the driver, with the node named
        out["error"] = f"{type(e).__name__}: {e}"
    return out


def read_probes(run_dir, token: str, answers: list[dict], missing: list[dict] = ()) -> list[str]:
    """The driver's side: one line per node that failed, naming it and the fix; [] if all wrote and
    the driver sees every file with the content the node wrote."""
    loc = Location(run_dir)
    fix = FIX.format(dir=run_dir) if not loc.remote else (f"give every node credentials that can write {run_dir} "
                                                          f"(AWS_* variables or an instance role, the same endpoint)")
    here = socket.gethostname()
    problems = []
    for a in answers:
        who = f"node {a['host']} (Ray node {a['node_id']}, uid {a.get('uid')})"
        if a["error"]:
            problems.append(f"{who} cannot write --out {run_dir}: {a['error']}; {fix}")
            continue
        try:
            seen = loc.read_json(f".probe-{token}/{a['node_id']}.json")
        except (OSError, ValueError):
            seen = None
        if seen != {"node_id": a["node_id"], "host": a["host"]}:
            problems.append(f"{who} wrote under --out {run_dir}, but the driver on {here} cannot read it there: "
                            f"that path is not the same storage on both; {fix}")
    for m in missing:
        problems.append(f"node {m.get('host', '?')} (Ray node {m['node_id']}) did not answer the storage check "
                        f"within its time limit: {m.get('error') or 'no answer'}")
    return problems


def alive_nodes() -> list[dict]:
    import ray

    return [{"node_id": n["NodeID"], "host": n.get("NodeManagerHostname", "?")} for n in ray.nodes() if n.get("Alive")]


def check_storage(run_dir, timeout_s: float = 120.0) -> list[str]:
    """Every alive node writes a probe under run_dir; the driver reads them. Returns the problems."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex[:12]
    task = ray.remote(num_cpus=0, max_retries=0)(node_probe)
    nodes = alive_nodes()
    refs = {task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["node_id"], soft=False))
            .remote(str(run_dir), token, n["node_id"]): n for n in nodes}
    done, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
    answers, missing = [], [refs[r] for r in pending]
    for r in done:
        try:
            answers.append(ray.get(r))
        except Exception as e:   # the node died while probing, or its worker could not start
            missing.append({**refs[r], "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
    for r in pending:
        ray.cancel(r, force=True)
    try:
        return read_probes(run_dir, token, answers, missing)
    finally:
        Location(run_dir).delete_dir(f".probe-{token}")


class StorageError(ValueError):
    """--out is not storage every node can write and the driver can read (or the address cannot work)."""


def check_out(out) -> None:
    """An object-store --out must be S3 (or S3-compatible), reachable with this machine's
    credentials, with boto3 installed for the lock — checked before anything is written."""
    text = str(out)
    if not is_remote(text):
        return
    try:
        lock.lock_file(text)                       # s3:// and boto3, or a message naming the fix
        loc = Location(text)
        bucket = loc.root.split("/")[0]
        found = loc.fs.get_file_info(bucket).type != pafs.FileType.NotFound   # it answers with these credentials
    except (ValueError, OSError) as e:
        hint = "; check the endpoint (AWS_ENDPOINT_URL) and credentials (AWS_* variables)" if "AWS Error" in str(e) else ""
        raise StorageError((f"--out {text}: {e}" if not str(e).startswith("--out") else str(e)) + hint) from None
    if not found:
        raise StorageError(f"--out {text}: bucket {bucket!r} does not exist (or these credentials cannot see it); "
                           f"create it, or check AWS_ENDPOINT_URL / AWS_* credentials")


def check_address(address: str | None, out) -> None:
    """`--address ray://…` (Ray Client) would run the driver's work — the lock, the manifest, finishing
    every trial — on this machine, against a --out that the cluster's nodes write: refused with the
    ways that keep the driver on the cluster."""
    if address and address.startswith("ray://"):
        host = address[len("ray://"):].split(":")[0] or "HEAD"
        raise StorageError(
            f"--address {address}: with Ray Client the driver's bookkeeping (lock, manifest, finishing each trial) "
            f"would run on this machine while the trials write --out {out} on the cluster. Run the driver on the "
            f"cluster instead: `ncsweep submit SPEC --address http://{host}:8265 --out /shared/path` (a Ray Job on "
            f"the head), or `ncsweep run SPEC --out /shared/path --address auto` in a shell on a cluster node")


def require_shared(run_dir, timeout_s: float = 120.0) -> None:
    """Raise StorageError naming each node that cannot write run_dir (or whose writes the driver cannot read)."""
    problems = check_storage(run_dir, timeout_s)
    if problems:
        raise StorageError(f"storage check of --out {run_dir} failed before any trial started:\n  "
                           + "\n  ".join(problems))
