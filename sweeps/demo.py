"""`make demo`: collapse and fairness metrics of a small generated feature set."""
import torch

from nccore.metrics import fairness_summary, nc_metrics, nc_metrics_by_group


def main() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (2000,), generator=g)
    a = torch.randint(0, 2, (2000,), generator=g)
    means = 3 * torch.randn(4, 16, generator=g)
    h = means[y] + torch.randn(2000, 16, generator=g) * (1 + a[:, None])
    w = means.clone()
    print("overall:", {k: round(v, 4) for k, v in nc_metrics(h, y, weight=w).items() if isinstance(v, float)})
    for s, m in nc_metrics_by_group(h, y, a, weight=w).items():
        print(f"group {s}: nc1={m['nc1']:.4f} nc4={m['nc4_mismatch']:.4f}")
    print("fairness:", fairness_summary(y, (h @ w.T).argmax(1), a))


if __name__ == "__main__":
    main()
