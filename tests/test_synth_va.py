"""The generated corpus's continuous valence/arousal truth, and the audio it leaves unchanged."""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from shards.datasets import load_dataset, read_ground_truth
from shards.synth import (
    VA_FILES,
    VA_MANIFEST_CSV,
    VA_PER_SECOND_CSV,
    VA_SCALE,
    VA_SIGN,
    VA_TRUTH_JSON,
    SynthConfig,
    generate_corpus,
    plan_song,
    static_va,
    va_curve,
)

# Six short songs: every format but wav, mono and stereo, four sample rates' worth of
# resampling, excursions in most songs.
SMALL = SynthConfig(n_songs=6, seed=3, min_duration_s=5.0, max_duration_s=8.0)

# What the generator wrote for SMALL before it wrote continuous truth: generate_corpus at commit
# d59e17d (workers=1), sha256 of each file's bytes. The ogg's decoded float32 samples instead
# of its bytes: libvorbis gives every stream a random serial number, so two runs of the same
# code write different ogg bytes for the same audio.
BEFORE = {
    "MER_audio_taffc_dataset/Q1/SY0000000000.flac": (
        "8af635638e8172c9ef4434338fcd32de311887d2dc1e5f4ebef5ee8118c59f57"
    ),
    "MER_audio_taffc_dataset/Q1/SY0000000005.flac": (
        "0dc4ec4e57e7b0085172d9f57e29f7f3e05abff8cf4d275b649d62576be30ab2"
    ),
    "MER_audio_taffc_dataset/Q2/SY0000000003.mp3": (
        "2951675aa3e7366576422399f243c54322756e1f861251487ecba791e56176ca"
    ),
    "MER_audio_taffc_dataset/Q3/SY0000000001.ogg": (
        "afdd7857f315038ccfd23ab5639488b3e8ca107846d312f502663111b9c109fa"
    ),
    "MER_audio_taffc_dataset/Q3/SY0000000002.mp3": (
        "979549722fc018b1a473f9747edb9c75da7a1f0cf28cdb1960c467babd6eb058"
    ),
    "MER_audio_taffc_dataset/Q3/SY0000000004.flac": (
        "c093e64a1fb438687fc803de7342a044ed9c79e7e483f9919576dd107448fb37"
    ),
    "ground_truth_per_second.csv": (
        "445608253e7297e8756120df274afa02f58fccca31dc04878bca547d7baadc04"
    ),
    "panda_dataset_taffc_annotations.csv": (
        "596c8e315ed3f0bec4443352500587ee8524e1ce0cfdba83dce1acad0a99d473"
    ),
    "synth_config.json": "87db704aea84fe36e58b2fed5a4800276e2d3e65a71b4b4ab5587f7dd4a50862",
}


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("va") / "corpus"
    return generate_corpus(out, SMALL, progress=False, workers=1)


def _digest(path: Path) -> str:
    if path.suffix == ".ogg":
        samples, _ = sf.read(path, dtype="float32")
        return hashlib.sha256(samples.tobytes()).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_the_audio_and_the_quadrant_truth_are_what_they_were(small_corpus):
    """The continuous truth is read off draws the generator already made: every file written
    before is byte-identical, and the new files are the only additions."""
    written = {
        p.relative_to(small_corpus).as_posix(): _digest(p)
        for p in small_corpus.rglob("*")
        if p.is_file()
    }
    assert set(written) == set(BEFORE) | set(VA_FILES)
    assert {name: written[name] for name in BEFORE} == BEFORE


def test_each_second_has_the_signs_of_its_quadrant_and_the_songs_cue_strength(small_corpus):
    """Per second: the signs of the quadrant in ground_truth_per_second.csv, the magnitude of the
    cue strength the song's audio was rendered with, on the stated scale."""
    quadrant = {
        (r["Song"], int(r["Second"])): int(r["Quadrant"][1]) - 1
        for r in _rows(small_corpus / "ground_truth_per_second.csv")
    }
    rows = _rows(small_corpus / VA_PER_SECOND_CSV)
    assert [(r["id"], int(r["time"])) for r in rows] == list(quadrant)
    lo, hi = VA_SCALE
    for r in rows:
        v, a = float(r["valence"]), float(r["arousal"])
        assert lo <= v <= hi and lo <= a <= hi
        assert (np.sign(v), np.sign(a)) == VA_SIGN[quadrant[r["id"], int(r["time"])]]
        i = int(r["id"][2:])
        strength = plan_song(np.random.default_rng([SMALL.seed, i]), SMALL).song["strength"]
        assert abs(v) == abs(a) == strength
    assert any(quadrant[k] != quadrant[k[0], 0] for k in quadrant)  # excursions were checked


def test_the_static_value_is_the_mean_of_the_seconds_with_the_clip_labels_signs(small_corpus):
    labels = {
        r["Song"]: int(r["Quadrant"][1]) - 1
        for r in _rows(small_corpus / "panda_dataset_taffc_annotations.csv")
    }
    seconds: dict[str, list[tuple[float, float]]] = {}
    for r in _rows(small_corpus / VA_PER_SECOND_CSV):
        seconds.setdefault(r["id"], []).append((float(r["valence"]), float(r["arousal"])))
    static = _rows(small_corpus / VA_MANIFEST_CSV)
    assert [r["id"] for r in static] == list(labels)
    for r in static:
        v, a = float(r["valence"]), float(r["arousal"])
        np.testing.assert_allclose((v, a), np.mean(seconds[r["id"]], axis=0), rtol=1e-12)
        assert (np.sign(v), np.sign(a)) == VA_SIGN[labels[r["id"]]]
        assert (small_corpus / r["path"]).parent.name == f"Q{labels[r['id']] + 1}"


def test_the_static_signs_are_the_dominant_quadrants_at_the_default_sizes():
    """Over many songs of the default config (their plans only; no audio rendered)."""
    cfg = SynthConfig()
    for i in range(400):
        plan = plan_song(np.random.default_rng([0, i]), cfg)
        curve = va_curve(plan)
        valence, arousal = static_va(curve)
        assert (np.sign(valence), np.sign(arousal)) == VA_SIGN[plan.dominant]
        assert np.all(np.abs(curve) <= VA_SCALE[1])


def test_the_manifest_loader_reads_the_continuous_truth_back(small_corpus):
    """The V/A files are a manifest and its per-second truth: loaded at the scale's midpoint,
    they give the clip labels of the 4Q files, the static values, the per-second curves, and
    the quadrant truth of ground_truth_per_second.csv, with nothing reported."""
    records, report, truth = load_dataset(
        "manifest",
        small_corpus / VA_MANIFEST_CSV,
        midpoint=0.0,
        truth=small_corpus / VA_PER_SECOND_CSV,
    )
    assert not any(report.to_dict().values())
    quadrant_records, _, quadrant_truth = load_dataset("synthetic", small_corpus)
    assert {r.song_id: r.quadrant for r in records} == {
        r.song_id: r.quadrant for r in quadrant_records
    }
    assert {r.song_id: Path(r.audio_path).resolve() for r in records} == {
        r.song_id: Path(r.audio_path).resolve() for r in quadrant_records
    }
    assert truth == quadrant_truth == read_ground_truth(small_corpus)
    static = {r["id"]: r for r in _rows(small_corpus / VA_MANIFEST_CSV)}
    per_second = _rows(small_corpus / VA_PER_SECOND_CSV)
    for r in records:
        assert r.value_scale == r.curve_scale == VA_SCALE
        assert r.valence_value == float(static[r.song_id]["valence"])
        assert r.arousal_value == float(static[r.song_id]["arousal"])
        assert r.valence_curve == tuple(
            float(row["valence"]) for row in per_second if row["id"] == r.song_id
        )


def test_a_corpus_finished_before_the_continuous_truth_gets_it_added(small_corpus, tmp_path):
    """Such a corpus is kept (same config): its V/A files are added, nothing else rewritten."""
    old = tmp_path / "corpus"
    shutil.copytree(small_corpus, old)
    for name in VA_FILES:
        (old / name).unlink()
    stamps = {p: p.stat().st_mtime_ns for p in old.rglob("*") if p.is_file()}
    generate_corpus(old, SMALL, progress=False, workers=1)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    for name in VA_FILES:
        assert (old / name).read_bytes() == (small_corpus / name).read_bytes()
    assert '"scale": [\n    -1.0,\n    1.0\n  ]' in (old / VA_TRUTH_JSON).read_text()


@pytest.mark.parametrize("strength", [(0.5, 1.2), (0.0, 1.0), (0.8, 0.5)])
def test_a_cue_strength_off_the_truths_scale_is_refused(strength):
    """Above 1 the truth would leave [-1, 1]; at 0 a second would sit on the midpoint."""
    with pytest.raises(ValueError, match=r"cue_strength must satisfy 0 < low <= high <= 1"):
        SynthConfig(cue_strength=strength)
