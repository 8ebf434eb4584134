"""The SSSL method of Sun et al., one function per equation (Eq. 2-9), and the candidate fixes
measured beside it (Mean Teacher's EMA, PreciseBN), one function each.

Nothing here knows about Ray or distribution: the training loop in `train.py` composes these
functions. Shapes use B for batch, K for classes, N for all training segments.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import expit
from sklearn.mixture import GaussianMixture
from torch import nn

log = logging.getLogger(__name__)

# Below this spread (after min-max normalisation the losses span [0, 1]) the losses carry no
# information about which samples are clean; we call the split degenerate. Our choice.
_EQUAL_LOSS_EPS = 1e-8


class DegenerateSplitWarning(UserWarning):
    """The clean/noisy split could not be fit or left a set or a class (nearly) empty."""


# --------------------------------------------------------------------------------------------
# Eq. 2: per-sample cross-entropy
# --------------------------------------------------------------------------------------------
def per_sample_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Eq. 2 without the mean: l_i = -sum_j y_ij log f_j(θ, x_i).

    logits [B, K], targets [B] (class indices) -> losses [B]. The GMM needs one loss per sample,
    hence reduction='none'.
    """
    return F.cross_entropy(logits, targets, reduction="none")


# --------------------------------------------------------------------------------------------
# Eq. 3 and §2.1.2: two-component GMM on the per-sample losses
# --------------------------------------------------------------------------------------------
@dataclass
class GmmFit:
    """Result of one two-component GMM fit on a vector of losses.

    clean_prob [N]: w_i, the posterior of the low-mean component (§2.1.2).
    means/variances/weights: of the (clean, noisy) components, on the min-max normalised scale.
    degenerate: why the fit was skipped, or "" when it ran.
    """

    clean_prob: np.ndarray
    means: tuple[float, float] = (float("nan"), float("nan"))
    variances: tuple[float, float] = (float("nan"), float("nan"))
    weights: tuple[float, float] = (float("nan"), float("nan"))
    degenerate: str = ""


def normalise_losses(losses: np.ndarray) -> np.ndarray | None:
    """Min-max scale to [0, 1] as DivideMix does; None when all losses are (nearly) equal."""
    lo, hi = float(np.min(losses)), float(np.max(losses))
    if hi - lo < _EQUAL_LOSS_EPS:
        return None
    scaled = np.subtract(losses, lo)  # one buffer, scaled in place (10^7 at scale)
    scaled /= hi - lo
    return scaled


def strided_subsample(x: np.ndarray, max_fit: int | None) -> np.ndarray:
    """At most `max_fit` values of `x`, evenly strided (all of them when there are fewer)."""
    if max_fit is None or x.size <= max_fit:
        return x
    step = x.size / max_fit
    return x[(np.arange(max_fit) * step).astype(np.int64)]


def fit_loss_gmm(
    losses: np.ndarray,
    *,
    max_iter: int = 10,
    tol: float = 1e-2,
    reg_covar: float = 5e-4,
    max_fit: int | None = None,
    seed: int = 0,
) -> GmmFit:
    """Eq. 3: p(l) = sum_k λ_k p(l | k) with K = 2, fit by EM; returns w_i = p(clean | l_i).

    losses [N] (float; NaN allowed). With more than `max_fit` finite losses, EM runs on an
    evenly strided subsample of max_fit of them (losses come in segment-id order, so the
    stride samples every song alike), and the posteriors are computed for all N: a two-
    component 1-D fit needs no more, and the full fit grows to seconds at 10^7 (bench_gmm.py).
    Edge cases, each with a defined outcome:
    - NaN losses: excluded from the fit and given w = 0 (a sample whose loss cannot be computed
      is not trusted as clean);
    - fewer than 2 finite losses, or all equal: no fit; every finite sample gets w = 1 (nothing
      distinguishes clean from noisy, so keep the labels) and `degenerate` says why.
    """
    losses = np.asarray(losses, dtype=np.float64)
    finite = np.isfinite(losses)
    n_finite = int(finite.sum())
    # w = 1 on the finite losses, 0 on NaN: the outcome when there is nothing to fit.
    keep_all = finite.astype(np.float64)
    if n_finite < 2:
        return GmmFit(clean_prob=keep_all, degenerate=f"only {n_finite} finite loss(es)")
    # All finite (the usual case): no masked copy in and no masked scatter out (10^7 at scale).
    all_finite = n_finite == losses.size
    scaled = normalise_losses(losses if all_finite else losses[finite])
    if scaled is None:
        return GmmFit(clean_prob=keep_all, degenerate="all losses equal")
    gmm = GaussianMixture(
        n_components=2, max_iter=max_iter, tol=tol, reg_covar=reg_covar, random_state=seed
    )
    with warnings.catch_warnings():
        # EM stopping at max_iter=10 is DivideMix's deliberate choice, not a problem.
        warnings.filterwarnings("ignore", message=".*did not converge.*")
        gmm.fit(strided_subsample(scaled, max_fit).reshape(-1, 1))
    means = gmm.means_.ravel()
    variances = gmm.covariances_.ravel()
    clean = int(np.argmin(means))  # §2.1.2: the component with the smaller mean is clean
    order = (clean, 1 - clean)
    posterior = clean_posterior(
        scaled, means[list(order)], variances[list(order)], gmm.weights_[list(order)]
    )
    if all_finite:
        w = posterior
    else:
        w = np.zeros(losses.shape[0], dtype=np.float64)
        w[finite] = posterior
    return GmmFit(
        clean_prob=w,
        means=tuple(float(means[i]) for i in order),
        variances=tuple(float(variances[i]) for i in order),
        weights=tuple(float(gmm.weights_[i]) for i in order),
    )


def clean_posterior(
    x: np.ndarray, means: np.ndarray, variances: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """w_i = p(clean | l_i) of a fitted two-component 1-D GMM, components ordered (clean,
    noisy): x [N] -> [N]. The formula of GaussianMixture.predict_proba, written out in numpy:
    sklearn's general path takes seconds at 10^7 losses, this one a fraction of a second.

    w = 1 / (1 + exp(d)), d = log(λ_n N(x; μ_n, σ_n²)) - log(λ_c N(x; μ_c, σ_c²)).

    d is a quadratic in x, evaluated in Horner form in one buffer: five passes over x and one
    allocation instead of ten temporaries, which is a fifth of the split's time at 10^7 losses.
    """
    (mc, mn), (vc, vn), (lc, ln) = (
        np.asarray(v, dtype=np.float64) for v in (means, variances, weights)
    )
    # d = c2 x² + c1 x + c0, expanded from (x - μ_c)²/(2σ_c²) - (x - μ_n)²/(2σ_n²) + constant.
    c2 = 1 / (2 * vc) - 1 / (2 * vn)
    c1 = mn / vn - mc / vc
    c0 = mc**2 / (2 * vc) - mn**2 / (2 * vn) + np.log(ln / lc) - 0.5 * np.log(vn / vc)
    d = np.multiply(x, c2, dtype=np.float64)
    d += c1
    d *= x
    d += c0
    np.negative(d, out=d)
    return expit(d, out=d)


@dataclass
class LossMemory:
    """Temporal averaging of per-sample losses over epochs (the "mean_loss" selection).

    Our addition to the paper, after AUM (Pleiss et al. 2020, which averages margins over
    epochs for the same reason): a network that starts to memorise a wrong label lowers that
    segment's loss in one epoch, but not its mean over all epochs so far. NaN losses are
    skipped, per sample, so one bad epoch does not poison the mean. sums, counts [N].
    """

    sums: np.ndarray
    counts: np.ndarray

    @classmethod
    def empty(cls, n: int) -> LossMemory:
        return cls(np.zeros(n), np.zeros(n, dtype=np.int64))

    def add(self, losses: np.ndarray) -> np.ndarray:
        """Record this epoch's losses [N] and return the mean so far [N] (NaN where a sample
        never had a finite loss)."""
        finite = np.isfinite(losses)
        self.sums[finite] += losses[finite]
        self.counts[finite] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.counts > 0, self.sums / np.maximum(self.counts, 1), np.nan)


@dataclass
class Split:
    """The clean/noisy partition of one epoch: X = {w > τ}, U = the rest (§2.1.2)."""

    clean_prob: np.ndarray  # w [N], p(clean | loss)
    clean_mask: np.ndarray  # bool [N], w > τ: True for X
    fits: dict[str, GmmFit]  # "all" for the global split, "class <k>" for per-class fits
    class_counts_in_x: list[int]  # |X ∩ class k| for each inherited class k
    warnings: list[str] = field(default_factory=list)

    @property
    def clean_fraction(self) -> float:
        return float(self.clean_mask.mean()) if self.clean_mask.size else 0.0

    @property
    def clean_w(self) -> np.ndarray:
        """float32 [N]: w on X, 0 on U. What the ranks train with: the split (X = clean_w > 0)
        and each X sample's weight for `clean_targets: refined`, in one vector."""
        return np.where(self.clean_mask, self.clean_prob, 0.0).astype(np.float32)


def split_clean_noisy(
    losses: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    tau: float,
    mode: str = "per_class",
    min_class_share: float = 0.05,
    max_iter: int = 10,
    tol: float = 1e-2,
    reg_covar: float = 5e-4,
    max_fit: int | None = None,
    seed: int = 0,
) -> Split:
    """Split the training set into X (clean) and U (noisy) from per-sample losses.

    losses [N], labels [N] (inherited labels). mode="global" is the paper: one GMM over all
    losses. mode="per_class" fits one GMM per inherited class, so a class whose losses are all
    high (a hard class, not a noisy one) cannot vanish from X. Both warn (and log) when X or U is
    empty or a class falls under `min_class_share` of X. `max_fit` caps the losses EM sees in
    all (per class: in proportion to the class's size, a class-stratified subsample); below it
    every loss is fitted.
    """
    losses = np.asarray(losses, dtype=np.float64)
    labels = np.asarray(labels)
    # One pass over the labels (10^7 at scale), not one per use.
    members_of = [labels == k for k in range(num_classes)]
    sizes = [int(m.sum()) for m in members_of]
    kw = dict(max_iter=max_iter, tol=tol, reg_covar=reg_covar, max_fit=max_fit, seed=seed)
    fits: dict[str, GmmFit] = {}
    if mode == "global":
        fits["all"] = fit_loss_gmm(losses, **kw)
        w = fits["all"].clean_prob
    elif mode == "per_class":
        w, n = np.zeros_like(losses), max(losses.size, 1)
        for k, members in enumerate(members_of):
            if sizes[k]:
                cap = None if max_fit is None else max(2, max_fit * sizes[k] // n)
                fits[f"class {k}"] = fit_loss_gmm(losses[members], **{**kw, "max_fit": cap})
                w[members] = fits[f"class {k}"].clean_prob
    else:
        raise ValueError(f"unknown GMM scope {mode!r}")

    return split_from_clean_prob(w, labels, fits, num_classes, tau, min_class_share, sizes)


def split_from_clean_prob(
    w: np.ndarray,
    labels: np.ndarray,
    fits: dict[str, GmmFit],
    num_classes: int,
    tau: float,
    min_class_share: float = 0.05,
    sizes: list[int] | None = None,
) -> Split:
    """§2.1.2: X = {w > τ}, U = the rest, from clean posteriors w [N] however they were found
    (the GMMs of `split_clean_noisy`, or the truth for the oracle split); warns (and logs)
    when X or U is empty or a class falls under `min_class_share` of X. `sizes`: the number
    of segments of each inherited class, when the caller has counted them already."""
    labels = np.asarray(labels)
    if sizes is None:
        sizes = np.bincount(labels, minlength=num_classes)[:num_classes].tolist()
    clean_mask = w > tau
    # One bincount over X's labels instead of one masked count per class (10^7 at scale).
    counts = np.bincount(labels[clean_mask], minlength=num_classes)[:num_classes].tolist()
    notes = [f"{name}: {f.degenerate}" for name, f in fits.items() if f.degenerate]
    notes += _split_notes(clean_mask, counts, sizes, min_class_share)
    for note in notes:
        warnings.warn(note, DegenerateSplitWarning, stacklevel=3)
    return Split(
        clean_prob=w, clean_mask=clean_mask, fits=fits, class_counts_in_x=counts, warnings=notes
    )


# --------------------------------------------------------------------------------------------
# Eq. 4-5: sharpened pseudo soft labels for U
# --------------------------------------------------------------------------------------------
def sharpen(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 4: ŷ = S(p) = p^(1/T) / sum_k p_k^(1/T).

    probs [B, K] on the simplex -> [B, K] on the simplex. The paper's typeset Eq. 4 is garbled
    ("f^{-k 1/T}"); this is the standard temperature sharpening of MixMatch/DivideMix that the
    text describes. Computed as softmax(log p / T) so T -> 0 gives a one-hot vector without
    overflow, and T = 1 returns p unchanged.
    """
    logp = torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))
    return torch.softmax(logp / temperature, dim=-1)


def _split_notes(
    clean_mask: np.ndarray, counts: list[int], sizes: list[int], min_class_share: float
) -> list[str]:
    """What is wrong with a split: an empty X or U, or a class under `min_class_share` of X."""
    n_x = int(clean_mask.sum())
    if n_x == 0:
        return ["X is empty: every sample is treated as noisy this epoch"]
    notes = ["U is empty: every sample is treated as clean this epoch"] * (n_x == clean_mask.size)
    for k, size in enumerate(sizes):
        if size and counts[k] / n_x < min_class_share:
            notes.append(f"class {k} is {counts[k]}/{n_x} of X (< {min_class_share:.0%})")
    return notes


def pseudo_label(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 5: Û = {(x_i, ŷ_i) | x_i ∈ U}, ŷ_i = sharpen(f(θ, x_i)); probs [B, K] -> [B, K].

    The caller computes `probs` without gradient: the targets are fixed for the step.
    """
    return sharpen(probs.detach(), temperature)


def refine_labels(
    one_hot: torch.Tensor, probs: torch.Tensor, w: torch.Tensor, temperature: float
) -> torch.Tensor:
    """DivideMix's label refinement of X (Li et al. 2020, §3.2, Eq. 3-4), not in the paper:
    ȳ = w y + (1 - w) p, then sharpened as Eq. 4: ŷ = S(ȳ).

    one_hot [B, K] inherited labels, probs [B, K] the network's prediction (no gradient), w [B]
    the clean posterior of each X sample. A segment the GMM is nearly sure of (w -> 1) keeps
    its label; a borderline one (w just above τ) leans towards what the network sees, so a
    wrong label that slipped into X is trained on less hard.
    """
    w = w.detach().to(probs.dtype).unsqueeze(1)
    return sharpen(w * one_hot.to(probs.dtype) + (1 - w) * probs.detach(), temperature)


# --------------------------------------------------------------------------------------------
# Eq. 6: mixup over X ∪ Û
# --------------------------------------------------------------------------------------------
def mixup(
    x: torch.Tensor, y: torch.Tensor, alpha: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Eq. 6: x = δ x_p + (1 - δ) x_q, y = δ y_p + (1 - δ) y_q, δ ~ Beta(α, α).

    x [B, ...], y [B, K] soft targets -> (mixed x [B, ...], mixed y [B, K], δ). Each sample p is
    paired with a random partner q (a permutation of the batch). As in DivideMix we use
    δ = max(δ, 1 - δ), so the mixed sample stays closer to its own input and label.
    """
    if alpha <= 0 or x.shape[0] < 2:
        return x, y, 1.0
    beta = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha)))
    if generator is None:
        delta = float(beta.sample())
    else:
        # Beta(α, α) from two Gammas, drawn with our generator for reproducibility.
        u = torch._standard_gamma(torch.full((2,), float(alpha)), generator=generator)
        delta = float(u[0] / u.sum())
    delta = max(delta, 1.0 - delta)
    perm = torch.randperm(x.shape[0], generator=generator, device="cpu").to(x.device)
    return delta * x + (1 - delta) * x[perm], delta * y + (1 - delta) * y[perm], delta


# --------------------------------------------------------------------------------------------
# Eq. 7-9: the losses
# --------------------------------------------------------------------------------------------
def mix_loss(logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    """Eq. 7: L_MIX = -1/n sum_i sum_k y_ik log f_k(x_i), the CE of mixed soft targets.

    logits [B, K], soft_targets [B, K] -> scalar. With y = δ y_p + (1 - δ) y_q this equals
    δ l_p + (1 - δ) l_q, the form the paper writes. An empty batch gives 0.
    """
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    return -(soft_targets * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def rdrop_kl(logits1: torch.Tensor, logits2: torch.Tensor) -> torch.Tensor:
    """Eq. 8: L_KL = 1/2 (KL(P1 || P2) + KL(P2 || P1)), averaged over the samples of U.

    logits1, logits2 [B, K] from two dropout-active passes over the same inputs -> scalar.
    The paper writes a sum over U; we average so λ does not depend on the batch size (the
    R-Drop reference code does the same). An empty U gives 0.
    """
    if logits1.shape[0] == 0:
        return logits1.sum() * 0.0
    logp1, logp2 = F.log_softmax(logits1, dim=-1), F.log_softmax(logits2, dim=-1)
    kl12 = F.kl_div(logp2, logp1, log_target=True, reduction="none").sum(-1)  # KL(P1 || P2)
    kl21 = F.kl_div(logp1, logp2, log_target=True, reduction="none").sum(-1)  # KL(P2 || P1)
    return 0.5 * (kl12 + kl21).mean()


def total_loss(l_mix: torch.Tensor, l_kl: torch.Tensor, lambda_kl: float) -> torch.Tensor:
    """Eq. 9: L = L_MIX + λ L_KL (λ = 0 gives the paper's ablation "Proposed*")."""
    return l_mix + lambda_kl * l_kl


# --------------------------------------------------------------------------------------------
# Candidate fixes beside the paper's step (config.py: pseudo_label_network, bn_stats)
# --------------------------------------------------------------------------------------------
def ema_teacher(model: nn.Module) -> nn.Module:
    """The Mean Teacher (Tarvainen & Valpola 2017): a copy of `model` that only `ema_update`
    changes, never a gradient."""
    teacher = copy.deepcopy(model)
    teacher.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, model: nn.Module, decay: float) -> None:
    """Mean Teacher's update after each optimiser step: θ'_t = α θ'_{t-1} + (1 - α) θ_t, α = decay.

    Applied to every floating-point entry of the state: weights, and BatchNorm's running
    statistics, so the teacher's eval mode normalises with statistics of its own kind (timm's
    ModelEmaV2 does the same); integer entries (BN's batch counter) are copied. Written as the
    reference code writes it (`ema.mul_(α).add_(θ, alpha=1 - α)`). Under DDP every rank's
    weights are equal after the step, so every rank's teacher weights stay equal too.
    """
    for mine, theirs in zip(
        teacher.state_dict().values(), model.state_dict().values(), strict=True
    ):
        if mine.is_floating_point():
            mine.mul_(decay).add_(theirs, alpha=1 - decay)
        else:
            mine.copy_(theirs)


@torch.no_grad()
def clean_bn_statistics(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """PreciseBN (Wu & Johnson 2021, §3), as SWA's `update_bn` (Izmailov et al. 2018): replace
    every BatchNorm's running statistics by their average over `batches` (inputs [B, ...]),
    computed with the model's current weights, forgetting what the training forwards left.

    Only the BatchNorm layers run in training mode, so dropout draws nothing and the same
    batches give the same statistics on every rank. The momentum of each layer is set to None
    (PyTorch's cumulative average) for the pass and restored after it.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers:
        return
    was_training = model.training
    model.eval()
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    for x in batches:
        model(x)
    for m, momentum in zip(layers, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)
