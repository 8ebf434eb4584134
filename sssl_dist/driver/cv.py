"""Cross-validation scheduling: the folds of one configuration (`run_cv`) or of several arms
on identical folds (`run_arms`; `run_cv` is one arm), each finished fold into its report
directory (results.py writes the files).

Folds run one after another here (each fold is itself data-parallel over the workers), or
with `parallel` > 1 side by side (parallel.py); `tuning/` runs folds side by side as Ray Tune
trials. All three train a fold through its `run.Run`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from sssl_dist.config import SSSLConfig, load_config, save_config, to_dict, with_overrides
from sssl_dist.data.folds import check_shards_serve, refit_song_ids
from sssl_dist.data.segments import ShardSet
from sssl_dist.driver.fold import check_shards
from sssl_dist.driver.parallel import run_units_parallel
from sssl_dist.driver.run import Run, share_warmups, shared_count
from sssl_dist.files.checkpoint import copy_file
from sssl_dist.files.runfiles import CONFIG, MODEL, REPORT_SHARDS, SWEEP
from sssl_dist.method.tasks import targets_of_config, task_of
from sssl_dist.outputs.foldrun import FoldRun
from sssl_dist.outputs.results import summarise, truth_of, write_report

log = logging.getLogger(__name__)


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
        if "precision" in m:  # the run's first epoch: which precision it trains in, and why
            parts.append(f"bf16 {'on' if m.get('bf16') else 'off'}: {m['precision']}")
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
        check_same_report(self.out, cfg, shards)
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.out / CONFIG)
        (self.out / REPORT_SHARDS).write_text(
            json.dumps({"shards": str(shards.root), "digest": shards.digest()}, indent=1)
        )
        self.folds = list(range(cfg.n_folds)) if folds is None else folds
        self.name = name or self.out.name
        # Each fold's run (run.py: its identity, its warm-up), stored under the report's ray/.
        storage = self.out.resolve() / "ray"
        self.fold_runs = {
            fold: Run.of(self.name, cfg, shards, fold, storage) for fold in self.folds
        }
        self.runs: dict[int, FoldRun] = {}
        self.t0 = time.perf_counter()

    def label(self, fold: int) -> str:
        return f"[{self.name} fold {fold} ({self.folds.index(fold) + 1}/{len(self.folds)})]"

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
            copy_file(out / f"fold-{best}" / MODEL, out / MODEL)
            summary["exported_model"] = {
                "path": MODEL,
                "fold": best,
                "epoch": runs[best].result.get("evaluated_epoch"),
                "why": "the fold with the best validation-song accuracy, at the epoch its "
                "eval_epoch setting chose (train with --final to export a refit on all songs)",
            }
        summary["seconds"] = time.perf_counter() - self.t0
        write_report(out, cfg, summary, runs, truth_of(self.shards))
        return summary


def check_same_report(out: Path, cfg: SSSLConfig, shards: ShardSet) -> None:
    """Refuse to write a report into `out` when it holds one of another configuration or
    shard set: its config.yaml, metrics, model.sssl and fold-K/ files would be replaced. (The
    runs under out/ray/ are named by their identity and never mix; the report would.)"""
    if (out / SWEEP).is_file():
        raise ValueError(
            f"{out} holds a `sssl tune` sweep: a report written into it would overwrite its "
            "summary.md and plots. Use a new --out"
        )
    saved = out / CONFIG
    if saved.is_file():
        before, now = to_dict(load_config(saved)), to_dict(cfg)
        changed = [f"{k}: {before.get(k)} -> {now[k]}" for k in now if before.get(k) != now[k]]
        if changed:
            shown = ", ".join(changed[:3]) + (
                f" and {len(changed) - 3} more" if len(changed) > 3 else ""
            )
            raise ValueError(
                f"{out} holds a report of another configuration ({shown}): training into it "
                "would overwrite that report. Use a new --out, or delete that directory"
            )
    recorded = out / REPORT_SHARDS
    before = json.loads(recorded.read_text()) if recorded.is_file() else {}
    if before and before.get("digest") != shards.digest():
        raise ValueError(
            f"{out} holds a report trained on another shard set ({before.get('shards')}): "
            "training into it would overwrite that report. Use a new --out, or delete that "
            "directory"
        )


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
    start_ray: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Train and evaluate `folds` (default: all) and write the report directory `out_dir`.
    `parallel` > 1 runs that many folds side by side (parallel.py); the report is the same.
    `final` adds a refit on all songs, which becomes the exported model. The shards and the
    report directory are checked before `start_ray` is called."""
    check_shards(cfg, shards)
    check_shards_serve(shards, [cfg], folds, targets_of_config)
    cv = CrossValidation(cfg, shards, out_dir, folds, name)
    start_ray()
    ((_, summary, _),) = _run_all({cv.name: cv}, parallel, workers, use_gpu, final)
    return summary


def _pooled(
    cvs: dict[str, CrossValidation], parallel: int, workers: int, use_gpu: bool
) -> Iterator[str]:
    """The folds of every cross-validation in `cvs` through one set of `parallel` slots, in
    the order given; each finished fold goes into its report, and the name of its
    cross-validation is yielded (the caller finishes one once it is complete)."""
    if not cvs:
        return  # nothing left to run: a resumed benchmark whose cells are all finished
    runs = {(name, fold): cv.fold_runs[fold] for name, cv in cvs.items() for fold in cv.folds}
    where = "each in one process (local mode)" if workers == 0 else f"each on {workers} worker(s)"
    log.info("%d fold runs, up to %d side by side, %s", len(runs), parallel, where)
    show = {
        (name, fold): progress_printer(cvs[name].label(fold), cvs[name].cfg.epochs)
        for name, fold in runs
    }
    shards = next(iter(cvs.values())).shards
    finished = run_units_parallel(
        runs,
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
    fold_ids = refit_song_ids(shards, cfg, task_of(cfg).targets)
    label = f"[{cfg.method} final refit]"
    log.info(
        "%s %d training and %d validation songs, on %d worker(s)",
        label,
        len(fold_ids["train"]),
        len(fold_ids["val"]),
        max(workers, 1),
    )
    refit = Run.of(name, cfg, shards, None, out.resolve() / "ray", role="refit", fold_ids=fold_ids)
    run = _train_run(refit, shards, workers, use_gpu, progress_printer(label, cfg.epochs))
    _save_fold(out / "refit", run, shards, label)
    copy_file(out / "refit" / MODEL, out / MODEL)
    return {
        "path": MODEL,
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
        show = progress_printer(cv.label(fold), cv.cfg.epochs)
        yield fold, _train_run(cv.fold_runs[fold], cv.shards, workers, use_gpu, show)


def _train_run(
    run: Run,
    shards: ShardSet,
    workers: int,
    use_gpu: bool,
    on_epoch: Callable[[dict[str, Any]], None],
) -> FoldRun:
    """One run, from this process. A local-mode run on a GPU trains in a Ray task that holds
    one (`parallel.fold_resources`): in this process it would train on whatever this process
    has, the CPU on a GPU-less head node."""
    if workers == 0 and use_gpu:
        runs = run_units_parallel(
            {run.name: run}, shards, parallel=1, workers=0, use_gpu=True,
            on_epoch=lambda _, m: on_epoch(m),
        )  # fmt: skip
        ((_, result),) = runs
        return result
    return run.fit(shards, workers=workers, use_gpu=use_gpu, on_epoch=on_epoch)


def share_warmups_across(cvs: dict[str, CrossValidation]) -> int:
    """Every cross-validation's fold runs, donors chosen by `run.share_warmups` over all of
    them (per fold, runs with one warm-up key train it once). Returns how many runs start from
    a warm-up another run trains."""
    keys = [(cv, fold) for cv in cvs.values() for fold in cv.folds]
    shared = share_warmups([cv.fold_runs[fold] for cv, fold in keys])
    for (cv, fold), run in zip(keys, shared, strict=True):
        cv.fold_runs[fold] = run
    return shared_count(shared)


def _save_fold(fold_dir: Path, run: FoldRun, shards: ShardSet, label: str) -> None:
    """A finished fold into the report: its files, its exported model, one log line."""
    r = run.result
    part = "test" if "test_songs" in r else "val"  # the final refit has no test songs
    if f"{part}_r2" in r:  # a regression task
        log.info(
            "%s done: %s R² %.3f, CCC %.3f, RMSE %.3f (scale %s)",
            label,
            part,
            r[f"{part}_r2"],
            r[f"{part}_ccc"],
            r[f"{part}_rmse"],
            "-".join(f"{v:g}" for v in r["scale"]),
        )
    else:
        log.info(
            "%s done: %s acc %.3f, F1 %.3f (majority class %.3f)",
            label,
            part,
            r.get(f"{part}_acc", float("nan")),
            r.get(f"{part}_f1", float("nan")),
            r.get(f"{part}_majority_acc", float("nan")),
        )
    fold_dir.mkdir(exist_ok=True)
    run.write(fold_dir)
    run.export(shards, fold_dir / MODEL)


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
    if share_warmup and (shared := share_warmups_across(cvs)):
        log.info("%d fold run(s) start from a warm-up another arm trains", shared)
    yield from _run_all(cvs, parallel, workers, use_gpu, final=False)


def _run_all(
    cvs: dict[str, CrossValidation], parallel: int, workers: int, use_gpu: bool, final: bool
) -> Iterator[tuple[str, dict[str, Any], float]]:
    """Every fold of every cross-validation in `cvs`, one after another or through `parallel`
    slots; yields (name, summary, minutes) as each one is complete and finished."""
    if parallel <= 1:
        for i, (name, cv) in enumerate(cvs.items()):
            if len(cvs) > 1:
                log.info("arm %s (%d of %d)", name, i + 1, len(cvs))
            cv.t0 = time.perf_counter()
            for fold, run in _one_by_one(cv, workers, use_gpu):
                cv.add(fold, run)
            yield name, cv.finish(final, workers, use_gpu), (time.perf_counter() - cv.t0) / 60
        return
    t0 = time.perf_counter()
    for name in _pooled(cvs, parallel, workers, use_gpu):
        if cvs[name].complete:
            yield name, cvs[name].finish(final, workers, use_gpu), (time.perf_counter() - t0) / 60
