"""One optimisation step's loss for each method, composed from the equations in `method.py`.

`model` is what the gradient flows through (a DDP wrapper under Ray Train) and `plain` the
network of the no-gradient pseudo-label pass: the bare module, or its EMA teacher (config.py:
pseudo_label_network); a pass through `plain` is no DDP call. Every step makes exactly one
forward call through `model`, whatever X and U hold and whichever rung of `sssl_step` runs:
DDP synchronises buffers on each forward call and gradients on each backward, so all ranks
must make the same calls in the same order. R-Drop's two dropout passes are therefore one
forward over the inputs stacked twice (as the R-Drop reference code does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sssl_dist.config import SSSLConfig
from sssl_dist.data.targets import CLASS_NAMES
from sssl_dist.method.equations import (
    mix_loss,
    mixup,
    pseudo_label,
    rdrop_kl,
    refine_labels,
    total_loss,
)


@dataclass
class StepLosses:
    loss: torch.Tensor  # what backward() is called on
    l_mix: float  # Eq. 7 (plain CE for warm-up / inherit)
    l_kl: float  # Eq. 8 (0 when unused)
    n_clean: int  # |X ∩ batch|
    n_noisy: int  # |U ∩ batch|


def ce_loss(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> StepLosses:
    """Warm-up epochs and the `inherit` baseline: mean CE (Eq. 2) on the inherited labels."""
    loss = F.cross_entropy(model(x), labels)
    return StepLosses(loss, float(loss.detach()), 0.0, int(labels.numel()), 0)


def _softmax(outputs: torch.Tensor) -> torch.Tensor:
    return torch.softmax(outputs, dim=-1)


@torch.no_grad()
def _predict(
    plain: nn.Module, x: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor] = _softmax
) -> torch.Tensor:
    """Predictions [B, K] in eval mode (no dropout, no BN statistics update): a fixed target
    for this step. `head` turns the float outputs into predictions (softmax for classes).

    The step's autocast (bf16) is kept, but not its weight cache: the cache holds each weight's
    bf16 copy for the rest of the autocast block, and a copy first made here, under no_grad,
    has no autograd history on torch releases without the fix of pytorch/pytorch#158232
    (reported for 2.10 and older; pyproject allows 2.4): the training forward that follows in
    the same block would reuse it and leave the conv and linear weights without a gradient."""
    device = x.device.type
    was_training = plain.training
    plain.eval()
    with torch.autocast(
        device,
        dtype=torch.get_autocast_dtype(device),
        enabled=torch.is_autocast_enabled(device),
        cache_enabled=False,
    ):
        probs = head(plain(x).float())
    plain.train(was_training)
    return probs


def sssl_loss(
    model: nn.Module,
    plain: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    clean_w: torch.Tensor,
    cfg: SSSLConfig,
    generator: torch.Generator | None = None,
) -> StepLosses:
    """Eq. 4-9 on one batch, or a lower rung of the ladder (`cfg.sssl_step`). x [B, ...],
    labels [B] (inherited), clean_w [B]: each sample's clean posterior w if it is in X
    (w > τ), 0 if it is in U. `plain` is the network that predicts the targets: the bare
    module, or the EMA teacher (`pseudo_label_network: ema`).

    X keeps its labels (one-hot; refined with w under `clean_targets: refined`); U's labels are
    erased and replaced by sharpened predictions (Eq. 4-5); mixup runs over X ∪ Û (Eq. 6-7);
    R-Drop's KL is taken over U (Eq. 8); the total is Eq. 9. `sssl-nokl` is the same with λ = 0
    and no second pass. The rungs below "full" drop, from the top, the KL, then mixup, then U.
    """
    clean = clean_w > 0
    n_u = int((~clean).sum())
    uses_u = cfg.sssl_step != "filter"  # rung 1 drops U: its inputs are never looked at
    x_clean, x_noisy = x[clean], x[~clean] if uses_u else x[:0]
    y_clean, y_noisy = step_targets(plain, x, labels, clean_w, cfg, uses_u)
    inputs, targets = step_inputs(x_clean, y_clean, x_noisy, y_noisy, cfg, generator)
    use_kl = cfg.sssl_step == "full" and cfg.method == "sssl" and cfg.lambda_kl > 0
    b, m = inputs.shape[0], x_noisy.shape[0]
    logits = rdrop_forward(model, inputs, x_noisy, cfg) if use_kl else model(inputs).float()
    l_mix = mix_loss(logits[:b], targets.float())
    l_kl = rdrop_kl(logits[b : b + m], logits[b + m :]) if use_kl else logits.sum() * 0.0
    loss = total_loss(l_mix, l_kl, cfg.lambda_kl if use_kl else 0.0)
    return StepLosses(loss, float(l_mix.detach()), float(l_kl.detach()), x_clean.shape[0], n_u)


def rdrop_forward(
    model: nn.Module, inputs: torch.Tensor, x_noisy: torch.Tensor, cfg: SSSLConfig
) -> torch.Tensor:
    """Logits [b + 2m, K] of the step's inputs (b rows), then of U (m rows) through two dropout
    sub-models (R-Drop, Liang et al. 2021): U twice in the batch (`rdrop_trunk: separate`), or
    once with only the head, which holds the dropouts, run twice (`shared`)."""
    if cfg.rdrop_trunk == "shared":
        return model(torch.cat([inputs, x_noisy]), repeat_last=x_noisy.shape[0]).float()
    return model(torch.cat([inputs, x_noisy, x_noisy])).float()


def step_targets(
    plain: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    clean_w: torch.Tensor,
    cfg: SSSLConfig,
    uses_u: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The targets of X [n_x, K] and of U [n_u, K] (Eq. 4-5; [0, K] when `uses_u` is False),
    in x.dtype, from at most one no-gradient prediction pass of `plain`: over U, plus X when
    X's labels are refined (DivideMix)."""
    clean = clean_w > 0
    one_hot = F.one_hot(labels[clean], num_classes_of(cfg)).to(x.dtype)
    refine = cfg.clean_targets == "refined"
    with_u = uses_u and bool((~clean).any())
    if not (refine or with_u):
        return one_hot, one_hot[:0]
    if refine:
        probs = _predict(plain, x if uses_u else x[clean])
        probs_x, probs_u = (probs[clean], probs[~clean]) if uses_u else (probs, probs[:0])
        y_clean = refine_labels(one_hot, probs_x, clean_w[clean], cfg.temperature)
    else:
        y_clean, probs_u = one_hot, _predict(plain, x[~clean])
    y_noisy = pseudo_label(probs_u, cfg.temperature) if with_u else one_hot[:0]
    return y_clean.to(x.dtype), y_noisy.to(x.dtype)


def num_classes_of(cfg: SSSLConfig) -> int:
    """K of the config's classification task (the class names of its record label)."""
    return len(CLASS_NAMES[cfg.task])


def step_inputs(
    x_clean: torch.Tensor,
    y_clean: torch.Tensor,
    x_noisy: torch.Tensor,
    y_noisy: torch.Tensor,
    cfg: SSSLConfig,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """What the step trains on: X then U (inputs [n, ...], soft targets [n, K]), mixed by
    Eq. 6 over X ∪ Û (`mixup_scope: all`), over X alone (`clean`: Û unmixed), or not at all
    (rungs "filter" and "pseudo")."""
    if cfg.sssl_step in ("filter", "pseudo"):
        return torch.cat([x_clean, x_noisy]), torch.cat([y_clean, y_noisy])
    if cfg.mixup_scope == "clean":
        mixed_x, mixed_y, _ = mixup(x_clean, y_clean, cfg.mixup_alpha, generator)
        return torch.cat([mixed_x, x_noisy]), torch.cat([mixed_y, y_noisy])
    mixed_x, mixed_y, _ = mixup(
        torch.cat([x_clean, x_noisy]), torch.cat([y_clean, y_noisy]), cfg.mixup_alpha, generator
    )
    return mixed_x, mixed_y
