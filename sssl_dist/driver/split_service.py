"""The driver-side GMM service: where the clean/noisy split of every SSSL epoch is fitted.

The design card asks for "an all-gathered per-sample loss vector feeding a driver-side GMM each
epoch". `run_fold` (the driver of one fold) starts one `SplitService` actor
per fold and owns it; each SSSL epoch rank 0 gathers the ranks' losses (collectives.py), sends
the vector here, and broadcasts the mask it gets back. Because the driver owns the service and
not a worker, it outlives worker failures: the run's split history (one entry per SSSL epoch)
and the loss memory of the `mean_loss` selection are still here when Ray Train restarts the
workers. A restarted rank 0 calls `resume(epoch, memory)` first, so epochs that are trained
again are fitted again from the checkpoint's state, never counted twice.

`gmm_site: rank0` keeps the fit on rank 0 (no actor, no object-store round trip); both sites
run the same `split.fit_split_with_metrics`, so they give the same split.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sssl_dist.config import SSSLConfig
from sssl_dist.data.segments import SegmentTable
from sssl_dist.method.equations import LossMemory
from sssl_dist.method.split import fit_split_with_metrics

NAMESPACE = "sssl"  # the named actors of this package, apart from the user's own


@dataclass
class SplitService:
    """One fold's split state and fit. A plain class: `start_split_service` makes it an actor,
    and tests call it directly."""

    cfg: SSSLConfig
    table: SegmentTable  # the fold's training segments (labels, and truth for the metrics)
    memory: LossMemory = field(init=False)
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per SSSL epoch

    def __post_init__(self) -> None:
        self.memory = LossMemory.empty(len(self.table))

    def resume(self, epoch: int, memory: LossMemory | None) -> None:
        """A (re)started rank 0 begins at `epoch`: forget the splits from `epoch` on (they are
        fitted again) and take the loss memory its checkpoint holds (None: start empty)."""
        self.history = [h for h in self.history if h["epoch"] < epoch]
        if memory is None:
            self.memory = LossMemory.empty(len(self.table))
        else:  # arrays that arrive through the object store are read-only: own a copy
            self.memory = LossMemory(memory.sums.copy(), memory.counts.copy())

    def fit(
        self, epoch: int, losses: np.ndarray, sent: list[int], role: str = "main"
    ) -> tuple[np.ndarray, dict[str, Any], LossMemory | None]:
        """Step 3 of an SSSL epoch: (the split as `Split.clean_w` [N], its metrics, the loss
        memory after this epoch when the selection keeps one, for rank 0's checkpoint; else
        None). `role` "peer": the split a peer network trains on (`split_network: peer`),
        fitted on the trained network's losses; it is not the run's split, so it neither
        touches the loss memory nor enters the history."""
        mine = role == "main"
        memory = self.memory if mine else None
        clean_w, metrics = fit_split_with_metrics(self.cfg, self.table, losses, sent, epoch, memory)
        if not mine:
            return clean_w, metrics, None
        self.history.append({"epoch": epoch, "n_clean": metrics["n_clean"]})
        keeps_memory = self.cfg.selection == "mean_loss"
        return clean_w, metrics, self.memory if keeps_memory else None

    def splits(self) -> list[dict[str, Any]]:
        """The split history: {epoch, n_clean} for every SSSL epoch fitted so far, in order."""
        return list(self.history)


def start_split_service(cfg: SSSLConfig, table: SegmentTable, run: str) -> tuple[Any, str]:
    """Start a fold's service as a named actor owned by the caller; returns (handle, name).

    No CPU is reserved for it (num_cpus=0): it works only while the ranks wait for the split,
    and a reservation would take a core from the workers on a 2-core machine."""
    import ray

    name = f"split-{run}-{uuid.uuid4().hex[:8]}"
    actor = (
        ray.remote(num_cpus=0)(SplitService)
        .options(name=name, namespace=NAMESPACE, max_restarts=0)
        .remote(cfg, table)
    )
    return actor, name
