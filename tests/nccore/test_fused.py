"""Fused training (nccore.fused): k configurations trained as one stacked model give the rows
each gives alone (within 1e-5, float32 and float64, deterministic kernels); BatchNorm under vmap
is each member's native BatchNorm; SGD on stacked tensors is
torch.optim.SGD; a diverged member leaves its siblings running; resume per member; eval_every."""
import dataclasses
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, vmap

from nccore.data.base import Split

from nccore.fused import iter_fused_epochs, run_fused, sgd_step, why_not_fusable
from nccore.fused_bn import use_stacked_batch_norm
from nccore.trial import run_trial

TIMING = {"train_time", "eval_time", "images_per_s"}
TOL = 1e-5
TINY = {"width": 0.125, "epochs": 2, "batch_size": 32, "schedule": "cosine", "augment": True,
        "metrics": ["nc", "fairness"], "metrics_train_samples": 64,
        "data": {"n_train": 64, "n_val": 64, "n_test": 64, "image_size": 16}}
# members differ in every fused axis: lr, weight decay, momentum, seed, bias level
MEMBERS = [{"lr": 0.05, "weight_decay": 5e-4, "seed": 0, "bias_level": 0.8},
           {"lr": 0.02, "weight_decay": 0.0, "seed": 1, "bias_level": 0.8, "momentum": 0.5},
           {"lr": 0.03, "weight_decay": 1e-3, "seed": 0, "bias_level": 0.5}]

def _gap(a: list[dict], b: list[dict]) -> float:
    """Largest |a − b| / max(1, |b|) over the rows' numbers; every other value must be equal."""
    assert len(a) == len(b)
    worst = 0.0
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra.keys() - TIMING:
            va, vb = ra[k], rb[k]
            if isinstance(va, float) and isinstance(vb, float):
                if math.isnan(va) or math.isnan(vb):
                    assert math.isnan(va) and math.isnan(vb), k
                    continue
                worst = max(worst, abs(va - vb) / max(1.0, abs(vb)))
            else:
                assert va == vb, (k, va, vb)
    return worst


@pytest.fixture
def deterministic():
    """PyTorch's native CPU kernels (oneDNN off: it picks different algorithms for a grouped and a
    plain convolution) and deterministic algorithms."""
    with torch.backends.mkldnn.flags(enabled=False):
        torch.use_deterministic_algorithms(True)
        yield
        torch.use_deterministic_algorithms(False)


@pytest.fixture
def float64(monkeypatch, deterministic):
    """Models and images in float64: the same claim in the other precision (a fused step is the
    plain step in float64 too, and float64 leaves no room for 1e-8 differences to grow)."""
    to = Split.to
    monkeypatch.setattr(Split, "to", lambda self, d: dataclasses.replace(to(self, d), x=to(self, d).x.double()))
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


ARCHS = ["vgg11", pytest.param("resnet18", marks=pytest.mark.slow),
         pytest.param("densenet121", marks=pytest.mark.slow)]


def _fused_vs_separate(arch: str) -> None:
    """Every number of every row (losses, accuracies, NC, fairness) within 1e-5, both epochs."""
    cfgs = [{**TINY, "arch": arch, **m} for m in MEMBERS]
    fused = run_fused(cfgs)
    for cfg, rows in zip(cfgs, fused):
        alone = list(run_trial(cfg))
        assert {r["epoch"] for r in rows} == {0, 1}
        assert _gap(rows, alone) <= TOL


@pytest.mark.parametrize("arch", ARCHS)
def test_fused_equals_separate_trials(arch, deterministic):
    """float32. Measured: only `train_loss` differs, by one float32 rounding (≤ 6e-8: the k
    batch losses are averaged by another reduction); without `nccore.fused_bn` ResNet-18 and
    DenseNet-121 ended 2e-4 and 2e-3 apart."""
    _fused_vs_separate(arch)


@pytest.mark.slow
def test_fused_equals_separate_trials_on_8px_images(deterministic):
    """DenseNet-121 on 8×8 images runs its last block on 1×1 maps (fused_bn's per-member path)."""
    cfgs = [{**TINY, "arch": "densenet121", "data": {**TINY["data"], "image_size": 8}, **m} for m in MEMBERS]
    for cfg, rows in zip(cfgs, run_fused(cfgs)):
        assert _gap(rows, list(run_trial(cfg))) == 0.0


@pytest.mark.parametrize("arch", ARCHS)
def test_fused_equals_separate_trials_float64(arch, float64):
    _fused_vs_separate(arch)


@pytest.mark.parametrize("hw", [6, 1])
@pytest.mark.parametrize("member_dim", [0, 1])
@pytest.mark.parametrize("training", [True, False])
def test_stacked_batch_norm_is_each_members_native_batch_norm(training, member_dim, hw, deterministic):
    """Output, input/weight/bias gradients and running statistics of k members' BatchNorm under
    vmap are bitwise those of k separate `nn.BatchNorm2d`s (member dim 1: the layout a vmapped
    convolution returns; 1×1 maps: where the CPU kernel vectorises across channels)."""
    torch.manual_seed(0)
    k, C = 3, 5
    x = torch.randn(8, k, C, hw, hw).movedim(1, member_dim)          # members along member_dim
    gy = torch.randn(k, 8, C, hw, hw)
    params = {"weight": 1 + 0.3 * torch.randn(k, C), "bias": 0.2 * torch.randn(k, C)}
    stats = {"running_mean": 0.1 * torch.randn(k, C), "running_var": 1 + torch.rand(k, C),
             "num_batches_tracked": torch.tensor([0, 3, 7])}
    want = []
    for i in range(k):   # the separate models
        bn = nn.BatchNorm2d(C).train(training)
        with torch.no_grad():
            for n, t in {**params, **stats}.items():
                getattr(bn, n).copy_(t[i])
        xi = x.select(member_dim, i).clone().requires_grad_()
        y = bn(xi)
        y.backward(gy[i])
        want.append([y, xi.grad, bn.weight.grad, bn.bias.grad, *(bn.get_buffer(n) for n in stats)])
    want = [torch.stack(t) for t in zip(*want)]

    base = use_stacked_batch_norm(nn.BatchNorm2d(C).to("meta").train(training))
    p = {n: t.clone().requires_grad_() for n, t in params.items()}
    xs = x.clone().requires_grad_()
    y = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)), in_dims=(0, 0, member_dim))(p, stats, xs)
    y.backward(gy)
    got = [y, xs.grad.movedim(member_dim, 0), p["weight"].grad, p["bias"].grad, *stats.values()]
    names = ["output", "input grad", "weight grad", "bias grad", *stats]
    for name, g, w in zip(names, got, want):
        assert torch.equal(g, w), (name, (g - w).abs().max())
    assert stats["num_batches_tracked"].tolist() == ([1, 4, 8] if training else [0, 3, 7])


def test_stacked_sgd_is_torch_sgd():
    torch.manual_seed(0)
    lr, wd, mu = [0.1, 0.02, 0.5], [0.0, 5e-4, 1e-2], [0.9, 0.0, 0.5]
    ref = [torch.randn(3, 4, requires_grad=True) for _ in lr]
    opts = [torch.optim.SGD([p], lr=a, weight_decay=b, momentum=c) for p, a, b, c in zip(ref, lr, wd, mu)]
    stacked = {"w": torch.stack([p.detach().clone() for p in ref]).requires_grad_()}
    moms = {"w": torch.zeros(3, 3, 4)}
    for _ in range(4):
        g = torch.randn(3, 3, 4)
        for i, (p, o) in enumerate(zip(ref, opts)):
            p.grad = g[i].clone()
            o.step()
        stacked["w"].grad = g.clone()
        sgd_step(stacked, moms, torch.tensor(lr), torch.tensor(wd), torch.tensor(mu))
    for i, p in enumerate(ref):
        assert torch.allclose(stacked["w"][i], p, rtol=0, atol=1e-7)


@pytest.mark.slow
def test_a_diverged_member_does_not_stop_its_siblings(deterministic):
    cfgs = [{**TINY, "arch": "vgg11", "epochs": 3, "lr": 1e12, "metrics": ["fairness"]},
            {**TINY, "arch": "vgg11", "epochs": 3, "lr": 0.05, "metrics": ["fairness"]}]
    bad, good = run_fused(cfgs)
    assert bad[-1]["status"] == "diverged" and not math.isfinite(bad[-1]["train_loss"])
    assert bad[-1]["epoch"] < 2
    assert {r["epoch"] for r in good} == {0, 1, 2} and all(r["status"] == "ok" for r in good)
    assert _gap(good, list(run_trial(cfgs[1]))) <= TOL   # nothing of the NaN reached it


@pytest.mark.slow
def test_resume_per_member_gives_the_uninterrupted_rows(tmp_path, deterministic):
    cfgs = [{**TINY, "arch": "vgg11", "epochs": 3, "metrics": ["fairness"], **m} for m in MEMBERS[:2]]
    full = run_fused(cfgs)
    ck = [{**c, "checkpoint_dir": str(tmp_path / f"m{i}")} for i, c in enumerate(cfgs)]
    first: list[list[dict]] = [[], []]
    for i, epoch, rows in iter_fused_epochs(ck):
        first[i] += rows
        if (i, epoch) == (0, 1):
            break   # the process dies: member 0 has checkpointed epoch 1, member 1 only epoch 0
    rest = run_fused(ck)   # member 1 trains epoch 1 alone, then both train epoch 2 together
    assert {r["epoch"] for r in rest[0]} == {2} and {r["epoch"] for r in rest[1]} == {1, 2}
    for i in range(2):
        assert _gap(first[i] + rest[i], full[i]) <= TOL


def test_eval_every_writes_metrics_every_k_epochs_and_at_the_last():
    rows = list(run_trial({**TINY, "arch": "vgg11", "epochs": 3, "eval_every": 2, "metrics": ["fairness"]}))
    by_epoch = {e: [r for r in rows if r["epoch"] == e] for e in (0, 1, 2)}
    assert [len(by_epoch[e]) > 1 for e in (0, 1, 2)] == [False, True, True]
    only = by_epoch[0][0]
    assert (only["split"], only["group"]) == ("train", "all") and math.isfinite(only["train_loss"])
    fused = run_fused([{**TINY, "arch": "vgg11", "epochs": 3, "eval_every": 2, "metrics": ["fairness"]}])[0]
    assert [(r["epoch"], r["split"], r["group"]) for r in fused] == [(r["epoch"], r["split"], r["group"]) for r in rows]


def test_only_erm_with_sgd_fuses():
    assert why_not_fusable({"method": "erm"}) is None
    assert "sgd" in why_not_fusable({"method": "erm", "optimizer": "adam"}).lower()
    assert "dfr" in why_not_fusable({"method": "dfr"})
    with pytest.raises(ValueError, match="differ"):
        run_fused([{**TINY, "arch": "vgg11"}, {**TINY, "arch": "vgg11", "width": 0.25}])
