"""The GMM step at scale.

1. Fit time of the per-epoch split for 10^4 .. 10^7 losses: the full fit (every loss through
   EM) against the capped fit (`gmm_max_fit`, 2 * 10^5 by default: EM on a class-stratified
   strided subsample, posteriors for all).
2. The whole distributed step at 10^7 losses on 2 gloo processes, as the training loop runs
   it: gather every rank's block to rank 0 (float16, no positions), fit the per-class split on
   rank 0, broadcast the ok status and the clean mask (1 byte a segment). Measured against
   what the loop did before: an all-gather of (float64 position, float64 loss) to every rank
   and a full fit.

3. What the driver-side split service (`gmm_site: driver`, split_service.py) adds to the step:
   the same fit, with its metrics, in this process against through the service actor (losses
   in, mask and metrics back through Ray's object store).

Input: a realistic two-mode loss vector (70 % clean), 4 classes.

    python benchmarks/bench_gmm.py              # all parts, ~3 min on 2 cores
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import timedelta

import numpy as np

from sssl_dist.config import SSSLConfig
from sssl_dist.method.equations import split_clean_noisy

CAP = SSSLConfig().gmm_max_fit


def losses(n: int, rng: np.random.Generator) -> np.ndarray:
    clean = rng.gamma(2.0, 0.15, int(0.7 * n))
    noisy = 1.2 + rng.gamma(3.0, 0.5, n - clean.size)
    return rng.permutation(np.concatenate([clean, noisy])).astype(np.float32)


def fit_times(max_exp: int) -> dict[int, dict[str, float]]:
    rng = np.random.default_rng(0)
    out = {}
    print(
        f"1. per-class GMM split (4 classes) on n losses, one core: full fit / capped at {CAP:.0e}"
    )
    for e in range(4, max_exp + 1):
        n = 10**e
        x, labels = losses(n, rng), rng.integers(0, 4, n)
        t = time.perf_counter()
        full = split_clean_noisy(x, labels, num_classes=4, tau=0.5)
        t_full = time.perf_counter() - t
        t = time.perf_counter()
        capped = split_clean_noisy(x, labels, num_classes=4, tau=0.5, max_fit=CAP)
        t_cap = time.perf_counter() - t
        differ = float((full.clean_mask != capped.clean_mask).mean())
        out[n] = {"full_s": t_full, "capped_s": t_cap, "mask_differs": differ}
        print(
            f"  n = 1e{e}: full {t_full:7.3f} s, capped {t_cap:7.3f} s "
            f"({t_full / t_cap:5.1f}x); masks differ on {differ:.4%} of segments"
        )
    return out


def _rank(rank: int, world: int, init: str, n: int, queue) -> None:
    import torch
    import torch.distributed as dist

    from sssl_dist.data.segments import rank_block
    from sssl_dist.rank.collectives import broadcast_clean_w, broadcast_status, gather_losses

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=init, rank=rank, world_size=world, timeout=timedelta(seconds=300)
    )
    rng = np.random.default_rng(0)
    x, labels = losses(n, rng), rng.integers(0, 4, n)
    lo, hi = rank_block(n, rank, world)
    mine = torch.from_numpy(x[lo:hi])
    times = {}
    for name in ("new", "old"):
        dist.barrier()
        t0 = time.perf_counter()
        if name == "new":
            full, _ = gather_losses(mine)
        else:  # the first loop: (position, loss) as float64 pairs to every rank
            packed = torch.stack([torch.arange(lo, hi, dtype=torch.float64), mine.double()], 1)
            parts = [torch.zeros_like(packed) for _ in range(world)]
            dist.all_gather(parts, packed)  # equal blocks here: n is even
            full = torch.cat(parts)[:, 1].float().numpy()
        t_gather = time.perf_counter() - t0
        clean_w = None
        if rank == 0:
            cap = CAP if name == "new" else None
            split = split_clean_noisy(full, labels, num_classes=4, tau=0.5, max_fit=cap)
            clean_w = split.clean_w
        t_fit = time.perf_counter() - t0 - t_gather
        broadcast_status(None)
        if name == "new":
            broadcast_clean_w(clean_w, n)
        else:  # before: the float32 clean probabilities
            buf = torch.zeros(n)
            dist.broadcast(buf, src=0)
        total = time.perf_counter() - t0
        times[name] = {"gather": t_gather, "fit": t_fit, "broadcast": total - t_gather - t_fit}
        times[name]["total"] = total
    if rank == 0:
        queue.put(times)
    dist.destroy_process_group()


def distributed_step(n: int) -> dict[str, dict[str, float]]:
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    init = f"file://{tempfile.mkdtemp()}/rendezvous"
    procs = [ctx.Process(target=_rank, args=(r, 2, init, n, queue)) for r in range(2)]
    for p in procs:
        p.start()
    times = queue.get(timeout=600)
    for p in procs:
        p.join()
    print(f"2. gather + GMM + broadcast at n = {n:.0e} losses, 2 gloo ranks on this machine")
    for name, label in (("old", "before (all-gather f64 pairs, full fit)"), ("new", "now")):
        t = times[name]
        print(
            f"  {label:40s} gather {t['gather']:6.2f} s, GMM {t['fit']:6.2f} s, "
            f"broadcast {t['broadcast']:5.2f} s = {t['total']:6.2f} s"
        )
    print(f"  speed-up {times['old']['total'] / times['new']['total']:.1f}x")
    return times


def service_round_trip(n: int, repeats: int = 3) -> dict[str, float]:
    """Median seconds of the split with its metrics at n losses: in this process (gmm_site:
    rank0) and through a SplitService actor (gmm_site: driver)."""
    import ray

    from sssl_dist.data.segments import SegmentTable
    from sssl_dist.driver.split_service import SplitService, start_split_service
    from sssl_dist.method.split import fit_split_with_metrics

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    rng = np.random.default_rng(0)
    x, labels = losses(n, rng).astype(np.float16), rng.integers(0, 4, n)
    table = SegmentTable(
        song_ids=["s"], song_of=np.zeros(n, np.int64), start=np.arange(n), label=labels,
        true_label=np.full(n, -1), length_s=3,
    )  # fmt: skip
    cfg = SSSLConfig()
    times: dict[str, list[float]] = {"rank0": [], "driver": []}
    local = SplitService(cfg, table)
    actor, _ = start_split_service(cfg, table, "bench")
    ray.get(actor.splits.remote())  # started
    for epoch in range(repeats):
        t0 = time.perf_counter()
        fit_split_with_metrics(cfg, table, x, [n], epoch, local.memory)
        times["rank0"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ray.get(actor.fit.remote(epoch, x, [n]))
        times["driver"].append(time.perf_counter() - t0)
    ray.kill(actor)
    out = {k: float(np.median(v)) for k, v in times.items()}
    print(f"3. the split with its metrics at n = {n:.0e}: where the GMM is fitted")
    print(
        f"  rank 0 {out['rank0']:.2f} s, driver's split service {out['driver']:.2f} s "
        f"(+{out['driver'] - out['rank0']:.2f} s for the object-store round trip)"
    )
    return out


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--max-exp", type=int, default=7)
    p.add_argument("--step-n", type=int, default=10**7, help="losses in part 2")
    a = p.parse_args()
    fit_times(a.max_exp)
    distributed_step(a.step_n)
    service_round_trip(a.step_n)
