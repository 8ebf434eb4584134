"""The paper's protocol at 4Q size on this CPU: where one fold's time goes, the projected
10-fold time, and the training step against the machine's peak.

4Q (the data set of the paper's Table 3) has 900 clips of about 30 s. The protocol is 10 folds
of three arms (`sssl compare`'s defaults: inherit, the paper's SSSL, SSSL with this
repository's defaults), 12 epochs each, 3 of them warm-up.

    corpus     900 generated songs of 28-32 s, sharded once into --work (reused on re-runs)
    one fold   fold 0 of each arm in this process on one core (torch_threads 1, as each fold
               process runs), the trainer's own epoch functions without Ray; the warm-up is
               trained once and shared by the arms, as `sssl compare` shares it. Each phase is
               timed exclusively (a phase inside another counts once, in the inner one):
               cutting segments, loss pass, GMM, split metrics, pseudo-labels, forward,
               backward, optimiser step, step arithmetic (mixup, losses), validation, song
               level, checkpoint writing
    projection the 10-fold protocol on 2 cores: 10 x (the three arms' fold times, warm-up
               counted once) / 2 (two fold processes side by side); Ray Train's own cost per
               fit (start-up, reports; BENCHMARKS.md "Ray Train overhead") is not in it
    limit      FLOPs of one SmallCNN training step at L = 3 (forward + backward, batch 64;
               torch.utils.flop_counter), this core's peak (a 2048^3 matmul, fp32 and bf16,
               one thread), the step's share of it; and the rates of the CE step, the SSSL step
               and the SSSL step with R-Drop's trunk shared, in fp32 against bf16 autocast,
               interleaved on one worker
    --profile  the CE training step's operators by their own time, fp32 and bf16 (torch.profiler)
    --compile  torch.compile's first steps (the compile) and its rate against eager
    --full     then runs the protocol itself: `sssl compare --folds 10 --parallel 2
               --workers 0` on the same shards (the default three arms, or --arms FILE, into
               --work/--out), and prints its wall time

    python benchmarks/bench_protocol.py [--songs 900] [--seconds 30] [--work runs/protocol]
                                        [--profile] [--compile]
                                        [--full [--arms FILE] [--out NAME] [--set bf16=auto ...]]

Cost: the corpus about 8 min on 2 cores (once); one fold of the three arms about
(20 k segments x (12 + 9 + 9 epochs - 6 shared)) / (400 segments/s) ~ 20 min on one core at
4Q size; the limit section about 3 min. --full: the protocol's own time (hours at 4Q size).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch

PHASES = (
    "cut segments",
    "loss pass",
    "GMM",
    "split metrics",
    "pseudo-labels",
    "forward",
    "backward",
    "optimiser step",
    "step arithmetic",
    "validation",
    "song level",
    "checkpoint",
)


class PhaseClock:
    """Exclusive seconds per phase: time spent in a phase nested inside another is counted in
    the inner one only, so the phases add up to the wall time they cover."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._inner: list[float] = []

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        self._inner.append(0.0)
        try:
            yield
        finally:
            spent = time.perf_counter() - t0
            self.seconds[name] += spent - self._inner.pop()
            if self._inner:
                self._inner[-1] += spent

    def wrap(self, name: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            with self.phase(name):
                return fn(*args, **kwargs)

        return timed


# --------------------------------------------------------------------------- corpus
def corpus(work: Path, songs: int, seconds: float):
    """The 4Q-size shard set, generated and sharded once (shard_synthetic skips done work)."""
    from shards.synth import SynthConfig
    from shards.write import shard_synthetic

    synth = SynthConfig(
        n_songs=songs, seed=26, min_duration_s=seconds - 2, max_duration_s=seconds + 2
    )
    t0 = time.perf_counter()
    shards = shard_synthetic(work / "corpus", work / "shards", synth, progress=True)
    print(
        f"corpus: {songs} songs of {seconds - 2:.0f}-{seconds + 2:.0f} s, ready in "
        f"{time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    return shards


# --------------------------------------------------------------------------- one fold
def timed_worker(cfg, shards, fold_ids, clock: PhaseClock):
    """The trainer's worker (train.build_worker) with its batch cutting, forward, optimiser
    step and the step's pseudo-label pass timed by `clock`."""
    from sssl_dist.rank.train import build_worker

    w, mels, by_id = build_worker(cfg, shards, fold_ids)
    for batcher in (w.batcher, w.val_batcher):
        batcher.inputs = clock.wrap("cut segments", batcher.inputs)
    forward = w.plain.forward

    def timed_forward(x, **kwargs):
        if not torch.is_grad_enabled():  # a no-gradient pass: its caller's phase owns it
            return forward(x, **kwargs)
        with clock.phase("forward"):
            return forward(x, **kwargs)

    w.plain.forward = timed_forward
    w.opt.step = clock.wrap("optimiser step", w.opt.step)
    return w, mels, by_id


@contextlib.contextmanager
def timed_library(clock: PhaseClock) -> Iterator[None]:
    """Module-level functions the epoch calls, timed where they are looked up."""
    from sssl_dist.method import split, step
    from sssl_dist.method.tasks import classification as task

    patches = [
        mock.patch.object(step, "_predict", clock.wrap("pseudo-labels", step._predict)),
        mock.patch.object(split, "fit_split", clock.wrap("GMM", split.fit_split)),
        mock.patch.object(task, "sssl_loss", clock.wrap("step arithmetic", task.sssl_loss)),
        mock.patch.object(task, "ce_loss", clock.wrap("step arithmetic", task.ce_loss)),
        mock.patch.object(torch.Tensor, "backward", clock.wrap("backward", torch.Tensor.backward)),
    ]
    with contextlib.ExitStack() as stack:
        for p in patches:
            stack.enter_context(p)
        yield


def train_epochs(w, clock: PhaseClock, epochs: range, clean_w=None) -> tuple[Any, list[dict]]:
    """The train loop's epochs (train.train_loop_per_worker) without Ray: split, train,
    validate, checkpoint. Returns the last split and each epoch's record."""
    from sssl_dist.files.checkpoint import training_state, write_checkpoint_dir
    from sssl_dist.method import split as sp
    from sssl_dist.method.equations import LossMemory
    from sssl_dist.rank import epoch as ep

    cfg, memory, records = w.cfg, LossMemory.empty(len(w.table)), []
    ckpt = Path(tempfile.mkdtemp(prefix="bench-protocol-ckpt-"))
    for e in epochs:
        torch.manual_seed(cfg.seed * 1_000_003 + e * 101 + w.rank)
        t0 = time.perf_counter()
        sssl = cfg.method != "inherit" and e >= cfg.warmup_epochs
        record: dict[str, Any] = {"epoch": e}
        if sssl:
            with clock.phase("loss pass"):
                losses = ep.loss_pass(w)
            with clock.phase("split metrics"):
                clean_w, m = sp.fit_split_with_metrics(
                    cfg, w.table, losses.numpy(), [len(w.table)], e, memory
                )
            record["noise_auc"] = m.get("noise_auc")
        ep.train_epoch(w, clean_w if sssl else None, e)
        with clock.phase("validation"):
            record.update(ep.segment_accuracy(w))
        with clock.phase("checkpoint"):
            state = training_state(w.plain, w.opt, e, clean_w, memory, None, w.teacher)
            write_checkpoint_dir(ckpt / "epoch", state, {"history.json": records}, cfg)
        record["seconds"] = time.perf_counter() - t0
        records.append(record)
        print(
            f"  epoch {e}: {record['seconds']:.1f} s, val seg acc vs truth "
            f"{record.get('val_seg_acc_truth', float('nan')):.3f}",
            flush=True,
        )
    return clean_w, records


def song_level(w, mels, by_id, fold_ids, clock: PhaseClock) -> dict[str, Any]:
    """The fold's end: every song's segment probabilities, then Eq. 10 + SVM."""
    from sssl_dist.method.song import song_level_results
    from sssl_dist.rank.epoch import song_probabilities

    with clock.phase("song level"):
        ids = sorted(s for part in fold_ids.values() for s in part)
        probs = song_probabilities(w, mels, by_id, ids)
        return song_level_results(w.cfg, by_id, probs, fold_ids)


def one_fold(shards, arms: dict[str, dict], fold: int = 0) -> dict[str, dict[str, Any]]:
    """Fold `fold` of every arm, the warm-up trained once (its phases are reported apart)."""
    from sssl_dist.config import SSSLConfig, with_overrides
    from sssl_dist.data.folds import fold_song_ids

    torch.set_num_threads(1)
    base = SSSLConfig()
    fold_ids = fold_song_ids(shards, base, fold)
    out: dict[str, dict[str, Any]] = {}
    warm = PhaseClock()
    print(f"warm-up ({base.warmup_epochs} epochs, shared by the arms)", flush=True)
    with timed_library(warm):
        w, _, _ = timed_worker(base, shards, fold_ids, warm)
        t0 = time.perf_counter()
        _, records = train_epochs(w, warm, range(base.warmup_epochs))
        out["warm-up"] = {
            "seconds": time.perf_counter() - t0,
            "phases": dict(warm.seconds),
            "n_train": len(w.table),
            "records": records,
        }
    start = {"model": copy.deepcopy(w.plain.state_dict()), "opt": copy.deepcopy(w.opt.state_dict())}
    for name, overrides in arms.items():
        cfg = with_overrides(base, overrides)
        clock = PhaseClock()
        print(f"{name}: epochs {cfg.warmup_epochs}-{cfg.epochs - 1}", flush=True)
        with timed_library(clock):
            w, mels, by_id = timed_worker(cfg, shards, fold_ids, clock)
            w.plain.load_state_dict(start["model"])
            w.opt.load_state_dict(start["opt"])
            t0 = time.perf_counter()
            _, records = train_epochs(w, clock, range(cfg.warmup_epochs, cfg.epochs))
            result = song_level(w, mels, by_id, fold_ids, clock)
        out[name] = {
            "seconds": time.perf_counter() - t0,
            "phases": dict(clock.seconds),
            "records": records,
            "test_acc": result.get("test_acc"),
        }
    return out


def print_fold(times: dict[str, dict[str, Any]]) -> float:
    """The phase table of one fold; returns the fold's seconds with the warm-up counted once."""
    names = list(times)
    print(
        f"\nOne fold, {times['warm-up']['n_train']} training segments, one core "
        "(seconds, exclusive phases):\n"
    )
    print("| phase | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for phase in PHASES:
        cells = [f"{times[n]['phases'].get(phase, 0.0):.1f}" for n in names]
        print(f"| {phase} | " + " | ".join(cells) + " |")
    other = [times[n]["seconds"] - sum(times[n]["phases"].values()) for n in names]
    print("| other (Python, batching, metrics) | " + " | ".join(f"{o:.1f}" for o in other) + " |")
    print("| **all** | " + " | ".join(f"**{times[n]['seconds']:.1f}**" for n in names) + " |")
    fold = sum(t["seconds"] for t in times.values())
    print(
        f"\nfold 0, three arms, warm-up once: {fold:.0f} s on one core; test song accuracy: "
        + ", ".join(f"{n} {times[n]['test_acc']:.3f}" for n in names if n != "warm-up")
    )
    return fold


# --------------------------------------------------------------------------- the limit
def step_flops(batch: int = 64, frames: int = 130, n_mels: int = 128) -> dict[str, float]:
    """FLOPs of one SmallCNN CE training step (forward + backward) on [batch, 1, 128, frames]
    (L = 3 s at 22.05 kHz / hop 512 is 130 frames), counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    from sssl_dist.method.models import build_model

    model = build_model("small_cnn", 4, 0.5)
    x, y = torch.randn(batch, 1, n_mels, frames), torch.randint(0, 4, (batch,))
    counter = FlopCounterMode(display=False)
    with counter:
        torch.nn.functional.cross_entropy(model(x), y).backward()
    return {"step_flops": float(counter.get_total_flops()), "batch": batch}


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 8) -> float:
    """FLOP/s of an n^3 matmul on one thread (the best of `repeats`)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def step_rates(shards, steps: int = 40, rounds: int = 5) -> dict[str, float]:
    """Segments/s of the CE step, the SSSL step and the SSSL step with R-Drop's trunk shared
    (`rdrop_trunk: shared`), each in fp32 and under bf16 autocast, on one worker of fold 0
    with a fixed split, interleaved round by round so all see the same machine; the medians."""
    from sssl_dist.config import SSSLConfig
    from sssl_dist.data.folds import fold_song_ids
    from sssl_dist.data.segments import epoch_batches
    from sssl_dist.method.equations import split_clean_noisy
    from sssl_dist.method.step import ce_loss, sssl_loss
    from sssl_dist.method.tasks import task_of
    from sssl_dist.rank.epoch import loss_pass
    from sssl_dist.rank.train import build_worker

    torch.set_num_threads(1)
    cfg = SSSLConfig()
    w, _, _ = build_worker(cfg, shards, fold_song_ids(shards, cfg, 0))
    clean_w = split_clean_noisy(
        loss_pass(w).numpy().astype(np.float64),
        w.table.label,
        num_classes=task_of(cfg).num_outputs,
        tau=cfg.tau,
    ).clean_w
    batches = epoch_batches(len(w.table), steps, cfg.batch_size, cfg.seed, 0)
    inputs = [
        (w.batcher.inputs(b), w.batcher.labels(b), torch.from_numpy(clean_w[b])) for b in batches
    ]
    gen = torch.Generator().manual_seed(0)

    step_cfg = {"sssl": cfg, "sssl-shared": replace(cfg, rdrop_trunk="shared")}

    def run(kind: str, bf16: bool) -> float:
        w.plain.train()
        t0 = time.perf_counter()
        for x, y, cw in inputs:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = (
                    ce_loss(w.plain, x, y)
                    if kind == "ce"
                    else sssl_loss(w.plain, w.plain, x, y, cw, step_cfg[kind], gen)
                )
            w.opt.zero_grad(set_to_none=True)
            out.loss.backward()
            w.opt.step()
        return sum(x.shape[0] for x, _, _ in inputs) / (time.perf_counter() - t0)

    rates: dict[str, list[float]] = defaultdict(list)
    for _ in range(rounds):
        for kind in ("ce", "sssl", "sssl-shared"):
            for bf16 in (False, True):
                rates[f"{kind}_{'bf16' if bf16 else 'fp32'}"].append(run(kind, bf16))
    return {k: float(np.median(v[1:])) for k, v in rates.items()}  # round 1 warms up


def print_limit(shards) -> None:
    flops = step_flops()
    peaks = {
        name: matmul_peak(dt) for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16))
    }
    rates = step_rates(shards)
    per_segment = flops["step_flops"] / flops["batch"]
    print(
        f"\nSmallCNN CE training step at L = 3: {per_segment / 1e6:.1f} MFLOP per segment "
        f"(forward + backward; {flops['step_flops'] / 1e9:.2f} GFLOP per batch of 64)"
    )
    print(
        "| precision | matmul peak, 1 thread (GFLOP/s) | CE step (segments/s) | CE step "
        "GFLOP/s | share of peak | SSSL step (segments/s) | SSSL step, trunk shared |"
    )
    print("|---|---|---|---|---|---|---|")
    for p in ("fp32", "bf16"):
        achieved = rates[f"ce_{p}"] * per_segment
        print(
            f"| {p} | {peaks[p] / 1e9:.0f} | {rates[f'ce_{p}']:.0f} | {achieved / 1e9:.1f} | "
            f"{achieved / peaks[p]:.1%} | {rates[f'sssl_{p}']:.0f} | "
            f"{rates[f'sssl-shared_{p}']:.0f} |"
        )
    base = rates["sssl_fp32"]
    print(
        f"side by side, against fp32 with separate passes: CE step "
        f"{rates['ce_bf16'] / rates['ce_fp32']:.2f}x in bf16; SSSL step "
        f"{rates['sssl_bf16'] / base:.2f}x in bf16, {rates['sssl-shared_fp32'] / base:.2f}x "
        f"with the trunk shared, {rates['sssl-shared_bf16'] / base:.2f}x with both"
    )


def ce_training_step(bf16: bool, compiled: bool = False) -> Callable[[], None]:
    """One SmallCNN CE training step (L = 3, batch 64, Adam) on a fixed random batch, under
    bf16 autocast or not, eager or through torch.compile."""
    from sssl_dist.method.models import build_model

    torch.manual_seed(0)
    model = build_model("small_cnn", 4, 0.5)
    net = torch.compile(model) if compiled else model
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x, y = torch.randn(64, 1, 128, 130), torch.randint(0, 4, (64,))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def profile_step(steps: int = 20, top: int = 12) -> None:
    """Where the CE training step's time goes (one thread), in fp32 and under bf16 autocast:
    torch.profiler's operators by their own time, with the share convolutions take."""
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(1)
    for bf16 in (False, True):
        step = ce_training_step(bf16)
        for _ in range(3):
            step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step()
        events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in events)
        conv = sum(e.self_cpu_time_total for e in events if "convolution" in e.key)
        print(
            f"\n{'bf16 autocast' if bf16 else 'fp32'}: {total / steps / 1e3:.1f} ms per step of "
            f"64 segments; convolutions (forward + backward) {conv / total:.0%}"
        )
        print("| operator | share of the step | ms per step | calls per step |")
        print("|---|---|---|---|")
        for e in events[:top]:
            print(
                f"| {e.key} | {e.self_cpu_time_total / total:.1%} | "
                f"{e.self_cpu_time_total / steps / 1e3:.2f} | {e.count / steps:.0f} |"
            )


def compile_rates(steps: int = 30) -> dict[str, float]:
    """torch.compile on this CPU, in fp32 and under bf16 autocast: seconds to the end of the
    first 3 training steps (the compile is paid there) and segments/s afterwards, eager
    against compiled, one thread."""
    torch.set_num_threads(1)
    out = {}
    for precision in ("fp32", "bf16"):
        r = {}
        for name in ("eager", "compiled"):
            step = ce_training_step(precision == "bf16", compiled=name == "compiled")
            t0 = time.perf_counter()
            for _ in range(3):
                step()
            r[f"{name}_first3_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            r[f"{name}_rate"] = steps * 64 / (time.perf_counter() - t0)
        out.update({f"{precision}_{k}": v for k, v in r.items()})
        print(
            f"\ntorch.compile, SmallCNN training step in {precision}, one thread: first 3 steps "
            f"{r['eager_first3_s']:.1f} s eager, {r['compiled_first3_s']:.1f} s compiled; then "
            f"{r['eager_rate']:.0f} against {r['compiled_rate']:.0f} segments/s "
            f"({r['compiled_rate'] / r['eager_rate']:.2f}x)"
        )
    return out


def cpu_name() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    name = next(
        (
            line.split(":", 1)[1].strip()
            for line in out.splitlines()
            if line.startswith("Model name")
        ),
        "unknown CPU",
    )
    flags = next((line for line in out.splitlines() if line.startswith("Flags")), "")
    has = [f for f in ("amx_bf16", "avx512_bf16") if f in flags.split()]
    return f"{name} ({', '.join(has) or 'no AMX, no AVX512-BF16'})"


def main(a: argparse.Namespace) -> None:
    from sssl_dist.driver.arms import default_arms

    print(f"CPU: {cpu_name()}, torch {torch.__version__}", flush=True)
    shards = corpus(Path(a.work), a.songs, a.seconds)
    if not a.skip_fold:
        fold = print_fold(one_fold(shards, default_arms()))
        print(
            f"projected protocol, 10 folds x 3 arms on 2 cores: {10 * fold / 2 / 3600:.2f} h "
            "(+ Ray Train's start-up per fit)",
            flush=True,
        )
    print_limit(shards)
    if a.profile:
        profile_step()
    if a.compile:
        compile_rates()
    if a.full:
        cmd = [
            sys.executable,
            "-m",
            "sssl_dist.cli",
            "compare",
            "--shards",
            str(shards.root),
            "--folds",
            "10",
            "--parallel",
            "2",
            "--workers",
            "0",
            "--out",
            str(Path(a.work) / a.out),
        ]
        if a.arms:
            cmd += ["--arms", a.arms]
        if a.set:
            cmd += ["--set", *a.set]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        print(f"the protocol itself: {(time.perf_counter() - t0) / 3600:.2f} h on 2 cores")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--songs", type=int, default=900)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--work", default="runs/protocol", help="corpus and results (kept)")
    p.add_argument("--full", action="store_true", help="then run the 10-fold protocol itself")
    p.add_argument("--arms", help="--full: an arms YAML (default: `sssl compare`'s three)")
    p.add_argument("--out", default="protocol", help="--full: its folder under --work")
    p.add_argument("--skip-fold", action="store_true", help="the limit section only")
    p.add_argument(
        "--set", nargs="*", metavar="KEY=VALUE", help="--full: config overrides, e.g. bf16=auto"
    )
    p.add_argument("--profile", action="store_true", help="the step's operators (~30 s)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (~1 min)")
    main(p.parse_args())
