"""Property: any mutation of a shipped spec is either valid or refused with named fields — never an
uncaught exception (the validator must survive whatever a user writes)."""
import copy
import math
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sweeps.spec import SpecError, parse_spec

SPECS = {p.stem: yaml.safe_load(p.read_text()) for p in sorted(Path("sweeps/specs").glob("*.yaml"))}
JUNK = [None, "abc", "", -1, 0, 1, 2.5, 10 ** 20, math.nan, math.inf, -math.inf, True, [], {}, [1, 2], [0.1, 0.01],
        {"grid": []}, {"grid": [1, "x"]}, {"uniform": [1, 0]}, {"loguniform": [0, 1]}, {"randint": [0.5, 2]},
        {"choice": "x"}, {"normal": [0, 1]}, "1e-3", ".inf", "../x", "a/b", "trial:abcdef123456", "trial:",
        {"x": {"y": 1}}, [[1]], "val_acc", "min", "asha", "grid", "optuna", "resnet18", "mas", "side_tuning"]


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _mutate(raw, path, op, junk):
    spec = copy.deepcopy(raw)
    if not path:
        return junk if op == "replace" else spec
    *head, last = path
    node = spec
    for k in head:
        node = node[k]
    if op == "replace":
        node[last] = junk
    elif op == "delete":
        del node[last]
    elif op == "add" and isinstance(node, dict):
        node[f"{last}_x"] = junk
    elif op == "typo" and isinstance(node, dict) and isinstance(last, str):
        node[last[:-1] or "x"] = node.pop(last)
    return spec


@st.composite
def mutants(draw):
    raw = SPECS[draw(st.sampled_from(sorted(SPECS)))]
    spec = raw
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(spec))
        spec = _mutate(spec, draw(st.sampled_from(paths)), draw(st.sampled_from(["replace", "delete", "add", "typo"])),
                       draw(st.sampled_from(JUNK)))
    return spec


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutants())
def test_mutants_are_valid_or_refused_with_named_fields(spec):
    try:
        parse_spec(spec)
    except SpecError as e:
        assert e.problems
        for line in e.problems:
            assert line.startswith("spec field `") and "could not be checked" not in line, line
            assert line.split("`")[1], line


TEXTS = {p.stem: p.read_text() for p in sorted(Path("sweeps/specs").glob("*.yaml"))}
PIECES = list(":{}[],-#&*!|>'\"\n ?%@`\t0.eE") + ["!!python/name:os.system", "&a ", "*a", "<<: *a", ".nan", "~",
                                                  "\x00", "\ufeff", "  lr: 1\n  lr: 2\n", "!!binary x", "[" * 50]


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(sorted(TEXTS)), st.lists(st.tuples(st.floats(0, 1), st.sampled_from(PIECES), st.booleans()),
                                               min_size=1, max_size=4))
def test_text_mutants_are_valid_or_refused_never_a_traceback(tmp_path_factory, name, edits):
    from sweeps.spec import load_spec

    text = TEXTS[name]
    for where, piece, replace in edits:
        i = int(where * len(text))
        text = text[:i] + piece + text[i + (1 if replace else 0):]
    p = tmp_path_factory.mktemp("mut") / f"{name}.yaml"
    p.write_text(text, encoding="utf-8", errors="replace")
    try:
        load_spec(p)
    except SpecError as e:
        assert e.problems and not any("could not be checked" in line for line in e.problems), e.problems
