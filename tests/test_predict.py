"""`sssl predict` on a catalogue: Ray Data pipeline, resumable Parquet output, bad files and
bad model files. Models are built directly (random weights, a small SVM), so no training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from conftest import tone, write_audio

from sssl_dist.cli import main
from sssl_dist.config import FeatureConfig, SSSLConfig, to_dict
from sssl_dist.method.models import build_model
from sssl_dist.method.tasks import task_of
from sssl_dist.outputs.export import FORMAT, load_model, predict_song
from sssl_dist.outputs.predict import (
    FILES_PER_DECODE_TASK,
    balanced_order,
    decode_dataset,
    file_key,
    find_audio,
    output_names,
    run_predict,
)

REPO = Path(__file__).resolve().parents[1]


def make_model(path: Path, task: str = "quadrant", seed: int = 0, **override) -> Path:
    """A model.sssl as export_model writes it: random small_cnn weights, an SVM fit on
    random Eq. 10 features (3 songs per class). `override` replaces artifact entries;
    `config` overrides are merged into the config."""
    cfg_over = override.pop("config", {})
    cfg = SSSLConfig(task=task, seed=seed)
    torch.manual_seed(seed)
    net = build_model(cfg.backbone, task_of(cfg).num_outputs, cfg.dropout)
    k = task_of(cfg).num_outputs
    rng = np.random.default_rng(seed)
    art = {
        "format": FORMAT,
        "config": json.dumps({**to_dict(cfg), **cfg_over}),
        "feature_config": json.dumps(to_dict(FeatureConfig())),
        "label_names": list(task_of(cfg).output_names),
        "state_dict": net.state_dict(),
        "svm_features": torch.from_numpy(rng.random((3 * k, 7 * k))),
        "svm_labels": torch.arange(3 * k) % k,
    }
    art.update(override)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(art, path)
    return path


@pytest.fixture(scope="module")
def quadrant_model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("models") / "quad" / "model.sssl")


def segments(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "segments")


# ----------------------------------------------------------------------------- model file
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"svm_labels": torch.tensor([-1] * 12)}, r"svm_labels must be in 0\.\.3 .* got -1"),
        ({"svm_labels": torch.arange(12) % 4 + torch.tensor([99] + [0] * 11)}, "got 99"),
        ({"label_names": ["Q4", "Q3", "Q2", "Q1"]}, "label_names .* do not match task"),
        ({"config": {"hop_seconds": 0}}, "hop_seconds"),
        ({"svm_features": torch.zeros(12, 5)}, r"svm_features must be \[songs, 28\]"),
        ({"svm_features": torch.full((12, 28), float("nan"))}, "NaN"),
        ({"state_dict": build_model("small_cnn", 2, 0.5).state_dict()}, "weights do not fit"),
        ({"feature_config": json.dumps({**to_dict(FeatureConfig()), "n_mels": 0})}, "n_mels"),
        ({"config": {"task": "mood"}}, "task"),
        ({"svm_labels": None}, "must be tensors"),
    ],
)
def test_bad_model_file_gives_one_line_value_error(tmp_path, override, message):
    path = make_model(tmp_path / "model.sssl", **override)
    with pytest.raises(ValueError, match=message) as exc:
        load_model(path)
    text = str(exc.value)
    assert "\n" not in text and "invalid model file" in text and str(path) in text
    # The CLI turns it into exit 2 with that one line, before any audio is touched.
    write_audio(tmp_path / "a.wav")
    assert main(["predict", str(path), str(tmp_path / "a.wav"), "--out", str(tmp_path / "o")]) == 2


def test_good_model_file_loads(quadrant_model):
    m = load_model(quadrant_model)
    assert m.label_names == ["Q1", "Q2", "Q3", "Q4"] and m.cfg.hop_seconds == 1


# ----------------------------------------------------------------------------- inputs
def test_inputs_from_folders_and_manifest(tmp_path):
    for rel in ("b/x.wav", "a/y.FLAC", "a/deep/z.ogg", "a/notes.txt", "c.aif"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "list.csv").write_text("path,label\nb/x.wav,1\n/abs/q.mp3,2\n")
    found = find_audio([tmp_path / "a", tmp_path / "list.csv", tmp_path / "b", tmp_path / "c.aif"])
    assert found == [
        str(tmp_path / "a/deep/z.ogg"),
        str(tmp_path / "a/y.FLAC"),
        str(tmp_path / "b/x.wav"),  # the manifest's and the folder's x.wav: kept once
        "/abs/q.mp3",
        str(tmp_path / "c.aif"),
    ]
    (tmp_path / "bad.csv").write_text("file\nx.wav\n")
    with pytest.raises(ValueError, match="has no 'path' column"):
        find_audio([tmp_path / "bad.csv"])
    (tmp_path / "empty.csv").write_text("path,label\n")  # the column is there, no row is
    with pytest.raises(ValueError, match="empty.csv has a header but no rows"):
        find_audio([tmp_path / "empty.csv"])


def test_output_names_are_safe_and_distinct():
    long = "x" * 250
    weird = os.fsdecode(b"caf\xe9 \xff.wav")
    names = output_names(
        [f"a/{long}.wav", f"b/{long}1.wav", "a/s.wav", "b/s.wav", weird, "q/é?*.mp3"]
    )
    assert len(set(names)) == len(names)
    assert all(len(n.encode()) < 120 and "/" not in n and "?" not in n for n in names)
    assert names[2:4] == ["a__s", "b__s"]
    assert file_key(weird) == "caf\\xe9 \\xff.wav"


# ----------------------------------------------------------------------------- the pipeline
def bad_and_odd_files(root: Path) -> tuple[dict[Path, float], dict[str, str]]:
    """Nested folders with odd but good names (and their durations), and bad files with the
    words their reason must hold."""
    good = {
        root / "one" / "song.wav": 7.0,
        root / "two" / "song.wav": 6.0,  # same stem, other folder
        root / "two" / "deep" / "with spaces ünïcode 音楽.flac": 5.0,
        root / ("L" * 240 + ".wav"): 5.0,  # a 250-character file name
    }
    for i, (path, seconds) in enumerate(good.items()):
        write_audio(path, seconds, freq=220.0 * (i + 1))
    long_song = root / "two" / "long stereo.flac"  # minutes long, stereo, 44.1 kHz
    sf.write(long_song, tone(200.0, 44100, stereo=True), 44100)
    good[long_song] = 200.0
    sf.write(root / "rate16k.wav", tone(7.0, 16000), 16000)
    good[root / "rate16k.wav"] = 7.0
    odd = Path(os.fsdecode(bytes(root) + b"/latin1-caf\xe9.wav"))  # not UTF-8
    os.rename(write_audio(root / "latin1.wav", 5.0), os.fsencode(odd))
    good[odd] = 5.0
    bad = {}
    (root / "text.mp3").write_text("this is not audio\n" * 20)
    bad["text.mp3"] = "a text file, not audio"
    full = (root / "one" / "song.wav").read_bytes()
    (root / "truncated.wav").write_bytes(full[:30])
    bad["truncated.wav"] = "WAV"
    sf.write(root / "silent.wav", np.zeros(22050 * 5), 22050)
    bad["silent.wav"] = "silent"
    write_audio(root / "short.wav", 1.5)
    bad["short.wav"] = "too short for one 3 s segment"
    sf.write(root / "huge.wav", tone(5.0) * 1e30, 22050, subtype="FLOAT")
    bad["huge.wav"] = ""  # refused (NaN log-mel, or absurd amplitude), whatever the words
    os.mkfifo(root / "pipe.mp3")  # listed with what it is, never opened (that would block)
    bad["pipe.mp3"] = "a named pipe (FIFO), not an audio file"
    os.symlink(root / "moved away.wav", root / "link.wav")
    bad["link.wav"] = "a broken symbolic link"
    return good, bad


def test_decode_groups_spread_the_long_files_and_keep_every_file_once():
    # Eight minutes-long files side by side (as in a folder), then 300 short ones: cut in 10
    # equal runs as they come, one run would hold all eight and the others wait for it.
    sizes = [600] * 8 + [10 + i % 7 for i in range(300)]
    order = balanced_order(sizes, 10)
    assert sorted(order) == list(range(len(sizes)))
    runs = np.array_split(np.array(order), 10)  # how ray.data.from_items cuts the blocks
    assert all(sum(i < 8 for i in run) <= 1 for run in runs)
    totals = [sum(sizes[i] for i in run) for run in runs]
    assert max(totals) - min(totals) <= 600 + 16  # at most one long and one short file apart
    assert balanced_order([], 1) == [] and balanced_order([5], 1) == [0]


def test_decode_dataset_has_groups_of_files_and_every_row(tmp_path, ray_session):
    files = [write_audio(tmp_path / f"s{i}.wav", 3.0 if i else 40.0) for i in range(70)]
    todo = [(file_key(str(f)), str(f)) for f in files]
    ds = decode_dataset(todo, to_dict(FeatureConfig()), max_seconds=None)
    blocks = ds.materialize().num_blocks()
    assert blocks >= -(-len(files) // FILES_PER_DECODE_TASK) and blocks < len(files)
    rows = ds.select_columns(["file", "error", "duration_s"]).take_all()
    assert sorted(r["file"] for r in rows) == sorted(k for k, _ in todo)
    assert not any(r["error"] for r in rows)


def test_directory_with_odd_names_and_bad_files(quadrant_model, tmp_path, ray_session, caplog):
    good, bad = bad_and_odd_files(tmp_path / "in")
    out = tmp_path / "out"
    assert main(["predict", str(quadrant_model), str(tmp_path / "in"), "--out", str(out)]) == 1
    seg = segments(out)
    keys = {file_key(str(p)) for p in good}
    assert set(seg["file"]) == keys  # every good file, ...
    counts = seg.groupby("file").size().to_dict()
    for p, seconds in good.items():  # ... each with n = floor((d - L) / hop) + 1 segments
        assert counts[file_key(str(p))] == int(seconds - 3) + 1
    probs = seg[["p_Q1", "p_Q2", "p_Q3", "p_Q4"]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(seg["p_valence_pos"], seg["p_Q1"] + seg["p_Q4"], atol=1e-6)
    np.testing.assert_allclose(seg["p_arousal_pos"], seg["p_Q1"] + seg["p_Q2"], atol=1e-6)
    failures = pd.read_parquet(out / "failures")
    reasons = {Path(f).name: r for f, r in zip(failures["file"], failures["reason"], strict=True)}
    assert set(reasons) == set(bad)
    for name, words in bad.items():
        assert words in reasons[name], (name, reasons[name])
        assert f"{name}: skipped:" in caplog.text
    # Small run: per-file outputs with safe, distinct names beside predictions.csv.
    table = pd.read_csv(out / "predictions.csv")
    assert len(table) == len(good) and table["output"].is_unique
    assert list(table.columns[:6]) == [
        "file",
        "output",
        "decision",
        "probability",
        "duration_s",
        "segments",
    ]
    for name in table["output"]:
        assert (out / f"{name}.json").is_file() and (out / f"{name}.png").is_file()
    files = pd.read_parquet(out / "files")
    assert (
        set(files["output"]) == set(table["output"])
        and files["decision"].isin(["Q1", "Q2", "Q3", "Q4"]).all()
    )


def test_several_models_in_one_pass_match_the_single_file_path(tmp_path, ray_session):
    models = [
        make_model(tmp_path / "m" / "quadrant.sssl"),
        make_model(tmp_path / "m" / "valence.sssl", task="valence", seed=1),
        make_model(tmp_path / "m" / "arousal.sssl", task="arousal", seed=2),
    ]
    songs = [
        write_audio(tmp_path / "in" / f"s{i}.ogg", 8.0 + i, freq=200.0 * (i + 1)) for i in range(3)
    ]
    # A file too short for a segment in the actor's batches: each song probability must still
    # reach its own file when the SVM runs once for the batch.
    short = write_audio(tmp_path / "in" / "short.ogg", 1.0, freq=300.0)
    out = tmp_path / "out"
    inputs = [str(songs[0]), str(short), *map(str, songs[1:])]
    summary = run_predict([str(m) for m in models], inputs, out, batch_files=4)
    assert (summary.predicted, summary.failed) == (4, 1)  # failures included
    seg = segments(out)
    files = pd.read_parquet(out / "files")
    assert sorted(seg["model"].unique()) == ["arousal", "quadrant", "valence"]
    for m in models:  # each model's probabilities equal the one-file, one-process path
        loaded = load_model(m)
        for s in songs:
            ref = predict_song(loaded, s)
            rows = seg[(seg["model"] == m.stem) & (seg["file"] == str(s))].sort_values("start_s")
            got = rows[[f"p_{lab}" for lab in loaded.label_names]].to_numpy()
            want = np.array([[x[lab] for lab in loaded.label_names] for x in ref["segments"]])
            np.testing.assert_allclose(got, want, atol=1e-6)
            row = files[(files["model"] == m.stem) & (files["file"] == str(s))]
            assert row["decision"].tolist() == [ref["decision"]]
            np.testing.assert_allclose(row["probability"], ref["probability"], atol=1e-9)
    valence = seg[seg["model"] == "valence"]
    assert valence["p_arousal_pos"].isna().all()
    np.testing.assert_allclose(valence["p_valence_pos"], valence["p_positive"], atol=1e-6)
    assert len(files) == 9 and set(files["output"]) >= {"valence/s0", "quadrant/s2"}
    assert (out / "valence" / "s0.json").is_file()


def test_finished_run_is_a_no_op_and_other_models_are_refused(
    quadrant_model, tmp_path, ray_session
):
    # A song named like the run's own record: its run.json must not be taken for the record.
    songs = [str(write_audio(tmp_path / f"{name}.wav", 5.0)) for name in ("run", "s1", "s2")]
    out = tmp_path / "out"
    run_predict([str(quadrant_model)], songs, out)
    assert json.loads((out / "run.json").read_text())["file"] == songs[0]
    before = sorted(p.name for p in (out / "segments").iterdir())
    again = run_predict([str(quadrant_model)], songs, out, start_ray=pytest.fail)
    assert (again.skipped, again.predicted) == (3, 0)
    assert sorted(p.name for p in (out / "segments").iterdir()) == before
    assert len(pd.read_csv(out / "predictions.csv")) == 3
    other = make_model(tmp_path / "other.sssl", seed=5)
    with pytest.raises(ValueError, match="holds predictions of other models"):
        run_predict([str(other)], songs, out)
    # A second `sssl predict` into the same directory while one runs is refused at once.
    from filelock import FileLock

    from sssl_dist.files.outdir import DirectoryBusy

    held = FileLock(str(out / ".predict.lock"))
    held.acquire()
    try:
        with pytest.raises(DirectoryBusy, match="another `sssl predict` is writing"):
            run_predict([str(quadrant_model)], songs, out, start_ray=pytest.fail)
    finally:
        held.release()
    assert run_predict([str(quadrant_model)], songs, out, start_ray=pytest.fail).skipped == 3


def test_killed_run_resumes_with_every_file_exactly_once(quadrant_model, tmp_path, ray_session):
    """SIGKILL the CLI once parts exist; the re-run finishes the rest: every good file once,
    the bad one with its reason, nothing duplicated."""
    n = 24
    songs = [
        write_audio(tmp_path / "in" / f"d{i % 4}" / f"song {i}.wav", 5.0 + i % 3) for i in range(n)
    ]
    (tmp_path / "in" / "bad.mp3").write_text("not audio")
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "sssl_dist.cli",
        "predict",
        str(quadrant_model),
        str(tmp_path / "in"),
    ]
    cmd += ["--out", str(out), "--part-files", "2", "--batch-files", "2"]
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while not list((out / "done").glob("part-*.json")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = len(pd.read_parquet(out / "files")) if list((out / "files").glob("part-*")) else 0
    assert 0 < first < n, "the kill should land mid-run"
    assert main(["predict", str(quadrant_model), str(tmp_path / "in"), "--out", str(out)]) == 1
    seg, files = segments(out), pd.read_parquet(out / "files")
    assert sorted(files["file"]) == sorted(str(s) for s in songs)  # each good file exactly once
    assert not seg.duplicated(["file", "model", "start_s"]).any()
    assert len(seg) == sum(int(sf.info(s).duration - 3) + 1 for s in songs)
    failures = pd.read_parquet(out / "failures")
    assert failures["file"].tolist() == [str(tmp_path / "in" / "bad.mp3")]
    assert sorted(pd.read_csv(out / "predictions.csv")["file"]) == sorted(files["file"])
    assert not [p for t in ("segments", "files", "failures", "done") for p in (out / t).glob(".*")]


def test_smoke_and_a_failing_plot_does_not_stop_the_run(
    quadrant_model, tmp_path, ray_session, monkeypatch
):
    """--smoke: 2 files, their first 30 s. An error writing one file's plot (here a full
    disk) is that file's failure row; its predictions stay and the run goes on."""
    import sssl_dist.outputs.report

    songs = [str(write_audio(tmp_path / f"s{i}.wav", 60.0)) for i in range(3)]
    real_plot = sssl_dist.outputs.report.plot_emotion_curve

    def plot(result, path):
        if result["file"] == songs[0]:
            raise OSError(28, "No space left on device")
        real_plot(result, path)

    monkeypatch.setattr(sssl_dist.outputs.report, "plot_emotion_curve", plot)
    out = tmp_path / "out"
    assert main(["predict", str(quadrant_model), *songs, "--out", str(out), "--smoke"]) == 1
    counts = segments(out).groupby("file").size()
    assert counts.to_dict() == {songs[0]: 28, songs[1]: 28}  # 30 s of L = 3 s, hop 1 s
    failures = pd.read_parquet(out / "failures")
    assert failures["file"].tolist() == [songs[0]]
    assert "per-file outputs not written: OSError" in failures["reason"][0]
    assert (out / "s1.png").is_file()


def test_a_byte_flipped_inside_a_weight_is_refused_on_load(tmp_path):
    """torch.load never checks the CRC-32s that torch.save stores: the damaged file below loads
    with one weight changed. load_model reads every entry against its checksum first."""
    path = make_model(tmp_path / "model.sssl")
    weights = torch.load(path, weights_only=True)["state_dict"]
    name = next(k for k, v in weights.items() if v.dtype == torch.float32 and v.numel() > 100)
    raw = path.read_bytes()
    at = raw.index(weights[name].numpy().tobytes()) + 4 * 17 + 3  # a float's exponent byte
    damaged = tmp_path / "damaged.sssl"
    damaged.write_bytes(raw[:at] + bytes([raw[at] ^ 0x40]) + raw[at + 1 :])
    flipped = torch.load(damaged, weights_only=True)["state_dict"][name]  # the premise
    assert not torch.equal(flipped, weights[name])
    with pytest.raises(ValueError, match=r"damaged\.sssl is damaged: its entry .*/data/\d+ does "
                       r"not match its CRC-32 checksum") as err:  # fmt: skip
        load_model(damaged)
    assert "\n" not in str(err.value)
    load_model(path)  # the intact file loads
    write_audio(tmp_path / "a.wav")
    assert (
        main(["predict", str(damaged), str(tmp_path / "a.wav"), "--out", str(tmp_path / "o")]) == 2
    )
