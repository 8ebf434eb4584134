"""Cross-validation: run the folds of one configuration and write (or rebuild) its report
directory; compare methods on identical folds.

Folds run one after another here (each fold is itself data-parallel over the workers), or
with `parallel` > 1 side by side (parallel.py); `tuning/` runs folds side by side as Ray Tune
trials. All three train a fold with `run_fold`.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from sssl_dist.config import SSSLConfig, from_dict, save_config, with_overrides
from sssl_dist.crossfit import SVM_SONGS_FILE
from sssl_dist.data import ShardSet
from sssl_dist.export import export_model
from sssl_dist.fold import FoldRun, refit_song_ids, run_digest, run_fold, run_name
from sssl_dist.parallel import Unit, run_units_parallel
from sssl_dist.stats import mean_std, paired_difference
from sssl_dist.warmup import warmup_key, warmup_source

log = logging.getLogger(__name__)

# What a report's fold-K/ directory holds (copied off the final checkpoint).
FOLD_FILES = ("result.json", "history.json", "songs.json", "fold_ids.json")
# The song-level numbers a report table shows, in this order.
HEADLINE = (
    "test_acc",
    "test_f1",
    "test_majority_acc",
    "test_vote_acc",
    "test_brier",
    "test_ece",
    "test_feature_shift",
    "val_acc",
    "val_seg_acc_truth",
    "noise_auc",
)


def progress_printer(label: str, epochs: int):
    """One log line per epoch from rank 0's report (tailed by the driver)."""

    def show(m: dict[str, Any]) -> None:
        parts = [
            f"{label} epoch {m.get('epoch', 0) + 1}/{epochs}",
            f"L_mix {m.get('l_mix', float('nan')):.3f}",
        ]
        if "n_clean" in m:
            parts += [f"L_KL {m.get('l_kl', 0):.3f}", f"|X| {m['n_clean']} |U| {m['n_noisy']}"]
        if "noise_auc" in m:
            parts.append(f"noise AUC {m['noise_auc']:.3f}")
        if "val_seg_acc" in m:
            parts.append(f"val seg acc {m['val_seg_acc']:.3f}")
        parts.append(f"{m.get('time_epoch', 0):.1f} s")
        log.info(" | ".join(parts))

    return show


class CrossValidation:
    """One configuration's cross-validation while its folds run: where its report goes, what
    each fold's run is called, and the folds finished so far. `run_cv` drives one; `run_arms`
    drives several whose folds share the parallel slots."""

    def __init__(
        self,
        cfg: SSSLConfig,
        shards: ShardSet,
        out_dir: str | Path,
        folds: list[int] | None = None,
        name: str | None = None,
    ) -> None:
        self.cfg, self.shards, self.out = cfg, shards, Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.out / "config.yaml")
        self.folds = list(range(cfg.n_folds)) if folds is None else folds
        self.name = name or self.out.name
        # The run identity (config + shard-set digest): re-running resumes only a run of the
        # same settings on the same data.
        self.names = {fold: run_name(self.name, cfg, shards, fold) for fold in self.folds}
        self.runs: dict[int, FoldRun] = {}
        # Per fold: (keeps its warm-up for others, the donor's warm-up it starts from).
        self.warmup: dict[int, tuple[bool, Path | None]] = {}
        self.t0 = time.perf_counter()

    def label(self, fold: int) -> str:
        return f"[{self.name} fold {fold} ({self.folds.index(fold) + 1}/{len(self.folds)})]"

    def unit(self, fold: int) -> Unit:
        save, source = self.warmup.get(fold, (False, None))
        return Unit(self.cfg, fold, self.out.resolve() / "ray", self.names[fold], save, source)

    def add(self, fold: int, run: FoldRun) -> None:
        self.runs[fold] = run
        _save_fold(self.out / f"fold-{fold}", run, self.shards, self.label(fold))

    @property
    def complete(self) -> bool:
        return len(self.runs) == len(self.folds)

    def finish(self, final: bool, workers: int, use_gpu: bool) -> dict[str, Any]:
        """The summary, the exported model and the report directory, once every fold is in."""
        cfg, out, runs = self.cfg, self.out, self.runs
        summary = summarise(cfg, runs, time.perf_counter() - self.t0)
        if final:
            summary["exported_model"] = _refit(cfg, self.shards, out, self.name, workers, use_gpu)
        else:
            best = max(runs, key=lambda f: runs[f].result.get("val_acc", -1))
            shutil.copy(out / f"fold-{best}" / "model.sssl", out / "model.sssl")
            summary["exported_model"] = {
                "path": "model.sssl",
                "fold": best,
                "epoch": runs[best].result.get("evaluated_epoch"),
                "why": "the fold with the best validation-song accuracy, at the epoch its "
                "eval_epoch setting chose (train with --final to export a refit on all songs)",
            }
        summary["seconds"] = time.perf_counter() - self.t0
        write_report(out, cfg, summary, runs, _truth(self.shards))
        return summary


def run_cv(
    cfg: SSSLConfig,
    shards: ShardSet,
    out_dir: str | Path,
    *,
    folds: list[int] | None = None,
    workers: int = 2,
    use_gpu: bool = False,
    name: str | None = None,
    parallel: int = 1,
    final: bool = False,
) -> dict[str, Any]:
    """Train and evaluate `folds` (default: all) and write the report directory `out_dir`.
    `parallel` > 1 runs that many folds side by side (parallel.py); the report is the same.
    `final` adds a refit on all songs, which becomes the exported model."""
    cv = CrossValidation(cfg, shards, out_dir, folds, name)
    if parallel > 1:
        for _ in _pooled({cv.name: cv}, parallel, workers, use_gpu):
            pass
    else:
        for fold, run in _one_by_one(cv, workers, use_gpu):
            cv.add(fold, run)
    return cv.finish(final, workers, use_gpu)


def _pooled(
    cvs: dict[str, CrossValidation], parallel: int, workers: int, use_gpu: bool
) -> Iterator[str]:
    """The folds of every cross-validation in `cvs` through one set of `parallel` slots, in
    the order given; each finished fold goes into its report, and the name of its
    cross-validation is yielded (the caller finishes one once it is complete)."""
    if not cvs:
        return  # nothing left to run: a resumed benchmark whose cells are all finished
    units = {(name, fold): cv.unit(fold) for name, cv in cvs.items() for fold in cv.folds}
    where = "each in one process (local mode)" if workers == 0 else f"each on {workers} worker(s)"
    log.info("%d fold runs, up to %d side by side, %s", len(units), parallel, where)
    show = {
        (name, fold): progress_printer(cvs[name].label(fold), cvs[name].cfg.epochs)
        for name, fold in units
    }
    shards = next(iter(cvs.values())).shards
    finished = run_units_parallel(
        units,
        shards,
        parallel=parallel,
        workers=workers,
        use_gpu=use_gpu,
        on_epoch=lambda key, m: show[key](m),
    )
    for (name, fold), run in finished:
        cvs[name].add(fold, run)
        yield name


def _refit(
    cfg: SSSLConfig, shards: ShardSet, out: Path, name: str, workers: int, use_gpu: bool
) -> dict[str, Any]:
    """`--final`: after cross-validation has given the estimate, one more run learns from every
    song (less the validation songs) and becomes the exported model. Its files go to refit/."""
    fold_ids = refit_song_ids(shards, cfg)
    label = f"[{cfg.method} final refit]"
    log.info(
        "%s %d training and %d validation songs, on %d worker(s)",
        label,
        len(fold_ids["train"]),
        len(fold_ids["val"]),
        max(workers, 1),
    )
    run = run_fold(
        cfg,
        shards,
        -1,
        storage_path=out / "ray",
        name=f"{name}-refit-{run_digest(cfg, shards)}",
        workers=workers,
        use_gpu=use_gpu,
        on_epoch=progress_printer(label, cfg.epochs),
        fold_ids=fold_ids,
    )
    _save_fold(out / "refit", run, shards, label)
    shutil.copy(out / "refit" / "model.sssl", out / "model.sssl")
    return {
        "path": "model.sssl",
        "fold": "refit",
        "epoch": run.result.get("evaluated_epoch"),
        "songs": {part: len(ids) for part, ids in fold_ids.items()},
        "why": "--final: a refit on all songs except the validation songs, after "
        "cross-validation gave the estimate (the refit itself has no test songs)",
    }


def _one_by_one(cv: CrossValidation, workers: int, use_gpu: bool) -> Iterator[tuple[int, FoldRun]]:
    """The folds one after another, each data-parallel over `workers`."""
    for fold in cv.folds:
        log.info("%s training on %d worker(s)", cv.label(fold), max(workers, 1))
        unit = cv.unit(fold)
        yield (
            fold,
            run_fold(
                cv.cfg,
                cv.shards,
                fold,
                storage_path=unit.storage_path,
                name=unit.name,
                workers=workers,
                use_gpu=use_gpu,
                on_epoch=progress_printer(cv.label(fold), cv.cfg.epochs),
                save_warmup=unit.save_warmup,
                warmup_from=unit.warmup_from,
            ),
        )


def share_warmups(cvs: dict[str, CrossValidation]) -> int:
    """Per fold, the runs with one warm-up key (warmup.py) train it once: the first in order
    keeps it, the others start from it. Returns how many warm-ups are not trained again."""
    groups: dict[tuple[int, str], list[CrossValidation]] = {}
    for cv in cvs.values():
        key = warmup_key(cv.cfg)
        for fold in cv.folds if key else ():
            groups.setdefault((fold, key), []).append(cv)
    shared = 0
    for (fold, _), members in groups.items():
        if len(members) < 2:
            continue
        donor, *takers = members
        donor.warmup[fold] = (True, None)
        for cv in takers:
            cv.warmup[fold] = (False, warmup_source(donor.unit(fold).run_dir))
            shared += 1
    return shared


def _save_fold(fold_dir: Path, run: FoldRun, shards: ShardSet, label: str) -> None:
    """A finished fold into the report: its files, its exported model, one log line."""
    r = run.result
    part = "test" if "test_acc" in r else "val"  # the final refit has no test songs
    log.info(
        "%s done: %s acc %.3f, F1 %.3f (majority class %.3f)",
        label,
        part,
        r.get(f"{part}_acc", float("nan")),
        r.get(f"{part}_f1", float("nan")),
        r.get(f"{part}_majority_acc", float("nan")),
    )
    fold_dir.mkdir(exist_ok=True)
    for f in (*FOLD_FILES, SVM_SONGS_FILE):
        if f in FOLD_FILES or Path(run.checkpoint_dir, f).is_file():
            shutil.copy(Path(run.checkpoint_dir, f), fold_dir / f)
    export_model(run.checkpoint_dir, shards, fold_dir / "model.sssl")
    # Everything needed is now in fold_dir; the checkpoint copy is not (Ray keeps the
    # checkpoint itself under the run directory).
    shutil.rmtree(run.checkpoint_dir, ignore_errors=True)


def run_methods(
    base: SSSLConfig,
    shards: ShardSet,
    out_of: Callable[[str], Path],
    methods: Iterable[str],
    *,
    folds: list[int] | None = None,
    workers: int = 2,
    parallel: int = 1,
) -> Iterator[tuple[str, dict[str, Any], float]]:
    """The methods x folds comparison: `run_arms` with one arm per method name."""
    arms = {method: {"method": method} for method in methods}
    yield from run_arms(base, shards, out_of, arms, folds=folds, workers=workers, parallel=parallel)


def run_arms(
    base: SSSLConfig,
    shards: ShardSet,
    out_of: Callable[[str], Path],
    arms: dict[str, dict[str, Any]],
    *,
    folds: list[int] | None = None,
    workers: int = 2,
    parallel: int = 1,
    use_gpu: bool = False,
    share_warmup: bool = True,
) -> Iterator[tuple[str, dict[str, Any], float]]:
    """Each arm's cross-validation on identical folds (same seed, same songs), so differences
    are paired. Arms whose warm-up is the same training train it once (`share_warmup`). An
    arm is a name and its overrides of `base`: a method, or a method with
    other settings (the paper's variant beside ours). Yields (name, summary, minutes) as each
    arm finishes, so a caller can save results as they come (the benchmark resumes).

    With `parallel` > 1 the folds of every arm share the slots, in arm order: no slot idles
    while one arm waits for its last fold. An arm's minutes then run from the start of the
    whole comparison to its last fold.
    """

    cvs = {
        name: CrossValidation(with_overrides(base, arms[name]), shards, out_of(name), folds)
        for name in arms
    }
    if share_warmup and (shared := share_warmups(cvs)):
        log.info("%d fold run(s) start from a warm-up another arm trains", shared)
    if parallel <= 1:
        for i, (name, cv) in enumerate(cvs.items()):
            log.info("arm %s (%d of %d)", name, i + 1, len(arms))
            cv.t0 = time.perf_counter()
            for fold, run in _one_by_one(cv, workers, use_gpu):
                cv.add(fold, run)
            yield name, cv.finish(False, workers, use_gpu), (time.perf_counter() - cv.t0) / 60
        return
    t0 = time.perf_counter()
    for name in _pooled(cvs, parallel, workers, use_gpu):
        if cvs[name].complete:
            yield name, cvs[name].finish(False, workers, use_gpu), (time.perf_counter() - t0) / 60


def _truth(shards: ShardSet | None) -> dict[str, list[int]] | None:
    if shards is None:
        return None
    return {s["song_id"]: s.get("truth") for s in shards.songs}


def write_report(
    out: Path,
    cfg: SSSLConfig,
    summary: dict[str, Any],
    runs: dict[int, FoldRun],
    truth: dict[str, list[int]] | None,
    plots: bool = True,
) -> None:
    """Tables first, then the plots: hours of training must never be lost to a plotting
    failure, so the tables are on disk before any figure is drawn, and summary.md is written
    once more only to list the plots that were drawn."""
    write_tables(out, summary, runs)
    if plots and draw_plots(out, lambda: _run_plots(out, cfg, runs, truth)):
        write_summary(out, summary, runs)


def _run_plots(out, cfg, runs, truth) -> None:
    from sssl_dist.report import write_run_plots

    write_run_plots(out, cfg, runs, truth)


def draw_plots(out: Path, draw: Callable[[], None]) -> bool:
    """Run `draw` (which imports matplotlib itself); a failure of any kind costs the plots
    only, is logged with how to redraw them, and never the tables already written."""
    try:
        draw()
    except Exception as exc:  # noqa: BLE001 - any plotting error must leave the report intact
        log.warning(
            "plots not drawn in %s (%s: %s); the tables are written. Redraw them with "
            "`sssl report %s` once the cause is fixed",
            out,
            type(exc).__name__,
            exc,
            out,
        )
        return False
    return True


def rebuild_report(run_dir: Path, shards: ShardSet | None = None, plots: bool = True) -> None:
    """Re-create tables and plots of a `sssl train` report from its fold-*/ files."""
    run_dir = Path(run_dir)
    cfg = from_dict(SSSLConfig, yaml.safe_load((run_dir / "config.yaml").read_text()))
    runs = {int(d.name.split("-")[1]): FoldRun.read(d) for d in sorted(run_dir.glob("fold-*"))}
    if not runs:
        raise FileNotFoundError(f"no fold-*/ results in {run_dir}")
    old = run_dir / "metrics.json"
    seconds = json.loads(old.read_text()).get("seconds", float("nan")) if old.is_file() else None
    summary = summarise(cfg, runs, float("nan") if seconds is None else seconds)
    write_report(run_dir, cfg, summary, runs, _truth(shards), plots)


def summarise(cfg: SSSLConfig, runs: dict[int, FoldRun], seconds: float) -> dict[str, Any]:
    keys = sorted(
        {
            k
            for r in runs.values()
            for k, v in r.result.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
    )
    stats = {}
    for k in keys:
        mean, std = mean_std([r.result.get(k, float("nan")) for r in runs.values()])
        stats[k] = {"mean": mean, "std": std}
    return {
        "method": cfg.method,
        "task": cfg.task,
        "segment_seconds": cfg.segment_seconds,
        "folds": sorted(runs),
        "seconds": seconds,
        "metrics": stats,
        "per_fold": {f: r.result for f, r in runs.items()},
    }


def write_tables(out: Path, summary: dict[str, Any], runs: dict[int, FoldRun]) -> None:
    (out / "metrics.json").write_text(json.dumps(summary, indent=1, default=float))
    with (out / "metrics.csv").open("w", newline="") as fh:
        keys = sorted(
            {k for r in runs.values() for k in r.result if not isinstance(r.result[k], list | dict)}
        )
        writer = csv.DictWriter(fh, fieldnames=["fold", *keys])
        writer.writeheader()
        for fold, r in sorted(runs.items()):
            writer.writerow({"fold": fold, **{k: r.result.get(k) for k in keys}})
    with (out / "history.csv").open("w", newline="") as fh:
        rows = [dict(h, fold=f) for f, r in sorted(runs.items()) for h in r.history]
        keys = sorted({k for row in rows for k, v in row.items() if not isinstance(v, list | dict)})
        writer = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    write_summary(out, summary, runs)


def write_summary(out: Path, summary: dict[str, Any], runs: dict[int, FoldRun]) -> None:
    """summary.md: the headline table, the plots present, the paired variants, the export."""
    m = summary["metrics"]
    lines = [
        f"# {summary['method']} · task {summary['task']} · L = {summary['segment_seconds']} s",
        "",
        f"Folds: {summary['folds']} · wall time {summary['seconds']:.0f} s",
        "",
        "| metric | mean | std |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {m[k]['mean']:.4f} | {m[k]['std']:.4f} |" for k in HEADLINE if k in m]
    lines += [
        "",
        "test_* are song-level on the test fold (SVM on Eq. 10 features); "
        "test_majority_acc always answers the training folds' most frequent class; "
        "test_vote_acc is the majority vote of segment decisions (Sarkar et al.). "
        "test_brier and test_ece: calibration of the SVM's song probabilities (0 = perfect); "
        "test_feature_shift: how far test songs' Eq. 10 features lie from the training songs' "
        "(mean |mean difference| / training std), which the SVM never saw out of sample.",
        "",
        "Plots: " + ", ".join(sorted(p.name for p in out.glob("*.png"))),
    ]
    lines += paired_variant_lines(runs)
    exported = summary.get("exported_model")
    if exported:
        epoch = exported.get("epoch")
        lines += [
            "",
            f"Exported {exported['path']}: fold {exported['fold']}"
            + (f", epoch {epoch + 1} (1-based)" if isinstance(epoch, int) else "")
            + f". Why: {exported['why']}.",
        ]
    (out / "summary.md").write_text("\n".join(lines) + "\n")


# Figures a run reports twice, from the same folds: (prefix of the other variant, what it is,
# what the headline figures are).
VARIANTS = (
    ("in_sample_", "SVM on in-sample features (the paper)", "cross-fitted"),
    ("last_epoch_", "last epoch (the paper)", "best validation epoch (in-sample SVM)"),
)
VARIANT_METRICS = ("test_acc", "test_brier", "test_ece", "test_feature_shift")


def paired_variant_lines(runs: dict[int, FoldRun]) -> list[str]:
    """For `svm_features: cross_fit` and `eval_epoch: best_val` runs: the headline figures
    against the paper's variant, which the same folds also report, paired over folds."""
    lines = []
    has = lambda key: all(key in r.result for r in runs.values())  # noqa: E731
    view = lambda key: {"per_fold": {f: {"v": r.result[key]} for f, r in runs.items()}}  # noqa: E731
    for prefix, paper, ours in VARIANTS:
        rows = []
        for metric in VARIANT_METRICS:
            # Change one thing at a time: last_epoch_* figures use the in-sample SVM, so with
            # cross-fitting on they are compared with in_sample_*, not with the headline.
            other = "in_sample_" + metric if prefix == "last_epoch_" else metric
            other = other if has(other) else metric
            if not (has(prefix + metric) and has(other)):
                continue
            d = paired_difference(view(prefix + metric), view(other), "v")
            a = mean_std([r.result[prefix + metric] for r in runs.values()])[0]
            b = mean_std([r.result[other] for r in runs.values()])[0]
            rows.append(f"| {metric} | {a:.4f} | {b:.4f} | {d['mean']:+.4f} | {d['t']:.2f} |")
        if rows:
            lines += [
                "",
                f"{ours} against {paper}, same folds (b - a paired; Brier, ECE and feature shift:"
                " lower is better):",
                "",
                f"| metric | a: {paper} | b: {ours} | b - a | corrected t |",
                "|---|---|---|---|---|",
                *rows,
            ]
    return lines
