"""Every entry point for real, end to end, on small data: CLI, main job, predict, tune, report."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from conftest import alias_bomb, tone

from sssl_dist.cli import build_parser, main
from sssl_dist.config import SSSLConfig, from_dict, load_config
from sssl_dist.outputs.export import load_model

REPO = Path(__file__).resolve().parents[1]


def test_help_for_every_subcommand(capsys):
    for cmd in ("synth", "shard", "train", "tune", "predict", "report", "demo"):
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args([cmd, "--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        assert "--smoke" in text and "(default:" in text, cmd


def test_bad_input_exits_nonzero_with_message(tmp_path, caplog):
    assert main(["train", "--shards", str(tmp_path / "nope"), "--smoke"]) == 2
    assert "run `sssl shard` first" in caplog.text
    assert main(["train", "--shards", str(tmp_path), "--set", "taux=1"]) == 2
    assert "unknown SSSLConfig keys" in caplog.text


def test_config_yaml_and_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("tau: 0.6\nmethod: sssl-nokl\n")
    cfg = load_config(tmp_path / "c.yaml", {"epochs": "4", "bf16": "true"})
    assert (cfg.tau, cfg.method, cfg.epochs, cfg.bf16) == (0.6, "sssl-nokl", 4, True)
    with pytest.raises(ValueError, match="tau must be in"):
        load_config(None, {"tau": "1.5"})
    for shipped in (REPO / "sssl_dist/configs").glob("*.yaml"):
        load_config(shipped)  # the shipped configs stay valid


@pytest.fixture(scope="module")
def smoke_demo(tmp_path_factory, ray_session):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--smoke", "--out", str(out)]) == 0
    return out


def test_main_job_smoke_writes_comparison_and_reports(smoke_demo):
    text = (smoke_demo / "comparison.md").read_text()
    for arm in ("inherit", "sssl-paper", "sssl", "majority class"):
        assert f"| {arm} |" in text
    for pair in ("sssl vs inherit", "sssl-paper vs inherit", "sssl vs sssl-paper"):
        assert f"- **{pair}** (song accuracy): " in text
    assert "naive" in text and "paired t" in text  # it says which t it does not use
    assert (smoke_demo / "comparison.json").is_file()
    paper = yaml.safe_load((smoke_demo / "quadrant" / "sssl-paper" / "config.yaml").read_text())
    assert (paper["method"], paper["gmm_scope"], paper["eval_epoch"]) == ("sssl", "global", "last")
    for method in ("inherit", "sssl-paper", "sssl"):
        d = smoke_demo / "quadrant" / method
        for name in (
            "config.yaml",
            "metrics.json",
            "metrics.csv",
            "history.csv",
            "summary.md",
            "model.sssl",
            "confusion.png",
            "curves.png",
        ):
            assert (d / name).is_file(), (method, name)
        metrics = json.loads((d / "metrics.json").read_text())
        assert 0 <= metrics["metrics"]["test_acc"]["mean"] <= 1
    for name in ("gmm_losses.png", "split_over_epochs.png"):
        assert (smoke_demo / "quadrant" / "sssl" / name).is_file()
    assert list(
        (smoke_demo / "quadrant" / "sssl" / "ray").glob("*/tensorboard/events.out.tfevents.*")
    )


def test_model_artifact_is_weights_only_and_refits_svm(smoke_demo):
    path = smoke_demo / "quadrant" / "sssl" / "model.sssl"
    raw = torch.load(path, weights_only=True)  # would raise on any pickled object
    assert raw["format"] == "sssl-model/1" and raw["svm_features"].shape[1] == 7 * 4
    model = load_model(path)
    assert isinstance(model.cfg, SSSLConfig) and model.label_names == ["Q1", "Q2", "Q3", "Q4"]
    assert from_dict(SSSLConfig, json.loads(raw["config"])).method == "sssl"


def test_predict_any_file_and_reports_bad_ones(smoke_demo, tmp_path, caplog):
    model = smoke_demo / "quadrant" / "sssl" / "model.sssl"
    long_song = tmp_path / "long.flac"
    sf.write(long_song, tone(200.0, 44100, stereo=True), 44100)  # several minutes, stereo
    short_song = tmp_path / "short.wav"
    sf.write(short_song, tone(7.0, 16000), 16000)
    bad = tmp_path / "broken.mp3"
    bad.write_bytes(b"not audio at all")
    out = tmp_path / "pred"
    code = main(
        ["predict", str(model), str(long_song), str(bad), str(short_song), "--out", str(out)]
    )
    assert code == 1  # one input failed ...
    assert "broken.mp3: skipped: a text file, not audio" in caplog.text
    for stem, seconds in (("long", 200.0), ("short", 7.0)):  # ... the others were processed
        res = json.loads((out / f"{stem}.json").read_text())
        assert len(res["segments"]) == int(np.floor(seconds - 3)) + 1
        probs = np.array([[s[k] for k in res["labels"]] for s in res["segments"]])
        assert np.allclose(probs.sum(1), 1, atol=1e-5)
        assert res["decision"] in res["labels"] and 0 <= res["probability"] <= 1
        assert (out / f"{stem}.png").is_file() and (out / f"{stem}.segments.csv").is_file()
    assert len((out / "predictions.csv").read_text().splitlines()) == 3


def test_predict_same_stems_do_not_overwrite_and_smoke_is_short(smoke_demo, tmp_path):
    model = smoke_demo / "quadrant" / "sssl" / "model.sssl"
    a, b = tmp_path / "a" / "song.wav", tmp_path / "b" / "song.wav"
    for path, freq in ((a, 220.0), (b, 880.0)):
        path.parent.mkdir()
        sf.write(path, tone(60.0, 22050, freq=freq), 22050)
    out = tmp_path / "pred"
    assert main(["predict", str(model), str(a), str(b), str(a), "--out", str(out)]) == 0
    names = sorted(p.name for p in out.glob("*.json"))
    assert names == ["a__song.json", "b__song.json"]  # a path given twice is predicted once
    assert json.loads((out / "b__song.json").read_text())["file"] == str(b)
    # --smoke: the first 2 files, the first 30 s of each (28 segments of 3 s), for real.
    smoke = tmp_path / "smoke"
    assert (
        main(["predict", str(model), str(a), str(b), str(a), "--out", str(smoke), "--smoke"]) == 0
    )
    results = [json.loads(p.read_text()) for p in smoke.glob("*.json")]
    assert len(results) == 2 and {len(r["segments"]) for r in results} == {28}


def test_report_rebuilds_from_run_dir(smoke_demo, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(
        smoke_demo / "quadrant" / "sssl", run, ignore=shutil.ignore_patterns("*.png", "ray")
    )
    shards = str(smoke_demo / "data" / "shards")
    # --smoke: the tables only.
    (run / "summary.md").unlink()
    assert main(["report", str(run), "--shards", shards, "--smoke"]) == 0
    assert (run / "summary.md").is_file() and not list(run.glob("*.png"))
    assert main(["report", str(run), "--shards", shards]) == 0
    assert (run / "curves.png").is_file() and (run / "gmm_losses.png").is_file()
    # The plots are written before the tables, so summary.md lists them.
    assert "curves.png" in (run / "summary.md").read_text()


def test_tune_smoke_sweep_honest_selection(shard_dir, tmp_path, ray_session, caplog):
    out = tmp_path / "tune"
    args = [
        "tune",
        "--space",
        str(REPO / "tuning/spaces/smoke.yaml"),
        "--shards",
        str(shard_dir),
        "--workers",
        "1",
        "--out",
        str(out),
        "--smoke",
    ]
    assert main(args) == 0
    summary = (out / "summary.md").read_text()
    assert "Selected by validation-song accuracy (honest)" in summary
    assert "optimistic" in summary and "Table 2 view" in summary
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 3  # header + 2 configurations, each over the same fold
    assert len(list((out / "trials").glob("*.json"))) == 2
    best = load_config(out / "best_config.yaml")  # accepted by `sssl train --config`
    assert best.tau in (0.5, 0.7) and best.epochs == 2
    for name in ("metric_vs_params.png", "fold_spread.png", "split_over_epochs.png"):
        assert (out / name).is_file()
    # τ acts only after the warm-up: the first configuration keeps its warm-up, one per fold,
    # for the other (which starts from it when it is ready).
    kept = sorted(p.parent.name for p in (out / "train").glob("*/warmup"))
    assert len(kept) == 1 and all("tau-0.5-fold" in name for name in kept), kept
    # Re-running the same sweep resumes: nothing is trained again.
    before = sorted(p.stat().st_mtime_ns for p in (out / "trials").glob("*.json"))
    assert main(args) == 0
    assert sorted(p.stat().st_mtime_ns for p in (out / "trials").glob("*.json")) == before
    # An edited space in the same --out is refused with a message, not silently resumed.
    edited = tmp_path / "edited.yaml"
    text = (REPO / "tuning/spaces/smoke.yaml").read_text()
    edited.write_text(text.replace("tau: [0.5, 0.7]", "tau: [0.5, 0.6]"))
    args[args.index("--space") + 1] = str(edited)
    assert main(args) == 2
    assert "different configurations" in caplog.text


def test_cluster_launcher_yaml_passes_ray_validation():
    import yaml
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster/cluster.yaml").read_text())
    validate_config(prepare_config(config))  # what `ray up` does first; raises on schema errors
    broken = dict(
        config, available_node_types={"head": {"resources": {}, "node_config": {}, "typo_key": 1}}
    )
    with pytest.raises(Exception, match="typo_key"):
        validate_config(prepare_config(broken))
    assert config["available_node_types"]["gpu_worker"]["resources"]["GPU"] == 1
    job = yaml.safe_load((REPO / "cluster/rayjob.yaml").read_text())
    assert job["kind"] == "RayJob" and "sssl_dist train" in job["spec"]["entrypoint"]
    env = yaml.safe_load((REPO / "cluster/runtime_env.yaml").read_text())
    assert ".venv/" in env["excludes"]


def test_report_pairs_a_variant_with_the_papers_from_the_same_folds():
    from sssl_dist.outputs.foldrun import FoldRun
    from sssl_dist.outputs.tables import paired_variant_lines

    def run(acc: float, paper_acc: float) -> FoldRun:
        result = {"test_acc": acc, "in_sample_test_acc": paper_acc}
        return FoldRun(result, [], {}, {})

    runs = {0: run(0.8, 0.7), 1: run(0.7, 0.7), 2: run(0.9, 0.7)}
    lines = paired_variant_lines(runs)
    row = next(line for line in lines if line.startswith("| test_acc"))
    # The corrected t over the 3 folds: 0.1 / sqrt((1/3 + 1/2) * 0.1²) = 1.10 (naive: 1.73).
    assert row == "| test_acc | 0.7000 | 0.8000 | +0.1000 | 1.10 |"
    assert not any("last epoch" in line for line in lines)  # that variant was not reported


@pytest.mark.parametrize("parallel", [1, 2])
def test_a_comparison_with_nothing_left_to_run_finishes_quietly(parallel):
    """A resumed benchmark hands `run_methods` an empty list once a cell is finished: that is
    no work, not a crash (it raised StopIteration with folds side by side)."""
    from sssl_dist.driver.cv import run_methods

    out = run_methods(SSSLConfig(), None, lambda m: Path("unused") / m, [], parallel=parallel)
    assert list(out) == []


# ----------------------------------------------------------------------------- messages that
# say what happened, before Ray starts
def _labels_only_shards(root: Path, quadrants: list[int]) -> Path:
    """A shard directory whose manifest holds labels only (no tars): enough for the checks a
    command makes before it starts Ray."""
    songs = [
        {"song_id": f"s{i:02d}", "quadrant": q, "valence": int(q in (0, 3)),
         "arousal": int(q in (0, 1)), "duration_s": 10.0, "frames": 431}
        for i, q in enumerate(quadrants)
    ]  # fmt: skip
    root.mkdir(parents=True)
    (root / "manifest.json").write_text(
        json.dumps({"feature_config": {}, "shards": [], "songs": songs})
    )
    return root


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if the command starts Ray: these inputs are refused before."""

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started for an input refused beforehand")

    monkeypatch.setattr("sssl_dist.cli._init_ray", refuse)


@pytest.mark.parametrize(
    "args",
    [
        ["compare", "--folds", "8", "--workers", "0"],
        ["train", "--set", "n_folds=8", "--workers", "0"],
        ["compare", "--folds", "5", "--tasks", "valence,quadrant"],  # the second task's
    ],
)
def test_more_folds_than_the_smallest_class_says_the_maximum(tmp_path, caplog, no_ray, args):
    shards = _labels_only_shards(tmp_path / "s", [0] * 3 + [1] * 6 + [2] * 6 + [3] * 6)
    assert main([*args, "--shards", str(shards), "--out", str(tmp_path / "o")]) == 2
    folds = args[args.index("--folds") + 1] if "--folds" in args else "8"
    assert f"{folds} folds need at least {folds} songs of each class; use at most 3 folds" in (
        caplog.text
    )
    assert "task quadrant" in caplog.text
    assert not (tmp_path / "o").exists()


def test_rope_is_refused_in_the_points_it_is_given_in(tmp_path, caplog, no_ray):
    shards = _labels_only_shards(tmp_path / "s", [0, 1, 2, 3] * 3)
    assert main(["compare", "--shards", str(shards), "--rope", "150", "--folds", "2"]) == 2
    assert "--rope is in accuracy points, above 0 and below 100: got 150" in caplog.text


def test_a_damaged_manifest_is_one_line_naming_it(tmp_path, caplog, no_ray):
    shards = _labels_only_shards(tmp_path / "s", [0, 1, 2, 3] * 3)
    text = (shards / "manifest.json").read_text()
    (shards / "manifest.json").write_text(text[:100])
    assert main(["train", "--shards", str(shards), "--workers", "0"]) == 2
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert line.startswith(f"{shards / 'manifest.json'} is damaged (not valid JSON")
    assert "run `sssl shard` again" in line


def test_report_on_a_folder_that_is_not_a_run_says_so(tmp_path, caplog):
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert f"{tmp_path / 'nowhere'} is not there: give the --out folder" in caplog.text
    assert main(["report", str(tmp_path)]) == 2
    assert f"{tmp_path} is not a training report (it has no config.yaml)" in caplog.text
    for arm in ("inherit", "sssl"):  # a comparison's top folder: its cells are the reports
        (tmp_path / "cmp" / "quadrant" / arm).mkdir(parents=True)
        (tmp_path / "cmp" / "quadrant" / arm / "config.yaml").write_text("tau: 0.5\n")
    assert main(["report", str(tmp_path / "cmp")]) == 2
    assert f"holds 2 reports, not one (a comparison?): give one of them, e.g. {tmp_path}" in (
        caplog.text
    )
    assert "Errno" not in caplog.text


def _tune(space: Path, shard_dir, out: Path, *extra: str) -> int:
    cmd = ["tune", "--space", str(space), "--shards", str(shard_dir), "--workers", "1"]
    return main([*cmd, "--out", str(out), *extra])


def test_a_sweep_past_max_trials_is_refused_with_its_size(tmp_path, shard_dir, caplog):
    """6 parameters x 10 values: 10^6 configurations are counted, never made (before: an 87 MB
    sweep.json and minutes of nothing)."""
    params = {k: list(range(1, 11)) for k in ("epochs", "seed", "batch_size", "svm_c",
                                               "gmm_max_iter", "bn_stats_segments")}  # fmt: skip
    space = tmp_path / "huge.yaml"
    space.write_text(yaml.safe_dump({"search": "grid", "folds": [0, 1], "params": params}))
    out = tmp_path / "sweep"
    assert _tune(space, shard_dir, out) == 2
    assert (
        "1,000,000 configuration(s) x 2 fold(s) = 2,000,000 trials, more than --max-trials 1,000"
        in caplog.text
    )
    assert not out.exists()


def test_max_trials_sets_the_limit_and_the_check_precedes_ray(tmp_path, shard_dir):
    from sssl_dist import cli
    from tuning.sweep import MAX_TRIALS, run_sweep

    assert cli.MAX_TRIALS == MAX_TRIALS  # the CLI's default, kept without importing Ray
    space = tmp_path / "nine.yaml"
    space.write_text("folds: [0, 1]\nparams: {tau: [0.5, 0.6, 0.7], temperature: [0.5, 1, 2]}\n")

    class RayWouldStart(Exception):
        pass

    def start_ray() -> None:
        raise RayWouldStart

    base = SSSLConfig(n_folds=2)
    with pytest.raises(
        ValueError, match="9 configuration.* = 18 trials, more than --max-trials 17"
    ):
        run_sweep(space, base, shard_dir, tmp_path / "a", max_trials=17, start_ray=start_ray)
    with pytest.raises(RayWouldStart):  # 18 trials are allowed by --max-trials 18
        run_sweep(space, base, shard_dir, tmp_path / "b", max_trials=18, start_ray=start_ray)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    "space, message",
    [
        # Before: Ray Tune's 'IndexError: pop from empty list' and a half-made sweep folder.
        ("num_samples: 0", "num_samples must be at least 1, got 0"),
        ("num_samples: -3", "num_samples must be at least 1, got -3"),
        ("num_samples: '4'", "num_samples must be a whole number, got '4'"),
        ("params: {tau: {uniform: [0.4]}}", "tau: uniform needs [lo, hi] with lo < hi"),
        ("params: {lr: {loguniform: [0, 1]}}", "loguniform needs [lo, hi] with 0 < lo < hi"),
        ("params: {tau: {normal: [0, 1]}}", "tau must be a list of choices or one of"),
        ("params: {tau: []}", "tau has an empty list of values"),
        ("folds: [0, x]", "folds must be 'all' or a list of fold numbers"),
        ("folds: [0, 5]", "fold 5 is outside 0..1"),
    ],
)
def test_a_bad_random_sweep_is_refused_before_any_folder(
    tmp_path, shard_dir, caplog, space, message
):
    spec = {
        "search": "random",
        "num_samples": 2,
        "params": {"tau": [0.5, 0.7]},
        "base": {"n_folds": 2},
    }
    spec.update(yaml.safe_load(space))
    path = tmp_path / "random.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "sweep"
    assert _tune(path, shard_dir, out) == 2
    assert message in caplog.text
    assert not out.exists()


def test_train_and_tune_do_not_write_into_each_others_output(tmp_path, shard_dir, caplog):
    """Both write summary.md and split_over_epochs.png."""
    from sssl_dist.config import save_config

    sweep, report = tmp_path / "sweep", tmp_path / "report"
    sweep.mkdir()
    (sweep / "sweep.json").write_text("{}")
    (sweep / "summary.md").write_text("the sweep's")
    save_config(SSSLConfig(), report / "config.yaml")
    (report / "summary.md").write_text("the report's")
    assert main(["train", "--shards", str(shard_dir), "--out", str(sweep), "--smoke"]) == 2
    assert "holds a `sssl tune` sweep" in caplog.text
    assert _tune(REPO / "tuning/spaces/smoke.yaml", shard_dir, report) == 2
    assert "holds a `sssl train` report" in caplog.text
    assert (sweep / "summary.md").read_text() == "the sweep's"
    assert (report / "summary.md").read_text() == "the report's"
    assert _tune(tmp_path / "nope.yaml", shard_dir, tmp_path / "x") == 2
    assert f"search space {tmp_path / 'nope.yaml'} is not a file" in caplog.text


def test_an_alias_bomb_is_refused_by_every_command_that_reads_yaml(tmp_path, shard_dir, caplog):
    bomb = tmp_path / "bomb.yaml"
    for command in (
        ["train", "--shards", str(shard_dir), "--config", str(bomb)],
        ["compare", "--shards", str(shard_dir), "--arms", str(bomb)],
        ["tune", "--shards", str(shard_dir), "--workers", "1", "--space", str(bomb)],
    ):
        bomb.write_text(alias_bomb("params" if command[0] == "tune" else "tau"))
        caplog.clear()
        assert main([*command, "--out", str(tmp_path / "out")]) == 2
        assert "aliases expand to more than 100,000 values" in caplog.text, command
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--shards", "S", "--out", "FILE"], "--out FILE exists and is not a directory"),
        (["predict", "m.sssl", "a.wav", "--out", "FILE"], "--out FILE exists and is not"),
        (["shard", "--dataset", "4q", "--root", "R", "--out", "FILE"], "--out FILE exists"),
        (["train", "--shards", "S", "--out", "FILE/run"], "--out FILE/run: FILE exists and is"),
        (["train", "--shards", "S", "--workers", "-1"], "--workers must be at least 0, got -1"),
        (["compare", "--shards", "S", "--workers", "-2"], "--workers must be at least 0, got -2"),
        (["train", "--shards", "S", "--parallel", "0"], "--parallel must be at least 1, got 0"),
        (["demo", "--parallel", "0"], "--parallel must be at least 1, got 0"),
        (["predict", "m.sssl", "a.wav", "--cpus", "0"], "--cpus must be at least 1, got 0"),
        (["predict", "m.sssl", "a.wav", "--actors", "0"], "--actors must be at least 1, got 0"),
        (["predict", "m.sssl", "a.wav", "--batch-files", "0"], "--batch-files must be at least 1"),
        (["train", "--shards", "S", "--folds", "0,0"], "--folds names fold 0 more than once"),
        (["train", "--shards", "S", "--folds", "0,x"], "a comma list of fold numbers such as"),
    ],
)
def test_bad_options_are_refused_in_one_line_before_ray_starts(
    args, message, tmp_path, monkeypatch, caplog, no_ray
):
    monkeypatch.chdir(tmp_path)
    Path("FILE").write_text("an earlier user's file\n")
    assert main(args) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and message in errors[0] and "\n" not in errors[0], errors
    assert Path("FILE").read_text() == "an earlier user's file\n"


def test_songs_per_shard_0_is_refused_and_leaves_no_directory_or_lock(tmp_path, caplog, no_ray):
    from shards.write import shard_dataset

    out = tmp_path / "shards"
    cmd = ["shard", "--dataset", "4q", "--root", str(tmp_path), "--out", str(out)]
    assert main([*cmd, "--songs-per-shard", "0"]) == 2
    assert "--songs-per-shard must be at least 1, got 0" in caplog.text
    with pytest.raises(ValueError, match="songs_per_shard must be at least 1, got 0"):
        shard_dataset([], out, songs_per_shard=0)  # the library refuses it too
    assert not out.exists()


def test_gpu_without_a_gpu_or_a_cluster_is_refused_before_ray_starts(
    tmp_path, monkeypatch, caplog, no_ray
):
    """Ray would wait forever for a GPU this machine does not have."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    for cmd in (["train", "--shards", str(tmp_path), "--workers", "0"],
                ["predict", "m.sssl", "a.wav"]):  # fmt: skip
        assert main([*cmd, "--gpu"]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 2 and all("--gpu: this machine has no CUDA GPU" in e for e in errors)


# ---------------------------------------------------------- a new user's third try: cases
def _errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]


def test_set_given_twice_keeps_both_and_a_key_given_twice_is_refused(caplog, no_ray):
    """Before: `--set n_folds=2 --set tau=0.7` trained with tau 0.7 and 10 folds (argparse
    kept the last --set only); `--set tau=0.5 tau=0.7` kept 0.7 without a word."""
    from sssl_dist.cli import _train_config

    a = build_parser().parse_args(
        ["train", "--shards", "S", "--set", "tau=0.6", "--set", "epochs=3"]
    )
    assert (_train_config(a).tau, _train_config(a).epochs) == (0.6, 3)
    assert main(["train", "--shards", "S", "--set", "tau=0.5", "tau=0.7"]) == 2
    assert _errors(caplog) == ["override 'tau' is given twice: give each key once"]
    assert main(["compare", "--shards", "S", "--arm", "a", "tau=0.5", "tau=0.6", "--arm", "b"]) == 2
    assert "override 'tau' is given twice" in _errors(caplog)[-1]


@pytest.mark.parametrize(
    "arms, message",
    [
        (["--arm", "oracle-split", "tau=0.7", "--arm", "b", "--ceiling"],
         "arm 'oracle-split' is a name --ceiling adds: give your arm another name"),
        (["--arm", "a", "seed=1", "--arm", "b", "seed=2"],
         "arm 'a' sets seed, which a comparison sets for every arm alike"),
        (["--arm", "a", "task=valence", "--arm", "b"], "arm 'a' sets task, which a comparison"),
        (["--arm", "a", "n_folds=3", "--arm", "b"], "arm 'a' sets n_folds, which a comparison"),
    ],
)  # fmt: skip
def test_an_arm_the_comparison_would_replace_is_refused(tmp_path, caplog, no_ray, arms, message):
    """Before: --ceiling replaced a user's arm of its name, and the design's task, folds and
    seed replaced an arm's own, without a word."""
    shards = _labels_only_shards(tmp_path / "s", [0, 1, 2, 3] * 3)
    cmd = ["compare", "--shards", str(shards), "--out", str(tmp_path / "o"), "--folds", "2"]
    assert main([*cmd, *arms]) == 2
    (line,) = _errors(caplog)
    assert message in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("setting", ["split_evidence=oracle", "train_labels=truth"])
def test_train_refuses_a_truth_setting_on_shards_without_truth_before_ray(
    tmp_path, caplog, no_ray, setting
):
    """Before: refused only once Ray had started and the fold was 'training on 1 worker'."""
    shards = _labels_only_shards(tmp_path / "s", [0, 1, 2, 3] * 3)
    cmd = ["train", "--shards", str(shards), "--out", str(tmp_path / "o"), "--workers", "0"]
    assert main([*cmd, "--set", "n_folds=2", "val_fraction=0", setting]) == 2
    (line,) = _errors(caplog)
    assert "trains on per-second truth, and 96 of the 96 segments" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "val_fraction, params, message",
    [
        (0.2, "split_evidence: [loss, oracle]", "split_evidence 'oracle' trains on per-second"),
        (0, "tau: [0.5, 0.7]", "val_fraction = 0 holds none out: give val_fraction above 0"),
    ],
)
def test_tune_refuses_what_no_trial_can_serve_before_ray(
    tmp_path, caplog, no_ray, val_fraction, params, message
):
    """Before: the oracle trials failed inside Ray after the others had trained, with a Ray
    traceback; with val_fraction 0 every validation score was NaN and the first configuration
    was reported as chosen 'by validation-song accuracy (honest)'."""
    shards = _labels_only_shards(tmp_path / "s", [0, 1, 2, 3] * 3)
    space = tmp_path / "space.yaml"
    base = f"base: {{n_folds: 2, val_fraction: {val_fraction}}}"
    space.write_text(f"search: grid\nfolds: [0, 1]\n{base}\nparams:\n  {params}\n")
    assert _tune(space, shards, tmp_path / "o") == 2
    (line,) = _errors(caplog)
    assert message in line
    assert not (tmp_path / "o").exists()


def test_report_refuses_shards_it_was_not_trained_on(tmp_path, caplog):
    """Before: another shard set's per-second truth was drawn under the curves, or none."""
    report = tmp_path / "r"
    report.mkdir()
    (report / "config.yaml").write_text("tau: 0.5\n")
    (report / "shards.json").write_text(json.dumps({"shards": "first", "digest": "0123"}))
    shards = _labels_only_shards(tmp_path / "s", [0, 1, 2, 3] * 3)
    assert main(["report", str(report), "--shards", str(shards)]) == 2
    (line,) = _errors(caplog)
    assert line == (
        f"{report} was trained on the shard set first, and --shards {shards} is another: give "
        "the shards it was trained on"
    )


def test_an_out_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, caplog, no_ray):
    """Before: a PermissionError traceback (exit 1) from train, shard and predict."""
    shards = _labels_only_shards(tmp_path / "s", [0, 1, 2, 3] * 3)
    cmd = ["train", "--shards", str(shards), "--workers", "0", "--set", "n_folds=2"]
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)
    assert main([*cmd, "--out", str(tmp_path / "o")]) == 2
    assert _errors(caplog)[-1] == (
        f"--out {tmp_path / 'o'}: {tmp_path} is not writable; name a directory you can write"
    )
    monkeypatch.undo()

    mkdir = Path.mkdir

    def refused(self, *args, **kwargs):  # what the OS says where access() cannot tell
        if self == tmp_path / "o":
            raise PermissionError(f"[Errno 1] Operation not permitted: '{self}'")
        mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refused)
    assert main([*cmd, "val_fraction=0", "--out", str(tmp_path / "o")]) == 2
    assert _errors(caplog)[-1] == f"[Errno 1] Operation not permitted: '{tmp_path / 'o'}'"


def test_a_class_of_one_song_is_refused_without_impossible_advice(tmp_path, caplog, no_ray):
    """Before: 'use at most 1 folds', and cross-validation needs 2."""
    shards = _labels_only_shards(tmp_path / "s", [0] + [1, 2, 3] * 3)
    assert main(["train", "--shards", str(shards), "--workers", "0", "--set", "n_folds=2"]) == 2
    (line,) = _errors(caplog)
    assert "(Q1 1, Q2 3, Q3 3, Q4 3): a class has only 1 song" in line
    assert "at most 1 folds" not in line
