"""The split's evidence (split.py) and the ceiling arms, on planted numbers: each candidate does
what its docstring says, the oracle is the truth, and both ceilings are refused without truth."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from sssl_dist.config import SSSLConfig
from sssl_dist.data.segments import SegmentTable, training_table
from sssl_dist.method.equations import DegenerateSplitWarning
from sssl_dist.method.split import (
    oracle_clean_prob,
    per_second_evidence,
    smoothed_over_neighbours,
    song_relative,
    song_starts,
    split_segments,
)
from sssl_dist.method.tasks import task_of


def _song(sid: str, truth: list[int], label: int) -> dict:
    return {"song_id": sid, "duration_s": float(len(truth)), "quadrant": label, "truth": truth}


def test_song_starts_mark_each_songs_block():
    assert song_starts(np.array([0, 0, 0, 1, 2, 2])).tolist() == [0, 3, 4, 6]


def test_song_relative_is_the_log_ratio_to_each_songs_own_median():
    from sssl_dist.method.split import LOG_EPS

    losses = np.array([1.0, 2.0, 8.0, 5.0, 5.0, 10.0, np.nan]) - LOG_EPS
    song_of = np.array([0, 0, 0, 1, 1, 1, 1])
    got = song_relative(losses, song_of)
    np.testing.assert_allclose(got[:6], np.log([0.5, 1.0, 4.0, 1.0, 1.0, 2.0]))
    assert np.isnan(got[6])  # a NaN loss stays NaN and does not move its song's median


def test_a_hard_song_no_longer_hides_an_easy_songs_excursion():
    """Song 0 is hard (high loss everywhere, all labels right); song 1 is easy with a 3-segment
    excursion of wrong labels whose losses are lower than song 0's. The raw loss ranks song 0's
    right labels above the excursion; measured against its own song the excursion stands out."""
    hard = np.full(10, 3.0) + np.linspace(0, 0.2, 10)
    easy = np.array([0.1, 0.2, 0.1, 2.0, 2.2, 2.1, 0.2, 0.1, 0.2, 0.1])
    losses = np.concatenate([hard, easy])
    song_of = np.repeat([0, 1], 10)
    wrong = np.r_[np.zeros(10), [0, 0, 0, 1, 1, 1, 0, 0, 0, 0]]
    assert roc_auc_score(wrong, losses) < 0.5
    assert roc_auc_score(wrong, song_relative(losses, song_of)) == 1.0


def test_smoothing_over_a_planted_excursion_gives_the_expected_mask():
    """One noisy reading inside a contiguous excursion of segments 4-8 (segment 6 reads low)
    and one outside it (segment 1 reads high): averaged over the neighbours, a threshold at the
    middle separates exactly the excursion."""
    losses = np.array([0.1, 1.4, 0.1, 0.1, 2.0, 2.0, 0.4, 2.0, 2.0, 0.1, 0.1, 0.1])
    song_of = np.zeros(losses.size, dtype=int)
    raw_mask = losses > 1.0
    smooth = smoothed_over_neighbours(losses, song_of, radius=1)
    assert raw_mask.nonzero()[0].tolist() == [1, 4, 5, 7, 8]
    assert (smooth > 1.0).nonzero()[0].tolist() == [4, 5, 6, 7, 8]
    np.testing.assert_allclose(smooth[0], (0.1 + 1.4) / 2)  # a song's end: fewer neighbours


def test_smoothing_never_mixes_two_songs_and_skips_nan():
    losses = np.array([1.0, 1.0, 9.0, 9.0, np.nan, 9.0])
    song_of = np.array([0, 0, 1, 1, 1, 1])
    got = smoothed_over_neighbours(losses, song_of, radius=1)
    np.testing.assert_allclose(got, [1.0, 1.0, 9.0, 9.0, 9.0, 9.0])


def test_per_second_evidence_puts_a_boundary_segment_on_its_majoritys_side():
    """Seconds 6-11 of a 16 s song are an excursion (evidence 1, the rest 0). A 3 s segment
    reads the mean of its seconds: the one starting at second 4 (one excursion second of
    three: its truth is the clip label) reads 1/3, the one at 5 (two of three: wrong) reads
    2/3. Recovered per second and scored by the median second, each boundary segment goes to
    its majority's side, and the interior keeps its reading."""
    seconds = np.zeros(16)
    seconds[6:12] = 1.0
    starts = np.arange(14)
    readings = np.array([seconds[t : t + 3].mean() for t in starts])
    got = per_second_evidence(readings, np.zeros(14, dtype=int), starts, 3)
    majority = np.array([np.median(seconds[t : t + 3]) for t in starts])
    assert readings[4] == pytest.approx(1 / 3) and readings[5] == pytest.approx(2 / 3)
    np.testing.assert_allclose(got, majority, atol=0.2)  # the jump penalty blurs a little
    assert ((got > 0.5) == (majority > 0.5)).all()
    assert ((readings > 0.5) == (majority > 0.5)).all()  # premise: the mean reads right too
    assert got[4] < readings[4] and got[5] > readings[5]  # but the median second is surer


def test_per_second_evidence_keeps_songs_apart_and_skips_nan():
    readings = np.array([0.0, 0.0, 0.0, 5.0, 5.0, np.nan, 5.0])
    song_of = np.array([0, 0, 0, 1, 1, 1, 1])
    starts = np.array([0, 1, 2, 0, 1, 2, 3])
    got = per_second_evidence(readings, song_of, starts, 2)
    np.testing.assert_allclose(got, [0, 0, 0, 5, 5, 5, 5], atol=1e-6)


def _truth_table(task: str = "quadrant", length: int = 1) -> SegmentTable:
    songs = [_song("a", [0, 0, 2, 2, 0, 0], 0), _song("b", [1, 1, 1, 3, 1, 1], 1)]
    return SegmentTable.build(songs, task, length, 1)


def test_the_oracle_split_is_the_truth():
    table = _truth_table()
    cfg = SSSLConfig(split_evidence="oracle", segment_seconds=1)
    split, _ = split_segments(cfg, table, np.zeros(len(table)), epoch=3)
    assert (~split.clean_mask).nonzero()[0].tolist() == [2, 3, 9]
    assert split.clean_mask.tolist() == (table.wrong == 0).tolist()
    assert split.fits == {}  # no GMM was fitted


def test_the_oracle_split_is_refused_without_truth():
    songs = [{"song_id": "a", "duration_s": 6.0, "quadrant": 0}]
    table = SegmentTable.build(songs, "quadrant", 1, 1)
    with pytest.raises(ValueError, match="needs per-second truth"):
        oracle_clean_prob(table)


def test_oracle_labels_train_on_each_segments_own_label():
    songs = [_song("a", [0, 0, 2, 2, 0, 0], 0)]
    table = training_table(songs, SSSLConfig(train_labels="truth", segment_seconds=1), "quadrant")
    assert table.label.tolist() == [0, 0, 2, 2, 0, 0]
    inherited = training_table(songs, SSSLConfig(segment_seconds=1), "quadrant")
    assert inherited.label.tolist() == [0] * 6
    without = [{"song_id": "a", "duration_s": 6.0, "quadrant": 0}]
    with pytest.raises(ValueError, match="needs per-second truth"):
        training_table(without, SSSLConfig(train_labels="truth", segment_seconds=1), "quadrant")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"split_evidence": "oracle"}, "split_evidence 'oracle' trains on per-second truth"),
        ({"method": "inherit", "train_labels": "truth"}, "train_labels 'truth' trains on"),
    ],
)
def test_ceiling_arms_are_refused_on_shards_without_truth(overrides, message):
    from sssl_dist.driver.fold import check_shards

    class Shards:
        root = "shards/4q"
        songs = [{"song_id": "a", "duration_s": 6.0, "quadrant": 0}]

    with pytest.raises(ValueError, match=message):
        check_shards(SSSLConfig(**overrides), Shards())
    check_shards(SSSLConfig(), Shards())  # an ordinary arm needs no truth
    # Partial truth (a dynamic annotation, unrated before second 2) is refused too, counted
    # at the segment length the arm trains with; complete truth is served.
    Shards.songs = [{**Shards.songs[0], "truth": [None, None, 0, 0, 1, 1]}]
    with pytest.raises(ValueError, match=r"trains on per-second truth, and 2 of the 4 segments"):
        check_shards(SSSLConfig(**overrides, segment_seconds=3), Shards())
    Shards.songs = [{**Shards.songs[0], "truth": [0, 0, 0, 0, 1, 1]}]
    check_shards(SSSLConfig(**overrides, segment_seconds=3), Shards())


# ---------------------------------------------------------------- partially known truth
def test_a_segment_is_known_only_when_every_second_is():
    from sssl_dist.data.targets import segment_truth

    truth = [None, None, 1, 0, 0, None]  # Q2 Q1 Q1: valence 0 1 1, arousal 1 1 1
    assert [segment_truth(truth, k, 2, "quadrant") for k in range(5)] == [-1, -1, 1, 0, -1]
    assert [segment_truth(truth, k, 3, "valence") for k in range(4)] == [-1, -1, 1, -1]
    assert segment_truth(truth, 4, 3, "arousal") == -1  # runs past the rated seconds
    song = {"song_id": "a", "duration_s": 6.0, "quadrant": 1, "truth": truth}
    table = SegmentTable.build([song], "quadrant", 2, 1)
    assert table.wrong.tolist() == [-1, -1, 0, 1, -1]


def test_noise_detection_scores_the_known_segments_only():
    """Planted: six segments, two of them unknown. An unknown segment's posterior would make
    the AUC perfect if it counted as right (or as wrong); it counts as neither."""
    from sssl_dist.method.equations import split_from_clean_prob
    from sssl_dist.method.split import noise_detection

    wrong = np.array([0, 1, -1, 0, 1, -1])
    w = np.array([0.9, 0.2, 0.1, 0.3, 0.6, 0.95])  # clean posteriors; X = w > 0.5
    split = split_from_clean_prob(w, np.zeros(6, int), {}, num_classes=4, tau=0.5)
    got = noise_detection(split, wrong)
    known = wrong >= 0
    assert got["noise_auc"] == roc_auc_score(wrong[known], 1 - w[known]) == 0.75
    assert got["noise_precision"] == 0.5  # U ∩ known = segments 1 and 3: one of them wrong
    assert got["noise_recall"] == 0.5  # of the two wrong ones, segment 1 is in U
    assert got["noise_known"] == 4
    assert noise_detection(split, np.full(6, -1)) == {}  # nothing known: no figure


def test_segment_accuracy_against_the_truth_leaves_unknown_segments_out():
    from sssl_dist.method.tasks.classification import hit_counts, segment_accuracies

    pred = np.array([0, 1, 1, 2, 3])
    label = np.array([0, 0, 1, 2, 2])
    truth = np.array([0, 1, -1, -1, 0])  # segments 2 and 3: neither right nor wrong
    counts = hit_counts(pred, label, truth)
    assert counts.tolist() == [3, 5, 2, 3]
    # Two ranks' counts add up; the truth figure is over the known segments only.
    both = counts + hit_counts(np.array([1]), np.array([1]), np.array([-1]))
    assert segment_accuracies(*both) == {"val_seg_acc": 4 / 6, "val_seg_acc_truth": 2 / 3}
    assert segment_accuracies(*hit_counts(pred, label, np.full(5, -1))) == {"val_seg_acc": 0.6}


def test_shards_with_some_known_seconds_show_truth_statistics(tmp_path):
    import json
    from dataclasses import asdict

    from sssl_dist.config import FeatureConfig
    from sssl_dist.data.segments import ShardSet

    def shards_with(truths):
        songs = [{"song_id": f"s{i}", "truth": t} for i, t in enumerate(truths)]
        manifest = {"feature_config": asdict(FeatureConfig()), "songs": songs, "shards": []}
        (tmp_path / "manifest.json").write_text(json.dumps(manifest))
        return ShardSet(tmp_path)

    assert shards_with([None, [None, None, 2]]).has_truth
    assert not shards_with([None, [None, None]]).has_truth
    assert shards_with([[0, 1]]).has_truth


def test_the_truth_bar_skips_unrated_seconds():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sssl_dist.outputs.report import _curve_axes

    fig, ax = plt.subplots()
    names = ["Q1", "Q2", "Q3", "Q4"]
    _curve_axes(ax, np.full((4, 4), 0.25), np.arange(4), 1, names, truth=[None, None, 0, 3])
    assert len(ax.patches) == 2  # one coloured span per rated second
    plt.close(fig)


def test_the_default_evidence_fits_the_loss_itself():
    """`split_evidence: loss` is the split the paper fits: the same posteriors as fitting the
    GMM on the losses directly."""
    from sssl_dist.method.equations import split_clean_noisy

    rng = np.random.default_rng(0)
    table = _truth_table()
    losses = rng.random(len(table))
    split, seen = split_segments(SSSLConfig(segment_seconds=1), table, losses, epoch=0)
    direct = split_clean_noisy(losses, table.label, num_classes=4, tau=0.5, seed=0)
    np.testing.assert_array_equal(seen, losses)
    np.testing.assert_allclose(split.clean_prob, direct.clean_prob)


def _planted_split(w: list[float], tau: float = 0.5):
    from sssl_dist.method.equations import split_from_clean_prob

    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    return split_from_clean_prob(np.array(w), labels, {}, 2, tau), labels


def test_uniform_selection_takes_the_same_number_from_each_class():
    """Class 0 is easy (all four in X), class 1 hard (one in X): five in X, so three from each
    class, the highest w first, and every w is kept."""
    from sssl_dist.method.split import uniform_selection

    split, labels = _planted_split([0.9, 0.8, 0.7, 0.6, 0.55, 0.3, 0.2, 0.1])
    assert split.class_counts_in_x == [4, 1]
    chosen = uniform_selection(split, labels, 2)
    assert chosen.clean_mask.tolist() == [1, 1, 1, 0, 1, 1, 1, 0]
    assert chosen.class_counts_in_x == [3, 3]
    np.testing.assert_allclose(chosen.clean_w[chosen.clean_mask], [0.9, 0.8, 0.7, 0.55, 0.3, 0.2])
    assert (chosen.clean_w[~chosen.clean_mask] == 0).all()


def test_uniform_selection_keeps_a_chosen_segment_in_x_even_at_w_zero():
    """X is where clean_w > 0: a segment chosen with a posterior of exactly 0 must not fall
    into U on the ranks."""
    from sssl_dist.method.split import uniform_selection

    with pytest.warns(DegenerateSplitWarning, match="class 1 is 0/4 of X"):
        split, labels = _planted_split([0.9, 0.8, 0.7, 0.6, 0.0, 0.0, 0.0, 0.0])
    chosen = uniform_selection(split, labels, 2)
    assert chosen.class_counts_in_x == [2, 2]
    assert int((chosen.clean_w > 0).sum()) == 4


def test_matched_confident_adds_the_segments_the_network_is_sure_of():
    """Segments 5 and 6 are in U by the GMM; the network gives 6 its label at 0.995 (above
    0.99): it joins X with that w, and 5 (0.9) stays in U. X's members are untouched."""
    from sssl_dist.method.split import matched_confident

    split, labels = _planted_split([0.9, 0.8, 0.7, 0.6, 0.55, 0.3, 0.2, 0.1])
    p_label = np.array([0.999, 0.2, 0.5, 0.5, 0.5, 0.9, 0.995, 0.4])
    agreed = matched_confident(split, p_label, labels, 2, 0.99)
    assert np.flatnonzero(agreed.clean_mask).tolist() == [0, 1, 2, 3, 4, 6]
    assert agreed.clean_w[6] == pytest.approx(0.995)
    assert agreed.clean_w[0] == pytest.approx(0.999)  # the larger of w and p
    assert agreed.class_counts_in_x == [4, 2]


def test_balance_and_agreement_are_applied_by_the_config():
    """Through `split_segments`: the config values select the functions above, on the GMM's
    split of planted losses (agreement reads the raw losses: p = exp(-CE))."""
    table = _truth_table()
    rng = np.random.default_rng(1)
    losses = rng.random(len(table)) * 3
    losses[0] = 0.001  # p = 0.999: the network agrees with segment 0's label
    base = SSSLConfig(segment_seconds=1, gmm_scope="global", tau=0.9)
    plain, _ = split_segments(base, table, losses, epoch=0)
    agreed, _ = split_segments(replace(base, split_agreement="matched"), table, losses, epoch=0)
    assert agreed.clean_mask[0] and (agreed.clean_mask >= plain.clean_mask).all()
    balanced, _ = split_segments(replace(base, split_balance="uniform"), table, losses, epoch=0)
    quota = int(np.ceil(plain.clean_mask.sum() / 4))
    sizes = np.bincount(table.label, minlength=4)
    assert balanced.class_counts_in_x == np.minimum(sizes, quota).tolist()


def test_regression_refuses_the_agreement_it_cannot_read():
    cfg = SSSLConfig(task="valence_reg", split_agreement="matched")
    with pytest.raises(ValueError, match="split_agreement"):
        task_of(cfg).check_config(cfg)
