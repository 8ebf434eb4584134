"""The data sets' continuous ratings as distributed: static values with their scale, dynamic
annotations averaged into seconds as per-second truth, and every kind of bad dynamic input
reported one line per song. No Ray: the loaders are plain functions, and so is the writing of
one shard (`write_shard`), where a rating past the audio's end is found.

Fixtures mirror the distributed layouts: file names, folders and header lines as the data
sets ship them (docs/datasets.md says where each was checked), a few songs each."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
from conftest import write_audio

from shards.datasets import load_dataset
from sssl_dist.data.records import QUADRANT_OF_VA

Q1, Q2, Q3, Q4 = (QUADRANT_OF_VA[va] for va in ((1, 1), (0, 1), (0, 0), (1, 0)))
UNRATED = [None] * 15  # every data set leaves the first 15 s without a dynamic rating

# ---------------------------------------------------------------- the layouts, as shipped
PMEMO_STATIC = "musicId,Arousal(mean),Valence(mean)\n"
PMEMO_DYNAMIC = "musicId,frameTime,Arousal(mean),Valence(mean)\n"
EIM_STATIC = "song_id,mean_arousal,std_arousal,mean_valence,std_valence\n"
# EiM rates each 45 s clip from 15 s to its end: sample_15000ms ... sample_45000ms (61 columns).
EIM_SAMPLES = [f"sample_{ms}ms" for ms in range(15000, 45001, 500)]
EIM_DYNAMIC = "song_id," + ",".join(EIM_SAMPLES) + "\n"
DEAM_STATIC = "song_id, valence_mean, valence_std, arousal_mean, arousal_std\n"
DEAM_SONG_LEVEL = "annotations/annotations averaged per song/song_level"
DEAM_DYNAMIC_DIR = "annotations/annotations averaged per song/dynamic (per second annotations)"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _row(song: str, values: list) -> str:
    cells = ("" if v is None else v if isinstance(v, str) else f"{v:g}" for v in values)
    return song + "," + ",".join(cells) + "\n"


def _eim(root: Path, valence: dict[str, list], arousal: dict[str, list], songs=("2", "3")):
    """An EiM root: a clip and a static row per song in `songs`, and the two dynamic files."""
    for song in songs:
        write_audio(root / f"clips_45seconds/{song}.wav", seconds=0.5)
    static = "".join(f"{s},6.1,1.2,3.2,0.9\n" for s in songs)
    _write(root / "annotations/static_annotations.csv", EIM_STATIC + static)
    for name, rows in (("valence", valence), ("arousal", arousal)):
        text = EIM_DYNAMIC + "".join(_row(s, v) for s, v in rows.items())
        _write(root / f"annotations/{name}_cont_average.csv", text)
    return root


def _flat(value: float) -> list[float]:
    return [value] * len(EIM_SAMPLES)


def test_pmemo_static_values_and_dynamic_truth(tmp_path):
    for song in ("1", "4"):
        write_audio(tmp_path / f"chorus/{song}.wav", seconds=0.5)
    _write(tmp_path / "annotations/static_annotations.csv", PMEMO_STATIC + "1,0.8,0.3\n4,0.2,0.9\n")
    _write(
        tmp_path / "annotations/dynamic_annotations.csv",
        PMEMO_DYNAMIC
        + "1,15.0,0.6,0.4\n1,15.5,0.8,0.2\n1,16.0,0.3,0.7\n1,16.5,0.3,0.9\n"
        + "4,15.0,0.9,0.9\n4,15.5,0.9,0.9\n",
    )
    records, report, truth = load_dataset("pmemo", tmp_path)
    r = {x.song_id: x for x in records}
    assert (r["1"].valence_value, r["1"].arousal_value, r["1"].value_scale) == (0.3, 0.8, (0, 1))
    # Second 15 averages the samples at 15.0 and 15.5 s: arousal 0.7 (high), valence 0.3.
    assert r["1"].arousal_curve == (*UNRATED, pytest.approx(0.7), pytest.approx(0.3))
    assert r["1"].valence_curve == (*UNRATED, pytest.approx(0.3), pytest.approx(0.8))
    assert r["1"].curve_scale == (0.0, 1.0)
    assert truth == {"1": [*UNRATED, Q2, Q4], "4": [*UNRATED, Q1]}
    assert not any(report.to_dict().values())


def test_eim_wide_files_two_samples_a_second_up_to_45_s(tmp_path):
    valence = [0.4] * 30 + [-0.4] * 31  # positive through second 29, negative after
    _eim(tmp_path, {"2": valence}, {"2": _flat(0.2)}, songs=("2",))
    records, report, truth = load_dataset("eim", tmp_path)
    (song,) = records
    assert (song.valence_value, song.arousal_value, song.value_scale) == (3.2, 6.1, (1, 9))
    assert song.curve_scale == (-1.0, 1.0)
    # sample_45000ms is the rating at the clip's last instant: second 45, never in a segment.
    assert len(song.valence_curve) == 46 and song.valence_curve[:15] == tuple(UNRATED)
    assert truth["2"] == [*UNRATED, *[Q1] * 15, *[Q2] * 16]
    assert not any(report.to_dict().values())


def test_deam_ragged_rows_are_song_ends_not_missing_samples(tmp_path):
    """A 45 s clip (song 10) and a full-length 2015 song (2011, 50 s) share the wide files: the
    clip's row ends in empty cells, which is where its song ends, not a missing sample."""
    write_audio(tmp_path / "MEMD_audio/10.wav", seconds=0.5)
    write_audio(tmp_path / "MEMD_audio/2011.wav", seconds=0.5)
    static = tmp_path / DEAM_SONG_LEVEL
    _write(
        static / "static_annotations_averaged_songs_1_2000.csv",
        DEAM_STATIC + "10, 6.2, 1, 4.1, 1\n",
    )
    _write(
        static / "static_annotations_averaged_songs_2000_2058.csv", DEAM_STATIC + "2011,3,1,7,1\n"
    )
    header = "song_id," + ",".join(f"sample_{ms}ms" for ms in range(15000, 50000, 500)) + "\n"
    clip = [0.3] * 60 + [None] * 10  # sample_15000ms .. sample_44500ms, then nothing
    full = [-0.3] * 70
    for name in ("valence", "arousal"):
        _write(
            tmp_path / DEAM_DYNAMIC_DIR / f"{name}.csv",
            header + _row("10", clip) + _row("2011", full),
        )
    records, report, truth = load_dataset("deam", tmp_path)
    assert {r.song_id: r.value_scale for r in records} == {"10": (1, 9), "2011": (1, 9)}
    assert truth == {"10": [*UNRATED, *[Q1] * 30], "2011": [*UNRATED, *[Q3] * 35]}
    assert not any(report.to_dict().values())


def test_manifest_continuous_columns_and_a_per_second_truth_file(tmp_path):
    for name in ("a", "b"):
        write_audio(tmp_path / f"{name}.wav", seconds=0.5)
    songs = _write(tmp_path / "songs.csv", "path,valence,arousal\na.wav,0.7,0.2\nb.wav,0.1,0.9\n")
    truth_va = _write(
        tmp_path / "truth.csv",
        "id,time,valence,arousal\na,0,0.9,0.9\na,0.5,0.7,0.9\na,1,0.2,0.1\nb,1,0.1,0.8\n",
    )
    records, report, truth = load_dataset("manifest", songs, truth=truth_va)
    r = {x.song_id: x for x in records}
    assert r["a"].value_scale == (0, 1) and r["a"].valence_value == 0.7
    assert r["a"].valence_curve == (pytest.approx(0.8), pytest.approx(0.2))
    assert truth == {"a": [Q1, Q3], "b": [None, Q2]}
    assert not any(report.to_dict().values())
    by_quadrant = _write(tmp_path / "q.csv", "id,time,quadrant\na,0,Q1\na,1,Q4\nb,2,2\n")
    _, _, truth = load_dataset("manifest", songs, truth=by_quadrant)
    assert truth == {"a": [Q1, Q4], "b": [None, None, Q2]}


def test_the_synthetic_records_plan_is_byte_for_byte_what_it_was():
    """The shards of a data set without continuous values (4Q, the generated corpus) are
    rebuilt only when their plan changes, and their tars feed the run digest: the record's
    plan must not gain the new fields while they are unset."""
    from shards.write import plan_entry
    from sssl_dist.data.records import SongRecord, labels_from_quadrant

    record = SongRecord(
        "SY0000000001", "/nowhere/SY0000000001.mp3", "synthetic", **labels_from_quadrant(1)
    )
    assert json.dumps(plan_entry(record, [1, 1, 0])) == (
        '{"record": {"song_id": "SY0000000001", "audio_path": "/nowhere/SY0000000001.mp3", '
        '"source": "synthetic", "quadrant": 1, "valence": 0, "arousal": 1, "valence_value": '
        'null, "arousal_value": null}, "truth": [1, 1, 0], "file_stat": null}'
    )


def test_the_digest_of_a_shard_set_without_ratings_is_unchanged(tmp_path):
    """Pinned from the code before the per-second ratings existed: a run is resumed, and a
    finished one read back, only on the shard set it was trained on."""
    from sssl_dist.config import FeatureConfig
    from sssl_dist.data.segments import ShardSet

    songs = [
        {
            "song_id": "SY0",
            "quadrant": 1,
            "valence": 0,
            "arousal": 1,
            "duration_s": 3.0,
            "frames": 130,
            "truth": [1, 1, 0],
        },
        {
            "song_id": "SY1",
            "quadrant": 2,
            "valence": 0,
            "arousal": 0,
            "duration_s": 2.5,
            "frames": 108,
            "truth": [2, 3, 2],
        },
    ]
    manifest = {
        "feature_config": asdict(FeatureConfig()),
        "songs": songs,
        "shards": [{"file": "shard-000000.tar", "songs": ["SY0", "SY1"], "bytes": 10240}],
    }
    _write(tmp_path / "manifest.json", json.dumps(manifest))
    (tmp_path / "shard-000000.tar").write_bytes(bytes(10240))  # the size the manifest records
    assert ShardSet(tmp_path).digest() == "6f7882d8695271af"
    songs[0]["valence_curve"] = [None, 0.2, -0.1]  # ratings are data: they move the digest
    _write(tmp_path / "manifest.json", json.dumps(manifest))
    assert ShardSet(tmp_path).digest() != "6f7882d8695271af"


# ---------------------------------------------------------------- bad dynamic input
def test_a_cell_that_is_no_number_or_off_the_scale_refuses_the_songs_ratings(tmp_path):
    valence = {"2": _flat(0.1), "3": _flat(0.1)}
    valence["2"][10] = "abc"
    arousal = {"2": _flat(0.1), "3": _flat(1.5)}
    records, report, truth = load_dataset("eim", _eim(tmp_path, valence, arousal))
    assert sorted(report.bad_truth) == [
        "2 (valence_cont_average.csv: sample_20000ms 'abc' is not a number)",
        "3 (arousal_cont_average.csv: sample_15000ms '1.5' is off the -1..1 scale)",
    ]
    assert truth == {}
    assert {r.song_id for r in records} == {"2", "3"}  # both keep their static labels
    assert all(r.valence_curve is None for r in records)


def test_missing_samples_leave_their_seconds_unknown_and_are_reported(tmp_path):
    valence = {"2": _flat(0.1), "3": _flat(0.1)}
    valence["2"][10] = None  # sample_20000ms: second 20 keeps its sample at 20.5 s
    valence["3"][10] = valence["3"][11] = None  # second 20 has no sample left
    records, report, truth = load_dataset(
        "eim", _eim(tmp_path, valence, {"2": _flat(0.1), "3": _flat(0.1)})
    )
    assert truth["2"][20] == Q1 and truth["3"][20] is None and truth["3"][21] == Q1
    assert sorted(report.partial_truth) == [
        "2: valence_cont_average.csv: 1 empty cell(s) (sample_20000ms); those seconds are unknown",
        "3: valence_cont_average.csv: 2 empty cell(s) (sample_20000ms, sample_20500ms); "
        "valence: 1 second(s) without a sample (from 20 s); 1 second(s) rated for only one of "
        "valence and arousal; those seconds are unknown",
    ]


def test_ratings_of_an_id_without_audio_are_reported(tmp_path):
    root = _eim(tmp_path, {"2": _flat(0.1), "9": _flat(0.1)}, {"2": _flat(0.1)}, songs=("2",))
    _, report, truth = load_dataset("eim", root)
    assert report.truth_without_song == [
        "9 (valence_cont_average.csv): no song was loaded under this id"
    ]
    assert set(truth) == {"2"}


def test_a_song_without_ratings_and_one_rated_on_one_dimension_are_reported(tmp_path):
    valence = {"2": _flat(0.1), "4": _flat(0.1)}
    root = _eim(tmp_path, valence, {"4": _flat(0.1)}, songs=("2", "3", "4"))
    _, report, truth = load_dataset("eim", root)
    assert set(truth) == {"4"}
    assert report.partial_truth == [
        "3: no dynamic rating; its seconds are unknown",
        "2: 31 second(s) rated for only one of valence and arousal; those seconds are unknown",
    ]


def test_repeated_rows_identical_are_duplicates_and_disagreeing_ones_are_refused(tmp_path):
    root = _eim(tmp_path, {"2": _flat(0.1), "3": _flat(0.1)}, {"2": _flat(0.1), "3": _flat(0.1)})
    path = root / "annotations/valence_cont_average.csv"
    path.write_text(path.read_text() + _row("2", _flat(0.1)) + _row("3", _flat(-0.1)))
    _, report, truth = load_dataset("eim", root)
    assert report.duplicate_ids == ["2 (valence_cont_average.csv)"]
    assert report.bad_truth == ["3 (valence_cont_average.csv: 2 rows disagree)"]
    assert set(truth) == {"2"}


def test_pmemo_long_rows_that_disagree_lack_a_value_or_a_time(tmp_path):
    for song in ("1", "2", "3", "4"):
        write_audio(tmp_path / f"chorus/{song}.wav", seconds=0.5)
    static = "".join(f"{s},0.5,0.5\n" for s in ("1", "2", "3", "4"))
    _write(tmp_path / "annotations/static_annotations.csv", PMEMO_STATIC + static)
    _write(
        tmp_path / "annotations/dynamic_annotations.csv",
        PMEMO_DYNAMIC
        + "1,15.0,0.6,0.4\n1,15.0,0.7,0.4\n"  # one time, two ratings
        + "2,x,0.6,0.4\n"  # no time
        + "3,15.0,0.6,\n3,15.5,0.6,0.4\n3,17.0,0.6,0.4\n"  # an empty cell, no row for 16 s
        + "4,15.0,0.6,0.4\n",
    )
    _, report, truth = load_dataset("pmemo", tmp_path)
    assert sorted(report.bad_truth) == [
        "1 (dynamic_annotations.csv: rows at frameTime 15 disagree)",
        "2 (dynamic_annotations.csv: frameTime 'x' is not a number)",
    ]
    assert report.partial_truth == [
        "3: dynamic_annotations.csv: 1 empty Valence(mean) cell(s) (from 15 s); valence: 1 "
        "second(s) without a sample (from 16 s); arousal: 1 second(s) without a sample (from "
        "16 s); those seconds are unknown"
    ]
    assert truth == {"3": [*UNRATED, Q2, None, Q2], "4": [*UNRATED, Q2]}


def test_one_of_the_pair_and_a_malformed_header_are_refused_as_files(tmp_path):
    root = _eim(tmp_path, {"2": _flat(0.1)}, {"2": _flat(0.1)}, songs=("2",))
    (root / "annotations/arousal_cont_average.csv").unlink()
    with pytest.raises(FileNotFoundError, match="arousal_cont_average.csv not found beside"):
        load_dataset("eim", root)
    _write(
        root / "annotations/arousal_cont_average.csv",
        "song_id,sample_15000,sample_15500ms\n2,0.1,0.1\n",
    )
    with pytest.raises(ValueError, match="arousal_cont_average.csv: column 'sample_15000'"):
        load_dataset("eim", root)


def test_a_static_value_off_the_stated_scale_is_a_bad_row(tmp_path):
    write_audio(tmp_path / "MEMD_audio/10.wav", seconds=0.5)
    write_audio(tmp_path / "MEMD_audio/11.wav", seconds=0.5)
    _write(
        tmp_path / DEAM_SONG_LEVEL / "static_annotations_averaged_songs_1_2000.csv",
        DEAM_STATIC + "10, 9.5, 1, 4.1, 1\n11, 3, 1, 4, 1\n",
    )
    records, report, _ = load_dataset("deam", tmp_path)
    assert [r.song_id for r in records] == ["11"]
    assert report.bad_rows == ["10 (valence 9.5 is off the 1..9 scale)"]


def test_a_manifest_truth_file_that_names_two_quadrants_in_a_second(tmp_path):
    write_audio(tmp_path / "a.wav", seconds=0.5)
    songs = _write(tmp_path / "songs.csv", "path,quadrant\na.wav,Q1\n")
    q = _write(tmp_path / "q.csv", "id,time,quadrant\na,0,Q1\na,0.5,Q2\na,1,Q1\nz,0,Q1\n")
    _, report, truth = load_dataset("manifest", songs, truth=q)
    assert truth == {"a": [None, Q1]}
    assert report.partial_truth == [
        "a: q.csv: 1 second(s) name two quadrants (from 0 s); those seconds are unknown"
    ]
    assert report.truth_without_song == ["z (q.csv): no song was loaded under this id"]
    with pytest.raises(ValueError, match="--truth is for --dataset manifest"):
        load_dataset("pmemo", tmp_path, truth=q)


def test_ratings_past_the_audios_end_are_refused_when_the_shard_is_written(tmp_path):
    """The loader cannot know a clip's length; the shard writer decodes it. A rating more
    than one 2 Hz sample past the end was made on other audio: the song keeps its clip label
    and loses its per-second truth and curves, with a line in the manifest. A rating at the
    audio's last instant (EiM's sample_45000ms on a 45 s clip) is not past it."""
    from shards.write import plan_entry, write_shard
    from sssl_dist.config import FeatureConfig
    from sssl_dist.data.records import SongRecord, labels_from_quadrant

    audio = write_audio(tmp_path / "a.wav", seconds=6)
    record = SongRecord(
        "a",
        str(audio),
        "manifest",
        **labels_from_quadrant(0),
        valence_curve=(None, 0.5),
        arousal_curve=(None, 0.5),
        curve_scale=(-1, 1),
    )
    fits = [None] * 6 + [Q1]  # second 6 of a 6.0 s clip
    runs_on = [None] * 6 + [Q1, Q1]  # second 7 starts a second after the end
    sidecar = write_shard(
        [plan_entry(record, fits)], str(tmp_path / "s0.tar"), asdict(FeatureConfig())
    )
    assert sidecar["songs"][0]["truth"] == fits and not sidecar["truth_refused"]
    sidecar = write_shard(
        [plan_entry(record, runs_on)], str(tmp_path / "s1.tar"), asdict(FeatureConfig())
    )
    (song,) = sidecar["songs"]
    assert song["truth"] is None and "valence_curve" not in song
    (refused,) = sidecar["truth_refused"]
    assert refused["song_id"] == "a"
    assert refused["reason"].startswith(
        "per-second truth runs to second 7, past the audio's end at 6.0 s"
    )


def test_the_per_second_truth_travels_with_the_shards(tmp_path, ray_session):
    """End to end through Ray: the manifest carries each song's truth and curves, the shard
    set reports truth, its segments are known only where all their seconds are, and the
    ceiling arms are refused on it."""
    from shards.write import shard_dataset
    from sssl_dist.config import SSSLConfig
    from sssl_dist.data.segments import SegmentTable, ShardSet
    from sssl_dist.driver.fold import check_shards

    for name, freq in (("a", 300.0), ("b", 500.0)):
        write_audio(tmp_path / f"{name}.wav", seconds=6, freq=freq)
    songs = _write(tmp_path / "songs.csv", "path,valence,arousal\na.wav,0.7,0.2\nb.wav,0.1,0.9\n")
    rated = "".join(f"a,{t / 2:g},0.8,0.9\nb,{t / 2:g},0.2,0.1\n" for t in range(4, 12))
    truth_csv = _write(tmp_path / "truth.csv", "id,time,valence,arousal\n" + rated)
    records, report, truth = load_dataset("manifest", songs, truth=truth_csv)
    manifest = shard_dataset(
        records, tmp_path / "out", truth=truth, load_report=report.to_dict(), progress=False
    )
    by_id = {s["song_id"]: s for s in manifest["songs"]}
    assert by_id["a"]["truth"] == [None, None, Q1, Q1, Q1, Q1]
    assert by_id["b"]["valence_curve"][2:] == pytest.approx([0.2] * 4)
    assert by_id["b"]["curve_scale"] == [0.0, 1.0] and not manifest["truth_refused"]
    shards = ShardSet(tmp_path / "out")
    assert shards.has_truth
    table = SegmentTable.build(shards.songs, "quadrant", 3)
    assert table.true_label.tolist() == [-1, -1, 0, 0, -1, -1, 2, 2]
    with pytest.raises(ValueError, match="4 of the 8 segments"):
        check_shards(SSSLConfig(split_evidence="oracle", segment_seconds=3), shards)
