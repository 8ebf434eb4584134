"""The comparison statistics against a reference (baycomp), and the verdict rule on planted
per-fold numbers: helps, hurts, equivalent, inconclusive."""

from __future__ import annotations

import math

import baycomp
import numpy as np
import pytest

from sssl_dist.outputs.stats import compare_paired, corrected_t, paired_difference


def _planted(gain: float, spread: float, k: int = 10, r: int = 1, seed: int = 0):
    rng = np.random.default_rng(seed)
    a = 0.6 + 0.05 * rng.standard_normal(k * r)
    noise = rng.standard_normal(k * r)
    noise = (noise - noise.mean()) / noise.std(ddof=1)  # exactly mean 0, sd 1
    return a, a + gain + spread * noise


@pytest.mark.parametrize("k,r", [(5, 1), (10, 1), (5, 3), (10, 10)])
def test_corrected_t_p_and_bayes_equal_baycomp(k, r):
    a, b = _planted(0.02, 0.03, k, r, seed=k + r)
    c = compare_paired(a, b, k, r, rope=0.01)
    mean, var, df = baycomp.CorrelatedTTest.compute_statistics(a, b, runs=r)
    assert c.mean == pytest.approx(mean, abs=1e-12)
    assert c.df == df
    # The corrected t's variance is baycomp's Nadeau-Bengio variance.
    assert (c.mean / c.t) ** 2 == pytest.approx(var, rel=1e-9)
    # Two-sided p from the same Student posterior with no ROPE.
    p_left, p_right = baycomp.CorrelatedTTest.probs(a, b, rope=0, runs=r)
    assert c.p == pytest.approx(2 * min(p_left, p_right), abs=1e-9)
    p_loss, p_rope, p_gain = baycomp.two_on_single(a, b, rope=0.01, runs=r)
    assert (c.p_loss, c.p_rope, c.p_gain) == pytest.approx((p_loss, p_rope, p_gain), abs=1e-9)
    # The CI is mean ± t_{0.975, df} se.
    from scipy import stats

    half = stats.t.ppf(0.975, df) * math.sqrt(var)
    assert c.ci == pytest.approx((mean - half, mean + half), abs=1e-9)


def test_the_issues_recomputed_figure():
    """With k = 5 and r = 1 the corrected t is the naive t times sqrt(1/5) / sqrt(1/5 + 1/4)."""
    d = np.array([0.10, -0.02, 0.12, 0.03, 0.06])
    naive = d.mean() / (d.std(ddof=1) / math.sqrt(5))
    assert corrected_t(d, 5).t == pytest.approx(naive * math.sqrt(0.2 / 0.45), rel=1e-12)


def test_an_arm_against_itself_is_exactly_no_difference():
    a, _ = _planted(0.0, 0.0)
    c = compare_paired(a, a.copy(), 10)
    assert c.mean == 0.0 and c.ci == (0.0, 0.0) and c.p == 1.0
    assert c.verdict == "equivalent" and c.ties == 10
    assert c.sentence().startswith("no difference beyond the ROPE")


def test_verdicts_on_planted_numbers():
    helps = compare_paired(*_planted(0.08, 0.02), 10, songs=900)
    assert helps.verdict == "helps" and helps.ci[0] > 0 and helps.wins == 10
    assert helps.sentence().startswith("helps by +8.0 points [")
    hurts = compare_paired(*_planted(-0.08, 0.02), 10)
    assert hurts.verdict == "hurts" and hurts.ci[1] < 0
    same = compare_paired(*_planted(0.0005, 0.002), 10, rope=0.01)
    assert same.verdict == "equivalent" and same.ci[0] >= -0.01 and same.ci[1] <= 0.01
    assert same.p_rope > 0.95
    unclear = compare_paired(*_planted(0.03, 0.10, k=5), 5, songs=120)
    assert unclear.verdict == "inconclusive"
    line = unclear.sentence()
    assert line.startswith("inconclusive: +3.0 points [") and "songs would resolve +3.0" in line
    # The detectable gain exceeds the measured one, and more songs are needed than there are.
    assert unclear.mde > 0.03 and unclear.songs_needed > 120


def test_repeats_cannot_beat_the_bound():
    """No number of repeats takes the corrected t past mean / (sd sqrt(1/(k-1)))."""
    for r in (1, 2, 5, 50):
        c = compare_paired(*_planted(0.05, 0.05, 5, r), 5, r)
        assert abs(c.t) < abs(c.t_bound) + 1e-12
        assert c.t_bound == pytest.approx(c.mean / (c.sd * math.sqrt(1 / 4)), rel=1e-12)


def test_songs_needed_makes_the_gain_detectable():
    """The songs model: sd shrinks as 1 / sqrt(songs), so at songs_needed the detectable gain
    equals the measured gain."""
    c = compare_paired(*_planted(0.02, 0.05), 10, songs=200)
    assert c.mde * math.sqrt(200 / c.songs_needed) == pytest.approx(abs(c.mean), rel=1e-9)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="at least 2"):
        compare_paired([0.5], [0.6], 5)
    with pytest.raises(ValueError, match="one length"):
        compare_paired([0.5, 0.6], [0.5], 2)


def test_paired_difference_uses_the_corrected_t():
    a = {"per_fold": {0: {"v": 0.5}, 1: {"v": 0.6}, 2: {"v": 0.7}, 3: {"v": 0.4}}}
    b = {"per_fold": {0: {"v": 0.6}, 1: {"v": 0.6}, 2: {"v": 0.9}, 3: {"v": 0.5}, 9: {"v": 1}}}
    d = paired_difference(a, b, "v", n_folds=10)  # fold 9 is in b only: not compared
    diffs = np.array([0.1, 0.0, 0.2, 0.1])
    assert d["folds"] == 4 and d["better"] == 3 and d["worse"] == 0
    expected = diffs.mean() / math.sqrt((1 / 4 + 1 / 9) * diffs.var(ddof=1))
    assert d["t"] == pytest.approx(expected, rel=1e-12)


def test_a_sweep_compares_its_choice_with_the_defaults_on_the_same_folds():
    from sssl_dist.config import SSSLConfig
    from sssl_dist.outputs.tables import chosen_against_defaults

    base = SSSLConfig(n_folds=5)
    folds = {str(f): {"test_acc": 0.60 + 0.01 * f} for f in range(5)}
    better = {str(f): {"test_acc": 0.70 + 0.01 * f + 0.002 * (f % 2)} for f in range(5)}
    summary = {
        "rows": [{"config": "tau=0.5", "tau": 0.5}, {"config": "tau=0.7", "tau": 0.7}],
        "honest": {"config": "tau=0.7", "tau": 0.7},
        "per_config": {"tau=0.5": folds, "tau=0.7": better},
    }
    (line, _) = chosen_against_defaults(base, summary)
    assert "(tau=0.5) on the same 5 folds" in line and "helps by +10." in line
    summary["honest"] = {"config": "tau=0.5", "tau": 0.5}  # the choice is the default
    assert chosen_against_defaults(base, summary) == []


def test_a_sweep_without_ray_train_workers_is_refused_before_it_starts(tmp_path):
    from sssl_dist.config import SSSLConfig
    from tuning.sweep import run_sweep

    with pytest.raises(ValueError, match="needs Ray Train workers"):
        run_sweep("unused.yaml", SSSLConfig(), "unused", tmp_path, workers=0)


def test_a_gain_of_floating_point_zero_claims_no_songs_and_prints_no_minus_zero():
    """Fold accuracies whose differences cancel to -1e-17 rather than 0 (0.1 + 0.2 - 0.3):
    a zero gain, which no number of songs resolves (before: 'about 2.1e36 songs')."""
    a = np.array([0.3, 0.6, 0.5, 0.4, 0.7])
    b = a + np.array([0.1, 0.2, -0.3, 0.05, -0.05])
    assert (b - a).mean() != 0  # the premise: the raw mean is rounding noise
    c = compare_paired(a, b, 5, songs=120)
    assert c.mean == 0.0 and math.isnan(c.songs_needed) and c.verdict == "inconclusive"
    line = c.sentence()
    assert line.startswith("inconclusive: +0.0 points [") and "-0.0" not in line
    assert "no gain was measured" in line and "songs would" not in line


def test_no_spread_between_folds_says_so_instead_of_a_zero_width_ci():
    a = np.array([0.5, 0.6, 0.7, 0.55])
    helps = compare_paired(a, a + 0.05, 4)
    assert helps.no_spread and helps.verdict == "helps"
    assert helps.sentence() == (
        "helps by +5.0 points on every one of the 4 fold results (no spread between folds, "
        "so no CI)"
    )
    same = compare_paired(a, a.copy(), 4)
    assert same.sentence().startswith("no difference beyond the ROPE (±1.0 points): +0.0 points")
    assert "no spread between folds" in same.sentence()


def test_too_few_folds_cannot_say_rather_than_print_an_impossible_ci():
    """2 folds: df = 1, so the CI is ±12.7 standard errors, wider than accuracy can differ."""
    c = compare_paired([0.5, 0.7], [0.7, 0.5], 2, songs=16)
    assert c.ci[0] < -1 and c.ci[1] > 1 and c.ci_beyond_range and not c.resolvable
    line = c.sentence()
    assert line.startswith("cannot say with 2 fold results: +0.0 points")
    assert "wider than any possible gain (±100 points)" in line
    assert "[" not in line and "resolves gains of" not in line and "songs" not in line
    # A detectable gain beyond 100 points is not offered as one (before: '203.3 points').
    wide = compare_paired([0.5] * 4, [0.72, 0.3, 0.7, 0.3], 2, songs=16)
    assert not wide.ci_beyond_range and not wide.resolvable
    assert wide.sentence().endswith(
        f"with 4 fold results no possible gain can be resolved (the detectable gain would be "
        f"{100 * wide.mde:.1f} points)"
    )


def test_a_songs_estimate_far_past_the_data_is_stated_as_more_than():
    c = compare_paired(*_planted(0.001, 0.05, k=5), 5, songs=120)
    assert c.songs_needed > 100 * 120
    assert c.sentence().endswith(
        "more than 100 times these 120 songs would be needed to resolve +0.1 points"
    )


def test_the_comparison_table_gives_the_same_honest_cells():
    from sssl_dist.outputs.tables import _stats_row

    row = lambda c: _stats_row("b − a", {"stats": c.to_dict(), "verdict": ""})  # noqa: E731
    tiny = row(compare_paired([0.5, 0.7], [0.7, 0.5], 2, songs=16))
    assert "+0.0 [wider than ±100]" in tiny and "none possible" in tiny
    flat = row(compare_paired([0.5, 0.6, 0.7], [0.55, 0.65, 0.75], 3))
    assert "+5.0 (no spread between folds) | — | — |" in flat and "inf" not in flat
    far = row(compare_paired(*_planted(0.001, 0.05, k=5), 5, songs=120))
    assert "> 100x these" in far
