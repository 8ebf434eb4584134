"""Shared warm-up: runs whose warm-up epochs are the same training train them once.

Every method's first `warmup_epochs` are plain CE on the inherited labels (DivideMix's warm-up;
`inherit` trains that way throughout), so the arms of a comparison, and sweep points that
differ only in τ, λ or T, train byte-identical warm-ups on the same fold. One of them, the
donor, keeps its last warm-up epoch's checkpoint as `run_dir/warmup`; the others copy it into
their own run directory as that epoch's checkpoint before they start, and the ordinary resume
(train.restore) continues from it. The result equals training from scratch (a test checks it):
what a run resumes from holds the weights, the optimiser, the RNG and the best epoch so far.

Two runs share when their configs agree on every field except those that act only after the
warm-up (config.AFTER_WARMUP, from each field's `after_warmup` fact), on the same fold, shards
and number of workers. A field that does not declare `after_warmup` is assumed to act during
the warm-up: the safe default is not to share. `epochs` joins them under a constant learning
rate (cosine's depends on it).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from sssl_dist.config import AFTER_WARMUP, SSSLConfig, to_dict
from sssl_dist.files.checkpoint import (
    adopt_checkpoint,
    epoch_dir_name,
    newest_persisted,
    readable_epoch,
)
from sssl_dist.files.runfiles import WARMUP

log = logging.getLogger(__name__)


def warmup_key(cfg: SSSLConfig) -> str | None:
    """A digest of everything the warm-up epochs read, or None when there is no warm-up."""
    if cfg.warmup_epochs < 1:
        return None
    fields = {k: v for k, v in to_dict(cfg).items() if k not in AFTER_WARMUP}
    if cfg.lr_schedule == "constant":
        fields.pop("epochs")
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def warmup_source(run_dir: str | Path) -> Path:
    """Where a donor run keeps its warm-up's end."""
    return Path(run_dir) / WARMUP


def is_ready(source: Path) -> bool:
    """The donor's warm-up checkpoint is complete on disk."""
    return source.is_dir() and readable_epoch(source) is not None


def adopt_warmup(source: Path, run_dir: str | Path, cfg: SSSLConfig) -> bool:
    """Copy the donor's warm-up checkpoint into `run_dir` as its last warm-up epoch, unless the
    run already has a checkpoint of its own (it resumes from that) or the copy is not ready
    (it trains the warm-up itself). True when copied."""
    run_dir = Path(run_dir)
    if not is_ready(source) or newest_persisted(run_dir, None) is not None:
        return False
    adopt_checkpoint(source, run_dir / epoch_dir_name(cfg.warmup_epochs - 1))
    log.info("%s starts after the warm-up it shares with %s", run_dir.name, source.parent.name)
    return True
