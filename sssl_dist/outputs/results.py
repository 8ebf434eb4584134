"""A cross-validation's results on disk: its summary numbers, metrics.json and metrics.csv,
history.csv, summary.md (tables.py), then the plots (report.py).

Tables come first: hours of training must never be lost to a plotting failure, so the tables
are on disk before any figure is drawn. `sssl report DIR` rebuilds all of it from the fold-K/
folders.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sssl_dist.config import SSSLConfig, load_config
from sssl_dist.data.segments import ShardSet
from sssl_dist.files.runfiles import CONFIG, REPORT_SHARDS
from sssl_dist.outputs.foldrun import FoldRun
from sssl_dist.outputs.stats import mean_std
from sssl_dist.outputs.tables import write_summary

log = logging.getLogger(__name__)


def truth_of(shards: ShardSet | None) -> dict[str, list[int]] | None:
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
    from sssl_dist.outputs.report import write_run_plots

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
    check_report_dir(run_dir)
    if shards is not None:
        check_report_shards(run_dir, shards)
    cfg = load_config(run_dir / CONFIG)
    runs = {int(d.name.split("-")[1]): FoldRun.read(d) for d in sorted(run_dir.glob("fold-*"))}
    if not runs:
        raise FileNotFoundError(f"no fold-*/ results in {run_dir}")
    old = run_dir / "metrics.json"
    seconds = json.loads(old.read_text()).get("seconds", float("nan")) if old.is_file() else None
    summary = summarise(cfg, runs, float("nan") if seconds is None else seconds)
    write_report(run_dir, cfg, summary, runs, truth_of(shards), plots)


def check_report_shards(run_dir: Path, shards: ShardSet) -> None:
    """Refuse --shards of another shard set than the report was trained on: its per-second
    truth would be drawn under these songs' curves (the same song ids in another corpus) or
    be missing, without a word."""
    recorded = run_dir / REPORT_SHARDS
    before = json.loads(recorded.read_text()) if recorded.is_file() else {}
    if before and before.get("digest") != shards.digest():
        raise ValueError(
            f"{run_dir} was trained on the shard set {before.get('shards')}, and --shards "
            f"{shards.root} is another: give the shards it was trained on"
        )


def check_report_dir(run_dir: Path) -> None:
    """FileNotFoundError with a sentence when `run_dir` is not the report of one training: a
    missing folder, a comparison's top folder (whose cells are reports), any other folder."""
    if not run_dir.is_dir():
        what = "a file, not a folder" if run_dir.exists() else "not there"
        raise FileNotFoundError(f"{run_dir} is {what}: give the --out folder of `sssl train`")
    if (run_dir / CONFIG).is_file():
        return
    cells = sorted(p.parent for p in run_dir.glob(f"*/*/{CONFIG}"))
    if cells:
        shown = ", ".join(str(c) for c in cells[:3]) + (" ..." if len(cells) > 3 else "")
        raise FileNotFoundError(
            f"{run_dir} holds {len(cells)} reports, not one (a comparison?): give one of them, "
            f"e.g. {shown}"
        )
    raise FileNotFoundError(
        f"{run_dir} is not a training report (it has no {CONFIG}): give the --out folder of "
        "`sssl train`, or a cell of `sssl compare` (its TASK/ARM folder)"
    )


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
