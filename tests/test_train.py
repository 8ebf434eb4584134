"""Ray Train: the distributed loop, its consistency across worker counts, faults and resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sssl_dist.config import SSSLConfig
from sssl_dist.data.folds import fold_song_ids
from sssl_dist.data.segments import SegmentTable, ShardSet, rank_block
from sssl_dist.driver.fold import check_fold
from sssl_dist.driver.run import run_fold
from sssl_dist.files.checkpoint import load_state
from sssl_dist.files.runfiles import PROGRESS as PROGRESS_FILE

REPO = Path(__file__).resolve().parents[1]
# Small and fast, but every stage for real: warm-up, then SSSL epochs with GMM splits.
CFG = SSSLConfig(epochs=3, warmup_epochs=1, batch_size=32, n_folds=2, gloo_timeout_s=60)


def _odd_fold(shard_dir) -> tuple[SSSLConfig, int]:
    """(CFG with a segment length, fold) giving an odd number of training segments, so the two
    ranks' blocks are uneven by construction."""
    from dataclasses import replace

    shards = ShardSet(shard_dir)
    for fold in range(CFG.n_folds):
        train = set(fold_song_ids(shards, CFG, fold)["train"])
        songs = [s for s in shards.songs if s["song_id"] in train]
        for length in (3, 2, 4):
            if len(SegmentTable.build(songs, CFG.task, length)) % 2 == 1:
                return replace(CFG, segment_seconds=length), fold
    raise AssertionError("no fold and segment length give an odd training set")


@pytest.fixture(scope="module")
def two_worker_run(shard_dir, tmp_path_factory, ray_session):
    from dataclasses import replace

    store = tmp_path_factory.mktemp("ray_store")
    cfg, fold = _odd_fold(shard_dir)
    # No warm-up: the first split comes from the initial weights, identical for any number of
    # workers, so 1 and 2 workers can be compared exactly (test_one_worker_matches_two_workers).
    # The split's evidence is the per-second song-relative one (method/split.py), so the
    # driver's service computes it from the gathered losses and the table's songs and starts.
    # The split runs the candidates beyond the paper that change who scores and what X holds:
    # a peer network's losses (co-divide: the service fits two splits an epoch), per-second
    # song-relative evidence with one GMM, then UNICON's balance and ProMix's agreement.
    cfg = replace(
        cfg,
        warmup_epochs=0,
        split_evidence="song_relative_seconds",
        gmm_scope="global",
        split_network="peer",
        split_balance="uniform",
        split_agreement="matched",
    )
    run = run_fold(cfg, ShardSet(shard_dir), fold, storage_path=store, name="w2", workers=2)
    return run, store, cfg, fold


def _epochs(history):
    return [h for h in history if "n_clean" in h]


def test_two_workers_gather_every_segment_once(two_worker_run, shard_dir):
    run, _, cfg, _ = two_worker_run
    n_train = len(
        SegmentTable.build(
            [s for s in ShardSet(shard_dir).songs if s["song_id"] in run.fold_ids["train"]],
            cfg.task,
            cfg.segment_seconds,
        )
    )
    sssl_epochs = _epochs(run.history)
    assert len(sssl_epochs) == cfg.epochs - cfg.warmup_epochs == cfg.epochs
    blocks = [hi - lo for lo, hi in (rank_block(n_train, r, 2) for r in range(2))]
    for h in sssl_epochs:
        # What rank 0 received: each rank exactly its own block, every position once.
        assert h["gathered"] == {
            "per_rank": blocks,
            "expected": blocks,
            "gathered": n_train,
            "n": n_train,
        }
        assert h["n_train"] == n_train and h["n_clean"] + h["n_noisy"] == n_train
        assert "noise_auc" in h  # ground truth known: noise detection measured
        assert h["time_loss_pass"] > 0 and h["time_gather_gmm"] > 0
    # Every song of the fold is scored: none drops out of the song-level decision.
    assert run.result["test_songs"] == len(run.fold_ids["test"])
    assert run.result["val_songs"] == len(run.fold_ids["val"])
    # The driver's split service fitted every SSSL epoch once, and ranks trained on its splits.
    assert run.splits == [{"epoch": h["epoch"], "n_clean": h["n_clean"]} for h in sssl_epochs]


def test_uneven_blocks_do_not_hang(two_worker_run):
    """The fold's training set has an odd number of segments: blocks differ by one, yet every
    epoch finished (a 60 s gloo timeout would have failed the run otherwise)."""
    run, _, _, _ = two_worker_run
    n = run.history[0]["n_train"]
    (lo0, hi0), (lo1, hi1) = rank_block(n, 0, 2), rank_block(n, 1, 2)
    assert n % 2 == 1 and hi0 - lo0 != hi1 - lo1, "premise: uneven blocks"
    assert len(run.history) == CFG.epochs


def test_one_worker_matches_two_workers(two_worker_run, shard_dir, tmp_path, ray_session):
    """DESIGN.md: a 2-worker run partitions exactly like a 1-worker run.

    The first split (from the initial weights) goes through loss pass, gather, GMM and broadcast
    on 1 and on 2 ranks: it must be identical, fit for fit. The batches are identical too
    (tests/test_shards.py checks that exactly). After the first optimiser step the two runs
    drift apart through per-rank BatchNorm statistics (SyncBatchNorm refuses CPU tensors) and
    float summation order, so later epochs are not compared: on 24 barely trained songs that
    drift moved the clean fraction by up to 0.2.

    The two runs also fit on different GMM sites (2 workers: the driver's split service, the
    default; 1 worker: rank 0), so the first split being identical shows the sites agree."""
    from dataclasses import replace

    run2, _, cfg, fold = two_worker_run
    assert cfg.gmm_site == "driver" and run2.splits, "premise: the 2-worker run used the service"
    run1 = run_fold(
        replace(cfg, gmm_site="rank0"),
        ShardSet(shard_dir),
        fold,
        storage_path=tmp_path,
        name="w1",
        workers=1,
    )
    assert run1.splits == []  # no service started
    h1, h2 = _epochs(run1.history), _epochs(run2.history)
    assert [h["n_train"] for h in h1] == [h["n_train"] for h in h2]
    assert [h["steps"] for h in run1.history] == [h["steps"] for h in run2.history]
    assert h1[0]["gathered"]["per_rank"] == [h1[0]["n_train"]]
    first1, first2 = h1[0], h2[0]
    for key in ("n_clean", "clean_fraction", "class_counts_in_x", "loss_range", "gmm", "noise_auc"):
        assert first1[key] == first2[key], key


def test_local_mode_runs_the_same_loop_with_cpu_bf16(shard_dir, tmp_path, ray_session):
    """Local mode (num_workers=0) runs the same loop in-process; with bf16 on, the autocast path
    that GPUs take runs here on the CPU, so only the device itself is untested without a GPU.
    The run also evaluates the best validation epoch (eval_epoch: best_val): the song decision
    and the final checkpoint's model are that epoch's. It trains X on DivideMix's refined
    targets under a cosine learning rate, the step's two options beside the paper's, and
    scores each split with the best validation epoch so far (split_network: best_val)."""
    from dataclasses import replace

    from sssl_dist.rank.epoch import epoch_lr

    cfg = replace(
        CFG,
        bf16=True,
        eval_epoch="best_val",
        clean_targets="refined",
        lr_schedule="cosine",
        split_network="best_val",
    )
    run = run_fold(cfg, ShardSet(shard_dir), 1, storage_path=tmp_path, name="local", workers=0)
    assert len(run.history) == cfg.epochs
    scores = [h["val_seg_acc"] for h in run.history]
    best = max(e for e, s in enumerate(scores) if s == max(scores))  # ties: the later epoch
    assert run.result["evaluated_epoch"] == best
    assert run.result["val_seg_acc"] == scores[best]
    for h in run.history[cfg.warmup_epochs :]:  # each split scored by the best epoch before it
        before = scores[: h["epoch"]]
        assert h["split_network_epoch"] == max(e for e, s in enumerate(before) if s == max(before))
    # The last epoch's figures beside them, from the same run.
    assert run.result["last_epoch_val_seg_acc"] == scores[-1]
    assert run.result["last_epoch_test_songs"] == run.result["test_songs"]
    state = load_state(run.checkpoint.path)
    assert state["best_epoch"] == best
    for name, tensor in state["model"].items():
        assert torch.equal(tensor, state["best_model"][name]), name
    assert all(np.isfinite(h["l_mix"]) for h in run.history)
    assert [h["lr"] for h in run.history] == [epoch_lr(cfg, e) for e in range(cfg.epochs)]
    assert run.history[-1]["lr"] < run.history[0]["lr"] == cfg.lr
    assert _epochs(run.history)[0]["gathered"]["gathered"] == run.history[0]["n_train"]
    assert run.result["test_songs"] == len(run.fold_ids["test"])
    # Every epoch trained under autocast, and the first one says why.
    assert [h["bf16"] for h in run.history] == [True] * cfg.epochs
    assert run.history[0]["precision"] == "set in the config"


def test_checkpoint_loads_weights_only_and_has_everything(two_worker_run):
    """Our checkpoints hold tensors and plain values only: load_state reads them with
    weights_only=True, so anything else saved into them would fail here."""
    run, store, _, _ = two_worker_run
    state = load_state(run.checkpoint.path)
    assert set(state) >= {"model", "optimizer", "epoch", "torch_rng", "clean_w"}
    assert state["epoch"] == CFG.epochs - 1 and state["clean_w"].dtype == torch.float32
    assert (Path(run.checkpoint.path) / "config.yaml").is_file()
    # Checkpoints are named after their epoch, so a restart can find the newest one on disk.
    names = {p.name for p in Path(run.run_dir).iterdir() if (p / "state.pt").is_file()}
    assert "final" in names and f"epoch-{CFG.epochs - 1:04d}" in names


def test_rerun_of_a_finished_run_changes_nothing(two_worker_run, shard_dir, ray_session):
    """Re-running a finished 2-worker run reads its final checkpoint back: nothing is trained
    or scored again (a second scoring pass once gave rank 1's songs other probabilities), and
    the final checkpoint survives any number of re-runs (it was once rotated away)."""
    run, store, cfg, fold = two_worker_run
    progress = Path(run.run_dir) / PROGRESS_FILE
    before = progress.read_text().splitlines()
    for _ in range(2):
        again = run_fold(cfg, ShardSet(shard_dir), fold, storage_path=store, name="w2", workers=2)
        assert progress.read_text().splitlines() == before  # no epoch was trained again
        assert again.result == run.result and again.songs == run.songs
        assert (Path(run.run_dir) / "final" / "result.json").is_file()


def _train_workers():
    """Ray Train worker processes ("ray::RayTrainWorker..."); the state API would need the
    dashboard, which the shared test instance does not start."""
    import psutil

    return [
        p
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"] and p.info["cmdline"][0].startswith("ray::RayTrainWorker")
    ]


def _complete_checkpoints(run_dir: Path) -> list[int]:
    """Epochs whose checkpoint directory is complete on disk (what a restart can resume)."""
    from sssl_dist.files.checkpoint import readable_epoch

    if not run_dir.is_dir():
        return []
    found = [readable_epoch(d) for d in run_dir.glob("epoch-*")]
    return sorted(e for e in found if e is not None)


def test_killed_worker_recovers_from_newest_persisted_checkpoint(shard_dir, tmp_path, ray_session):
    """A worker is SIGKILLed the moment the first checkpoint is complete on disk: before the
    Train controller has polled it (every 2 s), so Ray's own get_checkpoint() does not know it
    yet. The restart must still resume from it (it once restarted from scratch). With the
    `mean_loss` selection, the loss memory must survive the restart too, and the driver's split
    service must keep its split history: every SSSL epoch exactly once, re-fitted epochs not
    counted twice. The split is scored by the best validation epoch's copy (split_network:
    best_val), so the copy must survive the restart as well, on both ranks."""
    from dataclasses import replace

    cfg = replace(CFG, epochs=5, max_failures=2, selection="mean_loss", split_network="best_val")
    run_dir = tmp_path / "kill"
    progress = run_dir / PROGRESS_FILE
    killed: list[int] = []

    def killer():
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            done = _complete_checkpoints(run_dir)
            workers = _train_workers() if done else []
            if workers:
                workers[-1].send_signal(signal.SIGKILL)
                killed.append(done[-1])
                return
            time.sleep(0.05)

    thread = threading.Thread(target=killer)
    thread.start()
    run = run_fold(cfg, ShardSet(shard_dir), 0, storage_path=tmp_path, name="kill", workers=2)
    thread.join()
    assert killed, "the worker was never killed"
    epochs = [json.loads(line)["epoch"] for line in progress.read_text().splitlines()]
    assert epochs[0] == 0 and epochs[-1] == cfg.epochs - 1
    restarts = [i for i in range(1, len(epochs)) if epochs[i] <= epochs[i - 1]]
    # The kill came after epoch `killed[0]` was complete on disk: training goes on from the
    # epoch after it (or later, if a newer checkpoint completed before the kill landed).
    first_after_kill = epochs[restarts[0]] if restarts else epochs[-1]
    assert first_after_kill >= killed[0] + 1, f"did not resume after epoch {killed[0]}: {epochs}"
    assert run.result["test_songs"] == len(run.fold_ids["test"])
    # Every segment's loss was averaged over exactly the SSSL epochs: none lost, none twice.
    counts = load_state(run.checkpoint.path)["loss_counts"].numpy()
    assert (counts == cfg.epochs - cfg.warmup_epochs).all(), np.unique(counts)
    assert [s["epoch"] for s in run.splits] == list(range(cfg.warmup_epochs, cfg.epochs))
    assert [s["n_clean"] for s in run.splits] == [h["n_clean"] for h in _epochs(run.history)]
    scores = [h["val_seg_acc"] for h in run.history]
    for h in _epochs(run.history):
        assert h["gathered"]["gathered"] == h["n_train"]  # each segment once, from 2 ranks
        assert h["gathered"]["per_rank"] == h["gathered"]["expected"]
        before = scores[: h["epoch"]]  # the copy scoring it: the best epoch so far (ties: later)
        assert h["split_network_epoch"] == max(e for e, v in enumerate(before) if v == max(before))


def test_rank0_failure_in_the_gmm_step_ends_the_run_promptly(shard_dir, tmp_path, ray_session):
    """Rank 0 raises inside the GMM step: rank 0 broadcasts its error status before the weights,
    so rank 1 is released at once and the run ends with that error, not at the gloo timeout.
    The timeout is 120 s here, so a hang would fail the 60 s bound below."""
    from dataclasses import replace

    cfg = replace(CFG, gloo_timeout_s=120)
    progress = tmp_path / "fault" / PROGRESS_FILE
    with pytest.raises(Exception, match="injected fault in the GMM step") as err:
        run_fold(
            cfg,
            ShardSet(shard_dir),
            0,
            storage_path=tmp_path,
            name="fault",
            workers=2,
            fault="gmm",
        )
    # Measured from the end of the last epoch before the fault (the warm-up epoch's progress
    # line), so slow start-up on a loaded machine does not count.
    since_fault = time.time() - progress.stat().st_mtime
    assert since_fault < 60, f"ended {since_fault:.0f} s after the fault: {err.value}"


def test_fold_is_refused_before_launch_when_songs_are_too_short_or_ranks_too_many(shard_dir):
    from dataclasses import replace

    shards = ShardSet(shard_dir)
    shortest = min(s["duration_s"] for s in shards.songs)
    too_long = replace(CFG, segment_seconds=int(shortest) + 1)
    fold_ids = fold_song_ids(shards, too_long, 0)
    with pytest.raises(ValueError, match="shorter than segment_seconds"):
        check_fold(too_long, shards, fold_ids, workers=2)
    with pytest.raises(ValueError, match="shorter than segment_seconds"):  # before any worker
        run_fold(too_long, shards, 0, storage_path="/nonexistent", name="x", workers=2)
    n_train = len(check_fold(CFG, shards, fold_song_ids(shards, CFG, 0), workers=2))
    with pytest.raises(ValueError, match="every worker needs at least one"):
        check_fold(CFG, shards, fold_song_ids(shards, CFG, 0), workers=n_train + 1)


def _run_script(code: str, timeout: int = 300, env_extra: dict | None = None):
    env = dict(os.environ, PYTHONPATH=str(REPO), **(env_extra or {}))  # token auth, as users run
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_ranks_wait_for_a_checkpoint_in_ray_trains_barrier_not_in_a_collective(
    shard_dir, tmp_path, ray_session, monkeypatch
):
    """Rank 0 writes and uploads each checkpoint (a VGG16 one is 2-2.7 GB) while the other
    ranks go on: the next thing every rank does after a checkpoint, the last epoch's too, is
    Ray Train's barrier, which has no timeout, never a torch collective, which fails after
    gloo_timeout_s. The loop is the same in local mode, where the order is recorded here."""
    from dataclasses import replace

    import ray.train.collective

    from sssl_dist.rank import train

    events: list[str] = []

    def record(name, real):
        def call(*args, **kwargs):
            events.append(name)
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(train, "save_checkpoint", record("checkpoint", train.save_checkpoint))
    barrier = ray.train.collective.broadcast_from_rank_zero
    monkeypatch.setattr(ray.train.collective, "broadcast_from_rank_zero", record("ray", barrier))
    for collective in ("all_gather_object", "broadcast_status", "broadcast_clean_w",
                       "gather_losses", "rank0_decides"):  # fmt: skip
        monkeypatch.setattr(train, collective, record("torch", getattr(train, collective)))
    cfg = replace(CFG, epochs=2)
    run_fold(cfg, ShardSet(shard_dir), 0, storage_path=tmp_path, name="order", workers=0)
    after = [events[i + 1] for i, e in enumerate(events[:-1]) if e == "checkpoint"]
    assert events.count("checkpoint") == cfg.epochs + 1 and events[-1] == "checkpoint"
    assert after == ["ray"] * cfg.epochs and "torch" in events


def test_two_node_cluster_trains(shard_dir, tmp_path):
    """Nothing may assume one node: two Ray nodes, one worker on each. The fold trains the
    ceiling arm (`split_evidence: oracle`), so the split that comes back through the driver's
    split service is known: the service holds the table's truth, and the ranks train on
    exactly the right-labelled segments as X (U is exactly the wrong labels)."""
    code = f"""
import ray
from ray.cluster_utils import Cluster
from sssl_dist.config import SSSLConfig
from sssl_dist.data.segments import ShardSet
from sssl_dist.driver.run import run_fold
# No dashboard: nothing here reads it, and it is seconds of the head's start-up.
cluster = Cluster(
    initialize_head=True, head_node_args={{"num_cpus": 1, "include_dashboard": False}}
)
cluster.add_node(num_cpus=1)
ray.init(address=cluster.address, log_to_driver=False)
assert len([n for n in ray.nodes() if n["Alive"]]) == 2
cfg = SSSLConfig(epochs=2, warmup_epochs=1, batch_size=32, n_folds=2, gloo_timeout_s=60,
                 split_evidence="oracle")
run = run_fold(cfg, ShardSet({str(shard_dir)!r}), 0, storage_path={str(tmp_path)!r}, name="2node",
               workers=2)
h = run.history[-1]
assert run.splits == [{{"epoch": 1, "n_clean": h["n_clean"]}}], run.splits
assert h["noise_auc"] == h["noise_recall"] == h["noise_precision"] == 1.0, h
g = h["gathered"]
print("RESULT", run.result["test_songs"], g["per_rank"] == g["expected"])
ray.shutdown(); cluster.shutdown()
"""
    proc = _run_script(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RESULT" in proc.stdout and proc.stdout.strip().endswith("True")


def test_ray_start_and_job_submit(shard_dir, tmp_path):
    """A real head node: `ray start --head`, `ray job submit` the smoke training, read it.

    The head runs with --block in its own process group, and is stopped by signalling that
    group: `ray stop` would kill every Ray process on the machine, this session's too.
    """
    ray_cli = str(Path(sys.executable).parent / "ray")
    env = dict(os.environ)  # token auth on (the session token from conftest), as users run
    # On SIGTERM the head first asks its GCS to drain the node, for up to 30 s; the GCS got the
    # same signal (the whole group is signalled), so that request can only time out. Nothing
    # here is served by the node, so there is nothing to drain: shut down at once.
    head_env = dict(env, RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
    out = tmp_path / "job-out"
    ray_tmp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # Ray's socket paths must stay < 108 B
    log = open(tmp_path / "head.log", "w")  # noqa: SIM115 - closed in finally
    head = subprocess.Popen(
        [
            ray_cli,
            "start",
            "--head",
            "--block",
            "--num-cpus=2",
            "--port=6391",
            "--dashboard-port=8271",
            "--include-dashboard=true",
            "--disable-usage-stats",
            # Ports of its own: this session's in-process Ray already holds the agent defaults.
            "--dashboard-agent-listen-port=52391",
            "--dashboard-agent-grpc-port=52392",
            "--runtime-env-agent-port=52393",
            "--metrics-export-port=52394",
            f"--temp-dir={ray_tmp}",
        ],
        env=head_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        submit = [
            ray_cli,
            "job",
            "submit",
            "--address",
            "http://127.0.0.1:8271",
            "--working-dir",
            str(REPO),
            "--runtime-env",
            str(REPO / "cluster/runtime_env.yaml"),
            "--",
            sys.executable,
            "-m",
            "sssl_dist",
            "train",
            "--shards",
            str(shard_dir),
            "--smoke",
            "--out",
            str(out),
        ]
        deadline = time.time() + 90
        while True:  # the dashboard's job API comes up a few seconds after the head
            status = subprocess.run(
                [ray_cli, "job", "list", "--address", "http://127.0.0.1:8271"],
                env=env,
                capture_output=True,
                text=True,
            )
            if status.returncode == 0:
                break
            assert head.poll() is None and time.time() < deadline, (
                f"head node did not come up: {(tmp_path / 'head.log').read_text()[-2000:]}"
            )
            time.sleep(2)
        for _ in range(20):  # the job agent starts a little after the dashboard
            job = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=400)
            if "No available agent" not in job.stderr:
                break
            time.sleep(3)
        assert job.returncode == 0, (job.stdout[-3000:], job.stderr[-3000:])
        assert "succeeded" in job.stdout + job.stderr
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["folds"] == [0] and 0 <= metrics["metrics"]["test_acc"]["mean"] <= 1
        assert (out / "model.sssl").is_file()
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_bad_shard_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `sssl shard` first"):
        ShardSet(tmp_path)


def test_segment_table_positions_are_stable(shard_dir):
    songs = ShardSet(shard_dir).songs
    a = SegmentTable.build(songs, "arousal", 2).global_ids()
    b = SegmentTable.build(list(reversed(songs)), "arousal", 2).global_ids()
    assert (
        a == b
        and len(a) == len(set(a))
        and np.all(np.diff([int(g.split("@")[1]) for g in a[:5]]) == 1)
    )


def test_run_identity_follows_config_and_shard_set(shard_dir, tmp_path):
    """Re-sharding other songs (or changing a setting) gives another run name, so an old run is
    never resumed for new data; the same data elsewhere keeps its name (content, not path)."""
    from dataclasses import replace

    from sssl_dist.driver.run import Run, run_digest

    def run_name(prefix, cfg, shards, fold):
        return Run.of(prefix, cfg, shards, fold, tmp_path).name

    shards = ShardSet(shard_dir)
    name = run_name("cv", CFG, shards, 0)
    # The names of runs stored before the run object existed: they resume.
    digest = run_digest(CFG, shards)
    assert name == f"cv-fold0-{digest}"
    refit = Run.of("cv", CFG, shards, None, tmp_path, role="refit")
    assert refit.name == f"cv-refit-{digest}" and refit.fold is None
    part = Run.of("cv", CFG, shards, 0, tmp_path).part("crossfit1of2", CFG, {})
    assert part.name == f"cv-fold0-{digest}-crossfit1of2" and part.run_dir.parent == tmp_path
    assert run_name("cv", CFG, shards, 1) != name
    assert run_name("cv", replace(CFG, tau=0.6), shards, 0) != name
    manifest = json.loads((Path(shard_dir) / "manifest.json").read_text())
    same, fewer = tmp_path / "same", tmp_path / "fewer"
    for d, songs in ((same, manifest["songs"]), (fewer, manifest["songs"][:-1])):
        d.mkdir()
        (d / "manifest.json").write_text(json.dumps(dict(manifest, songs=songs)))
        for shard in manifest["shards"]:  # a shard set is whole only with its tars
            (d / shard["file"]).symlink_to(Path(shard_dir) / shard["file"])
    assert run_name("cv", CFG, ShardSet(same), 0) == name
    assert run_name("cv", CFG, ShardSet(fewer), 0) != name


def test_parallel_folds_write_the_same_report_as_one_by_one(shard_dir, tmp_path, ray_session):
    """`sssl train --parallel 2 --workers 0 --final`: two local-mode folds side by side as Ray
    tasks, through run_fold like every other path; the report has what a sequential one has,
    and a fold's result equals the same fold trained on its own (same seed, same code): the
    task's fresh process and this test's process, which has trained units before, give the
    same result, so a reused process carries nothing over. Then the final refit learns from
    every song and is the exported model."""
    from dataclasses import replace

    from sssl_dist.driver.cv import run_cv

    cfg = replace(CFG, epochs=2)
    shards = ShardSet(shard_dir)
    out = tmp_path / "par"
    summary = run_cv(cfg, shards, out, folds=[0, 1], workers=0, parallel=2, final=True)
    assert summary["folds"] == [0, 1]
    # The refit: every song, no test songs, exported, and the report says so.
    refit_ids = json.loads((out / "refit" / "fold_ids.json").read_text())
    assert refit_ids["test"] == [] and refit_ids["val"]
    assert sorted(refit_ids["train"] + refit_ids["val"]) == [s["song_id"] for s in shards.songs]
    assert (out / "model.sssl").read_bytes() == (out / "refit" / "model.sssl").read_bytes()
    assert summary["exported_model"]["fold"] == "refit"
    assert "Exported model.sssl: fold refit" in (out / "summary.md").read_text()
    for fold in (0, 1):
        for name in ("result.json", "history.json", "songs.json", "fold_ids.json", "model.sssl"):
            assert (tmp_path / "par" / f"fold-{fold}" / name).is_file(), (fold, name)
    alone = run_fold(cfg, shards, 0, storage_path=tmp_path / "seq", name="alone", workers=0)
    par0 = json.loads((tmp_path / "par" / "fold-0" / "result.json").read_text())
    for key in ("test_acc", "val_acc", "val_seg_acc", "noise_auc", "test_pred"):
        assert par0[key] == alone.result[key], key


def test_a_truncated_checkpoint_is_never_resumed_from(tmp_path):
    """A worker killed while its checkpoint was being written leaves a truncated state.pt: the
    restart must pass over it (it is checked memory-mapped, without loading the tensors)."""
    from sssl_dist.files.checkpoint import newest_persisted
    from sssl_dist.files.runfiles import STATE as STATE_FILE

    for epoch in (1, 2):
        d = tmp_path / f"epoch-{epoch:04d}"
        d.mkdir()
        torch.save({"epoch": epoch, "model": {"w": torch.zeros(256, 256)}}, d / STATE_FILE)
        (d / "history.json").write_text("[]")
        (d / "config.yaml").write_text("seed: 0\n")
    assert newest_persisted(tmp_path, None) == tmp_path / "epoch-0002"
    newest = tmp_path / "epoch-0002" / STATE_FILE
    newest.write_bytes(newest.read_bytes()[:-64])
    assert newest_persisted(tmp_path, None) == tmp_path / "epoch-0001"


def test_cross_fit_svm_learns_from_out_of_sample_songs(shard_dir, tmp_path, ray_session):
    """svm_features: cross_fit. Each training song's features come from a run that did not train
    on it; the SVM and the exported model learn from those; the paper's in-sample figures stay
    beside them, from the same fold."""
    from dataclasses import replace

    from sssl_dist.method.song import song_features

    cfg = replace(CFG, epochs=2, svm_features="cross_fit", gmm_site="rank0", val_fraction=0.0)
    shards = ShardSet(shard_dir)
    run = run_fold(cfg, shards, 0, storage_path=tmp_path, name="cf", workers=0)
    inner = sorted(p.name for p in tmp_path.iterdir() if "crossfit" in p.name)
    assert inner == ["cf-crossfit1of2", "cf-crossfit2of2"]
    for name in inner:  # trained as long as the fold's network when it was evaluated
        lines = (tmp_path / name / PROGRESS_FILE).read_text().splitlines()
        assert len(lines) == run.result["evaluated_epoch"] + 1
    oos = run.svm_songs
    assert sorted(oos) == sorted(run.fold_ids["train"])
    # Out of sample: another network's probabilities, not the fold network's own.
    assert all(oos[s] != run.songs[s] for s in oos)
    for key in ("test_acc", "test_brier", "test_feature_shift"):
        assert key in run.result and f"in_sample_{key}" in run.result, key
    # The checkpoint keeps what training wrote; the cross-fitted figures live in the FoldRun.
    written = json.loads(Path(run.checkpoint.path, "result.json").read_text())
    assert (
        "in_sample_test_acc" not in written
        and written["test_acc"] == run.result["in_sample_test_acc"]
    )
    artifact = run.export(shards, tmp_path / "model.sssl")
    saved = torch.load(artifact, weights_only=True)["svm_features"].numpy()
    first = sorted(s for s in run.fold_ids["train"] if oos[s])[0]
    assert np.allclose(saved[0], song_features(np.asarray(oos[first]), cfg.theta))


def test_local_mode_with_gpu_asks_ray_for_one_instead_of_training_in_the_driver(
    shard_dir, tmp_path, monkeypatch
):
    """`--workers 0 --gpu --parallel 1` (and its --final refit): in the driver the fold would
    train on whatever the driver has, the CPU on a GPU-less head node. Each run goes to a Ray
    task that reserves a GPU, as folds side by side do."""
    from sssl_dist.driver import cv
    from sssl_dist.driver.parallel import fold_resources

    assert fold_resources(0, True) == {"num_cpus": 1, "num_gpus": 1}
    assert fold_resources(0, False) == {"num_cpus": 1, "num_gpus": 0}
    assert fold_resources(2, True) == {"num_cpus": 0, "num_gpus": 0}  # its workers reserve

    class Asked(Exception):
        pass

    asked = []

    def ask(units, shards, *, parallel, workers, use_gpu, on_epoch):
        asked.append(([u.fold for u in units.values()], parallel, workers, use_gpu))
        raise Asked

    monkeypatch.setattr(cv, "run_units_parallel", ask)
    monkeypatch.setattr(
        "sssl_dist.driver.run.Run.fit", lambda *a, **k: pytest.fail("trained in the driver")
    )
    shards = ShardSet(shard_dir)
    with pytest.raises(Asked):
        cv.run_cv(CFG, shards, tmp_path / "cv", folds=[1], workers=0, use_gpu=True, parallel=1)
    with pytest.raises(Asked):
        cv._refit(CFG, shards, tmp_path / "cv", "cv", workers=0, use_gpu=True)
    assert asked == [([1], 1, 0, True), ([None], 1, 0, True)]
