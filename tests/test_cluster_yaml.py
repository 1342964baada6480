"""cluster.yaml validates offline against the schema the installed ray ships."""
import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

SCHEMA = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
CONFIG = yaml.safe_load(Path("cluster.yaml").read_text())


def test_cluster_yaml_matches_rays_schema():
    jsonschema.validate(CONFIG, SCHEMA)


def test_cluster_yaml_has_a_head_and_a_gpu_worker_that_install_the_project():
    types = CONFIG["available_node_types"]
    assert CONFIG["head_node_type"] in types
    gpu = [t for t in types.values() if t.get("resources", {}).get("GPU", 0) >= 1]
    assert gpu and gpu[0]["max_workers"] >= gpu[0]["min_workers"]
    assert any("pip install" in c and "ncsweep" in c for c in CONFIG["setup_commands"])
    assert any("/mnt/shared" in c for c in CONFIG["setup_commands"])


def test_the_schema_check_catches_a_typo():
    bad = copy.deepcopy(CONFIG)
    bad["available_node_types"]["gpu_worker"]["max_worker"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)


def test_ray_accepts_the_config_after_filling_its_defaults():
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(CONFIG)))


def test_the_heads_autoscaler_gets_boto3_pinned_in_the_environment_ray_runs_from():
    """Ray's AWS node provider imports boto3 on the head; `ray[tune,default]` does not install it."""
    head = " ".join(CONFIG["head_setup_commands"])
    assert re.search(r"~/ncsweep-venv/bin/pip install -q 'boto3==\d+\.\d+\.\d+'", head), head
    assert all(c.startswith(("~/ncsweep-venv/bin/ray", "RAY_AUTH_MODE=disabled ~/ncsweep-venv/bin/ray"))
               for c in CONFIG["head_start_ray_commands"] + CONFIG["worker_start_ray_commands"])


def test_every_node_builds_its_venv_on_python_3_11_and_checks_it():
    setup = CONFIG["setup_commands"]
    venv = [c for c in setup if "-m venv ~/ncsweep-venv" in c]
    assert venv and "python3.11 -m venv" in venv[0]
    assert any("sys.version_info[:2] == (3, 11)" in c for c in setup)
    assert setup.index(venv[0]) < next(i for i, c in enumerate(setup) if "pip install -q -e ~/ncsweep" in c)


def test_the_sync_to_the_nodes_leaves_out_the_venv_runs_and_git():
    """The rsync arguments Ray builds from the config (file_mounts sync) exclude the heavy folders."""
    from ray.autoscaler._private.command_runner import SSHCommandRunner

    args = SSHCommandRunner._create_rsync_filter_args(None, {k: CONFIG.get(k) for k in ("rsync_exclude", "rsync_filter")})
    excludes = {args[i + 1] for i, a in enumerate(args) if a == "--exclude"}
    assert {"/.venv", "/runs", "/.git"} <= excludes
    assert ["--filter", "dir-merge,- .gitignore"] == args[-2:]
    assert list(CONFIG["file_mounts"].values()) == ["."]
