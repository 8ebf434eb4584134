"""The backbones: any segment length in, K logits out, in the channels-last layout without
changing what they compute."""

from __future__ import annotations

import pytest
import torch

from sssl_dist.method.models import SmallCNN, build_model, fuse_conv_bn


@pytest.mark.parametrize("backbone", ["small_cnn", "vgg16"])
def test_backbones_take_any_length_in_channels_last(backbone):
    torch.manual_seed(0)
    net = build_model(backbone, 4, 0.5).eval()
    for name, p in net.named_parameters():
        if p.dim() == 4:  # conv weights: the layout the fast kernels want
            assert p.is_contiguous(memory_format=torch.channels_last), name
    with torch.no_grad():
        for frames in (43, 129):  # L = 1 s and 3 s at 22.05 kHz, hop 512
            assert net(torch.randn(2, 1, 128, frames)).shape == (2, 4)


def test_channels_last_computes_what_nchw_computes():
    """Same weights, both layouts: equal logits up to float rounding, in eval mode and in one
    training step's gradients (the layout must be a speed choice, never a numerical one)."""
    torch.manual_seed(0)
    fast = build_model("small_cnn", 4, 0.0)
    plain = SmallCNN(4, 0.0)
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(8, 1, 128, 129)
    # The two really run in different layouts (a conv follows its weights' layout).
    stem = [net.features[:3](x) for net in (fast, plain)]
    assert stem[0].is_contiguous(memory_format=torch.channels_last)
    assert stem[1].is_contiguous() and not stem[1].is_contiguous(memory_format=torch.channels_last)
    for net in (fast, plain):
        net.train()
        net(x).logsumexp(-1).mean().backward()
    for (name, a), b in zip(fast.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=name)
    fast.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backbone", ["small_cnn", "vgg16"])
def test_batchnorm_folded_into_convolutions_predicts_the_same(backbone):
    """Prediction's fused network: BatchNorm after each convolution is gone, the input's stays,
    and the probabilities equal the unfused network's up to float rounding, with running
    statistics that are not the identity (as after training)."""
    torch.manual_seed(0)
    net = build_model(backbone, 4, 0.5)
    with torch.no_grad():
        for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    net.eval()
    x = torch.randn(3, 1, 128, 129) * 10 - 40  # dB-like values
    with torch.no_grad():
        want = torch.softmax(net(x), -1)
        convs = sum(isinstance(m, torch.nn.Conv2d) for m in net.modules())
        fused = fuse_conv_bn(net)
        got = torch.softmax(fused(x), -1)
    norms = [m for m in fused.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 1 and norms[0] is fused.features[0]  # only the input's
    assert sum(isinstance(m, torch.nn.Conv2d) for m in fused.modules()) == convs
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="eval mode"):
        fuse_conv_bn(build_model(backbone, 4, 0.5))
