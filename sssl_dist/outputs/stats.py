"""Fold statistics shared by every table: mean ± std over folds, and the comparison of two
learners on the same cross-validation folds.

Why not a paired t over folds: the k training sets of k-fold cross-validation overlap, so the
fold differences are correlated and mean / (sd / sqrt(k)) overstates certainty. The corrected
repeated k-fold t (Nadeau & Bengio 2003, "Inference for the generalization error";
Bouckaert & Frank 2004) inflates the variance by the test/train size ratio:

    t = mean(d) / sqrt((1 / (k r) + n_test / n_train) * var(d)),   k r - 1 degrees of freedom,

over the k·r differences d of r repetitions of k folds, with n_test / n_train = 1 / (k - 1).
The Bayesian correlated t-test (Benavoli et al. 2017, "Time for a change", JMLR 18) uses the
same variance; `baycomp` computes its posterior probabilities.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

# The gain a comparison must resolve to be practical (region of practical equivalence), as a
# fraction of accuracy: 1 point. Our choice; `sssl compare --rope` sets it.
DEFAULT_ROPE = 0.01
ALPHA = 0.05  # two-sided level of the confidence interval and the test
POWER = 0.80  # the power at which the detectable gain is stated
# Fold results are song counts over test-fold sizes, so a mean difference nearer 0 than this
# is floating-point rounding of a zero gain (it would otherwise claim 10^36 songs to resolve).
ZERO_GAIN = 1e-9
# A songs estimate above this many times the data set's songs is stated as "more than".
SONGS_BEYOND = 100


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (ddof 1) of the finite values; (nan, 0) when there are none."""
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if not arr.size:
        return float("nan"), 0.0
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def pct(mean: float, std: float) -> str:
    """'61.0 ± 8.9' for a fraction mean ± std, in %."""
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def pct_mean_std(metrics: dict[str, Any], key: str) -> str:
    """'61.0 ± 8.9' (in %) for metrics[key] = {mean, std}; '—' when the metric is absent."""
    if key not in metrics:
        return "—"
    return pct(metrics[key]["mean"], metrics[key]["std"])


def variance_factor(n: int, n_folds: int) -> float:
    """1 / n + n_test / n_train over n differences of k-fold CV, with n_test / n_train =
    1 / (k - 1) (Nadeau & Bengio; n = k r for r full repetitions)."""
    return 1.0 / n + 1.0 / (n_folds - 1)


@dataclass(frozen=True)
class CorrectedT:
    """The corrected repeated k-fold t-test of the differences d = b - a."""

    mean: float
    sd: float  # sample std of the k·r differences
    se: float  # sqrt(variance_factor · sd²)
    t: float
    df: int
    p: float  # two-sided
    ci: tuple[float, float]  # 1 - ALPHA confidence interval of the mean gain


def corrected_t(d: np.ndarray, n_folds: int) -> CorrectedT:
    """Nadeau & Bengio's corrected t over the differences `d` [n] of a k-fold CV (k·r of r
    repetitions, or a subset of one); t = ±inf, p = 0 when every difference
    is the same non-zero value, t = 0, p = 1 when they are all zero."""
    d = np.asarray(d, dtype=float)
    mean, df = float(d.mean()), d.size - 1
    mean = 0.0 if abs(mean) < ZERO_GAIN else mean
    sd = float(d.std(ddof=1)) if d.size > 1 else 0.0
    se = math.sqrt(variance_factor(d.size, n_folds)) * sd
    if se > 0:
        t = mean / se
        p = float(2 * sps.t.sf(abs(t), df))
        half = float(sps.t.ppf(1 - ALPHA / 2, df)) * se
    else:
        t = 0.0 if mean == 0 else math.copysign(math.inf, mean)
        p, half = (1.0 if mean == 0 else 0.0), 0.0
    return CorrectedT(mean, sd, se, t, df, p, (mean - half, mean + half))


def bayes_probabilities(test: CorrectedT, rope: float) -> tuple[float, float, float]:
    """(P(loss > rope), P(|gain| <= rope), P(gain > rope)) from the Bayesian correlated t-test
    (Benavoli et al. 2017): a Student posterior of the gain with the corrected t's mean, scale
    and degrees of freedom, as baycomp's CorrelatedTTest computes it (taking the variance from
    `test` also covers a subset of one CV's folds, which baycomp's own entry cannot)."""
    from baycomp.single import Posterior

    if rope <= 0:
        raise ValueError(f"rope must be > 0, got {rope}")
    p_loss, p_rope, p_gain = Posterior(test.mean, test.se**2, test.df, rope).probs()
    return float(p_loss), float(p_rope), float(p_gain)


def detectable_gain(se: float, df: int) -> float:
    """The smallest true gain the design detects with probability POWER at level ALPHA
    (two-sided), under the normal-approximation power model with Student quantiles:
    (t_{1 - ALPHA/2, df} + t_{POWER, df}) · se."""
    return float((sps.t.ppf(1 - ALPHA / 2, df) + sps.t.ppf(POWER, df)) * se)


def songs_to_resolve(gain: float, mde: float, songs: int) -> float:
    """About how many songs would make `gain` the detectable gain, keeping k and r. Model:
    the spread of the fold differences is the sampling noise of test-fold accuracy, so their
    sd (and the detectable gain) shrinks as 1 / sqrt(songs)."""
    if gain == 0 or not math.isfinite(mde) or mde == 0:
        return math.nan
    return songs * (mde / abs(gain)) ** 2


@dataclass(frozen=True)
class PairedComparison:
    """Arm b against arm a over the same k folds x r repetitions: the gain b - a."""

    n_folds: int
    repeats: int
    rope: float
    mean: float
    sd: float
    t: float
    df: int
    p: float
    ci: tuple[float, float]
    p_loss: float
    p_rope: float
    p_gain: float
    wins: int
    ties: int
    losses: int
    t_bound: float  # the corrected t with infinitely many repeats: no repeat count exceeds it
    mde: float  # smallest gain detected at POWER
    songs: int | None  # songs in the data set (None: unknown)
    songs_needed: float  # songs that would resolve the measured gain (nan: not estimable)
    verdict: str  # "helps", "hurts", "equivalent", "inconclusive"
    span: float = 1.0  # the largest possible |gain| (1 for accuracy and AUC, both in [0, 1])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def n_results(self) -> int:
        return self.df + 1

    @property
    def no_spread(self) -> bool:
        """Every fold result differs by the same amount: there is no CI to give."""
        return self.sd == 0

    @property
    def ci_beyond_range(self) -> bool:
        """The CI reaches past any possible gain: too few fold results to say anything."""
        return self.ci[0] < -self.span or self.ci[1] > self.span

    @property
    def resolvable(self) -> bool:
        """Whether the detectable gain is a gain that can happen at all."""
        return self.mde <= self.span

    def sentence(self, scale: float = 100.0, unit: str = " points", digits: int = 1) -> str:
        """The one-line verdict, figures scaled (100: accuracy in points) and shown with
        `digits` decimals."""
        n, mean = self.n_results, signed_points(scale * self.mean, unit, digits)
        if self.no_spread:
            gain = (
                f"{mean} on every one of the {n} fold results (no spread between folds, so no CI)"
            )
        else:
            lo, hi = (scale * c for c in self.ci)
            gain = f"{mean} [{lo:+.{digits}f}, {hi:+.{digits}f}]"
        if self.verdict == "helps":
            return f"helps by {gain}"
        if self.verdict == "hurts":
            return f"hurts by {gain}"
        if self.verdict == "equivalent":
            return f"no difference beyond the ROPE (±{scale * self.rope:.{digits}f}{unit}): {gain}"
        if self.ci_beyond_range:
            return (
                f"cannot say with {n} fold results: {mean}, but its 95 % CI is wider than any "
                f"possible gain (±{scale * self.span:.{max(digits - 1, 0)}f}{unit}); more folds "
                "or --repeats narrow it"
            )
        text = f"inconclusive: {gain}"
        if not self.resolvable:
            return text + (
                f"; with {n} fold results no possible gain can be resolved (the detectable "
                f"gain would be {scale * self.mde:.{digits}f}{unit})"
            )
        resolves = f"this data resolves gains of {scale * self.mde:.{digits}f}{unit} or more"
        if self.mean == 0:
            return f"{text}; no gain was measured, and {resolves}"
        text += f"; {resolves}"
        if not (self.songs and math.isfinite(self.songs_needed)):
            return text
        if self.songs_needed > SONGS_BEYOND * self.songs:
            return text + (
                f"; more than {SONGS_BEYOND} times these {self.songs} songs would be needed "
                f"to resolve {mean}"
            )
        return text + f"; about {_round_up(self.songs_needed)} songs would resolve {mean}"


def signed_points(x: float, unit: str, digits: int = 1) -> str:
    """'+3.2 points'; never '-0.0'."""
    return f"{0.0 if round(x, digits) == 0 else x:+.{digits}f}{unit}"


def _round_up(n: float) -> int:
    """Two significant figures, rounded up: an estimate, not a count."""
    if n < 100:
        return int(math.ceil(n))
    step = 10 ** (int(math.log10(n)) - 1)
    return int(math.ceil(n / step) * step)


def decide(test: CorrectedT, rope: float) -> str:
    """The verdict rule, fixed before any comparison is run:
    - "equivalent" when the whole confidence interval lies inside ±rope;
    - "helps" / "hurts" when it excludes 0 (p < ALPHA) on the positive / negative side;
    - "inconclusive" otherwise."""
    lo, hi = test.ci
    if -rope <= lo and hi <= rope:
        return "equivalent"
    if lo > 0:
        return "helps"
    if hi < 0:
        return "hurts"
    return "inconclusive"


def compare_paired(
    a: list[float] | np.ndarray,
    b: list[float] | np.ndarray,
    n_folds: int,
    repeats: int = 1,
    rope: float = DEFAULT_ROPE,
    songs: int | None = None,
    span: float = 1.0,
) -> PairedComparison:
    """b against a, paired by position over the fold results of r repetitions of k-fold CV
    (k·r of them, or a subset; any order both share). `songs`: the data set's size, for the
    songs estimate; `span`: the largest possible |b - a| (1 for figures in [0, 1])."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired results must be two vectors of one length: {a.shape} {b.shape}")
    if n_folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {n_folds}")
    if a.size < 2:
        raise ValueError(f"{a.size} paired result(s): a comparison needs at least 2")
    d = b - a
    test = corrected_t(d, n_folds)
    p_loss, p_rope, p_gain = bayes_probabilities(test, rope)
    mde = detectable_gain(test.se, test.df)
    bound_se = math.sqrt(1.0 / (n_folds - 1)) * test.sd
    t_bound = test.mean / bound_se if bound_se > 0 else test.t
    return PairedComparison(
        n_folds=n_folds,
        repeats=repeats,
        rope=rope,
        mean=test.mean,
        sd=test.sd,
        t=test.t,
        df=test.df,
        p=test.p,
        ci=test.ci,
        p_loss=p_loss,
        p_rope=p_rope,
        p_gain=p_gain,
        wins=int((d > 0).sum()),
        ties=int((d == 0).sum()),
        losses=int((d < 0).sum()),
        t_bound=float(t_bound),
        mde=mde,
        songs=songs,
        songs_needed=songs_to_resolve(test.mean, mde, songs) if songs else math.nan,
        verdict=decide(test, rope),
        span=span,
    )


def paired_difference(
    a: dict[str, Any], b: dict[str, Any], key: str = "test_acc", n_folds: int | None = None
) -> dict[str, float]:
    """b - a on the folds both report ({"per_fold": {fold: {key: value}}}): mean, std, the
    corrected t (k = `n_folds`, default the number of shared folds) with its CI and p, and on
    how many folds b was better / worse."""
    folds = sorted(set(a["per_fold"]) & set(b["per_fold"]))
    d = np.array([b["per_fold"][f][key] - a["per_fold"][f][key] for f in folds], dtype=float)
    counts = {"folds": d.size, "better": int((d > 0).sum()), "worse": int((d < 0).sum())}
    if d.size < 2:
        mean = float(d.mean()) if d.size else float("nan")
        nan = float("nan")
        return {"mean": mean, "std": 0.0, "t": nan, "p": nan, "ci": (nan, nan), **counts}
    test = corrected_t(d, n_folds or d.size)
    return {"mean": test.mean, "std": test.sd, "t": test.t, "p": test.p, "ci": test.ci, **counts}
