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
from sssl_dist.data import SegmentTable, ShardSet, rank_block
from sssl_dist.train import PROGRESS_FILE, fold_song_ids, load_state, run_fold

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
    store = tmp_path_factory.mktemp("ray_store")
    cfg, fold = _odd_fold(shard_dir)
    run = run_fold(cfg, shard_dir, fold, storage_path=store, name="w2", workers=2)
    return run, store, cfg, fold


def _epochs(history):
    return [h for h in history if "n_clean" in h]


def test_two_workers_gather_every_segment_once(two_worker_run, shard_dir):
    run, _, _, _ = two_worker_run
    n_train = len(
        SegmentTable.build(
            [s for s in ShardSet(shard_dir).songs if s["song_id"] in run.split_ids["train"]],
            CFG.task,
            CFG.segment_seconds,
        )
    )
    sssl_epochs = _epochs(run.history)
    assert len(sssl_epochs) == CFG.epochs - CFG.warmup_epochs
    for h in sssl_epochs:
        assert h["gathered_exactly_once"] and h["n_train"] == n_train
        assert h["n_clean"] + h["n_noisy"] == n_train
        assert 0.0 <= h["noise_auc"] <= 1.0  # ground truth known: noise detection measured
        assert h["time_loss_pass"] > 0 and h["time_gather_gmm"] > 0
    # Song-level result with its baselines.
    for key in ("test_acc", "test_f1", "test_majority_acc", "test_vote_acc", "val_acc"):
        assert 0.0 <= run.result[key] <= 1.0


def test_uneven_blocks_do_not_hang(two_worker_run):
    """The fold's training set has an odd number of segments: blocks differ by one, yet every
    epoch finished (a 60 s gloo timeout would have failed the run otherwise)."""
    run, _, _, _ = two_worker_run
    n = run.history[0]["n_train"]
    (lo0, hi0), (lo1, hi1) = rank_block(n, 0, 2), rank_block(n, 1, 2)
    assert n % 2 == 1 and hi0 - lo0 != hi1 - lo1, "premise: uneven blocks"
    assert len(run.history) == CFG.epochs


def test_one_worker_matches_two_workers(two_worker_run, shard_dir, tmp_path, ray_session):
    run2, _, cfg, fold = two_worker_run
    run1 = run_fold(cfg, shard_dir, fold, storage_path=tmp_path, name="w1", workers=1)
    h1, h2 = _epochs(run1.history), _epochs(run2.history)
    assert [h["n_train"] for h in h1] == [h["n_train"] for h in h2]
    assert all(h["gathered_exactly_once"] for h in h1)
    # Same data, same seed, different batch composition: the split sizes agree closely.
    for a, b in zip(h1, h2, strict=True):
        assert abs(a["clean_fraction"] - b["clean_fraction"]) < 0.15, (a, b)


def test_local_mode_runs_the_same_loop(shard_dir, tmp_path, ray_session):
    run = run_fold(CFG, shard_dir, 1, storage_path=tmp_path, name="local", workers=0)
    assert len(run.history) == CFG.epochs and _epochs(run.history)[0]["gathered_exactly_once"]
    assert "test_acc" in run.result


def test_folds_split_by_song_without_leak(shard_dir):
    shards = ShardSet(shard_dir)
    seen_test = []
    for fold in range(CFG.n_folds):
        ids = fold_song_ids(shards, CFG, fold)
        train, val, test = map(set, (ids["train"], ids["val"], ids["test"]))
        assert not (train & test) and not (val & test) and not (train & val)
        table = SegmentTable.build(
            [s for s in shards.songs if s["song_id"] in train], "quadrant", 3
        )
        assert set(table.song_ids) <= train  # no test song contributes a training segment
        seen_test += ids["test"]
    assert sorted(seen_test) == sorted(s["song_id"] for s in shards.songs)


def test_checkpoint_loads_weights_only_and_has_everything(two_worker_run):
    run, _, _, _ = two_worker_run
    state = load_state(run.checkpoint_dir)
    assert set(state) >= {"model", "optimizer", "epoch", "torch_rng", "clean"}
    assert state["epoch"] == CFG.epochs - 1 and state["clean"].dtype == torch.bool
    assert (Path(run.checkpoint_dir) / "config.yaml").is_file()
    with pytest.raises(Exception, match="Weights only load failed|weights_only"):
        torch.save({"bad": object()}, Path(run.checkpoint_dir) / "evil.pt")
        torch.load(Path(run.checkpoint_dir) / "evil.pt", weights_only=True)


def test_rerun_same_name_resumes_instead_of_restarting(two_worker_run, shard_dir, ray_session):
    run, store, cfg, fold = two_worker_run
    progress = Path(run.run_dir) / PROGRESS_FILE
    before = progress.read_text().splitlines()
    again = run_fold(cfg, shard_dir, fold, storage_path=store, name="w2", workers=2)
    assert progress.read_text().splitlines() == before  # no epoch was trained again
    assert again.result["test_acc"] == run.result["test_acc"]


def test_killed_worker_recovers_from_checkpoint(shard_dir, tmp_path, ray_session):
    from dataclasses import replace

    import psutil

    cfg = replace(CFG, epochs=5, max_failures=2)
    progress = tmp_path / "kill" / PROGRESS_FILE
    killed = []

    def train_workers():
        # Ray names worker processes after the actor ("ray::RayTrainWorker..."); the state API
        # would need the dashboard, which the shared test instance does not start.
        return [
            p
            for p in psutil.process_iter(["cmdline"])
            if p.info["cmdline"] and p.info["cmdline"][0].startswith("ray::RayTrainWorker")
        ]

    def killer():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            if progress.is_file() and len(progress.read_text().splitlines()) >= 2:
                workers = train_workers()
                if workers:
                    workers[-1].send_signal(signal.SIGKILL)
                    killed.append(len(progress.read_text().splitlines()))
                    return
            time.sleep(0.2)

    thread = threading.Thread(target=killer)
    thread.start()
    run = run_fold(cfg, shard_dir, 0, storage_path=tmp_path, name="kill", workers=2)
    thread.join()
    assert killed, "the worker was never killed"
    epochs = [json.loads(line)["epoch"] for line in progress.read_text().splitlines()]
    assert epochs[0] == 0 and epochs[-1] == cfg.epochs - 1
    restart = next(i for i in range(1, len(epochs)) if epochs[i] <= epochs[i - 1])
    assert epochs[restart] >= 1, f"restarted from scratch: {epochs}"  # resumed from a checkpoint
    assert "test_acc" in run.result


def _run_script(code: str, timeout: int = 300, env_extra: dict | None = None):
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONPATH=str(REPO), **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_two_node_cluster_trains(shard_dir, tmp_path):
    """Nothing may assume one node: two Ray nodes, one worker on each."""
    code = f"""
import ray
from ray.cluster_utils import Cluster
from sssl_dist.config import SSSLConfig
from sssl_dist.train import run_fold
cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 1}})
cluster.add_node(num_cpus=1)
ray.init(address=cluster.address, log_to_driver=False)
assert len([n for n in ray.nodes() if n["Alive"]]) == 2
cfg = SSSLConfig(epochs=2, warmup_epochs=1, batch_size=32, n_folds=2, gloo_timeout_s=60)
run = run_fold(cfg, {str(shard_dir)!r}, 0, storage_path={str(tmp_path)!r}, name="2node", workers=2)
print("RESULT", run.result["test_acc"], run.history[-1]["gathered_exactly_once"])
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
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
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
        env=env,
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
