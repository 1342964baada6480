"""Fine-grained structure under coarse supervision (Yang, Steinhardt, Hu, ICML 2023).

Within each coarse class k with m_k fine classes, k-means (k = m_k) clusters the features; the
clusters are scored against the fine labels *inside that class*, so the coarse label itself —
which the network was trained on — earns no credit. Scores are aggregated over all samples.
"""
from __future__ import annotations

import numpy as np

from ._util import as_numpy, undefined

_KEYS = ("cluster_acc", "purity", "nmi", "ari", "nmi_chance")


def hungarian_accuracy(clusters, labels) -> float:
    """Accuracy after the best one-to-one matching of cluster ids to labels (scipy Hungarian)."""
    from scipy.optimize import linear_sum_assignment   # scipy and scikit-learn only where used: 1-2 s per worker start

    c, y = as_numpy(clusters).ravel(), as_numpy(labels).ravel()
    cu, ci = np.unique(c, return_inverse=True)
    yu, yi = np.unique(y, return_inverse=True)
    table = np.zeros((len(cu), len(yu)), dtype=np.int64)
    np.add.at(table, (ci, yi), 1)
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / len(y))


def purity(clusters, labels) -> float:
    """Σ_clusters max_label count / n."""
    c, y = as_numpy(clusters).ravel(), as_numpy(labels).ravel()
    total = sum(np.bincount(np.unique(y, return_inverse=True)[1][c == k]).max() for k in np.unique(c))
    return float(total / len(y))


def fine_recovery(features, coarse, fine, seed: int = 0, *, train_features=None, train_coarse=None,
                  normalize: bool = False, n_init: int = 10) -> dict:
    """k-means recovery of fine labels inside each coarse class.

    features (N, d), coarse (N,), fine (N,). By default k-means is fitted on `features` themselves;
    with `train_features`/`train_coarse` it is fitted on those and `features` are assigned to the
    nearest centroid (the train→test protocol). Returns cluster_acc (Hungarian-matched accuracy),
    purity, nmi (arithmetic NMI) and ari, each the sample-weighted mean over coarse classes, and
    nmi_chance: the NMI of the same clusters with the fine labels permuted inside each coarse class
    (mean of 5 seeded permutations) — the level a finite sample reaches with no fine structure.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    x = as_numpy(features).astype(np.float64)
    yc, yf = as_numpy(coarse).ravel(), as_numpy(fine).ravel()
    fit_x = x if train_features is None else as_numpy(train_features).astype(np.float64)
    fit_c = yc if train_coarse is None else as_numpy(train_coarse).ravel()
    if normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        fit_x = fit_x / np.maximum(np.linalg.norm(fit_x, axis=1, keepdims=True), 1e-12)
    if not np.isfinite(x).all() or not np.isfinite(fit_x).all():
        return {k: undefined("non-finite features") for k in _KEYS}
    scores, weights = [], []
    rng = np.random.default_rng(seed)
    for k in np.unique(yc):
        m, mf = yc == k, fit_c == k
        n_fine = len(np.unique(yf[m]))
        if n_fine < 2 or mf.sum() < n_fine:
            continue  # one fine class (or too few points to fit): nothing to recover here
        km = KMeans(n_clusters=n_fine, n_init=n_init, random_state=seed).fit(fit_x[mf])
        cl = km.predict(x[m])
        chance = np.mean([normalized_mutual_info_score(rng.permutation(yf[m]), cl) for _ in range(5)])
        scores.append([hungarian_accuracy(cl, yf[m]), purity(cl, yf[m]),
                       normalized_mutual_info_score(yf[m], cl), adjusted_rand_score(yf[m], cl), chance])
        weights.append(m.sum())
    if not scores:
        return {k: undefined("no coarse class holds two or more fine classes") for k in _KEYS}
    avg = np.average(np.array(scores), axis=0, weights=np.array(weights, dtype=float))
    return dict(zip(_KEYS, map(float, avg)))


def linear_probe_accuracy(train_x, train_y, test_x, test_y, Cs=(0.1, 1.0), seed: int = 0,
                          max_iter: int = 300) -> float:
    """Accuracy on (test_x, test_y) of an L2 multinomial logistic regression on standardised
    frozen features, C chosen by 3-fold stratified CV on the training set (C=1 if a class has
    fewer than 3 training samples)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xtr, ytr = as_numpy(train_x).astype(np.float64), as_numpy(train_y).ravel()
    xte, yte = as_numpy(test_x).astype(np.float64), as_numpy(test_y).ravel()
    if len(np.unique(ytr)) < 2:
        return undefined("linear probe needs at least 2 training classes")
    if not (np.isfinite(xtr).all() and np.isfinite(xte).all()):
        return undefined("non-finite features")
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    if np.bincount(np.unique(ytr, return_inverse=True)[1]).min() >= 3:
        cv = StratifiedKFold(3, shuffle=True, random_state=seed)
        pipe = GridSearchCV(pipe, {"logisticregression__C": list(Cs)}, cv=cv)
    return float(np.mean(pipe.fit(xtr, ytr).predict(xte) == yte))
