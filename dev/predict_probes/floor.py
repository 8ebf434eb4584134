# ruff: noqa: E402 - one-off probes: imports follow ray.init and sys.path set-up on purpose
"""Where the Ray Data decode path loses time against one plain process (quiet machine)."""

import json
import os
import sys
import time
from pathlib import Path

files = json.loads(Path(sys.argv[1]).read_text())[: int(sys.argv[2])]
variant = sys.argv[3]
import ray

t0 = time.perf_counter()
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
t_init = time.perf_counter() - t0
from sssl_dist.config import FeatureConfig, to_dict
from sssl_dist.outputs.predict import decode_row, file_key

ctx = ray.data.DataContext.get_current()
ctx.enable_progress_bars = False
fc = to_dict(FeatureConfig())
items = [{"file": file_key(f), "path": os.fsencode(f)} for f in files]


def decode_batch(batch, fc, max_seconds):
    rows = [
        decode_row({"file": f, "path": p}, fc, max_seconds)
        for f, p in zip(batch["file"], batch["path"], strict=True)
    ]
    return {k: [r[k] for r in rows] for k in rows[0]}


@ray.remote
def warm():
    import sssl_dist.outputs.predict  # noqa

    return os.getpid()


t0 = time.perf_counter()
if variant == "warm":
    print("warm pids", ray.get([warm.remote() for _ in range(2)]))
t_warm = time.perf_counter() - t0
t0 = time.perf_counter()
if variant in ("task", "warm"):
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map(decode_row, fn_kwargs={"fc": fc, "max_seconds": None})
elif variant.startswith("batch"):
    k = int(variant[5:])
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items) // k))
    ds = ds.map_batches(decode_batch, batch_size=k, fn_kwargs={"fc": fc, "max_seconds": None})
elif variant == "remote":
    fn = ray.remote(decode_row)
    refs = [fn.remote(it, fc, None) for it in items]
    n = sum(r["duration_s"] for r in ray.get(refs))
    ds = None
if ds is not None:
    n = sum(float(r["duration_s"]) for r in ds.select_columns(["duration_s"]).iter_rows())
t = time.perf_counter() - t0
print(
    json.dumps(
        {
            "variant": variant,
            "files": len(files),
            "init": round(t_init, 1),
            "warm": round(t_warm, 1),
            "seconds": round(t, 1),
            "audio_s": n,
        }
    )
)
