"""Configuration: frozen dataclasses with the paper's defaults, each field with its source.

`FeatureConfig` describes the log-mel features written by the shard stage (paper §3.1);
`SSSLConfig` describes one training run (method, model, optimiser, song-level decision).
Both serialise to plain dicts (JSON/YAML) and are saved with every shard set, checkpoint and
result, so any number can be traced back to the exact settings that produced it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from sssl_dist.yamlfile import load_yaml

QUADRANTS = ("Q1", "Q2", "Q3", "Q4")


@dataclass(frozen=True)
class _Range:
    """The values a numeric field allows; a bound of None is no bound."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: the bound itself is excluded
    high_open: bool = False

    def __contains__(self, x: float) -> bool:
        if self.low is not None and (x <= self.low if self.low_open else x < self.low):
            return False
        return self.high is None or (x < self.high if self.high_open else x <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high}"
        return (
            f"in {'(' if self.low_open else '['}{self.low}, {self.high}"
            f"{')' if self.high_open else ']'}"
        )


def _at_least(low: float) -> _Range:
    return _Range(low=low)


def _above(low: float) -> _Range:
    return _Range(low=low, low_open=True)


# The groups `sssl train --help` lists the keys in, in this order.
WHAT, SPLIT, STEP = "what is trained", "split (Eq. 2-3)", "step (Eq. 4-9)"
OPTIM, SONG, EVAL, RUN = "optimisation", "song decision (Eq. 10, SVM)", "evaluation", "run"
GROUPS = (WHAT, SPLIT, STEP, OPTIM, SONG, EVAL, RUN)
_UNSET = object()  # "this fact does not apply", where None could be a value


@dataclass(frozen=True)
class Facts:
    """Everything the code needs to know about one config field, declared once beside it.

    group: where `--help` lists it. valid: the range of a numeric field (choices come from its
    `Literal` annotation). after_warmup: no warm-up epoch reads it, so runs that differ only in
    it share their warm-up (warmup.py); a field that does not say so is assumed to act during
    the warm-up, the safe default. legacy: the value that reproduces the training from before
    the field existed, bit for bit; at that value the run digest leaves the field out, so adding
    an option renames no stored result. not_adopted: an alternative measured against the
    default and not adopted (docs/configuration.md has the measurement).
    """

    group: str = ""
    valid: _Range | None = None
    after_warmup: bool = False
    legacy: Any = _UNSET
    not_adopted: Any = _UNSET


def option(
    default: Any,
    group: str = "",
    *,
    valid: _Range | None = None,
    after_warmup: bool = False,
    legacy: Any = _UNSET,
    not_adopted: Any = _UNSET,
) -> Any:
    """A config field with its default and its `Facts`."""
    facts = Facts(group, valid, after_warmup, legacy, not_adopted)
    return field(default=default, metadata={"facts": facts})


def facts_of(cls: type) -> dict[str, Facts]:
    """Every field's facts, in field order; a field declared without `option` has none."""
    return {f.name: f.metadata.get("facts") for f in fields(cls)}


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel front end (paper §3.1: librosa, 22.05 kHz, Hann 1024, hop 512, 128 mels)."""

    sample_rate: int = option(22050, valid=_at_least(1))  # paper §3.1
    n_fft: int = option(1024, valid=_at_least(1))  # paper §3.1 (Hann window of 1024 samples)
    hop_length: int = option(512, valid=_at_least(1))  # paper §3.1
    n_mels: int = option(128, valid=_at_least(1))  # paper §3.1
    # Shortest song kept: the longest segment the paper uses (5 s, §4.1), so one shard set
    # serves every L in 1..5 s. Our choice.
    min_duration_s: float = option(5.0, valid=_above(0))
    # Longest song sharded; longer files are rejected with a reason (one 10-min file would
    # otherwise dominate a shard). Our choice; `sssl predict` has no such limit.
    max_duration_s: float = option(900.0, valid=_above(0))
    # A file whose RMS is below this (dBFS) is "silent" and rejected. Our choice.
    silence_dbfs: float = option(-60.0, valid=_Range(high=0))

    def __post_init__(self) -> None:
        _check_fields(self)
        if self.max_duration_s <= self.min_duration_s:
            raise ValueError(
                f"max_duration_s ({self.max_duration_s}) must exceed "
                f"min_duration_s ({self.min_duration_s})"
            )

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
    # paper Table 3 (Proposed = sssl)
    method: Literal["inherit", "sssl-nokl", "sssl"] = option("sssl", WHAT, after_warmup=True)
    # paper §3: V/A binary, 4Q. What each task decides (targets, losses, the song-level model,
    # metrics) is its object in method/tasks.
    # The *_reg tasks: continuous ratings, regression (method/tasks/regression.py).
    task: Literal["quadrant", "valence", "arousal", "valence_reg", "arousal_reg", "va_reg"] = (
        option("quadrant", WHAT)
    )
    # L; paper Table 2: 3 s best for valence
    segment_seconds: int = option(3, WHAT, valid=_Range(1, 30))
    hop_seconds: int = option(1, WHAT, valid=_at_least(1))  # paper §4.1: overlap is L - 1 s
    # paper uses vgg16; small_cnn for CPU
    backbone: Literal["small_cnn", "vgg16"] = option("small_cnn", WHAT)
    # VGG16 classifier default; also what R-Drop (Eq. 8) perturbs
    dropout: float = option(0.5, WHAT, valid=_Range(0, 1, high_open=True))

    # --- SSSL (Eq. 3-9) --------------------------------------------------------------------
    # clean threshold on w (§2.1.2); DivideMix p_threshold = 0.5
    tau: float = option(
        0.5, SPLIT, valid=_Range(0, 1, low_open=True, high_open=True), after_warmup=True
    )
    # T of Eq. 4; DivideMix / MixMatch T = 0.5
    temperature: float = option(0.5, STEP, valid=_above(0), after_warmup=True)
    # λ of Eq. 9; R-Drop paper's alpha range 0.3-5; our choice 1.0
    lambda_kl: float = option(1.0, STEP, valid=_at_least(0), after_warmup=True)
    # δ ~ Beta(α, α) in Eq. 6; MixMatch default 0.75
    mixup_alpha: float = option(0.75, STEP, valid=_at_least(0), after_warmup=True)
    # What one GMM is fitted over. Per-class (one GMM per inherited class) is the default: the
    # paper's single global GMM let one quadrant vanish from X on our ground-truth corpus;
    # "global" is the paper's own split.
    gmm_scope: Literal["per_class", "global"] = option(
        "per_class", SPLIT, after_warmup=True, not_adopted="global"
    )
    # What the GMM is fitted on. "epoch_loss" is the paper's: this epoch's loss pass.
    # "mean_loss" averages each segment's loss over the SSSL epochs so far (temporal averaging,
    # as AUM does with margins), so one epoch in which the network memorises a wrong label does
    # not pull that segment into X.
    selection: Literal["epoch_loss", "mean_loss"] = option(
        "epoch_loss", SPLIT, after_warmup=True, not_adopted="mean_loss"
    )
    # Which network computes the losses the GMM sees. "current" (the paper): the network as it
    # is at this epoch, which has trained on these very labels. "best_val": the epoch with the
    # highest validation segment accuracy so far (inherited labels, no truth), kept as a copy,
    # after Prestopping (Song et al. 2019, "How does early stopping help generalization against
    # label noise?"): a network stopped before it memorises the wrong labels selects the clean
    # samples for the rest of training (Arpit et al. 2017: networks fit the clean pattern
    # first). "out_of_sample": `scorer_parts` networks trained with plain CE, each on the
    # training songs outside its part, and each segment scored by the one that never saw its
    # song (k-fold scoring, as cleanlab's confident learning computes out-of-sample
    # probabilities). "peer": a second network from other initial weights, trained with the
    # step on the split fitted on the first one's losses, whose losses split the first one's
    # data (DivideMix's co-divide). Both cost their networks' training (scorers.py) and start
    # at the first SSSL epoch, catching up on the warm-up there.
    split_network: Literal["current", "best_val", "out_of_sample", "peer"] = option(
        "current", SPLIT, after_warmup=True, not_adopted="best_val"
    )
    # k of `split_network: out_of_sample`: each scorer trains on (k - 1) / k of the training
    # songs, so k - 1 extra epochs of training per epoch. cleanlab's default is 5; 2 halves
    # the cost on a laptop.
    scorer_parts: int = option(2, SPLIT, valid=_at_least(2), after_warmup=True, legacy=2)
    # What the GMM is fitted on, from those losses (split.py has one function each). "loss"
    # (the paper): the loss itself. "song_relative": the loss minus its song's median loss,
    # because a wrong inherited label comes from an excursion, a minority of its song, while a
    # hard or ambiguous song has high losses everywhere. "smoothed": the mean over the segment
    # and its neighbours in the same song, because excursions are contiguous in time and
    # neighbouring segments share most of their audio. "song_relative_smoothed": both.
    # "song_relative_seconds": the song-relative evidence of each second, recovered from the
    # overlapping segments that cover it, and each segment scored by its median second, the
    # majority rule that decides its true label.
    # "oracle": no GMM; X is the segments whose inherited label is right by the per-second
    # truth, the ceiling a perfect split gives the step (refused on shards without truth).
    split_evidence: Literal[
        "loss",
        "song_relative",
        "smoothed",
        "song_relative_smoothed",
        "song_relative_seconds",
        "oracle",
    ] = option("loss", SPLIT, after_warmup=True, legacy="loss", not_adopted="song_relative_seconds")
    # Which segments X holds per class after the GMM. "none" (the paper): those with w > τ.
    # "uniform": the same number from every class, |X| / C each, highest w first (UNICON's
    # uniform selection, Karim et al. 2022), so a hard class is not starved of labelled
    # segments by one that is easy to fit (split.py: uniform_selection).
    split_balance: Literal["none", "uniform"] = option(
        "none", SPLIT, after_warmup=True, legacy="none"
    )
    # Whether X also takes the segments the network already agrees with. "none" (the paper).
    # "matched": every segment whose inherited label has a predicted probability above
    # `agreement_confidence` joins X (ProMix's matched high-confidence selection, Xiao et al.
    # 2023), so a clean segment the GMM left in U keeps its label (split.py:
    # matched_confident).
    split_agreement: Literal["none", "matched"] = option(
        "none", SPLIT, after_warmup=True, legacy="none"
    )
    # ProMix's threshold (0.99 there).
    agreement_confidence: float = option(
        0.99, SPLIT, valid=_Range(0.5, 1, high_open=True), after_warmup=True, legacy=0.99
    )
    # What X trains on. "inherited" (the paper): each clean segment's inherited label, one-hot.
    # "refined": DivideMix's label refinement, sharpen(w y + (1 - w) p) with w the segment's
    # clean posterior and p the network's prediction, so a wrong label that slipped into X
    # with a borderline w is not trained on at full strength.
    clean_targets: Literal["inherited", "refined"] = option(
        "inherited", STEP, after_warmup=True, not_adopted="refined"
    )
    # The SSSL step's ablation ladder: each rung adds one component to the one before (rung 0
    # is `method: inherit`, CE on every segment). "filter": CE on X only, U dropped, the
    # small-loss baseline of Co-teaching (Han et al. 2018) on the GMM's clean set. "pseudo":
    # X plus U with U's labels replaced by sharpened predictions (Eq. 4-5), no mixup, no
    # R-Drop. "pseudo_mixup": plus mixup (Eq. 6-7). "full": plus R-Drop's KL over U (Eq. 8),
    # the paper's step (Eq. 4-9); `sssl-nokl` drops the KL from it.
    sssl_step: Literal["filter", "pseudo", "pseudo_mixup", "full"] = option(
        "full", STEP, after_warmup=True, legacy="full"
    )
    # Which network predicts U's pseudo-labels (and X's refined targets). "current" (the
    # paper): the network being trained. "ema": an exponential moving average of its weights,
    # the teacher of Mean Teacher (Tarvainen & Valpola 2017), whose targets do not chase the
    # student's last few steps. The average starts from the network at the first SSSL epoch.
    # The default since it met the rule for a new default with `bn_stats: clean` (10 folds, L = 1
    # and L = 3, docs/configuration.md); the paper's value is one key away.
    pseudo_label_network: Literal["current", "ema"] = option(
        "ema", STEP, after_warmup=True, legacy="current"
    )
    # α of the teacher's update θ' <- α θ' + (1 - α) θ after every optimiser step. Mean Teacher
    # uses 0.99 in its ramp-up and 0.999 later; 0.99 (a memory of ~100 steps, about one epoch
    # of 200 songs at L = 3) because our SSSL phase lasts a few epochs, not 10^5 steps.
    ema_decay: float = option(
        0.99, STEP, valid=_Range(0, 1, high_open=True), after_warmup=True, legacy=0.99
    )
    # Where BatchNorm's running statistics (what eval mode normalises with: loss pass,
    # validation, prediction) come from in SSSL epochs. "running" (PyTorch's): the training
    # forwards, whose inputs are mixed (Eq. 6) and never seen at evaluation. "clean":
    # recomputed after each SSSL epoch's last step on `bn_stats_segments` unmixed training
    # segments, with the epoch's final weights: PreciseBN (Wu & Johnson 2021) and SWA's
    # update_bn (Izmailov et al. 2018). Training still normalises with batch statistics.
    # The default together with `pseudo_label_network: ema` (above); "running" is the paper's.
    bn_stats: Literal["running", "clean"] = option(
        "clean", STEP, after_warmup=True, legacy="running"
    )
    # PreciseBN finds population statistics from a few thousand samples accurate; our choice,
    # about one pass over the training segments of 200 songs at L = 3.
    bn_stats_segments: int = option(4096, STEP, valid=_at_least(1), after_warmup=True, legacy=4096)
    # The optimiser at the switch to SSSL. "keep": Adam's moments (SGD's momentum) carry on
    # from the warm-up. "reset": cleared at the first SSSL epoch, as a fresh optimiser would
    # be, because they were estimated on the warm-up's CE, not on Eq. 9. Our choice to measure.
    sssl_optimizer: Literal["keep", "reset"] = option(
        "keep", STEP, after_warmup=True, legacy="keep", not_adopted="reset"
    )
    # The SSSL epochs' learning rate as a multiple of the schedule's (1: the same): a smaller
    # step once the loss changes, as in fine-tuning. Our choice to measure.
    sssl_lr_scale: float = option(1.0, STEP, valid=_above(0), after_warmup=True, legacy=1.0)
    # Which samples mixup (Eq. 6) pairs. "all" (the paper, MixMatch and DivideMix): partners
    # from X ∪ Û. "clean": X with X only, Û trained unmixed, so no inherited label is ever
    # blended with a pseudo-label (MixMatch's mixing without its unlabelled half).
    mixup_scope: Literal["all", "clean"] = option(
        "all", STEP, after_warmup=True, legacy="all", not_adopted="clean"
    )
    # How R-Drop's two passes over U (Eq. 8) are run. "separate" (the paper, R-Drop): U is
    # twice in the step's batch and goes through the whole network twice. "shared": the layers
    # without dropout (SmallCNN's trunk, VGG16's convolutions) run once on U and the head that
    # holds the dropouts runs twice, so the two sub-models still differ by their dropout
    # masks. Only BatchNorm's batch statistics change: they count U once instead of twice.
    # Less work per step, since the trunk is most of it. Our choice to measure.
    rdrop_trunk: Literal["separate", "shared"] = option(
        "separate", STEP, after_warmup=True, legacy="separate"
    )
    # warn when a class is under 5 % of X; our choice
    min_class_share: float = option(0.05, SPLIT, valid=_Range(0, 1), after_warmup=True)
    gmm_max_iter: int = option(10, SPLIT, valid=_at_least(1), after_warmup=True)  # DivideMix
    gmm_tol: float = option(1e-2, SPLIT, valid=_above(0), after_warmup=True)  # DivideMix
    gmm_reg_covar: float = option(5e-4, SPLIT, valid=_at_least(0), after_warmup=True)  # DivideMix
    # Above this many losses EM runs on a strided subsample and the posteriors are computed for
    # all (the full fit takes seconds at 10^7 losses). Our choice; below it nothing changes, and
    # at 10^7 it changes 0.004 % of the assignments (docs/configuration.md).
    gmm_max_fit: int = option(200_000, SPLIT, valid=_at_least(2), after_warmup=True)
    # Where the GMM is fitted each SSSL epoch. "driver": a service the driver owns (the design
    # card's "driver-side GMM"), which keeps the split history through worker restarts.
    # "rank0": on rank 0 itself, with no object-store round trip. Same split either way.
    gmm_site: Literal["driver", "rank0"] = option("driver", RUN, after_warmup=True)

    # Which label every training segment is trained on. "inherited" (the paper's premise): its
    # clip's label. "truth": its own label by the per-second truth, the ceiling no split can
    # pass (with `method: inherit`, the `oracle-labels` arm of `sssl compare`); refused on
    # shards without truth. Validation keeps the inherited labels, so every arm selects its
    # epoch the same way.
    train_labels: Literal["inherited", "truth"] = option("inherited", WHAT, legacy="inherited")

    # --- optimisation ----------------------------------------------------------------------
    # plain CE before the first split (DivideMix warm-up); our choice
    warmup_epochs: int = option(3, OPTIM, valid=_at_least(0))
    # total epochs including warm-up; our choice for the embedded corpus
    epochs: int = option(12, OPTIM, valid=_at_least(1))
    # global batch, split evenly across DDP workers; our choice
    batch_size: int = option(64, OPTIM, valid=_at_least(1))
    # paper silent; Adam trains the CNNs robustly
    optimizer: Literal["adam", "sgd"] = option("adam", OPTIM)
    lr: float = option(1e-3, OPTIM, valid=_above(0))  # Adam default
    weight_decay: float = option(5e-4, OPTIM, valid=_at_least(0))  # DivideMix
    # Learning rate by epoch. "constant" (the paper is silent): lr throughout. "cosine":
    # lr * (1 + cos(pi * epoch / epochs)) / 2, cosine annealing without restarts (Loshchilov &
    # Hutter 2017), so late epochs take small steps instead of jumping between minima.
    lr_schedule: Literal["constant", "cosine"] = option("constant", OPTIM, not_adopted="cosine")
    momentum: float = option(0.9, OPTIM, valid=_Range(0, 1, high_open=True))  # used by SGD only

    # Which epoch's network makes the fold's segment predictions, song decision and exported
    # model. "last": the final epoch (the paper's, which is silent). "best_val" (default): the
    # epoch with the highest segment accuracy on the validation songs (inherited labels: no
    # truth is used), because the network gets worse as it memorises wrong labels (measured:
    # docs/configuration.md).
    eval_epoch: Literal["last", "best_val"] = option("best_val", OPTIM, after_warmup=True)

    # --- song-level decision (Eq. 10 + SVM, §2.2) -------------------------------------------
    # θ of f7 in Eq. 10; paper: "low sensitivity ... empirical"; our choice
    theta: float = option(0.5, SONG, valid=_Range(0, 1), after_warmup=True)
    svm_c: float = option(1.0, SONG, valid=_above(0), after_warmup=True)  # scikit-learn default
    # scikit-learn default
    svm_kernel: Literal["rbf", "linear"] = option("rbf", SONG, after_warmup=True)
    # What the SVM learns from. "in_sample" (the paper): Eq. 10 features of the training songs
    # from the network that trained on them, more confident than an unseen song's. "cross_fit":
    # each training song's features come from a network trained without it (the training songs
    # split into `cross_fit_parts` song-grouped parts, one extra run per part), the stacking
    # practice of Wolpert 1992 and cleanlab's out-of-sample rule.
    svm_features: Literal["in_sample", "cross_fit"] = option(
        "in_sample", SONG, after_warmup=True, not_adopted="cross_fit"
    )
    cross_fit_parts: int = option(2, SONG, valid=_at_least(2), after_warmup=True)

    # --- evaluation ------------------------------------------------------------------------
    n_folds: int = option(10, EVAL, valid=_at_least(2))  # paper §4.3: ten-fold cross-validation
    # songs held out inside each training fold for honest selection
    val_fraction: float = option(0.1, EVAL, valid=_Range(0, 1, high_open=True))
    seed: int = option(0, EVAL, valid=_at_least(0))

    # --- execution -------------------------------------------------------------------------
    # per worker on CPU: two workers on two cores must not oversubscribe
    torch_threads: int = option(1, RUN, valid=_at_least(1))
    # bf16 autocast on the worker device: true, false, or "auto": on where the device does bf16
    # fast (a GPU that supports it; a CPU with AMX or AVX512-BF16 where a short probe of the
    # training step at start-up is faster than fp32: precision.py). Off by default so that a
    # result is the same on every machine; the GMM always sees float32 losses.
    bf16: bool | Literal["auto"] = option(False, RUN)
    # Ray Train FailureConfig: worker restarts before the run fails
    max_failures: int = option(0, RUN, valid=_at_least(-1), after_warmup=True)
    # torch.distributed timeout (Ray's default), NCCL or gloo: the longest a rank may wait in
    # one collective. Checkpoints are waited for outside collectives (train.after_checkpoint);
    # the longest wait left is rank 0's GMM step, ~1 s per 10^6 losses. Tests shorten it.
    gloo_timeout_s: int = option(1800, RUN, valid=_at_least(1), after_warmup=True)

    def __post_init__(self) -> None:
        _check_fields(self)
        if self.warmup_epochs > self.epochs:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs}) must not exceed epochs ({self.epochs})"
            )
        if self.split_network == "best_val" and self.val_fraction <= 0:
            raise ValueError("split_network 'best_val' needs validation songs: val_fraction > 0")
        if self.split_network == "peer" and self.selection == "mean_loss":
            # The loss memory belongs to one network's losses; the peer's split has none.
            raise ValueError("split_network 'peer' fits on each epoch's losses: drop selection")

    @property
    def needs_truth(self) -> bool:
        """Whether this run reads the per-second truth to train (the ceiling arms), not only
        to report against it."""
        return self.split_evidence == "oracle" or self.train_labels == "truth"


# The tables the code reads, derived from the fields' facts (one declaration per field).
_SSSL_FACTS = facts_of(SSSLConfig)
FIELD_GROUPS: dict[str, tuple[str, ...]] = {
    g: tuple(name for name, f in _SSSL_FACTS.items() if f and f.group == g) for g in GROUPS
}
NOT_ADOPTED: dict[str, Any] = {
    name: f.not_adopted for name, f in _SSSL_FACTS.items() if f and f.not_adopted is not _UNSET
}
AFTER_WARMUP: tuple[str, ...] = tuple(n for n, f in _SSSL_FACTS.items() if f and f.after_warmup)


C = TypeVar("C", FeatureConfig, SSSLConfig)


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    # The module uses postponed annotations, so resolve the strings once per class.
    return get_type_hints(cls)


def choices(name: str, cls: type = SSSLConfig) -> tuple[str, ...]:
    """The values a choice field allows, read from its `Literal` annotation."""
    hint = _field_types(cls)[name]
    if get_origin(hint) is not Literal:
        raise ValueError(f"{cls.__name__}.{name} is not a choice field")
    return get_args(hint)


METHODS = choices("method")
TASKS = choices("task")
BACKBONES = choices("backbone")


def _switch_words(hint: Any) -> tuple[str, ...] | None:
    """The words of a `bool | Literal[...]` field (a switch with named extra settings, e.g.
    bf16: true, false or "auto"); None for any other annotation."""
    parts = get_args(hint) if get_origin(hint) in (Union, UnionType) else ()
    words = [get_args(p) for p in parts if get_origin(p) is Literal]
    if bool not in parts or len(words) != 1 or len(parts) != 2:
        return None
    return words[0]


def _check_fields(cfg: FeatureConfig | SSSLConfig) -> None:
    """Refuse a value of the wrong type, outside its choices or outside its range."""
    ranges = {n: f.valid for n, f in facts_of(type(cfg)).items() if f and f.valid is not None}
    for name, hint in _field_types(type(cfg)).items():
        value = getattr(cfg, name)
        words = _switch_words(hint)
        if words is not None:
            if not (isinstance(value, bool) or (isinstance(value, str) and value in words)):
                raise ValueError(f"{name} must be true, false or one of {words}, got {value!r}")
            continue
        if get_origin(hint) is Literal:
            if value not in get_args(hint):
                raise ValueError(f"{name} must be one of {get_args(hint)}, got {value!r}")
            continue
        if hint is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, got {value!r}")
            continue
        # bool is a subclass of int, but `epochs: true` is a mistake, not 1.
        if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        if hint is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if name in ranges and value not in ranges[name]:
            raise ValueError(f"{name} must be {ranges[name]}, got {value!r}")


# Keys that were renamed, so an old config file gets a message instead of a bare "unknown key".
# "split" named three things (fold split, clean/noisy split, this field); now it names only the
# clean/noisy split of the training segments.
_RENAMED = {"split": "gmm_scope"}


def config_digest(cfg: FeatureConfig | SSSLConfig) -> str:
    """Short hash of every field: work done under other settings is never reused for these.

    A field at its `legacy` value (Facts) stays out, so adding an option renames no stored
    result. The legacy values are declared, not read from the defaults, so that changing a
    default changes the default's digest: a result trained under the old default is never
    reused for the new one."""
    data = dataclasses.asdict(cfg)
    for name, facts in facts_of(type(cfg)).items():
        if facts and facts.legacy is not _UNSET and data[name] == facts.legacy:
            del data[name]
    blob = json.dumps(data, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def to_dict(cfg: FeatureConfig | SSSLConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Build a config from a dict, refusing unknown keys (a typo must not pass silently)."""
    names = {f.name for f in fields(cls)}
    for old, new in _RENAMED.items():
        if old in data and old not in names:
            raise ValueError(f"config key {old!r} was renamed to {new!r}: please rename it")
    unknown = sorted(set(data) - names, key=str)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {unknown}; known: {sorted(names)}")
    return cls(**{k: _coerce(cls, k, v) for k, v in data.items()})


def _coerce(cls: type, name: str, value: Any) -> Any:
    """Coerce strings (`--set tau=0.6`, or `lr: 1e-3`, which YAML reads as a string) to the
    field's type; other values are checked as they are by the config itself."""
    hint = _field_types(cls)[name]
    words = _switch_words(hint)
    if isinstance(value, str) and words is not None:
        if value.lower() in words:
            return value.lower()
        if value.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise ValueError(f"{name} expects true, false or one of {words}, got {value!r}")
        hint = bool
    if not isinstance(value, str) or hint not in (bool, int, float):
        return value
    if hint is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name} expects a boolean, got {value!r}")
    try:
        return hint(value)
    except ValueError:
        kind = "an integer" if hint is int else "a number"
        raise ValueError(f"{name} expects {kind}, got {value!r}") from None


def with_overrides(cfg: C, overrides: dict[str, Any]) -> C:
    merged = to_dict(cfg)
    merged.update(overrides)
    return from_dict(type(cfg), merged)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`["tau=0.6", "method=inherit"]` -> {"tau": "0.6", "method": "inherit"}. A key given
    twice is refused, as in a YAML file: the later value would silently replace the earlier."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"override {pair!r} is not KEY=VALUE")
        if key.strip() in out:
            raise ValueError(f"override {key.strip()!r} is given twice: give each key once")
        out[key.strip()] = value.strip()
    return out


CONFIG_DIR = Path(__file__).parent / "configs"
# The paper's own variant where our defaults differ (one config value away).
PAPER_CONFIG = CONFIG_DIR / "paper_global_split.yaml"


def packaged_configs() -> list[str]:
    """Names of the configs shipped in the package, for `--config NAME`."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def config_file(name_or_path: str | Path) -> Path:
    """A config file given as a path, or as the name of a packaged config (`vgg16_gpu`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    # Only a bare name falls back to the package: a mistyped path must not load another file.
    if (
        path.parent == Path(".")
        and path.stem in packaged_configs()
        and path.suffix in ("", ".yaml")
    ):
        return CONFIG_DIR / f"{path.stem}.yaml"
    raise FileNotFoundError(
        f"config {str(name_or_path)!r} is neither a file nor a packaged config "
        f"(packaged: {', '.join(packaged_configs())})"
    )


def read_config_file(name_or_path: str | Path) -> dict[str, Any]:
    """The keys a YAML/JSON config file sets (the rest stay at their defaults)."""
    path = config_file(name_or_path)
    data = load_yaml(path, "config file") or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config keys")
    return data


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> SSSLConfig:
    """Read a config file or packaged config (or the defaults when path is None), then apply
    overrides."""
    data = read_config_file(path) if path is not None else {}
    data.update(overrides or {})
    return from_dict(SSSLConfig, data)


def save_config(cfg: FeatureConfig | SSSLConfig, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
