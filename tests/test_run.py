"""The run object (run.py): one routine chooses the warm-up donors for every caller."""

from __future__ import annotations

from pathlib import Path

from sssl_dist.config import SSSLConfig
from sssl_dist.driver.run import Run, share_warmups, shared_count


def _run(fold: int, name: str, **cfg) -> Run:
    return Run(SSSLConfig(**cfg), fold, Path("/store"), name)


def test_runs_that_train_the_same_warmup_share_it_and_the_first_keeps_it():
    runs = [
        _run(0, "inherit-f0", method="inherit"),
        _run(1, "inherit-f1", method="inherit"),
        _run(0, "sssl-f0", tau=0.7),  # differs only after the warm-up: shares fold 0's
        _run(1, "sssl-f1", tau=0.7),
        _run(0, "other-lr-f0", lr=0.01),  # another warm-up: trains its own
        _run(0, "no-warmup-f0", warmup_epochs=0),  # none to share
    ]
    shared = share_warmups(runs)
    assert [r.save_warmup for r in shared] == [True, True, False, False, False, False]
    assert shared[2].warmup_from == Path("/store/inherit-f0/warmup")
    assert shared[3].warmup_from == Path("/store/inherit-f1/warmup")
    assert shared[4].warmup_from is None and shared[5].warmup_from is None
    assert shared_count(shared) == 2
    assert [r.name for r in shared] == [r.name for r in runs]  # identities untouched


def test_a_run_waits_for_its_donor_only_while_the_donor_can_still_write():
    donor, taker = share_warmups([_run(0, "a"), _run(0, "b", tau=0.7)])
    assert not taker.ready_to_start({donor.run_dir})  # the donor is queued or running
    assert taker.ready_to_start(set())  # the donor failed or finished before: go
    assert donor.ready_to_start({donor.run_dir})
