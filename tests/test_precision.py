"""`bf16: auto` (precision.py): the CPU's instructions first, then a probe of the training step;
the probe leaves the run's network and random streams alone; the GMM sees float32 losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sssl_dist.config import SSSLConfig, load_config
from sssl_dist.method.models import build_model
from sssl_dist.rank import precision

CPU = torch.device("cpu")
SHAPE = (4, 1, 128, 130)


def test_bf16_takes_true_false_and_auto_from_yaml_and_the_command_line(tmp_path):
    (tmp_path / "c.yaml").write_text("bf16: auto\n")
    assert load_config(tmp_path / "c.yaml").bf16 == "auto"
    assert load_config(None, {"bf16": "AUTO"}).bf16 == "auto"
    assert load_config(None, {"bf16": "off"}).bf16 is False
    assert SSSLConfig().bf16 is False  # one result on every machine unless asked


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu sse avx512f avx512_bf16 amx_tile amx_bf16\n")
    assert precision.cpu_bf16_flags(info) == ("amx_bf16", "avx512_bf16")
    info.write_text("processor : 0\nflags : fpu sse avx2\n")
    assert precision.cpu_bf16_flags(info) == ()
    assert precision.cpu_bf16_flags(tmp_path / "absent") == ()  # not Linux: no flags


def test_a_set_value_is_taken_as_it_is(monkeypatch):
    monkeypatch.setattr(precision, "probe_speedup", _must_not_probe)
    model = build_model("small_cnn", 4, 0.5)
    for value in (True, False):
        chosen = precision.choose_precision(value, model, SHAPE, CPU)
        assert chosen == precision.Precision(value, "set in the config")


@pytest.mark.parametrize(
    "flags,speedup,on,words",
    [
        ((), None, False, "has no AMX or AVX512-BF16"),
        (("avx512_bf16",), 0.85, False, "0.85x fp32 in bf16 (< 1.15x)"),
        (("amx_bf16", "avx512_bf16"), 1.67, True, "1.67x fp32 in bf16 (>= 1.15x)"),
    ],
)
def test_auto_turns_bf16_on_only_where_the_cpu_has_it_and_the_probe_is_faster(
    monkeypatch, flags, speedup, on, words
):
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: flags)
    monkeypatch.setattr(
        precision, "probe_speedup", (lambda m, s: speedup) if speedup else _must_not_probe
    )
    chosen = precision.choose_precision("auto", build_model("small_cnn", 4, 0.5), SHAPE, CPU)
    assert chosen.bf16 is on
    assert words in chosen.reason and chosen.reason.startswith("auto: ")


def test_the_probe_leaves_the_network_and_the_random_streams_untouched():
    model = build_model("small_cnn", 4, 0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(3)
    expected = torch.rand(5)
    torch.manual_seed(3)
    speedup = precision._time_speedup(model, (2, 1, 32, 40), rounds=2)
    assert speedup > 0 and np.isfinite(speedup)
    assert torch.equal(torch.rand(5), expected)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_the_loss_pass_gives_the_gmm_float32_under_bf16(shard_dir):
    from sssl_dist.data.folds import fold_song_ids
    from sssl_dist.data.segments import ShardSet
    from sssl_dist.rank.epoch import loss_pass
    from sssl_dist.rank.train import build_worker

    cfg = SSSLConfig(bf16=True, n_folds=3)
    shards = ShardSet(shard_dir)
    w, _, _ = build_worker(cfg, shards, fold_song_ids(shards, cfg, 0))
    assert w.bf16
    losses = loss_pass(w)
    assert losses.dtype == torch.float32 and losses.shape == (len(w.table),)


def test_auto_in_a_worker_records_the_choice_and_why(shard_dir, monkeypatch):
    from sssl_dist.data.folds import fold_song_ids
    from sssl_dist.data.segments import ShardSet
    from sssl_dist.rank.train import build_worker

    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ("amx_bf16",))
    monkeypatch.setattr(precision, "probe_speedup", lambda m, s: 1.5)
    cfg = SSSLConfig(bf16="auto", n_folds=3)
    shards = ShardSet(shard_dir)
    w, _, _ = build_worker(cfg, shards, fold_song_ids(shards, cfg, 0))
    assert w.bf16 and "1.50x" in w.precision


def _must_not_probe(*_):
    raise AssertionError("the probe ran where the setting or the CPU had already decided")


def test_auto_on_a_gpu_asks_for_native_bf16(monkeypatch):
    """A V100 or T4 only emulates bf16: torch.cuda.is_bf16_supported() says yes by default."""
    asked = []

    def emulating_gpu(including_emulation: bool = True) -> bool:
        asked.append(including_emulation)
        return including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", emulating_gpu)
    model = build_model("small_cnn", 4, 0.5)
    chosen = precision.choose_precision("auto", model, SHAPE, torch.device("cuda"))
    assert asked == [False] and chosen.bf16 is False
    assert chosen.reason == "auto: this GPU has no native support for bf16"


def test_under_bf16_the_pseudo_label_pass_leaves_the_weights_their_gradients():
    """`pseudo_label_network: current` under bf16: the no-grad pseudo-label pass runs inside
    the step's autocast block, before the training forward through the same weights. It keeps
    bf16 but not the autocast weight cache (on torch before the cache fix, a weight copy cached
    under no_grad was reused by the training forward and its gradient was lost); the step then
    leaves a gradient on every conv and linear weight."""
    from sssl_dist.method.step import sssl_loss

    torch.manual_seed(0)
    cfg = SSSLConfig(pseudo_label_network="current", bf16=True, batch_size=8)
    model = build_model("small_cnn", 4, 0.5)
    passes = []
    model.register_forward_pre_hook(
        lambda m, args: passes.append(
            (
                torch.is_grad_enabled(),
                torch.is_autocast_enabled("cpu"),
                torch.is_autocast_cache_enabled(),
            )
        )  # fmt: skip
    )
    x = torch.randn(8, 1, 128, 130)
    labels = torch.arange(8) % 4
    clean_w = torch.tensor([0.9, 0.8, 0.0, 0.0, 0.7, 0.0, 0.95, 0.0])  # 4 in X, 4 in U
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sssl_loss(model, model, x, labels, clean_w, cfg, torch.Generator().manual_seed(0))
    out.loss.backward()
    no_grad = [p for p in passes if not p[0]]
    assert no_grad and all(p == (False, True, False) for p in no_grad)  # bf16, no cache
    weights = [
        m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)
    ]
    assert len(weights) >= 2
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in weights)
