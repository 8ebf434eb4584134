"""Backbones: parameters, forward FLOPs per 1 s segment, CPU training segments/s.

FLOPs are counted by torch's FlopCounterMode (one multiply-add = 2 FLOPs) on a [1, 1, 128, 43]
input (1 s at 22.05 kHz, hop 512). Training throughput is forward + backward + Adam step on
3 s segments, on every core torch is given here.

    python benchmarks/bench_models.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from sssl_dist.config import FeatureConfig
from sssl_dist.method.models import build_model, count_parameters


def flops_per_segment(backbone: str, seconds: int = 1) -> int:
    fc = FeatureConfig()
    model = build_model(backbone, 4, 0.5).eval()
    x = torch.randn(1, 1, fc.n_mels, round(seconds * fc.frames_per_second))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return int(counter.get_total_flops())


def train_rate(backbone: str, batch: int, budget_s: float) -> float:
    fc = FeatureConfig()
    model = build_model(backbone, 4, 0.5).train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randn(batch, 1, fc.n_mels, round(3 * fc.frames_per_second))
    y = torch.randint(0, 4, (batch,))

    def step() -> None:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step()  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < budget_s:
        step()
        n += batch
    return n / (time.perf_counter() - t0)


def main(seconds: float = 20.0) -> dict[str, dict[str, float]]:
    torch.set_num_threads(os.cpu_count() or 1)  # every core this machine has
    out = {}
    print(f"backbones (torch threads: {torch.get_num_threads()})")
    for backbone, batch in (("small_cnn", 64), ("vgg16", 4)):
        out[backbone] = {
            "params": count_parameters(build_model(backbone, 4, 0.5)),
            "gflops_per_1s_segment": flops_per_segment(backbone) / 1e9,
            "train_segments_per_s": train_rate(backbone, batch, seconds),
        }
        o = out[backbone]
        print(
            f"  {backbone:9s}: {o['params'] / 1e6:8.3f} M params, "
            f"{o['gflops_per_1s_segment']:7.3f} GFLOP fwd per 1 s segment, "
            f"{o['train_segments_per_s']:8.1f} training segments/s (3 s segments, CPU)"
        )
    ratio = out["small_cnn"]["train_segments_per_s"] / out["vgg16"]["train_segments_per_s"]
    print(f"  small_cnn trains {ratio:.0f}x faster than vgg16 here")
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=20.0, help="timing budget per backbone")
    main(p.parse_args().seconds)
