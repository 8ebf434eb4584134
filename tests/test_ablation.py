"""The SSSL step's ablation ladder and its candidate fixes: each config value does what its
comment in config.py says, planted so that a wrong implementation fails."""

from __future__ import annotations

import copy
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sssl_dist.config import FeatureConfig, SSSLConfig
from sssl_dist.data.segments import SegmentTable
from sssl_dist.files.checkpoint import load_state, training_state
from sssl_dist.method.equations import (
    LossMemory,
    clean_bn_statistics,
    ema_teacher,
    ema_update,
    mix_loss,
    mixup,
    pseudo_label,
    rdrop_kl,
    refine_labels,
    total_loss,
)
from sssl_dist.method.models import build_model
from sssl_dist.method.step import _predict, sssl_loss, step_inputs
from sssl_dist.method.tasks import task_of
from sssl_dist.rank.epoch import Worker, bn_statistics_batches, epoch_lr, train_epoch


# --------------------------------------------------------------------------------------------
# Step level: a small network with BatchNorm and dropout, batches with both X and U
# --------------------------------------------------------------------------------------------
class _Net(nn.Module):
    def __init__(self, d: int = 6, k: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, k)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _Spy(nn.Module):
    """Records every input the step forwards through it (the DDP-wrapped `model`'s place)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.inner(x)


def _batch(seed: int = 0, n: int = 10, d: int = 6):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, d, generator=g), torch.randint(0, 4, (n,), generator=g)
    clean_w = torch.tensor([0.9, 0.0, 0.7, 0.0, 0.8, 0.6, 0.0, 0.95, 0.0, 0.55])[:n]
    return x, y, clean_w


def _step(net, x, y, clean_w, cfg, seed=0):
    """One step's loss and gradients, with dropout and mixup seeded alike for every call."""
    net.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    plain = getattr(net, "inner", net)  # predictions from the bare network, not the spy
    out = sssl_loss(net, plain, x, y, clean_w, cfg, torch.Generator().manual_seed(seed))
    out.loss.backward()
    return out, [p.grad.clone() for p in net.parameters()]


def _paper_step(model, plain, x, labels, clean_w, cfg, generator=None):
    """The step as it was before the ladder existed, kept verbatim as the reference that
    `sssl_step: full` must reproduce bit for bit."""
    k = task_of(cfg).num_outputs
    clean = clean_w > 0
    x_clean, x_noisy = x[clean], x[~clean]
    one_hot = F.one_hot(labels[clean], k).to(x.dtype)
    targets = [one_hot]
    refine = cfg.clean_targets == "refined"
    if refine or x_noisy.shape[0]:
        probs = _predict(plain, x if refine else x_noisy)
        if refine:
            targets = [refine_labels(one_hot, probs[clean], clean_w[clean], cfg.temperature)]
            probs = probs[~clean]
        if x_noisy.shape[0]:
            targets.append(pseudo_label(probs, cfg.temperature))
    mixed_x, mixed_y, _ = mixup(
        torch.cat([x_clean, x_noisy]),
        torch.cat([t.to(x.dtype) for t in targets]),
        cfg.mixup_alpha,
        generator,
    )
    use_kl = cfg.method == "sssl" and cfg.lambda_kl > 0
    inputs = torch.cat([mixed_x, x_noisy, x_noisy]) if use_kl else mixed_x
    logits = model(inputs).float()
    b, n_u = mixed_x.shape[0], x_noisy.shape[0]
    l_mix = mix_loss(logits[:b], mixed_y.float())
    l_kl = rdrop_kl(logits[b : b + n_u], logits[b + n_u :]) if use_kl else logits.sum() * 0.0
    return total_loss(l_mix, l_kl, cfg.lambda_kl if use_kl else 0.0), l_mix, l_kl


@pytest.mark.parametrize("method", ["sssl", "sssl-nokl"])
@pytest.mark.parametrize("targets", ["inherited", "refined"])
@pytest.mark.parametrize("mask", ["mixed", "all_clean", "all_noisy"])
def test_full_step_is_the_paper_step_bit_for_bit(method, targets, mask):
    cfg = SSSLConfig(method=method, clean_targets=targets)
    assert cfg.sssl_step == "full", "premise: the paper's step is the default"
    x, y, clean_w = _batch()
    clean_w = {"mixed": clean_w, "all_clean": clean_w + 0.5, "all_noisy": clean_w * 0}[mask]
    net = _Net()
    ref_net = copy.deepcopy(net)  # before the step moves BatchNorm's running statistics
    out, grads = _step(net, x, y, clean_w, cfg)
    ref_net.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    loss, l_mix, l_kl = _paper_step(
        ref_net, ref_net, x, y, clean_w, cfg, torch.Generator().manual_seed(0)
    )
    loss.backward()
    assert torch.equal(out.loss, loss)
    assert (out.l_mix, out.l_kl) == (float(l_mix.detach()), float(l_kl.detach()))
    for g, p in zip(grads, ref_net.parameters(), strict=True):
        assert torch.equal(g, p.grad)


@pytest.mark.parametrize("targets", ["inherited", "refined"])
def test_filter_rung_never_trains_on_u(targets):
    """Rung 1: whatever U's inputs and labels are, the loss, every gradient and BatchNorm's
    running statistics are the same, and only X's rows are forwarded."""
    cfg = SSSLConfig(sssl_step="filter", clean_targets=targets)
    x, y, clean_w = _batch()
    noisy = clean_w == 0
    x2, y2 = x.clone(), y.clone()
    x2[noisy] = 100 * torch.randn(int(noisy.sum()), x.shape[1])
    y2[noisy] = (y[noisy] + 1) % 4
    runs = []
    for inputs, labels in ((x, y), (x2, y2)):
        torch.manual_seed(1)  # the same initial weights for both runs
        net = _Spy(_Net())
        out, grads = _step(net, inputs, labels, clean_w, cfg)
        assert len(net.seen) == 1 and torch.equal(net.seen[0], x[~noisy])
        assert (out.n_clean, out.n_noisy) == (int((~noisy).sum()), int(noisy.sum()))
        runs.append((out, grads, copy.deepcopy(net.inner.state_dict())))
    (out1, grads1, state1), (out2, grads2, state2) = runs
    assert torch.equal(out1.loss, out2.loss) and out1.l_kl == 0
    assert all(torch.equal(a, b) for a, b in zip(grads1, grads2, strict=True))
    assert all(torch.equal(state1[k], state2[k]) for k in state1)


def test_pseudo_rung_trains_on_the_unmixed_batch_and_exact_targets():
    """Rung 2: the forwarded batch is X then U as they are (no mixup draws), its targets are
    exactly X's one-hot labels and U's sharpened predictions (Eq. 4-5), and there is no KL."""
    cfg = SSSLConfig(sssl_step="pseudo")
    x, y, clean_w = _batch()
    clean = clean_w > 0
    net = _Spy(_Net())
    untouched = copy.deepcopy(net.inner)  # the step's forward moves BN's running statistics
    gen = torch.Generator().manual_seed(0)
    before = gen.get_state()
    torch.manual_seed(0)
    out = sssl_loss(net, net.inner, x, y, clean_w, cfg, gen)
    assert torch.equal(gen.get_state(), before), "mixup drew from the generator"
    assert len(net.seen) == 1 and torch.equal(net.seen[0], torch.cat([x[clean], x[~clean]]))
    assert out.l_kl == 0.0
    probs = _predict(untouched, x[~clean])
    targets = torch.cat([F.one_hot(y[clean], 4).float(), pseudo_label(probs, cfg.temperature)])
    torch.manual_seed(0)
    expected = mix_loss(untouched(net.seen[0]), targets)
    assert torch.equal(out.loss.detach(), expected.detach())


def test_pseudo_mixup_rung_mixes_without_kl():
    """Rung 3: mixup runs (the forwarded batch is not the raw batch), one pass of B rows only
    (no R-Drop copies of U) and l_kl = 0; it is exactly the full step with λ = 0."""
    x, y, clean_w = _batch()
    rung3 = SSSLConfig(sssl_step="pseudo_mixup")
    net = _Spy(_Net())
    net_full, net_nokl = _Spy(copy.deepcopy(net.inner)), copy.deepcopy(net.inner)
    torch.manual_seed(0)
    out = sssl_loss(net, net.inner, x, y, clean_w, rung3, torch.Generator().manual_seed(0))
    (seen,) = net.seen
    assert seen.shape[0] == x.shape[0] and out.l_kl == 0.0
    clean = clean_w > 0
    assert not torch.equal(seen, torch.cat([x[clean], x[~clean]])), "nothing was mixed"
    torch.manual_seed(0)
    full = sssl_loss(
        net_full, net_full.inner, x, y, clean_w, SSSLConfig(), torch.Generator().manual_seed(0)
    )
    assert net_full.seen[0].shape[0] == x.shape[0] + 2 * int((~clean).sum())  # R-Drop pass
    assert full.l_kl > 0 and torch.equal(net_full.seen[0][: x.shape[0]], seen)
    nokl = SSSLConfig(method="sssl-nokl")
    torch.manual_seed(0)
    same = sssl_loss(net_nokl, net_nokl, x, y, clean_w, nokl, torch.Generator().manual_seed(0))
    assert torch.equal(same.loss, out.loss)


def test_x_only_mixup_never_mixes_a_u_sample_in():
    """mixup_scope: clean. X's inputs lie in [0, 1], U's at 1000: every mixed X row stays in
    [0, 1] and its target on X's labels, while U's rows and targets pass through unmixed."""
    cfg = SSSLConfig(mixup_scope="clean", mixup_alpha=4.0)
    g = torch.Generator().manual_seed(3)
    x_clean, x_noisy = torch.rand(12, 5, generator=g), 1000 + torch.rand(6, 5, generator=g)
    y_clean = F.one_hot(torch.tensor([0, 1] * 6), 4).float()  # X holds classes 0 and 1 only
    y_noisy = torch.softmax(torch.randn(6, 4, generator=g), -1)
    inputs, targets = step_inputs(x_clean, y_clean, x_noisy, y_noisy, cfg, g)
    assert inputs[:12].max() <= 1 and not torch.equal(inputs[:12], x_clean), "no X mixing"
    assert torch.equal(inputs[12:], x_noisy) and torch.equal(targets[12:], y_noisy)
    assert torch.equal(targets[:12, 2:], torch.zeros(12, 2))
    assert torch.allclose(targets.sum(-1), torch.ones(18))
    # The paper's scope does mix U in: the planted contrast.
    inputs_all, _ = step_inputs(x_clean, y_clean, x_noisy, y_noisy, SSSLConfig(), g)
    assert (inputs_all > 1).any(dim=1).sum() > 6


def _mel_batch(n: int = 12):
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(n, 1, 32, 40, generator=g), torch.randint(0, 4, (n,), generator=g)
    clean_w = torch.tensor([0.9, 0.0, 0.7, 0.0, 0.8, 0.0, 0.6, 0.95, 0.0, 0.55, 0.0, 0.7])[:n]
    return x, y, clean_w


def test_shared_trunk_computes_what_the_separate_passes_compute():
    """rdrop_trunk: shared. With BatchNorm on fixed statistics and no dropout (the two things
    it is allowed to change), the SmallCNN step's loss and every gradient are those of the
    paper's two full passes, to float rounding: one trunk pass whose gradient collects both
    heads' equals two trunk passes."""
    x, y, clean_w = _mel_batch()
    net = build_model("small_cnn", 4, 0.0)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()  # fixed statistics: a batch's composition cannot change them
    plain = copy.deepcopy(net).eval()  # the targets' network, so `net` keeps its modes
    results = {}
    for trunk in ("separate", "shared"):
        cfg = SSSLConfig(rdrop_trunk=trunk)
        net.zero_grad(set_to_none=True)
        out = sssl_loss(net, plain, x, y, clean_w, cfg, torch.Generator().manual_seed(0))
        out.loss.backward()
        results[trunk] = (out, [p.grad.clone() for p in net.parameters()])
    (sep, sep_grads), (shared, shared_grads) = results["separate"], results["shared"]
    assert torch.allclose(sep.loss, shared.loss, rtol=1e-5, atol=1e-7)
    for a, b in zip(sep_grads, shared_grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_shared_trunk_runs_the_trunk_once_on_u_and_two_dropout_masks():
    """rdrop_trunk: shared in train mode: the trunk sees the step's inputs and U once (b + m
    rows, not b + 2m), and R-Drop's KL is above zero because the two heads drop differently."""
    x, y, clean_w = _mel_batch()
    m = int((clean_w == 0).sum())
    for trunk, trunk_rows in (("separate", x.shape[0] + 2 * m), ("shared", x.shape[0] + m)):
        net = build_model("small_cnn", 4, 0.5)
        seen: list[int] = []
        net.features.register_forward_hook(lambda _m, inp, _o, seen=seen: seen.append(len(inp[0])))
        cfg = SSSLConfig(rdrop_trunk=trunk, pseudo_label_network="current")
        out = sssl_loss(net, net, x, y, clean_w, cfg, torch.Generator().manual_seed(0))
        assert seen == [m, trunk_rows]  # the pseudo-label pass over U, then the step's pass
        assert out.l_kl > 0 and out.n_noisy == m


def test_ema_update_is_the_decay_formula_on_a_hand_example():
    """θ' <- α θ' + (1 - α) θ for weights and BN running statistics; the batch count copied."""
    student = nn.Sequential(nn.Linear(1, 1), nn.BatchNorm1d(1))
    teacher = ema_teacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        teacher[0].weight.fill_(2.0)
        student[0].weight.fill_(4.0)
        teacher[1].running_mean.fill_(1.0)
        student[1].running_mean.fill_(-3.0)
    student[1].num_batches_tracked.fill_(7)
    ema_update(teacher, student, decay=0.75)
    assert teacher[0].weight.item() == 0.75 * 2.0 + 0.25 * 4.0 == 2.5
    assert teacher[1].running_mean.item() == 0.75 * 1.0 + 0.25 * -3.0 == 0.0
    assert int(teacher[1].num_batches_tracked) == 7
    assert student[0].weight.item() == 4.0  # the student is read, never written
    ema_update(teacher, student, decay=0.75)
    assert teacher[0].weight.item() == 0.75 * 2.5 + 0.25 * 4.0


# --------------------------------------------------------------------------------------------
# Epoch level: a Worker on in-memory mels, no Ray
# --------------------------------------------------------------------------------------------
FC = FeatureConfig(n_mels=32)
SMALL = SSSLConfig(epochs=3, warmup_epochs=1, batch_size=16)


def _worker(cfg: SSSLConfig, seed: int = 0) -> Worker:
    """Six 8-second songs (36 segments at L = 3) of random mels, one label per song."""
    rng = np.random.default_rng(seed)
    songs = [{"song_id": f"s{i}", "duration_s": 8.0, "quadrant": i % 4} for i in range(6)]
    frames = int(8 * FC.frames_per_second) + 1
    mels = {s["song_id"]: rng.normal(size=(FC.n_mels, frames)).astype(np.float32) for s in songs}
    table = SegmentTable.build(songs, cfg.task, cfg.segment_seconds)
    torch.manual_seed(seed)
    model = build_model(cfg.backbone, task_of(cfg).num_outputs, cfg.dropout)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return Worker.build(cfg, table, SegmentTable.build([], cfg.task, 3), mels, FC, model, opt)


def _split(w: Worker) -> np.ndarray:
    """Half of the segments in X (w = 0.9), half in U."""
    return np.where(np.arange(len(w.table)) % 2 == 0, 0.9, 0.0).astype(np.float32)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_ema_teacher_makes_the_targets_and_lags_the_trained_weights(monkeypatch):
    import sssl_dist.method.tasks.classification as epoch_module

    w = _worker(replace(SMALL, pseudo_label_network="ema", ema_decay=0.9))
    train_epoch(w, None, 0)  # warm-up: no teacher yet (warm-ups are shared without one)
    assert w.teacher is None
    after_warmup = _state(w.plain)
    predicted_by = []
    real = epoch_module.sssl_loss

    def spy(model, plain, *args, **kwargs):
        predicted_by.append(plain)
        return real(model, plain, *args, **kwargs)

    monkeypatch.setattr(epoch_module, "sssl_loss", spy)
    # Replay the epoch's EMA by hand from the student's weights after every step.
    expected = {k: v.clone() for k, v in after_warmup.items()}
    real_step = w.opt.step

    def step_and_track(*args, **kwargs):
        out = real_step(*args, **kwargs)
        for k, v in w.plain.state_dict().items():
            expected[k] = 0.9 * expected[k] + 0.1 * v if v.is_floating_point() else v.clone()
        return out

    monkeypatch.setattr(w.opt, "step", step_and_track)
    train_epoch(w, _split(w), 1)
    assert predicted_by and all(p is w.teacher for p in predicted_by)
    teacher = w.teacher.state_dict()
    for k, v in teacher.items():
        assert torch.allclose(v.float(), expected[k].float(), rtol=1e-5, atol=1e-6), k
    weight = "head.weight"
    assert not torch.equal(teacher[weight], w.plain.state_dict()[weight])
    assert not torch.equal(teacher[weight], after_warmup[weight])
    state = training_state(
        w.plain, w.opt, 1, _split(w), LossMemory.empty(len(w.table)), None, w.teacher
    )
    assert all(torch.equal(state["ema_model"][k], teacher[k]) for k in teacher)


def test_paper_targets_come_from_the_network_being_trained(monkeypatch):
    import sssl_dist.method.tasks.classification as epoch_module

    w = _worker(replace(SMALL, pseudo_label_network="current"))
    predicted_by = []
    real = epoch_module.sssl_loss
    monkeypatch.setattr(
        epoch_module,
        "sssl_loss",
        lambda model, plain, *a, **k: predicted_by.append(plain) or real(model, plain, *a, **k),
    )
    train_epoch(w, _split(w), 1)
    assert w.teacher is None and predicted_by and all(p is w.plain for p in predicted_by)


def test_clean_bn_statistics_are_the_average_over_clean_batches():
    """A hand check on the input BatchNorm (one channel): its running mean and variance are
    the average of the batches' means and unbiased variances, whatever was there before; the
    momentum and the modes come back, and dropout draws nothing."""
    model = build_model("small_cnn", 4, 0.5)
    model.train()
    bn = model.features[0]
    bn.running_mean.fill_(50.0)
    g = torch.Generator().manual_seed(0)
    batches = [3 + 2 * torch.randn(8, 1, 32, 40, generator=g) for _ in range(3)]
    rng = torch.get_rng_state()
    clean_bn_statistics(model, batches)
    assert torch.equal(torch.get_rng_state(), rng)
    means = torch.stack([b.mean() for b in batches])
    variances = torch.stack([b.var() for b in batches])  # unbiased, as BatchNorm keeps it
    assert torch.allclose(bn.running_mean, means.mean(), atol=1e-5)
    assert torch.allclose(bn.running_var, variances.mean(), atol=1e-4)
    assert bn.momentum == 0.1 and model.training and model.dropout.training


@pytest.mark.parametrize("bn_stats", ["running", "clean"])
def test_bn_stats_clean_forgets_the_mixed_batches(bn_stats):
    """After an SSSL epoch (mixed inputs), `clean` leaves exactly the statistics of the clean
    batches under the final weights, as if no mixed batch had ever been forwarded; the
    default keeps what the mixed forwards left, which differ."""
    w = _worker(replace(SMALL, bn_stats=bn_stats, bn_stats_segments=20))
    train_epoch(w, _split(w), 1)
    trained = _state(w.plain)
    fresh = copy.deepcopy(w.plain)
    for m in fresh.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.fill_(123.0)  # whatever the training forwards left: forgotten
    batches = bn_statistics_batches(w, 1)
    assert sum(b.size for b in batches) == 20
    clean_bn_statistics(fresh, (w.batcher.inputs(b) for b in batches))
    stats = [k for k in trained if "running" in k]
    same = all(torch.equal(trained[k], fresh.state_dict()[k]) for k in stats)
    assert same == (bn_stats == "clean")
    weights = [k for k in trained if "running" not in k and "num_batches" not in k]
    assert all(torch.equal(trained[k], fresh.state_dict()[k]) for k in weights)


@pytest.mark.parametrize("reset", [False, True])
def test_optimizer_reset_clears_adam_at_the_switch_only(reset):
    """`sssl_optimizer: reset`: Adam's state is empty as the first SSSL epoch begins (its step
    count restarts), and is not cleared again at later SSSL epochs."""
    w = _worker(replace(SMALL, sssl_optimizer="reset" if reset else "keep"))
    steps = train_epoch(w, None, 0)["steps"]
    param = next(w.plain.parameters())
    assert int(w.opt.state[param]["step"]) == steps
    moment = w.opt.state[param]["exp_avg"].clone()
    seen = []
    real_step = w.opt.step

    def record(*args, **kwargs):
        if not seen:  # what the first SSSL step starts from
            state = w.opt.state.get(param, {})
            exp_avg = state.get("exp_avg")  # updated in place by the step: copied
            seen.append((int(state.get("step", 0)), None if exp_avg is None else exp_avg.clone()))
        return real_step(*args, **kwargs)

    w.opt.step = record
    train_epoch(w, _split(w), 1)
    step, exp_avg = seen[0]
    if reset:
        assert step == 0 and exp_avg is None
    else:
        assert step == steps and torch.equal(exp_avg, moment)
    assert int(w.opt.state[param]["step"]) == (1 if reset else 2) * steps
    train_epoch(w, _split(w), 2)
    assert int(w.opt.state[param]["step"]) == (2 if reset else 3) * steps


def test_sssl_lr_scale_applies_to_sssl_epochs_only():
    cfg = replace(SMALL, sssl_lr_scale=0.25, epochs=4)
    assert [epoch_lr(cfg, e) for e in range(4)] == [cfg.lr] + [cfg.lr * 0.25] * 3
    inherit = replace(cfg, method="inherit")
    assert [epoch_lr(inherit, e) for e in range(4)] == [cfg.lr] * 4
    cosine = replace(cfg, lr_schedule="cosine")
    plain_cosine = replace(cosine, sssl_lr_scale=1.0)
    assert epoch_lr(cosine, 2) == epoch_lr(plain_cosine, 2) * 0.25
    w = _worker(cfg)
    assert train_epoch(w, _split(w), 1)["lr"] == cfg.lr * 0.25
    assert all(g["lr"] == cfg.lr * 0.25 for g in w.opt.param_groups)


# --------------------------------------------------------------------------------------------
# End to end: every new value trains a fold in local mode, and the EMA survives a resume
# --------------------------------------------------------------------------------------------
E2E = SSSLConfig(epochs=2, warmup_epochs=1, batch_size=32, n_folds=2, gloo_timeout_s=60)


@pytest.mark.parametrize(
    "key,value",
    [
        ("sssl_step", "filter"),
        ("sssl_step", "pseudo"),
        ("sssl_step", "pseudo_mixup"),
        ("bn_stats", "clean"),
        ("sssl_optimizer", "reset"),
        ("sssl_lr_scale", 0.5),
        ("mixup_scope", "clean"),
        ("rdrop_trunk", "shared"),
        # pseudo_label_network: ema trains end to end in the resume test below.
    ],
)
def test_each_value_trains_a_fold_end_to_end(key, value, shard_dir, tmp_path, ray_session):
    from sssl_dist.data.segments import ShardSet
    from sssl_dist.driver.run import run_fold

    cfg = replace(E2E, **{key: value})
    run = run_fold(cfg, ShardSet(shard_dir), 0, storage_path=tmp_path, name="e2e", workers=0)
    assert len(run.history) == cfg.epochs and run.result["test_songs"] > 0
    assert all(np.isfinite(h["l_mix"]) for h in run.history)
    sssl = run.history[-1]
    assert (sssl["l_kl"] > 0) == (cfg.sssl_step == "full")  # only the full step has R-Drop
    assert sssl["lr"] == cfg.lr * cfg.sssl_lr_scale and run.history[0]["lr"] == cfg.lr


def test_ema_resumed_run_equals_an_uninterrupted_one(shard_dir, tmp_path, ray_session):
    """The EMA teacher is in every checkpoint: a run restarted from its epoch-1 checkpoint
    ends with the same student and teacher, bit for bit, as the run that never stopped."""
    from sssl_dist.data.segments import ShardSet
    from sssl_dist.driver.run import run_fold

    cfg = replace(E2E, epochs=3, pseudo_label_network="ema")
    shards = ShardSet(shard_dir)
    whole = run_fold(cfg, shards, 0, storage_path=tmp_path, name="whole", workers=0)
    shutil.copytree(tmp_path / "whole" / "epoch-0001", tmp_path / "resumed" / "epoch-0001")
    assert "ema_model" in load_state(tmp_path / "resumed" / "epoch-0001")
    resumed = run_fold(cfg, shards, 0, storage_path=tmp_path, name="resumed", workers=0)
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2]
    a, b = load_state(whole.checkpoint.path), load_state(resumed.checkpoint.path)
    for part in ("model", "ema_model"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert not torch.equal(a["model"]["head.weight"], a["ema_model"]["head.weight"])


def _ddp_rank(rank: int, init_file: str, overrides: dict, out: str) -> None:
    """One of two gloo ranks: a warm-up epoch and an SSSL epoch through DDP, then each rank's
    student and teacher weights saved for the test to compare."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        w = _worker(replace(SMALL, **overrides))
        ddp = nn.parallel.DistributedDataParallel(w.plain)
        w = replace(w, model=ddp, rank=rank, world=2)
        train_epoch(w, None, 0)
        # Two segments in X: most ranks' shares of a batch hold no X at all.
        clean_w = np.zeros(len(w.table), np.float32)
        clean_w[[0, 7]] = 0.9
        train_epoch(w, clean_w, 1)
        weights = {k: v for k, v in w.plain.state_dict().items() if "running" not in k}
        torch.save({"student": weights, "teacher": w.teacher.state_dict()}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_keep_identical_teachers_even_when_a_rank_has_no_x(tmp_path):
    """Under DDP each rank updates its own EMA after each step: the two ranks' teacher weights
    stay equal, as their students' do, through batches where one rank's share holds no X
    (the filter rung then forwards an empty batch there: still one DDP call per step)."""
    import torch.multiprocessing as mp

    overrides = {"sssl_step": "filter", "pseudo_label_network": "ema", "bn_stats": "clean"}
    out = str(tmp_path / "rank")
    mp.spawn(_ddp_rank, args=(str(tmp_path / "init"), overrides, out), nprocs=2)
    ranks = [torch.load(f"{out}.{r}", weights_only=True) for r in range(2)]
    for part in ("student", "teacher"):
        for k, v in ranks[0][part].items():
            if "running" not in k and "num_batches" not in k:
                assert torch.equal(v, ranks[1][part][k]), (part, k)
    assert not torch.equal(ranks[0]["teacher"]["head.weight"], ranks[0]["student"]["head.weight"])
