"""cluster.yaml validates offline against the schema the installed ray ships."""
import copy
import json
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
