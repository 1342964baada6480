"""The packages' import structure: sweeps/ is a stack of layers (sweeps.LAYERS) without circles and
without package imports hidden in functions; nccore never imports Ray; analysis never imports torch;
the light commands stay free of torch and Ray."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

import sweeps

ROOT = Path(__file__).resolve().parents[1]
LAYER = {m: i for i, (_, mods) in enumerate(sweeps.LAYERS) for m in mods}


def _imports(path: Path, package: str):
    """(imported module, inside a function?) for each import of `package`'s own modules in `path`
    (imports under `if TYPE_CHECKING:` are annotations, not imports)."""
    tree = ast.parse(path.read_text())
    here = path.relative_to(ROOT).with_suffix("").parts
    out = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.ImportFrom):
                base = list(here[:len(here) - child.level]) if child.level else []
                base += child.module.split(".") if child.module else []
                names = [base + [a.name] for a in child.names] if not child.module or child.level == 0 and \
                    child.module == package else [base]
                out.extend((".".join(n), inner) for n in names if n[:1] == [package])
            elif isinstance(child, ast.Import):
                out.extend((a.name, inner) for a in child.names if a.name.split(".")[0] == package)
            visit(child, inner)

    visit(tree, False)
    return out


def _module(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_sweeps_module_has_a_layer():
    files = {p.stem for p in (ROOT / "sweeps").glob("*.py") if p.stem != "__init__"}
    assert files == set(LAYER), f"declare each module in sweeps.LAYERS: {sorted(files ^ set(LAYER))}"


def test_sweeps_modules_import_only_downward_and_never_inside_functions():
    wrong = []
    for path in sorted((ROOT / "sweeps").glob("*.py")):
        if path.stem == "__init__":
            continue
        for name, in_function in _imports(path, "sweeps"):
            target = _module(name)
            if in_function:
                wrong.append(f"{path.stem} imports sweeps.{target} inside a function")
            elif target in LAYER and LAYER[target] > LAYER[path.stem]:
                wrong.append(f"{path.stem} ({sweeps.LAYERS[LAYER[path.stem]][0]}) imports {target} "
                             f"({sweeps.LAYERS[LAYER[target]][0]}), a layer above it")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("package", ["sweeps", "nccore", "analysis"])
def test_no_import_circles(package):
    graph = {}
    for path in (ROOT / package).rglob("*.py"):
        mod = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        graph[mod] = set()
        for name, _ in _imports(path, package):
            while name not in graph and "." in name and not (ROOT / Path(*name.split("."))).with_suffix(".py").exists() \
                    and not (ROOT / Path(*name.split(".")) / "__init__.py").exists():
                name = name.rsplit(".", 1)[0]
            graph[mod].add(name)
    graph = {m: {t for t in ts if t != m and t != package} for m, ts in graph.items()}
    order, low, stack, on, circles = {}, {}, [], set(), []

    def strong(v):   # Tarjan's strongly connected components
        order[v] = low[v] = len(order)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in order:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in sorted(graph):
        if v not in order:
            strong(v)
    assert not circles, f"import circles in {package}: {circles}"


def _loaded_after(code: str) -> set:
    r = subprocess.run([sys.executable, "-c", code + "; import sys; print(' '.join(sorted(sys.modules)))"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return set(r.stdout.split())


def test_the_light_commands_load_neither_torch_nor_ray():
    loaded = _loaded_after("from sweeps import cli; cli.build_parser()")
    assert not {"torch", "ray"} & loaded


def test_a_trial_worker_starts_without_scikit_learn_or_scipy():
    """Imported where a metric or method uses them (fine recovery, probes, DFR): 1-2.5 s of every
    worker process's start otherwise (bench/driver_overhead.py)."""
    assert not {"sklearn", "scipy"} & _loaded_after("import nccore.trial, nccore.fused, sweeps.worker")


def test_nccore_never_imports_ray_and_analysis_never_imports_torch():
    assert "ray" not in _loaded_after("import nccore.trial, nccore.fused, nccore.evaluate")
    assert "torch" not in _loaded_after("import analysis.cli, analysis.report, analysis.studies")
