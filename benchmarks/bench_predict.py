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

Each configuration runs in a fresh subprocess (its own Ray); times exclude Ray's start-up but
include the pipeline's (actor start, model load). Prints the CPU (lscpu) and a table.

    python benchmarks/bench_predict.py [--files 300] [--long 8] [--long-seconds 180]

Cost: about (total audio hours) x 2 x (one core's decode + mel time per hour, ~25 s on an
unloaded EPYC core) plus the serial loop's plots (~0.3 s per file); --files 60 --long 4 takes
a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

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
    from sssl_dist.export import FORMAT
    from sssl_dist.models import build_model

    cfg = SSSLConfig()
    torch.manual_seed(0)
    net = build_model(cfg.backbone, cfg.num_classes, cfg.dropout)
    k = cfg.num_classes
    torch.save(
        {
            "format": FORMAT,
            "config": json.dumps(to_dict(cfg)),
            "feature_config": json.dumps(to_dict(FeatureConfig())),
            "label_names": list(cfg.label_names),
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
    from sssl_dist.audio import AudioError
    from sssl_dist.export import load_model, predict_song
    from sssl_dist.report import plot_emotion_curve

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
    from sssl_dist.audio import decode, log_mel
    from sssl_dist.config import FeatureConfig

    fc, audio_s = FeatureConfig(), 0.0
    for f in files:
        y = decode(f, fc, enforce_limits=False)
        log_mel(y, fc)
        audio_s += y.size / fc.sample_rate
    return audio_s


def floor_ray(files: list[str]) -> float:
    """The new path's decode tasks alone: the same Dataset up to the model stage."""
    import ray

    from sssl_dist.config import FeatureConfig, to_dict
    from sssl_dist.predict import decode_row, file_key

    ray.data.DataContext.get_current().enable_progress_bars = False
    items = [{"file": file_key(f), "path": os.fsencode(f)} for f in files]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map(decode_row, fn_kwargs={"fc": to_dict(FeatureConfig()), "max_seconds": None})
    return sum(float(r["duration_s"]) for r in ds.select_columns(["duration_s"]).iter_rows())


def new_path(model_path: str, files: list[str], out: Path) -> float:
    from sssl_dist.predict import run_predict

    return run_predict([model_path], files, out, plots=False).audio_s


# --------------------------------------------------------------------------- one configuration
def run_one(kind: str, cpus: int, model: str, files_json: str, out: str) -> None:
    """In a fresh subprocess: time one configuration, print its JSON line."""
    files = json.loads(Path(files_json).read_text())
    if kind in ("ray", "floor-ray"):
        import ray

        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    t0 = time.perf_counter()
    if kind == "serial":
        audio_s = serial_loop(model, files, Path(out))
    elif kind == "floor":
        audio_s = floor_serial(files)
    elif kind == "floor-ray":
        audio_s = floor_ray(files)
    else:
        audio_s = new_path(model, files, Path(out))
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps({"seconds": seconds, "audio_s": audio_s, "driver_rss_mb": rss}))


def measure(kind: str, cores: str, cpus: int, model: Path, files_json: Path, out: Path) -> dict:
    cmd = ["taskset", "-c", cores, sys.executable, __file__, "--one", kind, "--cpus", str(cpus)]
    cmd += ["--model", str(model), "--files-json", str(files_json), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{kind} on {cores} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def cpu_name() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return f"{fields.get('Model name', '?').strip()}, {os.cpu_count()} logical CPUs"


def main(n_files: int, n_long: int, long_seconds: float) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    try:
        t0 = time.perf_counter()
        files = make_corpus(work / "audio", n_files, n_long, long_seconds)
        model = make_model(work / "model.sssl")
        files_json = work / "files.json"
        files_json.write_text(json.dumps(files))
        print(f"CPU: {cpu_name()}; load average {os.getloadavg()[0]:.1f} at start")
        made = time.perf_counter() - t0
        print(f"{n_files} files ({n_long} of {long_seconds:.0f} s), made in {made:.0f} s")
        plan = [
            ("serial", "serial", "0,1", 2),
            ("ray-1cpu", "ray", "0", 1),
            ("ray-2cpu", "ray", "0,1", 2),
            ("floor-1", "floor", "0", 1),
            ("floor-ray", "floor-ray", "0,1", 2),
        ]
        rows = {}
        for name, kind, cores, cpus in plan:
            rows[name] = measure(kind, cores, cpus, model, files_json, work / name)
            r = rows[name]
            print(f"  {name}: {r['seconds']:.1f} s", flush=True)
        print(f"load average {os.getloadavg()[0]:.1f} at end")
        hours = rows["floor-1"]["audio_s"] / 3600
        print(f"\n{n_files} files, {hours:.2f} audio-hours\n")
        print(
            "| path | cores | s | files/s | audio-h/s | vs serial | vs floor-ray | driver RSS MB |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for name, _, cores, _ in plan:
            r = rows[name]
            print(
                f"| {name} | {len(cores.split(','))} | {r['seconds']:.1f} | "
                f"{n_files / r['seconds']:.2f} | {hours / r['seconds']:.3f} | "
                f"{rows['serial']['seconds'] / r['seconds']:.2f}x | "
                f"{rows['floor-ray']['seconds'] / r['seconds']:.2f} | {r['driver_rss_mb']:.0f} |"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--files", type=int, default=300)
    p.add_argument("--long", type=int, default=8, help="minutes-long files among them")
    p.add_argument("--long-seconds", type=float, default=180.0)
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--cpus", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--files-json", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        run_one(a.one, a.cpus, a.model, a.files_json, a.out)
    else:
        main(a.files, a.long, a.long_seconds)
