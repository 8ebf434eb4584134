"""Which precision a worker trains in: `bf16: true | false | auto` (config.py).

bf16 autocast pays on GPUs that support it, and on CPUs whose matrix units take bf16 (Intel
AMX, or AVX512-BF16). It does not pay everywhere those exist: on a Xeon with AVX512-BF16 and
no AMX, SmallCNN's training step ran at 0.82x of fp32 (BENCHMARKS.md), while a Xeon with AMX
ran it at 1.67x. So `auto` asks the CPU for the instructions first, then times a few training
steps of the run's own network in both precisions, and turns bf16 on only when it is clearly
faster. The log says which was chosen and why; the history records it per epoch.
"""

from __future__ import annotations

import copy
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

# bf16 must beat fp32 by this much in the probe: a smaller gain is within the probe's noise on
# a shared machine, and not worth a result that differs from fp32 in rounding.
MIN_SPEEDUP = 1.15
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class Precision:
    """The chosen precision of a run and the reason, for the log."""

    bf16: bool
    reason: str


def cpu_bf16_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, ...]:
    """The bf16 instruction sets this CPU reports (Linux /proc/cpuinfo; none elsewhere)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return ()
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")),
        [],
    )
    return tuple(f for f in CPU_BF16_FLAGS if f in flags)


def choose_precision(
    setting: bool | str,
    model: torch.nn.Module,
    input_shape: tuple[int, ...],
    device: torch.device,
) -> Precision:
    """What `bf16: setting` means for `model` on `device`; `input_shape` is one training batch
    [B, 1, n_mels, frames] (the probe uses at most 16 of B)."""
    if setting is True or setting is False:
        return Precision(setting, "set in the config")
    if device.type == "cuda":
        # Native bf16 only: by default torch also says yes where bf16 is emulated (V100, T4),
        # which runs slower than fp32 and, in cuDNN convolutions, not at all.
        ok = torch.cuda.is_bf16_supported(including_emulation=False)
        return Precision(
            ok, f"auto: this GPU {'supports' if ok else 'has no native support for'} bf16"
        )
    if device.type != "cpu":
        return Precision(False, f"auto: no bf16 probe for {device.type}")
    flags = cpu_bf16_flags()
    if not flags:
        return Precision(False, f"auto: this CPU ({platform.machine()}) has no AMX or AVX512-BF16")
    speedup = probe_speedup(model, (min(input_shape[0], 16), *input_shape[1:]))
    on = speedup >= MIN_SPEEDUP
    return Precision(
        on,
        f"auto: this CPU has {', '.join(flags)}; a training step ran at {speedup:.2f}x fp32 in "
        f"bf16 ({'>=' if on else '<'} {MIN_SPEEDUP}x)",
    )


# One probe per process and network shape: local mode fits many folds in one process.
_SPEEDUPS: dict[tuple, float] = {}


def probe_speedup(model: torch.nn.Module, shape: tuple[int, ...]) -> float:
    """bf16's training-step rate over fp32's for a copy of `model` on random inputs of
    `shape`."""
    key = (
        type(model).__name__,
        sum(p.numel() for p in model.parameters()),
        shape,
        torch.get_num_threads(),
    )
    if key not in _SPEEDUPS:
        _SPEEDUPS[key] = _time_speedup(model, shape)
    return _SPEEDUPS[key]


def _time_speedup(model: torch.nn.Module, shape: tuple[int, ...], rounds: int = 4) -> float:
    """Interleaved rounds of two steps in each precision (after one untimed step each), on a
    copy, so the run's own weights, optimiser and random streams are untouched; the ratio of
    the median round times."""
    with torch.random.fork_rng():
        net = copy.deepcopy(model).train()
        opt = torch.optim.SGD(net.parameters(), lr=0.0)  # lr 0: the copy's weights stay put
        x = torch.randn(shape)
        y = torch.zeros(shape[0], dtype=torch.long)

        def steps(bf16: bool, n: int) -> float:
            t0 = time.perf_counter()
            for _ in range(n):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    loss = F.cross_entropy(net(x).float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return time.perf_counter() - t0

        steps(False, 1), steps(True, 1)
        fp32, bf16 = [], []
        for _ in range(rounds):
            fp32.append(steps(False, 2))
            bf16.append(steps(True, 2))
    return sorted(fp32)[rounds // 2] / sorted(bf16)[rounds // 2]
