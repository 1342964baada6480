"""analysis.fanova gives Optuna's FanovaImportanceEvaluator's numbers (it replaces it for speed)."""
import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.importance import FanovaImportanceEvaluator, get_param_importances

from analysis.fanova import importances

optuna.logging.set_verbosity(optuna.logging.ERROR)


def optuna_importances(points, values, space, n_trees, max_depth, seed):
    dists = {a: CategoricalDistribution(s[1]) if s[0] == "cat" else FloatDistribution(s[1], s[2])
             for a, s in space.items()}
    study = optuna.create_study()
    study.add_trials([optuna.trial.create_trial(params=dict(zip(space, p)), distributions=dists, value=float(y))
                      for p, y in zip(points, values)])
    return get_param_importances(study, evaluator=FanovaImportanceEvaluator(n_trees=n_trees, max_depth=max_depth,
                                                                             seed=seed), normalize=True)


def sample(n, seed):
    rng = np.random.default_rng(seed)
    arch = rng.choice(["resnet18", "vgg11", "densenet121"], n)
    lr, bias, wd = rng.uniform(-2, 2, n), rng.choice([-1.2, 0.0, 1.2], n), rng.normal(0, 1, n)
    y = 0.8 * lr ** 2 - 0.5 * bias + (arch == "vgg11") * 0.7 + 0.1 * wd + rng.normal(0, 0.3, n)
    space = {"lr": ("float", float(lr.min()), float(lr.max())), "arch": ("cat", sorted(set(arch))),
             "weight_decay": ("float", float(wd.min()), float(wd.max())),
             "bias_level": ("float", float(bias.min()), float(bias.max()))}
    return list(zip(lr, arch, wd, bias)), y, space


@pytest.mark.parametrize("n,depth,seed", [(200, 5, 0), (60, 64, 1), (12, 3, 2)])
def test_importances_equal_optunas(n, depth, seed):
    points, y, space = sample(n, seed)
    ours = importances(points, y, space, n_trees=8, max_depth=depth, seed=seed)
    ref = optuna_importances(points, y, space, 8, depth, seed)
    assert list(ours) == list(ref)                       # same order: most important first
    assert np.allclose([ours[a] for a in ref], list(ref.values()), rtol=1e-9, atol=1e-12)
    assert abs(sum(ours.values()) - 1) < 1e-12


def test_an_axis_with_one_value_gets_zero_as_in_optuna():
    points, y, space = sample(40, 3)
    space["arch"] = ("cat", ["resnet18"])
    points = [(p[0], "resnet18", *p[2:]) for p in points]
    ours = importances(points, y, space, n_trees=4, max_depth=5, seed=0)
    assert ours["arch"] == 0.0
    assert ours == pytest.approx(optuna_importances(points, y, space, 4, 5, 0), rel=1e-9)


def test_one_point_gives_equal_shares_as_in_optuna():
    points, y, space = sample(1, 4)
    ours = importances(points, y, space, n_trees=4, max_depth=5, seed=0)
    assert ours == optuna_importances(points, y, space, 4, 5, 0) == dict.fromkeys(sorted(space, reverse=True), 0.25)


def test_constant_values_raise_as_optuna_does():
    points, _, space = sample(30, 5)
    with pytest.raises(RuntimeError):
        importances(points, np.ones(30), space, n_trees=4, max_depth=5, seed=0)
    with pytest.raises(RuntimeError):
        optuna_importances(points, np.ones(30), space, 4, 5, 0)


def test_table_importances_do_not_depend_on_the_rows_order():
    import pandas as pd

    from analysis.sensitivity import fanova_importance

    points, y, _ = sample(120, 6)
    frame = pd.DataFrame(points, columns=["lr", "arch", "weight_decay", "bias_level"]).assign(y=y)
    axes = ["lr", "arch", "weight_decay", "bias_level"]
    a = fanova_importance(frame, axes, max_configs=50, n_trees=4)
    b = fanova_importance(frame.sample(frac=1, random_state=1), axes, max_configs=50, n_trees=4)
    pd.testing.assert_frame_equal(a, b)


def test_a_categorical_axis_with_many_levels_equals_optuna_across_grid_blocks(monkeypatch):
    import analysis.fanova as fanova

    monkeypatch.setattr(fanova, "GRID_BLOCK", 3)        # the one-hot grid built 3 points at a time
    rng = np.random.default_rng(7)
    levels = [f"d{i}" for i in range(9)]
    data = rng.choice(levels, 150)
    lr = rng.uniform(-1, 1, 150)
    y = np.array([levels.index(d) for d in data]) * 0.3 + lr + rng.normal(0, 0.2, 150)
    space = {"dataset": ("cat", levels), "lr": ("float", float(lr.min()), float(lr.max()))}
    points = list(zip(data, lr))
    ours = fanova.importances(points, y, space, n_trees=6, max_depth=6, seed=3)
    ref = optuna_importances(points, y, space, 6, 6, 3)
    assert list(ours) == list(ref)
    assert np.allclose([ours[a] for a in ref], list(ref.values()), rtol=1e-9, atol=1e-12)
