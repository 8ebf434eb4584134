"""Nothing lost, nothing silently wrong, in training: re-runs that change nothing, signals
that stop a run with its checkpoints kept, a resumed local-mode run that equals an
uninterrupted one, and temporary checkpoints that do not pile up."""

from __future__ import annotations

import _thread
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest.mock
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from sssl_dist.cli import main
from sssl_dist.files.checkpoint import TEMP_PREFIX, remove_stray_temp_dirs

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


def _signal_in_second_epoch(shard_dir: Path, out: Path, sig: int) -> dict:
    """`sssl train` in its own process, sent `sig` in its second epoch: the progress lines
    there were at the signal, the processes it had started, its exit code and its stderr."""
    cmd = [sys.executable, "-m", "sssl_dist", "train", "--shards", str(shard_dir),
           "--out", str(out), *TRAIN]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_epoch(out, proc)
        time.sleep(1.0)  # into the next epoch (each takes seconds here)
        children = psutil.Process(proc.pid).children(recursive=True)
        (progress,) = out.glob("ray/*-fold0-*/progress.jsonl")
        at_signal = len(progress.read_text().splitlines())
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    return {"at_signal": at_signal, "children": children, "code": proc.returncode, "err": err}


def test_a_signal_stops_training_and_the_rerun_resumes_to_the_same_result(
    uninterrupted, shard_dir, tmp_path
):
    """SIGTERM and SIGINT, each to its own `sssl train`. The two processes run side by side:
    most of each one's time is start-up (imports, its own Ray), and each is watched and
    signalled on its own thread, so neither can finish its epochs while the other is handled."""
    signals = {"sigterm": (signal.SIGTERM, 143), "sigint": (signal.SIGINT, 130)}
    with ThreadPoolExecutor(len(signals)) as pool:
        futures = {
            name: pool.submit(_signal_in_second_epoch, shard_dir, tmp_path / name, sig)
            for name, (sig, _) in signals.items()
        }
        stopped = {name: future.result() for name, future in futures.items()}
    for name, (_, code) in signals.items():
        out, got = tmp_path / name, stopped[name]
        err = got["err"]
        assert got["code"] == code, (name, err[-3000:])
        assert "run the same command again" in err, name
        assert "stopping after the epoch in flight" in err, name
        # Nothing it started is left running (Ray's processes and the training thread's).
        gone, alive = psutil.wait_procs(got["children"], timeout=60)
        assert not alive, (name, [p.info for p in alive])
        # It stopped at an epoch boundary: the epoch in flight at the signal finished (unless
        # the signal came between an epoch's progress line and its stop check), and its
        # checkpoint is the newest on disk. The same command continues from it.
        (run_dir,) = out.glob("ray/*-fold0-*")
        first = [json.loads(line)["epoch"] for line in (run_dir / "progress.jsonl").open()]
        assert got["at_signal"] <= len(first) <= got["at_signal"] + 1 < 4, (name, first)
        assert sorted(run_dir.glob("epoch-*"))[-1].name == f"epoch-{first[-1]:04d}", name
        assert not (out / "fold-0").exists(), name
        assert main(["train", "--shards", str(shard_dir), "--out", str(out), *TRAIN]) == 0
        epochs = [json.loads(line)["epoch"] for line in (run_dir / "progress.jsonl").open()]
        assert epochs[: len(first)] == first and epochs == sorted(set(epochs)) == [0, 1, 2, 3]
        assert _results(out) == _results(uninterrupted), name


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


def _interrupt_after_first_epoch(progress_files: list[Path], act) -> threading.Thread:
    """A watcher that calls `act` once every run has finished an epoch (and a second more)."""

    def watch() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if all(p.is_file() and p.read_text().strip() for p in progress_files):
                time.sleep(1.0)
                act()
                return
            time.sleep(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _stopped_at_a_boundary(run_dir: Path) -> list[int]:
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "progress.jsonl").open()]
    assert sorted(run_dir.glob("epoch-*"))[-1].name == f"epoch-{epochs[-1]:04d}"
    assert not (run_dir / "final").exists() and len(epochs) < 4
    return epochs


def test_folds_side_by_side_stop_after_their_epoch_and_resume(shard_dir, tmp_path, ray_session):
    """Ctrl-C while folds run side by side (a KeyboardInterrupt in the driver's wait): each
    running fold finishes its epoch with a checkpoint, nothing new starts, the interrupt is
    raised; the same units then resume and finish."""
    from dataclasses import replace

    from sssl_dist.config import SSSLConfig
    from sssl_dist.data.segments import ShardSet
    from sssl_dist.driver.parallel import run_units_parallel
    from sssl_dist.driver.run import Run

    cfg = replace(SSSLConfig(), epochs=4, warmup_epochs=1, n_folds=2, batch_size=32)
    units = {f: Run(cfg, f, tmp_path, f"p{f}") for f in (0, 1)}
    shards = ShardSet(shard_dir)
    progress = [u.run_dir / "progress.jsonl" for u in units.values()]
    # Python's own Ctrl-C handler, as in a fresh `sssl` process: a Ray Tune run earlier in this
    # test process leaves its own SIGINT handler behind, which only logs.
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        watcher = _interrupt_after_first_epoch(progress, _thread.interrupt_main)
        with pytest.raises(KeyboardInterrupt):
            list(run_units_parallel(units, shards, parallel=2, workers=0))
        watcher.join()
    finally:
        signal.signal(signal.SIGINT, handler)
    stopped = {f: _stopped_at_a_boundary(u.run_dir) for f, u in units.items()}
    assert all((u.run_dir / "stop-requested").is_file() for u in units.values())
    runs = dict(run_units_parallel(units, shards, parallel=2, workers=0))
    for f, u in units.items():
        epochs = [json.loads(line)["epoch"] for line in (u.run_dir / "progress.jsonl").open()]
        assert epochs[: len(stopped[f])] == stopped[f] and epochs == [0, 1, 2, 3]
        assert runs[f].result["test_songs"] == len(runs[f].fold_ids["test"])
        assert not (u.run_dir / "stop-requested").exists()


def test_ddp_ranks_stop_together_after_the_epoch_in_flight(shard_dir, tmp_path, ray_session):
    """With 2 Ray Train workers, rank 0 reads the stop request and tells rank 1, so both leave
    after the same epoch (a rank that stopped alone would hang the other in a collective)."""
    from dataclasses import replace

    from sssl_dist.config import SSSLConfig
    from sssl_dist.data.segments import ShardSet
    from sssl_dist.driver.fit import RunStopped
    from sssl_dist.driver.run import run_fold

    cfg = replace(SSSLConfig(), epochs=4, warmup_epochs=1, n_folds=2, batch_size=32)
    run_dir = tmp_path / "ddp"
    request = lambda: (run_dir / "stop-requested").touch()  # noqa: E731 - what the driver does
    watcher = _interrupt_after_first_epoch([run_dir / "progress.jsonl"], request)
    with pytest.raises(RunStopped, match="stopped after an epoch"):
        run_fold(cfg, ShardSet(shard_dir), 0, storage_path=tmp_path, name="ddp", workers=2)
    watcher.join()
    _stopped_at_a_boundary(run_dir)


def test_an_interrupted_shard_run_says_what_sharding_keeps():
    from sssl_dist.cli import stop_message

    shard = stop_message("shard", terminated=True)
    assert shard.startswith("terminated (SIGTERM): stopped. Finished shards are kept")
    assert "run the same command again to write the rest" in shard
    assert "fold" not in shard and "epoch" not in shard
    train = stop_message("compare", terminated=False)
    assert train.startswith("interrupted (Ctrl-C): stopped. Finished folds and each run's last")
    assert "shard" not in stop_message("predict", terminated=True)


# --------------------------------------------------------------- nothing lost, round two
def test_train_into_a_report_of_another_configuration_is_refused(uninterrupted, shard_dir, caplog):
    """Before: config.yaml, metrics.json and model.sssl of the earlier run were replaced."""
    kept = {p: p.read_bytes() for p in uninterrupted.glob("*") if p.is_file()}
    other = ["--set", *TRAIN[TRAIN.index("--set") + 1 :], "tau=0.7"]
    cmd = ["train", "--shards", str(shard_dir), "--out", str(uninterrupted)]
    assert main([*cmd, *TRAIN[: TRAIN.index("--set")], *other]) == 2
    assert "holds a report of another configuration (tau: 0.5 -> 0.7)" in caplog.text
    assert "Use a new --out, or delete that directory" in caplog.text
    assert {p: p.read_bytes() for p in uninterrupted.glob("*") if p.is_file()} == kept


def test_train_into_a_report_of_another_shard_set_is_refused(shard_dir, tmp_path, caplog):
    from sssl_dist.config import SSSLConfig, save_config
    from sssl_dist.data.segments import ShardSet

    out = tmp_path / "run"
    cfg = SSSLConfig(epochs=4, warmup_epochs=1, n_folds=2, batch_size=32)
    save_config(cfg, out / "config.yaml")  # the same configuration, on other shards
    (out / "shards.json").write_text(json.dumps({"shards": "/data/old", "digest": "0" * 16}))
    assert ShardSet(shard_dir).digest() != "0" * 16
    assert main(["train", "--shards", str(shard_dir), "--out", str(out), *TRAIN]) == 2
    assert "holds a report trained on another shard set (/data/old)" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "shards.json"]


def _copy_shards(shard_dir: Path, dest: Path, edit) -> Path:
    """A copy of the shard set (no mel cache) whose manifest `edit` changes in place."""
    shutil.copytree(shard_dir, dest, ignore=shutil.ignore_patterns("mel_cache"))
    manifest = json.loads((dest / "manifest.json").read_text())
    edit(manifest)
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def test_labels_edited_in_the_manifest_are_refused_naming_the_song(shard_dir, tmp_path, caplog):
    """Before: every song edited to Q1 trained and reported 'test acc 1.000'."""
    from sssl_dist.data.segments import ShardSet

    song = ShardSet(shard_dir).songs[3]
    assert song["quadrant"] != 0  # the premise: the edit changes a label

    def all_q1(manifest):
        for s in manifest["songs"]:
            s.update(quadrant=0, valence=1, arousal=1)

    edited = _copy_shards(shard_dir, tmp_path / "edited", all_q1)
    out = tmp_path / "run"
    assert main(["train", "--shards", str(edited), "--out", str(out), *TRAIN]) == 2
    assert "manifest.json disagrees with shard-" in caplog.text
    assert "re-run `sssl shard`" in caplog.text and not out.exists()
    with pytest.raises(ValueError, match=r"on song '.+': quadrant is 0 in the manifest, \d in"):
        ShardSet(edited).check_labels()
    # Building the mel cache reads the same records, and makes the same check.
    with pytest.raises(ValueError, match="disagrees with shard-"):
        ShardSet(edited).load_mels()
    # Untouched shards pass; once their mel cache exists, the check reads no tar at all.
    intact = _copy_shards(shard_dir, tmp_path / "intact", lambda m: None)
    ShardSet(intact).check_labels()
    ShardSet(intact).mel_cache()
    with unittest.mock.patch("tarfile.open", side_effect=AssertionError("a tar was read")):
        ShardSet(intact).check_labels()


def test_a_task_with_one_class_or_too_few_songs_for_the_folds_is_refused(
    shard_dir, tmp_path, caplog
):
    """Before: only Q1 and Q4 songs, --tasks valence, and `sssl compare` reported '+0.0'."""

    def only_q1_q4(manifest):
        manifest["songs"] = [s for s in manifest["songs"] if s["quadrant"] in (0, 3)]

    positive = _copy_shards(shard_dir, tmp_path / "positive", only_q1_q4)
    out = tmp_path / "out"
    for command in (
        ["compare", "--tasks", "valence", "--arm", "a", "tau=0.5", "--arm", "b", "tau=0.7"],
        ["train", "--set", "task=valence"],
        [
            "tune",
            "--space",
            str(REPO / "tuning/spaces/smoke.yaml"),
            "--workers",
            "1",
            "--set",
            "task=valence",
        ],  # fmt: skip
    ):
        caplog.clear()
        assert main([*command, "--shards", str(positive), "--out", str(out)]) == 2, command
        assert "(negative 0, positive " in caplog.text and "one class only" in caplog.text
    # Quadrant: 4 Q1 songs, fewer than 5 folds.
    assert main(["train", "--shards", str(shard_dir), "--out", str(out), "--set", "n_folds=5"]) == 2
    assert "5 folds need at least 5 songs of each class; use at most 4 folds" in caplog.text
    assert "(Q1 4, Q2 4, Q3 9, Q4 7)" in caplog.text
    assert not out.exists()
