"""`sssl predict` throughput: the old serial loop against the Ray Data path, and the floor.

One run, the same generated files (wav / flac / ogg, 22.05 / 44.1 / 48 kHz, mono and stereo,
short, 30 s and minutes-long), the same SmallCNN model (random weights: throughput does not
depend on what the model learned):

    serial     the loop `sssl predict` ran before Ray Data (kept below as `serial_loop`): one
               process, decode, mel, predict, then <name>.json, .segments.csv and .png per
               file and predictions.csv at the end; torch uses every core it sees
    ray-1cpu   the new path (`run_predict`, plots off as for any run of > 20 files) in a
               Ray with 1 CPU, the process pinned to one core (taskset)
    ray-2cpu   the same on 2 CPUs / 2 cores
    floor-1    decode + log-mel only, one process, one core: the work no path can skip
    floor-ray  decode + log-mel only through the same Ray Data tasks, no model stage
    floor-ray-per-file  the same with one file per decode task (the layout before groups of
               files): what Ray Data's cost per task adds

Each configuration runs in a fresh subprocess (its own Ray); times exclude Ray's start-up but
include the pipeline's (actor start, model load). Prints the CPU (lscpu) and a table.

    python benchmarks/bench_predict.py [--files 300] [--long 8] [--long-seconds 180]

Cost: about (total audio hours) x 2 x (one core's decode + mel time per hour, ~25 s on an
unloaded EPYC core) plus the serial loop's plots (~0.3 s per file); --files 60 --long 4 takes
a few minutes on 2 cores.

Two more modes, each on ray-2cpu only (run instead of the table above):

    --kill-twice       SIGKILL the run's whole process group once a third of the files are
                       committed, start it again, SIGKILL it at two thirds, run it a third time
                       to the end; then check exactly-once in the committed Parquet tables
                       (one files row per input, no (file, segment) twice) and print the kill
                       points, the files lost in flight and the three runs' wall time
    --memory-sizes N,M ray-2cpu on the first N, then M, ... files: peak RSS of the whole process
                       tree (driver, raylet, GCS, Ray workers; sampled every 0.5 s), to see
                       whether memory stays flat as the catalogue grows (back-pressure)

    python benchmarks/bench_predict.py --files 1000 --kill-twice
    python benchmarks/bench_predict.py --memory-sizes 200,1000

Cost of those: --kill-twice about one ray-2cpu run of --files plus three start-ups (~20 s
each) and the files lost in flight; --memory-sizes one ray-2cpu run per size (200,1000 about
1.2 runs of 1,000 files). Both make the corpus first (the largest size, ~0.3 s a file). On 2
cores shared with other jobs, ray-2cpu did ~5.5 files/s of this corpus (30 s files): 1,000
files (7.6 audio-h) about 10 min for either mode, corpus included. Small runs hand back 8
results at once (the actor's batch), so --kill-twice needs --files 48 --part-files 4 or more
for both kills to land mid-run.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import psutil

if TYPE_CHECKING:  # for the annotation only: Ray's modules load where a run needs them
    from sssl_dist.outputs.predict import PredictSummary

REPO = Path(__file__).resolve().parents[1]
FORMATS = (("wav", 44100), ("flac", 22050), ("ogg", 48000))


# --------------------------------------------------------------------------- inputs
def make_corpus(root: Path, n_files: int, n_long: int, long_seconds: float) -> list[str]:
    """n_files songs: n_long minutes-long, a fifth short (8-12 s), the rest 30 s; formats,
    sample rates and channel counts cycle."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    files = []
    for i in range(n_files):
        ext, sr = FORMATS[i % len(FORMATS)]
        seconds = long_seconds if i < n_long else (8 + i % 5 if i % 5 == 0 else 30.0)
        t = np.arange(int(seconds * sr)) / sr
        freq = 110.0 * (1 + i % 7)
        y = 0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.2 * t))
        y = y + 0.02 * rng.standard_normal(t.size)
        y = np.stack([y, y[::-1]], 1) if i % 2 else y
        path = root / f"d{i % 10}" / f"song {i:04d}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        # In blocks: libsndfile's Vorbis encoder crashes on one write of minutes of audio.
        with sf.SoundFile(path, "w", sr, 1 if y.ndim == 1 else 2) as fh:
            for lo in range(0, len(y), sr):
                fh.write(y[lo : lo + sr].astype(np.float32))
        files.append(str(path))
    return files


def make_model(path: Path) -> Path:
    """A SmallCNN quadrant model.sssl with random weights and a small SVM, as exported."""
    import torch

    from sssl_dist.config import FeatureConfig, SSSLConfig, to_dict
    from sssl_dist.method.models import build_model
    from sssl_dist.method.tasks import task_of
    from sssl_dist.outputs.export import FORMAT

    cfg = SSSLConfig()
    torch.manual_seed(0)
    net = build_model(cfg.backbone, task_of(cfg).num_outputs, cfg.dropout)
    k = task_of(cfg).num_outputs
    torch.save(
        {
            "format": FORMAT,
            "config": json.dumps(to_dict(cfg)),
            "feature_config": json.dumps(to_dict(FeatureConfig())),
            "label_names": list(task_of(cfg).output_names),
            "state_dict": net.state_dict(),
            "svm_features": torch.from_numpy(np.random.default_rng(0).random((8 * k, 7 * k))),
            "svm_labels": torch.arange(8 * k) % k,
        },
        path,
    )
    return path


# --------------------------------------------------------------------------- the old loop
def serial_loop(model_path: str, files: list[str], out: Path) -> float:
    """`export.predict_files` as it was before the Ray Data path (reference copy)."""
    from sssl_dist.data.audio import AudioError
    from sssl_dist.outputs.export import load_model, predict_song
    from sssl_dist.outputs.report import plot_emotion_curve

    model = load_model(model_path)
    out.mkdir(parents=True, exist_ok=True)
    rows, audio_s = [], 0.0
    for f in files:
        stem = Path(f).parent.name + "__" + Path(f).stem
        try:
            res = predict_song(model, f)
        except AudioError:
            continue
        audio_s += res["duration_s"]
        (out / f"{stem}.json").write_text(json.dumps(res, indent=1))
        with (out / f"{stem}.segments.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["start_s", "end_s", *model.label_names])
            w.writeheader()
            w.writerows(res["segments"])
        plot_emotion_curve(res, out / f"{stem}.png")
        rows.append({"file": f, "decision": res["decision"], "probability": res["probability"]})
    with (out / "predictions.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["file", "decision", "probability"])
        w.writeheader()
        w.writerows(rows)
    return audio_s


def floor_serial(files: list[str]) -> float:
    from sssl_dist.config import FeatureConfig
    from sssl_dist.data.audio import decode, log_mel

    fc, audio_s = FeatureConfig(), 0.0
    for f in files:
        y = decode(f, fc, enforce_limits=False)
        log_mel(y, fc)
        audio_s += y.size / fc.sample_rate
    return audio_s


def floor_ray(files: list[str], per_file: bool = False) -> float:
    """The new path's decode tasks alone: the same Dataset up to the model stage (with
    per_file, one file per task instead of decode_dataset's groups)."""
    import ray

    from sssl_dist.config import FeatureConfig, to_dict
    from sssl_dist.outputs.predict import decode_dataset, decode_row, file_key

    ray.data.DataContext.get_current().enable_progress_bars = False
    fc = to_dict(FeatureConfig())
    if per_file:
        items = [{"file": file_key(f), "path": os.fsencode(f)} for f in files]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map(decode_row, fn_kwargs={"fc": fc, "max_seconds": None})
    else:
        ds = decode_dataset([(file_key(f), f) for f in files], fc, None)
    return sum(float(r["duration_s"]) for r in ds.select_columns(["duration_s"]).iter_rows())


def new_path(
    model_path: str, files: list[str], out: Path, part_files: int | None = None
) -> PredictSummary:
    """run_predict as `sssl predict` calls it for a catalogue; its PredictSummary."""
    from sssl_dist.outputs.predict import run_predict

    kwargs = {} if part_files is None else {"part_files": part_files}
    return run_predict([model_path], files, out, plots=False, **kwargs)


def log_progress(folder: str) -> None:
    """Log each file's key as it leaves a decode task (decoded.txt, from the Ray workers) and
    as the driver gets its prediction (finished.txt), both before the part holding it
    commits: after a SIGKILL these lines, less the committed files, are the work lost in
    flight. Wraps predict.decode_row and predict.add_result, module globals that
    predict_stream and _batches look up when called; Ray pickles the decode wrapper by
    value (it is defined in __main__), so the workers run it, around the original."""
    import sssl_dist.outputs.predict as predict

    decoded, finished = f"{folder}/decoded.txt", f"{folder}/finished.txt"
    inner_decode, inner_add = predict.decode_row, predict.add_result

    def decode_row(row, *args, **kwargs):
        out = inner_decode(row, *args, **kwargs)
        _append_line(decoded, row["file"])
        return out

    def add_result(batch, key, *args, **kwargs):
        _append_line(finished, key)
        return inner_add(batch, key, *args, **kwargs)

    predict.decode_row, predict.add_result = decode_row, add_result


def _append_line(path: str, line: str) -> None:
    # O_APPEND and one write per line: lines from concurrent workers never interleave, and
    # each is in the kernel once written, so it survives a SIGKILL of the writer.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- one configuration
def run_one(kind: str, cpus: int, model: str, files_json: str, out: str, extra: dict) -> None:
    """In a fresh subprocess: time one configuration, print its JSON line."""
    files = json.loads(Path(files_json).read_text())
    if kind in ("ray", "floor-ray", "floor-ray-per-file"):
        import ray

        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    if extra.get("progress_log"):
        log_progress(extra["progress_log"])
    t0 = time.perf_counter()
    counts = {}
    if kind == "serial":
        audio_s = serial_loop(model, files, Path(out))
    elif kind == "floor":
        audio_s = floor_serial(files)
    elif kind == "floor-ray":
        audio_s = floor_ray(files)
    elif kind == "floor-ray-per-file":
        audio_s = floor_ray(files, per_file=True)
    else:
        summary = new_path(model, files, Path(out), extra.get("part_files"))
        audio_s = summary.audio_s
        counts = {"skipped": summary.skipped, "predicted": summary.predicted}
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"seconds": seconds, "audio_s": audio_s, "driver_rss_mb": rss, **counts}
    print("RESULT " + json.dumps(result))


# --------------------------------------------------------------------------- process tree
def tree_memory(pid: int) -> tuple[int, int, int]:
    """(sum of RSS, sum of PSS, processes) over `pid` and its descendants: the driver and
    every Ray process (raylet, GCS, workers), which Ray starts below the driver. The RSS sum
    counts shared pages (libraries, the object store in /dev/shm) once per process that maps
    them, an upper bound; PSS splits each shared page among its users, so its sum is the
    tree's real share of RAM."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0, 0
    rss = pss = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            info = p.memory_full_info()  # smaps_rollup: cheap enough every 0.5 s
            rss += info.rss
            pss += info.pss
    return rss, pss, len(procs)


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the run's process group, and any descendant that left it, as a power cut
    would: no signal handler, no atexit, no Ray shutdown. Returns once they are all gone, so
    the next run does not share the cores with a dying one."""
    try:
        procs = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        procs = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # its own session (run_watched): the group is ours
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()  # psutil checks the pid still names that process
    proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(p) for p in procs):
        time.sleep(0.2)


def _alive(p: psutil.Process) -> bool:
    # An orphan is reaped by init some time after its death; a zombie holds no memory or CPU.
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@dataclass
class Watched:
    """One subprocess run: how it ended, its wall time, its process tree's peak memory."""

    rc: int
    killed: bool
    seconds: float
    peak_rss_mb: float
    peak_pss_mb: float
    peak_procs: int
    stdout: str
    stderr: str


def run_watched(cmd: list[str], kill_when: Callable[[], bool] | None = None) -> Watched:
    """Run cmd, sampling its process tree's memory every 0.5 s; SIGKILL the tree as soon as
    kill_when() is true (polled every 0.1 s). Output goes to files: a pipe nobody reads
    while we poll could fill and stall the child."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    peak = [0, 0, 0]
    killed = False
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        # A session of its own: its process group is the driver and the Ray processes it
        # starts, and nothing of ours, so one killpg ends exactly the run.
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=err, text=True, env=env, cwd=REPO, start_new_session=True
        )
        sampled = 0.0
        while proc.poll() is None:
            # Memory every 0.5 s; the kill condition every 0.1 s, as a small run can commit
            # several parts within half a second.
            if time.perf_counter() - sampled >= 0.5:
                sampled = time.perf_counter()
                peak = [max(a, b) for a, b in zip(peak, tree_memory(proc.pid), strict=True)]
            if kill_when is not None and kill_when():
                kill_tree(proc)
                killed = True
                break
            time.sleep(0.1)
        seconds = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    mb = 1024 * 1024
    return Watched(
        proc.wait(), killed, seconds, peak[0] / mb, peak[1] / mb, peak[2], stdout, stderr
    )


def child_cmd(
    kind: str, cores: str, cpus: int, model: Path, files_json: Path, out: Path
) -> list[str]:
    """The hidden --one command line of one configuration, pinned to `cores`."""
    cmd = ["taskset", "-c", cores, sys.executable, __file__, "--one", kind, "--cpus", str(cpus)]
    return cmd + ["--model", str(model), "--files-json", str(files_json), "--out", str(out)]


def result_of(w: Watched, what: str) -> dict:
    lines = [x for x in w.stdout.splitlines() if x.startswith("RESULT ")]
    if w.rc or not lines:
        raise RuntimeError(f"{what} failed (rc {w.rc}):\n{w.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def measure(kind: str, cores: str, cpus: int, model: Path, files_json: Path, out: Path) -> dict:
    w = run_watched(child_cmd(kind, cores, cpus, model, files_json, out))
    r = result_of(w, f"{kind} on {cores}")
    # The tree holds the driver, so its peak is at least the driver's: the 0.5 s sampling can
    # miss the peak of a run of a few seconds, which the kernel's maxrss does not.
    tree_rss = max(w.peak_rss_mb, r["driver_rss_mb"])
    return {**r, "wall_s": w.seconds, "tree_rss_mb": tree_rss, "tree_pss_mb": w.peak_pss_mb}


def cpu_name() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return f"{fields.get('Model name', '?').strip()}, {os.cpu_count()} logical CPUs"


# --------------------------------------------------------------------------- the comparison
def compare(work: Path, n_files: int, model: Path, files_json: Path) -> None:
    """The six configurations on one corpus, and their table."""
    plan = [
        ("serial", "serial", "0,1", 2),
        ("ray-1cpu", "ray", "0", 1),
        ("ray-2cpu", "ray", "0,1", 2),
        ("floor-1", "floor", "0", 1),
        ("floor-ray", "floor-ray", "0,1", 2),
        ("floor-ray-per-file", "floor-ray-per-file", "0,1", 2),
    ]
    rows = {}
    for name, kind, cores, cpus in plan:
        rows[name] = measure(kind, cores, cpus, model, files_json, work / name)
        print(f"  {name}: {rows[name]['seconds']:.1f} s", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at end")
    hours = rows["floor-1"]["audio_s"] / 3600
    print(f"\n{n_files} files, {hours:.2f} audio-hours; CPU: {cpu_name()}\n")
    print(
        "| path | cores | s | files/s | audio-h/s | vs serial | vs floor-ray | driver RSS MB "
        "| tree RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, _, cores, _ in plan:
        r = rows[name]
        print(
            f"| {name} | {len(cores.split(','))} | {r['seconds']:.1f} | "
            f"{n_files / r['seconds']:.2f} | {hours / r['seconds']:.3f} | "
            f"{rows['serial']['seconds'] / r['seconds']:.2f}x | "
            f"{rows['floor-ray']['seconds'] / r['seconds']:.2f} | {r['driver_rss_mb']:.0f} | "
            f"{r['tree_rss_mb']:.0f} |"
        )


# --------------------------------------------------------------------------- kill twice
def committed(out: Path) -> set[str]:
    """The files of every commit marker. Exact: a marker is the commit point and is renamed
    into place whole, and a re-run skips exactly these. Cheap: a small JSON list per part,
    where counting rows of the files table would open every Parquet part each poll."""
    keys: set[str] = set()
    for marker in (out / "done").glob("part-*.json"):  # the glob skips hidden temp markers
        keys.update(json.loads(marker.read_text()))
    return keys


def kill_twice(
    work: Path, n: int, model: Path, files_json: Path, part_files: int | None
) -> tuple[list[dict], Path]:
    """ray-2cpu into one output three times: SIGKILLed at n/3 and 2n/3 committed files, then
    to the end. Per run: what it found committed, decoded, predicted and committed."""
    out, runs = work / "kill-twice", []
    for k, target in enumerate((math.ceil(n / 3), math.ceil(2 * n / 3), None)):
        logs = work / f"progress-{k + 1}"
        logs.mkdir()
        before = committed(out) if (out / "done").is_dir() else set()
        cmd = child_cmd("ray", "0,1", 2, model, files_json, out) + ["--progress-log", str(logs)]
        cmd += [] if part_files is None else ["--part-files", str(part_files)]
        # Each kill lands within 0.1 s (the poll) after the commit that crossed the target:
        # the work lost is what the pipeline holds between commits, not a whole part's worth.
        when = None if target is None else (lambda t=target: len(committed(out)) >= t)
        w = run_watched(cmd, when)
        if not w.killed:
            r = result_of(w, f"run {k + 1}")
            if r["skipped"] != len(before):
                raise RuntimeError(f"run {k + 1} skipped {r['skipped']}, not {len(before)}")
        after = committed(out) if (out / "done").is_dir() else set()
        decoded, finished = (_lines(logs / f) for f in ("decoded.txt", "finished.txt"))
        runs.append(
            {
                "killed": w.killed,
                "target": target,
                "found": len(before),
                "committed": len(after),
                "decoded": len(decoded),
                "predicted": len(finished),
                "lost": len(decoded - after),  # decoded, then lost with the process: redone
                "lost_predicted": len(finished - after),  # of them, predicted too
                "again": len(decoded & before),  # committed earlier, decoded again: must be 0
                "wall_s": w.seconds,
                "tree_rss_mb": w.peak_rss_mb,
                "tree_pss_mb": w.peak_pss_mb,
            }
        )
        print(f"  run {k + 1}: {runs[-1]}", flush=True)
    return runs, out


def _lines(path: Path) -> set[str]:
    return set(path.read_text().splitlines()) if path.exists() else set()


def exactly_once(out: Path, files: list[str]) -> tuple[list[str], int]:
    """What breaks exactly-once in the committed tables (all parts, read with pyarrow), or [],
    and the segment rows: one files row per input and no other, no (file, model, segment)
    twice, each file's segment rows as many as its files row says, no failure, no part left
    hidden."""
    from sssl_dist.outputs.predict import file_key

    songs, segs, fails = (_read_parts(out / t) for t in ("files", "segments", "failures"))
    problems = []
    keys = songs.get("file", [])
    twice = sum(c - 1 for c in Counter(keys).values())
    if len(keys) != len(files) or twice or set(keys) != {file_key(f) for f in files}:
        problems.append(f"files: {len(keys)} rows for {len(files)} inputs, {twice} repeated")
    seg_files = segs.get("file", [])
    seg_keys = zip(seg_files, segs.get("model", []), segs.get("start_s", []), strict=True)
    seg_twice = sum(c - 1 for c in Counter(seg_keys).values())
    if seg_twice:
        problems.append(f"segments: {seg_twice} (file, segment) rows repeated")
    per_file = Counter(seg_files)
    short = [k for k, n in zip(keys, songs.get("segments", []), strict=True) if per_file[k] != n]
    if short:
        problems.append(f"segments: {len(short)} files whose segment rows miss their count")
    if fails.get("file"):
        problems.append(f"failures: {len(fails['file'])} rows")
    hidden = [
        p.name for t in ("segments", "files", "failures", "done") for p in (out / t).glob(".*")
    ]
    if hidden:
        problems.append(f"hidden parts left: {hidden[:5]}")
    return problems, len(seg_files)


def _read_parts(folder: Path) -> dict[str, list]:
    """Every committed part of one table as columns ({} when there is none)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted(folder.glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in parts]).to_pydict() if parts else {}


def report_kill_twice(runs: list[dict], problems: list[str], n: int, segments: int) -> None:
    kills = [r["committed"] for r in runs if r["killed"]]
    wall = sum(r["wall_s"] for r in runs)
    print(f"\n{n} files; killed at {kills} files committed; three runs {wall:.0f} s in all")
    print(f"CPU: {cpu_name()}; load average {os.getloadavg()[0]:.1f} at end\n")
    print(
        "| run | ended | committed at start | decoded | predicted | committed at end "
        "| lost in flight (decoded / predicted) | committed, decoded again | wall s "
        "| peak tree RSS MB | peak tree PSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for k, r in enumerate(runs):
        ended = f"SIGKILL at >= {r['target']}" if r["killed"] else "completed"
        print(
            f"| {k + 1} | {ended} | {r['found']} | {r['decoded']} | {r['predicted']} | "
            f"{r['committed']} | {r['lost']} / {r['lost_predicted']} | {r['again']} | "
            f"{r['wall_s']:.1f} | {r['tree_rss_mb']:.0f} | {r['tree_pss_mb']:.0f} |"
        )
    ok = not problems and all(r["again"] == 0 for r in runs)
    # A kill that lands once every file is committed tests nothing; small runs can outpace
    # the 0.1 s poll, as the actor hands back batch_files (8) results at once.
    mid = sum(c < n for c in kills)
    landed = "" if mid == 2 else f"; only {mid} kill(s) landed mid-run (more --files?)"
    print(
        f"\nexactly-once: {'PASS' if ok else 'FAIL'}: {n} files rows expected, {segments} "
        f"segment rows; {'; '.join(problems) or 'no duplicates, nothing missing'}{landed}"
    )


# --------------------------------------------------------------------------- memory by size
def memory_by_size(work: Path, files: list[str], sizes: list[int], model: Path) -> None:
    """ray-2cpu on the first N files for each N, and peak process-tree memory per N."""
    rows = []
    for n in sizes:
        files_json = work / f"files-{n}.json"
        files_json.write_text(json.dumps(files[:n]))
        rows.append(measure("ray", "0,1", 2, model, files_json, work / f"memory-{n}"))
        print(f"  {n} files: {rows[-1]['seconds']:.1f} s", flush=True)
    print(f"\nray-2cpu, peak memory by catalogue size; CPU: {cpu_name()}")
    print(f"load average {os.getloadavg()[0]:.1f} at end\n")
    print("| files | audio-h | s | files/s | peak tree RSS MB | peak tree PSS MB | driver RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for n, r in zip(sizes, rows, strict=True):
        print(
            f"| {n} | {r['audio_s'] / 3600:.2f} | {r['seconds']:.1f} | {n / r['seconds']:.2f} | "
            f"{r['tree_rss_mb']:.0f} | {r['tree_pss_mb']:.0f} | {r['driver_rss_mb']:.0f} |"
        )


# --------------------------------------------------------------------------- main
def prepare(
    work: Path, n_files: int, n_long: int, long_seconds: float
) -> tuple[list[str], Path, Path]:
    """The corpus, the model and the file list the subprocesses read."""
    t0 = time.perf_counter()
    files = make_corpus(work / "audio", n_files, n_long, long_seconds)
    model = make_model(work / "model.sssl")
    files_json = work / "files.json"
    files_json.write_text(json.dumps(files))
    print(f"CPU: {cpu_name()}; load average {os.getloadavg()[0]:.1f} at start")
    made = time.perf_counter() - t0
    print(f"{n_files} files ({n_long} of {long_seconds:.0f} s), made in {made:.0f} s", flush=True)
    return files, model, files_json


def main(a: argparse.Namespace) -> None:
    sizes = [int(x) for x in a.memory_sizes.split(",")] if a.memory_sizes else []
    # One corpus for every mode asked: the first N files of it are the catalogue of size N.
    n_corpus = max([*sizes, *([a.files] if a.kill_twice or not sizes else [])])
    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    try:
        files, model, files_json = prepare(work, n_corpus, a.long, a.long_seconds)
        if a.kill_twice:
            files_json = work / "kill-files.json"
            files_json.write_text(json.dumps(files[: a.files]))
            runs, out = kill_twice(work, a.files, model, files_json, a.part_files)
            problems, segments = exactly_once(out, files[: a.files])
            report_kill_twice(runs, problems, a.files, segments)
        if sizes:
            memory_by_size(work, files, sizes, model)
        if not (a.kill_twice or sizes):
            compare(work, a.files, model, files_json)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--files", type=int, default=300)
    p.add_argument("--long", type=int, default=8, help="minutes-long files among them")
    p.add_argument("--long-seconds", type=float, default=180.0)
    p.add_argument("--kill-twice", action="store_true", help="see above (ray-2cpu only)")
    p.add_argument("--memory-sizes", help="N,M,...: see above (ray-2cpu only)")
    p.add_argument(
        "--part-files", type=int, help="--kill-twice: commit every N files (run_predict's 64)"
    )
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--cpus", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--files-json", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--progress-log", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        extra = {"part_files": a.part_files, "progress_log": a.progress_log}
        run_one(a.one, a.cpus, a.model, a.files_json, a.out, extra)
    else:
        main(a)
