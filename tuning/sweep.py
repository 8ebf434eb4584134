"""Ray Tune sweeps over τ, λ, T, L (any SSSLConfig field) × folds, with honest selection.

Each (configuration, fold) is one Tune trial. The trial is a function that builds and fits a
`TorchTrainer` for its fold (the Train V2 pattern: `Tuner(TorchTrainer)` is refused), and
Train's per-epoch reports reach Tune through `TuneReportCallback`. Folds are a grid dimension,
so the ten folds of a configuration run side by side as far as resources allow; the folds are
the same for every configuration (same seed, split by song, stratified), so configurations are
compared pairwise on identical folds.

Honest selection: every configuration is scored by the song-level accuracy on validation songs
held out inside each fold's training songs; the chosen configuration's *test*-fold mean ± std
is the reported figure. The best-by-test figure is printed beside it, labelled optimistic.

No early stopping: a scheduler such as ASHA would stop some folds of a configuration and not
others, so fold means would be over different fold sets (biased towards lucky folds).
"""

from __future__ import annotations

import csv
import json
import logging
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sssl_dist.config import SSSLConfig, config_digest, save_config, to_dict, with_overrides
from sssl_dist.data.folds import check_shards_serve
from sssl_dist.data.segments import ShardSet
from sssl_dist.driver.fold import check_shards
from sssl_dist.driver.run import Run, share_warmups
from sssl_dist.files import runfiles
from sssl_dist.method.tasks import targets_of_config, task_of
from sssl_dist.outputs.results import draw_plots
from sssl_dist.outputs.stats import mean_std
from sssl_dist.outputs.tables import HEADLINE, sweep_markdown
from tuning.space import (
    MAX_TRIALS,
    check_trial_count,
    configurations,
    count_configurations,
    load_space,
)

log = logging.getLogger(__name__)
SELECT_BY = "val_acc"  # validation songs inside the training folds
REPORT = HEADLINE  # the same numbers as a `sssl train` report


def config_key(params: dict[str, Any]) -> str:
    return ",".join(f"{k}={_fmt(v)}" for k, v in sorted(params.items()))


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _trial(tune_cfg: dict[str, Any]) -> None:
    """One Tune trial: one fold of one configuration (its `run.Run`, made by `run_sweep` with
    the warm-up it shares), trained by a TorchTrainer."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    run = tune_cfg["run"]
    # Configurations that differ only after the warm-up (τ, λ, T) share it: the group's first
    # keeps it, the others start from it when it is ready, and train their own when not
    # (trials run in Tune's order; the result is the same either way).
    result = run.fit(
        ShardSet(tune_cfg["shards"]),
        workers=tune_cfg["workers"],
        use_gpu=tune_cfg["use_gpu"],
        cpus_per_worker=tune_cfg["cpus_per_worker"],
        callbacks=[TuneReportCallback()],
    )
    fold = tune_cfg["fold"]
    record = {
        "key": tune_cfg["key"],
        "params": tune_cfg["params"],
        "fold": fold,
        "result": result.result,
        "history": result.history,
    }
    out = Path(tune_cfg["out"]) / "trials"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{tune_cfg['key']}__fold{fold}.json").write_text(json.dumps(record, default=float))
    tune.report(
        {k: v for k, v in result.result.items() if isinstance(v, int | float)} | {"done": True}
    )


# Ray 2.60 refuses every ray.train call (context, report) made inside a Tune trial's own
# process, which is where a local-mode (num_workers=0) fit would run.
LOCAL_MODE_REFUSED = (
    "sssl tune needs Ray Train workers (--workers 1 or more): Ray 2.60 does not run a "
    "local-mode fit inside a Tune trial; for local-mode folds side by side use "
    "`sssl compare` or `sssl train --parallel`"
)


def run_sweep(
    space_path: str | Path,
    base: SSSLConfig,
    shard_dir: str | Path,
    out: str | Path,
    *,
    workers: int = 1,
    cpus_per_worker: float = 1.0,
    max_concurrent: int | None = None,
    use_gpu: bool = False,
    smoke: bool = False,
    max_trials: int = MAX_TRIALS,
    start_ray: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Run (or resume) the sweep and write tables, plots and best_config.yaml into `out`.
    Everything is checked before `start_ray` is called and before `out` is made."""
    from ray import tune

    if workers < 1:
        raise ValueError(LOCAL_MODE_REFUSED)
    if max_trials < 1:
        raise ValueError(f"--max-trials must be at least 1, got {max_trials}")
    base, folds, configs = sweep_grid(space_path, base, smoke, max_trials)
    shards = ShardSet(shard_dir)
    trial_configs = [with_overrides(base, p) for p in configs]
    for cfg in trial_configs:
        check_selectable(cfg)
        check_shards(cfg, shards)
    check_shards_serve(shards, trial_configs, folds, targets_of_config)
    out = Path(out).resolve()
    keys = {config_key(p): p for p in configs}
    identity = sweep_identity(base, shards, list(keys), folds)
    check_same_sweep(out, identity)
    start_ray()
    out.mkdir(parents=True, exist_ok=True)
    record_sweep(out, identity)
    save_config(base, out / "base_config.yaml")
    log.info(
        "sweep: %d configuration(s) x %d fold(s) = %d trials",
        len(keys),
        len(folds),
        len(keys) * len(folds),
    )
    param_space = {
        "key": tune.grid_search(list(keys)),
        "fold": tune.grid_search(folds),
        "base": to_dict(base),
        "shards": str(Path(shard_dir).resolve()),
        "out": str(out),
        "storage": str(out / "train"),
        "workers": workers,
        "use_gpu": use_gpu,
        "cpus_per_worker": cpus_per_worker,
    }
    runs = trial_runs(base, shards, keys, folds, out / "train")
    grid = _tuner(out / "tune", param_space, keys, runs, max_concurrent).fit()
    errors = [r.error for r in grid if r.error]
    if errors:
        raise RuntimeError(f"{len(errors)} trial(s) failed; first: {errors[0]}")
    summary = summarise_trials(out, base, keys)
    write_outputs(out, base, summary)
    return summary


def sweep_grid(
    space_path: str | Path, base: SSSLConfig, smoke: bool, max_trials: int
) -> tuple[SSSLConfig, list[int], list[dict[str, Any]]]:
    """(the base config with the space's `base`, the folds, the configurations) of a search
    space, refused when it holds more trials than `max_trials`. The grid is counted before it
    is made: a space of 10^6 configurations costs nothing to refuse."""
    space = load_space(space_path)
    base = with_overrides(base, space.get("base", {}))
    folds = space.get("folds", "all")
    folds = list(range(base.n_folds)) if folds == "all" else [int(f) for f in folds]
    if smoke:
        folds = folds[:2]
    n_configs = min(count_configurations(space), 2) if smoke else count_configurations(space)
    check_trial_count(space_path, n_configs, len(folds), max_trials)
    return base, folds, configurations(space, limit=n_configs)


SWEEP_FILE = runfiles.SWEEP


def check_selectable(cfg: SSSLConfig) -> None:
    """The honest choice ranks configurations by their validation songs' accuracy: without any
    (val_fraction 0) every score is NaN and the first configuration would be "chosen"; a task
    without song accuracy (regression) cannot be ranked by it."""
    if cfg.val_fraction <= 0:
        raise ValueError(
            "sssl tune chooses a configuration by its validation songs, and val_fraction = 0 "
            "holds none out: give val_fraction above 0"
        )
    if "test_acc" not in task_of(cfg).table_keys:
        # The sweep ranks and reports by song accuracy; a regression task has none.
        raise ValueError(
            f"sssl tune ranks configurations by song accuracy, which task {cfg.task} does not "
            "report: tune a classification task, or compare settings with `sssl compare --arm`"
        )


def _tuner(
    tune_dir: Path,
    param_space: dict[str, Any],
    keys: dict[str, dict[str, Any]],
    runs: dict[tuple[str, int], Run],
    max_concurrent: int | None,
):
    """A new Tuner over the grid, or the interrupted one restored (finished trials are kept)."""
    from ray import tune

    # The trial function itself only waits on its TorchTrainer: it reserves no CPU (Tune needs
    # some resource, so 1 MB of memory), and the workers' CPUs decide how many folds run at once.
    trainable = tune.with_resources(_with_runs(keys, runs), {"CPU": 0, "memory": 2**20})
    name = "sweep"
    if tune.Tuner.can_restore(tune_dir / name):
        log.info("resuming the interrupted sweep in %s", tune_dir / name)
        return tune.Tuner.restore(str(tune_dir / name), trainable, resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent),
        run_config=tune.RunConfig(name=name, storage_path=str(tune_dir), verbose=1),
    )


def sweep_identity(
    base: SSSLConfig, shards: ShardSet, keys: list[str], folds: list[int]
) -> dict[str, Any]:
    """What a sweep directory was started with: resuming it under anything else would mix
    trials of two sweeps into one table."""
    return {
        "base_config": config_digest(base),
        "shards": shards.digest(),
        "configurations": sorted(keys),
        "folds": sorted(folds),
    }


def check_same_sweep(out: Path, identity: dict[str, Any]) -> None:
    """Refuse a re-run whose space, base config, folds or shard set differ from the sweep
    already in `out` (Tuner.restore would silently keep the old grid)."""
    if (out / runfiles.CONFIG).is_file():
        raise ValueError(
            f"{out} holds a `sssl train` report: a sweep written into it would overwrite its "
            "summary.md and plots. Use a new --out"
        )
    path = out / SWEEP_FILE
    if not path.is_file():
        return
    before = json.loads(path.read_text())
    changed = [k for k in identity if before.get(k) != identity[k]]
    if changed:
        raise ValueError(
            f"{out} holds a sweep started with a different {', '.join(changed)}: "
            "resuming it would mix two sweeps. Use a new --out, or delete that directory"
        )


def record_sweep(out: Path, identity: dict[str, Any]) -> None:
    """The sweep's identity, written on its first run (check_same_sweep reads it)."""
    path = out / SWEEP_FILE
    if not path.is_file():
        path.write_text(json.dumps(identity, indent=1))


def trial_runs(
    base: SSSLConfig,
    shards: ShardSet,
    keys: dict[str, dict[str, Any]],
    folds: list[int],
    storage: Path,
) -> dict[tuple[str, int], Run]:
    """Every trial's run, named by its configuration key and fold (a re-run resumes only a run
    of the same settings on the same data), with the warm-ups shared (`run.share_warmups`: per
    fold, the configurations that differ only after the warm-up train it once)."""
    grid = [(key, fold) for key in keys for fold in folds]
    prefix = {key: key.replace("=", "-").replace(",", "_") for key in keys}
    runs = [
        Run.of(prefix[key], with_overrides(base, keys[key]), shards, fold, storage)
        for key, fold in grid
    ]
    return dict(zip(grid, share_warmups(runs), strict=True))


def _with_runs(keys: dict[str, dict[str, Any]], runs: dict[tuple[str, int], Run]):
    """The trainable: Tune's trial config names the configuration and fold; the parameters and
    the run come from the driver, so the param space stays small."""

    def trial(tune_cfg: dict[str, Any]) -> None:
        key, fold = tune_cfg["key"], tune_cfg["fold"]
        _trial(dict(tune_cfg, params=keys[key], run=runs[(key, fold)]))

    return trial


def summarise_trials(
    out: Path, base: SSSLConfig, keys: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Per configuration: mean ± std over folds of every metric; the honest and the optimistic
    choice."""
    per_config: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    histories: dict[str, dict[int, list]] = defaultdict(dict)
    for f in sorted((out / "trials").glob("*.json")):
        rec = json.loads(f.read_text())
        if rec["key"] in keys:
            per_config[rec["key"]][rec["fold"]] = rec["result"]
            histories[rec["key"]][rec["fold"]] = rec["history"]
    rows = []
    for key, folds in per_config.items():
        row = {"config": key, **keys[key], "folds": len(folds)}
        for metric in REPORT:
            mean, std = mean_std([r.get(metric, float("nan")) for r in folds.values()])
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean, std
        rows.append(row)
    if not rows:
        raise RuntimeError(f"no finished trial in {out / 'trials'}")
    n_folds = max(r["folds"] for r in rows)
    complete = [r for r in rows if r["folds"] == n_folds]  # compare on identical fold sets
    honest = max(complete, key=lambda r: r[f"{SELECT_BY}_mean"])
    optimistic = max(complete, key=lambda r: r["test_acc_mean"])
    return {
        "rows": rows,
        "honest": honest,
        "optimistic": optimistic,
        "histories": histories,
        "per_config": {k: {str(f): v for f, v in d.items()} for k, d in per_config.items()},
    }


def write_outputs(out: Path, base: SSSLConfig, summary: dict[str, Any]) -> None:
    rows = summary["rows"]
    with (out / "results.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    honest = summary["honest"]
    best = with_overrides(
        base, {k: honest[k] for k in honest if k in to_dict(base) and k != "config"}
    )
    save_config(best, out / "best_config.yaml")
    lines = sweep_markdown(base, summary, SELECT_BY)
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    draw_plots(out, lambda: _sweep_plots(out, summary))
    print("\n".join(lines[:5]))


def _sweep_plots(out: Path, summary: dict[str, Any]) -> None:
    from tuning.plots import write_sweep_plots

    write_sweep_plots(out, summary)
