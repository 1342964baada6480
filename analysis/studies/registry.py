"""The study registry: study name -> how it measures its findings, and its default declaration.

A spec names its study with a `study:` block (sweeps/spec.py): the study's name, its primary
outcome, secondary outcomes and manipulation checks, each with a direction and a margin, and
options (such as the number of early epochs). Runs made before that field existed fall back to
their spec's name (`spec_names`) and the registered default declaration.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Callable

import yaml

DECLARATIONS = Path(__file__).with_name("declarations.yaml")   # each study's claim, findings, default block


@dataclass
class Study:
    name: str
    measure: Callable          # (rows: DataFrame, options: dict) -> list of measured findings, notes, figures
    default: dict              # declaration used when the run's spec has no `study:` block
    spec_names: tuple = ()     # spec names of runs made before `study:` existed
    findings: dict = field(default_factory=dict)   # finding id -> one-line meaning (for checks and docs)
    claim: str = ""                                # the paper's claim the study tests, in a sentence or three


STUDIES: dict[str, Study] = {}


@cache
def declarations() -> dict:
    """analysis/studies/declarations.yaml: per study its claim, findings and default `study:` block."""
    return yaml.safe_load(DECLARATIONS.read_text())


def declaration(name: str) -> dict:
    return declarations()[name]


def study(name: str):
    """Register `fn(rows, options)` as study `name`, declared in declarations.yaml."""
    def deco(fn):
        d = declaration(name)
        STUDIES[name] = Study(name, fn, d["default"], tuple(d.get("spec_names") or ()), dict(d["findings"]),
                              d.get("claim", ""))
        return fn
    return deco


def resolve(name: str | None, declaration: dict | None = None) -> tuple[Study | None, dict]:
    """(study, declaration) for a spec's `study:` block, else for a spec name (old runs)."""
    if declaration and declaration.get("name") in STUDIES:
        s = STUDIES[declaration["name"]]
        return s, declaration
    s = STUDIES.get(name) or next((s for s in STUDIES.values() if name in s.spec_names), None)
    return s, (s.default if s else {})


def check_declaration(decl: dict) -> list[str]:
    """Problems of a `study:` block against the registry: unknown study or finding ids."""
    s = STUDIES.get(decl.get("name"))
    if s is None:
        return [f"study.name={decl.get('name')!r}: not a registered study; known: {', '.join(sorted(STUDIES))}"]
    out = []
    for role in ("primary", "secondary", "manipulation"):
        for fid in decl.get(role) or {}:
            if fid not in s.findings:
                out.append(f"study.{role}.{fid}: not a finding of study {s.name!r}; known: {', '.join(s.findings)}")
    return out
