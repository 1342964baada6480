"""The cluster launch files, checked offline: the Ray cluster launcher config (cluster.yaml) against the
schema the installed Ray ships, the SLURM batch script run against stub `srun`/`scontrol`/`ray`
commands (a fake two-node allocation), the KubeRay RayJob's structure, and — for all three — every
`ray start` they issue parsed by Ray's own CLI and every `ncsweep` command line parsed by ours.
The commands of README's "Running on a cluster" section and docs/cluster.md are checked here too."""
import json
import os
import re
import shlex
import signal
import subprocess
import time
import warnings
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from sweeps.cli import build_parser
from sweeps.spec import load_spec

with warnings.catch_warnings():   # ray's CLI module imports Ray Serve, whose pydantic models warn
    warnings.simplefilter("ignore", DeprecationWarning)
    from ray.scripts.scripts import cli as ray_cli
    from ray.scripts.scripts import start as ray_start

ROOT = Path(__file__).resolve().parents[1]
SBATCH = ROOT / "deploy" / "slurm" / "ncsweep.sbatch"
RAYJOB = ROOT / "deploy" / "kuberay" / "rayjob.yaml"
PVC = ROOT / "deploy" / "kuberay" / "pvc.yaml"
CLUSTER = ROOT / "cluster.yaml"
# The RayJob CRD's v1 schema as KubeRay v1.7.0 ships it (tests/data/rayjob-crd/README.md says where from).
RAYJOB_CRD = json.loads((ROOT / "tests" / "data" / "rayjob-crd" / "ray.io_rayjobs.v1.json").read_text())


def parse_ncsweep(argv: list[str]):
    """Our CLI's argparse on a command line (raises SystemExit on anything it rejects)."""
    assert argv[0].endswith("ncsweep"), argv
    return build_parser().parse_args(argv[1:])


def parse_ray_start(argv: list[str]):
    """Ray's own `ray start` option parser (raises click's error on an unknown or malformed option)."""
    i = argv.index("start")
    return ray_start.make_context("start", list(argv[i + 1:])).params


def parse_ray(argv: list[str]) -> dict:
    """Ray's own CLI (click) on a `ray ...` command line: raises on an unknown command or option or a
    missing argument (`ray submit cluster.yaml --` has no script). A command that `ray exec` runs on the
    head is checked too: its `ncsweep` part by our CLI, its spec by our validator."""
    cmd, i = ray_cli, 1
    while hasattr(cmd, "commands"):            # `ray job logs ...`: down the groups
        cmd, i = cmd.commands[argv[i]], i + 1
    params = cmd.make_context(argv[i - 1], list(argv[i:])).params
    if params.get("cluster_config_file"):
        assert ROOT / params["cluster_config_file"] == CLUSTER, argv
    if argv[1] == "exec":
        parts = [shlex.split(p) for p in params["cmd"].split("&&")]
        assert parts[0] == ["cd", "~/ncsweep"], params["cmd"]       # file_mounts put the checkout there
        a = parse_ncsweep(parts[-1])
        load_spec(ROOT / a.spec)
        params["ncsweep"] = a
    return params


# ---------------------------------------------------------------------- Ray cluster launcher
def test_cluster_yaml_validates_and_its_ray_start_lines_parse():
    cfg = yaml.safe_load(CLUSTER.read_text())
    jsonschema.validate(cfg, json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text()))
    starts = [c for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"] if " start " in c]
    assert len(starts) == 2
    head, worker = (parse_ray_start(shlex.split(c)) for c in starts)
    assert head["head"] and not worker["head"] and worker["address"].endswith(":6379")


def test_cluster_yaml_documents_commands_ray_and_our_cli_accept():
    lines = [ln.lstrip("# ").strip() for ln in CLUSTER.read_text().splitlines() if ln.lstrip("# ").startswith("ray ")]
    runs = [p["ncsweep"] for p in map(parse_ray, map(shlex.split, lines)) if "ncsweep" in p]
    assert [ln.split()[1] for ln in lines] == ["up", "exec"] and len(runs) == 1
    assert runs[0].cmd == "run" and runs[0].address == "auto" and runs[0].out.startswith("/mnt/shared/")


def test_the_ray_cli_check_catches_an_invalid_ray_command():
    with pytest.raises(Exception, match="script"):
        parse_ray(["ray", "submit", "cluster.yaml", "--"])


# ---------------------------------------------------------------------- SLURM
def test_sbatch_script_is_valid_bash_with_slurm_directives():
    subprocess.run(["bash", "-n", str(SBATCH)], check=True)
    directives = dict(re.findall(r"^#SBATCH --([\w-]+)=?(\S*)", SBATCH.read_text(), re.M))
    assert int(directives["nodes"]) >= 2 and directives["ntasks-per-node"] == "1"
    assert "exclusive" in directives and directives["gres"].startswith("gpu:") and "time" in directives
    assert directives["signal"] == "B:TERM@120"    # SIGTERM to the script (the driver) before the time limit


STUBS = {
    # a two-node allocation: node-a (head, the batch host) and node-b
    "scontrol": 'echo node-a; echo node-b',
    # what breaks `hostname -I | cut -d" " -f1`: an IPv6 address and Debian's 127.0.1.1 listed first
    "hostname": 'echo "fe80::1c2b:3aff:fe4d:5e6f 127.0.1.1 10.0.0.1 172.17.0.1"',
    # srun: note its options and the host it was meant for, then run the command
    "srun": 'host=node-a; opts=()\n'
            'while [[ $1 == -* ]]; do case $1 in -w) host=$2; shift;; -c) opts+=("-c" "$2"); shift;; '
            '--nodes=*|--ntasks=*) ;; *) opts+=("$1");; esac; shift; done\n'
            'echo "srun@$host ${opts[*]} :: $*" >> "$LOG"; "$@"',
    "ray": 'echo "ray $*" >> "$LOG"',
    # the head's port answers; free ports (the script's socket probe); else the join check: 2 nodes alive
    "python": 'case "$*" in *create_connection*) exit 0;; *socket*) echo 50011 50012 50013;; *) echo 2;; esac',
    "ncsweep": 'printf "%s\\n" "$@" > "$NCSWEEP_ARGV"; exit 0',
    "sleep": 'true',
}
ALLOCATION = {"SLURM_JOB_NODELIST": "node-[a-b]", "SLURM_JOB_ID": "42", "SLURM_CPUS_PER_TASK": "8",
              "SLURM_GPUS_ON_NODE": "1"}


def fake_allocation(tmp_path: Path, *args: str, slurm: dict | None = None, stubs: dict | None = None,
                    popen: bool = False):
    """Run the batch script on a stubbed two-node allocation; returns (result, log lines, ncsweep argv)."""
    bin_ = tmp_path / "bin"
    bin_.mkdir(exist_ok=True)
    for name, body in {**STUBS, **(stubs or {})}.items():
        (bin_ / name).write_text("#!/bin/bash\n" + body + "\n")
        (bin_ / name).chmod(0o755)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    (venv / "bin" / "activate").write_text("")
    env = {"PATH": f"{bin_}:/usr/bin:/bin", "LOG": str(tmp_path / "log"), "NCSWEEP_ARGV": str(tmp_path / "argv"),
           "NCSWEEP_VENV": str(venv), "SLURM_SUBMIT_DIR": str(ROOT), "HOME": str(tmp_path), "TMP_PATH": str(tmp_path),
           "NCSWEEP_JOIN_TIMEOUT_S": "10", **(ALLOCATION if slurm is None else slurm)}
    cmd = ["bash", str(SBATCH), *args]
    if popen:
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=30)
    log = (tmp_path / "log").read_text().splitlines() if (tmp_path / "log").exists() else []
    argv = (tmp_path / "argv").read_text().splitlines() if (tmp_path / "argv").exists() else []
    return r, log, argv


def ray_starts(log: list[str]) -> list[tuple[str, str, dict]]:
    """(host, srun options, parsed `ray start`) of each `ray start` the script ran through srun."""
    out = []
    for line in log:
        if line.startswith("srun@") and ":: ray start " in line:
            where, cmd = line.split(" :: ", 1)
            host, _, opts = where.partition(" ")
            out.append((host[len("srun@"):], opts, parse_ray_start(shlex.split(cmd))))
    return sorted(out, key=lambda s: s[0])   # the steps run in the background: their log lines race


def test_sbatch_script_starts_a_head_and_a_worker_then_runs_the_sweep_against_them(tmp_path):
    spec, out = "sweeps/specs/demo.yaml", "/shared/runs/demo"
    r, log, argv = fake_allocation(tmp_path, spec, out, "--resources", "cpu=2,gpu=0.25")
    assert r.returncode == 0, r.stdout + r.stderr
    (h_host, h_opts, head), (w_host, w_opts, worker) = ray_starts(log)
    assert (h_host, w_host) == ("node-a", "node-b"), log
    assert h_opts == w_opts == "-c 8 --gres=gpu:1"          # each step gets the task's CPUs and the node's GPUs
    assert head["head"] and head["block"] and head["node_ip_address"] == "10.0.0.1"   # IPv4, not loopback
    assert (head["port"], head["dashboard_port"], head["ray_client_server_port"]) == (50011, 50012, 50013)
    assert head["num_gpus"] == worker["num_gpus"] == 1 and head["num_cpus"] == worker["num_cpus"] == 8
    assert worker["address"] == "10.0.0.1:50011" and worker["block"] and not worker["head"]
    a = parse_ncsweep(["ncsweep", *argv])
    assert (a.cmd, a.spec, a.out, a.address, a.resources) == ("run", spec, out, "10.0.0.1:50011", "cpu=2,gpu=0.25")
    load_spec(ROOT / a.spec)


@pytest.mark.parametrize("slurm, gpus", [
    ({"SLURM_GPUS_ON_NODE": "4"}, 4),                       # --gres=gpu:4 (SLURM_GPUS_PER_TASK unset)
    ({"SLURM_GPUS_PER_NODE": "a100:2"}, 2),                 # --gpus-per-node=a100:2
    ({"SLURM_GPUS_PER_TASK": "3"}, 3),                      # --gpus-per-task=3
    ({"CUDA_VISIBLE_DEVICES": "0,1"}, 2),                   # an older SLURM: only the device list
    ({}, 0),                                                # a CPU-only allocation
])
def test_sbatch_script_takes_the_gpus_from_the_allocation_however_they_were_asked_for(tmp_path, slurm, gpus):
    alloc = {k: v for k, v in ALLOCATION.items() if k != "SLURM_GPUS_ON_NODE"}
    r, log, _ = fake_allocation(tmp_path, "sweeps/specs/demo.yaml", "/shared/runs/demo", slurm={**alloc, **slurm})
    assert r.returncode == 0, r.stdout + r.stderr
    starts = ray_starts(log)
    assert [s[2]["num_gpus"] for s in starts] == [gpus, gpus]
    assert all(("--gres=gpu:" in s[1]) == (gpus > 0) for s in starts)
    assert f"{gpus} GPU(s) and 8 CPUs each" in r.stdout


def test_sbatch_script_stops_with_an_error_when_workers_do_not_join(tmp_path):
    r, log, argv = fake_allocation(tmp_path, "sweeps/specs/demo.yaml", "/shared/runs/demo",
                                   stubs={"python": STUBS["python"].replace("echo 2", "echo 1")})
    assert r.returncode == 1
    assert "only 1 of 2 nodes joined the Ray cluster within 10 s (nodes: node-a node-b)" in r.stderr
    assert not argv                                           # the sweep never started on the head alone


def test_sbatch_script_starts_no_worker_when_the_head_never_answers(tmp_path):
    r, log, argv = fake_allocation(tmp_path, "sweeps/specs/demo.yaml", "/shared/runs/demo",
                                   stubs={"python": STUBS["python"].replace("connection*) exit 0", "connection*) exit 1")})
    assert r.returncode == 1 and "the Ray head did not answer on 10.0.0.1:50011 within 10 s" in r.stderr
    assert [s[0] for s in ray_starts(log)] == ["node-a"] and not argv


def test_sbatch_script_refuses_a_head_without_a_reachable_ipv4_address(tmp_path):
    r, log, argv = fake_allocation(tmp_path, "sweeps/specs/demo.yaml", "/shared/runs/demo",
                                   stubs={"hostname": 'echo "::1 fe80::1 127.0.1.1"'})
    assert r.returncode == 1 and "set NCSWEEP_HEAD_IP" in r.stderr and not argv and not ray_starts(log)


def test_sbatch_script_passes_slurms_sigterm_to_the_driver_and_exits_143(tmp_path):
    driver = ('trap \'echo "driver: SIGTERM" >> "$LOG"; exit 143\' TERM\ntouch "$TMP_PATH/ready"\n'
              'while :; do /bin/sleep 0.05; done')
    p = fake_allocation(tmp_path, "sweeps/specs/demo.yaml", "/shared/runs/demo", stubs={"ncsweep": driver}, popen=True)
    try:
        t0 = time.monotonic()
        while not (tmp_path / "ready").exists():
            assert p.poll() is None and time.monotonic() - t0 < 30, p.communicate()
            time.sleep(0.05)
        p.send_signal(signal.SIGTERM)            # what --signal=B:TERM@120 does
        stdout, stderr = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 143, stdout + stderr
    assert "driver: SIGTERM" in (tmp_path / "log").read_text()
    assert "submit the same command again to continue" in stdout


def test_sbatch_script_refuses_to_start_without_spec_and_out(tmp_path):
    r, log, argv = fake_allocation(tmp_path)
    assert r.returncode != 0 and "usage: sbatch deploy/slurm/ncsweep.sbatch SPEC OUT" in r.stderr
    assert not log and not argv


# ---------------------------------------------------------------------- KubeRay
def _containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def strict(schema):
    """A Kubernetes structural schema with unknown fields refused, as `kubectl apply --validate=strict`
    does: every object that lists its properties (and keeps no unknown fields) gets
    additionalProperties: false. Without this a misspelt field would pass (the API server drops it)."""
    if isinstance(schema, list):
        return [strict(x) for x in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


STRICT_RAYJOB = jsonschema.Draft7Validator(strict(RAYJOB_CRD["openAPIV3Schema"]))   # built once: the schema is 0.2 MB


def test_rayjob_validates_strictly_against_kuberays_crd_schema():
    job = yaml.safe_load(RAYJOB.read_text())
    STRICT_RAYJOB.validate(job)
    assert (RAYJOB_CRD["crd"], RAYJOB_CRD["version"]) == ("rayjobs.ray.io", job["apiVersion"].split("/")[1])


@pytest.mark.parametrize("path, key, value", [
    (("spec",), "shutdownAfterJobFinish", True),                                       # a misspelt field
    (("spec", "rayClusterSpec", "headGroupSpec", "template", "spec", "securityContext"), "fsGroup", "100"),  # a string
    (("spec", "rayClusterSpec", "workerGroupSpecs", 0, "rayStartParams"), "num-gpus", 1),  # not a string
])
def test_the_crd_check_rejects_what_the_api_server_would(path, key, value):
    job = yaml.safe_load(RAYJOB.read_text())
    node = job
    for p in path:
        node = node[p]
    node[key] = value
    with pytest.raises(jsonschema.ValidationError):
        STRICT_RAYJOB.validate(job)


def test_every_ray_pod_gets_write_access_to_the_volume_through_fsgroup():
    rc = yaml.safe_load(RAYJOB.read_text())["spec"]["rayClusterSpec"]
    docker = (ROOT / "deploy" / "kuberay" / "Dockerfile").read_text()
    assert "--chown=ray:users" in docker          # the image's user: ray (uid 1000), group users (gid 100)
    for g in [rc["headGroupSpec"], *rc["workerGroupSpecs"]]:
        assert g["template"]["spec"]["securityContext"]["fsGroup"] == 100


def test_the_claim_names_its_storage_class_only_once_it_is_filled_in():
    """pvc.yaml carries ${STORAGE_CLASS}: applied as is, the API server refuses the claim (a class
    name is a DNS subdomain); filled in with envsubst it is an ordinary ReadWriteMany claim."""
    dns_subdomain = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    raw = yaml.safe_load(PVC.read_text())
    assert raw["spec"]["storageClassName"] == "${STORAGE_CLASS}"
    assert not dns_subdomain.match(raw["spec"]["storageClassName"])
    filled = subprocess.run(["envsubst"], input=PVC.read_text(), env={"STORAGE_CLASS": "efs-sc"},
                            capture_output=True, text=True, check=True).stdout
    pvc = yaml.safe_load(filled)
    assert pvc["spec"]["storageClassName"] == "efs-sc" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_rayjob_manifest_structure():
    job = yaml.safe_load(RAYJOB.read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob" and job["metadata"]["name"]
    spec = job["spec"]
    assert set(spec) <= {"entrypoint", "runtimeEnvYAML", "shutdownAfterJobFinishes", "ttlSecondsAfterFinished",
                         "backoffLimit", "rayClusterSpec", "submissionMode", "activeDeadlineSeconds", "suspend",
                         "entrypointNumCpus", "entrypointNumGpus", "submitterPodTemplate", "clusterSelector"}
    yaml.safe_load(spec["runtimeEnvYAML"])
    rc = spec["rayClusterSpec"]
    assert rc["rayVersion"] == ray.__version__
    groups = [rc["headGroupSpec"], *rc["workerGroupSpecs"]]
    for g in groups:   # rayStartParams are `ray start` options, as strings
        parse_ray_start(["ray", "start", *[f"--{k}={v}" for k, v in g["rayStartParams"].items()]])
        assert all(isinstance(v, str) for v in g["rayStartParams"].values())
    assert rc["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"      # trials never land on the head
    images = {c["image"] for g in groups for c in _containers(g)}
    assert len(images) == 1
    assert any(p["containerPort"] == 8265 for p in _containers(rc["headGroupSpec"])[0]["ports"])
    for w in rc["workerGroupSpecs"]:
        assert w["groupName"] and w["minReplicas"] <= w["replicas"] <= w["maxReplicas"]
        res = _containers(w)[0]["resources"]
        assert res["limits"] == res["requests"] and int(res["limits"]["nvidia.com/gpu"]) >= 1


def test_rayjob_runs_an_ncsweep_command_our_cli_accepts_on_a_shared_volume():
    job = yaml.safe_load(RAYJOB.read_text())
    a = parse_ncsweep(shlex.split(job["spec"]["entrypoint"]))
    assert a.cmd == "run" and a.address == "auto"
    # the image holds this checkout at /app (deploy/kuberay/Dockerfile)
    docker = (ROOT / "deploy" / "kuberay" / "Dockerfile").read_text()
    assert re.search(r"^COPY .* \. /app$", docker, re.M) and f"rayproject/ray:{ray.__version__}-py311" in docker
    load_spec(ROOT / Path(a.spec).relative_to("/app"))
    pvc = yaml.safe_load(PVC.read_text())
    assert pvc["kind"] == "PersistentVolumeClaim" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    rc = job["spec"]["rayClusterSpec"]
    for g in [rc["headGroupSpec"], *rc["workerGroupSpecs"]]:    # every pod mounts the claim where --out is
        vols = {v["name"]: v for v in g["template"]["spec"]["volumes"]}
        mounts = [m for m in _containers(g)[0]["volumeMounts"]
                  if vols[m["name"]].get("persistentVolumeClaim", {}).get("claimName") == pvc["metadata"]["name"]]
        assert mounts and any(a.out.startswith(m["mountPath"] + "/") for m in mounts), g


# ---------------------------------------------------------------------- the documented commands
def documented_commands() -> list[tuple[str, str]]:
    """Commands of the code blocks of README's "Running on a cluster" section and of docs/cluster.md."""
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"^## Running on a cluster\n(.*?)(?=^## )", readme, re.M | re.S)
    texts = [("README.md", m.group(1) if m else "")]
    if (ROOT / "docs" / "cluster.md").exists():
        texts.append(("docs/cluster.md", (ROOT / "docs" / "cluster.md").read_text()))
    out = []
    for name, text in texts:
        for block in re.findall(r"^```(?:sh|bash)\n(.*?)^```", text, re.M | re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #")[0].strip()
                if line and not line.startswith("#"):
                    out.append((name, line))
    return out


def check_command(line: str) -> None:
    argv = shlex.split(line)
    if "|" in argv:   # a pipeline: each stage; `-f -` reads the previous stage
        i = argv.index("|")
        check_command(shlex.join(argv[:i]))
        return check_command(shlex.join(argv[i + 1:]))
    if "<" in argv:   # input from one of our files
        i = argv.index("<")
        assert (ROOT / argv[i + 1]).exists(), line
        argv = argv[:i] + argv[i + 2:]
    while "=" in argv[0] and not argv[0].startswith("-"):   # VAR=value prefixes
        argv = argv[1:]
    prog = Path(argv[0]).name
    if prog == "ncsweep":
        a = parse_ncsweep(argv)
        if getattr(a, "spec", None):
            load_spec(ROOT / a.spec)
        if a.cmd == "submit":
            from sweeps.submit import check_out, dashboard_address

            check_out(a.out)
            dashboard_address(a.address)
    elif prog == "sbatch":
        assert ROOT / argv[1] == SBATCH
        load_spec(ROOT / argv[2])
    elif prog == "kubectl":
        assert argv[1] in ("apply", "delete", "get", "logs", "describe", "port-forward", "exec"), line
        for i, tok in enumerate(argv):
            if tok == "-f":
                assert argv[i + 1] == "-" or (ROOT / argv[i + 1]).exists(), line
    elif prog == "ray":
        parse_ray(argv)
    elif prog in ("docker", "ssh", "cd", "source", "git", "pip", "python", "rm", "squeue", "envsubst", "scancel"):
        pass   # ordinary tools; their arguments name nothing of ours that could drift
    else:
        raise AssertionError(f"no rule in tests/test_deploy.py for {line!r}")


DOCUMENTED = documented_commands()


def test_the_cluster_docs_show_each_path():
    progs = {Path(shlex.split(c)[0]).name for _, c in DOCUMENTED}
    joined = "\n".join(c for _, c in DOCUMENTED)
    assert {"ray", "sbatch", "kubectl", "ncsweep"} <= progs, progs
    assert "ncsweep submit" in joined and "ncsweep status" in joined and "ray up cluster.yaml" in joined


@pytest.mark.parametrize("doc, line", DOCUMENTED)
def test_documented_cluster_command(doc, line):
    check_command(line)


# ---------------------------------------------------------------------- ncsweep submit, without a cluster
class FakeJobs:
    """Stands in for ray.job_submission.JobSubmissionClient: records the submission, replays a log."""

    def __init__(self, final="SUCCEEDED"):
        self.final, self.calls, self.submitted = final, 0, None

    def submit_job(self, **kw):
        self.submitted = kw
        return kw["submission_id"]

    def get_job_status(self, sid):
        self.calls += 1
        return "RUNNING" if self.calls < 3 else self.final

    def get_job_logs(self, sid):
        return "line 1\n" + ("line 2\n" if self.calls >= 2 else "")


def test_submit_sends_the_spec_with_a_job_whose_entrypoint_runs_it(tmp_path, monkeypatch):
    from sweeps import submit as sub

    jobs = FakeJobs()
    r = sub.submit("sweeps/specs/demo.yaml", "http://head:8265", "/mnt/shared/runs/demo", resources="cpu=1,gpu=0.25",
                   client=jobs)
    assert r["submission_id"].startswith("ncsweep-demo-") and r["status"] == "RUNNING"
    env = jobs.submitted["runtime_env"]["env_vars"]
    assert yaml.safe_load(env[sub.SPEC_ENV]) == yaml.safe_load((ROOT / "sweeps/specs/demo.yaml").read_text())
    assert jobs.submitted["metadata"] == {"ncsweep_spec": "demo", "ncsweep_out": "/mnt/shared/runs/demo"}
    # on the head: the entrypoint writes the spec to a file and calls `ncsweep run ... --address auto`
    seen = {}

    def fake_main(argv):
        seen["argv"] = argv
        seen["spec"] = Path(argv[1]).read_text()
        return 0

    monkeypatch.setattr("sweeps.cli.main", fake_main)
    argv = shlex.split(jobs.submitted["entrypoint"])
    assert argv[:3] == ["python", "-m", "sweeps.job"]
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    from sweeps import job

    assert job.main(argv[3:]) == 0
    a = parse_ncsweep(["ncsweep", *seen["argv"]])
    assert (a.cmd, a.out, a.address, a.resources) == ("run", "/mnt/shared/runs/demo", "auto", "cpu=1,gpu=0.25")
    assert seen["spec"] == env[sub.SPEC_ENV] and Path(a.spec).name == "demo.yaml"


def test_submit_wait_follows_the_log_and_returns_the_final_status(capsys):
    from sweeps.submit import wait_for

    assert wait_for(FakeJobs("FAILED"), "x", poll_s=0) == "FAILED"
    assert capsys.readouterr().out == "line 1\nline 2\n"


@pytest.mark.parametrize("spec, address, out, message", [
    ("sweeps/specs/demo.yaml", "http://head:8265", "runs/demo", "is relative"),
    ("sweeps/specs/demo.yaml", "http://head:8265", "s3://bucket/runs", "object-store URLs"),
    ("sweeps/specs/demo.yaml", "head:6379", "/mnt/shared/runs/demo", "dashboard's URL"),
])
def test_submit_refuses_what_cannot_work_before_contacting_the_cluster(spec, address, out, message):
    from sweeps.spec import SpecError
    from sweeps.submit import submit

    with pytest.raises(SpecError, match=message):
        submit(spec, address, out)


def test_submit_checks_the_spec_first(tmp_path):
    from sweeps.spec import SpecError
    from sweeps.submit import submit

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nspace: {lr: {grid: []}}\n")
    jobs = FakeJobs()
    with pytest.raises(SpecError):
        submit(str(bad), "http://head:8265", "/mnt/shared/runs/bad", client=jobs)
    assert jobs.submitted is None


def test_submit_names_an_unreachable_dashboard(capsys):
    from sweeps.cli import main

    rc = main(["submit", "sweeps/specs/demo.yaml", "--address", "http://127.0.0.1:9", "--out", "/mnt/shared/runs/demo"])
    assert rc == 2 and "cannot reach the Ray dashboard at http://127.0.0.1:9" in capsys.readouterr().err
