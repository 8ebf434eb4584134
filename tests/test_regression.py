"""The regression tasks (method/tasks/regression.py): each SSSL adaptation on planted numbers,
the metrics against scikit-learn and a hand-computed CCC, the targets' scales."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import mean_squared_error, r2_score

from sssl_dist.config import SSSLConfig
from sssl_dist.method.tasks import task_named
from sssl_dist.method.tasks.regression import (
    ValueTargets,
    ccc,
    from_common,
    metrics_of_sums,
    moment_sums,
    rdrop_mse,
    regression_metrics,
    squared_errors,
    teacher_targets,
    to_common,
)


def test_targets_go_to_the_common_scale_and_back():
    assert to_common(1.0, (1.0, 9.0)) == -1.0 and to_common(5.0, (1.0, 9.0)) == 0.0
    assert to_common(0.75, (0.0, 1.0)) == 0.5
    assert np.allclose(from_common([-1.0, 0.0, 0.5], (1.0, 9.0)), [1.0, 5.0, 7.0])
    t = ValueTargets(("valence", "arousal"), "quadrant")
    song = {"valence_value": 7.0, "arousal_value": 3.0, "value_scale": [1, 9]}
    assert t.song_target(song) == [0.5, -0.5]
    # Per-second truth: the mean of the segment's seconds; unknown (NaN) if one is unrated.
    song |= {"valence_curve": [None, 0.2, 0.4, 0.6], "arousal_curve": [0.0, -0.2, -0.4, 0.0]}
    song["curve_scale"] = [-1, 1]
    assert np.allclose(t.segment_truth(song, 1, 3), [0.4, -0.2])
    valence, arousal = t.segment_truth(song, 0, 2)
    assert math.isnan(valence) and arousal == pytest.approx(-0.1)
    with pytest.raises(ValueError, match="no continuous valence/arousal rating"):
        t.song_target({"song_id": "x", "valence": 1})


def test_noise_is_a_rating_on_the_other_side_of_the_midpoint():
    t = ValueTargets(("valence", "arousal"), "quadrant")
    label = np.array([[0.5, 0.5], [0.5, 0.5], [0.5, -0.5]])
    truth = np.array([[0.1, 0.9], [-0.1, 0.9], [np.nan, 0.0]])
    assert t.wrong(label, truth).tolist() == [0, 1, -1]


def test_per_segment_loss_is_the_squared_error_summed_over_outputs():
    out = torch.tensor([[0.0, 1.0], [0.5, -0.5]])
    y = torch.tensor([[1.0, 1.0], [0.0, 0.5]])
    assert torch.allclose(squared_errors(out, y), torch.tensor([1.0, 0.25 + 1.0]))


def test_pseudo_targets_are_the_teachers_predictions_unsharpened():
    p = torch.tensor([[0.3, -0.2]], requires_grad=True)
    got = teacher_targets(p)
    assert torch.equal(got, p.detach()) and not got.requires_grad
    task = task_named("va_reg")
    assert torch.equal(task.pseudo_targets(p, SSSLConfig(temperature=0.1)), p.detach())


def test_rdrop_consistency_is_the_mean_squared_difference():
    a = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 3.0]])
    assert float(rdrop_mse(a, b)) == pytest.approx((1.0 + 4.0) / 2)
    assert float(rdrop_mse(a[:0], b[:0])) == 0.0


def test_the_step_mixes_inputs_and_targets_with_one_delta():
    """With every segment in X and no dropout partner, the step's mixed loss equals the MSE
    of the network on the mixed inputs against the targets mixed with the same δ."""
    from sssl_dist.method.equations import mixup

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 2))
    x, y = torch.randn(4, 1, 2, 3), torch.rand(4, 2) * 2 - 1
    cfg = SSSLConfig(method="sssl-nokl", mixup_alpha=0.75)
    task = task_named("va_reg")
    out = task.step_loss(net, net, x, y, torch.ones(4), cfg, torch.Generator().manual_seed(3))
    mx, my, delta = mixup(x, y, 0.75, torch.Generator().manual_seed(3))
    assert 0.5 <= delta < 1.0
    with torch.no_grad():
        expected = float(((net(mx) - my) ** 2).sum(-1).mean())
    assert out.l_mix == pytest.approx(expected, rel=1e-6)
    assert out.l_kl == 0.0 and out.n_clean == 4 and out.n_noisy == 0


def test_metrics_agree_with_scikit_learn_and_a_hand_computed_ccc():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.5, 2.0, 2.5, 5.0])
    m = regression_metrics(y, p)
    assert m["r2"] == pytest.approx(r2_score(y, p))
    assert m["rmse"] == pytest.approx(math.sqrt(mean_squared_error(y, p)))
    # By hand: mean y 2.5, mean p 2.75; var y 1.25, var p 7.25 / 4 = 1.8125; cov 5.5 / 4 =
    # 1.375. CCC = 2 * 1.375 / (1.25 + 1.8125 + 0.25^2) = 2.75 / 3.125 = 0.88.
    assert m["ccc"] == pytest.approx(0.88) and ccc(y, p) == m["ccc"]
    assert m["pearson"] == pytest.approx(1.375 / math.sqrt(1.25 * 1.8125))
    # The rank-summable form gives the same figures, and skips unknown targets.
    sums = moment_sums(np.append(p, 9.0), np.append(y, np.nan))
    for key, value in metrics_of_sums(sums).items():
        assert value == pytest.approx(m[key]), key


def test_song_level_svr_and_mean_are_reported_on_the_data_sets_scale():
    task = task_named("valence_reg")
    rng = np.random.default_rng(0)
    songs, preds = {}, {}
    for i in range(12):
        v = float(rng.uniform(1, 9))
        songs[f"s{i}"] = {
            "song_id": f"s{i}",
            "valence_value": v,
            "arousal_value": 5.0,
            "value_scale": [1, 9],
            "valence": int(v > 5),
        }
        preds[f"s{i}"] = (to_common(v, (1, 9)) + rng.normal(0, 0.05, (5, 1))).tolist()
    ids = {"train": [f"s{i}" for i in range(8)], "val": [], "test": [f"s{i}" for i in range(8, 12)]}
    out = task.song_results(SSSLConfig(task="valence_reg"), songs, preds, ids)
    assert out["scale"] == [1, 9] and out["outputs"] == ["valence"]
    truth = [songs[s]["valence_value"] for s in ids["test"]]
    assert np.allclose([out["test_true"][s][0] for s in ids["test"]], truth)
    assert out["test_mean_r2"] > 0.9  # the plain mean of near-exact segment predictions
    assert set(out) >= {"test_r2", "test_ccc", "test_rmse", "test_pearson", "test_valence_r2"}


@pytest.fixture(scope="module")
def valued_shards(shard_dir, tmp_path_factory):
    """The generated corpus's shards with continuous ratings in a copy of the manifest (the
    corpus writes none yet): each song's static V/A is its quadrant's centre on a 1-9 scale,
    and its per-second curves on [-1, 1] follow its per-second quadrants, so the segments'
    truth and the split's noise are those of the classification tasks."""
    import json
    import shutil

    from sssl_dist.data.records import VA_OF_QUADRANT
    from sssl_dist.data.segments import ShardSet

    copy = tmp_path_factory.mktemp("valued") / "shards"
    shutil.copytree(shard_dir, copy, ignore=shutil.ignore_patterns("mel_cache"))
    manifest = json.loads((copy / "manifest.json").read_text())
    for song in manifest["songs"]:
        song |= {"value_scale": [1, 9], "curve_scale": [-1, 1]}
        song["valence_value"] = 3.0 + 4.0 * song["valence"]
        song["arousal_value"] = 3.0 + 4.0 * song["arousal"]
        seconds = [VA_OF_QUADRANT[q] for q in song["truth"]]
        song["valence_curve"] = [0.5 if v else -0.5 for v, _ in seconds]
        song["arousal_curve"] = [0.5 if a else -0.5 for _, a in seconds]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return ShardSet(copy)


def test_a_regression_fold_trains_end_to_end_on_a_tiny_corpus(valued_shards):
    """Warm-up, the loss pass, the GMM split, an SSSL epoch and the song level, on one rank
    without Ray, for the two-output task."""
    from sssl_dist.data.folds import fold_song_ids
    from sssl_dist.method.split import split_segments
    from sssl_dist.rank.epoch import loss_pass, segment_accuracy, song_probabilities, train_epoch
    from sssl_dist.rank.train import build_worker

    shards = valued_shards
    cfg = SSSLConfig(task="va_reg", epochs=2, warmup_epochs=1, batch_size=32, n_folds=2)
    task = task_named("va_reg")
    ids = fold_song_ids(shards, cfg, 0, task.targets)
    torch.set_num_threads(1)
    w, mels, by_id = build_worker(cfg, shards, ids)
    assert w.table.label.shape == (len(w.table), 2) and w.table.label.dtype == np.float32
    warm = train_epoch(w, None, 0)
    losses = loss_pass(w).numpy()
    assert losses.shape == (len(w.table),) and np.isfinite(losses).all()
    split, _ = split_segments(cfg, w.table, losses, 1)
    sssl = train_epoch(w, split.clean_w, 1)
    assert np.isfinite([warm["l_mix"], sssl["l_mix"], sssl["l_kl"]]).all()
    val = segment_accuracy(w)
    assert {"val_seg_r2", "val_seg_ccc", "val_seg_rmse", "val_seg_r2_truth"} <= set(val)
    preds = song_probabilities(w, mels, by_id, sorted(s for v in ids.values() for s in v))
    out = task.song_results(cfg, by_id, preds, ids)
    assert out["scale"] == [1, 9] and out["outputs"] == ["valence", "arousal"]
    assert np.isfinite([out["test_rmse"], out["test_mean_rmse"]]).all()


def test_a_regression_fold_trains_under_ddp_with_the_driver_side_split(
    valued_shards, corpus, tmp_path, ray_session
):
    """Two DDP workers, the GMM fitted by the driver's split service on the gathered squared
    errors, every SSSL epoch scored against the per-second truth, song results on the data
    set's scale. The errors come from out-of-sample scorers (split_network: out_of_sample),
    which train under DDP beside the network and catch up on the warm-up at the first split."""
    from sssl_dist.driver.run import run_fold
    from sssl_dist.files.checkpoint import load_state

    cfg = SSSLConfig(
        task="va_reg",
        epochs=3,
        warmup_epochs=1,
        batch_size=32,
        n_folds=2,
        gloo_timeout_s=60,
        split_network="out_of_sample",
    )
    run = run_fold(cfg, valued_shards, 0, storage_path=tmp_path, name="reg", workers=2)
    sssl = run.history[cfg.warmup_epochs :]
    assert all(h["gathered"]["gathered"] == h["n_train"] for h in sssl)
    # Both scorers trained as many epochs as the network had when it was last split.
    state = load_state(run.checkpoint.path)
    assert [a["epochs_done"] for a in state["aux"]] == [cfg.epochs - 1] * cfg.scorer_parts
    assert all(0.0 <= h["noise_auc"] <= 1.0 and h["n_clean"] > 0 for h in sssl)
    assert all(np.isfinite(h["l_kl"]) and h["l_kl"] > 0 for h in sssl)  # R-Drop's MSE over U
    assert run.result["scale"] == [1, 9]
    for key in ("test_r2", "test_ccc", "test_rmse", "test_pearson", "test_mean_r2"):
        assert np.isfinite(run.result[key]), key
    assert "val_seg_ccc_truth" in run.result
    # The exported model predicts ratings on the 1-9 scale, and names it.
    from sssl_dist.outputs.export import load_model, predict_song

    model = load_model(run.export(valued_shards, tmp_path / "va.sssl"))
    assert model.scale == [1.0, 9.0] and model.label_names == ["valence", "arousal"]
    song = next(p for p in corpus.rglob("*") if p.suffix in (".wav", ".flac", ".ogg"))
    doc = predict_song(model, song)
    assert doc["scale"] == [1.0, 9.0] and doc["probability"] is None
    assert set(doc["song_values"]) == {"valence", "arousal"}
    assert "scale 1-9" in doc["decision"] and {"valence", "arousal"} <= set(doc["segments"][0])


def test_compare_gives_regression_figures_the_statistics_of_accuracy(valued_shards):
    """`sssl compare`'s summary on planted fold results of two regression arms: every figure
    gets the corrected t, CI, Bayesian ROPE and a verdict; RMSE is compared as its reduction
    with its ROPE in the 1-9 scale's unit; the markdown shows the task's own table."""
    from sssl_dist.driver.compare import Design, summarise_comparison
    from sssl_dist.outputs.tables import comparison_markdown

    design = Design({"inherit": {"method": "inherit"}, "sssl": {}}, ("va_reg",), n_folds=5)

    def fold(r2: float, rmse: float) -> dict:
        same = ("test_ccc", "test_pearson", "test_mean_r2", "val_seg_ccc_truth")
        return {"test_r2": r2, "test_rmse": rmse, "noise_auc": 0.6, "evaluated_epoch": 2} | {
            k: r2 for k in same
        }

    a = {"per_fold": {f: fold(0.30 + 0.01 * f, 1.50) for f in range(5)}}
    b = {"per_fold": {f: fold(0.40 + 0.01 * f + 0.002 * (f % 2), 1.30) for f in range(5)}}
    summaries = {"va_reg/inherit": a, "va_reg/sssl": b}
    base = SSSLConfig(task="va_reg", epochs=3, warmup_epochs=1)
    out = summarise_comparison(base, valued_shards, design, summaries)
    metrics = out["tasks"]["va_reg"]["pairs"][0]["metrics"]
    assert list(metrics)[:4] == ["test_r2", "test_ccc", "test_rmse", "test_pearson"]
    r2 = metrics["test_r2"]
    assert r2["stats"]["verdict"] == "helps" and r2["verdict"].startswith("helps by +0.10")
    rmse = metrics["test_rmse"]
    assert rmse["stats"]["mean"] == pytest.approx(0.2)  # the reduction, 1.5 -> 1.3
    assert rmse["stats"]["rope"] == pytest.approx(0.08)  # 1 % of the 1-9 scale's width
    assert "on the [1, 9] scale" in rmse["verdict"] and rmse["shown"]["lower_is_better"]
    assert metrics["val_seg_ccc_truth"]["shown"]["name"] == "segment CCC against the truth"
    text = comparison_markdown(out)
    assert "| va_reg: arm | test_r2 |" in text and "song RMSE reduction on the [1, 9] scale" in text
    # Regression only: each figure's ROPE in its own unit, and no accuracy table's % wording.
    rope = "ROPE ±0.01 for R², CCC and r, ±0.01 of the scale's width for RMSE, ±1.0 points for "
    assert rope + "the noise AUC" in text and "accuracy" not in text and ", %" not in text


def make_regression_model(path, seed: int = 0):
    """A va_reg model.sssl as export_model writes it: random small_cnn weights, an SVR per
    output fitted on random Eq. 10 features and ratings on [-1, 1], the 1-9 scale named."""
    import json

    from sssl_dist.config import FeatureConfig, to_dict
    from sssl_dist.method.models import build_model
    from sssl_dist.outputs.export import FORMAT

    cfg = SSSLConfig(task="va_reg", seed=seed)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    art = {
        "format": FORMAT,
        "config": json.dumps(to_dict(cfg)),
        "feature_config": json.dumps(to_dict(FeatureConfig())),
        "label_names": ["valence", "arousal"],
        "state_dict": build_model(cfg.backbone, 2, cfg.dropout).state_dict(),
        "svm_features": torch.from_numpy(rng.random((8, 14))),
        "svm_labels": torch.from_numpy(rng.uniform(-1, 1, (8, 2)).astype(np.float32)),
        "scale": [1, 9],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(art, path)
    return path


def test_predict_writes_continuous_ratings_per_segment_and_per_file(tmp_path, ray_session):
    """`sssl predict` with a regression model beside a classifier: the regression rows carry
    valence and arousal on the model's scale (scale_low, scale_high), equal to the one-file
    path; the classifier's rows keep their probabilities."""
    import pandas as pd
    from conftest import write_audio
    from test_predict import make_model

    from sssl_dist.outputs.export import load_model, predict_song
    from sssl_dist.outputs.predict import run_predict

    reg = make_regression_model(tmp_path / "m" / "va.sssl")
    quad = make_model(tmp_path / "m" / "quadrant.sssl")
    songs = [
        write_audio(tmp_path / "in" / f"s{i}.wav", 7.0 + i, freq=220.0 * (i + 1)) for i in range(2)
    ]
    out = tmp_path / "out"
    summary = run_predict([str(reg), str(quad)], [str(s) for s in songs], out, batch_files=2)
    assert (summary.predicted, summary.failed) == (2, 0)
    seg, files = pd.read_parquet(out / "segments"), pd.read_parquet(out / "files")
    loaded = load_model(reg)
    for s in songs:
        ref = predict_song(loaded, s)
        rows = seg[(seg["model"] == "va") & (seg["file"] == str(s))].sort_values("start_s")
        want = np.array([[x["valence"], x["arousal"]] for x in ref["segments"]])
        np.testing.assert_allclose(rows[["valence", "arousal"]].to_numpy(), want, atol=1e-5)
        assert (rows["scale_low"] == 1).all() and (rows["scale_high"] == 9).all()
        assert rows["p_Q1"].isna().all()
        row = files[(files["model"] == "va") & (files["file"] == str(s))]
        assert row["decision"].tolist() == [ref["decision"]] and row["probability"].isna().all()
        np.testing.assert_allclose(
            row[["valence", "arousal"]].to_numpy()[0],
            [ref["song_values"]["valence"], ref["song_values"]["arousal"]],
            atol=1e-9,
        )
    quad_rows = seg[seg["model"] == "quadrant"]
    assert quad_rows["valence"].isna().all()
    np.testing.assert_allclose(quad_rows[["p_Q1", "p_Q2", "p_Q3", "p_Q4"]].sum(1), 1, atol=1e-5)
    doc = json.loads((out / "va" / "s0.json").read_text())
    assert doc["scale"] == [1.0, 9.0] and (out / "va" / "s0.png").is_file()


def test_a_regression_task_on_shards_without_ratings_is_refused_before_ray(shard_dir):
    """The generated corpus has no static ratings: one line names the song, before Ray."""
    from sssl_dist.data.segments import ShardSet
    from sssl_dist.driver.fold import check_shards

    with pytest.raises(ValueError, match=r"has no continuous valence rating") as err:
        check_shards(SSSLConfig(task="valence_reg"), ShardSet(shard_dir))
    assert "\n" not in str(err.value)


def test_a_step_option_regression_does_not_implement_is_refused():
    from sssl_dist.method.tasks import task_named

    with pytest.raises(ValueError, match=r"implements sssl_step 'full' only, got 'filter'"):
        task_named("va_reg").check_config(SSSLConfig(task="va_reg", sssl_step="filter"))


def test_regression_compare_and_predict_end_to_end(
    valued_shards, corpus, tmp_path, ray_session, capsys
):
    """`sssl compare` of inherit against SSSL on va_reg (2 folds, trained for real), then
    `sssl predict` with one of its exported models: every regression figure gets a verdict,
    and the predictions are ratings on the 1-9 scale."""
    import pandas as pd

    from sssl_dist.cli import main

    out = tmp_path / "cmp"
    cmd = ["compare", "--shards", str(valued_shards.root), "--workers", "0", "--out", str(out),
           "--tasks", "va_reg", "--arm", "inherit", "method=inherit", "--arm", "sssl",
           "--folds", "2", "--set", "epochs=2", "warmup_epochs=1", "batch_size=32"]  # fmt: skip
    assert main(cmd) == 0
    comparison = json.loads((out / "comparison.json").read_text())
    (pair,) = comparison["tasks"]["va_reg"]["pairs"]
    for key in ("test_r2", "test_ccc", "test_rmse", "test_pearson", "val_seg_ccc_truth"):
        assert pair["metrics"][key]["stats"]["verdict"] in (
            "helps", "hurts", "equivalent", "inconclusive"
        ), key  # fmt: skip
    assert "**sssl vs inherit** (song R²)" in (out / "comparison.md").read_text()
    assert "va_reg: sssl vs inherit" in capsys.readouterr().out
    for plot in ("curves.png", "gmm_losses.png"):  # the run's plots, drawn for ratings
        assert (out / "va_reg" / "sssl" / plot).is_file(), plot
    model = next(out.glob("va_reg/sssl/**/model.sssl"))
    songs = sorted(p for p in corpus.rglob("*") if p.suffix in (".wav", ".flac", ".ogg"))[:2]
    assert songs
    pred = tmp_path / "pred"
    assert main(["predict", str(model), *map(str, songs), "--out", str(pred)]) == 0
    seg = pd.read_parquet(pred / "segments")
    assert len(seg) and np.isfinite(seg[["valence", "arousal"]].to_numpy()).all()
    assert (seg["scale_low"] == 1).all() and (seg["scale_high"] == 9).all()


def test_tune_refuses_a_regression_task_it_cannot_rank():
    from tuning.sweep import check_selectable

    with pytest.raises(ValueError, match=r"ranks configurations by song accuracy, which task"):
        check_selectable(SSSLConfig(task="arousal_reg"))
    check_selectable(SSSLConfig(task="arousal"))  # classification is ranked as before


def test_a_stopped_regression_run_resumes_to_the_same_result(
    valued_shards, tmp_path, ray_session, monkeypatch
):
    """Stopped after its first SSSL epoch (what Ctrl-C asks for), the same run resumes from
    that checkpoint, Mean Teacher, split and all, to exactly the uninterrupted run's figures."""
    from pathlib import Path

    from test_tasks import run_digest

    import sssl_dist.rank.train as train_module
    from sssl_dist.driver.fit import RunStopped
    from sssl_dist.driver.run import run_fold
    from sssl_dist.files import runfiles

    cfg = SSSLConfig(task="va_reg", epochs=3, warmup_epochs=1, batch_size=32, n_folds=2)
    whole = run_fold(cfg, valued_shards, 1, storage_path=tmp_path / "a", name="r", workers=0)
    asked = []

    def stop_after_first_sssl_epoch(loop) -> bool:  # what Ctrl-C's request_stop writes
        asked.append(1)
        if len(asked) == 2:  # after epoch 1, the first SSSL epoch (teacher and split made)
            Path(loop.run_dir, runfiles.STOP).touch()
        return len(asked) == 2

    monkeypatch.setattr(train_module, "stop_requested", stop_after_first_sssl_epoch)
    with pytest.raises(RunStopped, match="stopped after an epoch, as asked"):
        run_fold(cfg, valued_shards, 1, storage_path=tmp_path / "b", name="r", workers=0)
    assert len(asked) == 2
    monkeypatch.undo()
    resumed = run_fold(cfg, valued_shards, 1, storage_path=tmp_path / "b", name="r", workers=0)
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2]
    progress = (tmp_path / "b" / "r" / runfiles.PROGRESS).read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in progress] == [0, 1, 2]  # epoch 2 alone again
    assert run_digest(resumed) == run_digest(whole)
