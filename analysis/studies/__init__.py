"""Per-study report sections: each shipped study (sweeps/specs/) states its expected direction,
measures it with a 95% CI and says plainly whether it matches. Keyed by the spec's `name`.

Study modules: `collapse` (NC-fairness, fine-structure, GC-transfer) and `debias` (DFR,
change-penalty); shared verdict helpers live in `common`.
"""
from __future__ import annotations

from .common import _html, _md, _trials, finding, slope_ci, verdict  # noqa: F401
from .registry import STUDIES, study  # noqa: F401
from . import collapse, debias  # noqa: F401,E402  (registers the studies)


def study_sections(name: str, result: dict) -> list[tuple[str, str, str]]:
    fn = STUDIES.get(name)
    if fn is None:
        return []
    findings = fn(result)
    return [(f"Study: {name}", _html(findings), _md(findings))]
