# ruff: noqa: E402 - one-off probes: imports follow sys.path set-up on purpose
"""Model stage against decode + mel, same files, one thread: fused fp32, and fused under bf16."""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from sssl_dist.config import FeatureConfig, to_dict
from sssl_dist.outputs.predict import SegmentPredictor, decode_row, file_key

files = json.loads(Path("/tmp/prof/files.json").read_text())
fc = to_dict(FeatureConfig())
t0 = time.perf_counter()
rows = [decode_row({"file": file_key(f), "path": os.fsencode(f)}, fc, None) for f in files]
dec = time.perf_counter() - t0
p = SegmentPredictor([str(Path("/tmp/prof/model.sssl"))], ["m"], False, 1)
B = int(sys.argv[1]) if len(sys.argv) > 1 else 8
batches = [
    {k: np.array([r[k] for r in rows[i : i + B]], dtype=object) for k in rows[0]}
    for i in range(0, len(rows), B)
]
for bf16 in (False, True, False, True):
    t0 = time.perf_counter()
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        for b in batches:
            p(b)
    t = time.perf_counter() - t0
    print(
        f"{len(files)} files: decode+mel {dec:.1f} s; model stage bf16={bf16} {t:.2f} s",
        f"= {t / dec:.2f} of decode; bound {dec / (dec + t):.2f}",
    )
