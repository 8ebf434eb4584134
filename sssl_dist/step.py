"""One optimisation step's loss for each method, composed from the equations in `method.py`.

`model` is what the gradient flows through (a DDP wrapper under Ray Train) and `plain` the
bare module, used for the no-gradient pseudo-label pass. Every step makes exactly one forward
call through `model`, whatever X and U hold: DDP synchronises buffers on each forward call and
gradients on each backward, so all ranks must make the same calls in the same order. R-Drop's
two dropout passes are therefore one forward over the inputs stacked twice (as the R-Drop
reference code does).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sssl_dist.config import SSSLConfig
from sssl_dist.method import (
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


@torch.no_grad()
def _predict(plain: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Softmax predictions [B, K] in eval mode (no dropout, no BN statistics update): a fixed
    target for this step."""
    was_training = plain.training
    plain.eval()
    probs = torch.softmax(plain(x).float(), dim=-1)
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
    """Eq. 4-9 on one batch. x [B, ...], labels [B] (inherited), clean_w [B]: each sample's
    clean posterior w if it is in X (w > τ), 0 if it is in U.

    X keeps its labels (one-hot; refined with w under `clean_targets: refined`); U's labels are
    erased and replaced by sharpened predictions (Eq. 4-5); mixup runs over X ∪ Û (Eq. 6-7);
    R-Drop's KL is taken over U (Eq. 8); the total is Eq. 9. `sssl-nokl` is the same with λ = 0
    and no second pass.
    """
    k = cfg.num_classes
    clean = clean_w > 0
    x_clean, x_noisy = x[clean], x[~clean]
    one_hot = F.one_hot(labels[clean], k).to(x.dtype)
    targets = [one_hot]
    refine = cfg.clean_targets == "refined"
    # One no-gradient prediction pass: over U (Eq. 4), and over X too when X is refined.
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
    loss = total_loss(l_mix, l_kl, cfg.lambda_kl if use_kl else 0.0)
    return StepLosses(loss, float(l_mix.detach()), float(l_kl.detach()), x_clean.shape[0], n_u)
