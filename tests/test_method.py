"""Each equation of the method against the paper, its edge cases, and a real learning test."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from sssl_dist.config import SSSLConfig
from sssl_dist.method.equations import (
    DegenerateSplitWarning,
    fit_loss_gmm,
    mix_loss,
    mixup,
    per_sample_ce,
    rdrop_kl,
    sharpen,
    split_clean_noisy,
    total_loss,
)
from sssl_dist.method.step import ce_loss, sssl_loss


def test_per_sample_ce_matches_definition():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    targets = torch.tensor([0, 0, 1])
    expected = -torch.log_softmax(logits, -1)[torch.arange(3), targets]
    assert torch.allclose(per_sample_ce(logits, targets), expected)
    assert per_sample_ce(logits, targets).shape == (3,)


def test_sharpen_limits():
    p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    assert torch.allclose(sharpen(p, 1.0), p, atol=1e-6)
    hard = sharpen(p, 1e-4)
    assert torch.equal(hard, torch.nn.functional.one_hot(p.argmax(-1), 3).float())
    soft = sharpen(p, 0.5)
    expected = p**2 / (p**2).sum(-1, keepdim=True)
    assert torch.allclose(soft, expected, atol=1e-6)
    assert torch.allclose(soft.sum(-1), torch.ones(2))


def test_rdrop_kl_zero_on_equal_and_symmetric():
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    assert rdrop_kl(a, a).abs() < 1e-6
    assert torch.allclose(rdrop_kl(a, b), rdrop_kl(b, a))
    assert rdrop_kl(a, b) > 0
    assert rdrop_kl(a[:0], b[:0]) == 0


def test_mixup_targets_on_simplex_and_delta_at_least_half():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 1, 4, 4)
    y = torch.softmax(torch.randn(16, 3), -1)
    for _ in range(20):
        mx, my, delta = mixup(x, y, 0.75, g)
        assert 0.5 <= delta <= 1.0
        assert torch.all(my >= 0)
        assert torch.allclose(my.sum(-1), torch.ones(16), atol=1e-6)
        assert mx.shape == x.shape
    # One sample: nothing to mix with, returned unchanged.
    mx, my, delta = mixup(x[:1], y[:1], 0.75, g)
    assert delta == 1.0 and torch.equal(mx, x[:1])


def test_mix_loss_is_convex_combination_of_ce():
    logits = torch.randn(6, 3)
    yp = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0, 1, 2]), 3).float()
    yq = torch.nn.functional.one_hot(torch.tensor([1, 1, 0, 2, 2, 0]), 3).float()
    d = 0.7
    lp = torch.nn.functional.cross_entropy(logits, yp.argmax(-1))
    lq = torch.nn.functional.cross_entropy(logits, yq.argmax(-1))
    assert torch.allclose(mix_loss(logits, d * yp + (1 - d) * yq), d * lp + (1 - d) * lq)
    assert total_loss(torch.tensor(1.0), torch.tensor(2.0), 0.5) == 2.0


def _planted_losses(n_clean=800, n_noisy=300, seed=0):
    rng = np.random.default_rng(seed)
    clean = rng.gamma(2.0, 0.1, n_clean)
    noisy = 1.5 + rng.gamma(4.0, 0.3, n_noisy)
    return np.concatenate([clean, noisy]), np.r_[np.ones(n_clean), np.zeros(n_noisy)]


def test_gmm_recovers_planted_split():
    losses, is_clean = _planted_losses()
    fit = fit_loss_gmm(losses)
    assert roc_auc_score(is_clean, fit.clean_prob) > 0.95
    assert fit.means[0] < fit.means[1]
    assert abs(sum(fit.weights) - 1) < 1e-6
    split = split_clean_noisy(
        losses, np.zeros(len(losses), int), num_classes=1, tau=0.5, mode="global"
    )
    assert split.clean_mask[is_clean == 1].mean() > 0.9
    assert split.clean_mask[is_clean == 0].mean() < 0.1


def test_per_class_split_keeps_a_hard_class():
    # Class 1 is hard: all its losses are higher than class 0's, clean or not. The global GMM
    # calls all of class 1 noisy; the per-class GMM keeps its clean part.
    rng = np.random.default_rng(1)
    l0, c0 = _planted_losses(600, 200, seed=2)
    l1, c1 = _planted_losses(600, 200, seed=3)
    l1 = l1 + 8.0
    losses, labels = np.r_[l0, l1], np.r_[np.zeros(800, int), np.ones(800, int)]
    truth = np.r_[c0, c1]
    rng.shuffle(idx := np.arange(1600))
    losses, labels, truth = losses[idx], labels[idx], truth[idx]
    with pytest.warns(DegenerateSplitWarning, match="class 1"):
        glob = split_clean_noisy(losses, labels, num_classes=2, tau=0.5, mode="global")
    assert glob.class_counts_in_x[1] < 0.05 * glob.clean_mask.sum()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateSplitWarning)
        per = split_clean_noisy(losses, labels, num_classes=2, tau=0.5, mode="per_class")
    assert min(per.class_counts_in_x) > 400
    assert roc_auc_score(truth, per.clean_prob) > 0.95
    assert set(per.fits) == {"class 0", "class 1"}


def test_edge_all_losses_equal():
    with pytest.warns(DegenerateSplitWarning, match="all losses equal"):
        s = split_clean_noisy(
            np.full(10, 0.3), np.zeros(10, int), num_classes=2, tau=0.5, mode="global"
        )
    assert s.clean_mask.all() and s.clean_fraction == 1.0


def test_edge_nan_losses_are_noisy_and_excluded():
    losses, _ = _planted_losses(100, 50)
    losses[[3, 7]] = np.nan
    fit = fit_loss_gmm(losses)
    assert fit.clean_prob[3] == 0 and fit.clean_prob[7] == 0
    assert np.isfinite(fit.clean_prob).all()
    only_nan = fit_loss_gmm(np.array([np.nan, np.nan, 1.0]))
    assert only_nan.degenerate and only_nan.clean_prob.tolist() == [0.0, 0.0, 1.0]


def test_edge_empty_x_and_empty_u_warn():
    losses, _ = _planted_losses(100, 50)
    with pytest.warns(DegenerateSplitWarning, match="X is empty"):
        s = split_clean_noisy(
            losses, np.zeros(150, int), num_classes=1, tau=0.999999999, mode="global"
        )
    assert not s.clean_mask.any()
    with pytest.warns(DegenerateSplitWarning, match="U is empty"):
        s = split_clean_noisy(np.array([0.1, 0.1]), np.zeros(2, int), num_classes=1, tau=0.5)
    assert s.clean_mask.all()


class _Mlp(nn.Module):
    def __init__(self, d, k, hidden=128, dropout=0.3):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, k),
        )

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("targets", ["inherited", "refined"])
@pytest.mark.parametrize("clean_mask", ["all", "none", "one"])
def test_sssl_step_handles_empty_sets_and_single_sample(clean_mask, targets):
    cfg = SSSLConfig(task="quadrant", clean_targets=targets)
    model = _Mlp(8, 4)
    n = 1 if clean_mask == "one" else 6
    x, y = torch.randn(n, 8), torch.randint(0, 4, (n,))
    clean_w = torch.full((n,), 0.8 if clean_mask != "none" else 0.0)
    out = sssl_loss(model, model, x, y, clean_w, cfg, torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert out.n_clean + out.n_noisy == n
    assert all(p.grad is not None for p in model.parameters())


def _noisy_blobs(seed, n_train=600, n_test=2000, d=20, k=4, noise=0.4):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, d, generator=g) * 1.3

    def draw(n):
        y = torch.randint(0, k, (n,), generator=g)
        return centers[y] + torch.randn(n, d, generator=g), y

    x_tr, y_tr = draw(n_train)
    x_te, y_te = draw(n_test)
    flip = torch.rand(n_train, generator=g) < noise
    y_noisy = torch.where(flip, (y_tr + torch.randint(1, k, (n_train,), generator=g)) % k, y_tr)
    return x_tr, y_noisy, y_tr, x_te, y_te


def _train(method, data, epochs=60, seed=0, targets="inherited"):
    x_tr, y_noisy, y_true, x_te, y_te = data
    torch.manual_seed(seed)
    cfg = SSSLConfig(
        method=method, task="quadrant", warmup_epochs=5, epochs=epochs, clean_targets=targets
    )
    model = _Mlp(x_tr.shape[1], 4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    purity = []
    for epoch in range(epochs):
        clean_all = None
        if method != "inherit" and epoch >= cfg.warmup_epochs:
            model.eval()
            with torch.no_grad():
                losses = per_sample_ce(model(x_tr), y_noisy).numpy()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DegenerateSplitWarning)
                split = split_clean_noisy(losses, y_noisy.numpy(), num_classes=4, tau=cfg.tau)
            clean_all = torch.from_numpy(split.clean_w)
            purity.append(float((y_noisy == y_true)[clean_all > 0].float().mean()))
        model.train()
        for idx in torch.randperm(len(x_tr), generator=g).split(64):
            if clean_all is None:
                out = ce_loss(model, x_tr[idx], y_noisy[idx])
            else:
                out = sssl_loss(model, model, x_tr[idx], y_noisy[idx], clean_all[idx], cfg, g)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(x_te).argmax(-1) == y_te).float().mean())
    return acc, purity


@pytest.fixture(scope="module")
def blobs_inherit():
    data = _noisy_blobs(seed=0)
    return data, _train("inherit", data)[0]


@pytest.mark.parametrize("targets", ["inherited", "refined"])
def test_sssl_beats_inherit_on_noisy_labels(blobs_inherit, targets):
    """A real learning test: 40 % of labels flipped; SSSL, with X on its inherited labels (the
    paper) or refined (DivideMix), must beat plain CE on clean test labels, and the GMM's
    clean set must be purer than the full training set."""
    data, acc_inherit = blobs_inherit
    base_purity = float((data[1] == data[2]).float().mean())
    acc_sssl, purity = _train("sssl", data, targets=targets)
    assert acc_sssl > acc_inherit + 0.10, (acc_inherit, acc_sssl)
    assert np.mean(purity[-5:]) > base_purity + 0.2, (base_purity, purity[-5:])


def test_refined_targets_follow_w():
    """DivideMix's refinement: w = 1 keeps the inherited label, w = 0 gives the sharpened
    prediction; the paper's step ignores w on X, the refined step does not."""
    from sssl_dist.method.equations import refine_labels

    one_hot = F.one_hot(torch.tensor([0, 0]), 4).float()
    probs = torch.tensor([[0.1, 0.7, 0.1, 0.1]] * 2)
    out = refine_labels(one_hot, probs, torch.tensor([1.0, 0.0]), temperature=0.5)
    torch.testing.assert_close(out[0], one_hot[0])
    torch.testing.assert_close(out[1], sharpen(probs[1:], 0.5)[0])
    assert torch.allclose(out.sum(-1), torch.ones(2))

    model = _Mlp(8, 4, dropout=0.0)
    x, y = torch.randn(6, 8), torch.randint(0, 4, (6,))
    sure, borderline = torch.ones(6), torch.full((6,), 0.55)

    def loss(targets, w):
        cfg = SSSLConfig(task="quadrant", clean_targets=targets, mixup_alpha=0.0)
        return float(sssl_loss(model, model, x, y, w, cfg).loss)

    assert loss("inherited", sure) == loss("inherited", borderline)
    assert loss("refined", sure) == pytest.approx(loss("inherited", sure), abs=1e-6)
    assert loss("refined", borderline) != pytest.approx(loss("inherited", sure), abs=1e-4)


def test_paired_difference_over_shared_folds():
    from sssl_dist.outputs.stats import paired_difference, pct_mean_std

    a = {"per_fold": {0: {"test_acc": 0.5}, 1: {"test_acc": 0.6}, 2: {"test_acc": 0.7}}}
    b = {"per_fold": {0: {"test_acc": 0.6}, 1: {"test_acc": 0.6}, 2: {"test_acc": 0.9}, 3: {}}}
    d = paired_difference(a, b)  # fold 3 is in b only: not compared
    assert (d["folds"], d["better"], d["worse"]) == (3, 2, 0)
    assert d["mean"] == pytest.approx(0.1) and d["std"] == pytest.approx(0.1)
    # The corrected t (k = 3 shared folds): 1/n + 1/(k - 1) inflates the variance.
    assert d["t"] == pytest.approx(0.1 / (0.1 * np.sqrt(1 / 3 + 1 / 2)))
    assert pct_mean_std({"x": {"mean": 0.61, "std": 0.089}}, "x") == "61.0 ± 8.9"
    assert pct_mean_std({}, "x") == "—"


def test_mean_loss_selection_survives_memorisation():
    """Planted memorisation: the noisy samples' losses start high and fall towards the clean
    ones epoch by epoch, as when a network learns the wrong labels. This epoch's loss (the
    paper's selection) then loses the noisy samples; their mean over epochs keeps them."""
    from sssl_dist.method.equations import LossMemory

    rng = np.random.default_rng(0)
    n, noisy = 3000, np.arange(3000) < 900
    memory = LossMemory.empty(n)
    auc_epoch, auc_mean = [], []
    for t in range(7):
        losses = rng.normal(0.3, 0.1, n).clip(0.01)
        losses[noisy] = rng.normal(2.0 * 0.5**t + 0.3, 0.15, noisy.sum()).clip(0.01)
        losses[5] = np.nan  # a sample whose loss could not be computed this epoch
        mean = memory.add(losses)
        for signal, aucs in ((losses, auc_epoch), (mean, auc_mean)):
            split = split_clean_noisy(signal, np.zeros(n, int), num_classes=1, tau=0.5)
            aucs.append(roc_auc_score(noisy, 1 - split.clean_prob))
    assert auc_epoch[0] > 0.99 and auc_mean[0] > 0.99  # the first epoch: the same vector
    assert auc_epoch[-1] < 0.8 < 0.97 < auc_mean[-1], (auc_epoch, auc_mean)
    assert memory.counts[5] == 0 and np.isnan(mean[5]) and memory.counts[6] == 7
    np.testing.assert_allclose(mean[6], memory.sums[6] / 7)


def test_clean_posterior_is_the_gmm_posterior_and_subsampled_fits_agree():
    """The numpy posterior equals scikit-learn's predict_proba; a fit on a strided subsample
    (above gmm_max_fit losses) gives nearly the same split as the full fit."""
    from sklearn.mixture import GaussianMixture

    from sssl_dist.method.equations import clean_posterior

    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0.2, 0.05, 7000), rng.normal(0.7, 0.1, 3000)])
    gmm = GaussianMixture(2, random_state=0).fit(x.reshape(-1, 1))
    order = np.argsort(gmm.means_.ravel())
    ours = clean_posterior(
        x, gmm.means_.ravel()[order], gmm.covariances_.ravel()[order], gmm.weights_[order]
    )
    np.testing.assert_allclose(ours, gmm.predict_proba(x.reshape(-1, 1))[:, order[0]], atol=1e-9)

    labels = rng.integers(0, 4, x.size)
    is_noisy = np.r_[np.zeros(7000), np.ones(3000)]
    full = split_clean_noisy(x, labels, num_classes=4, tau=0.5)
    sub = split_clean_noisy(x, labels, num_classes=4, tau=0.5, max_fit=1000)  # 250 per class
    assert (full.clean_mask != sub.clean_mask).mean() < 0.01
    assert roc_auc_score(is_noisy, 1 - sub.clean_prob) > 0.99
    # Below the cap nothing is subsampled: the same split, bit for bit.
    same = split_clean_noisy(x, labels, num_classes=4, tau=0.5, max_fit=x.size)
    np.testing.assert_array_equal(same.clean_prob, full.clean_prob)


def test_lr_schedule_by_epoch():
    """constant (the default) keeps lr; cosine starts at lr, halves mid-way and ends near 0."""
    from sssl_dist.rank.epoch import epoch_lr

    cfg = SSSLConfig(lr=1e-3, epochs=8, warmup_epochs=3)
    assert [epoch_lr(cfg, e) for e in range(8)] == [1e-3] * 8
    cos = SSSLConfig(lr=1e-3, epochs=8, warmup_epochs=3, lr_schedule="cosine")
    lrs = [epoch_lr(cos, e) for e in range(8)]
    assert lrs[0] == 1e-3 and lrs[4] == pytest.approx(5e-4) and 0 < lrs[-1] < 5e-5
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    with pytest.raises(ValueError, match="lr_schedule"):
        SSSLConfig(lr_schedule="step")


def test_split_network_best_val_keeps_the_split_ahead_of_memorisation():
    """Planted memorisation: an MLP learns 2-D points of which 30 % carry a flipped label until
    it fits all of them. Its losses then no longer tell the flipped points apart, and the split
    of the current network (the paper's) loses them. The best validation epoch's copy
    (split_network: best_val) still finds them, and scoring with it leaves the trained network
    exactly as it was, buffers included."""
    from sssl_dist.files.checkpoint import BestEpoch, copy_weights, weights_of
    from sssl_dist.method.models import build_model

    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    def points(n: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        x = rng.normal(size=(n, 2)).astype(np.float32)
        true = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
        flipped = rng.random(n) < 0.3
        return torch.tensor(x), torch.tensor(np.where(flipped, 1 - true, true)), flipped

    (x, y, flipped), (x_val, y_val, _) = points(200), points(400)  # labels as inherited
    net = nn.Sequential(nn.Linear(2, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU())
    net.append(nn.Linear(256, 2))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    best = BestEpoch()

    def noise_auc(scorer: dict[str, torch.Tensor] | None) -> float:
        with torch.no_grad(), weights_of(net, scorer):
            losses = F.cross_entropy(net(x), y, reduction="none").numpy()
        split = split_clean_noisy(losses, y.numpy(), num_classes=2, tau=0.5)
        return roc_auc_score(flipped, 1 - split.clean_prob)

    for epoch in range(12):
        for _ in range(50):
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
        with torch.no_grad():
            best.offer(epoch, (net(x_val).argmax(-1) == y_val).float().mean().item(), net)
    with torch.no_grad():
        assert (net(x).argmax(-1) == y).float().mean() > 0.97  # the wrong labels memorised
    current, kept = noise_auc(None), noise_auc(best.state)
    assert best.epoch < 3 and kept > 0.95 and current < 0.75, (best.epoch, kept, current)

    # Scoring with a kept copy puts every weight and buffer of the model back, bit for bit.
    cnn, other = build_model("small_cnn", 4, 0.0), build_model("small_cnn", 4, 0.0)
    cnn.train()(torch.randn(8, 1, 96, 32))  # moves the BatchNorm running statistics
    own, mels = copy_weights(cnn), torch.randn(3, 1, 96, 32)
    with torch.no_grad(), weights_of(cnn.eval(), copy_weights(other.eval())):
        torch.testing.assert_close(cnn(mels), other(mels), rtol=0, atol=0)
    for name, tensor in cnn.state_dict().items():
        assert torch.equal(tensor, own[name]), name
    with pytest.raises(ValueError, match="val_fraction"):
        SSSLConfig(split_network="best_val", val_fraction=0.0)


def test_sssl_helps_on_noisy_labels_by_the_comparison_statistics():
    """The learning test's setting (40 % flipped labels) as a 5-fold cross-validation on one
    pool: `sssl compare`'s verdict on SSSL against inherited labels must be "helps" (the
    corrected t's CI clear of 0), not merely a larger mean."""
    from sssl_dist.outputs.stats import compare_paired

    x, y_noisy, y_true, _, _ = _noisy_blobs(seed=3, n_train=1500, n_test=1)
    folds = torch.arange(len(x)) % 5
    acc = {"inherit": [], "sssl": []}
    for f in range(5):
        tr, te = folds != f, folds == f
        data = (x[tr], y_noisy[tr], y_true[tr], x[te], y_true[te])  # tested on the truth
        for method in acc:
            acc[method].append(_train(method, data, epochs=40)[0])
    c = compare_paired(acc["inherit"], acc["sssl"], n_folds=5)
    assert c.verdict == "helps", (acc, c.sentence())
