"""Nothing lost, nothing silently wrong, in training: re-runs that change nothing, signals
that stop a run with its checkpoints kept, a resumed local-mode run that equals an
uninterrupted one, and temporary checkpoints that do not pile up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from sssl_dist.checkpoint import TEMP_PREFIX, remove_stray_temp_dirs
from sssl_dist.cli import main

REPO = Path(__file__).resolve().parents[1]
# Four epochs, so a signal after the first one lands while training goes on.
TRAIN = ["--fold", "0", "--workers", "0", "--set", "epochs=4", "warmup_epochs=1",
         "n_folds=2", "batch_size=32"]  # fmt: skip


def _results(out: Path) -> dict:
    return json.loads((out / "fold-0" / "result.json").read_text())


def _temp_dirs() -> set[str]:
    """This process's temporary checkpoint directories (local-mode folds train in it; other
    processes on the machine may be writing their own)."""
    return {p.name for p in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}{os.getpid()}-*")}


def _wait_for_epoch(out: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.read_text().strip() for p in out.glob("ray/*/progress.jsonl")):
            return
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.5)
    raise AssertionError("no epoch finished in time")


@pytest.fixture(scope="module")
def uninterrupted(shard_dir, tmp_path_factory, ray_session):
    out = tmp_path_factory.mktemp("whole") / "run"
    before = _temp_dirs()
    assert main(["train", "--shards", str(shard_dir), "--out", str(out), *TRAIN]) == 0
    # Every epoch's checkpoint was written under the run, none left in the temp directory.
    assert _temp_dirs() <= before
    return out


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_training_and_the_rerun_resumes_to_the_same_result(
    uninterrupted, shard_dir, tmp_path, sig, code
):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "sssl_dist", "train", "--shards", str(shard_dir),
           "--out", str(out), *TRAIN]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_epoch(out, proc)
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err[-3000:]
    assert "run the same command again" in err
    # Nothing it started is left running (Ray's processes and the training thread's).
    gone, alive = psutil.wait_procs(children, timeout=60)
    assert not alive, [p.info for p in alive]
    # The last finished epoch is on disk, and the same command continues from it.
    (run_dir,) = out.glob("ray/*-fold0-*")
    assert sorted(run_dir.glob("epoch-*")), "no epoch checkpoint was kept"
    assert not (out / "fold-0").exists()
    first = [json.loads(line)["epoch"] for line in (run_dir / "progress.jsonl").open()]
    assert main(["train", "--shards", str(shard_dir), "--out", str(out), *TRAIN]) == 0
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "progress.jsonl").open()]
    assert epochs[: len(first)] == first and epochs == sorted(set(epochs)) == [0, 1, 2, 3]
    assert _results(out) == _results(uninterrupted)


def test_a_rerun_of_a_finished_local_mode_train_changes_nothing(uninterrupted, shard_dir):
    before = _results(uninterrupted)
    model = (uninterrupted / "model.sssl").read_bytes()
    (run_dir,) = uninterrupted.glob("ray/*-fold0-*")
    lines = (run_dir / "progress.jsonl").read_text()
    for _ in range(2):
        assert main(["train", "--shards", str(shard_dir), "--out", str(uninterrupted), *TRAIN]) == 0
        assert (run_dir / "progress.jsonl").read_text() == lines  # nothing trained again
        assert _results(uninterrupted) == before
        assert (run_dir / "final" / "result.json").is_file()
    assert (uninterrupted / "model.sssl").read_bytes() == model


def test_stray_temporary_checkpoints_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stray = Path(tempfile.gettempdir(), f"{TEMP_PREFIX}{dead.pid}-test")
    live = Path(tempfile.gettempdir(), f"{TEMP_PREFIX}{os.getpid()}-test")
    for d in (stray, live):
        d.mkdir(exist_ok=True)
        (d / "state.pt").write_bytes(b"x")
    try:
        assert remove_stray_temp_dirs() >= 1
        assert not stray.exists() and live.is_dir()  # a live writer's directory is kept
    finally:
        for d in (stray, live):
            if d.exists():
                (d / "state.pt").unlink()
                d.rmdir()


def test_the_token_an_in_process_ray_uses_is_private(tmp_path, monkeypatch):
    from sssl_dist.cli import private_auth_token

    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(var, raising=False)
    path = private_auth_token(home=tmp_path)
    assert path == tmp_path / ".ray" / "auth_token"
    assert path.stat().st_mode & 0o777 == 0o600 and len(path.read_text()) == 64
    token = path.read_text()
    path.chmod(0o644)  # as Ray 2.60 writes it
    assert private_auth_token(home=tmp_path) == path
    assert path.stat().st_mode & 0o777 == 0o600 and path.read_text() == token
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert private_auth_token(home=tmp_path / "other") is None
