"""The study specs: declared findings the studies know, ≥ 5 seeds per cell, GPU specs on real data
in one folder with one naming rule (refused with "put the files at …" until their files exist),
and spec headers that name only files that exist."""
import re
from pathlib import Path

import pytest
import yaml

from analysis.studies import STUDIES, check_declaration
from nccore.catalogue import DATASET_FILES, dataset_options
from sweeps.spec import SpecError, parse_spec

SPECS = sorted(Path("sweeps/specs").glob("*.yaml")) + sorted(Path("sweeps/specs/gpu").glob("*.yaml"))
STUDY_SPECS = [p for p in SPECS if "study" in yaml.safe_load(p.read_text())]
GPU = sorted(Path("sweeps/specs/gpu").glob("*.yaml"))


def _seeds(raw: dict) -> int:
    grids = [raw.get("space", {}).get("seed")] + [v.get("seed") for v in raw.get("variants") or []]
    return max(len(g["grid"]) if isinstance(g, dict) else 1 for g in grids if g is not None)


@pytest.mark.parametrize("path", STUDY_SPECS, ids=str)
def test_study_block_names_known_findings_and_five_seeds(path):
    raw = yaml.safe_load(path.read_text())
    assert check_declaration(raw["study"]) == [] and len(raw["study"]["primary"]) == 1
    assert _seeds(raw) >= 5


def test_every_study_has_a_cpu_spec_and_a_gpu_spec():
    names = {yaml.safe_load(p.read_text())["study"]["name"]: p for p in STUDY_SPECS}
    assert set(names) == set(STUDIES)
    gpu = {yaml.safe_load(p.read_text())["study"]["name"] for p in GPU}
    assert gpu == set(STUDIES)


def _stand_ins(raw: dict, root: Path) -> None:
    opts = raw["dataset"]["options"]
    defaults = {k: key.default for k, key in dataset_options(raw["dataset"]["name"]).items()}
    for f in DATASET_FILES[raw["dataset"]["name"]]:
        (root / f.format(**{**defaults, **opts})).touch()


@pytest.mark.parametrize("path", GPU, ids=lambda p: p.stem)
def test_gpu_spec_validates_with_its_files_and_is_refused_without(path, tmp_path):
    """Rule: sweeps/specs/gpu/<study>_<dataset>.yaml, spec name = file name, a dataset read from disk."""
    raw = yaml.safe_load(path.read_text())
    study, ds = raw["study"]["name"], raw["dataset"]["name"]
    assert path.stem == raw["name"] and path.stem.startswith(study + "_") and ds in DATASET_FILES
    raw["dataset"]["options"]["root"] = str(tmp_path / "absent")
    with pytest.raises(SpecError, match=r"put the files at .*absent"):
        parse_spec(raw)
    raw["dataset"]["options"]["root"] = str(tmp_path)
    with pytest.raises(SpecError, match=r"put the files at " + re.escape(str(tmp_path))):
        parse_spec(raw)
    _stand_ins(raw, tmp_path)
    assert parse_spec(raw).study["name"] == study
    assert "GPU-hours" in path.read_text()


@pytest.mark.parametrize("path", SPECS, ids=str)
def test_spec_headers_name_only_files_that_exist(path):
    header = "\n".join(ln for ln in path.read_text().splitlines() if ln.startswith("#"))
    for name in re.findall(r"[\w./-]+\.yaml", header):
        candidates = [Path(name), Path("sweeps/specs") / name, path.parent / name]
        assert any(c.is_file() for c in candidates), f"{path}: header names {name}, which does not exist"


def test_every_finding_is_documented():
    text = Path("docs/studies-collapse.md").read_text() + Path("docs/studies-debias.md").read_text()
    missing = [f"{s.name}.{fid}" for s in STUDIES.values() for fid in s.findings if f"`{fid}`" not in text]
    assert not missing, f"docs/studies-*.md lack {missing}"
