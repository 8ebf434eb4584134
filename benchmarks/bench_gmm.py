"""The GMM at scale: fit time of the per-epoch split for 10^4 .. 10^7 losses, and the size of
the all-gathered loss vector. Input: a realistic two-mode loss vector (70 % clean)."""

from __future__ import annotations

import argparse
import time

import numpy as np

from sssl_dist.method import fit_loss_gmm, split_clean_noisy


def losses(n: int, rng: np.random.Generator) -> np.ndarray:
    clean = rng.gamma(2.0, 0.15, int(0.7 * n))
    noisy = 1.2 + rng.gamma(3.0, 0.5, n - clean.size)
    return np.concatenate([clean, noisy]).astype(np.float32)


def main(max_exp: int = 7) -> dict[int, dict[str, float]]:
    rng = np.random.default_rng(0)
    out = {}
    print("GMM split on n losses (2 components, EM max_iter 10, one CPU core)")
    for e in range(4, max_exp + 1):
        n = 10**e
        x = losses(n, rng)
        labels = rng.integers(0, 4, n)
        t = time.perf_counter()
        fit_loss_gmm(x)
        t_global = time.perf_counter() - t
        t = time.perf_counter()
        split_clean_noisy(x, labels, num_classes=4, tau=0.5, mode="per_class")
        t_class = time.perf_counter() - t
        # What the all-gather moves: (position float64 + loss float64) per segment, as sent.
        out[n] = {"global_s": t_global, "per_class_s": t_class, "gather_mb": n * 16 / 1e6}
        print(
            f"  n = 1e{e}: global fit {t_global:7.3f} s, per-class (4 GMMs) {t_class:7.3f} s, "
            f"gathered vector {n * 16 / 1e6:8.1f} MB"
        )
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--max-exp", type=int, default=7)
    main(p.parse_args().max_exp)
