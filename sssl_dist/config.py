"""Configuration: frozen dataclasses with the paper's defaults, each field with its source.

`FeatureConfig` describes the log-mel features written by the shard stage (paper §3.1);
`SSSLConfig` describes one training run (method, model, optimiser, song-level decision).
Both serialise to plain dicts (JSON/YAML) and are saved with every shard set, checkpoint and
result, so any number can be traced back to the exact settings that produced it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

METHODS = ("inherit", "sssl-nokl", "sssl")
TASKS = ("quadrant", "valence", "arousal")
GMM_SCOPES = ("per_class", "global")
SELECTIONS = ("epoch_loss", "mean_loss")
SPLIT_NETWORKS = ("current", "best_val")
GMM_SITES = ("driver", "rank0")
EVAL_EPOCHS = ("last", "best_val")
SVM_FEATURES = ("in_sample", "cross_fit")
CLEAN_TARGETS = ("inherited", "refined")
LR_SCHEDULES = ("constant", "cosine")
BACKBONES = ("small_cnn", "vgg16")
QUADRANTS = ("Q1", "Q2", "Q3", "Q4")


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel front end (paper §3.1: librosa, 22.05 kHz, Hann 1024, hop 512, 128 mels)."""

    sample_rate: int = 22050  # paper §3.1
    n_fft: int = 1024  # paper §3.1 (Hann window of 1024 samples)
    hop_length: int = 512  # paper §3.1
    n_mels: int = 128  # paper §3.1
    # Shortest song kept: the longest segment the paper uses (5 s, §4.1), so one shard set
    # serves every L in 1..5 s. Our choice.
    min_duration_s: float = 5.0
    # Longest song sharded; longer files are rejected with a reason (one 10-min file would
    # otherwise dominate a shard). Our choice; `sssl predict` has no such limit.
    max_duration_s: float = 900.0
    # A file whose RMS is below this (dBFS) is "silent" and rejected. Our choice.
    silence_dbfs: float = -60.0

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    def digest(self) -> str:
        """Short hash of the feature settings: shards built with other settings are rebuilt."""
        return config_digest(self)


@dataclass(frozen=True)
class SSSLConfig:
    """One training run. Defaults: the paper where it says, DivideMix/MixMatch where it does not."""

    # --- what is trained -------------------------------------------------------------------
    method: Literal["inherit", "sssl-nokl", "sssl"] = "sssl"  # paper Table 3 (Proposed = sssl)
    task: Literal["quadrant", "valence", "arousal"] = "quadrant"  # paper §3: V/A binary, 4Q
    segment_seconds: int = 3  # L; paper Table 2: 3 s best for valence
    hop_seconds: int = 1  # paper §4.1: overlap is L - 1 s
    backbone: Literal["small_cnn", "vgg16"] = "small_cnn"  # paper uses vgg16; small_cnn for CPU
    dropout: float = 0.5  # VGG16 classifier default; also what R-Drop (Eq. 8) perturbs

    # --- SSSL (Eq. 3-9) --------------------------------------------------------------------
    tau: float = 0.5  # clean threshold on w (§2.1.2); DivideMix p_threshold = 0.5
    temperature: float = 0.5  # T of Eq. 4; DivideMix / MixMatch T = 0.5
    lambda_kl: float = 1.0  # λ of Eq. 9; R-Drop paper's alpha range 0.3-5; our choice 1.0
    mixup_alpha: float = 0.75  # δ ~ Beta(α, α) in Eq. 6; MixMatch default 0.75
    # What one GMM is fitted over. Per-class (one GMM per inherited class) is the default: the
    # paper's single global GMM let one quadrant vanish from X on our ground-truth corpus
    # (issue 6); "global" is the paper's own split.
    gmm_scope: Literal["per_class", "global"] = "per_class"
    # What the GMM is fitted on. "epoch_loss" is the paper's: this epoch's loss pass.
    # "mean_loss" averages each segment's loss over the SSSL epochs so far (temporal averaging,
    # as AUM does with margins), so one epoch in which the network memorises a wrong label does
    # not pull that segment into X (issue 11). The paper's stays the default until measured.
    selection: Literal["epoch_loss", "mean_loss"] = "epoch_loss"
    # Which network computes the losses the GMM sees. "current" (the paper): the network as it
    # is at this epoch, which has trained on these very labels. "best_val": the epoch with the
    # highest validation segment accuracy so far (inherited labels, no truth), kept as a copy,
    # after Prestopping (Song et al. 2019, "How does early stopping help generalization against
    # label noise?"): a network stopped before it memorises the wrong labels selects the clean
    # samples for the rest of training (Arpit et al. 2017: networks fit the clean pattern
    # first). Measured on 200 songs, 10 folds (BENCHMARKS.md): the noise AUC stops falling, song
    # accuracy +3.0 points at L = 1 but -1.5 at L = 3, so the paper's stays the default.
    split_network: Literal["current", "best_val"] = "current"
    # What X trains on. "inherited" (the paper): each clean segment's inherited label, one-hot.
    # "refined": DivideMix's label refinement, sharpen(w y + (1 - w) p) with w the segment's
    # clean posterior and p the network's prediction, so a wrong label that slipped into X
    # with a borderline w is not trained on at full strength (issue 11).
    clean_targets: Literal["inherited", "refined"] = "inherited"
    min_class_share: float = 0.05  # warn when a class is under 5 % of X; our choice
    gmm_max_iter: int = 10  # DivideMix
    gmm_tol: float = 1e-2  # DivideMix
    gmm_reg_covar: float = 5e-4  # DivideMix
    # Above this many losses EM runs on a strided subsample and the posteriors are computed for
    # all (issue 12: the full fit took 11-13 s at 10^7). Our choice; below it nothing changes.
    # Measured at 10^7 losses against the full fit (BENCHMARKS.md): 2 * 10^5 changes 0.004 % of
    # the clean/noisy assignments (10^6: 0.002 %) and halves the split's time.
    gmm_max_fit: int = 200_000
    # Where the GMM is fitted each SSSL epoch. "driver": a service the driver owns (the design
    # card's "driver-side GMM"), which keeps the split history through worker restarts.
    # "rank0": on rank 0 itself, with no object-store round trip. Same split either way.
    gmm_site: Literal["driver", "rank0"] = "driver"

    # --- optimisation ----------------------------------------------------------------------
    warmup_epochs: int = 3  # plain CE before the first split (DivideMix warm-up); our choice
    epochs: int = 12  # total epochs including warm-up; our choice for the embedded corpus
    batch_size: int = 64  # global batch, split evenly across DDP workers; our choice
    optimizer: Literal["adam", "sgd"] = "adam"  # paper silent; Adam trains the CNNs robustly
    lr: float = 1e-3  # Adam default
    weight_decay: float = 5e-4  # DivideMix
    # Learning rate by epoch. "constant" (the paper is silent): lr throughout. "cosine":
    # lr * (1 + cos(pi * epoch / epochs)) / 2, cosine annealing without restarts (Loshchilov &
    # Hutter 2017), so late epochs take small steps instead of jumping between minima (issue 11).
    lr_schedule: Literal["constant", "cosine"] = "constant"
    momentum: float = 0.9  # used by SGD only

    # Which epoch's network makes the fold's segment predictions, song decision and exported
    # model. "last": the final epoch (the paper's, which is silent). "best_val" (default): the
    # epoch with the highest segment accuracy on the validation songs (inherited labels: no
    # truth is used), because the network gets worse as it memorises wrong labels. Measured
    # (BENCHMARKS.md, 200 songs, 5 folds): segment accuracy against the truth +7.0 points for
    # sssl and +7.3 for inherit, ECE lower for both; issue 11.
    eval_epoch: Literal["last", "best_val"] = "best_val"

    # --- song-level decision (Eq. 10 + SVM, §2.2) -------------------------------------------
    theta: float = 0.5  # θ of f7 in Eq. 10; paper: "low sensitivity ... empirical"; our choice
    svm_c: float = 1.0  # scikit-learn default
    svm_kernel: Literal["rbf", "linear"] = "rbf"  # scikit-learn default
    # What the SVM learns from. "in_sample" (the paper): Eq. 10 features of the training songs
    # from the network that trained on them, more confident than an unseen song's. "cross_fit":
    # each training song's features come from a network trained without it (the training songs
    # split into `cross_fit_parts` song-grouped parts, one extra run per part), the stacking
    # practice of Wolpert 1992 and cleanlab's out-of-sample rule (issue 11).
    svm_features: Literal["in_sample", "cross_fit"] = "in_sample"
    cross_fit_parts: int = 2

    # --- evaluation ------------------------------------------------------------------------
    n_folds: int = 10  # paper §4.3: ten-fold cross-validation
    val_fraction: float = 0.1  # songs held out inside each training fold for honest selection
    seed: int = 0

    # --- execution -------------------------------------------------------------------------
    torch_threads: int = 1  # per worker on CPU: two workers on two cores must not oversubscribe
    bf16: bool = False  # bf16 autocast on the worker device (meant for GPUs; CPU runs it too)
    max_failures: int = 0  # Ray Train FailureConfig: worker restarts before the run fails
    gloo_timeout_s: int = 1800  # torch.distributed timeout (Ray default); tests shorten it

    def __post_init__(self) -> None:
        _check_choice("method", self.method, METHODS)
        _check_choice("task", self.task, TASKS)
        _check_choice("gmm_scope", self.gmm_scope, GMM_SCOPES)
        _check_choice("selection", self.selection, SELECTIONS)
        _check_choice("split_network", self.split_network, SPLIT_NETWORKS)
        _check_choice("gmm_site", self.gmm_site, GMM_SITES)
        _check_choice("clean_targets", self.clean_targets, CLEAN_TARGETS)
        _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _check_choice("eval_epoch", self.eval_epoch, EVAL_EPOCHS)
        _check_choice("svm_features", self.svm_features, SVM_FEATURES)
        if self.split_network == "best_val" and self.val_fraction <= 0:
            raise ValueError("split_network 'best_val' needs validation songs: val_fraction > 0")
        if self.cross_fit_parts < 2:
            raise ValueError(f"cross_fit_parts must be at least 2, got {self.cross_fit_parts}")
        _check_choice("backbone", self.backbone, BACKBONES)
        if not 1 <= self.segment_seconds <= 30:
            raise ValueError(f"segment_seconds must be in 1..30, got {self.segment_seconds}")
        if not 0.0 < self.tau < 1.0:
            raise ValueError(f"tau must be in (0, 1), got {self.tau}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.warmup_epochs > self.epochs:
            raise ValueError("warmup_epochs must not exceed epochs")
        if self.n_folds < 2:
            raise ValueError("n_folds must be at least 2")

    @property
    def num_classes(self) -> int:
        return 4 if self.task == "quadrant" else 2

    @property
    def label_names(self) -> tuple[str, ...]:
        return {
            "quadrant": QUADRANTS,
            "valence": ("negative", "positive"),
            "arousal": ("low", "high"),
        }[self.task]


C = TypeVar("C", FeatureConfig, SSSLConfig)

# Keys that were renamed, so an old config file gets a message instead of a bare "unknown key".
# "split" named three things (fold split, clean/noisy split, this field); now it names only the
# clean/noisy split of the training segments.
_RENAMED = {"split": "gmm_scope"}


def config_digest(cfg: FeatureConfig | SSSLConfig) -> str:
    """Short hash of every field: work done under other settings is never reused for these."""
    blob = json.dumps(dataclasses.asdict(cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def to_dict(cfg: FeatureConfig | SSSLConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Build a config from a dict, refusing unknown keys (a typo must not pass silently)."""
    names = {f.name for f in fields(cls)}
    for old, new in _RENAMED.items():
        if old in data and old not in names:
            raise ValueError(f"config key {old!r} was renamed to {new!r}: please rename it")
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {unknown}; known: {sorted(names)}")
    return cls(**{k: _coerce(cls, k, v) for k, v in data.items()})


def _coerce(cls: type, name: str, value: Any) -> Any:
    """Coerce strings from the command line (`--set tau=0.6`) to the field's type."""
    default = next(f.default for f in fields(cls) if f.name == name)
    if not isinstance(value, str) or isinstance(default, str):
        return value
    if isinstance(default, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name} expects a boolean, got {value!r}")
    return type(default)(value)


def with_overrides(cfg: C, overrides: dict[str, Any]) -> C:
    merged = to_dict(cfg)
    merged.update(overrides)
    return from_dict(type(cfg), merged)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`["tau=0.6", "method=inherit"]` -> {"tau": "0.6", "method": "inherit"}."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"override {pair!r} is not KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


# The paper's own variant where our defaults differ (issue 11: one config value away).
PAPER_CONFIG = Path(__file__).parent / "configs" / "paper_global_split.yaml"


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The keys a YAML/JSON config file sets (the rest stay at their defaults)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config keys")
    return data


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> SSSLConfig:
    """Read a YAML/JSON config file (or the defaults when path is None), then apply overrides."""
    data = read_config_file(path) if path is not None else {}
    data.update(overrides or {})
    return from_dict(SSSLConfig, data)


def save_config(cfg: FeatureConfig | SSSLConfig, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
