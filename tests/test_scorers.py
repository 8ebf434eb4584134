"""The networks that score the split apart from the trained one (rank/scorers.py), without Ray:
an out-of-sample score never comes from a network that trained on its song, and a peer's split
and the trained network's are each fitted on the other network's losses."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from sssl_dist.config import SSSLConfig
from sssl_dist.data.folds import fold_song_ids
from sssl_dist.data.segments import SegmentTable, ShardSet
from sssl_dist.files.checkpoint import training_state
from sssl_dist.method.equations import LossMemory
from sssl_dist.rank import scorers
from sssl_dist.rank.epoch import loss_pass
from sssl_dist.rank.train import LoopConfig, build_worker, split_epoch

CFG = SSSLConfig(n_folds=3, epochs=3, warmup_epochs=1, batch_size=32)


def _worker(shard_dir, **overrides):
    cfg = replace(CFG, **overrides)
    shards = ShardSet(shard_dir)
    w, _, _ = build_worker(cfg, shards, fold_song_ids(shards, cfg, 0))
    return w


def _loop() -> LoopConfig:
    return LoopConfig(
        config={}, shards="", fold=0, fold_ids={}, run_dir="", tensorboard_dir=None, local=True
    )


def test_score_parts_keep_every_song_in_one_part_and_balance_them():
    songs = [{"song_id": f"s{i}", "duration_s": 4.0 + i % 3, "quadrant": i % 4} for i in range(7)]
    table = SegmentTable.build(songs, "quadrant", 1, 1)
    part = scorers.score_parts(table, 3, seed=0)
    per_song = {int(s): set(part[table.song_of == s].tolist()) for s in np.unique(table.song_of)}
    assert all(len(p) == 1 for p in per_song.values())  # a song is never split between parts
    sizes = np.bincount([p.pop() for p in per_song.values()], minlength=3)
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == 7


def test_an_out_of_sample_score_never_comes_from_a_network_that_trained_on_its_song(
    shard_dir, monkeypatch
):
    w = _worker(shard_dir, split_network="out_of_sample", scorer_parts=2)
    assert len(w.aux) == 2
    trained_on: dict[int, set[int]] = {}
    inputs = w.batcher.inputs

    def recording(idx):
        trained_on.setdefault(recording.stream, set()).update(w.table.song_of[idx].tolist())
        return inputs(idx)

    monkeypatch.setattr(w.batcher, "inputs", recording)
    for net in w.aux:
        recording.stream = net.stream
        scorers.train_aux_epoch(w, net, 0, None)
        assert net.epochs_done == 1
    monkeypatch.setattr(w.batcher, "inputs", inputs)
    songs = w.table.song_of
    for net in w.aux:
        scored = set(songs[net.score_pos].tolist())
        assert trained_on[net.stream] == set(songs[net.train_pos].tolist())
        assert not trained_on[net.stream] & scored, "a scorer trained on a song it scores"
    assert sorted(np.concatenate([n.score_pos for n in w.aux]).tolist()) == list(range(len(songs)))
    # Each position's loss is its own scorer's, and the other scorer's differs.
    losses = scorers.scored_losses(w)
    for net, other in (w.aux, w.aux[::-1]):
        own = loss_pass(w, net.plain, net.score_pos)
        torch.testing.assert_close(losses[net.score_pos], own)
        assert not torch.allclose(loss_pass(w, other.plain, net.score_pos), own)


def test_catch_up_trains_scorers_to_the_epoch_being_split_and_leaves_the_trained_network(
    shard_dir,
):
    w = _worker(shard_dir, split_network="out_of_sample")
    before = {k: v.clone() for k, v in w.plain.state_dict().items()}
    rng = torch.get_rng_state()
    scorers.catch_up(w, 2)
    assert [n.epochs_done for n in w.aux] == [2, 2]
    for k, v in w.plain.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(torch.get_rng_state(), rng)  # the trained network's dropout stream


def test_a_peer_and_the_trained_network_split_on_each_others_losses(shard_dir, monkeypatch):
    from sssl_dist.rank import train

    w = _worker(shard_dir, split_network="peer", warmup_epochs=0)
    (peer,) = w.aux
    seen = []
    fit = train.fit_split_with_metrics

    def recording(cfg, table, losses, sent, epoch, memory=None):
        seen.append(np.asarray(losses, dtype=np.float32))
        return fit(cfg, table, losses, sent, epoch, memory)

    monkeypatch.setattr(train, "fit_split_with_metrics", recording)
    metrics: dict = {}
    clean_w = split_epoch(w, _loop(), 0, metrics, LossMemory.empty(len(w.table)))
    half = lambda t: t.numpy().astype(np.float16).astype(np.float32)  # noqa: E731 (the gather)
    np.testing.assert_array_equal(seen[0], half(loss_pass(w, peer.plain)))  # the run's split
    np.testing.assert_array_equal(seen[1], half(loss_pass(w)))  # the peer's split
    assert clean_w.shape == peer.clean_w.shape == (len(w.table),)
    assert "noise_auc" in metrics and "peer_noise_auc" in metrics
    # The peer trains its SSSL epoch on its own split, with the step, from its own weights.
    before = [p.detach().clone() for p in peer.plain.parameters()]
    scorers.train_peer_epoch(w, 0)
    assert peer.epochs_done == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, peer.plain.parameters(), strict=True))


def test_auxiliary_networks_are_checkpointed_and_restored(shard_dir):
    w = _worker(shard_dir, split_network="out_of_sample")
    scorers.catch_up(w, 1)
    state = training_state(
        w.plain, w.opt, 0, None, LossMemory.empty(len(w.table)), aux=scorers.aux_state(w.aux)
    )
    fresh = _worker(shard_dir, split_network="out_of_sample")
    assert [n.epochs_done for n in fresh.aux] == [0, 0]
    scorers.load_aux_state(fresh.aux, state["aux"])
    assert [n.epochs_done for n in fresh.aux] == [1, 1]
    for a, b in zip(w.aux, fresh.aux, strict=True):
        for (k, v), u in zip(
            a.plain.state_dict().items(), b.plain.state_dict().values(), strict=True
        ):
            assert torch.equal(v, u), k
    # Before any auxiliary network has trained, nothing is saved: a warm-up checkpoint is the
    # same whatever split_network says, so runs share it.
    untrained = _worker(shard_dir, split_network="out_of_sample")
    assert "aux" not in training_state(
        untrained.plain,
        untrained.opt,
        0,
        None,
        LossMemory.empty(1),
        aux=scorers.aux_state(untrained.aux),
    )


def test_a_peer_refuses_the_loss_memory():
    with pytest.raises(ValueError, match="peer"):
        SSSLConfig(split_network="peer", selection="mean_loss")
    with pytest.raises(ValueError, match="scorer_parts"):
        SSSLConfig(split_network="out_of_sample", scorer_parts=1)


def test_more_scorer_parts_than_training_songs_is_refused(shard_dir):
    """Before any training (the check the commands make before Ray starts)."""
    from sssl_dist.data.folds import check_shards_serve

    shards = ShardSet(shard_dir)
    songs = len(fold_song_ids(shards, CFG, 0)["train"])
    cfg = replace(CFG, split_network="out_of_sample", scorer_parts=songs + 1)
    with pytest.raises(ValueError, match="lower scorer_parts"):
        check_shards_serve(shards, [cfg])
    check_shards_serve(shards, [replace(cfg, scorer_parts=songs - 5)])  # fewer parts: fine
