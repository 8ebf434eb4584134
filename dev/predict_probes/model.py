# ruff: noqa: E402 - one-off probes: imports follow ray.init and sys.path set-up on purpose
import cProfile
import json
import os
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import torch

torch.set_num_threads(1)
from bench_predict import make_model

from sssl_dist.config import FeatureConfig, to_dict
from sssl_dist.outputs.predict import SegmentPredictor, decode_row, file_key

files = json.loads(Path("/tmp/prof/files.json").read_text())[:150]
fc = to_dict(FeatureConfig())
rows = [decode_row({"file": file_key(f), "path": os.fsencode(f)}, fc, None) for f in files]
m = make_model(Path("/tmp/prof/model.sssl"))
t0 = time.perf_counter()
p = SegmentPredictor([str(m)], ["m"], False, 1)
print("actor init", round(time.perf_counter() - t0, 2))
import numpy as np

batch = {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}
t0 = time.perf_counter()
pr = cProfile.Profile()
pr.enable()
out = p(batch)
pr.disable()
print("predict 150 files", round(time.perf_counter() - t0, 2))
pstats.Stats(pr).sort_stats("cumulative").print_stats(18)
