"""Segment-level backbones: the paper's VGG16 and a small CNN for CPU training.

Input is a log-mel segment [B, 1, n_mels, frames]; output is logits [B, K]. Both take any
segment length: VGG16 through adaptive pooling as in torchvision, the small CNN through global
pooling. Both begin with a BatchNorm over the single input channel, which learns the scale of
the dB values instead of a hand-set normalisation constant. `forward(x, repeat_last=m)` runs
the head, which holds the dropouts, a second time over the last m rows, for R-Drop.

Both run in the channels-last memory layout (NHWC), weights and activations, the layout the
oneDNN CPU kernels and cuDNN's tensor-core kernels are written for. The values are the same
as in NCHW up to float rounding; a small-CNN training step on 2 CPU cores takes about 0.6-0.7x
the time (BENCHMARKS.md, bench_models.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

# VGG16 configuration "D" (Simonyan & Zisserman 2015, Table 1): numbers are conv widths, "M"
# is a 2x2 max-pool.
VGG16_D = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16(nn.Module):
    """VGG16 with batch-norm (torchvision `vgg16_bn` layout), 1 input channel, K outputs.

    The paper (§3.1) "only modif[ies] the input channel and output number of classification",
    so the 4096-4096 classifier and the 7x7 adaptive pool are kept.
    """

    def __init__(self, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.BatchNorm2d(1)]
        channels = 1
        for v in VGG16_D:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(channels, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(True)]
                channels = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor, repeat_last: int = 0) -> torch.Tensor:
        h = torch.flatten(self.avgpool(self.features(channels_last(x))), 1)
        return head_twice(self.classifier, h, repeat_last)


class SmallCNN(nn.Module):
    """A 5x5 stride-2 stem and three 3x3 blocks (16-32-64-64), global mean+max pool.

    The strided stem and early pooling keep the convolutions on a small time-frequency plane:
    this is what makes ~700 segments/s of training possible on 2 CPU cores (708 measured,
    BENCHMARKS.md; 12x the same net without the stride). Dropout before the classifier gives
    R-Drop (Eq. 8) its two sub-models.
    """

    def __init__(self, num_classes: int, dropout: float = 0.5, width: int = 16) -> None:
        super().__init__()

        def block(c_in: int, c_out: int, kernel: int, stride: int) -> list[nn.Module]:
            return [
                nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(True),
            ]

        w = width
        self.features = nn.Sequential(
            nn.BatchNorm2d(1),
            *block(1, w, 5, 2),
            nn.MaxPool2d(2),
            *block(w, 2 * w, 3, 1),
            nn.MaxPool2d(2),
            *block(2 * w, 4 * w, 3, 1),
            nn.MaxPool2d(2),
            *block(4 * w, 4 * w, 3, 1),
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(8 * w, num_classes)

    def forward(self, x: torch.Tensor, repeat_last: int = 0) -> torch.Tensor:
        h = self.features(channels_last(x))
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        return head_twice(lambda z: self.head(self.dropout(z)), pooled, repeat_last)


def head_twice(
    head: Callable[[torch.Tensor], torch.Tensor], h: torch.Tensor, repeat_last: int
) -> torch.Tensor:
    """head(h), then head again on the last `repeat_last` rows of h: [n + repeat_last, K]. The
    head holds the network's dropouts, so the repeat is a second dropout sub-model on the same
    trunk features: R-Drop's second pass (Eq. 8) without a second pass of the trunk
    (`rdrop_trunk: shared`)."""
    logits = head(h)
    if repeat_last == 0:
        return logits
    return torch.cat([logits, head(h[h.shape[0] - repeat_last :])])


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] in NHWC order. With one input channel this only relabels the strides (no
    copy), so every caller's batch reaches the first layer already in the fast layout."""
    return x.contiguous(memory_format=torch.channels_last)


def build_model(backbone: str, num_classes: int, dropout: float) -> nn.Module:
    """The named backbone with its weights in channels-last layout (see the module docstring)."""
    if backbone == "vgg16":
        model: nn.Module = VGG16(num_classes, dropout)
    elif backbone == "small_cnn":
        model = SmallCNN(num_classes, dropout)
    else:
        raise ValueError(f"unknown backbone {backbone!r}")
    return model.to(memory_format=torch.channels_last)


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """For inference: every Conv2d followed by a BatchNorm2d in a Sequential becomes one Conv2d
    that computes both. In eval mode BatchNorm is a fixed per-channel affine map, so it folds into
    the convolution's weights and bias (torch.nn.utils.fusion.fuse_conv_bn_eval): the same
    outputs up to float rounding, one pass over the activations fewer. The BatchNorm over the
    input stays, because the convolution after it pads with zeros that the affine map would move.
    Only for a model in eval mode that is not trained further (load_model's)."""
    if model.training:
        raise ValueError("fuse_conv_bn folds BatchNorm's running statistics: eval mode only")
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        layers = list(seq)
        fused: list[nn.Module] = []
        while layers:
            layer = layers.pop(0)
            if isinstance(layer, nn.Conv2d) and layers and isinstance(layers[0], nn.BatchNorm2d):
                layer = fuse_conv_bn_eval(layer, layers.pop(0))
            fused.append(layer)
        del seq[:]
        seq.extend(fused)
    return model.to(memory_format=torch.channels_last)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
