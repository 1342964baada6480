"""Oracle tests for DFR, change-penalised tuning, MAS, side-tuning, few-shot NCM."""
import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from nccore.methods.change_penalty import DeltaModel, penalty_step
from nccore.methods.dfr import as_linear_head, fit_dfr
from nccore.methods.mas import mas_importance
from nccore.methods.side_tuning import SideTuned
from nccore.methods.transfer import ncm_episodes
from nccore.metrics import worst_group_accuracy
from nccore.models import build_model
from nccore.trial import run_trial


def _mlp():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    m.feature_dim = 3
    return m


# ------------------------------------------------------------------ change-penalised tuning (§E.3)
def test_zero_initialised_change_reproduces_the_base_exactly():
    base = build_model("resnet18", 2, width=0.125, image_size=8).eval()
    x = torch.randn(4, 3, 8, 8)
    dm = DeltaModel(base)
    assert torch.equal(dm(x), base(x)) and torch.equal(dm.features(x), base.features(x))
    assert torch.equal(dm.materialise()(x), base(x))


def _sgd_steps(model_fn, params, x, y, lr, lam, steps, mode):
    opt = torch.optim.SGD(params, lr=lr)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model_fn(x), y)
        if mode == "explicit":
            loss = loss + lam * sum((p ** 2).sum() for p in params)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if mode == "proximal":
            penalty_step(params, lr, lam, "l2")


def test_huge_penalty_keeps_the_change_near_zero():
    base = _mlp()
    dm = DeltaModel(base)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    _sgd_steps(dm, list(dm.delta), x, y, lr=0.1, lam=1e8, steps=10, mode="proximal")
    assert dm.norm() < 1e-6


@pytest.mark.parametrize("mode", ["explicit", "proximal"])
def test_change_penalised_sgd_equals_l2sp_step_for_step(mode):
    base, l2sp = _mlp(), _mlp()
    theta0 = [p.detach().clone() for p in l2sp.parameters()]
    dm = DeltaModel(base)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    lr, lam = 0.1, 0.3
    _sgd_steps(dm, list(dm.delta), x, y, lr, lam, 5, mode)
    # L2-SP: the same loss on θ with ‖θ − θ⁰‖² (explicit) or shrinkage towards θ⁰ (proximal)
    opt = torch.optim.SGD(l2sp.parameters(), lr=lr)
    for _ in range(5):
        loss = nn.functional.cross_entropy(l2sp(x), y)
        if mode == "explicit":
            loss = loss + lam * sum(((p - p0) ** 2).sum() for p, p0 in zip(l2sp.parameters(), theta0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if mode == "proximal":
            with torch.no_grad():
                for p, p0 in zip(l2sp.parameters(), theta0):
                    p.copy_(p0 + (p - p0) / (1 + 2 * lr * lam))
    for (n, p0), d, p in zip(base.named_parameters(), dm.delta, l2sp.parameters()):
        assert torch.allclose(p0 + d, p, atol=1e-6), n


def test_gradient_wrt_change_equals_base_gradient_at_theta0():
    base, ref = _mlp(), _mlp()
    dm = DeltaModel(base)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    nn.functional.cross_entropy(dm(x), y).backward()
    nn.functional.cross_entropy(ref(x), y).backward()
    for d, p in zip(dm.delta, ref.parameters()):
        assert torch.allclose(d.grad, p.grad, atol=1e-7)


# ------------------------------------------------------------------ MAS (§E.4)
def test_mas_importance_scalar_oracle_is_five():
    lin = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    x = torch.tensor([[1.0], [2.0]])
    assert mas_importance(lin, x)["weight"].item() == pytest.approx(5.0)
    assert mas_importance(lin, x, batchwise=True)["weight"].item() == pytest.approx(5.0)


# ------------------------------------------------------------------ side-tuning (§E.5)
def test_side_tuning_alpha_one_is_the_base_and_side_gets_no_gradient():
    base = build_model("vgg11", 3, width=0.125, image_size=8).eval()
    side = copy.deepcopy(base)
    with torch.no_grad():
        for p in side.parameters():
            p.add_(0.1)
    fused = SideTuned(base, side, alpha=1.0)
    x = torch.randn(4, 3, 8, 8)
    out = fused(x)
    assert torch.equal(out, base(x))
    out.sum().backward()
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in side.parameters())
    assert torch.allclose(fused.classifier(fused.features(x)), base(x), atol=1e-5)


def test_side_tuning_zero_side_halves_the_base():
    base = build_model("vgg11", 3, width=0.125, image_size=8).eval()
    side = copy.deepcopy(base)
    with torch.no_grad():
        side.classifier.weight.zero_()
        side.classifier.bias.zero_()
    x = torch.randn(4, 3, 8, 8)
    assert torch.allclose(SideTuned(base, side, 0.5)(x), 0.5 * base(x), atol=1e-6)


# ------------------------------------------------------------------ DFR (§E.2)
def _spurious_embedding(n, corr, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.where(rng.random(n) < corr, y, 1 - y)
    x = np.stack([(2 * y - 1) + 0.1 * rng.standard_normal(n), (2 * p - 1) + 0.1 * rng.standard_normal(n)], 1)
    return x, y, 2 * y + p


def test_dfr_on_two_feature_oracle_ignores_the_spurious_feature():
    xtr, ytr, _ = _spurious_embedding(2000, 0.95, 0)
    xva, yva, gva = _spurious_embedding(800, 0.5, 1)
    xte, yte, gte = _spurious_embedding(2000, 0.5, 2)
    coef, icpt, scaler, C = fit_dfr(xtr, xva, yva, gva, num_groups=4)
    assert abs(coef[0, 1]) < 0.1 * abs(coef[0, 0])
    w, b = as_linear_head(coef, icpt, scaler, 2)
    pred = (xte @ w.numpy().T + b.numpy()).argmax(1)
    dfr_wga = worst_group_accuracy(yte, pred, gte)
    from sklearn.linear_model import LogisticRegression
    # ERM: an L2 logistic head on the biased training embedding spreads its weight over both
    # predictive features, so it fails on the groups where they disagree
    erm = LogisticRegression(C=0.01).fit(xtr, ytr)
    erm_wga = worst_group_accuracy(yte, erm.predict(xte), gte)
    assert dfr_wga >= 0.95 and dfr_wga > erm_wga
    small, *_ = fit_dfr(xtr, xva, yva, gva, Cs=(0.01,))
    assert np.mean(small == 0) >= 0.5


def test_dfr_refuses_a_group_without_validation_samples():
    x, y, g = _spurious_embedding(100, 1.0, 0)   # fully aligned: groups 1 and 2 are empty
    with pytest.raises(ValueError, match="no validation samples"):
        fit_dfr(x, x, y, g, num_groups=4)


def test_dfr_controls_use_the_same_embeddings_and_differ_only_in_penalty_or_balance():
    xtr, _, _ = _spurious_embedding(500, 0.95, 0)
    xva, yva, gva = _spurious_embedding(400, 0.9, 1)
    l1, *_ = fit_dfr(xtr, xva, yva, gva, num_groups=4, Cs=(0.05,), seed=3)
    again, *_ = fit_dfr(xtr, xva, yva, gva, num_groups=4, Cs=(0.05,), seed=3)
    l2, *_ = fit_dfr(xtr, xva, yva, gva, num_groups=4, Cs=(0.05,), seed=3, penalty="l2")
    unbal, *_ = fit_dfr(xtr, xva, yva, gva, num_groups=4, Cs=(0.05,), seed=3, balance=False)
    assert np.array_equal(l1, again)                       # random_state fixed everywhere
    assert np.all(l2 != 0) and l1[0, 1] == 0 and not np.array_equal(l1, unbal)   # L2 keeps no exact zeros


def test_tuning_set_takes_n_per_contradicting_group_and_ordinary_per_aligned_group():
    from nccore.methods.tuning import tuning_indices

    y = np.repeat([0, 0, 1, 1], 10)
    p = np.repeat([0, 1, 0, 1], 10)                        # groups (y, p): (0,1) and (1,0) contradict
    idx = tuning_indices(y, p, n_tune=3, seed=0, n_ordinary=2)
    cells = np.bincount(2 * y[idx] + p[idx], minlength=4).tolist()
    assert cells == [2, 3, 3, 2]
    with pytest.raises(ValueError, match="n_tune=11"):
        tuning_indices(y, p, n_tune=11, seed=0)


# ------------------------------------------------------------------ few-shot NCM (§C)
def test_ncm_two_way_one_shot_oracle():
    feats = np.array([[-1.0], [-0.9], [-0.9], [1.0], [0.9], [0.9]])
    labels = np.array([0, 0, 0, 1, 1, 1])
    rng_feats = feats.copy()
    acc, _ = ncm_episodes(rng_feats, labels, n_way=2, k_shot=1, queries=2, episodes=20)
    assert acc == 1.0


# ------------------------------------------------------------------ end to end on BiasedShapes
E2E = {"arch": "resnet18", "width": 0.125, "epochs": 3, "bias_level": 0.95, "seed": 0,
       "data": {"n_train": 800, "n_val": 400, "n_test": 400, "image_size": 16}}
# the smallest trial that still has 4 samples in every bias-contradicting group (fairness metrics only)
SMALL = {"arch": "vgg11", "width": 0.125, "epochs": 2, "bias_level": 0.8, "seed": 0, "metrics": ["fairness"],
         "batch_size": 64, "data": {"n_train": 256, "n_val": 128, "n_test": 128, "image_size": 8}}


def test_dfr_beats_erm_worst_group_accuracy_end_to_end():
    rows = list(run_trial({**E2E, "method": "dfr", "metrics": ["fairness"]}))
    te = [r for r in rows if r["split"] == "test" and r["group"] == "all"][-1]
    assert te["dfr_worst_group_acc"] > te["erm_worst_group_acc"] + 0.2
    assert te["worst_group_acc"] == pytest.approx(te["dfr_worst_group_acc"])
    assert te["sparsity_after"] > te["sparsity_before"]


@pytest.mark.parametrize("method, penalty", [("change_penalty", 0.1), ("mas", 1.0), ("side_tuning", 0.5)])
def test_tuning_methods_run_and_report_their_change(method, penalty):
    rows = list(run_trial({**SMALL, "method": method, "penalty": penalty, "lr": 0.01, "epochs": 3,
                           "method_options": {"pretrain_epochs": 1, "n_tune": 4, "mas_samples": 32}
                           if method == "mas" else {"pretrain_epochs": 1, "n_tune": 4}}))
    te = [r for r in rows if r["split"] == "test" and r["group"] == "all"]
    # 4 counterexamples in each of the 2 bias-contradicting groups + 4 ordinary in each aligned group
    assert math.isfinite(te[-1]["delta_norm"]) and te[-1]["n_tune"] == 16 and te[-1]["n_tune_per_group"] == 4
    assert 0 <= te[-1]["base_probe_wga"] <= 1 and te[-1]["best_epoch"] <= te[-1]["epoch"]


def test_side_tuning_refuses_alpha_outside_unit_interval():
    from nccore.config import validate_config

    with pytest.raises(ValueError, match="blend α"):
        validate_config({"method": "side_tuning", "penalty": 2.0})


def test_transfer_reports_gc_target_collapse_and_fewshot():
    rows = list(run_trial({**E2E, "method": "transfer", "bias_level": 0.0, "epochs": 1,
                           "data": {**E2E["data"], "target": "fine", "n_test": 300},
                           "method_options": {"episodes": 50, "n_way": 5}}))
    te = [r for r in rows if r["split"] == "test" and r["group"] == "all"][-1]
    assert 0.2 <= te["fewshot_acc"] <= 1.0 and te["gc"] > 0 and math.isfinite(te["target_nc1"])


def test_init_from_an_earlier_trial_and_a_bad_checkpoint(tmp_path):
    ck = tmp_path / "ck"
    list(run_trial({**E2E, "epochs": 1, "checkpoint_dir": str(ck)}))
    rows = list(run_trial({**E2E, "method": "change_penalty", "init_from": str(ck), "epochs": 1, "penalty": 1.0}))
    assert rows
    with pytest.raises(ValueError, match="no checkpoint there"):
        list(run_trial({**E2E, "init_from": str(tmp_path / "nope")}))
    with pytest.raises(ValueError, match="does not fit this model"):
        list(run_trial({**E2E, "arch": "vgg11", "init_from": str(ck)}))


def test_dfr_multiclass_uses_one_vs_rest():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    p = rng.integers(0, 2, 600)
    x = np.stack([y + 0.1 * rng.standard_normal(600), p + 0.1 * rng.standard_normal(600)], 1)
    coef, icpt, scaler, _ = fit_dfr(x, x, y, 2 * y + p, num_groups=6)
    w, b = as_linear_head(coef, icpt, scaler, 3)
    assert w.shape == (3, 2) and np.mean((x @ w.numpy().T + b.numpy()).argmax(1) == y) > 0.9
