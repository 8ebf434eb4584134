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


def gather_losses(losses: torch.Tensor) -> tuple[np.ndarray | None, list[int]]:
    """Step 2: every rank's block of losses [n_r], in position order, to rank 0 only.

    Rank 0 gets the full vector [N] (float32) and the number each rank sent; other ranks get
    None. Positions do not travel: ranks own contiguous blocks in rank order, so rank 0 puts
    the blocks end to end, after checking each rank sent exactly its block (`fit_split`).
    Losses travel as float16 (2 bytes, not 16 with float64 positions): the GMM fits
    min-max-normalised losses, where float16's 3 significant digits are plenty. Blocks differ
    by at most one, so each rank pads to the largest and rank 0 cuts the padding off.
    """
    if not distributed():
        # The same float16 rounding as on the wire: the split must not depend on world size.
        return losses.to(torch.float16).float().numpy(), [losses.numel()]
    world, rank, dev = dist.get_world_size(), dist.get_rank(), comm_device()
    size = torch.tensor([losses.numel()], dtype=torch.int64, device=dev)
    sizes = [torch.zeros_like(size) for _ in range(world)] if rank == 0 else None
    dist.gather(size, sizes, dst=0)
    # The padded length must be the same on every rank: one more tiny collective to agree.
    longest = size.clone()
    dist.all_reduce(longest, op=dist.ReduceOp.MAX)
    packed = torch.zeros(int(longest.item()), dtype=torch.float16)
    packed[: losses.numel()] = losses.to(torch.float16)
    packed = packed.to(dev)
    parts = [torch.zeros_like(packed) for _ in range(world)] if rank == 0 else None
    dist.gather(packed, parts, dst=0)
    if rank != 0:
        return None, []
    counts = [int(s.item()) for s in sizes]
    full = torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)]).cpu()
    return full.float().numpy(), counts


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


def rank0_decides(flag: bool) -> bool:
    """Rank 0's `flag` on every rank: for a decision all ranks must take together (a rank that
    stopped alone would leave the others waiting in the next collective)."""
    if not distributed():
        return flag
    box: list[Any] = [flag]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


def broadcast_clean_w(clean_w: np.ndarray | None, n: int) -> np.ndarray:
    """Step 3b: rank 0's split [n] (w on X, 0 on U; `Split.clean_w`) to every rank (other
    ranks pass None); every rank, rank 0 included, gets the same float32 [n] back.

    One byte a segment: w on X is sent as round(255 w), at least 1, so X = (value > 0) is exact
    and w keeps a resolution of 1/255, plenty for label refinement. Rank 0 decodes its own
    bytes too, so every rank trains on identical weights.
    """
    buf = (
        torch.from_numpy(
            np.where(clean_w > 0, np.clip(np.rint(clean_w * 255), 1, 255), 0).astype(np.uint8)
        )
        if clean_w is not None
        else torch.zeros(n, dtype=torch.uint8)
    )
    if distributed():
        buf = buf.to(comm_device())
        dist.broadcast(buf, src=0)
    return buf.cpu().numpy().astype(np.float32) / 255


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
