"""A real three-node Ray cluster on loopback: one head and two workers, each a separate `ray start`
declaring one (fake) GPU. Sweeps with `resources: {gpu: 0.25}` run through the CLI:

- `ncsweep run --address`: every row names the node that ran it, every node runs four trials at once
  and never more (from the rows' attempt start / epoch end times), every key exactly once, and
  `ncsweep status DIR` in another process follows the sweep while it runs;
- `ncsweep submit` (Ray Jobs API, the driver runs on the head): one worker node is killed mid-sweep,
  its trials are retried on the other nodes, the keys are still exactly once; `ncsweep status DIR`
  from another process sees the finished sweep;
- a node that cannot write --out (started with a fault injected into its storage probe) stops the
  sweep before any trial starts, named in the error;
- the head dies with its driver mid-sweep: a new head (a new cluster, the old lock now a dead
  host's) and `ncsweep resume --address` give every key exactly once.

Only the processes this test started are ended (by pid and their children), never by name.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from sweeps.procs import kill_all

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = {"n_train": 64, "n_val": 32, "n_test": 32, "image_size": 8}
ROWS_PER_EPOCH = 9          # 3 splits × (all + 2 subgroups)
PER_NODE = 4                # 1 GPU per node / 0.25 GPU per trial


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NodeDied(RuntimeError):
    pass


class LocalCluster:
    """Head + workers, each `ray start --block` in its own session; `kill(name)` SIGKILLs one node's tree."""

    def __init__(self, root: Path, workers: int = 2, cpus_per_node: int = 1):
        self.root, self.procs = root, {}
        # Ray's Unix sockets live under the temp dir and their paths must stay under 108 bytes
        self.temp_dir = tempfile.mkdtemp(prefix="ncsweep-ray-", dir="/tmp")
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled",
                    "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT),
                    # notice a dead node within seconds, not half a minute
                    "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "4",
                    "RAY_raylet_start_wait_time_s": "180"}   # a loaded machine starts raylets slowly
        self.gcs, self.dashboard = free_port(), free_port()
        try:
            self._start_all(workers, cpus_per_node)
        except BaseException:
            self.close()
            raise

    def _start_all(self, workers: int, cpus_per_node: int) -> None:
        common = ["--num-cpus", str(cpus_per_node), "--num-gpus", "1", "--object-store-memory", str(80 * 1024**2),
                  "--disable-usage-stats"]
        self._start("head", ["--head", "--port", str(self.gcs), "--node-ip-address", "127.0.0.1",
                             "--include-dashboard=true", "--dashboard-host", "127.0.0.1",
                             "--dashboard-port", str(self.dashboard), "--temp-dir", self.temp_dir,
                             "--resources", json.dumps({"node_head": 1}), *common])
        self._wait_for_gcs()
        for i in range(1, workers + 1):   # one at a time: nodes sharing a session dir race for socket names
            for attempt in range(3):       # on a loaded machine a raylet sometimes dies while starting: retry
                self._start(f"w{i}", ["--address", f"127.0.0.1:{self.gcs}", "--node-ip-address", "127.0.0.1",
                                      "--resources", json.dumps({f"node_w{i}": 1}), *common])
                try:
                    self.node_ids = self._wait_for_nodes(i + 1, watch=f"w{i}")
                    break
                except NodeDied:
                    self.stop(f"w{i}")
                    if attempt == 2:
                        raise

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard}"

    def add_worker(self, name: str, env: dict) -> None:
        """Start one more worker node whose processes (Ray's workers included) see `env`."""
        self._start(name, ["--address", self.address, "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                           "--num-gpus", "1", "--object-store-memory", str(80 * 1024**2), "--disable-usage-stats",
                           "--resources", json.dumps({f"node_{name}": 1})], env=env)
        self.node_ids = {**self.node_ids, **self._wait_for_nodes(None, watch=name)}

    def _start(self, name: str, args: list[str], env: dict | None = None) -> None:
        ports = ["--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
                 "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
                 "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port())]
        log = open(self.root / f"{name}.log", "w")
        self.procs[name] = subprocess.Popen([str(BIN / "ray"), "start", "--block", *args, *ports],
                                            env={**self.env, **(env or {})},
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_for_gcs(self, timeout: float = 90) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            assert self.procs["head"].poll() is None, (self.root / "head.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", self.gcs), timeout=1):
                    with socket.create_connection(("127.0.0.1", self.dashboard), timeout=1):
                        return
            except OSError:
                time.sleep(0.5)
        raise AssertionError("the Ray head did not come up:\n" + (self.root / "head.log").read_text())

    def alive_names(self) -> dict:
        """{name: Ray node id} of the nodes alive now (names from each node's marker resource)."""
        from ray.util.state import list_nodes

        try:
            nodes = [x for x in list_nodes(address=self.dashboard_url, detail=True) if x.state == "ALIVE"]
        except Exception:
            nodes = []
        names = {}
        for x in nodes:
            for r in x.resources_total:
                if r.startswith("node_") and not r.startswith("node:"):
                    names[r[len("node_"):]] = x.node_id
        return names

    def _wait_for_nodes(self, n: int | None, timeout: float = 180, watch: str | None = None) -> dict:
        """{name: Ray node id} once n nodes are alive (n None: once `watch` is among them)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if watch and self.procs[watch].poll() is not None:
                raise NodeDied(f"{watch}: `ray start` exited with {self.procs[watch].returncode}")
            names = self.alive_names()
            if len(names) == n or (n is None and watch in names):
                return names
            time.sleep(1)
        logs = "\n".join(f"{p.name}: {p.read_text()[-1500:]}" for p in sorted(self.root.glob("*.log")))
        raise AssertionError(f"{n} nodes did not join; logs in {self.root}:\n{logs}")

    def tree(self, name: str) -> list[psutil.Process]:
        """The node's `ray start` and every process under it or in its session (orphans keep the session)."""
        pid = self.procs[name].pid
        out = {}
        try:
            p = psutil.Process(pid)
            out = {q.pid: q for q in [p, *p.children(recursive=True)]}
        except psutil.NoSuchProcess:
            pass
        for q in psutil.process_iter():
            try:
                if q.pid not in out and os.getsid(q.pid) == pid:
                    out[q.pid] = q
            except (ProcessLookupError, PermissionError, psutil.Error):
                pass
        return list(out.values())

    def kill(self, name: str) -> None:
        """SIGKILL one node: its `ray start` and every process under it (raylet, trial workers, agents)."""
        procs = self.tree(name)
        for p in procs:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=10)

    def stop(self, name: str) -> None:
        """End one node: SIGTERM its `ray start` (which stops its processes), SIGKILL whatever outlives it."""
        procs = self.tree(name)
        for p in procs[:1]:
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass
        gone, alive = psutil.wait_procs(procs, timeout=15)
        kill_all(alive, timeout=5)

    def close(self) -> None:
        """End what this cluster started: workers first, then the head."""
        for name in reversed(list(self.procs)):
            self.stop(name)
        logs = Path(self.temp_dir) / "session_latest" / "logs"
        if logs.is_dir():   # keep Ray's logs beside the test's, then drop the temp dir (sockets, object spill)
            shutil.copytree(logs, self.root / "ray-logs", dirs_exist_ok=True, ignore_dangling_symlinks=True,
                            ignore=shutil.ignore_patterns("*.sock"))
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(tmp_path_factory.mktemp("cluster"))
    pids = [p.pid for name in c.procs for p in c.tree(name)]
    yield c
    c.close()
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def write_spec(path: Path, name: str, seeds: int, epochs: int) -> Path:
    path.write_text(yaml.safe_dump({
        "name": name, "dataset": {"name": "biased_shapes", "options": TINY},
        "base": {"epochs": epochs, "width": 0.0625, "batch_size": 32, "arch": "vgg11", "metrics": ["nc", "fairness"]},
        "space": {"seed": {"grid": list(range(seeds))}},
        "search": {"algorithm": "grid"},
        "resources": {"cpu": 0.05, "gpu": 0.25},     # GPU, not CPU, bounds the packing: 4 per node
        "max_concurrent": 16, "retries": 2,
    }))
    return path


def ncsweep(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ncsweep"), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "RAY_AUTH_MODE": "disabled", **(env or {})}, cwd=ROOT)


def rows(out: Path) -> pd.DataFrame:
    import pyarrow.dataset as ds

    return ds.dataset(out / "rows", format="parquet").to_table().to_pandas()


def max_concurrency(df: pd.DataFrame) -> dict:
    """Per node: the most attempts running at one moment, an attempt spanning its start to its last epoch's end."""
    spans = df.groupby(["node_id", "trial_id", "attempt"]).agg(start=("attempt_started_at", "min"),
                                                                end=("epoch_ended_at", "max")).reset_index()
    out = {}
    for node, g in spans.groupby("node_id"):
        events = sorted([(s, 1) for s in g.start] + [(e, -1) for e in g.end], key=lambda x: (x[0], x[1]))
        level = peak = 0
        for _, d in events:
            level += d
            peak = max(peak, level)
        out[node] = peak
    return out


def assert_exactly_once(df: pd.DataFrame, trials: int, epochs: int) -> None:
    keys = df[["trial_id", "epoch", "split", "group"]]
    assert not keys.duplicated().any(), keys[keys.duplicated(keep=False)]
    assert df.trial_id.nunique() == trials
    assert len(keys) == trials * epochs * ROWS_PER_EPOCH


def test_every_node_runs_four_trials_at_once_every_row_names_its_node_and_status_follows_the_run(cluster, tmp_path):
    # long enough that the last of the 12 trial actors (each imports torch on a loaded machine) starts
    # before the first trial ends
    epochs = 16
    spec = write_spec(tmp_path / "pack.yaml", "pack", seeds=12, epochs=epochs)
    out = tmp_path / "pack"
    driver = subprocess.Popen([str(BIN / "ncsweep"), "run", str(spec), "--out", str(out), "--address", cluster.address],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                              env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    seen = []   # `ncsweep status --json` from another process while the driver runs
    try:
        t0 = time.monotonic()
        while driver.poll() is None:
            assert time.monotonic() - t0 < 300, "the sweep did not end"
            if (out / "manifest.json").exists():
                st = ncsweep("status", str(out), "--json", timeout=60)
                assert st.returncode == 0, st.stderr
                if driver.poll() is None:
                    seen.append(json.loads(st.stdout))
            time.sleep(2)   # each `ncsweep status` is a Python start: CPU the trials share
        stdout, stderr = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, stdout + stderr
    assert seen and all(s["planned"] == 12 and s["finished"] + s["pending"] == 12 for s in seen), seen
    running = [s for s in seen if s["counts"].get("running")]
    assert running and any(s["finished"] < 12 for s in running), seen   # seen part-way, trials running
    assert [s["finished"] for s in seen] == sorted(s["finished"] for s in seen)   # never goes back

    df = rows(out)
    assert_exactly_once(df, trials=12, epochs=epochs)
    # every row names the node and host that produced it: one node per trial attempt, a node of this cluster
    assert df.node_id.notna().all() and df.hostname.notna().all() and (df.node_id != "").all()
    assert set(df.node_id) <= set(cluster.node_ids.values()) and set(df.hostname) == {socket.gethostname()}
    assert (df.groupby(["trial_id", "attempt"]).node_id.nunique() == 1).all()
    # 12 trials, 4 slots per node: each of the three nodes ran four at once, none ever more
    peaks = max_concurrency(df)
    spans = df.groupby(["node_id", "trial_id"]).agg(start=("attempt_started_at", "min"), end=("epoch_ended_at", "max"))
    assert sorted(peaks) == sorted(cluster.node_ids.values()) and set(peaks.values()) == {PER_NODE}, \
        (peaks, (spans - df.attempt_started_at.min()).round(1).to_string())
    recs = [json.loads(p.read_text()) for p in (out / "trials").glob("*.json")]
    assert len(recs) == 12 and all(r["node_id"] in cluster.node_ids.values() for r in recs)


def test_a_submitted_sweep_survives_losing_a_worker_node(cluster, tmp_path):
    from ray.job_submission import JobSubmissionClient

    epochs, sid = 10, "ncsweep-test-lose-a-node"
    spec = write_spec(tmp_path / "lose.yaml", "lose_a_node", seeds=8, epochs=epochs)
    out = tmp_path / "lose"
    r = ncsweep("submit", str(spec), "--address", cluster.dashboard_url, "--out", str(out),
                "--submission-id", sid, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sid in r.stdout and f"ncsweep status {out}" in r.stdout
    client = JobSubmissionClient(cluster.dashboard_url)

    def job_status() -> str:
        return str(client.get_job_status(sid)).split(".")[-1]

    # wait until a worker node runs a trial that is part-way through, then SIGKILL that whole node
    workers = {cluster.node_ids[w]: w for w in ("w1", "w2")}
    victim, killed_trials, t0 = None, set(), time.monotonic()
    while victim is None:
        assert time.monotonic() - t0 < 300, "no trial was ever part-way on a worker node"
        assert job_status() not in ("SUCCEEDED", "FAILED", "STOPPED"), client.get_job_logs(sid)[-3000:]
        recs = [json.loads(p.read_text()) for p in (out / "trials").glob("*.json")] if (out / "trials").exists() else []
        for node in workers:
            mid = {x["trial_id"] for x in recs if x.get("status") == "running" and x.get("node_id") == node
                   and 1 <= x.get("epochs_done", 0) <= epochs - 3}
            if mid:
                cluster.kill(workers[node])
                victim, killed_trials = node, mid
                break
        time.sleep(0.1)

    t0 = time.monotonic()
    while job_status() not in ("SUCCEEDED", "FAILED", "STOPPED"):
        assert time.monotonic() - t0 < 300, client.get_job_logs(sid)[-3000:]
        time.sleep(1)
    assert job_status() == "SUCCEEDED", client.get_job_logs(sid)[-3000:]

    df = rows(out)
    assert_exactly_once(df, trials=8, epochs=epochs)
    assert max(max_concurrency(df).values()) <= PER_NODE
    for tid in killed_trials:   # each started on the lost node and finished on another, from its checkpoint
        t = df[df.trial_id == tid]
        last = t[t.epoch == epochs - 1].iloc[0]
        assert last.node_id != victim and last.attempt >= 2, t[["epoch", "attempt", "node_id"]]
        assert t[t.node_id == victim].epoch.min() == 0, t[["epoch", "attempt", "node_id"]]

    st = ncsweep("status", str(out), "--json", timeout=120)    # another process, reading the run directory
    assert st.returncode == 0, st.stderr
    s = json.loads(st.stdout)
    assert s["planned"] == s["finished"] == 8 and s["pending"] == 0, s


def test_a_node_that_cannot_write_out_stops_the_sweep_before_any_trial(cluster, tmp_path):
    from sweeps.faults import ENV

    cluster.add_worker("bad", env={ENV: "probe.write:raise"})
    try:
        spec = write_spec(tmp_path / "probe.yaml", "probe", seeds=2, epochs=1)
        out = tmp_path / "probe"
        r = ncsweep("run", str(spec), "--out", str(out), "--address", cluster.address, timeout=200)
        assert r.returncode == 2, r.stdout + r.stderr
        bad = cluster.node_ids["bad"]
        assert f"storage check of --out {out} failed before any trial started" in r.stderr
        problems = [ln for ln in r.stderr.splitlines() if "(Ray node " in ln]
        assert len(problems) == 1 and f"(Ray node {bad}, uid {os.getuid()}) cannot write --out" in problems[0]
        assert "InjectedFault" in problems[0] and "mount the same shared file system" in problems[0]
        assert not list(out.glob("trials/*.json")) and not list(out.glob(".probe-*"))
        assert not (out / "lock.json").exists()
    finally:
        cluster.stop("bad")


def test_the_head_dies_with_its_driver_then_a_new_head_resumes_every_key_once(cluster, tmp_path):
    """Last in this module: it kills the module's head. The driver's lock is rewritten to name the old
    head's host (a new head is another host, as a new pod or a resubmitted job is) with a 5 s lease."""
    from sweeps import lock

    epochs = 8
    spec = write_spec(tmp_path / "head.yaml", "head_death", seeds=6, epochs=epochs)
    out = tmp_path / "head"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "NCSWEEP_LOCK_LEASE_S": "5", "NCSWEEP_LOCK_HEARTBEAT_S": "1"}
    driver = subprocess.Popen([str(BIN / "ncsweep"), "run", str(spec), "--out", str(out), "--address", cluster.address],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        t0 = time.monotonic()
        while True:   # part-way: a trial done and one mid-run
            assert driver.poll() is None, driver.communicate()[1][-3000:]
            assert time.monotonic() - t0 < 300, "the sweep never got part-way"
            recs = [json.loads(p.read_text()) for p in out.glob("trials/*.json")]
            if any(r.get("status") == "completed" for r in recs) and \
                    any(r.get("status") == "running" and 1 <= r.get("epochs_done", 0) < epochs for r in recs):
                break
            time.sleep(0.1)
        driver.kill()
        cluster.kill("head")
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.communicate()
    held = json.loads((out / lock.FILE).read_text())
    (out / lock.FILE).write_text(json.dumps({**held, "host": "old-head-pod"}))
    cluster.close()

    (tmp_path / "new-cluster").mkdir()
    new = LocalCluster(tmp_path / "new-cluster")
    try:
        time.sleep(max(0.0, held["heartbeat"] + 5.5 - time.time()))    # the old lease has run out
        r = ncsweep("resume", str(out), "--address", new.address, timeout=400)
        assert r.returncode == 0, r.stdout + r.stderr[-3000:]
        assert "taking over the lock of a driver that is gone" in r.stderr and "host 'old-head-pod'" in r.stderr
        df = rows(out)
        assert_exactly_once(df, trials=6, epochs=epochs)
        assert set(df[df.attempt >= 2].node_id) <= set(new.node_ids.values())   # resumed on the new cluster
        assert (df.node_id.isin(new.node_ids.values())).any() and (~df.node_id.isin(new.node_ids.values())).any()
        assert not (out / lock.FILE).exists()
    finally:
        new.close()
