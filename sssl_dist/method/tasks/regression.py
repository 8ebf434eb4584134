"""Regression: continuous valence and/or arousal, as MARBLE and Music2Emo report these data
sets (R²), trained with SSSL adapted to real-valued targets.

Targets are on one common scale, [-1, 1] (COMMON_SCALE), whatever the data set's own (PMEmo
[0, 1], EmoMusic and DEAM static [1, 9], dynamic [-1, 1]), so one network and one loss serve
every data set; song predictions are mapped back to the data set's own scale, and every output
names the scale it is on. The paper's step on classes is left as it is (classification.py);
each adaptation below is one function with its reason and source:

- `squared_errors`: the per-segment loss the GMM splits (the CE of Eq. 2 has no meaning for a
  real target; DivideMix's small-loss criterion applies to any per-sample loss).
- `teacher_targets`: U's targets are the teacher's predictions as they are. Sharpening (Eq. 4)
  pushes a distribution towards one class; a real value has no such direction (Mean Teacher,
  Tarvainen & Valpola 2017, uses the teacher's output as the consistency target unchanged).
- `mixup` (equations.py, Eq. 6) mixes inputs and targets with the same δ: mixup is defined for
  any target vector (Zhang et al. 2018), and a linear mix of two ratings is a rating.
- `rdrop_mse`: R-Drop's consistency between two dropout passes (Liang et al. 2021), as the mean
  squared difference of the two predictions: R-Drop's symmetric KL is defined between two
  distributions, and a rating is not one; the squared difference of two stochastic passes is
  the consistency term of the Π-model (Laine & Aila 2017, "Temporal ensembling"), whose passes
  differ by dropout as R-Drop's do.

Song level: Eq. 10's features of the segment predictions into an SVR per output (the paper's
SVM, for values), beside the plain mean of the segment predictions. Metrics: R², Lin's CCC,
RMSE and Pearson r at song level, and at segment level against the per-second truth where the
data set has dynamic annotations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import pearsonr
from sklearn.metrics import mean_squared_error, r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR
from torch import nn

from sssl_dist.config import SSSLConfig
from sssl_dist.data.segments import SegmentTable
from sssl_dist.data.targets import CLASS_NAMES
from sssl_dist.method.equations import mixup, total_loss
from sssl_dist.method.song import song_features
from sssl_dist.method.step import StepLosses, _predict
from sssl_dist.method.tasks import Compared

COMMON_SCALE = (-1.0, 1.0)  # every regression target and network output is on this scale
DIMENSIONS = ("valence", "arousal")


def to_common(value: float, scale: tuple[float, float]) -> float:
    """A rating on `scale` (low, high) -> COMMON_SCALE (the scale's midpoint -> 0)."""
    (low, high), (c_low, c_high) = scale, COMMON_SCALE
    return c_low + (value - low) / (high - low) * (c_high - c_low)


def from_common(value: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """COMMON_SCALE -> the data set's own `scale` (the inverse of `to_common`)."""
    (low, high), (c_low, c_high) = scale, COMMON_SCALE
    return low + (np.asarray(value, dtype=np.float64) - c_low) / (c_high - c_low) * (high - low)


@dataclass(frozen=True)
class ValueTargets:
    """The continuous ratings of `dims` on the common scale: each song's static rating, each
    segment's mean over its seconds of the dynamic rating (NaN = unknown unless every second of
    the segment is rated). An inherited rating is "wrong" where it lies on the other side of
    the midpoint than the segment's own rating in any dimension: the sign the classification
    tasks' truth is cut at, so the noise AUC means the same for both."""

    dims: tuple[str, ...]
    strata_key: str  # the class label the folds stratify by (the sign of the rating)
    dtype: Any = np.float32
    unknown: float = float("nan")

    @property
    def strata_names(self) -> tuple[str, ...]:
        return CLASS_NAMES[self.strata_key]

    def song_target(self, song: dict[str, Any]) -> list[float]:
        scale = song.get("value_scale")
        values = [song.get(f"{d}_value") for d in self.dims]
        if scale is None or any(v is None for v in values):
            raise ValueError(
                f"song {song.get('song_id')!r} has no continuous {'/'.join(self.dims)} rating: "
                "regression needs shards with static values (PMEmo, DEAM, EmoMusic, or a "
                "manifest with continuous columns)"
            )
        return [to_common(float(v), tuple(scale)) for v in values]

    def segment_truth(self, song: dict[str, Any], start: int, length_s: int) -> list[float]:
        scale = song.get("curve_scale")
        out = []
        for d in self.dims:
            curve = song.get(f"{d}_curve") or ()
            seconds = list(curve[start : start + length_s])
            if scale is None or len(seconds) < length_s or any(v is None for v in seconds):
                out.append(self.unknown)
            else:
                out.append(to_common(float(np.mean(seconds)), tuple(scale)))
        return out

    def wrong(self, label: np.ndarray, true_label: np.ndarray) -> np.ndarray:
        label, true_label = np.atleast_2d(label.T).T, np.atleast_2d(true_label.T).T
        known = np.isfinite(true_label).all(axis=-1)
        flipped = ((label > 0) != (true_label > 0)).any(axis=-1)
        return np.where(known, flipped.astype(int), -1)


# ------------------------------------------------------------------ the adaptations, one each
def squared_errors(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-segment loss [B]: the squared error summed over the outputs, outputs and targets
    [B, D]. What the GMM splits, as the CE of Eq. 2 does for classes."""
    return ((outputs.float() - targets.float()) ** 2).sum(dim=-1)


def teacher_targets(predictions: torch.Tensor) -> torch.Tensor:
    """U's targets [B, D]: the teacher's predictions unchanged (no sharpening: Eq. 4 has no
    counterpart for a real value)."""
    return predictions.detach()


def rdrop_mse(pred1: torch.Tensor, pred2: torch.Tensor) -> torch.Tensor:
    """R-Drop's consistency for regression: mean over U of the squared difference of two
    dropout passes' predictions [B, D], summed over outputs. Empty U gives 0."""
    if pred1.shape[0] == 0:
        return pred1.sum() * 0.0
    return ((pred1 - pred2) ** 2).sum(dim=-1).mean()


def mse_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The supervised loss (warm-up and the mixed batch): mean squared error summed over outputs;
    empty gives 0."""
    if outputs.shape[0] == 0:
        return outputs.sum() * 0.0
    return squared_errors(outputs, targets).mean()


# ------------------------------------------------------------------------------- the metrics
def ccc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Lin's concordance correlation coefficient (Lin 1989):
    2 cov(y, p) / (var(y) + var(p) + (mean(y) - mean(p))^2), population moments."""
    y, p = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    cov = np.mean((y - y.mean()) * (p - p.mean()))
    denom = y.var() + p.var() + (y.mean() - p.mean()) ** 2
    return float(2 * cov / denom) if denom > 0 else float("nan")


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """R² (scikit-learn's, as MARBLE and Music2Emo report), CCC, RMSE, Pearson r of one output."""
    y, p = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    constant = y.size < 2 or np.ptp(y) == 0 or np.ptp(p) == 0
    return {
        "r2": float(r2_score(y, p)) if y.size >= 2 else float("nan"),
        "ccc": ccc(y, p),
        "rmse": float(math.sqrt(mean_squared_error(y, p))),
        "pearson": float("nan") if constant else float(pearsonr(y, p)[0]),
    }


def moment_sums(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[n, Σp, Σp², Σy, Σy², Σpy] of one output over the segments whose target is known: sums
    that add up over ranks, from which R², CCC, RMSE and r follow (`metrics_of_sums`)."""
    known = np.isfinite(target)
    p, y = pred[known].astype(np.float64), target[known].astype(np.float64)
    return np.array([p.size, p.sum(), (p * p).sum(), y.sum(), (y * y).sum(), (p * y).sum()])


def metrics_of_sums(s: np.ndarray) -> dict[str, float]:
    """R², CCC, RMSE and Pearson r from `moment_sums` (population moments)."""
    n, sp, spp, sy, syy, spy = s
    if n < 2:
        return {}
    mp, my = sp / n, sy / n
    vp, vy, cov = spp / n - mp * mp, syy / n - my * my, spy / n - mp * my
    mse = (spp - 2 * spy + syy) / n
    return {
        "r2": 1 - mse / vy if vy > 0 else float("nan"),
        "ccc": 2 * cov / (vp + vy + (mp - my) ** 2) if vp + vy > 0 else float("nan"),
        "rmse": math.sqrt(max(mse, 0.0)),
        "pearson": cov / math.sqrt(vp * vy) if vp > 0 and vy > 0 else float("nan"),
    }


# -------------------------------------------------------------------------------- the song level
@dataclass
class SongRegressor:
    """Standardisation + SVR per output on Eq. 10 features (the paper's SVM, for values)."""

    c: float = 1.0
    kernel: str = "rbf"

    def fit(self, features: np.ndarray, targets: np.ndarray) -> SongRegressor:
        self.train_features = np.asarray(features, dtype=np.float64)
        self.train_targets = np.atleast_2d(np.asarray(targets, dtype=np.float64).T).T
        self._pipes = [
            make_pipeline(StandardScaler(), SVR(C=self.c, kernel=self.kernel)).fit(
                self.train_features, self.train_targets[:, d]
            )
            for d in range(self.train_targets.shape[1])
        ]
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(features, dtype=np.float64))
        return np.stack([p.predict(x) for p in self._pipes], axis=1)

    def predict_outputs(self, features: np.ndarray) -> np.ndarray:
        """[n, 7K] -> [n, D] on the common scale (a task's song model)."""
        return self.predict(features)


@dataclass(frozen=True)
class Regression:
    """One regression task over the rating dimensions `dims`."""

    name: str
    targets: ValueTargets
    selection_key: str = "val_seg_r2"
    table_keys: tuple[str, ...] = (
        "test_r2",
        "test_ccc",
        "test_rmse",
        "test_pearson",
        "test_mean_r2",
        "val_seg_ccc_truth",
        "noise_auc",
    )

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.targets.dims

    @property
    def num_outputs(self) -> int:
        return len(self.targets.dims)

    def segment_losses(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return squared_errors(outputs, targets)

    def warmup_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepLosses:
        loss = mse_loss(model(x).float(), y)
        return StepLosses(loss, float(loss.detach()), 0.0, int(y.shape[0]), 0)

    def pseudo_targets(self, predictions: torch.Tensor, cfg: SSSLConfig) -> torch.Tensor:
        return teacher_targets(predictions)

    def step_loss(
        self,
        model: nn.Module,
        teacher: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        clean_w: torch.Tensor,
        cfg: SSSLConfig,
        generator: torch.Generator | None = None,
    ) -> StepLosses:
        """X keeps its ratings, U takes the teacher's; mixup over X ∪ U; R-Drop's MSE over U;
        total = L_mix + λ L_rdrop (Eq. 9's form). One forward call through `model`, as the
        classification step (DDP)."""
        clean = clean_w > 0
        x_clean, x_noisy = x[clean], x[~clean]
        y_noisy = (
            self.pseudo_targets(_predict(teacher, x_noisy, _identity), cfg)
            if x_noisy.shape[0]
            else y[:0]
        )
        inputs, targets = mixup(
            torch.cat([x_clean, x_noisy]),
            torch.cat([y[clean].float(), y_noisy.float()]),
            cfg.mixup_alpha,
            generator,
        )[:2]
        use_rdrop = cfg.method == "sssl" and cfg.lambda_kl > 0
        b, m = inputs.shape[0], x_noisy.shape[0]
        batch = torch.cat([inputs, x_noisy, x_noisy]) if use_rdrop else inputs
        out = model(batch).float()
        l_mix = mse_loss(out[:b], targets)
        l_rdrop = rdrop_mse(out[b : b + m], out[b + m :]) if use_rdrop else out.sum() * 0.0
        loss = total_loss(l_mix, l_rdrop, cfg.lambda_kl if use_rdrop else 0.0)
        n_x = int(clean.sum())
        return StepLosses(loss, float(l_mix.detach()), float(l_rdrop.detach()), n_x, m)

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs  # on the common scale

    def split_groups(self, table: SegmentTable) -> tuple[np.ndarray, int]:
        # One GMM per sign pattern of the inherited rating (each dimension above or below the
        # midpoint), the counterpart of one GMM per inherited class.
        label = np.atleast_2d(table.label.T).T
        bits = (label > 0).astype(np.int64)
        return bits @ (2 ** np.arange(bits.shape[1])), 2 ** bits.shape[1]

    def segment_scores(
        self, outputs: torch.Tensor, label: np.ndarray, true_label: np.ndarray
    ) -> np.ndarray:
        pred = outputs.float().detach().cpu().numpy().reshape(-1, self.num_outputs)
        label = np.asarray(label).reshape(-1, self.num_outputs)
        truth = np.asarray(true_label).reshape(-1, self.num_outputs)
        return np.concatenate(
            [moment_sums(pred[:, d], t[:, d]) for t in (label, truth) for d in range(pred.shape[1])]
        )

    def segment_metrics(self, scores: list[float]) -> dict[str, float]:
        """val_seg_<metric> (mean over outputs) against the inherited ratings, and
        val_seg_<metric>_truth against the per-second truth where it is known."""
        s = np.asarray(scores).reshape(2, self.num_outputs, 6)
        out: dict[str, float] = {}
        for which, suffix in ((0, ""), (1, "_truth")):
            per = [metrics_of_sums(s[which, d]) for d in range(self.num_outputs)]
            if all(per):
                for key in per[0]:
                    out[f"val_seg_{key}{suffix}"] = float(np.mean([m[key] for m in per]))
        return out

    def check_config(self, cfg: SSSLConfig) -> None:
        """The regression step is the full one (mixup over X ∪ U, R-Drop over U); the step
        options measured on classes (the ablation ladder, refined targets, mixing X only, the
        shared trunk) have no regression counterpart yet, so a value other than the default is
        refused rather than ignored."""
        fixed = {
            "sssl_step": "full",
            "clean_targets": "inherited",
            "mixup_scope": "all",
            "rdrop_trunk": "separate",
            "split_agreement": "none",  # reads class probabilities
        }
        for key, value in fixed.items():
            if getattr(cfg, key) != value:
                raise ValueError(
                    f"task {self.name} implements {key} {value!r} only, got "
                    f"{getattr(cfg, key)!r}: drop the setting for a regression task"
                )

    def song_model(
        self, cfg: SSSLConfig, features: np.ndarray, targets: np.ndarray
    ) -> SongRegressor:
        y = np.asarray(targets, dtype=np.float64).reshape(len(features), -1)
        if y.shape[1] != self.num_outputs or not np.isfinite(y).all():
            raise ValueError(
                f"svm_labels must be {len(features)} x {self.num_outputs} finite ratings for "
                f"task {self.name!r}, got shape {list(np.shape(targets))}"
            )
        return SongRegressor(cfg.svm_c, cfg.svm_kernel).fit(features, y)

    def output_scale(self, songs: list[dict]) -> list[float] | None:
        return list(_one_scale(songs))

    def columns(self, outputs: np.ndarray, scale: list[float] | None) -> list[dict[str, float]]:
        values = from_common(np.asarray(outputs).reshape(-1, self.num_outputs), tuple(scale))
        return [dict(zip(self.output_names, map(float, v), strict=True)) for v in values]

    def decision(
        self, song_outputs: np.ndarray, scale: list[float] | None
    ) -> tuple[str, float | None]:
        values = self.columns(np.asarray(song_outputs)[None], scale)[0]
        said = ", ".join(f"{k} {v:.2f}" for k, v in values.items())
        return f"{said} (scale {scale[0]:g}-{scale[1]:g})", None

    def compared(self, songs: list[dict], rope: float) -> tuple[Compared, ...]:
        """Song R² first (what MARBLE and Music2Emo report), then CCC, RMSE (as its reduction,
        its ROPE `rope` of the scale's width, in the scale's unit) and r; the segments' CCC
        against the truth and the noise AUC where the shards have truth. R², CCC and r are
        unitless: their ROPE is `rope` itself."""
        low, high = _one_scale(songs)
        on = f" on the [{low:g}, {high:g}] scale"
        unitless = {"scale": 1.0, "unit": "", "digits": 3}
        return (
            Compared("test_r2", "song R²", rope, span=math.inf, **unitless),
            Compared("test_ccc", "song CCC", rope, span=2.0, **unitless),
            Compared(
                "test_rmse",
                f"song RMSE reduction{on}",
                rope * (high - low),
                span=high - low,
                lower_is_better=True,
                scale=1.0,
                unit=on,
                digits=3,
            ),
            Compared("test_pearson", "song Pearson r", rope, span=2.0, **unitless),
            Compared(
                "val_seg_ccc_truth",
                "segment CCC against the truth",
                rope,
                span=2.0,
                truth_only=True,
                **unitless,
            ),
            Compared("noise_auc", "noise AUC", rope, truth_only=True),
        )

    def song_results(
        self,
        cfg: SSSLConfig,
        songs_by_id: dict[str, dict],
        predictions: dict[str, list],
        fold_ids: dict[str, list[str]],
        train_predictions: dict[str, list] | None = None,
    ) -> dict[str, Any]:
        """Eq. 10 features -> SVR per output, and the mean of the segment predictions beside
        it; metrics per output on the data set's own scale (`<part>_<dim>_<metric>`, the SVR;
        `<part>_<dim>_mean_<metric>`, the plain mean) and their mean over outputs
        (`<part>_<metric>`); the scale they are on is named in `scale`."""
        learn_from = predictions if train_predictions is None else train_predictions
        feats = lambda p, s: song_features(np.asarray(p[s]), cfg.theta)  # noqa: E731
        train_ids = fold_ids["train"]
        y_train = np.array([self.targets.song_target(songs_by_id[s]) for s in train_ids])
        svr = SongRegressor(cfg.svm_c, cfg.svm_kernel).fit(
            np.stack([feats(learn_from, s) for s in train_ids]), y_train
        )
        scale = _one_scale([songs_by_id[s] for ids in fold_ids.values() for s in ids])
        out: dict[str, Any] = {"scale": list(scale), "outputs": list(self.output_names)}
        for part in ("val", "test"):
            ids = fold_ids[part]
            if not ids:
                continue
            y = from_common([self.targets.song_target(songs_by_id[s]) for s in ids], scale).reshape(
                len(ids), -1
            )
            by_svr = from_common(svr.predict(np.stack([feats(predictions, s) for s in ids])), scale)
            by_mean = from_common(
                np.stack([np.asarray(predictions[s]).mean(axis=0) for s in ids]), scale
            ).reshape(len(ids), -1)
            for kind, pred in (("", by_svr), ("mean_", by_mean)):
                per = [regression_metrics(y[:, d], pred[:, d]) for d in range(self.num_outputs)]
                for d, dim in enumerate(self.output_names):
                    for key, v in per[d].items():
                        out[f"{part}_{dim}_{kind}{key}"] = v
                for key in per[0]:
                    out[f"{part}_{kind}{key}"] = float(np.mean([m[key] for m in per]))
            out[f"{part}_songs"] = len(ids)
            out[f"{part}_true"] = dict(zip(ids, y.tolist(), strict=True))
            out[f"{part}_pred"] = dict(zip(ids, by_svr.tolist(), strict=True))
        return out


def _identity(outputs: torch.Tensor) -> torch.Tensor:
    return outputs


def _one_scale(songs: list[dict]) -> tuple[float, float]:
    """The one static scale of a fold's songs (a shard set mixes no data sets' scales)."""
    scales = {tuple(s["value_scale"]) for s in songs if s.get("value_scale") is not None}
    if len(scales) != 1:
        raise ValueError(f"the songs' static ratings must share one scale, found {sorted(scales)}")
    return scales.pop()


TASKS = {
    "valence_reg": Regression("valence_reg", ValueTargets(("valence",), "valence")),
    "arousal_reg": Regression("arousal_reg", ValueTargets(("arousal",), "arousal")),
    "va_reg": Regression("va_reg", ValueTargets(("valence", "arousal"), "quadrant")),
}
