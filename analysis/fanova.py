"""fANOVA importance (Hutter, Hoos & Leyton-Brown, "An Efficient Approach for Assessing
Hyperparameter Importance", ICML 2014), computed as Optuna's `FanovaImportanceEvaluator` computes
it, with its tree marginals in numpy instead of a Python walk per grid point.

    imp = importances(points, values, space, n_trees=16, max_depth=5, seed=0)   # {axis: share}

What is computed (the same steps and encoding as `optuna.importance.get_param_importances(study,
evaluator=FanovaImportanceEvaluator(n_trees, max_depth, seed), normalize=True)` on a study holding
one trial per point; `tests/analysis/test_fanova.py` checks the numbers against it):
- axes in name order; a categorical axis one-hot over its choices (each column in [0, 1]), a
  numeric axis as it is, bounded by its (low, high);
- a random forest (scikit-learn, `min_samples_split=2`, `min_samples_leaf=1`) fitted to the points;
- per tree, each leaf is a box of the search space with value v_L and volume V_L. The tree's
  variance is the V-weighted variance of v_L. For an axis with encoded columns F, its marginal at a
  point x of F (one grid point per cell of the tree's splits on F, weighted by the cell's size) is
  the mean of v_L over the leaves whose F-box holds x, weighted by V_L / W_L(F) (W_L(F): the
  leaf's width along F); the axis' share of the tree is the weighted variance of these marginals
  over the grid divided by the tree's variance;
- an axis' importance is the mean share over trees with non-zero variance, normalised to sum 1.
Optuna reaches each marginal by walking the tree from the root once per grid point; here every
grid point and leaf is one array operation. Same sums in another order: equal to ~1e-12.
"""
from __future__ import annotations

import itertools

import numpy as np


def encode(points: list[tuple], space: dict[str, tuple]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(X: (N, C) float, bounds: (C, 2), axis -> its columns of X). space: axis -> ("cat", choices)
    or ("float", low, high); points: one tuple of values per point, in `space`'s order."""
    names = list(space)
    cols, bounds, where = [], [], {}
    for j, a in enumerate(sorted(names)):
        kind, *rest = space[a]
        i = names.index(a)
        start = len(bounds)
        if kind == "cat":
            choices = list(rest[0])
            index = {c: k for k, c in enumerate(choices)}
            hot = np.zeros((len(points), len(choices)))
            hot[np.arange(len(points)), [index[p[i]] for p in points]] = 1.0
            cols.append(hot)
            bounds += [(0.0, 1.0)] * len(choices)
        else:
            cols.append(np.array([[float(p[i])] for p in points]).reshape(len(points), 1))
            bounds.append((float(rest[0]), float(rest[1])))
        where[a] = np.arange(start, len(bounds))
    return np.hstack(cols), np.array(bounds, float), where


def leaf_boxes(tree, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(values (L,), low (L, C), high (L, C), open_low (L, C), open_high (L, C)) of a fitted
    scikit-learn tree's leaves: each leaf's box of the search space (`bounds` at the edges: for
    volumes and widths) and the same box with ±inf at the edges (for holding a point: x goes left
    when x <= threshold)."""
    n, feature, thr = tree.node_count, tree.feature, tree.threshold
    left, right = tree.children_left, tree.children_right
    lo, hi = np.empty((n, len(bounds))), np.empty((n, len(bounds)))
    olo, ohi = np.full((n, len(bounds)), -np.inf), np.full((n, len(bounds)), np.inf)
    lo[0], hi[0] = bounds[:, 0], bounds[:, 1]
    for i in range(n):                       # scikit-learn numbers children after their parent
        f = feature[i]
        if f < 0:
            continue
        for child, side in ((left[i], 1), (right[i], 0)):
            lo[child], hi[child], olo[child], ohi[child] = lo[i], hi[i], olo[i], ohi[i]
            (hi if side else lo)[child, f] = thr[i]
            (ohi if side else olo)[child, f] = thr[i]
    leaf = feature < 0
    return tree.value.reshape(n, -1)[leaf, 0], lo[leaf], hi[leaf], olo[leaf], ohi[leaf]


def _weighted_var(values: np.ndarray, weights: np.ndarray) -> float:
    mean = np.average(values, weights=weights)
    return float(np.average((values - mean) ** 2, weights=weights))


def tree_shares(tree, bounds: np.ndarray, where: dict[str, np.ndarray]) -> tuple[float, dict[str, float]]:
    """(the tree's variance, axis -> marginal variance of the axis' columns) for one tree."""
    v, lo, hi, olo, ohi = leaf_boxes(tree, bounds)
    width = hi - lo
    volume = np.prod(width, axis=1)
    total = _weighted_var(v, volume)
    splits = [np.unique(tree.threshold[tree.feature == c]) for c in range(len(bounds))]
    out = {}
    for a, cols in where.items():
        mids, sizes = [], []
        for c in cols:
            edges = np.concatenate(([bounds[c, 0]], splits[c], [bounds[c, 1]]))
            mids.append(0.5 * (edges[1:] + edges[:-1]))
            sizes.append(edges[1:] - edges[:-1])
        leaf_w = volume / np.prod(width[:, cols], axis=1)
        values, weights = _marginals(mids, sizes, olo[:, cols], ohi[:, cols], leaf_w, v)
        out[a] = max(_weighted_var(values, weights), 0.0)
    return total, out


GRID_BLOCK = 1 << 14    # grid points at a time: memory ~ GRID_BLOCK × leaves, however many cells the grid has


def _marginals(mids: list, sizes: list, olo: np.ndarray, ohi: np.ndarray, leaf_w: np.ndarray,
               v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(marginal, weight) at each grid point, in itertools.product order as Optuna walks them.
    A categorical axis' grid is the product of its one-hot columns' cells (2^k for k split columns),
    so it is built a block at a time."""
    points, cell_sizes = itertools.product(*mids), itertools.product(*sizes)
    values, weights = [], []
    while block := list(itertools.islice(points, GRID_BLOCK)):
        grid = np.array(block)                                   # (G, |F|)
        size = np.prod(np.array(list(itertools.islice(cell_sizes, GRID_BLOCK))), axis=1)
        holds = np.ones((len(grid), len(v)), dtype=bool)         # (G, L): the leaf's box holds the point
        for j in range(grid.shape[1]):
            x = grid[:, j:j + 1]
            holds &= (x > olo[:, j]) & (x <= ohi[:, j])
        w = holds * leaf_w[None, :]
        mass = w.sum(axis=1)
        values.append(w @ v / mass)
        weights.append(mass * size)
    return np.concatenate(values), np.concatenate(weights)


def importances(points: list[tuple], values, space: dict[str, tuple], n_trees: int, max_depth: int,
                seed: int = 0) -> dict[str, float]:
    """axis -> fANOVA importance, normalised to sum 1, most important first (ties: later name
    first, as Optuna orders them). Raises RuntimeError when every tree has zero variance."""
    from sklearn.ensemble import RandomForestRegressor

    varied = {a: s for a, s in space.items() if (len(s[1]) > 1 if s[0] == "cat" else s[1] != s[2])}
    raw = dict.fromkeys(sorted(space), 0.0)
    if varied and len(points) > 1:
        raw = dict.fromkeys(sorted(varied) + sorted(a for a in space if a not in varied), 0.0)
        keep = [list(space).index(a) for a in varied]
        X, bounds, where = encode([tuple(p[i] for i in keep) for p in points], varied)
        forest = RandomForestRegressor(n_estimators=n_trees, max_depth=max_depth, min_samples_split=2,
                                       min_samples_leaf=1, random_state=seed).fit(X, np.asarray(values, float))
        shares = [tree_shares(e.tree_, bounds, where) for e in forest.estimators_]
        if all(total == 0 for total, _ in shares):
            raise RuntimeError("Encountered zero total variance in all trees.")
        for a in where:
            raw[a] = float(np.mean([s[a] / total for total, s in shares if total > 0]))
    ordered = dict(reversed(sorted(raw.items(), key=lambda kv: kv[1])))
    s = sum(ordered.values())
    return {a: (v / s if s != 0 else 1.0 / len(ordered)) for a, v in ordered.items()}
