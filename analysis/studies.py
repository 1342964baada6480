"""Per-study report sections: each shipped study states its expected direction, measures it
with a CI and says whether it matches. Keyed by the spec's `name`."""
from __future__ import annotations

STUDIES: dict[str, callable] = {}


def study(name: str):
    def deco(fn):
        STUDIES[name] = fn
        return fn
    return deco


def study_sections(name: str, result: dict) -> list[tuple[str, str, str]]:
    fn = STUDIES.get(name)
    return [fn(result)] if fn else []
