"""`sssl compare` end to end on real shards: arms on identical folds, a shared warm-up that
changes no result, an arm against itself, a resumed comparison that trains nothing again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sssl_dist.cli import main
from sssl_dist.config import SSSLConfig
from sssl_dist.data.segments import ShardSet
from sssl_dist.driver.arms import default_arms
from sssl_dist.driver.compare import Design, run_comparison
from sssl_dist.files.runfiles import PROGRESS as PROGRESS_FILE

# Two warm-up epochs of three, so sharing them is most of the work.
BASE = SSSLConfig(n_folds=2, epochs=3, warmup_epochs=2, batch_size=32)


def _per_fold(comparison_dir: Path, design: Design) -> dict:
    out = {}
    for task in design.tasks:
        for arm in design.arms:
            for fold in range(design.n_folds):
                p = comparison_dir / design.cell(task, arm, 0) / f"fold-{fold}" / "result.json"
                out[(arm, fold)] = json.loads(p.read_text())
    return out


def _progress_epochs(cell: Path) -> list[list[int]]:
    return [
        [json.loads(line)["epoch"] for line in p.open()]
        for p in sorted(cell.glob(f"ray/*/{PROGRESS_FILE}"))
    ]


def test_shared_warmup_gives_the_results_of_training_each_arm_from_scratch(
    shard_dir, tmp_path, ray_session
):
    shards = ShardSet(shard_dir)
    design = Design(default_arms(), ("quadrant",), BASE.n_folds)
    shared = run_comparison(BASE, shards, tmp_path / "shared", design, parallel=2)
    alone = run_comparison(BASE, shards, tmp_path / "alone", design, parallel=2, share_warmup=False)
    assert _per_fold(tmp_path / "shared", design) == _per_fold(tmp_path / "alone", design)
    assert shared["tasks"] == alone["tasks"]
    # The premise: inherit trained the warm-up, the SSSL arms started after it.
    assert _progress_epochs(tmp_path / "shared" / "quadrant" / "inherit") == [[0, 1, 2]] * 2
    for arm in ("sssl-paper", "sssl"):
        assert _progress_epochs(tmp_path / "shared" / "quadrant" / arm) == [[2]] * 2
        assert _progress_epochs(tmp_path / "alone" / "quadrant" / arm) == [[0, 1, 2]] * 2
    md = (tmp_path / "shared" / "comparison.md").read_text()
    assert "| majority class |" in md and "sssl vs inherit" in md
    assert (tmp_path / "shared" / "forest.png").is_file()


def test_an_arm_against_itself_is_no_difference_and_a_rerun_trains_nothing(
    shard_dir, tmp_path, ray_session, capsys
):
    out = tmp_path / "self"
    cmd = ["compare", "--shards", str(shard_dir), "--workers", "0", "--out", str(out),
           "--arm", "a", "method=inherit", "--arm", "b", "method=inherit", "--folds", "2",
           "--set", "epochs=2", "warmup_epochs=1", "batch_size=32"]  # fmt: skip
    assert main(cmd) == 0
    first = json.loads((out / "comparison.json").read_text())
    (pair,) = first["tasks"]["quadrant"]["pairs"]
    stats = pair["metrics"]["test_acc"]["stats"]
    assert stats["mean"] == 0.0 and stats["ci"] == [0.0, 0.0] and stats["verdict"] == "equivalent"
    assert pair["metrics"]["test_acc"]["verdict"].startswith("no difference beyond the ROPE")
    assert "quadrant: b vs a: no difference beyond the ROPE" in capsys.readouterr().out
    progress = {p: p.read_text() for p in out.glob(f"**/{PROGRESS_FILE}")}
    assert main(cmd) == 0  # resumed with everything finished: nothing trains again
    assert {p: p.read_text() for p in out.glob(f"**/{PROGRESS_FILE}")} == progress
    assert json.loads((out / "comparison.json").read_text()) == first


@pytest.mark.parametrize(
    "args, message",
    [
        (["--arm", "only", "method=inherit"], "at least 2 arms"),
        (["--arm", "method=inherit"], "needs a name first"),
        (["--repeats", "0"], "--repeats must be at least 1"),
        (["--arm", "a", "tau=abc", "--arm", "b"], "tau"),
        # Before: the later `a` replaced the earlier, and only a(0.7) and b were compared.
        (["--arm", "a", "tau=0.5", "--arm", "a", "tau=0.7", "--arm", "b", "tau=0.6"],
         "arm 'a' is named twice with --arm"),
        (["--arm", "a", "--arm", "b", "--pairs", "a:a"], "--pairs compares 'a' with itself"),
        (["--arm", "a", "--arm", "b", "--pairs", "a:b,b:a"], "lists a:b and b:a, one pair both"),
        (["--arm", "a", "--arm", "b", "--pairs", "a:b,b"], "A:B pairs joined by commas, not 'b'"),
    ],
)  # fmt: skip
def test_bad_comparisons_are_refused_before_training(shard_dir, tmp_path, caplog, args, message):
    cmd = ["compare", "--shards", str(shard_dir), "--out", str(tmp_path / "x"), *args]
    assert main(cmd) == 2
    assert message in caplog.text
    assert not (tmp_path / "x" / "quadrant").exists()


def test_the_ceiling_arms_bound_the_gain_and_report_each_arms_share(
    shard_dir, tmp_path, ray_session
):
    """`--ceiling` adds oracle-split and oracle-labels: the oracle split is the truth (noise
    AUC 1 at every SSSL epoch), and the report reads every arm's gain as a share of the
    headroom between inherit (0 %) and the oracle labels (100 %)."""
    out = tmp_path / "ceiling"
    cmd = ["compare", "--shards", str(shard_dir), "--workers", "0", "--out", str(out),
           "--arm", "inherit", "method=inherit", "--ceiling", "--folds", "2",
           "--set", "epochs=3", "warmup_epochs=2", "batch_size=32"]  # fmt: skip
    assert main(cmd) == 0
    comparison = json.loads((out / "comparison.json").read_text())
    assert list(comparison["design"]["arms"]) == ["inherit", "oracle-split", "oracle-labels"]
    for fold in range(2):
        history = json.loads(
            (out / "quadrant/oracle-split" / f"fold-{fold}/history.json").read_text()
        )
        sssl_epochs = [h for h in history if "noise_auc" in h]
        assert sssl_epochs and all(h["noise_auc"] == 1.0 for h in sssl_epochs)
    headroom = comparison["tasks"]["quadrant"]["headroom"]
    assert (headroom["inherit"], headroom["oracle"]) == ("inherit", "oracle-labels")
    truth = headroom["metrics"]["val_seg_acc_truth"]
    assert truth["arms"]["inherit"] == {
        "gain": 0.0,
        "share": 0.0 if truth["headroom"] > 0 else None,
    }
    if truth["headroom"] > 0:
        assert truth["arms"]["oracle-labels"]["share"] == pytest.approx(1.0)
    assert "Share of the headroom" in (out / "comparison.md").read_text()


def test_the_ceiling_arms_are_refused_on_shards_without_truth(tmp_path, caplog):
    """One line, exit 2, before Ray starts and before anything is written. (A manifest of
    labels only, as a public data set's shards have them: no per-second truth.)"""
    songs = [
        {"song_id": f"s{i:02d}", "quadrant": q, "valence": int(q in (0, 3)),
         "arousal": int(q in (0, 1)), "duration_s": 10.0, "frames": 431}
        for i, q in enumerate([0, 1, 2, 3] * 5)
    ]  # fmt: skip
    bare = tmp_path / "bare"
    bare.mkdir()
    manifest = {"feature_config": {}, "shards": [], "songs": songs}
    (bare / "manifest.json").write_text(json.dumps(manifest))
    cmd = ["compare", "--shards", str(bare), "--out", str(tmp_path / "x"), "--ceiling",
           "--folds", "2"]  # fmt: skip
    assert main(cmd) == 2
    assert "arm oracle-split: split_evidence 'oracle' trains on per-second truth" in caplog.text
    assert not (tmp_path / "x").exists()


def test_an_arms_file_that_repeats_a_name_is_refused(shard_dir, tmp_path, caplog):
    """Before: YAML kept the last of two `a:` arms, and the comparison said 'needs at least 2
    arms'. An --arm of a name the file has is refused too."""
    arms = tmp_path / "arms.yaml"
    arms.write_text("a: {tau: 0.5}\nb: {tau: 0.6}\na: {tau: 0.7}\n")
    out = tmp_path / "x"
    cmd = ["compare", "--shards", str(shard_dir), "--out", str(out), "--arms", str(arms)]
    assert main(cmd) == 2
    assert "arms.yaml: not a valid config file: line 3: the key 'a' appears twice" in caplog.text
    arms.write_text("a: {tau: 0.5}\nb: {tau: 0.6}\n")
    assert main([*cmd, "--arm", "b", "tau=0.7"]) == 2
    assert f"arm 'b' is named in {arms} and with --arm" in caplog.text
    arms.write_text("1: {tau: 0.5}\n'1': {tau: 0.6}\nb: {}\n")  # two YAML keys, one name
    assert main(cmd) == 2
    assert "arm '1' is named twice" in caplog.text
    assert not out.exists()
