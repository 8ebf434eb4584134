"""The loop's collectives on two real gloo processes (no Ray): the loss gather with uneven
blocks, and rank 0's status broadcast that releases the other ranks when it fails."""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sssl_dist.data.segments import rank_block

N = 11  # odd: the two blocks are uneven (5 and 6)


def _losses(n: int) -> np.ndarray:
    return np.linspace(0.1, 2.0, n).astype(np.float32)


def _clean_w(n: int) -> np.ndarray:
    """A split as the GMM gives it: w on X (w > τ = 0.5, one just above τ and one tiny w that
    must still count as X), 0 on U."""
    w = np.linspace(0.0, 1.0, n).astype(np.float32)
    w[w <= 0.5] = 0.0
    w[0] = 1e-4
    return w


def _worker(rank: int, world: int, init: str, out: dict, fail_rank0: bool) -> None:
    from sssl_dist.rank.collectives import (
        PeerFailure,
        broadcast_clean_w,
        broadcast_status,
        gather_losses,
    )

    dist.init_process_group(
        "gloo", init_method=init, rank=rank, world_size=world, timeout=timedelta(seconds=60)
    )
    try:
        lo, hi = rank_block(N, rank, world)
        losses, sent = gather_losses(torch.from_numpy(_losses(N)[lo:hi]))
        out[rank] = {"losses": None if losses is None else losses.tolist(), "sent": sent}
        split = broadcast_clean_w(_clean_w(N) if rank == 0 else None, N)
        out[f"split{rank}"] = split.tolist()
        try:
            broadcast_status("ValueError: boom" if fail_rank0 and rank == 0 else None)
            out[f"status{rank}"] = "ok"
        except PeerFailure as exc:
            out[f"status{rank}"] = str(exc)
    finally:
        dist.destroy_process_group()


def _run(tmp_path, fail_rank0: bool) -> dict:
    with mp.Manager() as manager:
        out = manager.dict()
        init = f"file://{tmp_path / 'rendezvous'}"
        ctx = mp.spawn(_worker, args=(2, init, out, fail_rank0), nprocs=2, join=False)
        deadline = time.time() + 120  # a rank left waiting would hang here: fail instead
        while not ctx.join(timeout=1):
            assert time.time() < deadline, "a rank is still waiting"
        return dict(out)


@pytest.mark.parametrize("fail_rank0", [False, True])
def test_gather_covers_every_position_once_and_status_reaches_every_rank(tmp_path, fail_rank0):
    from sssl_dist.method.split import gather_coverage

    out = _run(tmp_path, fail_rank0)
    # Rank 0 alone receives the losses: each rank's block once, end to end, in position order.
    assert out[1]["losses"] is None and out[1]["sent"] == []
    assert out[0]["sent"] == [5, 6]  # the padding of the shorter block was cut off
    cover = gather_coverage(out[0]["sent"], N)
    assert cover["per_rank"] == cover["expected"] and cover["gathered"] == N
    # float16 on the wire: 3 significant digits.
    np.testing.assert_allclose(out[0]["losses"], _losses(N), rtol=1e-3)
    # The split reaches every rank identical, X exactly (w > 0).
    assert out["split0"] == out["split1"]
    split, sent = np.array(out["split0"]), _clean_w(N)
    assert ((split > 0) == (sent > 0)).all()
    # w to the nearest 1/255; X's smallest weight is 1/255, so it cannot turn into U.
    expected = np.where(sent > 0, np.maximum(sent, 1 / 255), 0.0)
    np.testing.assert_allclose(split, expected, atol=0.5 / 255 + 1e-7)
    if fail_rank0:  # rank 1 learns of rank 0's failure instead of waiting for its data
        assert out["status1"] == "rank 0 failed: ValueError: boom" and out["status0"] == "ok"
    else:
        assert out["status0"] == out["status1"] == "ok"


def test_fit_split_refuses_a_gather_that_is_not_exactly_once():
    from sssl_dist.config import SSSLConfig
    from sssl_dist.data.segments import SegmentTable
    from sssl_dist.method.split import fit_split

    songs = [{"song_id": "a", "duration_s": 13.0, "quadrant": 1}]
    table = SegmentTable.build(songs, "quadrant", 3)
    n = len(table)  # 11: blocks of 5 and 6 on two ranks
    split, _ = fit_split(SSSLConfig(), table, _losses(n), [5, 6], epoch=0)
    assert split.clean_mask.size == n
    # Rank blocks in the wrong order, or a rank short of its block: refused.
    for sent in ([6, 5], [5, 5], [11, 0]):
        with pytest.raises(RuntimeError, match="exactly once"):
            fit_split(SSSLConfig(), table, _losses(sum(sent)), sent, epoch=0)
