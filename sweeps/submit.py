"""`ncsweep submit`: run a sweep's driver on a Ray cluster as a Ray Job.

    ncsweep submit SPEC --address http://HEAD:8265 --out /shared/runs/NAME [--wait]

The spec is checked here first (nothing is sent if it is invalid), then sent with the job as an
environment variable — no file upload, so nothing depends on Ray's package cache — and the head runs
`python -m sweeps.job DIR` (sweeps/job.py), which writes the spec to a temporary file and runs
`ncsweep run SPEC --out DIR --address auto`.
The driver lives on the head node, so closing the terminal or the laptop that submitted does not
stop the sweep. DIR is a path *on the cluster*: storage every node mounts (NFS, EFS, Lustre, a PVC),
because each trial writes its rows from whichever node runs it. Submitting the same spec with the
same --out again continues it (finished trials are never re-run) — the way to resume after the head
node, and with it the Ray Job, went away.
"""
from __future__ import annotations

import re
import shlex
import sys
import time
from pathlib import Path, PurePosixPath

from .spec import SpecError, load_spec

TERMINAL_JOB = {"SUCCEEDED", "FAILED", "STOPPED"}


SPEC_ENV = "NCSWEEP_SUBMITTED_SPEC"


def entrypoint(out: str, resources: str | None = None, python: str = "python") -> str:
    """The shell command the Ray Job runs on the head node (the spec travels in SPEC_ENV)."""
    cmd = [*shlex.split(python), "-m", "sweeps.job", out]
    if resources:
        cmd += ["--resources", resources]
    return shlex.join(cmd)


def check_out(out: str) -> str:
    """--out names a directory on the cluster's shared storage, so it must be absolute (a relative
    path would resolve against whatever directory the head's Ray was started in)."""
    if "://" in out:
        raise SpecError(f"--out {out!r}: `ncsweep submit` needs a directory path on storage every cluster "
                        f"node mounts (e.g. /mnt/shared/runs/NAME); object-store URLs are not supported")
    if not PurePosixPath(out).is_absolute():
        raise SpecError(f"--out {out!r} is relative; give the absolute path of a directory on storage every "
                        f"cluster node mounts, e.g. /mnt/shared/runs/{Path(out).name or 'NAME'}")
    return out


def dashboard_address(address: str) -> str:
    if not re.match(r"^https?://", address):
        raise SpecError(f"--address {address!r}: expected the Ray dashboard's URL, e.g. http://HEAD:8265 "
                        f"(the head node's dashboard port; `ray start --head` prints it)")
    return address.rstrip("/")


def submit(spec_path: str, address: str, out: str, resources: str | None = None, submission_id: str | None = None,
           python: str = "python", wait: bool = False, timeout_s: float | None = None, client=None) -> dict:
    """Submit SPEC as a Ray Job. Returns {"submission_id", "entrypoint", "status"}."""
    spec = load_spec(spec_path)          # an invalid spec fails here, before anything reaches the cluster
    out = check_out(out)
    if client is None:
        from ray.job_submission import JobSubmissionClient

        try:
            client = JobSubmissionClient(dashboard_address(address))
        except (ConnectionError, RuntimeError) as e:
            raise SpecError(f"cannot reach the Ray dashboard at {address}: {str(e).splitlines()[0]} — is the "
                            f"head started with the dashboard (`ray start --head --dashboard-host 0.0.0.0`), "
                            f"and is port 8265 reachable (e.g. `ssh -L 8265:localhost:8265 HEAD`)?") from e
    sid = submission_id or f"ncsweep-{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    cmd = entrypoint(out, resources, python)
    env = {SPEC_ENV: Path(spec_path).read_text(), "NCSWEEP_SUBMITTED_NAME": Path(spec_path).stem,
           "RAY_AIR_NEW_OUTPUT": "0"}
    sid = client.submit_job(entrypoint=cmd, submission_id=sid, runtime_env={"env_vars": env},
                            metadata={"ncsweep_spec": spec.name, "ncsweep_out": out})
    result = {"submission_id": sid, "entrypoint": cmd, "status": str(client.get_job_status(sid))}
    if wait:
        result["status"] = wait_for(client, sid, timeout_s)
    return result


def wait_for(client, sid: str, timeout_s: float | None = None, poll_s: float = 2.0, stream=None) -> str:
    """Print the job's log as it grows until the job ends; returns its final status."""
    stream = stream or sys.stdout
    t0, shown = time.monotonic(), 0
    while True:
        status = str(client.get_job_status(sid))
        logs = client.get_job_logs(sid)
        if len(logs) > shown:
            stream.write(logs[shown:])
            stream.flush()
            shown = len(logs)
        if status.split(".")[-1] in TERMINAL_JOB:
            return status.split(".")[-1]
        if timeout_s is not None and time.monotonic() - t0 > timeout_s:
            return status.split(".")[-1]
        time.sleep(poll_s)


def cmd_submit(a) -> int:
    r = submit(a.spec, a.address, a.out, a.resources, a.submission_id, a.python, a.wait)
    status = r["status"].split(".")[-1]
    if a.wait:
        print(f"\nRay Job {r['submission_id']}: {status}")
        return 0 if status == "SUCCEEDED" else 1
    print(f"submitted Ray Job {r['submission_id']} ({status}): {r['entrypoint']}\n"
          f"  follow its log:  ray job logs --address {a.address} --follow {r['submission_id']}\n"
          f"  progress:        ncsweep status {a.out}   (on any node that mounts it)\n"
          f"  stop it:         ray job stop --address {a.address} {r['submission_id']}\n"
          f"  resume later:    submit the same spec with the same --out; finished trials are kept")
    return 0


def add_parser(sub) -> None:
    s = sub.add_parser("submit", help="run a sweep's driver on a Ray cluster as a Ray Job (survives your terminal)")
    s.add_argument("spec")
    s.add_argument("--address", required=True, help="the head's dashboard URL, e.g. http://HEAD:8265")
    s.add_argument("--out", required=True, help="absolute run directory on storage every cluster node mounts")
    s.add_argument("--resources", help="per-trial resources, e.g. cpu=1,gpu=0.25")
    s.add_argument("--submission-id", help="Ray Job id (default ncsweep-<spec name>-<time>)")
    s.add_argument("--python", default="python",
                   help="the head node's Python with ncsweep installed (default: `python` on its PATH)")
    s.add_argument("--wait", action="store_true", help="print the job's log until it ends; exit 0 if it succeeded")
    s.set_defaults(fn=cmd_submit)

