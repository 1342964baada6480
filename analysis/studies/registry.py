"""The study registry: spec name -> function(result) -> list of findings."""
from __future__ import annotations

STUDIES: dict[str, callable] = {}


def study(name: str):
    def deco(fn):
        STUDIES[name] = fn
        return fn
    return deco
