"""Bad data and re-runs at the shard stage: every bad file or row is refused with a one-line
reason, re-sharding rebuilds what changed, and concurrent writers cannot corrupt each other.

New names are imported inside the tests, so each test stands or falls on its own."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import write_audio

from shards.datasets import load_dataset
from shards.write import shard_dataset
from sssl_dist.data.segments import ShardSet

REPO = Path(__file__).resolve().parents[1]


def _csv(path, header, rows, encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding=encoding) as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _manifest_set(tmp_path, rows, header=("path", "quadrant")):
    """A manifest CSV over 6 s tones named in `rows` (first column: file name)."""
    for row in rows:
        if not (tmp_path / row[0]).exists():
            write_audio(tmp_path / row[0], seconds=6, freq=300 + 40 * len(row[0]))
    return _csv(tmp_path / "songs.csv", header, rows)


# ---------------------------------------------------------------- mels checked when written
def test_absurd_amplitude_is_rejected_not_sharded_as_nan(tmp_path, ray_session):
    y = np.sin(np.arange(22050 * 6) / 10.0).astype(np.float32)
    sf.write(tmp_path / "huge.wav", y * 1e18, 22050, subtype="FLOAT")  # finite, absurd
    write_audio(tmp_path / "good.wav", seconds=6)
    csv_path = _csv(
        tmp_path / "songs.csv", ["path", "quadrant"], [["huge.wav", 1], ["good.wav", 2]]
    )
    records, _, _ = load_dataset("manifest", csv_path)
    manifest = shard_dataset(records, tmp_path / "out", progress=False)
    assert [s["song_id"] for s in manifest["songs"]] == ["good"]
    (reject,) = manifest["rejects"]
    assert reject["song_id"] == "huge" and reject["reason"].startswith("absurd amplitude")


def test_a_broken_log_mel_is_refused():
    from sssl_dist.data.audio import AudioError, check_mel

    check_mel(np.full((4, 5), -30.0, np.float32))  # an ordinary mel passes
    with pytest.raises(AudioError, match="NaN/inf"):
        check_mel(np.array([[1.0, np.nan]], np.float32))
    with pytest.raises(AudioError, match="out of range"):
        check_mel(np.array([[1.0, 1e6]], np.float32))


# ---------------------------------------------------------------- re-sharding rebuilds changes
def test_reshard_rebuilds_changed_labels_and_replaced_files(tmp_path, ray_session):
    for name in ("a", "b", "e", "f"):
        write_audio(tmp_path / f"{name}.wav", seconds=6)
    (tmp_path / "c.wav").write_bytes(b"")  # rejected at first
    write_audio(tmp_path / "d.wav", seconds=6)
    rows = [["a.wav", "Q1"], ["b.wav", "Q1"], ["c.wav", "Q2"], ["d.wav", "Q2"]]
    rows += [["e.wav", "Q3"], ["f.wav", "Q3"]]
    csv_path = _csv(tmp_path / "songs.csv", ["path", "quadrant"], rows)
    out = tmp_path / "out"
    first = shard_dataset(
        load_dataset("manifest", csv_path)[0], out, songs_per_shard=2, progress=False
    )
    assert [r["song_id"] for r in first["rejects"]] == ["c"]
    untouched = (out / "shard-000002.tar").stat().st_mtime_ns

    rows[1] = ["b.wav", "Q4"]  # an annotation fix
    _csv(csv_path, ["path", "quadrant"], rows)
    write_audio(tmp_path / "c.wav", seconds=6)  # the empty file replaced by a good one
    again = shard_dataset(
        load_dataset("manifest", csv_path)[0], out, songs_per_shard=2, progress=False
    )
    quadrant = {s["song_id"]: s["quadrant"] for s in again["songs"]}
    assert quadrant["b"] == 3 and "c" in quadrant and not again["rejects"]
    assert (out / "shard-000002.tar").stat().st_mtime_ns == untouched  # unchanged: skipped
    assert ShardSet(out).by_id["b"]["quadrant"] == 3


# ---------------------------------------------------------------- loaders
def test_quadrant_labels_are_parsed_strictly(tmp_path):
    root = tmp_path / "4q"
    for name in ("s1", "s2", "s3", "s4"):
        write_audio(root / f"MER_audio_taffc_dataset/Q1/{name}.wav")
    _csv(
        root / "panda_dataset_taffc_annotations.csv",
        ["Song", "Quadrant"],
        [["s1", "QQ1"], ["s2", "q2"], ["s3", "3"], ["s4", "Q5"]],
    )
    records, report, _ = load_dataset("4q", root)
    assert {r.song_id: r.quadrant for r in records} == {"s2": 1, "s3": 2}
    assert sorted(report.bad_rows) == [
        "s1 (quadrant 'QQ1' is not Q1-Q4 or 1-4)",
        "s4 (quadrant 'Q5' is not Q1-Q4 or 1-4)",
    ]


def test_a_1_to_9_scale_cut_at_half_is_refused_with_the_right_midpoint(tmp_path):
    csv_path = _manifest_set(
        tmp_path, [["a.wav", "7", "2"], ["b.wav", "3", "8"]], ("path", "valence", "arousal")
    )
    with pytest.raises(ValueError, match=r"span 2\.\.8 \(a 1\.\.9 scale\).*pass --midpoint 5"):
        load_dataset("manifest", csv_path)  # the default midpoint 0.5
    records, _, _ = load_dataset("manifest", csv_path, midpoint=5)
    assert {r.song_id: r.quadrant for r in records} == {"a": 3, "b": 1}  # Q4, Q2


def test_a_pmemo_file_on_another_scale_is_refused(tmp_path):
    write_audio(tmp_path / "chorus/1.wav")
    _csv(
        tmp_path / "annotations/static_annotations.csv",
        ["musicId", "Arousal(mean)", "Valence(mean)"],
        [["1", "6", "7"]],
    )
    with pytest.raises(ValueError, match="static_annotations.csv: valence/arousal values span"):
        load_dataset("pmemo", tmp_path)


def test_non_finite_values_are_bad_rows(tmp_path):
    csv_path = _manifest_set(
        tmp_path,
        [["a.wav", "inf", "0.2"], ["b.wav", "0.3", "nan"], ["c.wav", "0.9", "0.1"]],
        ("path", "valence", "arousal"),
    )
    records, report, _ = load_dataset("manifest", csv_path)
    assert [r.song_id for r in records] == ["c"]
    assert sorted(report.bad_rows) == [
        "a (valence 'inf' is not a finite number)",
        "b (arousal 'nan' is not a finite number)",
    ]


def test_one_stem_in_two_quadrant_folders_is_a_conflict(tmp_path):
    root = tmp_path / "4q"
    write_audio(root / "MER_audio_taffc_dataset/Q1/s1.wav")
    write_audio(root / "MER_audio_taffc_dataset/Q2/s1.wav")
    write_audio(root / "MER_audio_taffc_dataset/Q3/s2.wav")
    _csv(
        root / "panda_dataset_taffc_annotations.csv",
        ["Song", "Quadrant"],
        [["s1", "Q1"], ["s2", "Q3"]],
    )
    records, report, _ = load_dataset("4q", root)
    assert [r.song_id for r in records] == ["s2"]
    assert report.to_dict()["conflicts"] == [
        "s1: 2 audio files share the id (Q1/s1.wav, Q2/s1.wav)"
    ]
    assert not report.missing_audio and not report.unlabelled_audio  # reported once, as a clash


def test_a_repeated_id_with_another_label_is_a_conflict(tmp_path):
    root = tmp_path / "4q"
    write_audio(root / "MER_audio_taffc_dataset/Q1/s1.wav")
    write_audio(root / "MER_audio_taffc_dataset/Q1/s2.wav")
    _csv(
        root / "panda_dataset_taffc_annotations.csv",
        ["Song", "Quadrant"],
        [["s1", "Q1"], ["s1", "Q4"], ["s2", "Q1"], ["s2", "Q1"]],
    )
    records, report, _ = load_dataset("4q", root)
    assert [r.song_id for r in records] == ["s2"]  # an identical repeat is kept once
    assert report.duplicate_ids == ["s2"]
    assert report.conflicts == ["s1: 2 rows disagree (Q1 vs Q4)"]


def test_an_unquoted_comma_names_the_file_and_line(tmp_path):
    write_audio(tmp_path / "a.wav")
    path = tmp_path / "songs.csv"
    path.write_text("path,quadrant\na.wav,Q1\nb.wav,Q2,extra\n")
    with pytest.raises(ValueError, match=r"songs\.csv, line 3: 1 field\(s\) more than"):
        load_dataset("manifest", path)


def test_a_latin1_csv_names_the_file_and_line(tmp_path):
    write_audio(tmp_path / "a.wav")
    path = _csv(
        tmp_path / "songs.csv", ["path", "quadrant", "id"], [["a.wav", "Q1", "café"]], "latin-1"
    )
    with pytest.raises(ValueError, match=r"songs\.csv, line 2: not UTF-8 .*re-encode"):
        load_dataset("manifest", path)


# ---------------------------------------------------------------- tar keys
def test_shard_keys_are_collision_free_and_plain_ids_keep_theirs():
    from shards.write import shard_key

    assert shard_key("MT0000040632") == "MT0000040632" and shard_key("a_b-1") == "a_b-1"
    keys = {shard_key(s) for s in ("ü1", "é1", "_1", "a.1", "a 1")}
    assert len(keys) == 5 and all("." not in k for k in keys)


def test_ids_that_sanitise_alike_shard_and_load(tmp_path, ray_session):
    write_audio(tmp_path / "x.wav", freq=300)
    write_audio(tmp_path / "y.wav", freq=500)
    path = _csv(
        tmp_path / "songs.csv",
        ["path", "quadrant", "id"],
        [["x.wav", "Q1", "ü1"], ["y.wav", "Q2", "é1"]],
    )
    out = tmp_path / "out"
    shard_dataset(load_dataset("manifest", path)[0], out, progress=False)
    mels = ShardSet(out).load_mels()
    assert set(mels) == {"ü1", "é1"} and not np.array_equal(mels["ü1"], mels["é1"])
    assert not list(out.rglob("*.tmp"))


def test_two_ids_with_one_key_are_refused_before_writing(tmp_path):
    from shards.write import shard_key
    from sssl_dist.data.records import SongRecord

    a = SongRecord("a.1", str(tmp_path / "a.wav"), "manifest", quadrant=0)
    b = SongRecord(shard_key("a.1"), str(tmp_path / "b.wav"), "manifest", quadrant=0)
    with pytest.raises(ValueError, match="same shard key"):
        shard_dataset([a, b], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- concurrent writers
def test_concurrent_json_writes_never_collide(tmp_path):
    from shards.write import _write_json_atomic

    target = tmp_path / "manifest.json"
    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(lambda i: _write_json_atomic(target, {"i": i, "pad": "x" * 20000}), range(200))
        )
    assert json.loads(target.read_text())["i"] in range(200)
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temp left behind


def test_a_second_shard_run_into_one_directory_fails_at_once(tmp_path):
    from filelock import FileLock

    out = tmp_path / "out"
    out.mkdir()
    held = FileLock(str(out / ".shard.lock"))
    ready, done = threading.Event(), threading.Event()

    def hold():  # another run, in another thread: its own file descriptor
        with held:
            ready.set()
            done.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    ready.wait(10)
    try:
        with pytest.raises(RuntimeError, match=f"another `sssl shard` is writing to {out}"):
            shard_dataset([], out, progress=False)
    finally:
        done.set()
        holder.join()
    with pytest.raises(RuntimeError, match="no usable song"):  # free again: the run proceeds
        shard_dataset([], out, progress=False)


# ---------------------------------------------------------------- the mel cache
@pytest.fixture
def tiny_shards(tmp_path, ray_session):
    path = _manifest_set(tmp_path / "audio", [["a.wav", "Q1"], ["bb.wav", "Q2"], ["ccc.wav", "Q3"]])
    out = tmp_path / "shards"
    shard_dataset(load_dataset("manifest", path)[0], out, songs_per_shard=2, progress=False)
    return out


def _cache_file(root, name):
    (path,) = (root / "mel_cache").glob(f"*/{name}")
    return path


def test_a_truncated_mel_cache_is_rebuilt(tiny_shards):
    want = {k: np.array(v) for k, v in ShardSet(tiny_shards).load_mels().items()}
    store = _cache_file(tiny_shards, "mels.npy")
    with store.open("r+b") as fh:  # a kill mid-write
        fh.truncate(store.stat().st_size // 2)
    got = ShardSet(tiny_shards).load_mels()
    assert set(got) == set(want)
    for sid, mel in got.items():
        np.testing.assert_array_equal(mel, want[sid])


def test_a_mel_cache_index_that_does_not_match_is_rebuilt(tiny_shards):
    ShardSet(tiny_shards).load_mels()
    _cache_file(tiny_shards, "index.json").write_text('{"a": [0, 3]}')
    assert len(ShardSet(tiny_shards).load_mels()) == 3
    _cache_file(tiny_shards, "index.json").write_text("{not json")
    assert len(ShardSet(tiny_shards).load_mels()) == 3


def test_a_failed_mel_cache_build_leaves_no_temp_file(tiny_shards):
    tar = tiny_shards / "shard-000000.tar"
    tar.write_bytes(os.urandom(tar.stat().st_size))  # damaged, its size kept: the build fails
    with pytest.raises(
        RuntimeError, match=rf"shard {re.escape(str(tar))} cannot be read .*: delete it and run"
    ):
        ShardSet(tiny_shards).load_mels()
    leftovers = [p.name for p in (tiny_shards / "mel_cache").rglob("*") if p.is_file()]
    assert leftovers == [".lock"]


# ---------------------------------------------------------------- damaged or missing files
def _reshard(root):
    """`sssl shard` again on the tiny_shards fixture's songs (tmp_path/audio)."""
    records = load_dataset("manifest", root.parent / "audio" / "songs.csv")[0]
    return shard_dataset(records, root, songs_per_shard=2, progress=False)


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_a_truncated_or_deleted_shard_is_named_and_resharding_repairs_it(tiny_shards, damage):
    tar = tiny_shards / "shard-000001.tar"
    want = {k: np.array(v) for k, v in ShardSet(tiny_shards).load_mels().items()}
    for cache in (tiny_shards / "mel_cache").iterdir():  # no mel cache yet: the tars are read
        for p in cache.iterdir():
            p.unlink()
    if damage == "truncated":
        with tar.open("r+b") as fh:
            fh.truncate(tar.stat().st_size // 2)
        error, words = (
            ValueError,
            rf"shard {re.escape(str(tar))} is damaged .*: run `sssl shard` again",
        )
    else:
        tar.unlink()
        error, words = FileNotFoundError, "shard shard-000001.tar listed in .* is missing: run"
    with pytest.raises(error, match=words) as exc:
        ShardSet(tiny_shards)
    assert "\n" not in str(exc.value) and f"--out {tiny_shards}" in str(exc.value)
    _reshard(tiny_shards)  # what the message says to do
    got = ShardSet(tiny_shards).load_mels()
    assert set(got) == set(want)
    for sid, mel in got.items():
        np.testing.assert_array_equal(mel, want[sid])


def test_a_truncated_manifest_names_the_file_and_what_to_do(tiny_shards):
    path = tiny_shards / "manifest.json"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(
        ValueError, match=rf"{re.escape(str(path))} is damaged \(not valid JSON: .*run `sssl shard`"
    ):
        ShardSet(tiny_shards)
    path.write_text('{"songs": []}')
    with pytest.raises(ValueError, match="is not a shard manifest \\(no feature_config, shards\\)"):
        ShardSet(tiny_shards)
    _reshard(tiny_shards)
    assert len(ShardSet(tiny_shards).songs) == 3


# ---------------------------------------------------------------- a full disk, a killed writer
def test_a_full_disk_is_one_line_and_leaves_no_temp_file(tmp_path, ray_session, monkeypatch):
    import shards.write as write

    path = _manifest_set(tmp_path / "audio", [["a.wav", "Q1"], ["bb.wav", "Q2"], ["c.wav", "Q3"]])
    records = load_dataset("manifest", path)[0]
    out = tmp_path / "out"

    def full_after_one_song(planned, path, fc_dict):  # runs in a Ray worker, pickled by value
        import errno
        from pathlib import Path

        import webdataset as wds

        from shards.write import write_shard

        real = wds.TarWriter.write

        def write_or_fail(self, sample):
            # The temporary tar exists with a song in it when the disk fills up.
            if list(Path(path).parent.glob(f".{Path(path).name}.*.tmp")):
                real(self, sample)
                self.stream.flush()
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(self, sample)

        wds.TarWriter.write = write_or_fail
        try:
            return write_shard(planned, path, fc_dict)
        finally:
            wds.TarWriter.write = real

    monkeypatch.setattr(write, "write_shard", full_after_one_song)
    with pytest.raises(write.ShardWriteError) as exc:
        shard_dataset(records, out, songs_per_shard=2, progress=False)
    message = str(exc.value)
    assert "\n" not in message, message
    words = rf"no space left on device at {re.escape(str(out))} \(needs about \d+ MB more"
    assert re.match(words + r", \d+ MB free\): free some space", message), message
    assert not list(out.glob(".*.tmp")) and not list(out.glob("*.tar"))
    monkeypatch.undo()  # space again: the same call completes the set
    assert len(shard_dataset(records, out, songs_per_shard=2, progress=False)["songs"]) == 3
    assert not list(out.glob(".*.tmp"))


def test_the_space_estimate_is_close_to_what_shards_take(tiny_shards):
    from shards.write import estimated_bytes
    from sssl_dist.config import FeatureConfig

    for side in tiny_shards.glob("shard-*.tar.json"):
        sidecar = json.loads(side.read_text())
        estimate = estimated_bytes([sidecar["planned"]], FeatureConfig())
        assert 0.9 < estimate / sidecar["bytes"] < 1.2, (estimate, sidecar["bytes"])


def test_a_dead_writers_temp_files_are_removed_by_the_next_run(tiny_shards):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    uid = "0123456789abcdef0123456789abcdef"
    stale = [f".shard-000004.tar.{dead.pid}.tmp", f".shard-000000.tar.json.{dead.pid}.{uid}.tmp",
             f".manifest.json.{dead.pid}.{uid}.tmp"]  # fmt: skip
    kept = [f".shard-000001.tar.{os.getpid()}.tmp", ".notes.tmp"]  # a live writer's; not ours
    for name in stale + kept:
        (tiny_shards / name).write_bytes(b"x" * 3000)
    _reshard(tiny_shards)  # every shard complete: only the clean-up runs
    left = {p.name for p in tiny_shards.glob(".*.tmp")}
    assert left == set(kept)


def test_sigterm_while_sharding_says_what_it_keeps_and_the_rerun_cleans_up(tmp_path, ray_session):
    import psutil

    rows = []
    for i in range(4):  # songs long enough that a shard task is caught writing
        write_audio(tmp_path / f"s{i}.wav", seconds=120, freq=300 + 50 * i)
        rows.append([f"s{i}.wav", f"Q{i + 1}"])
    csv_path = _csv(tmp_path / "songs.csv", ["path", "quadrant"], rows)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "sssl_dist", "shard", "--dataset", "manifest", "--root",
           str(csv_path), "--out", str(out), "--songs-per-shard", "1"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not list(out.glob(".shard-*.tmp")):  # Ray is up and a shard is being written
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "no shard task started in time"
            time.sleep(0.05)
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-3000:]
    (line,) = [line for line in err.splitlines() if "stopped." in line]
    assert "terminated (SIGTERM): stopped. Finished shards are kept" in line, line
    assert "fold" not in line and "epoch" not in line
    _, alive = psutil.wait_procs(children, timeout=60)  # its shard tasks are gone
    assert not alive, alive
    records = load_dataset("manifest", csv_path)[0]
    manifest = shard_dataset(records, out, songs_per_shard=1, progress=False)
    assert len(manifest["songs"]) == 4 and not list(out.glob(".*.tmp"))


# ---------------------------------------------------------------- what a path is
def test_a_folder_or_a_fifo_named_as_audio_is_rejected_saying_what_it_is(tmp_path, ray_session):
    write_audio(tmp_path / "good.wav")
    (tmp_path / "album.mp3").mkdir()
    os.mkfifo(tmp_path / "pipe.wav")
    os.symlink(tmp_path / "gone.wav", tmp_path / "link.wav")
    rows = [["good.wav", "Q1"], ["album.mp3", "Q2"], ["pipe.wav", "Q3"], ["link.wav", "Q4"]]
    records, report, _ = load_dataset(
        "manifest", _csv(tmp_path / "songs.csv", ["path", "quadrant"], rows)
    )
    assert not report.missing_audio  # each is something: the shard stage says what
    manifest = shard_dataset(records, tmp_path / "out", progress=False)
    reasons = {r["song_id"]: r["reason"] for r in manifest["rejects"]}
    assert reasons == {
        "album": "a folder, not an audio file",
        "pipe": "a named pipe (FIFO), not an audio file",
        "link": "a broken symbolic link",
    }


def test_a_header_only_manifest_says_it_has_no_rows(tmp_path):
    path = _csv(tmp_path / "songs.csv", ["path", "quadrant"], [])
    with pytest.raises(ValueError, match="songs.csv: no rows under the header"):
        load_dataset("manifest", path)


def test_sharding_another_source_into_a_shard_set_is_refused(tmp_path, ray_session, caplog):
    """`sssl shard` into an --out that holds the shards of another root would replace the shard
    set every run trained on: refused in one line before anything is read, the shards
    untouched; the same root re-shards (labels changed, files replaced), and --replace says
    the user means it."""
    from sssl_dist.cli import main

    roots = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        rows = []
        for i in range(2):
            write_audio(tmp_path / name / f"s{i}.wav", seconds=6, freq=300 + 50 * i)
            rows.append([f"s{i}.wav", f"Q{i + 1}"])
        roots.append(_csv(tmp_path / name / "songs.csv", ["path", "quadrant"], rows))
    out = tmp_path / "shards"
    shard = ["shard", "--dataset", "manifest", "--out", str(out), "--root"]
    assert main([*shard, str(roots[0])]) == 0
    source = json.loads((out / "source.json").read_text())
    assert source == {"dataset": "manifest", "root": str(roots[0].resolve())}
    assert main([*shard, str(roots[0])]) == 0  # the same source: re-sharded, nothing refused
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    caplog.clear()
    assert main([*shard, str(roots[1])]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "holds the shards of manifest at" in errors[0], errors
    assert "--replace" in errors[0] and "\n" not in errors[0]
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    (out / "source.json").write_text('{"dataset": "manif')  # cut short
    caplog.clear()
    assert main([*shard, str(roots[1])]) == 2
    assert "source.json is damaged (JSONDecodeError)" in caplog.text and "--replace" in caplog.text
    assert main([*shard, str(roots[1]), "--replace"]) == 0
    assert json.loads((out / "source.json").read_text())["root"] == str(roots[1].resolve())
