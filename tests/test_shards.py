"""Shard stage: dataset layouts, the synthetic corpus, sharding, bad input, segments, ranks."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import write_audio

from shards.datasets import load_dataset
from shards.synth import SynthConfig, quadrant_timeline, render_song
from shards.write import shard_dataset
from sssl_dist.config import FeatureConfig
from sssl_dist.data.segments import (
    MANIFEST_NAME,
    SegmentTable,
    ShardSet,
    cut_segment,
    epoch_batches,
    loss_pass_batches,
    rank_block,
    rank_share,
    segment_count,
    steps_per_epoch,
)


def _csv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


# ---------------------------------------------------------------- dataset layouts
def test_4q_layout(tmp_path):
    root = tmp_path / "4q"
    write_audio(root / "MER_audio_taffc_dataset/Q1/MT0000040632.wav")
    write_audio(root / "MER_audio_taffc_dataset/Q3/MT0000011975.wav")
    write_audio(root / "MER_audio_taffc_dataset/Q2/MT0000099999.wav")  # no label row
    write_audio(root / "MER_audio_taffc_dataset/Q1/._MT0000040632.wav")  # macOS resource fork
    _csv(
        root / "panda_dataset_taffc_annotations.csv",
        ["Song", "Quadrant", "Artist"],
        [
            ["MT0000040632", "Q1", "a"],
            ["MT0000011975", "Q3", "b"],
            ["MT0000011975", "Q3", "b"],
            ["MT0000000001", "Q2", "c"],
        ],
    )
    records, report, truth = load_dataset("4q", root)
    by_id = {r.song_id: r for r in records}
    assert set(by_id) == {"MT0000040632", "MT0000011975"}
    assert (
        by_id["MT0000040632"].quadrant,
        by_id["MT0000040632"].valence,
        by_id["MT0000040632"].arousal,
    ) == (0, 1, 1)
    assert (by_id["MT0000011975"].valence, by_id["MT0000011975"].arousal) == (0, 0)
    assert report.missing_audio == ["MT0000000001"]
    assert report.unlabelled_audio == ["MT0000099999"]
    assert report.duplicate_ids == ["MT0000011975"]
    assert truth == {}


def test_pmemo_layout(tmp_path):
    root = tmp_path / "PMEmo2019"
    write_audio(root / "chorus/1.wav")
    write_audio(root / "chorus/4.wav")
    _csv(
        root / "annotations/static_annotations.csv",
        ["musicId", "Arousal(mean)", "Valence(mean)"],
        [["1", "0.8", "0.3"], ["4", "0.2", "0.9"]],
    )
    records, report, _ = load_dataset("pmemo", root)
    r = {x.song_id: x for x in records}
    assert (r["1"].arousal, r["1"].valence, r["1"].quadrant) == (1, 0, 1)  # Q2
    assert (r["4"].arousal, r["4"].valence, r["4"].quadrant) == (0, 1, 3)  # Q4
    assert r["1"].arousal_value == pytest.approx(0.8)


def test_eim_layout(tmp_path):
    root = tmp_path / "eim"
    write_audio(root / "clips_45seconds/2.wav")
    _csv(
        root / "annotations/static_annotations.csv",
        ["song_id", "mean_arousal", "std_arousal", "mean_valence", "std_valence"],
        [["2", "6.1", "1", "3.2", "1"], ["3", "2", "1", "2", "1"]],
    )
    records, report, _ = load_dataset("eim", root)
    assert [(r.song_id, r.arousal, r.valence) for r in records] == [("2", 1, 0)]
    assert report.missing_audio == ["3"]


def test_deam_layout_with_leading_spaces(tmp_path):
    root = tmp_path / "DEAM"
    write_audio(root / "MEMD_audio/10.wav")
    write_audio(root / "MEMD_audio/2011.wav")
    d = root / "annotations/annotations averaged per song/song_level"
    header = ["song_id", " valence_mean", " valence_std", " arousal_mean", " arousal_std"]
    _csv(
        d / "static_annotations_averaged_songs_1_2000.csv",
        header,
        [["10", " 6.2", " 1", " 4.1", " 1"]],
    )
    _csv(
        d / "static_annotations_averaged_songs_2000_2058.csv",
        header,
        [["2011", "3", "1", "7", "1"]],
    )
    records, _, _ = load_dataset("deam", root)
    r = {x.song_id: x for x in records}
    assert (r["10"].valence, r["10"].arousal) == (1, 0)
    assert (r["2011"].valence, r["2011"].arousal) == (0, 1)


def test_manifest_csv(tmp_path):
    write_audio(tmp_path / "a.wav")
    write_audio(tmp_path / "b.wav")
    _csv(
        tmp_path / "songs.csv",
        ["path", "quadrant", "valence", "arousal"],
        [
            ["a.wav", "Q2", "", ""],
            ["b.wav", "", "0.9", "0.1"],
            ["c.wav", "Q1", "", ""],
            ["a.wav", "Q2", "", ""],
        ],
    )
    records, report, _ = load_dataset("manifest", tmp_path / "songs.csv")
    r = {x.song_id: x for x in records}
    assert r["a"].quadrant == 1 and (r["b"].valence, r["b"].arousal) == (1, 0)
    assert report.missing_audio == ["c"] and report.duplicate_ids == ["a"]


def test_missing_columns_are_a_clear_error(tmp_path):
    write_audio(tmp_path / "chorus/1.wav")
    _csv(tmp_path / "annotations/static_annotations.csv", ["musicId", "Arousal"], [["1", "0.5"]])
    with pytest.raises(ValueError, match=r"missing column\(s\) \['Arousal\(mean\)'"):
        load_dataset("pmemo", tmp_path)


# ---------------------------------------------------------------- synthetic corpus
def test_synth_is_deterministic_and_varied():
    cfg = SynthConfig()
    a = render_song(np.random.default_rng([0, 3]), cfg)
    b = render_song(np.random.default_rng([0, 3]), cfg)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]
    songs = [render_song(np.random.default_rng([0, i]), cfg) for i in range(12)]
    assert len({s[1] for s in songs}) > 1  # several sample rates
    assert {s[0].ndim for s in songs} == {1, 2}  # mono and stereo
    durations = [len(s[0]) / s[1] for s in songs]
    assert min(durations) >= 20 and max(durations) <= 45


def test_long_48k_stereo_ogg_is_written_without_crashing(tmp_path):
    """The longest song the generator makes (45 s, 48 kHz, stereo) once segfaulted libvorbis
    when written in one call. A child process, so a regression fails this test instead of
    killing pytest."""
    path = tmp_path / "long.ogg"
    code = (
        "import numpy as np, sys; from pathlib import Path; "
        "from shards.synth import write_audio_blocks; "
        "a = np.random.default_rng(0).uniform(-0.5, 0.5, (45 * 48000, 2)).astype(np.float32); "
        "write_audio_blocks(Path(sys.argv[1]), a, 48000, 'ogg')"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.frames) == (48000, 2, 45 * 48000)


def test_synth_mislabelled_share_near_target():
    cfg = SynthConfig()
    shares = []
    for i in range(300):
        rng = np.random.default_rng(i)
        n = int(rng.integers(20, 46))
        dominant, timeline = quadrant_timeline(rng, n, cfg)
        assert np.mean(timeline == dominant) > 0.5  # the clip label is the majority
        shares.append(np.mean(timeline != dominant))
    assert 0.25 <= np.mean(shares) <= 0.35


def test_corpus_in_4q_layout_with_truth(corpus):
    records, report, truth = load_dataset("synthetic", corpus)
    assert len(records) == 24 and not any(report.to_dict().values())
    for r in records:
        assert f"/Q{r.quadrant + 1}/" in r.audio_path
        assert len(truth[r.song_id]) >= 20
        assert np.bincount(truth[r.song_id], minlength=4).argmax() == r.quadrant
    assert {p.suffix for p in (corpus / "MER_audio_taffc_dataset").rglob("*.*")} >= {
        ".mp3",
        ".flac",
    }


# ---------------------------------------------------------------- shards
def test_shards_manifest_and_mels(shard_dir):
    ss = ShardSet(shard_dir)
    m = ss.manifest
    assert m["feature_digest"] == FeatureConfig().digest()
    assert len(m["songs"]) == 24 and not m["rejects"] and len(m["shards"]) == 5
    assert "torch" in m["library_versions"] and ss.has_truth
    mels = ss.load_mels({ss.songs[0]["song_id"], ss.songs[-1]["song_id"]})
    for sid, mel in mels.items():
        song = next(s for s in ss.songs if s["song_id"] == sid)
        assert mel.dtype == np.float16 and mel.shape == (128, song["frames"])
        # 22.05 kHz, hop 512, centred frames: 1 + floor(samples / 512)
        assert song["frames"] == 1 + int(song["duration_s"] * 22050) // 512


def test_rerun_skips_complete_shards_and_repairs_interrupted(
    shard_dir, corpus, tmp_path, ray_session
):
    records, _, truth = load_dataset("synthetic", corpus)
    out = tmp_path / "s"
    shard_dataset(records[:10], out, truth=truth, songs_per_shard=5, progress=False)
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.tar")}
    # Simulate an interruption: shard 1 truncated and its sidecar never written.
    victim = out / "shard-000001.tar"
    victim.write_bytes(victim.read_bytes()[:1000])
    (out / "shard-000001.tar.json").unlink()
    manifest = shard_dataset(records[:10], out, truth=truth, songs_per_shard=5, progress=False)
    assert (out / "shard-000000.tar").stat().st_mtime_ns == first["shard-000000.tar"]
    assert len(manifest["songs"]) == 10
    assert len(ShardSet(out).load_mels()) == 10  # the repaired shard reads completely


def test_bad_inputs_are_skipped_with_reasons(tmp_path, ray_session):
    root = tmp_path / "bad"
    audio = root / "chorus"
    write_audio(audio / "good1.wav", seconds=7)
    write_audio(audio / "good2.flac", seconds=8, sr=44100, stereo=True)
    (audio / "empty.mp3").write_bytes(b"")
    (audio / "corrupt.mp3").write_bytes(b"ID3" + bytes(range(256)) * 20)
    (audio / "text.ogg").write_text("this is not audio")
    (audio / "random.mp3").write_bytes(
        np.random.default_rng(1).bytes(4096).replace(b"\xff", b"\x00")
    )
    (audio / "notes.mp3").write_text("title,artist\nsong,someone\n")
    sf.write(audio / "silent.wav", np.zeros(22050 * 7), 22050)
    nan = np.sin(np.arange(22050 * 7) / 10.0).astype(np.float32)
    nan[500:600] = np.nan
    sf.write(audio / "nan.wav", nan, 22050, subtype="FLOAT")
    write_audio(audio / "short.wav", seconds=3)
    write_audio(audio / "huge.wav", seconds=12)
    ids = ["good1", "good2", "empty", "corrupt", "text", "random", "notes"]
    ids += ["silent", "nan", "short", "huge"]
    _csv(
        root / "annotations/static_annotations.csv",
        ["musicId", "Arousal(mean)", "Valence(mean)"],
        [[i, "0.7", "0.7"] for i in ids],
    )
    records, _, _ = load_dataset("pmemo", root)
    fc = FeatureConfig(max_duration_s=10)
    manifest = shard_dataset(records, tmp_path / "out", fc=fc, songs_per_shard=4, progress=False)
    assert sorted(s["song_id"] for s in manifest["songs"]) == ["good1", "good2"]
    reasons = {r["song_id"]: r["reason"] for r in manifest["rejects"]}
    assert set(reasons) == set(ids) - {"good1", "good2"}
    assert reasons["empty"].startswith("empty file")
    # Each says what is actually wrong, never "file does not exist" for a file that exists.
    assert reasons["corrupt"] == "corrupt or truncated MP3 data"
    assert reasons["text"] == reasons["notes"] == "a text file, not audio"
    assert reasons["random"].startswith("not a recognised audio format")
    assert not any("does not exist" in r for r in reasons.values())
    assert reasons["silent"].startswith("silent")
    assert "NaN" in reasons["nan"]
    assert reasons["short"].startswith("too short")
    assert reasons["huge"].startswith("too long")
    on_disk = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())
    assert len(on_disk["rejects"]) == 9


def test_nothing_usable_fails_clearly(tmp_path, ray_session):
    root = tmp_path / "none"
    (root / "chorus").mkdir(parents=True)
    (root / "chorus" / "x.mp3").write_bytes(b"")
    _csv(
        root / "annotations/static_annotations.csv",
        ["musicId", "Arousal(mean)", "Valence(mean)"],
        [["x", "0.1", "0.1"]],
    )
    records, _, _ = load_dataset("pmemo", root)
    with pytest.raises(RuntimeError, match="no usable song"):
        shard_dataset(records, tmp_path / "out", progress=False)


# ---------------------------------------------------------------- segments
@pytest.mark.parametrize("length", [1, 2, 3, 4, 5])
def test_segment_count_formula(length, shard_dir):
    ss = ShardSet(shard_dir)
    table = SegmentTable.build(ss.songs, "quadrant", length)
    expected = sum(int(np.floor(s["duration_s"] - length)) + 1 for s in ss.songs)
    assert len(table) == expected
    assert segment_count(4.99, 5) == 0 and segment_count(5.0, 5) == 1 and segment_count(7.5, 3) == 5


def test_segments_cut_from_song_mel(shard_dir):
    ss = ShardSet(shard_dir)
    fc = ss.feature_config
    mels = ss.load_mels()
    for length in (1, 5):
        table = SegmentTable.build(ss.songs, "valence", length)
        ids = table.global_ids()
        assert len(set(ids)) == len(ids) and ids == sorted(
            ids, key=lambda g: (g.split("@")[0], int(g.split("@")[1]))
        )
        last = len(table) - 1
        seg = cut_segment(
            mels[table.song_ids[table.song_of[last]]],
            int(table.start[last]),
            length,
            fc.frames_per_second,
        )
        assert seg.shape == (128, round(length * fc.frames_per_second))
    # The wrong flags agree with the per-second truth of the corpus.
    table = SegmentTable.build(ss.songs, "quadrant", 1)
    assert set(np.unique(table.wrong)) <= {0, 1} and 0.1 < table.wrong.mean() < 0.45


# ---------------------------------------------------------------- ranks and folds
@pytest.mark.parametrize("n,world,batch", [(101, 2, 8), (7, 2, 4), (1000, 3, 64), (5, 1, 2)])
def test_rank_partition_exactly_once_and_equal_steps(n, world, batch):
    blocks = [rank_block(n, r, world) for r in range(world)]
    visited = np.concatenate(
        [np.concatenate(loss_pass_batches(lo, hi, batch)) for lo, hi in blocks]
    )
    assert np.array_equal(np.sort(visited), np.arange(n))  # loss pass: every segment once
    global_batch = batch * world
    steps = steps_per_epoch(n, global_batch)
    batches = epoch_batches(n, steps, global_batch, seed=0, epoch=3)
    shares = [[rank_share(b, r, world) for b in batches] for r in range(world)]
    assert {len(s) for s in shares} == {steps}  # the same number of steps on every rank
    assert {x.size for s in shares for x in s} == {batch}  # full batches on every rank
    flat = batches.ravel()
    assert len(np.unique(flat[:n])) == min(n, flat.size)  # covers every segment before repeating


@pytest.mark.parametrize("n,batch", [(101, 8), (7, 4), (1000, 64)])
def test_two_ranks_train_on_exactly_the_batches_of_one(n, batch):
    """DESIGN.md: a 2-worker run partitions exactly like a 1-worker run. The global batch is
    the same, so the union of the two ranks' shares is, step by step, the 1-worker batch."""
    steps = steps_per_epoch(n, batch)
    for epoch in range(3):
        one = epoch_batches(n, steps, batch, seed=5, epoch=epoch)
        two = epoch_batches(n, steps, batch, seed=5, epoch=epoch)
        for b1, b2 in zip(one, two, strict=True):
            union = np.concatenate([rank_share(b2, r, 2) for r in range(2)])
            assert np.array_equal(union, rank_share(b1, 0, 1))
    # A different epoch is a different permutation (the order is not frozen).
    assert not np.array_equal(
        epoch_batches(n, steps, batch, 5, 0), epoch_batches(n, steps, batch, 5, 1)
    )


def _load_in_child(root: str, queue) -> None:
    from sssl_dist.data.segments import ShardSet

    mels = ShardSet(root).load_mels()
    first = sorted(mels)[0]
    queue.put((mels[first].filename, float(np.asarray(mels[first], dtype=np.float64).sum())))


def test_mels_are_one_memory_mapped_copy_per_node(shard_dir, tmp_path):
    """Every rank and every concurrent fold on a node reads the same memory-mapped file, built
    once even when two processes ask for it at the same moment (one copy per node)."""
    import multiprocessing as mp
    import shutil

    root = tmp_path / "shards"
    shutil.copytree(shard_dir, root, ignore=shutil.ignore_patterns("mel_cache"))
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_load_in_child, args=(str(root), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    seen = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert seen[0] == seen[1]  # the same file, the same values
    files = [p for p in (root / "mel_cache").rglob("*") if p.is_file()]
    assert sorted(p.name for p in files) == [".lock", "index.json", "mels.npy"]  # no leftovers
    ss = ShardSet(root)
    mels = ss.load_mels()
    assert {m.filename for m in mels.values()} == {seen[0][0]}
    assert all(not m.flags.writeable for m in mels.values())  # read-only for every reader
    for sid, mel in ss.read_tars(set(mels)):  # the copy is exactly the shards' content
        np.testing.assert_array_equal(np.asarray(mels[sid]), mel)


def test_a_finished_corpus_is_kept_and_another_config_is_refused(tmp_path):
    """generate_corpus skips a corpus already written from the same config (its config file is
    written last) and adds songs for a larger count. Before: another seed "regenerated" into
    the same folder, keeping every song file already at its path (the old seed's audio under
    the new labels and truth) and the old songs in other quadrant folders beside the new."""
    from dataclasses import replace

    from shards.synth import PENDING, generate_corpus

    cfg = SynthConfig(n_songs=2, seed=3, min_duration_s=5.0, max_duration_s=6.0)
    generate_corpus(tmp_path, cfg, progress=False, workers=1)
    audio = sorted(tmp_path.glob("MER_audio_taffc_dataset/Q*/*"))
    stamps = [p.stat().st_mtime_ns for p in audio]
    generate_corpus(tmp_path, cfg, progress=False, workers=1)
    assert [p.stat().st_mtime_ns for p in audio] == stamps  # nothing rewritten
    files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(
        ValueError, match=r"holds a corpus of another configuration \(seed: 3 -> 4\)"
    ):
        generate_corpus(tmp_path, replace(cfg, seed=4), progress=False, workers=1)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files
    generate_corpus(tmp_path, replace(cfg, n_songs=3), progress=False, workers=1)
    assert len(list(tmp_path.glob("MER_audio_taffc_dataset/Q*/*"))) == 3
    assert [p.stat().st_mtime_ns for p in audio] == stamps  # songs 0 and 1 kept as they were
    assert not (tmp_path / PENDING).exists()


def test_an_unfinished_corpus_of_another_config_is_refused(tmp_path):
    """An interrupted corpus resumes with the same command; another seed is refused."""
    from dataclasses import asdict, replace

    from shards.synth import PENDING, generate_corpus

    cfg = SynthConfig(n_songs=1, seed=3, min_duration_s=5.0, max_duration_s=6.0)
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / PENDING).write_text(json.dumps(json.loads(json.dumps(asdict(cfg)))))
    with pytest.raises(ValueError, match=r"holds an unfinished corpus of another configuration"):
        generate_corpus(tmp_path, replace(cfg, seed=4), progress=False, workers=1)
    generate_corpus(tmp_path, cfg, progress=False, workers=1)  # the same one resumes
    assert (tmp_path / "synth_config.json").is_file() and not (tmp_path / PENDING).exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--excursion", "2"], r"excursion_fraction \(--excursion\) .* \[0.05, 0.45\], got 2.0"),
        (["--excursion", "-0.1"], "got -0.1"),
        (["--songs", "0"], r"n_songs \(--songs\) must be a whole number >= 1, got 0"),
        (["--seed", "-1"], r"seed \(--seed\) must be a whole number >= 0"),
    ],
)
def test_synth_refuses_what_it_would_not_make_and_writes_nothing(tmp_path, caplog, args, message):
    """A share above 0.45 was clipped per song yet recorded as given; 0 songs wrote an empty
    corpus."""
    from sssl_dist.cli import main

    out = tmp_path / "corpus"
    assert main(["synth", "--out", str(out), *args]) == 2
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert re.search(message, record.getMessage()) and "\n" not in record.getMessage()
    assert not out.exists()


def test_the_synth_config_checks_its_other_ranges():
    for bad in (
        {"min_duration_s": 30.0, "max_duration_s": 20.0},
        {"min_excursion_s": 0},
        {"stereo_probability": 1.5},
        {"n_songs": 2.5},
    ):
        with pytest.raises(ValueError):
            SynthConfig(**bad)
    SynthConfig(excursion_fraction=0.45)  # the bounds themselves are shares it makes
    SynthConfig(excursion_fraction=0.05, n_songs=1)
