"""Neural-collapse metrics NC1-NC4 and CDNV, overall and per subgroup, from streamed statistics.

Definitions follow Papyan, Han & Donoho (PNAS 2020) and the reference NC code lineage.
Shapes: features H (N, d); labels y (N,) in {0..C-1}; groups a (N,) in
{0..S-1}; classifier W (C, d), bias b (C,). Everything is reduced in float64.

The accumulator keeps, per (group, class): the count n, the shifted feature sum
s = Σ (h - r), and Σ ||h - r||²; per group the scatter T = Σ (h - r)(h - r)ᵀ. The shift r is the
first batch's mean, which limits cancellation. After one pass
    μ_c = r + s_c / n_c,      N·Σ_W = T - Σ_c s_c s_cᵀ / n_c   (shift-invariant identity).
NC4 needs class means before it can look at a sample, so it is counted during `update` against
reference means set with `set_reference` (by default the training split's means, §A.5).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._util import NAN, as_f64, as_long, to_float, undefined

_EPS = torch.finfo(torch.float64).eps


@dataclass
class _ClassStats:
    """Sufficient statistics of one population (all samples, or one subgroup)."""
    n: torch.Tensor        # (C,)
    sums: torch.Tensor     # (C, d) shifted
    sq: torch.Tensor       # (C,)   Σ ||h - r||²
    scatter: torch.Tensor  # (d, d) pooled, or (C, d, d) per class
    shift: torch.Tensor    # (d,)


class CollapseStats:
    """Streaming accumulator for NC metrics.

    `within="pooled"` (default) uses Σ_W = (1/N) Σ_c Σ_i (h_i - μ_c)(h_i - μ_c)ᵀ;
    `within="class_balanced"` uses (1/C) Σ_c (1/n_c) Σ_i (…)(…)ᵀ (C: the classes present) and keeps
    one d×d block per (group, class); `within="both"` keeps those blocks, reports the pooled NC1 as
    `nc1` / `nc1_tr_ratio` and the class-balanced one beside it as `nc1_cb` / `nc1_tr_ratio_cb`. `global_mean="class"` (default) is the mean of class means, `"sample"` the
    sample mean. `rank="tol"` inverts Σ_B on its numerical rank, `rank="C-1"` on its top C-1
    singular directions as the reference code does.
    """

    def __init__(self, num_classes: int, dim: int, num_groups: int = 1, device=None,
                 within: str = "pooled", global_mean: str = "class", rank: str = "tol"):
        if within not in ("pooled", "class_balanced", "both"):
            raise ValueError(f"within={within!r}: expected 'pooled', 'class_balanced' or 'both'")
        if global_mean not in ("class", "sample"):
            raise ValueError(f"global_mean={global_mean!r}: expected 'class' or 'sample'")
        if rank not in ("tol", "C-1"):
            raise ValueError(f"rank={rank!r}: expected 'tol' or 'C-1'")
        self.C, self.d, self.S = int(num_classes), int(dim), int(num_groups)
        self.within, self.global_mean, self.rank = within, global_mean, rank
        kw = dict(dtype=torch.float64, device=device)
        self.n = torch.zeros(self.S, self.C, **kw)
        self.sums = torch.zeros(self.S, self.C, self.d, **kw)
        self.sq = torch.zeros(self.S, self.C, **kw)
        shape = (self.S, self.d, self.d) if within == "pooled" else (self.S, self.C, self.d, self.d)
        self.scatter = torch.zeros(shape, **kw)
        self.shift = None
        self.nonfinite = torch.zeros((), **kw)
        # NC4 counters per group: [n counted, mismatches vs global means, NCC correct (global),
        # mismatches vs subgroup means, NCC correct (subgroup)]
        self.ncc = torch.zeros(self.S, 5, **kw)
        self.reference = None
        self.group_reference = None

    # ------------------------------------------------------------------ accumulation
    def set_reference(self, means, group_means=None) -> "CollapseStats":
        """Class means (C, d) — and optionally per-group means (S, C, d) — that NC4 compares to."""
        self.reference = as_f64(means).to(self.n.device).reshape(self.C, self.d)
        if group_means is not None:
            self.group_reference = as_f64(group_means).to(self.n.device).reshape(self.S, self.C, self.d)
        return self

    def update(self, features, labels, groups=None, logits=None) -> None:
        """Add a batch. features (B, d), labels (B,), groups (B,) or None, logits (B, C) or None.

        Rows with a non-finite feature are not added; their count is kept and every metric of
        the accumulator is then NaN (a diverged network has no meaningful geometry).
        No host synchronisation happens here, so it can run inside a CUDA evaluation loop.
        """
        h = as_f64(features).reshape(len(features), -1).to(self.n.device)
        y = as_long(labels).to(h.device)
        g = torch.zeros_like(y) if groups is None else as_long(groups).to(h.device)
        finite = torch.isfinite(h).all(dim=1)
        self.nonfinite += (~finite).sum()
        h = torch.where(finite[:, None], h, torch.zeros((), dtype=h.dtype, device=h.device))
        w = finite.to(torch.float64)
        if self.shift is None:
            self.shift = h.sum(0) / w.sum().clamp(min=1.0)
        hc = (h - self.shift) * w[:, None]
        idx = g * self.C + y
        self.n.view(-1).index_add_(0, idx, w)
        self.sums.view(-1, self.d).index_add_(0, idx, hc)
        self.sq.view(-1).index_add_(0, idx, (hc * hc).sum(1))
        if self.within == "pooled":
            for s in range(self.S):
                self.scatter[s] += (hc * (g == s).to(hc.dtype)[:, None]).T @ hc
        else:
            for s in range(self.S):
                for c in range(self.C):
                    m = ((g == s) & (y == c)).to(hc.dtype)[:, None]
                    self.scatter[s, c] += (hc * m).T @ hc
        if logits is not None and self.reference is not None:
            self._count_ncc(h, y, g, w, as_f64(logits).to(h.device))

    def add_ncc(self, features, labels, groups=None, logits=None) -> None:
        """Count NC4 for a batch without adding it to the statistics (the second pass over a
        split whose own means are the reference)."""
        if self.reference is None:
            raise ValueError("add_ncc needs reference means: call set_reference first")
        h = as_f64(features).reshape(len(features), -1).to(self.n.device)
        y = as_long(labels).to(h.device)
        g = torch.zeros_like(y) if groups is None else as_long(groups).to(h.device)
        w = torch.isfinite(h).all(dim=1).to(torch.float64)
        self._count_ncc(torch.nan_to_num(h), y, g, w, as_f64(logits).to(h.device))

    def _count_ncc(self, h, y, g, w, logits) -> None:
        pred = logits.argmax(dim=1)
        near = torch.cdist(h, self.reference).argmin(dim=1)
        cols = [w, w * (pred != near), w * (near == y)]
        if self.group_reference is not None:
            d_sub = ((h[:, None, :] - self.group_reference[g]) ** 2).sum(-1)
            near_sub = torch.nan_to_num(d_sub, nan=math.inf).argmin(dim=1)
            cols += [w * (pred != near_sub), w * (near_sub == y)]
        else:
            cols += [torch.full_like(w, NAN), torch.full_like(w, NAN)]
        self.ncc.index_add_(0, g, torch.stack(cols, dim=1).to(torch.float64))

    def merge(self, other: "CollapseStats") -> "CollapseStats":
        """Add another accumulator's statistics (exact; e.g. from another device or worker)."""
        if (other.C, other.d, other.S, other.within) != (self.C, self.d, self.S, self.within):
            raise ValueError("merge: accumulators differ in num_classes, dim, num_groups or within")
        if other.shift is None:
            return self
        if self.shift is None:
            self.shift = other.shift.clone()
        delta = (other.shift - self.shift).to(self.n.device)  # h - r_self = (h - r_other) + delta
        n, s = other.n.to(self.n.device), other.sums.to(self.n.device)
        self.sq += other.sq.to(self.n.device) + 2 * s @ delta + n * (delta @ delta)
        sd = s[..., :, None] * delta  # (S, C, d, d): s δᵀ
        nd = n[..., None, None] * torch.outer(delta, delta)
        extra = sd + sd.transpose(-1, -2) + nd
        self.scatter += other.scatter.to(self.n.device) + (extra.sum(1) if self.within == "pooled" else extra)
        self.n += n
        self.sums += s + n[..., None] * delta
        self.nonfinite += other.nonfinite.to(self.n.device)
        self.ncc += other.ncc.to(self.n.device)
        return self

    # ------------------------------------------------------------------ reduction
    def _population(self, groups) -> _ClassStats:
        return _ClassStats(self.n[groups].sum(0), self.sums[groups].sum(0), self.sq[groups].sum(0),
                           self.scatter[groups].sum(0), self.shift)

    def class_means(self, group: int | None = None) -> torch.Tensor:
        """(C, d) class means (NaN rows for absent classes) of all samples or of one group."""
        pop = self._population(slice(None) if group is None else [group])
        return pop.shift + pop.sums / pop.n[:, None]

    def group_class_means(self) -> torch.Tensor:
        """(S, C, d) per-(group, class) means; NaN where a cell is empty."""
        return self.shift + self.sums / self.n[..., None]

    def metrics(self, weight=None, bias=None) -> dict:
        """NC metrics over all groups. See `nc_metrics` for the keys."""
        out = self._metrics(self._population(slice(None)), weight, bias)
        out.update(self._ncc_metrics(slice(None), subgroup=False))
        return out

    def metrics_by_group(self, weight=None, bias=None) -> dict[int, dict]:
        """NC metrics of each subgroup s on its own (means μ_c^s, μ_G^s, Σ_W^s, Σ_B^s).

        NC3 compares the shared classifier W with the subgroup's centred means. When group means
        were given to `set_reference`, NC4 (`nc4_mismatch`, `ncc_acc`) uses the subgroup's own
        class means and `nc4_mismatch_global` / `ncc_acc_global` the global ones (§A.7);
        otherwise `nc4_mismatch` uses the global reference means.
        """
        out = {}
        for s in range(self.S):
            m = self._metrics(self._population([s]), weight, bias)
            m.update(self._ncc_metrics([s], subgroup=True))
            out[s] = m
        return out

    def _ncc_metrics(self, groups, subgroup: bool) -> dict:
        if self.reference is None:
            return {}
        cnt = self.ncc[groups].sum(0)
        if cnt[0] == 0:
            return {"nc4_mismatch": undefined("no samples counted for NC4"), "ncc_acc": NAN}
        glob = {"nc4_mismatch": to_float(cnt[1] / cnt[0]), "ncc_acc": to_float(cnt[2] / cnt[0])}
        if not (subgroup and self.group_reference is not None):
            return glob
        return {"nc4_mismatch": to_float(cnt[3] / cnt[0]), "ncc_acc": to_float(cnt[4] / cnt[0]),
                "nc4_mismatch_global": glob["nc4_mismatch"], "ncc_acc_global": glob["ncc_acc"]}

    def _metrics(self, pop: _ClassStats, weight, bias) -> dict:
        present = pop.n > 0
        Cp = int(present.sum())
        keys = ["nc1", "nc1_tr_ratio"] + (["nc1_cb", "nc1_tr_ratio_cb"] if self.within == "both" else [])
        keys += ["nc2_norm_cv", "nc2_cos_std", "nc2_max_angle", "nc2_etf", "cdnv"]
        if weight is not None:
            keys += ["nc2_wnorm_cv", "nc2_wmax_angle", "nc3", "nc3_etf"]
        out = {"n": int(pop.n.sum()), "classes_present": Cp, "nc2_trivial": Cp == 2}
        if self.nonfinite > 0:
            undefined(f"{int(self.nonfinite)} samples had non-finite features")
            return out | dict.fromkeys(keys, NAN)
        if Cp < 2:
            undefined(f"{Cp} class(es) present, NC needs at least 2")
            return out | dict.fromkeys(keys, NAN)
        n, sums, sq = pop.n[present], pop.sums[present], pop.sq[present]
        N = n.sum()
        mu = sums / n[:, None]                                   # shifted class means (Cp, d)
        if self.within == "pooled":
            sw = (pop.scatter - (sums.T / n) @ sums) / N
        else:
            per = pop.scatter[present] - sums[:, :, None] * sums[:, None, :] / n[:, None, None]   # n_c Σ_c
            sw_cb = (per / n[:, None, None]).mean(0)
            sw = per.sum(0) / N if self.within == "both" else sw_cb
        mu_g = mu.mean(0) if self.global_mean == "class" else sums.sum(0) / N
        mt = (mu - mu_g).T                                       # centred means M̃ (d, Cp)
        out["nc1"], out["nc1_tr_ratio"] = _nc1(sw, mt, self.rank)
        if self.within == "both":
            out["nc1_cb"], out["nc1_tr_ratio_cb"] = _nc1(sw_cb, mt, self.rank)
        out.update(_nc2(mt.T, prefix="nc2_"))
        var = (sq - (sums * sums).sum(1) / n) / n                # Var_c = mean ||h - μ_c||²
        out["cdnv"] = _cdnv(var, mu)
        if weight is not None:
            w = _as_softmax_head(as_f64(weight).to(mt.device), None, pop.n.numel())[0][present]
            wm = _nc2(w, prefix="nc2_w")
            out.update(nc2_wnorm_cv=wm["nc2_wnorm_cv"], nc2_wmax_angle=wm["nc2_wmax_angle"])
            out["nc3"], out["nc3_etf"] = _nc3(w, mt)
        return out


# ---------------------------------------------------------------------- formulas
def _nc1(sw: torch.Tensor, mt: torch.Tensor, rank: str) -> tuple[float, float]:
    """NC1 = (1/C) tr(Σ_W Σ_B⁺) = tr(U_rᵀ Σ_W U_r S_r⁻²) with M̃ = U S Vᵀ."""
    d, C = mt.shape
    U, s, _ = torch.linalg.svd(mt, full_matrices=False)
    tr_b = (s * s).sum() / C
    tr_ratio = to_float(torch.trace(sw) / tr_b) if tr_b > 0 else undefined("all class means coincide")
    if s[0] <= 0:
        return undefined("between-class scatter is zero"), tr_ratio
    keep = s > max(d, C) * _EPS * s[0] if rank == "tol" else torch.arange(len(s), device=s.device) < C - 1
    Ur, sr = U[:, keep], s[keep]
    return to_float(((Ur.T @ sw @ Ur).diagonal() / sr**2).sum()), tr_ratio


def _offdiag(m: torch.Tensor) -> torch.Tensor:
    return m[~torch.eye(len(m), dtype=torch.bool, device=m.device)]


def _nc2(v: torch.Tensor, prefix: str) -> dict:
    """Equinorm / equiangularity / ETF distance of the rows of v (C, d)."""
    C = v.shape[0]
    norms = v.norm(dim=1)
    cv = to_float(norms.std() / norms.mean()) if norms.mean() > 0 else undefined("zero norms")
    if (norms == 0).any():
        undefined("a centred class mean (or classifier row) has zero norm: cosines undefined")
        cos_std = max_angle = NAN
    else:
        u = v / norms[:, None]
        cos = _offdiag(u @ u.T)
        cos_std = to_float(cos.std())
        max_angle = to_float((cos + 1.0 / (C - 1)).abs().mean())
    return {f"{prefix}norm_cv": cv, f"{prefix}cos_std": cos_std, f"{prefix}max_angle": max_angle,
            f"{prefix}etf": _etf_distance(v @ v.T)}


def _etf_distance(g: torch.Tensor) -> float:
    """|| G/||G||_F - (I - 11ᵀ/C)/sqrt(C-1) ||_F for a (C, C) Gram-like matrix G."""
    C = g.shape[0]
    gn = g.norm()
    if gn == 0:
        return undefined("zero Gram matrix")
    ideal = (torch.eye(C, dtype=g.dtype, device=g.device) - 1.0 / C) / math.sqrt(C - 1)
    return to_float((g / gn - ideal).norm())


def _nc3(w: torch.Tensor, mt: torch.Tensor) -> tuple[float, float]:
    """nc3 = ||Wᵀ/||W||_F - M̃/||M̃||_F||_F²; nc3_etf = ETF distance of W M̃."""
    wn, mn = w.norm(), mt.norm()
    if wn == 0 or mn == 0:
        return undefined("zero classifier or zero centred means"), NAN
    nc3 = to_float(((w.T / wn - mt / mn) ** 2).sum())
    return nc3, _etf_distance(w @ mt)


def _cdnv(var: torch.Tensor, mu: torch.Tensor) -> float:
    """Mean over ordered pairs c≠c' of (Var_c + Var_c') / (2 ||μ_c - μ_c'||²); coincident → inf."""
    dist2 = torch.cdist(mu, mu) ** 2
    pair = (var[:, None] + var[None, :]) / (2 * dist2)
    pair = torch.where(dist2 > 0, pair, torch.full_like(pair, math.inf))
    return to_float(_offdiag(pair).mean())


def _as_softmax_head(weight: torch.Tensor, bias, num_classes: int):
    """A single-logit head w (1, d) for 2 classes is the softmax head [-w/2; +w/2] (§A.4)."""
    if weight.shape[0] == 1 and num_classes == 2:
        weight = torch.cat([-weight / 2, weight / 2])
        if bias is not None:
            bias = torch.cat([-bias / 2, bias / 2])
    return weight, bias


# ---------------------------------------------------------------------- one-shot API
def _accumulate(features, labels, groups=None, num_classes=None, num_groups=None, **opts) -> CollapseStats:
    h = as_f64(features)
    y = as_long(labels)
    C = int(num_classes if num_classes is not None else int(y.max()) + 1)
    S = 1 if groups is None else int(num_groups if num_groups is not None else int(as_long(groups).max()) + 1)
    stats = CollapseStats(C, h.reshape(len(h), -1).shape[1], S, device=h.device, **opts)
    stats.update(h, y, groups)
    return stats


def _with_ncc(stats: CollapseStats, features, labels, groups, weight, bias, means) -> CollapseStats:
    """Second pass for NC4: NCC against `means` (default: this data's own class means)."""
    if weight is None:
        return stats
    w, b = _as_softmax_head(as_f64(weight), None if bias is None else as_f64(bias), stats.C)
    h = as_f64(features).to(stats.n.device)
    logits = h @ w.to(h.device).T + (0 if b is None else b.to(h.device))
    stats.set_reference(stats.class_means() if means is None else means,
                        stats.group_class_means() if stats.S > 1 else None)
    stats.add_ncc(h, labels, groups, logits)
    return stats


def nc_metrics(features, labels, weight=None, bias=None, *, means=None, num_classes=None, **opts) -> dict:
    """All NC metrics of features (N, d) with labels (N,); see the definitions in docs/metrics.md

    Keys: nc1, nc1_tr_ratio, nc2_norm_cv, nc2_cos_std, nc2_max_angle, nc2_etf, nc2_trivial, cdnv,
    n, classes_present; with `weight` (C, d) also nc2_wnorm_cv, nc2_wmax_angle, nc3, nc3_etf,
    nc4_mismatch (argmax(W h + b) ≠ nearest class mean) and ncc_acc (nearest mean = label).
    NC4 uses `means` (C, d) when given, else the class means of these features.
    """
    stats = _accumulate(features, labels, num_classes=num_classes, **opts)
    return _with_ncc(stats, features, labels, None, weight, bias, means).metrics(weight, bias)


def nc_metrics_by_group(features, labels, groups, weight=None, bias=None, *, num_classes=None,
                        num_groups=None, **opts) -> dict[int, dict]:
    """NC metrics of each subgroup on its own; keys as `nc_metrics`. NC4 uses
    the subgroup's own class means; nc4_mismatch_global / ncc_acc_global the overall ones."""
    stats = _accumulate(features, labels, groups, num_classes, num_groups, **opts)
    return _with_ncc(stats, features, labels, groups, weight, bias, None).metrics_by_group(weight, bias)


def alignment_from_stats(stats: CollapseStats) -> dict:
    """Alignment of each subgroup's class means with the overall ones.

    align_cos[s][c] = cos(μ_c^s - μ_G, μ_c - μ_G); align_dist[s] = ||M̃^s/||M̃^s|| - M̃/||M̃|| ||_F²
    (M̃^s centred on the subgroup's own mean of means); axis_cos[s] = cos(μ_1^s - μ_0^s, μ_1 - μ_0)
    and axis_ratio[s] = ||μ_1^s - μ_0^s|| / ||μ_1 - μ_0|| (C = 2 only); subgroup_offset[s] =
    ||μ_G^s - μ_G|| / mean_c ||μ_c - μ_G||. Absent classes are dropped; undefined values are NaN.
    """
    mu = stats.class_means()
    present = stats.n.sum(0) > 0
    mu_g = mu[present].mean(0)
    mt = mu - mu_g
    out = {k: {} for k in ("align_cos", "align_dist", "axis_cos", "axis_ratio", "subgroup_offset")}
    for s in range(stats.S):
        mus = stats.class_means(s)
        ok = stats.n[s] > 0
        out["align_cos"][s] = {c: _cos(mus[c] - mu_g, mt[c]) for c in range(stats.C) if ok[c]}
        if int(ok.sum()) < 2:
            out["align_dist"][s] = out["subgroup_offset"][s] = undefined(f"group {s} has <2 classes")
        else:
            mts = mus[ok] - mus[ok].mean(0)
            out["align_dist"][s] = to_float(((mts / mts.norm() - mt[ok] / mt[ok].norm()) ** 2).sum())
            out["subgroup_offset"][s] = to_float((mus[ok].mean(0) - mu_g).norm() / mt[present].norm(dim=1).mean())
        if stats.C == 2 and bool(ok.all()):
            ax_s, ax = mus[1] - mus[0], mu[1] - mu[0]
            out["axis_cos"][s] = _cos(ax_s, ax)
            out["axis_ratio"][s] = to_float(ax_s.norm() / ax.norm())
        else:
            out["axis_cos"][s] = out["axis_ratio"][s] = NAN
    return out


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    den = a.norm() * b.norm()
    return to_float(a @ b / den) if den > 0 else undefined("zero vector in cosine")


def subgroup_alignment(features, labels, groups, *, num_classes=None, num_groups=None) -> dict:
    """One-shot form of `alignment_from_stats` for features (N, d), labels (N,), groups (N,)."""
    return alignment_from_stats(_accumulate(features, labels, groups, num_classes, num_groups))


def ncc_mismatch(features, logits, means) -> float:
    """NC4 against given class means: (1/N) Σ 1[argmax logits_i ≠ argmin_c ||h_i - μ_c||]."""
    h, m, z = as_f64(features), as_f64(means), as_f64(logits)
    if len(h) == 0:
        return undefined("no samples")
    return to_float((z.argmax(1) != torch.cdist(h, m.to(h.device)).argmin(1)).double().mean())
