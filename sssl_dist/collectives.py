"""The collectives of the training loop (torch.distributed; no-ops in a single process).

Every function here is called by *all* ranks in the same order: a rank that skips one leaves
the others waiting until the gloo/NCCL timeout. NCCL (the GPU backend) only moves CUDA
tensors, so tensors go to `comm_device()` first.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist


class PeerFailure(RuntimeError):
    """Another rank (rank 0) failed in a step this rank was waiting on."""


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def comm_device() -> torch.device:
    """Where collective tensors must live: NCCL only moves CUDA tensors."""
    if distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_losses(
    positions: torch.Tensor, losses: torch.Tensor
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Step 2: every rank's (positions [n_r], losses [n_r]) -> the full vectors on every rank,
    plus the number of losses each rank sent (what the exact-once check and its test read).

    Blocks differ in size by at most one, so each rank pads to the largest and the padding is
    cut off with the gathered sizes.
    """
    if not distributed():
        return positions.numpy(), losses.numpy(), [positions.numel()]
    world, dev = dist.get_world_size(), comm_device()
    size = torch.tensor([positions.numel()], dtype=torch.int64, device=dev)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    packed = torch.zeros(max(counts), 2, dtype=torch.float64)
    packed[: positions.numel(), 0] = positions.double()  # exact for positions < 2^53
    packed[: positions.numel(), 1] = losses.double()
    packed = packed.to(dev)
    gathered = [torch.zeros_like(packed) for _ in range(world)]
    dist.all_gather(gathered, packed)
    full = torch.cat([g[:c] for g, c in zip(gathered, counts, strict=True)]).cpu()
    return full[:, 0].long().numpy(), full[:, 1].float().numpy(), counts


def broadcast_status(error: str | None) -> None:
    """Rank 0 tells every rank whether its step succeeded, *before* anyone waits for its data.

    Without this, a rank-0 exception inside the GMM step would leave the other ranks blocked in
    the broadcast of the weights until the gloo timeout (30 min by default). Every rank calls
    this; non-zero ranks raise PeerFailure when rank 0 reports an error (rank 0 re-raises its
    own exception itself, after this call).
    """
    if not distributed():
        return
    box: list[Any] = [error]
    dist.broadcast_object_list(box, src=0)
    if box[0] is not None and dist.get_rank() != 0:
        raise PeerFailure(f"rank 0 failed: {box[0]}")


def broadcast_array(array: np.ndarray | None, n: int) -> np.ndarray:
    """Step 3b: rank 0's float vector [n] to every rank (other ranks pass None)."""
    buf = torch.from_numpy(array.astype(np.float32)) if array is not None else torch.zeros(n)
    if distributed():
        buf = buf.to(comm_device())
        dist.broadcast(buf, src=0)
    return buf.cpu().numpy()


def all_reduce_sum(values: list[float]) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    if distributed():
        t = t.to(comm_device())
        dist.all_reduce(t)
    return t.cpu().tolist()


def all_gather_object(obj: Any) -> list[Any]:
    if not distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)  # uses the current CUDA device under NCCL by itself
    return out
