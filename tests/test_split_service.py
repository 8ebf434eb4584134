"""The driver-side split service without Ray: the same split as rank 0, and a resume that
neither loses nor double-counts an epoch."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from sssl_dist.config import SSSLConfig
from sssl_dist.data.segments import SegmentTable
from sssl_dist.driver.split_service import SplitService
from sssl_dist.method.equations import LossMemory
from sssl_dist.method.split import fit_split_with_metrics


def _planted(n: int = 400, seed: int = 0) -> tuple[SegmentTable, list[np.ndarray]]:
    """A table whose last quarter is mislabelled, and three epochs of losses in which those
    segments have high loss."""
    rng = np.random.default_rng(seed)
    label = np.arange(n) % 4
    wrong = (np.arange(n) >= 3 * n // 4).astype(np.int64)
    table = SegmentTable(
        song_ids=[f"s{i:03d}" for i in range(n // 10)],
        song_of=np.arange(n) // 10,
        start=np.arange(n) % 10,
        label=label,
        true_label=np.where(wrong == 1, (label + 1) % 4, label),
        length_s=3,
    )
    epochs = [rng.gamma(2.0, 0.2, n) + 2.0 * wrong for _ in range(3)]
    return table, epochs


def test_service_splits_like_rank0_and_resumes_without_double_counting():
    table, epochs = _planted()
    cfg = replace(SSSLConfig(), selection="mean_loss", warmup_epochs=0)
    sent = [len(table)]
    service = SplitService(cfg, table)
    masks = [service.fit(e, losses, sent)[0] for e, losses in enumerate(epochs)]

    # Rank 0's own fit on the same losses: the same masks, epoch by epoch.
    memory = LossMemory.empty(len(table))
    for e, losses in enumerate(epochs):
        mask, metrics = fit_split_with_metrics(cfg, table, losses, sent, e, memory)
        np.testing.assert_array_equal(mask, masks[e])
        assert metrics["noise_auc"] > 0.9  # the planted noise is found

    # A restart resumes at epoch 2 from a checkpoint that holds the memory after epoch 1.
    after_1 = LossMemory.empty(len(table))
    for losses in epochs[:2]:
        after_1.add(losses)
    for array in (after_1.sums, after_1.counts):  # as they arrive through Ray's object store
        array.setflags(write=False)
    service.resume(2, after_1)
    mask, _, kept = service.fit(2, epochs[2], sent)
    np.testing.assert_array_equal(mask, masks[2])
    assert (kept.counts == 3).all()  # each epoch counted once
    assert [s["epoch"] for s in service.splits()] == [0, 1, 2]
