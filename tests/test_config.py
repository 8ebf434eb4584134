"""The config validates itself: every bad value is refused with a one-line message naming its
key, before any worker starts. No Ray here."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal, get_args, get_origin, get_type_hints

import pytest
import yaml
from conftest import alias_bomb

from sssl_dist.config import (
    METHODS,
    TASKS,
    FeatureConfig,
    SSSLConfig,
    choices,
    config_digest,
    from_dict,
    load_config,
    packaged_configs,
    parse_overrides,
    read_config_file,
)

REPO = Path(__file__).resolve().parents[1]
# Run identities are built from these digests: a change here re-runs every stored result.
DEFAULT_DIGEST = "ef11e8aded681201"
FEATURE_DIGEST = "7fae48a34f01324a"
PACKAGED_DIGESTS = {
    "paper_global_split": "5be8be08d433ab07",
    "song_relative_filter": "1fc79848d4c540f9",
    "vgg16_gpu": "acdfb3ba1556d083",
}
# The default before the step's default became the Mean Teacher with clean BN statistics.
PAPER_STEP_DIGEST = "298d2fe1175e1932"


def test_digests_of_existing_configs_are_unchanged():
    assert config_digest(SSSLConfig()) == DEFAULT_DIGEST
    assert config_digest(FeatureConfig()) == FEATURE_DIGEST
    assert {n: config_digest(load_config(n)) for n in packaged_configs()} == PACKAGED_DIGESTS


def test_a_changed_default_changes_the_digest_and_the_old_value_keeps_its_own():
    # Results stored under the paper's step keep their identity, and none of them is reused
    # for the new default step.
    paper_step = dataclasses.replace(
        SSSLConfig(), pseudo_label_network="current", bn_stats="running"
    )
    assert config_digest(paper_step) == PAPER_STEP_DIGEST != config_digest(SSSLConfig())


def _literal_fields(cls: type) -> list[tuple[str, tuple]]:
    hints = get_type_hints(cls)
    return [
        (f.name, get_args(hints[f.name]))
        for f in dataclasses.fields(cls)
        if get_origin(hints[f.name]) is Literal
    ]


@pytest.mark.parametrize("name,allowed", _literal_fields(SSSLConfig))
def test_every_choice_field_is_checked_from_its_annotation(name, allowed):
    assert choices(name) == allowed
    with pytest.raises(ValueError, match=rf"^{name} must be one of .*got 'bogus'$"):
        SSSLConfig(**{name: "bogus"})
    for value in allowed:  # every listed value is accepted
        SSSLConfig(**{name: value}, **({"val_fraction": 0.1} if value == "best_val" else {}))


def test_choice_fields_include_the_ones_that_were_unchecked():
    names = [n for n, _ in _literal_fields(SSSLConfig)]
    assert {"optimizer", "svm_kernel"} <= set(names)
    with pytest.raises(ValueError, match=r"optimizer must be one of \('adam', 'sgd'\)"):
        SSSLConfig(optimizer="adamw")
    assert METHODS == ("inherit", "sssl-nokl", "sssl")
    assert TASKS == ("quadrant", "valence", "arousal", "valence_reg", "arousal_reg", "va_reg")


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("batch_size", 0, r"batch_size must be >= 1, got 0"),
        ("batch_size", 64.9, r"batch_size must be an integer, got 64.9"),
        ("batch_size", True, r"batch_size must be an integer, got True"),
        ("seed", None, r"seed must be an integer, got None"),
        ("seed", -1, r"seed must be >= 0"),
        ("lr", float("nan"), r"lr must be a finite number, got nan"),
        ("lr", float("inf"), r"lr must be a finite number, got inf"),
        ("lr", 0.0, r"lr must be > 0, got 0.0"),
        ("lr", "0.1", r"lr must be a number, got '0.1'"),  # strings are coerced by from_dict
        ("dropout", 1.5, r"dropout must be in \[0, 1\), got 1.5"),
        ("dropout", 1.0, r"dropout must be in \[0, 1\)"),
        ("val_fraction", 1.5, r"val_fraction must be in \[0, 1\), got 1.5"),
        ("hop_seconds", 0, r"hop_seconds must be >= 1, got 0"),
        ("epochs", -1, r"epochs must be >= 1, got -1"),
        ("warmup_epochs", -1, r"warmup_epochs must be >= 0, got -1"),
        ("warmup_epochs", 20, r"warmup_epochs \(20\) must not exceed epochs \(12\)"),
        ("mixup_alpha", -0.1, r"mixup_alpha must be >= 0"),
        ("lambda_kl", -1.0, r"lambda_kl must be >= 0"),
        ("weight_decay", -1e-4, r"weight_decay must be >= 0"),
        ("tau", 1.5, r"tau must be in \(0, 1\), got 1.5"),
        ("temperature", 0.0, r"temperature must be > 0"),
        ("segment_seconds", 31, r"segment_seconds must be in \[1, 30\]"),
        ("n_folds", 1, r"n_folds must be >= 2"),
        ("cross_fit_parts", 1, r"cross_fit_parts must be >= 2"),
        ("torch_threads", 0, r"torch_threads must be >= 1"),
        ("bf16", 1, r"bf16 must be true, false or one of \('auto',\), got 1"),
        ("theta", 2.0, r"theta must be in \[0, 1\]"),
        ("svm_c", 0.0, r"svm_c must be > 0"),
    ],
)
def test_bad_values_are_refused_naming_the_key(key, value, message):
    with pytest.raises(ValueError, match=message):
        SSSLConfig(**{key: value})


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("sample_rate", 0, r"sample_rate must be >= 1"),
        ("n_mels", 12.5, r"n_mels must be an integer"),
        ("hop_length", -512, r"hop_length must be >= 1"),
        ("min_duration_s", 0.0, r"min_duration_s must be > 0"),
        ("max_duration_s", float("inf"), r"max_duration_s must be a finite number"),
        ("max_duration_s", 2.0, r"max_duration_s \(2.0\) must exceed min_duration_s \(5.0\)"),
        ("silence_dbfs", 3.0, r"silence_dbfs must be <= 0"),
    ],
)
def test_bad_feature_values_are_refused(key, value, message):
    with pytest.raises(ValueError, match=message):
        FeatureConfig(**{key: value})


@pytest.mark.parametrize(
    "pair,message",
    [
        ("tau=abc", r"^tau expects a number, got 'abc'$"),
        ("batch_size=64.9", r"^batch_size expects an integer, got '64.9'$"),
        ("bf16=maybe", r"^bf16 expects true, false or one of \('auto',\), got 'maybe'$"),
        ("lr=nan", r"^lr must be a finite number, got nan$"),
        ("optimizer=rmsprop", r"^optimizer must be one of \('adam', 'sgd'\), got 'rmsprop'$"),
    ],
)
def test_command_line_strings_are_refused_naming_the_key(pair, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, parse_overrides([pair]))


def test_valid_strings_and_numbers_load_as_before(tmp_path):
    # YAML 1.1 reads 1e-3 as a string: it is coerced, as before.
    (tmp_path / "c.yaml").write_text("lr: 1e-3\ntau: 0.6\nlambda_kl: 2\nseed: 3\n")
    cfg = load_config(tmp_path / "c.yaml", {"epochs": "4", "bf16": "yes"})
    assert (cfg.lr, cfg.tau, cfg.lambda_kl, cfg.seed, cfg.epochs, cfg.bf16) == (
        1e-3,
        0.6,
        2,
        3,
        4,
        True,
    )
    assert from_dict(SSSLConfig, dataclasses.asdict(SSSLConfig())) == SSSLConfig()


def test_yaml_file_with_problems_in_one_line(tmp_path):
    tagged = tmp_path / "tagged.yaml"
    tagged.write_text("tau: 0.6\nseed: !!python/object/apply:os.getpid []\n")
    with pytest.raises(ValueError) as err:
        load_config(tagged)
    msg = str(err.value)
    assert "\n" not in msg and str(tagged) in msg and "line 2" in msg and "tag" in msg
    broken = tmp_path / "broken.yaml"
    broken.write_text("tau: [0.6,\n")
    with pytest.raises(ValueError, match="broken.yaml: not a valid config file") as err:
        load_config(broken)
    assert "\n" not in str(err.value)
    listed = tmp_path / "list.yaml"
    listed.write_text("- tau\n")
    with pytest.raises(ValueError, match="list.yaml: expected a mapping"):
        load_config(listed)


def test_packaged_configs_load_by_name(tmp_path, monkeypatch):
    assert {"paper_global_split", "song_relative_filter", "vgg16_gpu"} <= set(packaged_configs())
    cfg = load_config("vgg16_gpu")
    assert (cfg.backbone, cfg.bf16, cfg.task) == ("vgg16", True, "valence")
    cfg = load_config("song_relative_filter")
    split = (cfg.split_evidence, cfg.gmm_scope, cfg.tau, cfg.sssl_step)
    assert split == ("song_relative_seconds", "global", 0.9, "filter")
    assert read_config_file("paper_global_split.yaml") == read_config_file("paper_global_split")
    # A file of that name in the working directory wins over the packaged one.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vgg16_gpu").write_text("epochs: 5\n")
    assert load_config("vgg16_gpu").epochs == 5


def test_unknown_config_name_lists_the_packaged_ones(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'vgg_gpu' .*packaged: .*vgg16_gpu"):
        load_config("vgg_gpu")
    # A path that does not exist never falls back to a packaged config of the same name.
    with pytest.raises(FileNotFoundError, match="neither a file"):
        load_config(str(tmp_path / "vgg16_gpu.yaml"))


@pytest.mark.parametrize(
    "args,message",
    [
        (["--set", "tau=abc"], "tau expects a number, got 'abc'"),
        (["--set", "optimizer=adamw"], "optimizer must be one of ('adam', 'sgd'), got 'adamw'"),
        (["--set", "epochs=-1"], "epochs must be >= 1, got -1"),
        (["--config", "vgg_gpu"], "packaged: "),
    ],
)
def test_train_refuses_a_bad_config_in_one_line_before_launch(tmp_path, caplog, args, message):
    from sssl_dist.cli import main

    # The shard directory does not exist: the config is refused before it is even looked at.
    assert main(["train", "--shards", str(tmp_path / "none"), *args]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and message in errors[0] and "\n" not in errors[0]


def test_every_field_is_in_exactly_one_group_and_alternatives_are_allowed_values():
    from typing import get_args, get_type_hints

    from sssl_dist.config import FIELD_GROUPS, NOT_ADOPTED

    grouped = [k for keys in FIELD_GROUPS.values() for k in keys]
    assert sorted(grouped) == sorted(f.name for f in dataclasses.fields(SSSLConfig))
    assert len(grouped) == len(set(grouped))
    hints = get_type_hints(SSSLConfig)
    for key, value in NOT_ADOPTED.items():
        assert value in get_args(hints[key]) and value != getattr(SSSLConfig(), key), key


def test_every_field_declares_its_facts_and_the_derived_tables_are_the_hand_kept_ones():
    """Each field is declared once with its facts (`option`); a field added without them, or
    without a group, fails here. The tables derived from them equal the ones that were kept by
    hand beside the dataclass before, so warm-up sharing and the digest did not move."""
    from sssl_dist.config import AFTER_WARMUP, GROUPS, FeatureConfig, facts_of

    for cls in (SSSLConfig, FeatureConfig):
        missing = [name for name, facts in facts_of(cls).items() if facts is None]
        assert not missing, f"{cls.__name__} fields declared without option(): {missing}"
    assert all(f.group in GROUPS for f in facts_of(SSSLConfig).values())
    step = (
        "sssl_step",
        "pseudo_label_network",
        "ema_decay",
        "bn_stats",
        "bn_stats_segments",
        "sssl_optimizer",
        "sssl_lr_scale",
        "mixup_scope",
        "rdrop_trunk",
        "split_evidence",
        # The split's options beyond the paper act from the first SSSL epoch on (their
        # auxiliary networks catch up on the warm-up there: rank/scorers.py).
        "split_balance",
        "split_agreement",
        "agreement_confidence",
        "scorer_parts",
    )
    before = {"method", "tau", "temperature", "lambda_kl", "mixup_alpha", "gmm_scope",
              "selection", "split_network", "clean_targets", *step, "min_class_share",
              "gmm_max_iter", "gmm_tol", "gmm_reg_covar", "gmm_max_fit", "gmm_site",
              "eval_epoch", "theta", "svm_c", "svm_kernel", "svm_features", "cross_fit_parts",
              "max_failures", "gloo_timeout_s"}  # fmt: skip
    assert set(AFTER_WARMUP) == before
    legacy = {n: f.legacy for n, f in facts_of(SSSLConfig).items() if n in (*step, "train_labels")}
    assert legacy == {
        "sssl_step": "full", "pseudo_label_network": "current", "ema_decay": 0.99,
        "bn_stats": "running", "bn_stats_segments": 4096, "sssl_optimizer": "keep",
        "sssl_lr_scale": 1.0, "mixup_scope": "all", "rdrop_trunk": "separate",
        "split_evidence": "loss", "train_labels": "inherited", "split_balance": "none",
        "split_agreement": "none", "agreement_confidence": 0.99, "scorer_parts": 2,
    }  # fmt: skip


def test_sgd_with_momentum_and_a_linear_svm_are_what_they_say():
    """Fields no benchmark uses still do what they name: optimizer sgd with its momentum, and
    svm_kernel linear."""
    import numpy as np
    import torch

    from sssl_dist.method.song import SongClassifier
    from sssl_dist.rank.train import build_optimizer

    net = torch.nn.Linear(3, 2)
    sgd = build_optimizer(SSSLConfig(optimizer="sgd", momentum=0.7, lr=0.1), net.parameters())
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.7
    adam = build_optimizer(SSSLConfig(), net.parameters())
    assert isinstance(adam, torch.optim.Adam)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 7))
    y = (x[:, 0] > 0).astype(int)
    for kernel in ("linear", "rbf"):
        clf = SongClassifier(1.0, kernel, 0).fit(x, y)
        svc = clf._pipe[-1].estimator
        assert svc.kernel == kernel
        assert (clf.predict(x) == y).mean() > 0.9  # x[:, 0] > 0 is linearly separable


def test_an_alias_bomb_is_refused_before_any_object_is_built(tmp_path):
    import tracemalloc

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb())
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="aliases expand to more than 100,000") as err:
            load_config(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "\n" not in str(err.value) and str(bomb) in str(err.value)
    assert peak < 10 * 2**20, peak  # the composed document only: far under 100 MB


@pytest.mark.parametrize(
    "text, message",
    [
        ("a: &a [1, *a]\n", "an alias refers to a value that contains it"),
        ("tau: 0.5\nepochs: 3\ntau: 0.7\n", "line 3: the key 'tau' appears twice"),
        ("x: {a: 1, a: 2}\n", "the key 'a' appears twice"),
    ],
)
def test_recursive_aliases_and_repeated_keys_are_refused(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_config(path)


def test_a_yaml_file_past_the_size_limit_is_refused_unread(tmp_path):
    from sssl_dist.yamlfile import MAX_BYTES

    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_BYTES + "\ntau: 0.6\n")
    with pytest.raises(ValueError, match=r"big.yaml: .* bytes; a config file may have at most"):
        load_config(big)


def test_anchors_aliases_and_merge_keys_within_the_bounds_load_as_before():
    """benchmarks/arms/ladder.yaml shares one block of settings with `<<: *paper`; an arm's own
    key may follow a merge (the loader refuses repeats, not merges)."""
    from sssl_dist.driver.arms import read_arms
    from sssl_dist.yamlfile import check_expansion

    arms = read_arms(REPO / "benchmarks/arms/ladder.yaml")
    split = {"split_evidence": "loss", "gmm_scope": "per_class", "tau": 0.5, "sssl_step": "full"}
    paper = {"pseudo_label_network": "current", "bn_stats": "running", **split}
    assert len(arms) == 11 and arms["full"] == paper
    # the arm's own key wins over the merged block's
    assert arms["filter"] == {**paper, "sssl_step": "filter"}
    assert arms["ema-bn"] == {"pseudo_label_network": "ema", "bn_stats": "clean", **split}
    text = "base: &b {tau: 0.5, epochs: 3}\narm: {<<: *b, tau: 0.7}\n"
    assert yaml.safe_load(text)["arm"] == {"tau": 0.7, "epochs": 3}
    node = yaml.compose(text)
    assert check_expansion(node) == 17  # the merged block counts where it is used, too
