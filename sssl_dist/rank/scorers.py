"""The networks that score the split apart from the network being trained (config.py:
`split_network` "out_of_sample" and "peer").

A network that has trained on a segment's inherited label learns it, wrong or right, and its
loss then says little about whether the label is wrong: the in-sample noise AUC falls over the
epochs. Two remedies from the noisy-label literature, one `AuxNet` list each:
- "out_of_sample": `scorer_parts` networks trained with plain CE, each on the training songs
  outside its part; a segment's loss comes from the network of its song's part, which never
  saw that song (k-fold scoring inside the training set, as cleanlab's confident learning
  computes its out-of-sample probabilities: Northcutt et al. 2021).
- "peer": a second network, trained like the first but from its own initial weights, batch
  order and dropout; each network's split is fitted on the other's losses, so a label one
  network has memorised does not select its own training set (DivideMix's co-divide, Li et
  al. 2020).

Both are trained from the first SSSL epoch on: there they first catch up on the warm-up epochs
(plain CE), so the warm-up itself is the trained network's alone and runs that differ only in
`split_network` still share it (warmup.py). Each then has trained exactly as many epochs as
the trained network when it scores. Neither is exported: the fold's predictions come from the
trained network. Under DDP each is wrapped like the trained network, and every rank makes the
same steps in the same order.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from sssl_dist.config import SSSLConfig
from sssl_dist.data.segments import SegmentTable
from sssl_dist.method.models import build_model
from sssl_dist.rank.epoch import AuxNet, Worker, loss_pass, optimiser_steps

# Streams of `epoch.optimiser_steps` (batch order, mixup draws) and dropout seeds of the
# auxiliary networks, apart from the trained network's stream 0.
FIRST_STREAM = 1


def score_parts(table: SegmentTable, parts: int, seed: int) -> np.ndarray:
    """[N] the part (0..parts-1) of each training position, by song: the songs in a seeded
    random order dealt round-robin, so parts differ in size by at most one song and a song's
    segments are never split between parts."""
    n_songs = int(table.song_of.max()) + 1 if len(table) else 0
    order = np.random.default_rng([seed, 2]).permutation(n_songs)
    part_of_song = np.empty(n_songs, dtype=np.int64)
    part_of_song[order] = np.arange(n_songs) % parts
    return part_of_song[table.song_of]


def build_aux(
    cfg: SSSLConfig,
    table: SegmentTable,
    num_outputs: int,
    prepare: Callable[[torch.nn.Module], torch.nn.Module],
    make_optimizer: Callable[[torch.nn.Module], torch.optim.Optimizer],
) -> list[AuxNet]:
    """The auxiliary networks `cfg.split_network` asks for (none for "current", "best_val"),
    each from its own seeded initial weights."""
    everything = np.arange(len(table))
    if cfg.split_network == "out_of_sample":
        part = score_parts(table, cfg.scorer_parts, cfg.seed)
        plans = [
            (np.flatnonzero(part != k), np.flatnonzero(part == k)) for k in range(cfg.scorer_parts)
        ]
    elif cfg.split_network == "peer":
        plans = [(everything, everything)]
    else:
        return []
    nets = []
    for k, (train_pos, score_pos) in enumerate(plans):
        stream = FIRST_STREAM + k
        torch.manual_seed(cfg.seed * 1_000_003 + stream)  # the same weights on every rank
        model = prepare(build_model(cfg.backbone, num_outputs, cfg.dropout))
        plain = model.module if hasattr(model, "module") else model
        nets.append(AuxNet(model, plain, make_optimizer(model), train_pos, score_pos, stream))
    return nets


def aux_state(nets: list[AuxNet]) -> list[dict] | None:
    """What a checkpoint keeps of the auxiliary networks (weights_only loadable), or None
    before they have trained: a warm-up checkpoint is then the same whatever split_network
    says, so runs share it."""
    if not any(net.epochs_done for net in nets):
        return None
    return [
        {
            "model": n.plain.state_dict(),
            "optimizer": n.opt.state_dict(),
            "epochs_done": n.epochs_done,
        }
        for n in nets
    ]


def load_aux_state(nets: list[AuxNet], states: list[dict]) -> None:
    """Restore `aux_state`'s output into networks built for the same config."""
    if len(states) != len(nets):
        raise RuntimeError(
            f"the checkpoint holds {len(states)} auxiliary networks, not {len(nets)}"
        )
    for net, state in zip(nets, states, strict=True):
        net.plain.load_state_dict(state["model"])
        net.opt.load_state_dict(state["optimizer"])
        net.epochs_done = int(state["epochs_done"])


def catch_up(w: Worker, epoch: int) -> None:
    """Train every auxiliary network with plain CE until it has trained `epoch` epochs, as the
    trained network has when the split of `epoch` is fitted. A peer trains its SSSL epochs with
    the step instead (`train_peer_epoch`), so here it catches up on the warm-up only."""
    for net in w.aux:
        limit = epoch if w.cfg.split_network == "out_of_sample" else min(epoch, w.cfg.warmup_epochs)
        while net.epochs_done < limit:
            train_aux_epoch(w, net, net.epochs_done, None)


def train_peer_epoch(w: Worker, epoch: int) -> None:
    """Step 4 for the peer: the SSSL step on the split fitted on the trained network's losses.
    Its pseudo-labels come from the peer itself (no EMA teacher, no clean BN statistics)."""
    for net in w.aux:
        if net.clean_w is not None:
            train_aux_epoch(w, net, epoch, net.clean_w)


def train_aux_epoch(w: Worker, net: AuxNet, epoch: int, clean_w: np.ndarray | None) -> None:
    """One epoch of `net` on its training positions (plain CE with clean_w None). Its dropout
    draws come from a forked RNG, so the trained network's stream is the same as without it."""
    devices = [w.device.index or 0] if w.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(w.cfg.seed * 1_000_003 + epoch * 101 + w.rank + net.stream * 7919)
        optimiser_steps(
            w,
            net.model,
            net.opt,
            net.plain,
            clean_w,
            epoch,
            positions=net.train_pos,
            stream=net.stream,
        )
    net.epochs_done = epoch + 1


def scored_losses(w: Worker) -> torch.Tensor:
    """Step 1 with auxiliary networks: this rank's block of losses [hi - lo], in position
    order, each from the network that scores its position."""
    lo, hi = w.block
    out = torch.full((hi - lo,), float("nan"))
    for net in w.aux:
        mine = net.score_pos[(net.score_pos >= lo) & (net.score_pos < hi)]
        out[torch.from_numpy(mine - lo)] = loss_pass(w, net.plain, mine)
    return out
